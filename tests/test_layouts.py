"""One model, one optimizer: the same weights stored the HF/NNX way (2-D kernels, a list of
layers) and the MaxText way (3-D attention kernels, scanned layers) get the same updates;
head-wise attention on a 2-D kernel is head-wise attention on its 3-D form; Muon's shape
factor follows the output side, so symoptax's Muon equals ``optax.contrib.muon`` on every
hidden leaf, down projections included; fused gate/up leaves and tied embeddings."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import orthogonal, permutation
from symoptax import MatrixAxes as A

L, D, H, HKV, HD, FF, V = 2, 32, 4, 2, 8, 48, 64


def _rand(key, shape, scale=1.0):
  return scale * jax.random.normal(key, shape, jnp.float32)


def hf_tree(seed, qk_norm=True):
  """A 2-layer Qwen3-style model in HF/NNX layout: Dense kernels [in, out]."""
  keys = iter(jax.random.split(jax.random.key(seed), 64))
  layer = lambda: {
      "self_attn": {"q_proj": {"kernel": _rand(next(keys), (D, H * HD))},
                    "k_proj": {"kernel": _rand(next(keys), (D, HKV * HD))},
                    "v_proj": {"kernel": _rand(next(keys), (D, HKV * HD))},
                    "o_proj": {"kernel": _rand(next(keys), (H * HD, D))},
                    **({"q_norm": {"scale": _rand(next(keys), (HD,))},
                        "k_norm": {"scale": _rand(next(keys), (HD,))}} if qk_norm else {})},
      "mlp": {"gate_proj": {"kernel": _rand(next(keys), (D, FF))},
              "up_proj": {"kernel": _rand(next(keys), (D, FF))},
              "down_proj": {"kernel": _rand(next(keys), (FF, D))}},
      "input_layernorm": {"scale": _rand(next(keys), (D,))}}
  return {"embed_tokens": {"embedding": _rand(next(keys), (V, D))},
          "layers": {str(i): layer() for i in range(L)},
          "norm": {"scale": _rand(next(keys), (D,))},
          "lm_head": {"kernel": _rand(next(keys), (D, V))}}


def to_maxtext(hf):
  """The same weights in MaxText's layout: layers scanned on axis 1, attention 3-D."""
  layers = [hf["layers"][str(i)] for i in range(L)]
  stack = lambda f: jnp.stack([f(l) for l in layers], axis=1)
  heads = lambda k, n: lambda l: l["self_attn"][k]["kernel"].reshape(D, n, HD)
  return {
      "token_embedder": {"embedding": hf["embed_tokens"]["embedding"]},
      "decoder": {
          "layers": {
              "self_attention": {
                  "query": {"kernel": stack(heads("q_proj", H))},
                  "key": {"kernel": stack(heads("k_proj", HKV))},
                  "value": {"kernel": stack(heads("v_proj", HKV))},
                  "out": {"kernel": stack(lambda l: l["self_attn"]["o_proj"]["kernel"]
                                          .reshape(H, HD, D))},
                  "query_norm": {"scale": stack(lambda l: l["self_attn"]["q_norm"]["scale"])},
                  "key_norm": {"scale": stack(lambda l: l["self_attn"]["k_norm"]["scale"])}},
              "mlp": {n: {"kernel": stack(lambda l, m=m: l["mlp"][m]["kernel"])}
                      for n, m in (("wi_0", "gate_proj"), ("wi_1", "up_proj"),
                                   ("wo", "down_proj"))},
              "pre_self_attention_layer_norm": {
                  "scale": stack(lambda l: l["input_layernorm"]["scale"])}},
          "decoder_norm": {"scale": hf["norm"]["scale"]},
          "logits_dense": {"kernel": hf["lm_head"]["kernel"]}}}


def from_maxtext(mt):
  """Inverse of :func:`to_maxtext`."""
  lay, top = mt["decoder"]["layers"], mt["decoder"]
  att, mlp = lay["self_attention"], lay["mlp"]
  at = lambda x, i: jnp.take(x, i, axis=1)
  layer = lambda i: {
      "self_attn": {"q_proj": {"kernel": at(att["query"]["kernel"], i).reshape(D, H * HD)},
                    "k_proj": {"kernel": at(att["key"]["kernel"], i).reshape(D, HKV * HD)},
                    "v_proj": {"kernel": at(att["value"]["kernel"], i).reshape(D, HKV * HD)},
                    "o_proj": {"kernel": at(att["out"]["kernel"], i).reshape(H * HD, D)},
                    "q_norm": {"scale": at(att["query_norm"]["scale"], i)},
                    "k_norm": {"scale": at(att["key_norm"]["scale"], i)}},
      "mlp": {m: {"kernel": at(mlp[n]["kernel"], i)}
              for n, m in (("wi_0", "gate_proj"), ("wi_1", "up_proj"), ("wo", "down_proj"))},
      "input_layernorm": {"scale": at(lay["pre_self_attention_layer_norm"]["scale"], i)}}
  return {"embed_tokens": {"embedding": mt["token_embedder"]["embedding"]},
          "layers": {str(i): layer(i) for i in range(L)},
          "norm": {"scale": top["decoder_norm"]["scale"]},
          "lm_head": {"kernel": top["logits_dense"]["kernel"]}}


