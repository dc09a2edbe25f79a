"""Parameter trees of real model code (tests/fixtures/trees, captured by
tools/capture_trees.py from the libraries themselves): every leaf's role and axes, and one
"paper" step on a small tree of the same layout."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
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


def paper_step_on(small_leaves, fx, scan_axis=None):
  """One jitted "paper" step on a tree of ``small_leaves`` (a shrunk copy of the fixture's):
  the same roles as the real tree, and every update finite and nonzero."""
  key = iter(jax.random.split(jax.random.key(0), 2 * len(small_leaves)))
  params = tree_of(small_leaves, lambda p, s, dt: jax.random.normal(next(key), s, jnp.float32))
  grads = jax.tree_util.tree_map(lambda x: jax.random.normal(next(key), x.shape), params)
  real = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  assert (symoptax.label_roles(params, scan_axis=scan_axis)
          == symoptax.label_roles(real, scan_axis=scan_axis))
  tx = symoptax.symmetry_stack(0.02, preset="paper", params=params, scan_axis=scan_axis,
                               head_dim=HEAD)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for path, u in flat(updates).items():
    assert bool(jnp.all(jnp.isfinite(u))) and float(jnp.abs(u).max()) > 0, path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_one_paper_step_on_a_small_tree_of_the_same_layout(name):
  fx = fixture(name)
  small = small_dims(fx)
  paper_step_on([(p, [small.get(n, n) for n in shape], dt) for p, shape, dt in fx["leaves"]],
                fx)


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


# MaxText 0.2.5's trees (tools/capture_maxtext_trees.py, param_scan_axis 1): (regex over the
# path) -> (role, axes in the leaf's core, its layer axes removed) under attention="whole";
# the first pattern found wins, every other leaf is a vector. Layer axes: 1 in decoder/layers,
# dense_layers, moe_layers; 1 and 2 in Qwen3-Next's local_layers (scanned inside the block
# scan); none in gemma3's unscanned layers_remainder.
MAXTEXT = [(r"token_embedder/embedding$", "embedding", A(0, 1, fan_out="cols")),
           (r"logits_dense/kernel$", "lm_head", A(1, 0)),
           (r"attention/(query|wq_b)/kernel$", "attn_q", A((1, 2), 0)),
           (r"attention/key/kernel$", "attn_k", A((1, 2), 0)),
           (r"attention/value/kernel$", "attn_v", A((1, 2), 0)),
           (r"attention/wkv_b/kernel$", "attn_qkv", A((1, 2), 0)),   # MLA: k and v per head
           (r"global_layer/attention/attention/out/kernel$", "attn_o", A(1, 0)),  # [H hd, d]
           (r"attention/out_proj/kernel$", "attn_o", A(1, 0)),      # gated delta net
           (r"attention/out/kernel$", "attn_o", A(2, (0, 1))),
           (r"attention/(wq_a|wkv_a|in_proj_ba|in_proj_qkvz)/kernel$", "matrix", A(1, 0)),
           (r"shared_expert_gate/kernel$", "matrix", A(1, 0)),
           (r"(mlp|shared_experts?)/wi_[01]/kernel$", "mlp_in", A(1, 0)),
           (r"(mlp|shared_experts?)/wo/kernel$", "mlp_out", A(0, 1, fan_out="cols")),
           (r"/gate/kernel$", "router", A(1, 0)),
           (r"/wi_[01]$", "expert_in", A(2, 1)),
           (r"/wo$", "expert_out", A(1, 2, fan_out="cols"))]
MAXTEXT_MODELS = ["llama3-8b", "qwen3-8b", "gemma3-4b", "mixtral-8x7b", "qwen3-30b-a3b",
                  "llama4-17b-16e", "llama4-17b-128e", "deepseek3-671b", "gpt-oss-20b",
                  "qwen3-next-80b-a3b"]


def layer_axes(path):
  """MaxText's layer axes for a leaf: one per scanned stack it sits in."""
  depth = sum(k in ("layers", "dense_layers", "moe_layers", "local_layers")
              for k in path.split("/"))
  return tuple(range(1, 1 + depth))


def in_leaf(core_axes, layers):
  """Core axes (layer axes removed) as axes of the whole leaf."""
  if core_axes is None:
    return None
  def lift(a):
    if isinstance(a, tuple):
      return tuple(lift(x) for x in a)
    for s in layers:  # sorted
      a += a >= s
    return a
  return A(lift(core_axes.rows), lift(core_axes.cols), fan_out=core_axes.fan_out,
           layers=layers)


@pytest.mark.parametrize("model", MAXTEXT_MODELS)
def test_maxtext_trees_get_their_roles_and_axes(model):
  fx = fixture(f"maxtext_{model}")
  assert fx["config"]["param_scan_axis"] == 1
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  roles = flat(symoptax.label_roles(tree, scan_axis=1))
  axes = flat(symoptax.matrix_axes(tree, scan_axis=1, attention="whole"))
  for path, shape, _ in fx["leaves"]:
    role, core = next(((r, a) for pattern, r, a in MAXTEXT if re.search(pattern, path, re.I)),
                      ("vector", None))
    assert (roles[path], axes[path]) == (role, in_leaf(core, layer_axes(path))), (path, shape)


def test_nested_scans_take_an_int_a_tuple_or_a_mapping():
  """Qwen3-Next's local_layers (scanned inside the scanned block): scan_axis=1 places the two
  layer axes as nested nn.scan does (1, 2); (1, 2) and a per-subtree mapping say the same;
  a tuple too short for the nesting, or axes that miss the leaf, raise naming it."""
  fx = fixture("maxtext_qwen3-next-80b-a3b")
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  want = flat(symoptax.matrix_axes(tree, scan_axis=1, attention="whole"))
  for spec in [(1, 2), {"local_layers": (1, 2), "decoder/layers": 1}]:
    assert flat(symoptax.matrix_axes(tree, scan_axis=spec, attention="whole")) == want
  kernel = "decoder/layers/local_layers/attention/out_proj/kernel"
  assert want[kernel] == A(3, 0, layers=(1, 2))
  # Outer scan at 0, inner at 2: [L_outer, 4096, L_inner, 2048].
  moved = {"decoder": {"layers": {"local_layers": {"attention": {"out_proj": {
      "kernel": jax.ShapeDtypeStruct((1, 4096, 3, 2048), jnp.float32)}}}}}}
  assert flat(symoptax.matrix_axes(moved, scan_axis=(0, 2), attention="whole"))[kernel] == (
      A(3, 1, layers=(0, 2)))
  with pytest.raises(ValueError,
                     match=r"local_layers/\S+: .*inside 2 scanned layer stacks .*names 1"):
    symoptax.label_roles(tree, scan_axis=(1,))
  with pytest.raises(ValueError, match=r"local_layers/\S+: scan_axis=\(1, 9\) is out of range"):
    symoptax.label_roles(tree, scan_axis=(1, 9))
  with pytest.raises(ValueError, match="scan_axis must be None, an int, a tuple"):
    symoptax.label_roles(tree, scan_axis=1.0)


# DeepMind gemma 4.0.1's trees (tools/capture_gemma_trees.py; unscanned layer_N): every leaf
# under both attention readings: (role, axes with "heads", axes with "whole").
GEMMA = [(r"embedder/input_embedding$", "embedding", A(0, 1, fan_out="cols"), None),
         (r"attn/(q|k)_einsum/w$", None, A(2, 1), A((0, 2), 1)),           # [H, d, hd]
         (r"attn/kv_einsum/w$", "attn_qkv", A(3, 2), A((1, 3), 2)),        # [2, Hkv, d, hd]
         (r"attn/attn_vec_einsum/w$", "attn_o", A(2, 1), A(2, (0, 1))),    # [H, hd, d]
         (r"layer_\d+/mlp2?/gating_einsum$", "mlp_in", A(1, 2), None),     # [2, ff, d]
         (r"layer_\d+/mlp2?/linear$", "mlp_out", A(0, 1, fan_out="cols"), None),
         (r"mlp/gating_einsum/w$", "expert_in", A(2, 3), None),           # [E, 2, ff, d]
         (r"mlp/linear/w$", "expert_out", A(1, 2, fan_out="cols"), None),  # [E, ff, d]
         (r"mlp/router_logits/w$", "router", A(1, 0), None)]


@pytest.mark.parametrize("model", ["gemma3_1b", "gemma4_26b_a4b"])
def test_gemma_einsum_trees_get_their_roles_and_axes(model):
  fx = fixture(f"gemma_{model}")
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  roles = flat(symoptax.label_roles(tree))
  heads = flat(symoptax.matrix_axes(tree, attention="heads"))
  whole = flat(symoptax.matrix_axes(tree, attention="whole"))
  for path, shape, _ in fx["leaves"]:
    role, h, w = next(((r, h, w) for pattern, r, h, w in GEMMA if re.search(pattern, path)),
                      ("vector", None, None))
    role = role or ("attn_q" if "/q_einsum/" in path else "attn_k")
    assert (roles[path], heads[path], whole[path]) == (role, h, w or h), (path, shape)


def small_version(fx):
  """The fixture's leaves with every dimension above 4 mapped to a small one (equal sizes
  stay equal; head sizes become HEAD and the rest multiples of it, so heads still divide)."""
  c = fx["config"]
  heads = {c[k] for k in ("head_dim", "global_key_size") if k in c}
  dims = sorted({n for _, shape, _ in fx["leaves"] for n in shape if n > 4} - heads)
  small = {n: HEAD * (i + 2) for i, n in enumerate(dims)} | {n: HEAD for n in heads}
  return [(p, [small.get(n, n) for n in shape], dt) for p, shape, dt in fx["leaves"]]


@pytest.mark.parametrize("name", [f"maxtext_{m}" for m in MAXTEXT_MODELS]
                         + ["gemma_gemma3_1b", "gemma_gemma4_26b_a4b"])
def test_one_paper_step_on_a_small_maxtext_or_gemma_tree(name):
  fx = fixture(name)
  paper_step_on(small_version(fx), fx, scan_axis=1 if name.startswith("maxtext") else None)


# EasyDeL 0.3.0's seven families (tools/capture_easydel_trees.py): HF names, unscanned
# model/layers/N, Dense kernels [in, out], experts stacked [E, in, out]; (regex) -> (role,
# axes under attention="whole"), the first found wins, every other leaf a vector (norms
# named kernel, biases, gpt-oss's sinks, DeepSeek's e_score_correction_bias).
EASYDEL = [(r"embed_tokens/embedding$", "embedding", LOOKUP),
           (r"^lm_head/kernel$", "lm_head", DENSE_IN),  # gemma3's too: EasyDeL keeps one
           (r"self_attn/(q_proj|q_b_proj)/kernel$", "attn_q", DENSE_IN),
           (r"self_attn/k_proj/kernel$", "attn_k", DENSE_IN),
           (r"self_attn/v_proj/kernel$", "attn_v", DENSE_IN),
           (r"self_attn/kv_b_proj/kernel$", "attn_qkv", DENSE_IN),  # MLA: k_nope and v per head
           (r"self_attn/o_proj/kernel$", "attn_o", DENSE_IN),
           (r"self_attn/(q_a_proj|kv_a_proj_with_mqa)/kernel$", "matrix", DENSE_IN),
           (r"/experts/(gate_proj|up_proj|w1|w3)/kernel$", "expert_in", A(2, 1)),
           (r"/experts/(down_proj|w2)/kernel$", "expert_out", A(1, 2, fan_out="cols")),
           (r"(mlp|block_sparse_moe)/(gate|router)/kernel$", "router", DENSE_IN),
           (r"(mlp|shared_experts)/(gate_proj|up_proj)/kernel$", "mlp_in", DENSE_IN),
           (r"(mlp|shared_experts)/down_proj/kernel$", "mlp_out", DENSE_OUT)]
EASYDEL_MODELS = ["llama", "qwen3", "qwen3_moe", "mixtral", "gpt_oss", "deepseek_v3", "gemma3"]


@pytest.mark.parametrize("model", EASYDEL_MODELS)
def test_easydel_trees_get_their_roles_and_axes(model):
  fx = fixture(f"easydel_{model}")
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  roles = flat(symoptax.label_roles(tree))
  axes = flat(symoptax.matrix_axes(tree, attention="whole"))
  for path, shape, _ in fx["leaves"]:
    want = next(((r, a) for pattern, r, a in EASYDEL if re.search(pattern, path)),
                ("vector", None))
    assert (roles[path], axes[path]) == want, (path, shape)
  seen = {pattern for pattern, *_ in EASYDEL for p in roles if re.search(pattern, p)}
  assert {EASYDEL[0][0], EASYDEL[1][0]} <= seen


def test_mla_heads_take_a_head_size_per_projection():
  """DeepSeek-V3's MLA kernels have three head sizes (q 192, k_nope+v 256, o's v 128): a
  {regex: size} head_dim splits each by its own; the latent q_a_layernorm is not a q_norm."""
  fx = fixture("easydel_deepseek_v3")
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  sizes = {"q_b_proj": 192, "kv_b_proj": 256, "o_proj": 128}
  heads = flat(symoptax.matrix_axes(tree, head_dim=sizes))
  at = "model/layers/0/self_attn/"
  assert heads[at + "q_b_proj/kernel"] == A(2, 0, split=((1, 192),))
  assert heads[at + "kv_b_proj/kernel"] == A(2, 0, split=((1, 256),))
  assert heads[at + "o_proj/kernel"] == A(2, 1, split=((0, 128),))
  with pytest.raises(ValueError, match=r"(q_b|kv_b|o)_proj/kernel: attention='heads' .*head_dim="):
    symoptax.matrix_axes(tree)  # MaxText's MLA q_norm is a latent's too: never a head size
  mt = fixture("maxtext_deepseek3-671b")
  mt_tree = tree_of(mt["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, dt))
  assert symoptax.roles.head_dims(mt_tree, scan_axis=1) == {}
  with pytest.raises(ValueError, match=r"head_dim must be a positive int or a"):
    symoptax.matrix_axes(tree, head_dim={"q_b_proj": 0})


@pytest.mark.parametrize("model", EASYDEL_MODELS)
def test_one_paper_step_on_a_small_easydel_tree(model):
  fx = fixture(f"easydel_{model}")
  paper_step_on(small_version(fx), fx)


# Compositional Muon on the attention roles of every captured tree: the trees whose attention
# has separate q/k/v/o leaves take it (HF and EasyDeL 2-D kernels read head by head with
# head_dim=, MaxText's scanned 3-D ones as they are); those whose keys and values come from a
# fused kernel (GPT-2's c_attn, gemma's kv_einsum, MLA's wkv_b) raise, naming the leaf.
CM_FUSED = {"hf_flax_gpt2", "gemma_gemma3_1b", "gemma_gemma4_26b_a4b", "maxtext_deepseek3-671b",
            "easydel_deepseek_v3"}
CM_ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))


def cm_stack(params, name, fx):
  hd = None if name.startswith("maxtext") else fx["config"].get("head_dim")
  if name == "easydel_deepseek_v3":  # MLA: q heads of 192 (nope + rope), k/v pairs of 256
    hd = {"q_b_proj": 192, "kv_b_proj": 256, "o_proj": 128}
  overrides = {r: "compositional_muon" for r in symoptax.stacks.ATTENTION_ROLES}
  return symoptax.symmetry_stack(0.02, preset="muon", params=params, overrides=overrides,
                                 scan_axis=1 if name.startswith("maxtext") else None,
                                 head_dim=hd)


@pytest.mark.parametrize("name", [n for n in CM_ALL if n != "maxtext_qwen3-next-80b-a3b"])
def test_compositional_muon_pairs_the_attention_of_real_trees(name):
  fx = fixture(name)
  tree = tree_of(fx["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, jnp.float32))
  if name in CM_FUSED:
    with pytest.raises(ValueError, match=r"compositional_muon: \S+ \(attn_\w\) has no attn_\w "
                                         r"partner in its attention block .*attn_qkv"):
      tx = cm_stack(tree, name, fx)
      jax.eval_shape(tx.update, tree, jax.eval_shape(tx.init, tree), tree)
    return
  tx = cm_stack(tree, name, fx)
  jax.eval_shape(tx.update, tree, jax.eval_shape(tx.init, tree), tree)


def test_compositional_muon_on_qwen3_next_needs_its_linear_attention_head_size():
  """Qwen3-Next's gated delta net blocks (local_layers/attention) have no q_norm to read a
  head size from: the stack says so for this head-wise rule, whatever its attention option."""
  name = "maxtext_qwen3-next-80b-a3b"
  tree = tree_of(fixture(name)["leaves"], lambda p, s, dt: jax.ShapeDtypeStruct(s, jnp.float32))
  with pytest.raises(ValueError, match=r"compositional_muon reads attention head by head "
                                       r"whatever the stack's attention option, so: \S+out_proj"):
    cm_stack(tree, name, fixture(name))


@pytest.mark.parametrize("name", ["hf_flax_llama", "easydel_qwen3", "easydel_gpt_oss"])
def test_one_compositional_muon_step_on_a_small_tree_of_the_same_layout(name):
  """(MaxText's scanned 3-D layout: tests/test_variants_compositional.py checks it against
  the 2-D one, number for number.)"""
  fx = fixture(name)
  leaves = [(p, [small_dims(fx).get(n, n) for n in shape], dt) for p, shape, dt in fx["leaves"]]
  key = iter(jax.random.split(jax.random.key(0), 2 * len(leaves)))
  params = tree_of(leaves, lambda p, s, dt: jax.random.normal(next(key), s, jnp.float32))
  grads = jax.tree_util.tree_map(lambda x: jax.random.normal(next(key), x.shape), params)
  tx = cm_stack(params, name, {**fx, "config": {**fx["config"], "head_dim": HEAD}})
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for path, u in flat(updates).items():
    assert bool(jnp.all(jnp.isfinite(u))), path
