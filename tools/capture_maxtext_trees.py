"""Captures the parameter-tree layouts of MaxText models as JSON fixtures.

Each fixture, ``tests/fixtures/trees/maxtext_<model>.json``, records every parameter leaf of
a MaxText model (its ``/``-joined path, shape and dtype) so that tests can check
``symoptax.label_roles`` / ``symoptax.matrix_axes`` against real scanned trees without
installing MaxText. The model is built with MaxText's own config system (``pyconfig`` on
``base.yml`` with ``model_name=<model>``) and its own abstract builder
(``model_creation_utils.create_nnx_abstract_model``: ``nnx.eval_shape`` of
``models.Transformer`` on a 1-device CPU mesh), so nothing is allocated or downloaded. The
recorded tree is ``nnx.state(model, nnx.Param)``: what the trainer's
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` updates. Every dimension keeps the model's own
value except ``base_num_decoder_layers``, cut to the smallest count that keeps one full
period of the model's layer pattern (see each fixture's ``config``);
``scan_layers``/``param_scan_axis`` keep MaxText's defaults (True / 1), so layer stacks carry
their layer axis at position 1.

The script needs its own environment (MaxText 0.2.5 needs Python >= 3.12), apart from the
project's. MaxText is installed without dependencies, then only what building the model
imports::

  python3.12 -m venv .mtenv
  .mtenv/bin/pip install --no-deps maxtext==0.2.5
  .mtenv/bin/pip install "jax[cpu]" flax numpy omegaconf pydantic optax chex absl-py \\
      packaging pathwaysutils jinja2 huggingface_hub transformers grain drjax jaxtyping \\
      qwix aqtp tokamax pillow tiktoken sentencepiece sympy

(``aqtp`` is the PyPI name of the ``aqt`` module; the unrelated ``aqt`` package is Anki's GUI.
Captured with maxtext 0.2.5, flax 0.12.12, jax/jaxlib 0.12.0.1; the fixtures record the
versions used.) Run it from the repository root::

  .mtenv/bin/python tools/capture_maxtext_trees.py [--out tests/fixtures/trees] [model ...]

Source references in the notes are relative to the installed ``maxtext`` package.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from importlib import metadata

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # shapes only: never touch an accelerator

import fixture_io  # tools/fixture_io.py: leaf lists, JSON, command line
import jax
import omegaconf
from flax import nnx
from maxtext.configs import pyconfig
from maxtext.utils import maxtext_utils
from maxtext.utils import model_creation_utils
from maxtext.utils.globals import MAXTEXT_CONFIGS_DIR


# Config fields recorded for every model, then per-model extras.
_FIELDS = ("model_name", "decoder_block", "num_decoder_layers", "emb_dim", "num_query_heads",
           "num_kv_heads", "head_dim", "mlp_dim", "vocab_size", "logits_via_embedding",
           "scan_layers", "param_scan_axis", "inhomogeneous_layer_cycle_interval", "fused_qkv",
           "fused_mlp", "weight_dtype")
_MOE_FIELDS = ("num_experts", "num_experts_per_tok", "moe_mlp_dim", "shared_experts")

_COMMON = [
    "Tree: nnx.state(model, nnx.Param) of models.Transformer, built abstractly by "
    "utils/model_creation_utils.py:557 create_nnx_abstract_model; the trainer optimizes "
    "exactly this state (nnx.Optimizer(model, tx, wrt=nnx.Param), utils/train_utils.py:312-323).",
    "DenseGeneral kernels are in_features_shape + out_features_shape (layers/linears.py:256): "
    "[in..., out...], heads kept as their own axis.",
    "scan_layers=True: every scanned stack gets its layer axis L inserted at param_scan_axis=1 "
    "(jnp.moveaxis(x, 0, 1), layers/nnx_scan.py:52-55), so kernels are [in, L, out...], expert "
    "kernels [E, L, ...] and 1-D params [d, L] (norm scales). Unscanned leaves have no L.",
    "token_embedder/embedding [vocab, emb] (layers/embeddings.py:83-90); decoder/logits_dense/"
    "kernel [emb, vocab] (layers/nnx_decoders.py:473-486), absent when logits_via_embedding "
    "(tied: logits = x @ embedding.T). Neither has a layer axis.",
    "weight_dtype float32 (configs/base.yml:194); activations are bfloat16.",
]
_ATTN = ("self_attention/query/kernel [emb, L, H, hd], key/kernel and value/kernel "
         "[emb, L, Hkv, hd], out/kernel [H, L, hd, emb] (layers/attentions.py:643-653 "
         "_init_projections, 655-835 init_query_w/init_kv_w/init_out_w; fused_qkv=false).")
_QK_NORM = ("self_attention/query_norm/scale and key_norm/scale [hd, L] (use_qk_norm).")
_MLP = ("Dense MLP (MlpBlock, fused_mlp=false, layers/linears.py:689-737): wi_0 (gate, "
        "activation[0]) and wi_1 (up, 'linear') kernels [emb, L, mlp], wo/kernel [mlp, L, emb].")
_MOE = ("Routed experts (RoutedMoE, layers/moe.py:828): gate/kernel [emb, L, E] is the router "
        "(GateLogit, moe.py:964-980, kernel 626-636); wi_0 (gate) and wi_1 (up) [E, L, emb, "
        "moe_mlp] and wo [E, L, moe_mlp, emb] are bare params without a kernel level "
        "(moe.py:1055-1088).")


def _spec(layers, notes, fields=(), overrides=None):
  return dict(layers=layers, notes=notes, fields=fields, overrides=overrides or {})


MODELS = {
    "llama3-8b": _spec(2, [
        "decoder_block llama2: one scanned stack decoder/layers (nnx_decoders.py "
        "_init_scanned_generic).", _ATTN, _MLP]),
    "qwen3-8b": _spec(2, [
        "decoder_block qwen3: one scanned stack decoder/layers (Qwen3DecoderLayer, "
        "models/qwen3.py:2076).", _ATTN, _QK_NORM, _MLP]),
    "gemma3-4b": _spec(10, [
        "10 layers = one scanned Gemma3ScannableBlock of 6 (decoder/layers/layers_0..5, L = 1) "
        "plus an unscanned decoder/layers_remainder/layers_0..3 whose leaves have NO layer "
        "axis (layers/nnx_decoders.py:709-735). The real model (34 = 5 * 6 + 4) has the same "
        "structure with L = 5.",
        "Attention pattern 5 LOCAL_SLIDING + 1 GLOBAL (models/gemma3.py:38-45); local and "
        "global layers have identical parameters.",
        _ATTN, _QK_NORM, _MLP,
        "Norms per layer: pre/post_self_attention_norm, pre/post_ffw_norm [emb, L].",
        "logits_via_embedding=true: tied, no logits_dense leaf."]),
    "mixtral-8x7b": _spec(2, [
        "decoder_block mixtral: one scanned stack; the MoE sits at decoder/layers/MoeBlock_0 "
        "(models/mixtral.py:124), no shared expert.", _ATTN, _MOE], _MOE_FIELDS),
    "qwen3-30b-a3b": _spec(2, [
        "decoder_block qwen3_moe: one scanned stack; the MoE sits at decoder/layers/moe_block "
        "(models/qwen3.py:2156), no shared expert.", _ATTN, _QK_NORM, _MOE], _MOE_FIELDS),
    "llama4-17b-16e": _spec(4, [
        "inhomogeneous_layer_cycle_interval=4: one scanned Llama4ScannableBlock holding "
        "decoder/layers/layers_0..3 (models/llama4.py:521-566), each with L at axis 1.",
        "interleave_moe_layer_step=1: every layer is MoE, Llama4MoEBlock_0 = RoutedAndSharedMoE "
        "(models/llama4.py:389-403, layers/moe.py:4732-4809): Llama4MoEBlock_0/MoeBlock_0 "
        "routed experts and Llama4MoEBlock_0/shared_experts, an MlpBlock [emb, L, "
        "shared_experts * moe_mlp].",
        "layers_3 is the NoPE global-attention layer, the others chunked attention "
        "(models/llama4.py:256-267, 375): no parameter difference. The QK norm is a "
        "parameter-free L2 norm (no query_norm/key_norm leaves).",
        _ATTN, _MOE], _MOE_FIELDS + ("interleave_moe_layer_step", "nope_layer_interval",
                                     "chunk_attn_window_size")),
    "llama4-17b-128e": _spec(4, [
        "inhomogeneous_layer_cycle_interval=4: one scanned Llama4ScannableBlock holding "
        "decoder/layers/layers_0..3 (models/llama4.py:521-566), each with L at axis 1.",
        "interleave_moe_layer_step=2: layers_0 and layers_2 are dense (mlp, an MlpBlock, "
        "models/llama4.py:403), layers_1 and layers_3 MoE (Llama4MoEBlock_0 = "
        "RoutedAndSharedMoE: MoeBlock_0 routed experts + shared_experts MlpBlock, "
        "layers/moe.py:4732-4809).",
        "layers_3 is the NoPE global-attention layer, the others chunked attention: no "
        "parameter difference; the QK norm is parameter-free.",
        _ATTN, _MLP, _MOE], _MOE_FIELDS + ("interleave_moe_layer_step", "nope_layer_interval",
                                           "chunk_attn_window_size")),
    "deepseek3-671b": _spec(5, [
        "Two scanned stacks (layers/nnx_decoders.py:700-707): decoder/dense_layers "
        "(first_num_dense_layers = 3, L = 3, DeepSeekDenseLayer with mlp, models/deepseek.py:324-"
        "337) and decoder/moe_layers (L = num_decoder_layers - 3 = 2, DeepSeekMoELayer, "
        "models/deepseek.py:410-427).",
        "MLA (layers/attention_mla.py:663-745): wq_a/kernel [emb, L, q_lora], q_norm/scale "
        "[q_lora, L], wq_b/kernel [q_lora, L, H, qk_nope + qk_rope = 192]; wkv_a/kernel "
        "[emb, L, kv_lora + qk_rope = 576] whose output splits [kv_lora | rope] "
        "(attention_mla.py:1012), kv_norm/scale [kv_lora, L], wkv_b/kernel [kv_lora, L, H, "
        "qk_nope + v_head = 256] split [k_nope | v] on its last axis (773); out/kernel "
        "[H, L, v_head, emb] (out_head_dim = v_head_dim, 768-770).",
        _MLP,
        "MoE: moe_layers/DeepSeekMoeBlock_0 = RoutedAndSharedMoE (layers/moe.py:4732-4809): "
        "MoeBlock_0 routed experts and shared_experts, an MlpBlock [emb, L, shared_experts * "
        "moe_mlp].", _MOE,
        "The router's bias (routed_bias, aux-loss-free balancing) is a MoEBiasVar, not an "
        "nnx.Param (layers/moe.py:561, 640-645), so it is not in the tree; as a non-Param it "
        "is stacked on axis 0: [L, E]."],
     _MOE_FIELDS + ("first_num_dense_layers", "attention_type", "q_lora_rank", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")),
    "gpt-oss-20b": _spec(2, [
        "inhomogeneous_layer_cycle_interval=2: one scanned GptOssScannableBlock holding "
        "decoder/layers/layers_0 (LOCAL_SLIDING) and layers_1 (GLOBAL) (models/gpt_oss.py:45-55, "
        "233-270), identical parameters.",
        "GptOssAttention (layers/attentions.py Attention, attention_bias): query/kernel "
        "[emb, L, H, hd], key|value/kernel [emb, L, Hkv, hd], out/kernel [H, L, hd, emb]; "
        "query/bias [H, L, hd], key|value/bias [Hkv, L, hd], out/bias [emb, L]; sinks [H, L] "
        "(per-head attention-sink logit, attentions.py:466-472).",
        "GptOssMlp = RoutedMoE with mlp_bias (models/gpt_oss.py:121): gate/kernel [emb, L, E] "
        "and gate/bias [E, L] (a Param here, layers/moe.py:646-650); wi_0, wi_1 [E, L, emb, "
        "moe_mlp], wo [E, L, moe_mlp, emb] (moe.py:1055-1088); wi_0_bias, wi_1_bias [E, L, "
        "moe_mlp], wo_bias [E, L, emb] (moe.py:1093-1112)."],
     _MOE_FIELDS + ("attention_bias", "attention_sink", "mlp_bias", "sliding_window_size")),
    "qwen3-next-80b-a3b": _spec(4, [
        "inhomogeneous_layer_cycle_interval=4: decoder/layers is one scanned "
        "Qwen3NextScannableBlock (models/qwen3.py:1479-1578, L = 1) of local_layers (3 "
        "Gated DeltaNet layers) and global_layer (1 full-attention layer).",
        "Nested scan: local_layers is itself stacked by nnx_scan.create_scanned_layers with "
        "param_scan_axis=1 (models/qwen3.py:1549-1562), then the outer scan inserts its axis at "
        "1 as well, so every local_layers leaf has TWO layer axes: outer L at 1, inner Li = 3 "
        "at 2 (e.g. wi_0 [E, L, Li, emb, moe_mlp], a per-head vector A_log [Hv, L, Li], a norm "
        "scale [emb, L, Li]). global_layer leaves have only L at 1.",
        "Gated DeltaNet (local_layers/attention, models/qwen3.py:474-631): "
        "in_proj_qkvz/kernel [emb, L, Li, 2*key_dim + 2*value_dim = 12288], its output grouped "
        "per key head, 16 x [q 128 | k 128 | v 2*128 | z 2*128] (reshape/split 774-820); "
        "in_proj_ba/kernel [emb, L, Li, 2*Hv = 64], per key head [b 2 | a 2] (836-848); "
        "conv1d/kernel [kernel 4, L, Li, 1, conv_dim 8192], a depthwise nnx.Conv "
        "(feature_group_count = conv_dim, kernel (k, in/groups, out), 588-599); A_log and "
        "dt_bias [Hv = 32, L, Li] (608-611); norm/rms_norm/scale [Dv = 128, L, Li], a gated "
        "RMSNorm over the head dim (613-620); out_proj/kernel [value_dim 4096, L, Li, emb] "
        "(621-631).",
        "Full attention (global_layer/attention/attention, models/qwen3.py:1265-1306): "
        "query/kernel [emb, L, H, 2*hd] = [query | output gate] split on the last axis "
        "(layers/attentions.py:679-680, 1266-1271; sigmoid gate at 1363); key|value/kernel "
        "[emb, L, Hkv, hd]; out/kernel [H*hd = 4096, L, emb] with heads flattened "
        "(attentions.py:818-821); query_norm/key_norm scale [hd, L].",
        "MoE (mlp = Qwen3NextSparseMoeBlock, models/qwen3.py:1357-1424): mlp/routed_experts "
        "(RoutedMoE: gate/kernel [emb, L(, Li), E], wi_0/wi_1 [E, L(, Li), emb, moe_mlp], wo "
        "[E, L(, Li), moe_mlp, emb]); mlp/shared_expert MlpBlock [emb, L(, Li), moe_mlp]; "
        "mlp/shared_expert_gate/kernel [emb, L(, Li), 1], a scalar sigmoid gate on the shared "
        "expert.",
        "Norms: input_layernorm, post_attention_layernorm [emb, L(, Li)].",
        "The sharding metadata of the nested local_layers leaves is inconsistent (names out of "
        "order or missing); the logical-axes notes below show it as recorded."],
     _MOE_FIELDS + ("gdn_conv_kernel_dim", "gdn_key_head_dim", "gdn_value_head_dim",
                    "gdn_num_key_heads", "gdn_num_value_heads", "partial_rotary_factor")),
}


def _versions() -> dict[str, str]:
  return {name: metadata.version(name) for name in ("maxtext", "flax", "jax", "jaxlib",
                                                    "numpy")}


def _plain(value):
  """A config value as JSON (enums and dtypes as their names)."""
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if hasattr(value, "value") and isinstance(value.value, str):
    return value.value
  if hasattr(value, "name") and isinstance(value.name, str):
    return value.name
  return str(value)


def _full_layers(model: str) -> int:
  """The model's own layer count, from its yml."""
  path = os.path.join(MAXTEXT_CONFIGS_DIR, "models", f"{model}.yml")
  return int(omegaconf.OmegaConf.load(path)["base_num_decoder_layers"])