def run(tx, params, grads):
  state = tx.init(params)
  for g in grads:
    u, state = tx.update(g, state, params)
    params = optax.apply_updates(params, u)
  return params


def assert_trees_close(got, want, rtol=1e-4, atol=1e-6):
  flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  for path, a in jax.tree_util.tree_flatten_with_path(got)[0]:
    np.testing.assert_allclose(a, flat_want[path], rtol=rtol, atol=atol,
                               err_msg=jax.tree_util.keystr(path))


def test_the_converters_are_inverse():
  hf = hf_tree(0)
  assert_trees_close(from_maxtext(to_maxtext(hf)), hf, rtol=0, atol=0)


@pytest.mark.parametrize("preset,attention", [("paper", None), ("muon", None), ("hybrid", None),
                                              ("rownorm", "heads"), ("paper", "whole")])
def test_maxtext_and_hf_layouts_of_one_model_get_the_same_updates(preset, attention):
  hf = hf_tree(0)
  grads = [hf_tree(s) for s in (1, 2, 3)]
  mt, mt_grads = to_maxtext(hf), [to_maxtext(g) for g in grads]
  kw = dict(preset=preset, attention=attention)
  got = jax.jit(lambda p, g: run(symoptax.symmetry_stack(0.02, scan_axis=1, **kw), p, g))(
      mt, mt_grads)
  want = jax.jit(lambda p, g: run(symoptax.symmetry_stack(0.02, **kw), p, g))(hf, grads)
  assert_trees_close(from_maxtext(got), want)


def test_the_two_attention_views_differ():
  """Control: head-wise and whole-matrix Muon are different optimizers (so the layout test
  above compares something)."""
  hf, g = hf_tree(0), hf_tree(1)
  heads = run(symoptax.symmetry_stack(0.02, attention="heads"), hf, [g])
  whole = run(symoptax.symmetry_stack(0.02, attention="whole"), hf, [g])
  q = lambda t: t["layers"]["0"]["self_attn"]["q_proj"]["kernel"]
  assert float(jnp.linalg.norm(q(heads) - q(whole))) > 1e-2


def _svd_polar(x):
  u, _, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  return u @ vt


def test_headwise_muon_on_a_2d_kernel_is_per_head_polar_with_per_head_shape_factor():
  """q [d, H hd]: each head's [hd, d] matrix gets its own polar factor and the factor
  sqrt(max(1, hd/d)) = 1; o [H hd, d]: each head's [d, hd] gets sqrt(d/hd) = 2, as the
  reference's MuonHeads (fan_out / fan_in of each head's matrix)."""
  hf = hf_tree(0)
  g = hf_tree(1)
  axes = symoptax.matrix_axes(hf)  # head size read from q_norm/k_norm
  tx = symoptax.muon(1.0, method="svd", axes=axes)
  u, _ = tx.update(g, tx.init(hf), hf)
  gq = np.asarray(g["layers"]["0"]["self_attn"]["q_proj"]["kernel"])
  go = np.asarray(g["layers"]["0"]["self_attn"]["o_proj"]["kernel"])
  uq = -np.asarray(u["layers"]["0"]["self_attn"]["q_proj"]["kernel"])
  uo = -np.asarray(u["layers"]["0"]["self_attn"]["o_proj"]["kernel"])
  # Nesterov trace at step 1: (1 + beta) g, same direction.
  for h in range(H):
    cols = slice(h * HD, (h + 1) * HD)
    np.testing.assert_allclose(uq[:, cols], _svd_polar(gq[:, cols]), atol=2e-5)
    np.testing.assert_allclose(uo[cols], 2.0 * _svd_polar(go[cols]), atol=2e-5)


