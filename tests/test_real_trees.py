"""Parameter trees of real model code (tests/fixtures/trees, captured by
tools/capture_trees.py from the libraries themselves): every leaf's role and axes, and one
"paper" step on a small tree of the same layout."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import symoptax
from symoptax import MatrixAxes as A
from symoptax.roles import path_str

FIXTURES = Path(__file__).parent / "fixtures" / "trees"
DENSE_IN, DENSE_OUT, LOOKUP = A(1, 0), A(0, 1, fan_out="cols"), A(0, 1, fan_out="cols")
CONV_IN, CONV_OUT = A(0, 1), A(1, 0, fan_out="cols")  # FlaxConv1D kernels are [out, in]
HF_ATTN = {f"self_attn/{n}_proj/kernel": (f"attn_{n}", DENSE_IN) for n in "qkv"}
HF_ATTN["self_attn/o_proj/kernel"] = ("attn_o", DENSE_IN)
SWIGLU = {"mlp/gate_proj/kernel": ("mlp_in", DENSE_IN), "mlp/up_proj/kernel": ("mlp_in", DENSE_IN),
          "mlp/down_proj/kernel": ("mlp_out", DENSE_OUT)}
# (regex over the path with the layer index as N) -> (role, axes under attention="whole").
# Every other leaf must be a vector (norm scales, biases).
EXPECTED = {
    "hf_flax_llama": {"model/embed_tokens/embedding": ("embedding", LOOKUP),
                      "lm_head/kernel": ("lm_head", DENSE_IN),
                      **{f"model/layers/N/{k}": v for k, v in {**HF_ATTN, **SWIGLU}.items()}},
    "hf_flax_gemma": {"model/embed_tokens/embedding": ("embedding", LOOKUP),  # tied head
                      **{f"model/layers/N/{k}": v for k, v in {**HF_ATTN, **SWIGLU}.items()}},
    "hf_flax_gpt2": {"transformer/wte/embedding": ("embedding", LOOKUP),  # tied head
                     "transformer/wpe/embedding": ("position", LOOKUP),
                     "transformer/h/N/attn/c_attn/kernel": ("attn_qkv", CONV_IN),
                     "transformer/h/N/attn/c_proj/kernel": ("attn_o", CONV_IN),
                     "transformer/h/N/mlp/c_fc/kernel": ("mlp_in", CONV_IN),
                     "transformer/h/N/mlp/c_proj/kernel": ("mlp_out", CONV_OUT)},
    "hf_flax_opt": {"model/decoder/embed_tokens/embedding": ("embedding", LOOKUP),  # tied
                    "model/decoder/embed_positions/embedding": ("position", LOOKUP),
                    **{f"model/decoder/layers/N/self_attn/{n}_proj/kernel": (f"attn_{n}", DENSE_IN)
                       for n in "qkv"},
                    "model/decoder/layers/N/self_attn/out_proj/kernel": ("attn_o", DENSE_IN),
                    "model/decoder/layers/N/fc1/kernel": ("mlp_in", DENSE_IN),
                    "model/decoder/layers/N/fc2/kernel": ("mlp_out", DENSE_OUT)},
    "hf_flax_gptj": {"transformer/wte/embedding": ("embedding", LOOKUP),
                     "lm_head/kernel": ("lm_head", DENSE_IN),
                     **{f"transformer/h/N/attn/{n}_proj/kernel": (f"attn_{n}", DENSE_IN)
                        for n in "qkv"},
                     "transformer/h/N/attn/out_proj/kernel": ("attn_o", DENSE_IN),
                     "transformer/h/N/mlp/fc_in/kernel": ("mlp_in", DENSE_IN),
                     "transformer/h/N/mlp/fc_out/kernel": ("mlp_out", DENSE_OUT)},
}
HEAD = 8  # the small trees' head size


def fixture(name):
  return json.loads((FIXTURES / f"{name}.json").read_text())


def tree_of(leaves, make):
  tree = {}
  for path, shape, dtype in leaves:
    *parents, last = path.split("/")
    node = tree
    for k in parents:
      node = node.setdefault(k, {})
    node[last] = make(path, tuple(shape), jnp.dtype(dtype))
  return tree


def flat(tree):
  leaf = lambda x: x is None or isinstance(x, A)
  return {path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree, is_leaf=leaf)[0]}


def small_dims(fx):
  """Real dimension -> a small one of the same role in the layout (heads of size HEAD)."""
  c = fx["config"]
  d, hd = c["hidden_size"], c["head_dim"]
  out = {c["vocab_size"]: 64, d: 2 * HEAD, c["intermediate_size"]: 40, 3 * d: 6 * HEAD,
         c["num_attention_heads"] * hd: 4 * HEAD if c["num_attention_heads"] * hd != d
         else 2 * HEAD}
  out.setdefault(c["num_key_value_heads"] * hd, HEAD)
  for path, shape, _ in fx["leaves"]:  # the position table (OPT's has 2 extra rows)
    if re.search(r"wpe|positions", path):
      out[shape[0]] = 24
  return out


def expected_for(name, path):
  generic = re.sub(r"/\d+/", "/N/", path)
  return EXPECTED[name].get(generic, ("vector", None))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_leaf_of_a_real_tree_gets_its_role_and_axes(name):
  fx = fixture(name)
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  roles = flat(symoptax.label_roles(tree))
  axes = flat(symoptax.matrix_axes(tree, attention="whole"))
  assert len(roles) == len(fx["leaves"])
  for path, shape, _ in fx["leaves"]:
    assert (roles[path], axes[path]) == expected_for(name, path), (path, shape)
  seen = {re.sub(r"/\d+/", "/N/", p) for p in roles}
  assert set(EXPECTED[name]) <= seen  # every expected pattern names real leaves


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_paper_step_on_a_small_tree_of_the_same_layout(name):
  fx = fixture(name)
  small = small_dims(fx)
  key = iter(jax.random.split(jax.random.key(0), 2 * len(fx["leaves"])))
  make = lambda p, s, dt: jax.random.normal(next(key), tuple(small.get(n, n) for n in s), dt)
  params = tree_of(fx["leaves"], make)
  grads = jax.tree_util.tree_map(lambda x: jax.random.normal(next(key), x.shape), params)
  real = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  assert symoptax.label_roles(params) == symoptax.label_roles(real)
  tx = symoptax.symmetry_stack(0.02, preset="paper", params=params, head_dim=HEAD)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for path, u in flat(updates).items():
    assert bool(jnp.all(jnp.isfinite(u))) and float(jnp.abs(u).max()) > 0, path


def test_conv1d_kernels_follow_the_block_and_dense_ports_keep_theirs():
  """GPT-2's FlaxConv1D [out, in] kernels under attention="heads": each head of c_attn is
  [hd, d] rows = hd; a nanoGPT-style port with the same names but Dense [in, out] kernels
  (the same tree transposed) gets the Dense reading (negative control)."""
  fx = fixture("hf_flax_gpt2")
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  heads = flat(symoptax.matrix_axes(tree, head_dim=64))
  assert heads["transformer/h/0/attn/c_attn/kernel"] == A(1, 2, split=((0, 64),))
  assert heads["transformer/h/0/attn/c_proj/kernel"] == A(0, 2, split=((1, 64),))
  transposed = tree_of([(p, s[::-1] if re.search(r"/c_\w+/kernel", p) else s, dt)
                        for p, s, dt in fx["leaves"]],
                       lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  dense = flat(symoptax.matrix_axes(transposed, attention="whole"))
  assert dense["transformer/h/0/attn/c_attn/kernel"] == DENSE_IN
  assert dense["transformer/h/0/mlp/c_fc/kernel"] == DENSE_IN
  assert dense["transformer/h/0/mlp/c_proj/kernel"] == DENSE_OUT


def test_position_tables_take_adamw_in_every_preset():
  fx = fixture("hf_flax_gpt2")
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  for preset in symoptax.PRESETS:
    rows = {r["path"]: r for r in symoptax.describe(tree, preset=preset, attention="whole").rows}
    assert rows["transformer/wpe/embedding"]["role"] == "position"
    assert rows["transformer/wpe/embedding"]["rule"] == "adamw", preset
  # A layernorm named post_* is not a position table.
  assert symoptax.label_roles({"post_attention_layernorm": {"scale": jnp.ones(4)},
                               "embed": {"pos_embedding": jnp.ones((8, 4))}}) == {
      "post_attention_layernorm": {"scale": "vector"}, "embed": {"pos_embedding": "position"}}


# MaxText 0.2.5's scanned trees (tools/capture_maxtext_trees.py, param_scan_axis 1): the
# mainstream dense and MoE blocks. (Its other blocks -- gpt-oss, DeepSeek MLA, shared experts,
# Qwen3-Next's nested scans -- and DeepMind gemma's einsum kernels are captured too but not
# yet read by the built-ins; README "Roles".)
SCANNED = dict(layers=(1,))
MAXTEXT = [(r"token_embedder/embedding$", "embedding", A(0, 1, fan_out="cols")),
           (r"logits_dense/kernel$", "lm_head", A(1, 0)),
           (r"self_attention/query/kernel$", "attn_q", A((2, 3), 0, **SCANNED)),
           (r"self_attention/key/kernel$", "attn_k", A((2, 3), 0, **SCANNED)),
           (r"self_attention/value/kernel$", "attn_v", A((2, 3), 0, **SCANNED)),
           (r"self_attention/out/kernel$", "attn_o", A(3, (0, 2), **SCANNED)),
           (r"mlp/wi_[01]/kernel$", "mlp_in", A(2, 0, **SCANNED)),
           (r"mlp/wo/kernel$", "mlp_out", A(0, 2, fan_out="cols", **SCANNED)),
           (r"/gate/kernel$", "router", A(2, 0, **SCANNED)),
           (r"/wi_[01]$", "expert_in", A(3, 2, **SCANNED)),
           (r"/wo$", "expert_out", A(2, 3, fan_out="cols", **SCANNED))]


@pytest.mark.parametrize("model", ["llama3-8b", "qwen3-8b", "mixtral-8x7b", "qwen3-30b-a3b"])
def test_maxtext_scanned_trees_get_their_roles_and_axes(model):
  fx = fixture(f"maxtext_{model}")
  assert fx["config"]["param_scan_axis"] == 1
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  roles = flat(symoptax.label_roles(tree, scan_axis=1))
  axes = flat(symoptax.matrix_axes(tree, scan_axis=1, attention="whole"))
  for path, shape, _ in fx["leaves"]:
    want = next(((r, a) for pattern, r, a in MAXTEXT if re.search(pattern, path)),
                ("vector", None))
    assert (roles[path], axes[path]) == want, (path, shape)