def build(model: str):
  """The MaxText config and abstract NNX model of one spec."""
  spec = MODELS[model]
  with tempfile.TemporaryDirectory(prefix="maxtext_capture_") as out_dir:
    # pyconfig wants an output folder (and would make ./maxtext_output otherwise).
    config = pyconfig.initialize(
        [None, os.path.join(MAXTEXT_CONFIGS_DIR, "base.yml")],
        model_name=model, override_model_config=True,
        base_num_decoder_layers=spec["layers"], run_name="capture",
        base_output_directory=out_dir, skip_jax_distributed_system=True, **spec["overrides"])
  mesh = maxtext_utils.get_mesh_from_config(config)
  _, abstract_model = model_creation_utils.create_nnx_abstract_model(config, mesh)
  return config, abstract_model


def _axes_notes(abstract_model) -> tuple[list[str], list[str]]:
  """Notes on the logical axis names (MaxText's sharding metadata) of each distinct Param,
  layers_<i> collapsed, and on the variables that are not Params."""
  axes, others = {}, []
  for path, var in nnx.iter_graph(abstract_model):
    if not isinstance(var, nnx.Variable) or isinstance(var, nnx.RngState):
      continue
    name = "/".join(str(p) for p in path)
    shape = tuple(var.get_value().shape)
    if not isinstance(var, nnx.Param):
      others.append(f"Not a Param, so not in the tree: {name} {list(shape)} "
                    f"({type(var).__name__}).")
      continue
    meta = var.get_metadata()
    names = meta.get("sharding_names") or meta.get("out_sharding") or meta.get("sharding")
    key = re.sub(r"layers_\d+", "layers_*", name)
    if key in axes:
      continue
    if names is None:
      axes[key] = f"{key}: (no names)"
    else:
      mark = "" if len(names) == len(shape) else f" [rank {len(shape)} != {len(names)} names]"
      axes[key] = f"{key}: ({', '.join(str(n) for n in names)}){mark}"
  return [f"logical axes {axes[k]}" for k in sorted(axes)], others


def capture(model: str) -> dict:
  """The fixture of one model: source, versions, key config fields and its leaves."""
  spec = MODELS[model]
  config, abstract_model = build(model)
  params = nnx.state(abstract_model, nnx.Param).to_pure_dict()
  leaves = fixture_io.leaves(params)
  fields = {name: _plain(getattr(config, name)) for name in _FIELDS + tuple(spec["fields"])}
  fields["full_model_num_decoder_layers"] = _full_layers(model)
  axes, others = _axes_notes(abstract_model)
  return {
      "source": f"maxtext {metadata.version('maxtext')} models.Transformer (model_name={model})",
      "library_versions": _versions(),
      "config": fields,
      "notes": _COMMON + spec["notes"] + others + axes,
      "leaves": leaves,
  }


def main(argv=None) -> int:
  quiet = lambda: logging.getLogger().setLevel(logging.ERROR)  # pyconfig logs every default
  return fixture_io.main(__doc__.splitlines()[0], MODELS, capture, "maxtext_", argv, quiet)


if __name__ == "__main__":
  sys.exit(main())