def test_headwise_2d_and_3d_kernels_give_the_same_update():
  g2 = jax.random.normal(jax.random.key(0), (D, H * HD))
  w2 = jax.random.normal(jax.random.key(1), (D, H * HD))
  three = lambda x: x.reshape(D, H, HD)
  tx2 = symoptax.muon(0.1, axes={"q": A(rows=2, cols=0, split=((1, HD),))})
  tx3 = symoptax.muon(0.1, axes={"q": A(rows=2, cols=0)})
  u2, _ = tx2.update({"q": g2}, tx2.init({"q": w2}), {"q": w2})
  u3, _ = tx3.update({"q": three(g2)}, tx3.init({"q": three(w2)}), {"q": three(w2)})
  np.testing.assert_allclose(three(u2["q"]), u3["q"], rtol=1e-6, atol=1e-7)


def test_headwise_muon_equivariance_per_head_and_across_heads():
  """Per head, bi-orthogonal: W -> R W blockdiag(O_h) (R on d, O_h on each head's hd);
  across heads, a permutation of the heads. A rotation that mixes heads is not a symmetry
  of the head-wise rule (the control)."""
  ax = {"q": A(rows=2, cols=0, split=((1, HD),))}
  tx = symoptax.muon(1.0, method="svd", axes=ax)
  g = jax.random.normal(jax.random.key(0), (D, H * HD))
  f = lambda x: tx.update({"q": x}, tx.init({"q": x}))[0]["q"]
  r = orthogonal(D, 1)
  blocks = jax.scipy.linalg.block_diag(*[orthogonal(HD, 10 + h) for h in range(H)])
  heads = jnp.kron(permutation(H, 2), jnp.eye(HD))
  for left, right in ((r, blocks), (jnp.eye(D), heads), (r, blocks @ heads)):
    np.testing.assert_allclose(f(left @ g @ right), left @ f(g) @ right, atol=1e-5)
  mixing = orthogonal(H * HD, 3)
  assert float(jnp.max(jnp.abs(f(g @ mixing) - f(g) @ mixing))) > 1e-2


def test_symoptax_muon_equals_optax_contrib_muon_on_every_hidden_leaf():
  """Same oracle (Jordan's quintic), same momentum (momentum="optax"), dimension numbers
  from the same roles (MatrixAxes.to_muon_dimension_numbers): equal to round-off after 3
  steps on every hidden leaf, SwiGLU down projections included (their shape factor is
  sqrt(max(1, d/ff)) = 1, not sqrt(ff/d))."""
  hf = hf_tree(0)
  grads = [hf_tree(s) for s in (1, 2, 3)]
  roles = symoptax.label_roles(hf)
  axes = symoptax.matrix_axes(hf, attention="whole")
  hidden = jax.tree.map(lambda r: r in symoptax.stacks.HIDDEN_ROLES, roles)
  dims = jax.tree.map(lambda ax, h: ax.to_muon_dimension_numbers() if h else None, axes,
                      hidden, is_leaf=lambda x: x is None or isinstance(x, A))
  ours = symoptax.muon(0.02, method="muon_ns", momentum="optax", axes=axes)
  theirs = optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims, adam_learning_rate=0.0)
  got, want = jax.jit(lambda p, g: (run(ours, p, g), run(theirs, p, g)))(hf, grads)
  assert assert_steps_close(got, want, hf, hidden) == 7 * L


def assert_steps_close(got, want, start, mask, rtol=2e-4):
  """``got - start`` equals ``want - start`` on the leaves ``mask`` selects; their count."""
  flat = lambda t: dict(jax.tree_util.tree_flatten_with_path(t)[0])
  flat_want, flat_start, flat_mask = flat(want), flat(start), flat(mask)
  checked = 0
  for path, a in flat(got).items():
    if flat_mask[path]:
      np.testing.assert_allclose(a - flat_start[path], flat_want[path] - flat_start[path],
                                 rtol=rtol, atol=1e-6, err_msg=jax.tree_util.keystr(path))
      checked += 1
  return checked


def test_down_projection_gets_no_shape_factor_and_the_old_rows_convention_would():
  """The down projection [ff, d] = [48, 32]: factor 1 (fan_out d < fan_in ff); reading the
  permuted rows as the output (the convention before) would give sqrt(48/32)."""
  g = {"mlp": {"down_proj": {"kernel": jax.random.normal(jax.random.key(0), (FF, D))}}}
  axes = symoptax.matrix_axes(g)
  assert axes["mlp"]["down_proj"]["kernel"] == A(0, 1, fan_out="cols")
  for ax, factor in ((axes, 1.0), ({"mlp": {"down_proj": {"kernel": A(0, 1)}}}, 1.5 ** 0.5)):
    tx = symoptax.scale_by_shape("muon", axes=ax)
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u["mlp"]["down_proj"]["kernel"],
                               factor * g["mlp"]["down_proj"]["kernel"], rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Fused gate/up leaves: the neuron pair is the permuted object.

