"""Captures the parameter-tree layouts of EasyDeL models as JSON fixtures.

Each fixture, ``tests/fixtures/trees/easydel_<family>.json``, records every parameter leaf of
an EasyDeL causal-LM model (its ``/``-joined path, shape and dtype) so that tests can check
``symoptax.label_roles`` / ``symoptax.matrix_axes`` against real EasyDeL trees without
installing EasyDeL. Each family is built from EasyDeL's own config class (``ed.<X>Config``)
and model class (``ed.<X>ForCausalLM``) through EasyDeL's abstract builder
``<X>ForCausalLM.lazy_init`` (``nnx.eval_shape`` of the constructor,
``infra/base_module.py`` ``lazy_init``), so nothing is allocated and nothing is downloaded:
the configs are one representative checkpoint's ``config.json`` values written out below as
keyword arguments. Every dimension keeps that checkpoint's value except the layer count, cut
to the smallest count that keeps one full period of the layer pattern (see each fixture's
``config`` and ``notes``). The recorded tree is ``nnx.state(model, nnx.Param)``: what
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` updates (EasyDeL's ``ArrayParam`` is a subclass
of ``nnx.Param``, so its leaves are included). Dtypes are the model classes' defaults
(``param_dtype=jnp.bfloat16``).

The script needs its own environment (EasyDeL 0.3.0 needs Python >= 3.11), apart from the
project's. These commands worked. ``torch`` is only an optional extra of EasyDeL but is
needed all the same: ``import easydel`` imports ``transformers.generation``, which imports
``torch`` unconditionally (``transformers/generation/logits_process.py``); the CPU-only wheel
index was not reachable, so the plain PyPI wheel (a CUDA build, which pulls the ``nvidia-*``
wheels, several GB) was used, and a CPU wheel does as well. ``pillow`` is imported by
``easydel`` (its ``inference.esurge.multimodal``) but is not among its declared dependencies::

  python3.12 -m venv /work/edenv
  /work/edenv/bin/pip install easydel==0.3.0 torch
  /work/edenv/bin/pip install pillow

(captured with easydel 0.3.0, eformer 0.0.99.12, flax 0.12.3, jax/jaxlib 0.9.2, torch
2.14.1; the fixtures record the versions used). Run it from the repository root::

  JAX_PLATFORMS=cpu /work/edenv/bin/python tools/capture_easydel_trees.py \\
      [--out tests/fixtures/trees] [family ...]

Source references in the notes are relative to the installed ``easydel`` package.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from importlib import metadata

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # shapes only: never touch an accelerator

import fixture_io  # tools/fixture_io.py: leaf lists, JSON, command line
import easydel as ed
from flax import nnx


# Config fields recorded for every family (those the config has), then per-family extras.
_FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads",
           "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
           "tie_word_embeddings", "hidden_act", "hidden_activation", "attention_bias",
           "mlp_bias", "scan_layers", "layer_types")
_MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "n_shared_experts",
               "num_experts_per_tok", "moe_intermediate_size")

_COMMON = [
    "Tree: nnx.state(model, nnx.Param) of <X>ForCausalLM, built abstractly by "
    "<X>ForCausalLM.lazy_init (infra/base_module.py:2048-2085, nn.eval_shape of the "
    "constructor); this is what nnx.Optimizer(model, tx, wrt=nnx.Param) updates.",
    "Layers are unscanned: model/layers is an nnx.List of per-layer modules, so every layer "
    "leaf sits under model/layers/<i>/ with no layer axis.",
    "Linear kernels (ColumnParallelLinear / RowParallelLinear) are stored [in, out] "
    "(layers/linears/_linear.py:232); attention heads are fused into one axis: "
    "q_proj/kernel [d, H*hd], k_proj|v_proj/kernel [d, Hkv*hd], o_proj/kernel [H*hd, d], "
    "head-major (reshaped to [..., H, hd] at run time).",
    "model/embed_tokens/embedding [vocab, d] (layers/embeddings/_embeddings.py:151); "
    "lm_head/kernel [d, vocab] (modules/_base/causal_lm_module.py:271-279).",
    "RMSNorm weights are named 'kernel', not 'scale': model/norm/kernel, "
    "model/layers/<i>/*_layernorm/kernel [d] (layers/norms/_norms.py:196).",
    "Params are created in bfloat16 (param_dtype defaults to jnp.bfloat16).",
]
_TIED = (
    "tie_word_embeddings=True, yet lm_head/kernel [d, vocab] is still created as a Param "
    "(modules/_base/causal_lm_module.py:271-282; TieEmbeddingsFeature.setup is a no-op, "
    "modules/_base/_features.py:203-238): the forward passes w=embedding.T to the head "
    "(infra/base_module.py:2820-2828), so lm_head/kernel is an unused Param in the tree "
    "(zero gradient, but still in the wrt=nnx.Param set).")
_UNTIED = "tie_word_embeddings=False: lm_head/kernel is a separate, used Param."
_MLP = ("Dense MLP: mlp/gate_proj/kernel and mlp/up_proj/kernel [d, ff], mlp/down_proj/kernel "
        "[ff, d], separate (no fused gate/up); act(gate) * up.")
_QK_NORM = ("self_attn/q_norm/kernel and self_attn/k_norm/kernel [hd]: per-head QK RMSNorm.")
_EXPERTS = ("Routed experts (ParallelMoELinear, layers/linears/_linear_moe.py:231, "
            "out_first=False) are stacked on a leading expert axis and stored [E, in, out]: "
            "gate/up [E, d, ff_e], down [E, ff_e, d]; biases, where present, [E, out].")


def _spec(config, model, kwargs, cut, notes, fields=(), full=None):
  """One family: EasyDeL config/model class names, the checkpoint's config kwargs, the
  overrides that cut its layer pattern, notes, extra config fields, full-model values."""
  return dict(config=config, model=model, kwargs=kwargs, cut=cut, notes=notes,
              fields=fields, full=full or {})


MODELS = {
    # meta-llama/Meta-Llama-3-8B config.json
    "llama": _spec("LlamaConfig", "LlamaForCausalLM", dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
        bos_token_id=128000, eos_token_id=128001, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu"),
        dict(num_hidden_layers=1), [
            "Representative checkpoint: Meta-Llama-3-8B (32 identical layers, cut to 1).",
            _UNTIED,
            "self_attn/{q,k,v,o}_proj/kernel (modules/llama/modeling_llama.py:130-160, "
            "UnifiedAttention), no biases.", _MLP,
            "Norms per layer: input_layernorm, post_attention_layernorm [d]."],
        full=dict(num_hidden_layers=32)),
    # Qwen/Qwen3-8B config.json
    "qwen3": _spec("Qwen3Config", "Qwen3ForCausalLM", dict(
        vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=False, attention_bias=False, use_sliding_window=False,
        sliding_window=None, max_window_layers=36, hidden_act="silu",
        bos_token_id=151643, eos_token_id=151645),
        dict(num_hidden_layers=1), [
            "Representative checkpoint: Qwen3-8B (36 identical layers, cut to 1).",
            _UNTIED, _QK_NORM, _MLP,
            "Norms per layer: input_layernorm, post_attention_layernorm [d]."],
        full=dict(num_hidden_layers=36)),
    # Qwen/Qwen3-30B-A3B config.json
    "qwen3_moe": _spec("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
        num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
        num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1, mlp_only_layers=[],
        norm_topk_prob=True, router_aux_loss_coef=0.001, max_position_embeddings=40960,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
        attention_bias=False, use_sliding_window=False, sliding_window=None,
        max_window_layers=48, hidden_act="silu", bos_token_id=151643, eos_token_id=151645),
        dict(num_hidden_layers=1), [
            "Representative checkpoint: Qwen3-30B-A3B (48 layers, all MoE: decoder_sparse_step=1, "
            "mlp_only_layers=[]; cut to 1).",
            _UNTIED, _QK_NORM,
            "Note q_proj/kernel [d=2048, H*hd=4096] and o_proj/kernel [4096, 2048]: H*hd != d.",
            "mlp = Qwen3MoeSparseBlock (modules/qwen3_moe/modeling_qwen3_moe.py:308-330): "
            "mlp/gate/kernel [d, E] is the ROUTER (a ColumnParallelLinear, no bias), not a "
            "SwiGLU gate; mlp/experts/{gate_proj,up_proj,down_proj}/kernel are the experts "
            "(Qwen3MoeMLPStack). No shared expert.", _EXPERTS,
            "intermediate_size (6144) is unused: every layer is MoE with moe_intermediate_size "
            "(768)."],
        _MOE_FIELDS + ("decoder_sparse_step", "mlp_only_layers", "norm_topk_prob"),
        full=dict(num_hidden_layers=48)),
    # mistralai/Mixtral-8x7B-v0.1 config.json
    "mixtral": _spec("MixtralConfig", "MixtralForCausalLM", dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
        num_experts_per_tok=2, router_aux_loss_coef=0.02, max_position_embeddings=32768,
        rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None,
        tie_word_embeddings=False, hidden_act="silu", bos_token_id=1, eos_token_id=2),
        dict(num_hidden_layers=1), [
            "Representative checkpoint: Mixtral-8x7B-v0.1 (32 identical MoE layers, cut to 1); "
            "head_dim is not in its config.json and derives as d / H = 128.",
            _UNTIED,
            "MoE at model/layers/<i>/block_sparse_moe (MixtralSparseMoeBlock, "
            "modules/mixtral/modeling_mixtral.py:261-285): block_sparse_moe/gate/kernel [d, E] "
            "is the ROUTER; experts keep Mixtral's names w1 (gate) [E, d, ff], w3 (up) "
            "[E, d, ff], w2 (down) [E, ff, d] (modeling_mixtral.py:158-215: "
            "w2(act(w1 x) * w3 x)). No shared expert.", _EXPERTS,
            "Norms per layer: input_layernorm, post_attention_layernorm [d]."],
        _MOE_FIELDS + ("sliding_window",),
        full=dict(num_hidden_layers=32)),
    # openai/gpt-oss-20b config.json
    "gpt_oss": _spec("GptOssConfig", "GptOssForCausalLM", dict(
        vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=24,
        num_attention_heads=64, num_key_value_heads=8, head_dim=64, num_local_experts=32,
        num_experts_per_tok=4, sliding_window=128, rope_theta=150000.0,
        rope_scaling=dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0,
                          truncate=False, original_max_position_embeddings=4096),
        max_position_embeddings=131072, rms_norm_eps=1e-5, router_aux_loss_coef=0.9,
        tie_word_embeddings=False, hidden_act="silu", eos_token_id=200002,
        pad_token_id=199999,
        layer_types=["sliding_attention", "full_attention"] * 12),
        dict(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"]), [
            "Representative checkpoint: gpt-oss-20b (24 layers alternating sliding_attention / "
            "full_attention; cut to 2: layer 0 sliding, layer 1 full). Both kinds have "
            "identical parameters.",
            _UNTIED,
            "Attention (GptOssAttention, modules/gpt_oss/modeling_gpt_oss.py:375-446): "
            "attention_bias is forced True, so q|k|v|o_proj each have a bias [out] "
            "(q_proj/bias [H*hd], k|v_proj/bias [Hkv*hd], o_proj/bias [d]). Note H*hd = 4096 "
            "!= d = 2880.",
            "self_attn/sinks [H]: per-head attention-sink logit, an ArrayParam "
            "(modeling_gpt_oss.py:436-446), 1-D but not a norm scale.",
            "mlp = GptOssMLP (modeling_gpt_oss.py:241-372): mlp/router/kernel [d, E] and "
            "mlp/router/bias [E] (router with bias); mlp/experts/{gate_proj,up_proj}/kernel "
            "[E, d, ff_e], down_proj/kernel [E, ff_e, d], each with a bias [E, out]. The "
            "checkpoint's fused, interleaved gate_up_proj is split on load into gate_proj "
            "(even columns) and up_proj (odd columns) (modeling_gpt_oss.py:112-135). Here "
            "ff_e = intermediate_size = d = 2880, so the expert kernels are square: only the "
            "names tell gate/up [E, in=d, out=ff] from down [E, in=ff, out=d].", _EXPERTS,
            "GLU: gate clipped to <= 7, up to [-7, 7], gate * sigmoid(1.702 gate) * (up + 1) "
            "(modeling_gpt_oss.py:205-238).",
            "Norms per layer: input_layernorm, post_attention_layernorm [d]."],
        _MOE_FIELDS + ("sliding_window",),
        full=dict(num_hidden_layers=24,
                  layer_types="sliding_attention, full_attention alternating, 24 layers")),
    # deepseek-ai/DeepSeek-V3 config.json
    "deepseek_v3": _spec("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(
        vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
        num_hidden_layers=61, num_nextn_predict_layers=1, num_attention_heads=128,
        num_key_value_heads=128, n_shared_experts=1, n_routed_experts=256, ep_size=1,
        routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64,
        v_head_dim=128, qk_nope_head_dim=128, topk_method="noaux_tc", n_group=8,
        topk_group=4, num_experts_per_tok=8, moe_layer_freq=1, first_k_dense_replace=3,
        norm_topk_prob=True, scoring_func="sigmoid", aux_loss_alpha=0.001, seq_aux=True,
        hidden_act="silu", max_position_embeddings=163840, rms_norm_eps=1e-6,
        rope_theta=10000.0,
        rope_scaling=dict(type="yarn", factor=40.0, beta_fast=32.0, beta_slow=1.0, mscale=1.0,
                          mscale_all_dim=1.0, original_max_position_embeddings=4096),
        tie_word_embeddings=False, attention_bias=False, bos_token_id=0, eos_token_id=1),
        dict(num_hidden_layers=2, first_k_dense_replace=1), [
            "Representative checkpoint: DeepSeek-V3 (61 layers: first_k_dense_replace = 3 dense "
            "then 58 MoE). Cut to 2 layers with first_k_dense_replace cut to 1: layer 0 dense, "
            "layer 1 MoE (the dense layers are identical to each other).",
            "num_nextn_predict_layers=1 (the MTP module) builds no parameters in EasyDeL: "
            "there is no MTP layer in the tree.",
            _UNTIED,
            "MLA (DeepseekV3Attention, modules/deepseek_v3/modeling_deepseek.py:502-728; "
            "forward layers/attention/_unified.py:1210-1250), all [in, out] with heads fused: "
            "q_a_proj/kernel [d, q_lora=1536], q_a_layernorm/kernel [q_lora], q_b_proj/kernel "
            "[q_lora, H*(qk_nope+qk_rope) = 128*192], per head [nope 128 | rope 64]; "
            "kv_a_proj_with_mqa/kernel [d, kv_lora + qk_rope = 576] whose output splits "
            "[kv_lora 512 | k_rope 64 shared by all heads]; kv_a_layernorm/kernel [kv_lora]; "
            "kv_b_proj/kernel [kv_lora, H*(qk_nope+v_head) = 128*256], per head [k_nope 128 | "
            "v 128]; o_proj/kernel [H*v_head = 16384, d]. HF names, no q_proj (q_lora_rank set). "
            "The config's head_dim (192) is EasyDeL's qk_nope + qk_rope.",
            "Dense layer 0: mlp/{gate_proj,up_proj}/kernel [d, 18432], mlp/down_proj/kernel "
            "[18432, d].",
            "MoE layer 1 (DeepseekV3MoE, modeling_deepseek.py:406-500): mlp/gate/kernel [d, E] "
            "is the ROUTER (MoEGate, an ArrayParam, modeling_deepseek.py:148-270; sigmoid "
            "scores); mlp/gate/e_score_correction_bias [E] is the aux-loss-free balancing bias, "
            "ALSO an ArrayParam and so in the nnx.Param tree (in the DeepSeek-V3 reference it is "
            "a buffer updated by a balancing rule, not by the optimizer; here "
            "wrt=nnx.Param includes it, modeling_deepseek.py:202-207, 251); "
            "mlp/experts/{gate_proj,up_proj}/kernel [E, d, 2048], "
            "down_proj/kernel [E, 2048, d]; mlp/shared_experts/{gate_proj,up_proj}/kernel "
            "[d, n_shared*2048], down_proj/kernel [2048, d] (plain linears).", _EXPERTS,
            "Norms per layer: input_layernorm, post_attention_layernorm [d]."],
        _MOE_FIELDS + ("first_k_dense_replace", "moe_layer_freq", "num_nextn_predict_layers",
                       "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                       "v_head_dim", "topk_method", "scoring_func", "n_group", "topk_group"),
        full=dict(num_hidden_layers=61, first_k_dense_replace=3)),
    # google/gemma-3-1b-pt config.json (text-only Gemma3TextConfig)
    "gemma3": _spec("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
        num_attention_heads=4, num_key_value_heads=1, head_dim=256,
        query_pre_attn_scalar=256, sliding_window=512, sliding_window_pattern=6,
        rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling=None,
        max_position_embeddings=32768, final_logit_softcapping=None,
        attn_logit_softcapping=None, rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        attention_bias=False, pad_token_id=0, eos_token_id=1, bos_token_id=2),
        dict(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"]), [
            "Representative checkpoint: Gemma-3-1B (text only, 26 layers, pattern 5 "
            "sliding_attention : 1 full_attention). Cut to 2 layers with layer_types given "
            "explicitly: layer 0 sliding (local), layer 1 full (global), so one local and one "
            "global layer instead of the real 5:1 period. Local and global layers have "
            "identical parameters.",
            _TIED,
            "Gemma3RMSNorm (modules/gemma3/modeling_gemma3.py:126-195): weight named 'kernel', "
            "an ArrayParam (initialised to ones here) applied as (1 + kernel), "
            "modeling_gemma3.py:191.",
            _QK_NORM.replace("RMSNorm", "Gemma3RMSNorm"),
            "Gemma-3-1B has Hkv = 1: k_proj|v_proj/kernel [d, hd = 256]; H*hd = 1024 != d = "
            "1152.",
            _MLP.replace("act(gate)", "gelu_pytorch_tanh(gate)"),
            "Norms per layer: input_layernorm, post_attention_layernorm, "
            "pre_feedforward_layernorm, post_feedforward_layernorm [d]."],
        ("query_pre_attn_scalar", "sliding_window", "sliding_window_pattern"),
        full=dict(num_hidden_layers=26,
                  layer_types="5 sliding_attention : 1 full_attention, 26 layers")),
}


def _versions() -> dict[str, str]:
  return {name: metadata.version(name) for name in ("easydel", "eformer", "ejkernel", "flax",
                                                    "jax", "jaxlib", "torch", "numpy")}


def _plain(value):
  """A config value as JSON (enums as their values, sequences as lists)."""
  if isinstance(value, (bool, int, float, str)) or value is None:
    return value
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if hasattr(value, "value") and isinstance(value.value, (str, int)):
    return value.value
  return str(value)


def build(name: str):
  """EasyDeL's config and abstract causal-LM model of one family."""
  spec = MODELS[name]
  config = getattr(ed, spec["config"])(**{**spec["kwargs"], **spec["cut"]})
  model = getattr(ed, spec["model"]).lazy_init(config=config, rngs=nnx.Rngs(0))
  return config, model


