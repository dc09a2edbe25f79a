"""Captures the parameter-tree layouts of DeepMind ``gemma`` models as JSON fixtures.

Each fixture, ``tests/fixtures/trees/gemma_<name>.json``, records every parameter leaf of a
model from the ``gemma`` package (``from gemma import gm``; its ``/``-joined path, shape and
dtype) so that tests can check ``symoptax.label_roles`` / ``symoptax.matrix_axes`` against
real trees without installing ``gemma``. Only shapes are computed (``jax.eval_shape`` of the
module's ``init`` on a dummy token batch): no weights are materialised and nothing is
downloaded. Each model keeps its real config except ``attention_types``, cut to two layers,
one sliding-window (local) and one global, so both attention blocks appear. The recorded
tree is the ``params`` collection (what ``gm.ckpts.load_params`` returns), without the
``params`` key on top.

The script needs its own environment (Python >= 3.11), apart from the project's. ``gemma``
4.0.1 pulls in ``kauldron``, whose full dependency set makes pip's resolver run for a long
time, so both are installed without dependencies, then only what importing ``gm.nn`` needs::

  python3.12 -m venv .gemmaenv
  .gemmaenv/bin/pip install --no-deps gemma==4.0.1 kauldron
  .gemmaenv/bin/pip install "jax[cpu]" flax numpy "etils[edc,enp,epath,epy,etree]" einops \\
      jaxtyping typeguard immutabledict ml_collections chex optax treescope absl-py \\
      sentencepiece lark clu tensorflow-cpu tensorboard pandas mediapy grain \\
      tensorflow_datasets dialog

(captured with gemma 4.0.1, kauldron 1.4.4, flax 0.12.12, jax/jaxlib 0.12.0.1; the fixtures
record the versions used). Run it from the repository root::

  .gemmaenv/bin/python tools/capture_gemma_trees.py [--out tests/fixtures/trees] [name ...]

Kernel storage in these models (see each fixture's ``notes``): every projection is an
``_layers.Einsum`` whose weight is stored in the layout of its einsum equation, heads as a
separate axis (no fused ``H * head_dim``): ``attn/q_einsum/w [H, d, hd]``,
``attn/kv_einsum/w [2, Hkv, d, hd]`` (k and v stacked on axis 0),
``attn/attn_vec_einsum/w [H, hd, d]``, ``mlp/gating_einsum [2, ff, d]`` (gate and up stacked
on axis 0, ``[ff, d]`` each) and ``mlp/linear [ff, d]``. The embedding is tied
(``[vocab, d]``, the logits use its transpose) and norms are ``scale`` vectors.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from importlib import metadata

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # shapes only: never touch an accelerator

import fixture_io  # tools/fixture_io.py: leaf lists, JSON, command line
import jax
import jax.numpy as jnp
from gemma import gm
from gemma.gm.nn import _modules as gemma3_modules
from gemma.gm.nn.gemma4 import _modules as gemma4_modules


_SRC = "gemma/gm/nn"  # package-relative source paths quoted in the notes

_COMMON = [
    "Einsum weights (param 'w') are stored in the layout of the einsum they are used in; "
    "heads are their own axis, never fused with head_dim.",
    "Tied embedding: embedder/input_embedding [vocab, d] is looked up for the input and "
    "its transpose gives the logits (no separate head leaf).",
    "Params are created in bfloat16 (Transformer.dtype defaults to jnp.bfloat16).",
]


def _gemma3_1b():
  types = gemma3_modules.AttentionType
  cls = gm.nn.Gemma3_1B
  config = dataclasses.replace(cls.config,
                               attention_types=(types.LOCAL_SLIDING, types.GLOBAL))
  fields = dict(
      model=cls.__name__, num_layers=config.num_layers,
      attention_types=[t.name for t in config.attention_types],
      full_model_attention_pattern="5 LOCAL_SLIDING : 1 GLOBAL, 26 layers",
      vocab_size=config.num_embed, embed_dim=config.embed_dim, hidden_dim=config.hidden_dim,
      num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
      head_dim=config.head_dim, use_qk_norm=config.use_qk_norm,
      transpose_gating_einsum=config.transpose_gating_einsum,
      sliding_window_size=config.sliding_window_size,
  )
  notes = _COMMON + [
      f"Einsum: {_SRC}/_layers.py:22-38; embedding {_SRC}/_modules.py:70-74, logits "
      "x @ input_embedding.T at 112.",
      f"Norms are RMSNorm scale vectors, zeros-initialised, applied as 1 + scale "
      f"({_SRC}/_layers.py:41-58).",
      f"attn/q_einsum/w [H, d, hd] ({_SRC}/_modules.py:154-156, 'BTD,NDH->BTNH' at 189).",
      f"attn/kv_einsum/w [2, Hkv, d, hd] ({_SRC}/_modules.py:157-159, 'BSD,CKDH->CBSKH' at "
      "190): axis 0 is [k, v]. Gemma 3 1B has Hkv = 1 (multi-query).",
      "Models with num_kv_heads == num_heads use one attn/qkv_einsum/w [3, H, d, hd] "
      f"instead ({_SRC}/_modules.py:137-138, 150-152); none of the Gemma 3 sizes does.",
      f"attn/attn_vec_einsum/w [H, hd, d] ({_SRC}/_modules.py:145-147, used at 298).",
      "attn/_query_norm/scale and attn/_key_norm/scale [hd]: QK RMSNorm "
      f"({_SRC}/_modules.py:160-162).",
      "mlp/gating_einsum [2, ff, d] (no 'w' level: the Einsum shares the FeedForward scope, "
      f"{_SRC}/_modules.py:360-375): transpose_gating_einsum=True, '...F,NHF->...NH'; axis 0 "
      "is [gate, up] (gelu(gate) * up). Without the transpose it is [2, d, ff].",
      f"mlp/linear [ff, d] ({_SRC}/_modules.py:383-390, '...H,HF->...F').",
      "Local and global layers have identical parameters; they differ only in mask and "
      "RoPE base.",
  ]
  return cls, config, fields, notes


def _gemma4_26b_a4b():
  types = gemma4_modules.AttentionType
  cls = gm.nn.Gemma4_26B_A4B
  config = dataclasses.replace(cls.config,
                               attention_types=(types.LOCAL_SLIDING, types.GLOBAL))
  src = f"{_SRC}/gemma4"
  fields = dict(
      model=cls.__name__, num_layers=config.num_layers,
      attention_types=[t.name for t in config.attention_types],
      full_model_attention_pattern="5 LOCAL_SLIDING : 1 GLOBAL, 30 layers",
      vocab_size=config.num_embed, embed_dim=config.embed_dim,
      num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
      head_dim=config.head_dim, num_global_kv_heads=config.num_global_kv_heads,
      global_key_size=config.global_key_size, k_eq_v_global=config.k_eq_v_global,
      enable_moe=config.enable_moe, num_experts=config.num_experts,
      expert_dim=config.expert_dim, top_k_experts=config.top_k_experts,
      moe_dense_hidden_dim=config.moe_dense_hidden_dim,
      sliding_window_size=config.sliding_window_size, text_only=True,
  )
  notes = _COMMON + [
      f"Einsum: {src}/_layers.py:22-47; embedding {src}/_modules.py:74-78, logits "
      "x @ input_embedding.T at 137.",
      "Norms are RMSNorm scale vectors, ones-initialised, applied as scale (not 1 + scale) "
      f"({src}/_layers.py:93-117).",
      "Every layer is MoE (enable_moe=True): a routed expert branch mlp plus a dense shared "
      f"branch mlp2, both fed the same input and summed ({src}/_modules.py:560-590, 669-687).",
      f"Local layers: attn/q_einsum/w [H, d, hd] ({src}/_modules.py:225-227, 'BTD,NDH->BTNH' "
      "at 263), attn/kv_einsum/w [2, Hkv, d, hd] (233-235, 'BSD,CKDH->CBSKH' at 279; axis 0 "
      "is [k, v]), attn/attn_vec_einsum/w [H, hd, d] (222-224, used at 373).",
      "Global layers use num_global_kv_heads = 2 and key size global_key_size = 512 instead "
      f"of head_dim ({src}/_modules.py:506-511), and with k_eq_v_global one "
      "attn/k_einsum/w [Hkv_global, d, key_size] (229-231, 'BSD,KDH->BSKH' at 276) serves "
      "as both keys and values: no v kernel. q_einsum/attn_vec_einsum use key_size too "
      "([H, d, 512] and [H, 512, d]).",
      "attn/query_norm/scale and attn/key_norm/scale [key_size]; the value norm has no "
      f"scale ({src}/_modules.py:236-238).",
      "mlp2/gating_einsum [2, ff, d] and mlp2/linear [ff, d] (no 'w' level, "
      f"{src}/_modules.py:437-461, always the '...F,NHF->...NH' layout): dense shared branch, "
      "ff = moe_dense_hidden_dim = 2112.",
      "mlp/router_logits/w [d, E] (MoERagged, "
      f"{src}/_moe.py:261-263, 'gsd,de->gse' at 378); mlp/router_scale [d] scales the "
      "router input (281-285); mlp/per_expert_scale [E] scales each expert's output "
      "(276-280, used at 350).",
      "mlp/gating_einsum/w [E, 2, ff_e, d] (a bare _Weight, param 'w', "
      f"{src}/_moe.py:232-245, 269-271): per expert, axis 1 is [gate, up]; it is transposed "
      "to [E, d, 2 * ff_e] for jax.lax.ragged_dot (315-327). ff_e = expert_dim = 704.",
      f"mlp/linear/w [E, ff_e, d] ({src}/_moe.py:273-275, ragged_dot at 339-341).",
      "layer_i/skip_scale [1] multiplies the layer output "
      f"({src}/_modules.py:497, 657).",
      "Norms per layer: pre_attention_norm, post_attention_norm, pre_ffw_norm (MoE input), "
      "post_ffw1_norm (MoE output), pre_ffw2_norm / post_ffw2_norm (dense branch), "
      "post_ffw_norm (sum).",
  ]
  return cls, config, fields, notes


MODELS = {"gemma3_1b": _gemma3_1b, "gemma4_26b_a4b": _gemma4_26b_a4b}


def _versions() -> dict[str, str]:
  return {name: metadata.version(name) for name in ("gemma", "kauldron", "flax", "jax",
                                                    "jaxlib", "numpy")}


def abstract_params(cls, config):
  """The model's ``params`` collection as ``jax.ShapeDtypeStruct`` leaves."""
  model = cls(config=config)
  tokens = jnp.zeros((1, 8), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))
  return variables["params"]


def capture(name: str) -> dict:
  """The fixture of one model: source, versions, key config fields and its leaves."""
  cls, config, fields, notes = MODELS[name]()
  params = abstract_params(cls, config)
  leaves = fixture_io.leaves(params)
  return {
      "source": f"gemma {metadata.version('gemma')} gm.nn.{cls.__name__}",
      "library_versions": _versions(),
      "config": fields,
      "notes": notes,
      "leaves": leaves,
  }


def main(argv=None) -> int:
  return fixture_io.main(__doc__.splitlines()[0], MODELS, capture, "gemma_", argv)


if __name__ == "__main__":
  sys.exit(main())