def _fused(layout_, gate, up):
  """[d, 2 ff] from gate, up [d, ff]: interleaved (g0 u0 g1 u1 ...) or concatenated."""
  if layout_ == "interleaved":
    return jnp.stack([gate, up], axis=-1).reshape(gate.shape[0], -1)
  return jnp.concatenate([gate, up], axis=-1)


@pytest.mark.parametrize("layout_", ["interleaved", "concatenated"])
def test_fused_gate_up_rows_pair_each_neurons_gate_and_up(layout_):
  gate, up = (jax.random.normal(jax.random.key(i), (D, FF)) for i in (0, 1))
  params = {"mlp": {"gate_up_proj": {"kernel": _fused(layout_, gate, up)}}}
  axes = symoptax.matrix_axes(params, gate_up=layout_)
  tx = symoptax.scale_by_row_norm(axes=axes)
  u, _ = tx.update(params, tx.init(params))
  norms = jnp.sqrt(jnp.sum(gate ** 2, 0) + jnp.sum(up ** 2, 0))  # one per neuron pair
  want = _fused(layout_, gate / norms, up / norms)
  np.testing.assert_allclose(u["mlp"]["gate_up_proj"]["kernel"], want, rtol=1e-5, atol=1e-6)
  # Equivariant under permuting the neuron pairs; unpaired rows (gate_up=None) differ.
  perm = np.random.default_rng(0).permutation(FF)
  pp = {"mlp": {"gate_up_proj": {"kernel": _fused(layout_, gate[:, perm], up[:, perm])}}}
  up_, _ = tx.update(pp, tx.init(pp))
  np.testing.assert_allclose(up_["mlp"]["gate_up_proj"]["kernel"],
                             _fused(layout_, (gate / norms)[:, perm], (up / norms)[:, perm]),
                             rtol=1e-5, atol=1e-6)
  plain = symoptax.scale_by_row_norm(axes=symoptax.matrix_axes(params))
  assert float(jnp.max(jnp.abs(plain.update(params, plain.init(params))[0]["mlp"][
      "gate_up_proj"]["kernel"] - want))) > 1e-2


def test_stack_with_fused_gate_up_pairs_rows_for_row_rules_and_splits_them_for_muon():
  """gpt-oss-style experts [E, d, 2 ff] (interleaved): under "rownorm" each expert's neuron
  pair is one row; under Muon (an override) gate and up are orthogonalised apart, as the
  reference's MuonHeads does."""
  e = 3
  gate, up = (jax.random.normal(jax.random.key(i), (e, D, FF)) for i in (0, 1))
  fused = jnp.stack([gate, up], -1).reshape(e, D, 2 * FF)
  params = {"mlp": {"router": {"kernel": jnp.ones((D, e))},
                    "experts": {"gate_up_proj": fused}}}
  grads = {"mlp": {"router": {"kernel": jnp.ones((D, e))},
                   "experts": {"gate_up_proj": fused}}}
  split = lambda x: (x.reshape(e, D, FF, 2)[..., 0], x.reshape(e, D, FF, 2)[..., 1])

  rn = symoptax.symmetry_stack(1.0, preset="rownorm", gate_up="interleaved", params=params)
  u, _ = rn.update(grads, rn.init(params), params)
  ug, uu = split(u["mlp"]["experts"]["gate_up_proj"])
  np.testing.assert_allclose(jnp.sum(ug ** 2, 1) + jnp.sum(uu ** 2, 1),
                             np.full((e, FF), 0.15 ** 2), rtol=1e-4)

  mu = symoptax.symmetry_stack(1.0, preset="rownorm", gate_up="interleaved", params=params,
                               overrides={"expert_in": "muon"})
  u, _ = mu.update(grads, mu.init(params), params)
  ug, uu = split(-u["mlp"]["experts"]["gate_up_proj"])
  factor = max(1.0, FF / D) ** 0.5  # each half [d, ff] -> ff outputs
  for got, g in ((ug, gate), (uu, up)):  # the stack's oracle, per expert and per half
    want = factor * symoptax.polar.polar(jnp.swapaxes(g, 1, 2), method="polar_express")
    np.testing.assert_allclose(got, jnp.swapaxes(want, 1, 2), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------
# A tied embedding (no LM-head leaf).

def test_tied_embedding_is_an_uncentred_embedding_by_default_and_a_head_one_keyword_away():
  tree = {"embed_tokens": {"embedding": jax.random.normal(jax.random.key(0), (V, D))},
          "layers": {"0": {"mlp": {"up_proj": {"kernel": jnp.ones((D, FF))}}}}}
  g = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape) + 3.0, tree)
  assert symoptax.label_roles(tree)["embed_tokens"]["embedding"] == "embedding"
  roles = symoptax.label_roles(tree, tied_embedding="lm_head")
  assert roles["embed_tokens"]["embedding"] == "lm_head"
  assert symoptax.matrix_axes(tree, roles=roles)["embed_tokens"]["embedding"] == A(0, 1)
  mean_row = lambda tx: float(jnp.max(jnp.abs(jnp.mean(
      tx.update(g, tx.init(tree), tree)[0]["embed_tokens"]["embedding"], axis=0))))
  assert mean_row(symoptax.symmetry_stack(0.02, params=tree)) > 1e-4
  assert mean_row(symoptax.symmetry_stack(0.02, params=tree, tied_embedding="lm_head")) < 1e-7
  # A tree with its own head keeps its embedding an embedding.
  untied = {**tree, "lm_head": {"kernel": jnp.ones((D, V))}}
  assert symoptax.label_roles(untied, tied_embedding="lm_head")["embed_tokens"][
      "embedding"] == "embedding"