def _variable_notes(model) -> list[str]:
  """Notes on Params of an EasyDeL subclass and on Variables that are not Params, layer
  indices collapsed to <i>."""
  kinds, others = {}, set()
  for path, var in nnx.iter_graph(model):
    if not isinstance(var, nnx.Variable) or isinstance(var, nnx.RngState):
      continue
    key = re.sub(r"/\d+(?=/|$)", "/<i>", "/".join(str(p) for p in path))
    if not isinstance(var, nnx.Param):
      others.add(f"Not a Param, so not in the tree: {key} ({type(var).__name__}).")
    elif type(var) is not nnx.Param:
      kinds.setdefault(type(var).__name__, set()).add(key)
  notes = [f"{kind} (a subclass of nnx.Param, so in the tree): {', '.join(sorted(keys))}."
           for kind, keys in sorted(kinds.items())]
  return notes + sorted(others)


def capture(name: str) -> dict:
  """The fixture of one family: source, versions, key config fields and its leaves."""
  spec = MODELS[name]
  config, model = build(name)
  params = nnx.state(model, nnx.Param).to_pure_dict()
  leaves = fixture_io.leaves(params)
  fields = {}
  for field in _FIELDS + tuple(spec["fields"]):
    if hasattr(config, field):
      fields[field] = _plain(getattr(config, field))
  fields["cut"] = {k: _plain(v) for k, v in spec["cut"].items()}
  fields.update({f"full_model_{k}": v for k, v in spec["full"].items()})
  return {
      "source": f"easydel {metadata.version('easydel')} {spec['model']} ({spec['config']})",
      "library_versions": _versions(),
      "config": fields,
      "notes": _COMMON + spec["notes"] + _variable_notes(model),
      "leaves": leaves,
  }


def _quiet():
  logging.getLogger().setLevel(logging.ERROR)
  warnings.filterwarnings("ignore")


def main(argv=None) -> int:
  return fixture_io.main(__doc__.splitlines()[0], MODELS, capture, "easydel_", argv, _quiet)


if __name__ == "__main__":
  sys.exit(main())
