"""Wrappers over any optimizer: Drop-Muon's random layer dropping (drop_layers) and LANTON-style
noise-adaptive layerwise rates (noise_adaptive). Formulas against numpy transcriptions, the
inner rule's symmetry kept (with a negative control), the optax harness, a toy problem."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import normal, orthogonal, permutation
from symoptax.variants.wrappers import drop_layers, noise_adaptive

A = symoptax.MatrixAxes
LR = 0.1


def muon(**kw):
  return symoptax.muon(LR, beta=0.9, method="svd", **kw)


def tree(shapes, seed, scale=1.0):
  return {k: scale * normal(s, seed + i) for i, (k, s) in enumerate(shapes.items())}


SHAPES = {"a": (8, 6), "b": (6, 8), "c": (5, 5), "v": (4,)}


# ------------------------------------------------------------------------------------------
# drop_layers


def draws(seed, step, n):
  """The uniforms drop_layers compares with keep_prob at ``step`` (one per group)."""
  key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
  return np.asarray(jax.random.uniform(key, (n,)))


def test_drop_layers_updates_the_drawn_groups_and_freezes_the_others():
  params = tree(SHAPES, 0)
  tx = drop_layers(muon(), 0.5, seed=3)
  step = jax.jit(tx.update)
  state = tx.init(params)
  # The reference: one Muon per leaf, stepped only when its group is kept (the vector "v"
  # is never dropped).
  ref = {k: muon() for k in SHAPES}
  ref_state = {k: ref[k].init({"w": params[k]}) for k in SHAPES}
  seen = set()
  for t in range(4):
    g = tree(SHAPES, 10 + 10 * t)
    kept = dict(zip("abc", draws(3, t, 3) < 0.5)) | {"v": True}  # groups in tree order
    u, new_state = step(g, state, params)
    for i, k in enumerate("abc"):
      if not kept[k]:  # exactly zero, and the group's state (momentum, count) unchanged
        assert not np.any(np.asarray(u[k])), (t, k)
        for before, after in zip(jax.tree.leaves(state.inner[i]),
                                 jax.tree.leaves(new_state.inner[i])):
          np.testing.assert_array_equal(before, after)
    for k in SHAPES:
      seen.add(bool(kept[k]))
      if kept[k]:
        r, ref_state[k] = ref[k].update({"w": g[k]}, ref_state[k], {"w": params[k]})
        np.testing.assert_allclose(u[k], r["w"], rtol=1e-5, atol=1e-6)
    state = new_state
  assert seen == {True, False}  # the seed drops some groups and keeps others
  assert int(state.count) == 4


def test_drop_layers_with_keep_prob_one_is_the_inner_transform():
  params = tree(SHAPES, 0)
  inner = muon(weight_decay=0.1)
  tx = drop_layers(inner, 1.0, rescale=True)
  s, s_ref = tx.init(params), inner.init(params)
  for t in range(2):
    g = tree(SHAPES, 20 + t)
    u, s = tx.update(g, s, params)
    r, s_ref = inner.update(g, s_ref, params)
    for k in SHAPES:  # per-group polar calls instead of one batched call: fp32 rounding only
      np.testing.assert_allclose(u[k], r[k], rtol=1e-6, atol=1e-7)


def test_drop_layers_updates_a_keep_prob_fraction_and_follows_a_schedule():
  params = {f"w{i}": jnp.ones((2, 2)) for i in range(8)}
  sched = lambda count: jnp.where(count < 5, 1.0, 0.3)
  tx = drop_layers(optax.sgd(1.0), sched, seed=7)
  step = jax.jit(tx.update)
  state, fractions = tx.init(params), []
  for _ in range(305):
    u, state = step(params, state)
    fractions.append(np.mean([bool(jnp.any(x != 0)) for x in jax.tree.leaves(u)]))
  assert min(fractions[:5]) == 1.0
  assert abs(np.mean(fractions[5:]) - 0.3) < 0.04  # 2400 draws: 4 standard deviations


def test_drop_layers_skips_the_dropped_groups_polar_step_with_lax_cond():
  params = tree(SHAPES, 0)
  tx = drop_layers(symoptax.muon(LR), 0.5)
  jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params), params)
  conds = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
  assert len(conds) == 3  # one per matrix group; the vector is always updated
  for e in conds:  # the kept branch holds the polar iteration (matmuls), the dropped none
    counts = [str(b).count("dot_general") for b in e.params["branches"]]
    assert min(counts) == 0 and max(counts) >= 5, counts


def test_drop_layers_trains_a_toy_problem():
  target = tree({"a": (8, 8), "b": (8, 8), "c": (8, 8)}, 1, scale=0.2)
  params = jax.tree.map(jnp.zeros_like, target)
  loss = lambda p: sum(jnp.sum((p[k] - target[k]) ** 2) for k in p)
  tx = drop_layers(symoptax.muon(0.03, method="svd"), 0.5, seed=0)
  state = tx.init(params)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return optax.apply_updates(p, u), s

  start = float(loss(params))
  for _ in range(120):
    params, state = step(params, state)
  assert float(loss(params)) < 0.05 * start


def test_drop_layers_in_the_optax_harness():
  small = {"a": (8, 6), "v": (4,)}
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), tree(small, 0))
  grads = [jax.tree.map(lambda x: x.astype(jnp.bfloat16), tree(small, 30 + t))
           for t in range(2)]
  # mu_dtype is the inner rule's: fp32 momentum for bf16 parameters.
  state = drop_layers(symoptax.muon(LR, mu_dtype=jnp.float32), 0.5).init(params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.inner[0][0]))
  tx = drop_layers(symoptax.muon(LR), 0.5, seed=1)
  shapes = jax.eval_shape(tx.init, params)
  state = tx.init(params)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), state)
  step = jax.jit(tx.update)
  for g in grads:
    u, new = step(g, state, params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    assert jax.tree.map(lambda a: a.dtype, new) == jax.tree.map(lambda a: a.dtype, state)
    state = new
  # keep_prob as a hyperparameter: set to 1, every group moves.
  inj = optax.inject_hyperparams(drop_layers, static_args=("seed",))(
      symoptax.muon(LR), keep_prob=0.5, seed=1)
  s = inj.init(params)
  s.hyperparams["keep_prob"] = jnp.asarray(1.0)
  u, _ = jax.jit(inj.update)(grads[0], s, params)
  assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(u))
  # MultiSteps: no update until the second micro-step.
  ms = optax.MultiSteps(drop_layers(symoptax.muon(LR), 1.0), every_k_schedule=2)
  s, step = ms.init(params), jax.jit(ms.update)
  u, s = step(grads[0], s, params)
  assert not any(bool(jnp.any(x != 0)) for x in jax.tree.leaves(u))
  u, s = step(grads[1], s, params)
  assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(u))


def small_model():
  lay = lambda i: {"mlp": {"up_proj": {"kernel": normal((8, 16), 2 * i)},
                           "down_proj": {"kernel": normal((16, 8), 2 * i + 1)}},
                   "input_layernorm": {"scale": jnp.ones(8)}}
  return {"layers": {"0": lay(0), "1": lay(1)},
          "embed_tokens": {"embedding": normal((32, 8), 5)},
          "lm_head": {"kernel": normal((8, 32), 6)}, "norm": {"scale": jnp.ones(8)}}


def by_layer(path):
  return path[1] if path[0] == "layers" else None  # None: never dropped


def test_drop_layers_wraps_a_symmetry_stack_by_layer():
  params = small_model()
  grads = jax.tree.map(lambda p: 0.5 * p + 1.0, params)
  stack = symoptax.symmetry_stack(0.02, preset="muon")
  ref, _ = jax.jit(stack.update)(grads, stack.init(params), params)
  # Every layer kept at the first step (then the stack's own update), half of them after.
  # With keep_vectors=False a dropped layer's leaves (its norm scale too) are all zero; the
  # leaves outside the layers (group None) always move.
  tx = drop_layers(stack, lambda count: jnp.where(count == 0, 1.0, 0.5), group=by_layer,
                   keep_vectors=False, seed=0)
  state, moved = tx.init(params), set()
  step = jax.jit(tx.update)
  for t in range(4):
    u, state = step(grads, state, params)
    if t == 0:
      errs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), u, ref)
      assert max(jax.tree.leaves(errs)) < 1e-6, errs
    for name, layer in u["layers"].items():
      nonzero = {bool(jnp.any(x != 0)) for x in jax.tree.leaves(layer)}
      assert len(nonzero) == 1, name  # the whole layer moves or none of it
      moved |= nonzero
    for k in ("embed_tokens", "lm_head", "norm"):
      assert all(bool(jnp.any(x != 0)) for x in jax.tree.leaves(u[k]))
  assert moved == {True, False}


def test_drop_layers_with_a_stack_built_on_params():
  """A stack built with params= takes each group's masked tree (its leaves matched by path):
  drop_layers at keep_prob=1 equals the stack."""
  params = small_model()
  stack = symoptax.symmetry_stack(0.02, preset="muon", params=params)
  tx = drop_layers(stack, 1.0, group=by_layer)
  state = tx.init(params)
  grads = jax.tree.map(lambda p: 0.5 * p + 1.0, params)
  u, _ = tx.update(grads, state, params)
  ref, _ = stack.update(grads, stack.init(params), params)
  errs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), u, ref)
  assert max(jax.tree.leaves(errs)) < 1e-6, errs


def multi_leaf_equivariance(tx, group, shapes, steps=3, scales=(1.0, 3.0)):
  """Max over steps of ||f(L G R) - L f(G) R|| / ||L f(G) R|| on a two-leaf tree, each leaf
  transformed by its own group element (zero updates must map to zero)."""
  elems = {}
  for i, (k, (m, n)) in enumerate(shapes.items()):
    left = orthogonal(m, i) if group == "biorth" else permutation(m, i)
    elems[k] = (left, orthogonal(n, 100 + i))
  move = lambda t: {k: elems[k][0] @ t[k] @ elems[k][1] for k in t}
  w = tree(shapes, 1)
  s1, s2 = tx.init(w), tx.init(move(w))
  step = jax.jit(tx.update)
  worst = 0.0
  for t in range(steps):
    g = {k: s * x for (k, x), s in zip(tree(shapes, 10 + 10 * t).items(), scales)}
    u1, s1 = step(g, s1, w)
    u2, s2 = step(move(g), s2, move(w))
    for k, e in move(u1).items():
      worst = max(worst, float(jnp.linalg.norm(u2[k] - e) / jnp.maximum(jnp.linalg.norm(e),
                                                                          1e-30)))
  return worst


TWO = {"x": (24, 10), "y": (10, 24)}


def test_drop_layers_keeps_muons_bi_orthogonal_symmetry_with_the_same_seed():
  assert multi_leaf_equivariance(drop_layers(symoptax.muon(LR), 0.5, seed=2), "biorth",
                                 TWO) < 1e-4


def test_drop_layers_keeps_only_the_inner_rules_group():
  # Negative control: over row-normalised momentum (LPRO: row permutations, right rotations)
  # the wrapper is LPRO-equivariant and not bi-orthogonal.
  tx = drop_layers(symoptax.rownorm_m(LR), 0.5, seed=2)
  assert multi_leaf_equivariance(tx, "lpro", TWO) < 1e-4
  assert multi_leaf_equivariance(tx, "biorth", TWO) > 1e-2


def test_drop_layers_names_an_inner_rule_that_rejects_masked_trees():
  def init(params):
    if any(isinstance(x, optax.MaskedNode) for x in jax.tree.leaves(
        params, is_leaf=lambda x: isinstance(x, optax.MaskedNode))):
      raise ValueError("no masked leaves here")
    return optax.EmptyState()

  picky = optax.GradientTransformation(init, lambda u, s, p=None: (u, s))
  with pytest.raises(ValueError, match=r"drop_layers: the inner transformation rejected.*"
                                       r"no masked leaves here"):
    drop_layers(picky, 0.5).init({"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))})


def test_drop_layers_argument_checks():
  for bad in (0.0, -0.5, 1.5):
    with pytest.raises(ValueError, match=r"drop_layers: keep_prob must be in \(0, 1\]"):
      drop_layers(optax.sgd(1.0), bad)
  params = {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))}
  with pytest.raises(ValueError, match="group="):
    drop_layers(optax.sgd(1.0), 0.5, group={"a": 0}).init(params)
  with pytest.raises(ValueError, match="not hashable"):
    drop_layers(optax.sgd(1.0), 0.5, group=lambda p: [p]).init(params)
  # Empty leaves pass through; a group id of None is never dropped.
  params = {"e": jnp.ones((0, 8)), "a": jnp.ones((3, 3))}
  tx = drop_layers(symoptax.muon(LR), 0.01, group=lambda p: None)
  u, _ = tx.update(params, tx.init(params), params)
  assert u["e"].shape == (0, 8) and bool(jnp.any(u["a"] != 0))


# ------------------------------------------------------------------------------------------
# noise_adaptive


def nuclear(x):
  return np.linalg.svd(x, compute_uv=False).sum()


DUAL = {"nuclear": nuclear, "frobenius": np.linalg.norm,
        "row_l21": lambda x: np.linalg.norm(x, axis=1).sum(), "l1": lambda x: np.abs(x).sum()}
NA_SHAPES = {"a": (8, 6), "b": (6, 8), "s": (2, 5, 4), "v": (4,)}
NA_AXES = {"a": A(0, 1), "b": A(0, 1), "s": A(1, 2), "v": None}


@pytest.mark.parametrize("norm", sorted(DUAL))
def test_noise_adaptive_factors_formula(norm):
  b1, b2, eps, clamp = 0.8, 0.9, 1e-8, 0.3
  tx = noise_adaptive(optax.identity(), b1=b1, b2=b2, eps=eps, norm=norm, clamp=clamp,
                      method="svd", axes=NA_AXES)
  base = tree(NA_SHAPES, 0)
  noise = {"a": 0.1, "b": 1.0, "s": np.array([0.3, 2.0])[:, None, None], "v": 1.0}
  state, step = tx.init(base), jax.jit(tx.update)
  mats = [("a", None), ("b", None), ("s", 0), ("s", 1)]
  mu = {k: np.zeros(s) for k, s in NA_SHAPES.items()}
  v = {m: 0.0 for m in mats}
  for t in range(1, 4):
    g = {k: np.asarray(base[k], np.float64) + noise[k] * np.asarray(normal(s, 10 * t + i))
         for i, (k, s) in enumerate(NA_SHAPES.items())}
    if t >= 2:
      for k, i in mats:
        d = g[k] - mu[k] / (1 - b1 ** (t - 1))
        v[(k, i)] = b2 * v[(k, i)] + (1 - b2) * DUAL[norm](d if i is None else d[i]) ** 2
      sigma = {m: np.sqrt(v[m] / (1 - b2 ** (t - 1))) for m in mats}
      r = {m: 1 / (sigma[m] + eps) for m in mats}
      mean = np.mean(list(r.values()))
      f = {m: np.clip(r[m] / mean, clamp, 1 / clamp) for m in mats}
    else:
      f = {m: 1.0 for m in mats}
    mu = {k: b1 * m + (1 - b1) * g[k] for k, m in mu.items()}
    u, state = step(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g), state)
    expected = {"a": f[("a", None)] * g["a"], "b": f[("b", None)] * g["b"], "v": g["v"],
                "s": np.stack([f[("s", 0)] * g["s"][0], f[("s", 1)] * g["s"][1]])}
    for k, e in expected.items():
      np.testing.assert_allclose(u[k], e, rtol=2e-4, atol=1e-6, err_msg=f"{t} {k}")


def test_noise_adaptive_gives_the_quieter_layer_the_larger_step():
  params = {"quiet": jnp.zeros((8, 6)), "noisy": jnp.zeros((8, 6))}
  tx = noise_adaptive(muon(), norm="nuclear", method="svd", clamp=0.01)
  state, step = tx.init(params), jax.jit(tx.update)
  for t in range(6):
    g = {"quiet": jnp.ones((8, 6)) + 0.05 * normal((8, 6), t),
         "noisy": jnp.ones((8, 6)) + 0.5 * normal((8, 6), 50 + t)}
    u, state = step(g, state, params)
  ratio = float(jnp.linalg.norm(u["quiet"]) / jnp.linalg.norm(u["noisy"]))
  assert 5 < ratio < 20  # noise ratio 10: steps in inverse proportion (both polar factors)


def test_noise_adaptive_with_clamp_one_is_the_inner_transform():
  params = tree(SHAPES, 0)
  inner = muon()
  tx = noise_adaptive(inner, clamp=1.0)
  s, s_ref = tx.init(params), inner.init(params)
  for t in range(2):
    g = tree(SHAPES, 40 + t)
    u, s = tx.update(g, s, params)
    r, s_ref = inner.update(g, s_ref, params)
    for k in SHAPES:
      np.testing.assert_allclose(u[k], r[k], rtol=1e-6, atol=1e-7)


def test_noise_adaptive_keeps_the_inner_symmetry_only_with_an_invariant_norm():
  biorth = lambda norm: multi_leaf_equivariance(
      noise_adaptive(symoptax.muon(LR, method="svd"), norm=norm, method="svd"), "biorth", TWO)
  assert biorth("nuclear") < 1e-4
  assert biorth("l1") > 1e-2  # negative control: a coordinate-wise dual norm
  lpro = multi_leaf_equivariance(noise_adaptive(symoptax.rownorm_m(LR), norm="row_l21"),
                                 "lpro", TWO)
  assert lpro < 1e-4


def test_noise_adaptive_is_scale_free_and_finite_at_extreme_scales():
  params = tree({"a": (8, 6), "b": (6, 8)}, 0)
  outs = []
  for scale in (1.0, 1e25, 1e-25):
    tx = noise_adaptive(optax.identity(), norm="nuclear", method="svd", eps=0.0)
    s = tx.init(params)
    for t in range(3):
      g = {k: scale * (1.0 + (k == "b")) * normal(x.shape, 10 * t + i)
           for i, (k, x) in enumerate(params.items())}
      u, s = tx.update(g, s)
    outs.append({k: np.asarray(u[k]) / np.asarray(g[k]) for k in u})  # the factors
  for o in outs:
    for k in o:
      assert np.all(np.isfinite(o[k]))
      np.testing.assert_allclose(o[k], outs[0][k], rtol=1e-4)


def test_noise_adaptive_wraps_a_symmetry_stack_built_on_params():
  params = small_model()
  stack = symoptax.symmetry_stack(0.02, preset="muon", params=params)
  tx = noise_adaptive(stack)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for t in range(2):
    g = jax.tree.map(lambda p, t=t: p + normal(p.shape, t), params)
    u, state = step(g, state, params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
  assert state.nu["layers"]["0"]["input_layernorm"]["scale"] is None  # vectors: no statistic


def test_noise_adaptive_in_the_optax_harness():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), tree({"a": (8, 6), "v": (4,)}, 0))
  params["e"] = jnp.ones((0, 8), jnp.bfloat16)  # an empty leaf passes through
  grads = [jax.tree.map(lambda p, t=t: (p + normal(p.shape, t)).astype(jnp.bfloat16), params)
           for t in range(3)]
  state = noise_adaptive(symoptax.muon(LR, mu_dtype=jnp.float32),
                         mu_dtype=jnp.float32).init(params)
  assert state.mu["a"].dtype == jnp.float32 and state.inner[0].trace["a"].dtype == jnp.float32
  tx = noise_adaptive(symoptax.muon(LR))
  shapes = jax.eval_shape(tx.init, params)
  state = tx.init(params)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), state)
  step = jax.jit(tx.update)
  for g in grads:
    u, new = step(g, state, params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u)) and u["e"].shape == (0, 8)
    assert jax.tree.map(lambda a: a.dtype, new) == jax.tree.map(lambda a: a.dtype, state)
    state = new
  inj = optax.inject_hyperparams(noise_adaptive, static_args=("norm",))(
      symoptax.muon(LR), b1=0.9, clamp=0.5, norm="frobenius")
  s, step = inj.init(params), jax.jit(inj.update)
  for g in grads:
    u, s = step(g, s, params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(u))
  ms = optax.MultiSteps(noise_adaptive(symoptax.muon(LR)), every_k_schedule=2)
  s, step = ms.init(params), jax.jit(ms.update)
  for g in grads:
    u, s = step(g, s, params)
  assert int(s.inner_opt_state.count) == 1


def test_noise_adaptive_argument_checks():
  with pytest.raises(ValueError, match="norm"):
    noise_adaptive(optax.identity(), norm="spectral")
  with pytest.raises(ValueError, match=r"noise_adaptive: clamp must be in \(0, 1\]"):
    noise_adaptive(optax.identity(), clamp=0.0)
  with pytest.raises(ValueError):
    noise_adaptive(optax.identity(), method="no_such_oracle")