# ------------------------------------------------------------------------------------------
# Head sizes and errors.

def test_head_size_is_read_from_qk_norms_or_given_and_unknown_raises():
  hf = hf_tree(0, qk_norm=False)
  with pytest.raises(ValueError, match=r"layers/0/self_attn/\w_proj/kernel: .*head_dim="):
    symoptax.symmetry_stack(0.02, preset="paper", params=hf)  # "paper": head-wise
  symoptax.symmetry_stack(0.02, preset="paper", params=hf, head_dim=HD)
  symoptax.symmetry_stack(0.02, preset="paper", params=hf, attention="whole")
  symoptax.symmetry_stack(0.02, params=hf)  # the default preset: whole attention matrices
  axes = symoptax.matrix_axes(hf_tree(0))
  assert axes["layers"]["1"]["self_attn"]["o_proj"]["kernel"] == A(2, 1, split=((0, HD),))
  with pytest.raises(ValueError, match=r"\w_proj/kernel: split \(1, 5\) needs axis 1"):
    symoptax.label_roles(hf, head_dim=5)
  with pytest.raises(ValueError, match="Unknown attention 'heads_'"):
    symoptax.matrix_axes(hf, attention="heads_")


def test_describe_shows_heads_or_whole_and_the_shape_factor():
  text = str(symoptax.describe(hf_tree(0), preset="paper"))
  line = lambda key: next(l for l in text.splitlines() if l.startswith(f"layers/0/{key}"))
  assert f"{H} heads x [{HD}, {D}]" in line("self_attn/q_proj")
  assert f"{H} heads x [{D}, {HD}]" in line("self_attn/o_proj")
  assert "  2.0  " in line("self_attn/o_proj")  # sqrt(d / hd)
  assert "  1.0  " in line("mlp/down_proj")
  whole = str(symoptax.describe(hf_tree(0), preset="muon"))
  assert f"whole [{H * HD}, {D}]" in whole


def test_muon_preset_with_optax_options_equals_optax_contrib_muon():
  """The "muon" preset itself, its Muon given optax's oracle and momentum through
  ``overrides[role]["options"]``, equals optax.contrib.muon on every hidden leaf."""
  hf = hf_tree(0, qk_norm=False)
  grads = [hf_tree(s, qk_norm=False) for s in (1, 2, 3)]
  hidden_roles = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")
  options = {"method": "muon_ns", "momentum": "optax"}
  stack = symoptax.symmetry_stack(
      0.02, preset="muon", params=hf, overrides={r: {"options": options} for r in hidden_roles})
  assert len(stack.init(hf).inner_states) == 2  # the hidden roles share one branch
  roles = symoptax.label_roles(hf)
  axes = symoptax.matrix_axes(hf, attention="whole")
  dims = jax.tree.map(lambda ax, r: ax.to_muon_dimension_numbers() if r in hidden_roles
                      else None, axes, roles, is_leaf=lambda x: x is None or isinstance(x, A))
  theirs = optax.contrib.muon(0.02, muon_weight_dimension_numbers=dims, adam_learning_rate=0.0)
  got, want = jax.jit(lambda p, g: (run(stack, p, g), run(theirs, p, g)))(hf, grads)
  hidden = jax.tree.map(lambda r: r in hidden_roles, roles)
  assert assert_steps_close(got, want, hf, hidden) == 7 * L
  with pytest.raises(ValueError, match=r"overrides\['mlp_in'\]\['options'\] sets \['axes'\]"):
    symoptax.symmetry_stack(0.02, overrides={"mlp_in": {"options": {"axes": None}}})
