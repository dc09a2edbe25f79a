"""label_roles / matrix_axes on every example model: the full table of every leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import symoptax
from examples.models import gemma3, maxtext_style, moe, qwen3
from symoptax import MatrixAxes as A
from symoptax.roles import path_str

V = None  # vectors have no axes


def table(params, attention="heads", **kw):
  """{path: (role, axes)} for every leaf."""
  roles = symoptax.label_roles(params, **kw)
  axes = symoptax.matrix_axes(params, attention=attention, **kw)
  flat_axes = jax.tree_util.tree_leaves(axes, is_leaf=lambda a: a is None or isinstance(a, A))
  return {path_str(p): (r, a) for (p, r), a in
          zip(jax.tree_util.tree_flatten_with_path(roles)[0], flat_axes)}


def per_layer(layers, entries):
  return {f"layers/{i}/{k}": v for i in range(layers) for k, v in entries.items()}


# 2-D kernels viewed head by head (head size 16, read from q_norm/k_norm or given):
# q/k/v [d, H hd] as [d, H, hd], o [H hd, d] as [H, hd, d].
HEADS = dict(split=((1, 16),))
ATTN_HF = {
    "self_attn/q_proj/kernel": ("attn_q", A(2, 0, **HEADS)),
    "self_attn/k_proj/kernel": ("attn_k", A(2, 0, **HEADS)),
    "self_attn/v_proj/kernel": ("attn_v", A(2, 0, **HEADS)),
    "self_attn/o_proj/kernel": ("attn_o", A(2, 1, split=((0, 16),))),
}
QK_NORM = {"self_attn/q_norm/scale": ("vector", V), "self_attn/k_norm/scale": ("vector", V)}
SWIGLU = {
    "mlp/gate_proj/kernel": ("mlp_in", A(1, 0)),
    "mlp/up_proj/kernel": ("mlp_in", A(1, 0)),
    "mlp/down_proj/kernel": ("mlp_out", A(0, 1, fan_out="cols")),
}
NORMS = {"input_layernorm/scale": ("vector", V), "post_attention_layernorm/scale": ("vector", V)}
EMB = A(0, 1, fan_out="cols")  # [V, d]: a lookup whose output is d
TOP = {"embed_tokens/embedding": ("embedding", EMB), "norm/scale": ("vector", V),
       "lm_head/kernel": ("lm_head", A(1, 0))}


def nnx_params(cls):
  return nnx.state(cls(rngs=nnx.Rngs(0)), nnx.Param)


def test_qwen3_full_table():
  expected = {**TOP, **per_layer(2, {**ATTN_HF, **QK_NORM, **SWIGLU, **NORMS})}
  assert table(nnx_params(qwen3.Qwen3)) == expected


def test_qwen3_pure_dict_form_gives_the_same_table():
  params = nnx_params(qwen3.Qwen3)
  assert table(nnx.to_pure_dict(params)) == table(params)


def test_gemma3_full_table():
  attn = {k.replace("self_attn", "attn"): v for k, v in {**ATTN_HF, **QK_NORM}.items()}
  norms = {f"{n}/scale": ("vector", V) for n in ("pre_attention_norm", "post_attention_norm",
                                                  "pre_ffw_norm", "post_ffw_norm")}
  expected = {"embedder/embedding": ("embedding", EMB), "final_norm/scale": ("vector", V),
              **per_layer(2, {**attn, **SWIGLU, **norms})}
  assert table(nnx_params(gemma3.Gemma3)) == expected


def test_olmoe_full_table():
  mlp = {"mlp/gate/kernel": ("router", A(1, 0)),
         "mlp/experts/gate_proj": ("expert_in", A(2, 1)),
         "mlp/experts/up_proj": ("expert_in", A(2, 1)),
         "mlp/experts/down_proj": ("expert_out", A(1, 2, fan_out="cols"))}
  expected = {**TOP, **per_layer(2, {**ATTN_HF, **QK_NORM, **mlp, **NORMS})}
  assert table(nnx_params(moe.Olmoe)) == expected


def test_gpt_oss_full_table():
  attn_bias = {f"self_attn/{n}/bias": ("vector", V) for n in ("q_proj", "k_proj", "v_proj",
                                                               "o_proj")}
  mlp = {"mlp/router/kernel": ("router", A(1, 0)), "mlp/router/bias": ("vector", V),
         "mlp/experts/gate_up_proj": ("expert_in", A(2, 1)),
         "mlp/experts/gate_up_proj_bias": ("vector", V),
         "mlp/experts/down_proj": ("expert_out", A(1, 2, fan_out="cols")),
         "mlp/experts/down_proj_bias": ("vector", V)}
  expected = {**TOP, **per_layer(2, {**ATTN_HF, **attn_bias, "self_attn/sinks": ("vector", V),
                                     **mlp, **NORMS})}
  # gpt-oss has no q_norm/k_norm to read the head size from: it is given.
  assert table(nnx_params(moe.GptOss), head_dim=16) == expected


@pytest.mark.parametrize("scan_axis", [0, 1])
def test_maxtext_style_full_table(scan_axis):
  _, params = maxtext_style.init(maxtext_style.Config(param_scan_axis=scan_axis))
  # Core layouts: query/key/value [d, H, hd], out [H, hd, d], wi [d, ff], wo [ff, d]; the
  # layer axis sits at scan_axis and is a batch axis.
  lift = lambda a: a if a < scan_axis else a + 1
  ax = lambda rows, cols, fan_out="rows": A(lift(rows), lift(cols), fan_out=fan_out,
                                             layers=(scan_axis,))
  layer = {
      "self_attention/query/kernel": ("attn_q", ax(2, 0)),
      "self_attention/key/kernel": ("attn_k", ax(2, 0)),
      "self_attention/value/kernel": ("attn_v", ax(2, 0)),
      "self_attention/out/kernel": ("attn_o", ax(2, 1)),
      "mlp/wi_0/kernel": ("mlp_in", ax(1, 0)),
      "mlp/wi_1/kernel": ("mlp_in", ax(1, 0)),
      "mlp/wo/kernel": ("mlp_out", ax(0, 1, "cols")),
      "pre_self_attention_layer_norm/scale": ("vector", V),
      "post_self_attention_layer_norm/scale": ("vector", V),
  }
  expected = {"token_embedder/embedding": ("embedding", EMB),
              "decoder/decoder_norm/scale": ("vector", V),
              "decoder/logits_dense/kernel": ("lm_head", A(1, 0)),
              **{f"decoder/layers/{k}": v for k, v in layer.items()}}
  assert table(params, scan_axis=scan_axis) == expected


def test_flax_default_names_and_unknown_matrices():
  params = {"Embed_0": {"embedding": jnp.ones((50, 8))},
            "Dense_0": {"kernel": jnp.ones((8, 16)), "bias": jnp.ones(16)},
            "LayerNorm_0": {"scale": jnp.ones(16)}, "temperature": jnp.ones(())}
  assert table(params) == {
      "Embed_0/embedding": ("embedding", EMB),
      "Dense_0/kernel": ("matrix", A(1, 0)), "Dense_0/bias": ("vector", V),
      "LayerNorm_0/scale": ("vector", V), "temperature": ("vector", V)}
  assert "matrix" in str(symoptax.describe(params))


def test_fused_qkv_and_maxtext_moe_names():
  params = {"attn": {"c_attn": {"kernel": jnp.ones((8, 24))}},
            "MoeBlock_0": {"gate": {"kernel": jnp.ones((8, 4))},
                           "wi_0": jnp.ones((4, 8, 16)), "wo": jnp.ones((4, 16, 8))}}
  assert table(params, attention="whole") == {
      "attn/c_attn/kernel": ("attn_qkv", A(1, 0)),
      "MoeBlock_0/gate/kernel": ("router", A(1, 0)),
      "MoeBlock_0/wi_0": ("expert_in", A(2, 1)),
      "MoeBlock_0/wo": ("expert_out", A(1, 2, fan_out="cols"))}


def test_user_rules_take_precedence():
  params = {"blocks": {"0": {"wqkv": jnp.ones((8, 24)), "proj": jnp.ones((8, 8))}},
            "tok": jnp.ones((30, 8)), "lm_head": {"kernel": jnp.ones((8, 30))}}
  rules = [(r"blocks/\d+/wqkv", "attn_qkv"), (r"^tok$", "embedding"),
           (r"lm_head", "matrix")]
  t = table(params, rules=rules, attention="whole")
  assert t["blocks/0/wqkv"] == ("attn_qkv", A(1, 0))
  assert t["tok"] == ("embedding", EMB)
  assert t["lm_head/kernel"] == ("matrix", A(1, 0))
  assert t["blocks/0/proj"] == ("matrix", A(1, 0))


@pytest.mark.parametrize("params,kw,match", [
    ({"embed": {"lm_head": {"kernel": jnp.ones((8, 8))}}}, {},
     r"embed/lm_head/kernel: built-in patterns claim .*embedding, lm_head.*rules="),
    ({"mlp": {"experts": {"up_proj": jnp.ones((2, 4, 8, 16))}}}, {},
     r"mlp/experts/up_proj: .*'expert_in'.*needs 2 or 3.*rules="),
    ({"embed_tokens": {"embedding": jnp.ones(8)}}, {},
     r"embed_tokens/embedding: .*'embedding'.*1 matrix dims"),
    ({"params": {"rng": jax.random.key(0)}}, {}, r"params/rng: .*not a trainable.*nnx.Param"),
    ({"embed_tokens": {"embedding": jnp.ones((4, 8, 2))}}, {},
     r"embed_tokens/embedding: .*'embedding'.*needs 2"),
    ({"decoder": {"layers": {"mlp": {"wo": {"kernel": jnp.ones((4, 2, 8))}}}}},
     {"scan_axis": 3}, r"decoder/layers/mlp/wo/kernel: scan_axis=3 is out of range"),
    ({"weird": jnp.ones((2, 3, 4))}, {}, r"weird: no role matches this 3-dim leaf"),
    ({"w": jnp.ones((2, 3))}, {"rules": [("w", "embeddings")]}, r"unknown role 'embeddings'"),
    ({"emb": jnp.ones(3)}, {"rules": [("emb", "embedding")]},
     r"emb: your rules make this leaf 'embedding'.*1 matrix dims"),
])
def test_errors_name_the_path_and_the_fix(params, kw, match):
  with pytest.raises(ValueError, match=match):
    symoptax.label_roles(params, **kw)


def test_realistic_names_outside_the_examples():
  m = lambda *s: jnp.ones(s)
  params = {
      # GPT-2 / BERT / T5 tables that are not vocabulary matrices.
      "wpe": {"embedding": m(32, 8)}, "token_type_embeddings": {"embedding": m(2, 8)},
      "SelfAttention": {"relative_attention_bias": {"embedding": m(16, 4)}},
      # A dense gated MLP named gate/up/down (no experts next to it) ...
      "dense_block": {"mlp": {"gate": {"kernel": m(8, 16)}, "up": {"kernel": m(8, 16)},
                              "down": {"kernel": m(16, 8)}}},
      # ... and a Mixtral-style MoE block with unstacked experts.
      "block_sparse_moe": {"gate": {"kernel": m(8, 4)},
                           "experts": {"0": {"w1": {"kernel": m(8, 16)},
                                             "w2": {"kernel": m(16, 8)}}}},
      # A dict key named "value" is an attention value projection, not NNX's .value.
      "self_attn": {"query": m(8, 8), "key": m(8, 8), "value": m(8, 8)},
      "unused": None,
  }
  t = table(params, head_dim=4)
  assert t["wpe/embedding"][0] == "position"
  assert t["token_type_embeddings/embedding"][0] == "position"
  assert t["SelfAttention/relative_attention_bias/embedding"][0] == "vector"
  assert t["dense_block/mlp/gate/kernel"] == ("mlp_in", A(1, 0))
  assert t["dense_block/mlp/down/kernel"] == ("mlp_out", A(0, 1, fan_out="cols"))
  assert t["block_sparse_moe/gate/kernel"] == ("router", A(1, 0))
  assert t["block_sparse_moe/experts/0/w1/kernel"] == ("expert_in", A(1, 0))
  assert t["block_sparse_moe/experts/0/w2/kernel"] == ("expert_out", A(0, 1, fan_out="cols"))
  assert t["self_attn/value"] == ("attn_v", A(2, 0, split=((1, 4),)))
  assert symoptax.label_roles(params)["unused"] is None


def test_maxtext_dense_and_moe_layer_stacks_and_unscanned_lists():
  params = {"decoder": {"dense_layers": {"mlp": {"wi_0": {"kernel": jnp.ones((8, 3, 16))}}},
                        "moe_layers": {"MoeBlock_0": {"gate": {"kernel": jnp.ones((8, 3, 4))},
                                                      "wi_0": jnp.ones((4, 3, 8, 16))}}}}
  t = table(params, scan_axis=1)
  assert t["decoder/dense_layers/mlp/wi_0/kernel"] == ("mlp_in", A(2, 0, layers=(1,)))
  assert t["decoder/moe_layers/MoeBlock_0/gate/kernel"] == ("router", A(2, 0, layers=(1,)))
  assert t["decoder/moe_layers/MoeBlock_0/wi_0"] == ("expert_in", A(3, 2, layers=(1,)))
  # An unscanned list of layers keeps its shapes even when scan_axis is given.
  listed = {"layers": {"0": {"mlp": {"up_proj": {"kernel": jnp.ones((8, 16))}}}}}
  assert table(listed, scan_axis=0)["layers/0/mlp/up_proj/kernel"] == ("mlp_in", A(1, 0))


def test_rules_that_carry_axes_name_any_layout():
  """DeepMind gemma's einsum kernels -- q [H, d, hd], k=v stacked [2, Hkv, d, hd], o [H, hd,
  d], gate/up stacked [2, ff, d] -- need their axes named: a rule (regex, role, MatrixAxes)
  (or a callable shape -> MatrixAxes) does, and every head then steps as its own matrix."""
  A = symoptax.MatrixAxes
  d, H, hd, ff = 16, 4, 8, 32
  key = iter(jax.random.split(jax.random.key(0), 16))
  normal = lambda *shape: jax.random.normal(next(key), shape)
  params = {"embedder": {"input_embedding": normal(64, d)},
            "layer_0": {"attn": {"q_einsum": {"w": normal(H, d, hd)},
                                 "kv_einsum": {"w": normal(2, 2, d, hd)},
                                 "attn_vec_einsum": {"w": normal(H, hd, d)}},
                        "mlp": {"gating_einsum": normal(2, ff, d), "linear": normal(ff, d)},
                        "pre_attention_norm": {"scale": normal(d)}}}
  rules = [(r"q_einsum/w$", "attn_q", A(rows=2, cols=1)),
           (r"kv_einsum/w$", "attn_k", lambda shape: A(rows=len(shape) - 1, cols=len(shape) - 2)),
           (r"attn_vec_einsum/w$", "attn_o", A(rows=2, cols=1)),
           (r"gating_einsum$", "mlp_in", A(rows=1, cols=2)),
           (r"mlp/linear$", "mlp_out", A(rows=0, cols=1, fan_out="cols"))]
  axes = symoptax.matrix_axes(params, rules=rules)
  assert axes["layer_0"]["attn"]["kv_einsum"]["w"] == A(rows=3, cols=2)
  assert axes["layer_0"]["attn"]["q_einsum"]["w"] == A(rows=2, cols=1)
  text = str(symoptax.describe(params, rules=rules))
  assert "4 x [8, 16]" in text and "2 x [32, 16]" in text
  exact = {r: {"options": {"method": "svd"}} for r in ("attn_q", "attn_k")}
  tx = symoptax.symmetry_stack(0.04, preset="muon", params=params, rules=rules, overrides=exact)
  grads = jax.tree_util.tree_map(lambda x: normal(*x.shape), params)
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  # Muon's update of each head is a scaled semi-orthogonal [d, hd] slice (columns hd <= d).
  for m in list(u["layer_0"]["attn"]["q_einsum"]["w"]) + list(
      u["layer_0"]["attn"]["kv_einsum"]["w"].reshape(4, d, hd)):
    gram = m.T @ m
    np.testing.assert_allclose(gram / gram[0, 0], np.eye(hd), atol=1e-4)
  with pytest.raises(ValueError, match=r"kv_einsum/w"):
    symoptax.matrix_axes(params, rules=[(r"kv_einsum/w$", "attn_k", A(rows=4, cols=2))] + rules)
  with pytest.raises(ValueError, match=r"\(regex, role, axes\)"):
    symoptax.label_roles(params, rules=[(r"x", "matrix", A(0, 1), "extra")])
  with pytest.raises(ValueError, match=r"third item must be a MatrixAxes"):
    symoptax.label_roles(params, rules=[(r"norm", "vector", A(0, 1))])
