"""Sphere rules: HyperP (Muon on the Frobenius sphere, its learning-rate transfer) and
Magnitude-Direction decoupling, against numpy transcriptions, their symmetry classes (with
negative controls), toy problems, the optax battery and the sharded path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
import test_harness as th
from helpers import normal
from symoptax import MatrixAxes
from symoptax.variants.sphere import (hyperp, hyperp_learning_rate, md_decoupled,
                                      retract_to_sphere)
from test_equivariance import equivariance_error

BETA, LR = 0.9, 0.1


def polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def f64(x):
  return np.asarray(x, np.float64)


# --- HyperP ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,radius", [((12, 5), None), ((5, 12), 3.0)])
def test_hyperp_formula_and_norm_over_three_steps(shape, radius):
  tx = hyperp(LR, beta=BETA, radius=radius, method="svd")
  update = jax.jit(tx.update)
  w = normal(shape, 0)
  state = tx.init({"w": w})
  ref_w, buf = f64(w), np.zeros(shape)
  big_r = np.linalg.norm(ref_w) if radius is None else radius
  for s in (1, 2, 3):
    g = normal(shape, s)
    buf = BETA * buf + f64(g)
    u_hat = polar(f64(g) + BETA * buf)
    u_hat /= np.linalg.norm(u_hat)
    x = ref_w - LR * big_r * u_hat
    new = big_r * x / np.linalg.norm(x)
    u, state = update({"w": g}, state, {"w": w})
    np.testing.assert_allclose(u["w"], new - ref_w, rtol=1e-4, atol=1e-5)
    w = optax.apply_updates({"w": w}, u)["w"]
    ref_w = new
    np.testing.assert_allclose(float(jnp.linalg.norm(w)), big_r, rtol=1e-5)


def test_hyperp_radius_rules_zero_start_and_argument_checks():
  a = MatrixAxes(1, 2)  # a stack of 3 matrices [8, 6]: one radius each
  w = normal((3, 8, 6), 0) * jnp.array([1.0, 3.0, 0.0])[:, None, None]
  p = {"w": w, "b": jnp.ones(6)}
  g = {"w": normal((3, 8, 6), 1), "b": normal((6,), 2)}
  tx = hyperp(LR, axes={"w": a, "b": None}, method="svd")
  state = tx.init(p)
  update = jax.jit(tx.update)
  radius = state[-1].radius["w"]
  assert radius.shape == (3,) and state[-1].radius["b"] is None
  np.testing.assert_allclose(radius, [np.linalg.norm(w[0]), np.linalg.norm(w[1]), np.sqrt(8)],
                             rtol=1e-6)  # the zero matrix: sqrt(fan_out)
  u, _ = update(g, state, p)
  new = optax.apply_updates(p, u)
  np.testing.assert_allclose(jnp.linalg.norm(new["w"], axis=(1, 2)), radius, rtol=1e-5)
  np.testing.assert_allclose(u["b"], -LR * 1.95 * g["b"], rtol=1e-6)  # plain momentum
  # A numeric radius puts every matrix on that sphere after one step, wherever it starts.
  tx = hyperp(LR, radius=2.0, axes={"w": a, "b": None}, method="svd")
  u, _ = update(g, tx.init(p), p)  # the radius lives in the state: same compiled step
  np.testing.assert_allclose(jnp.linalg.norm(optax.apply_updates(p, u)["w"], axis=(1, 2)),
                             [2.0] * 3, rtol=1e-5)
  # weight_decay: 0 (also as an array) is the only value.
  hyperp(LR, weight_decay=0)
  hyperp(LR, weight_decay=jnp.zeros([]))
  with pytest.raises(ValueError, match=r"hyperp: weight_decay must be 0, got 0\.1.*rescales"):
    hyperp(LR, weight_decay=0.1)
  with pytest.raises(ValueError, match=r"hyperp: radius must be None or a number > 0, got -1"):
    hyperp(LR, radius=-1.0)
  with pytest.raises(ValueError, match="retract_to_sphere: update.. needs params"):
    tx.update(g, tx.init(p))


def test_hyperp_learning_rate_transfer_rule():
  base = 0.02
  assert hyperp_learning_rate(base) == base
  same = dict(width=256, base_width=256, depth=8, base_depth=8, tokens=1e9, base_tokens=1e9,
              batch_size=2 ** 21, base_batch_size=2 ** 21)
  assert hyperp_learning_rate(base, **same) == pytest.approx(base)
  # Width: exponent 0 (relative steps on the sphere are width-free).
  assert hyperp_learning_rate(base, width=4096, base_width=256) == base
  # Depth: Depth-muP sqrt(d0 / d); tokens: T^-0.32; batch: sqrt(B / B0).
  assert hyperp_learning_rate(base, depth=32, base_depth=8) == pytest.approx(base / 2)
  assert hyperp_learning_rate(base, tokens=1e11, base_tokens=1e9) == pytest.approx(
      base * 100 ** -0.32)
  assert hyperp_learning_rate(base, batch_size=4, base_batch_size=1) == pytest.approx(2 * base)
  # Only ratios matter, and transfers compose: A -> B -> C equals A -> C.
  a, b, c = (dict(depth=d, tokens=t, batch_size=k) for d, t, k in
             ((8, 1e9, 1.0), (16, 4e9, 2.0), (48, 3e10, 8.0)))
  base_of = lambda s: {f"base_{k}": v for k, v in s.items()}
  ab = hyperp_learning_rate(base, **b, **base_of(a))
  np.testing.assert_allclose(hyperp_learning_rate(ab, **c, **base_of(b)),
                             hyperp_learning_rate(base, **c, **base_of(a)), rtol=1e-12)
  scaled = {k: 7 * v for k, v in c.items()}
  np.testing.assert_allclose(hyperp_learning_rate(base, **scaled, **base_of(
      {k: 7 * v for k, v in a.items()})), hyperp_learning_rate(base, **c, **base_of(a)),
      rtol=1e-12)
  # Arrays pass through (a sweep of base rates).
  np.testing.assert_allclose(hyperp_learning_rate(np.array([1.0, 2.0]), depth=4, base_depth=1),
                             [0.5, 1.0])
  with pytest.raises(ValueError, match="depth and base_depth go together"):
    hyperp_learning_rate(base, depth=16)
  with pytest.raises(ValueError, match="tokens must be a finite number > 0, got 0"):
    hyperp_learning_rate(base, tokens=0, base_tokens=1e9)


def test_hyperp_converges_on_a_problem_whose_solution_lies_on_its_sphere():
  target_norm = 3.0
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  target = jax.random.normal(k1, (16, 2)) @ jax.random.normal(k2, (2, 8))
  target = target * target_norm / jnp.linalg.norm(target)
  x = jax.random.normal(k3, (64, 16))
  one = lambda w: jnp.mean((x @ w - x @ target) ** 2)
  loss = lambda p: one(p["zero"]) + one(p["random"])  # two independent matrices
  steps = 300
  tx = hyperp(optax.cosine_decay_schedule(0.1, steps), radius=target_norm)
  p = {"zero": jnp.zeros((16, 8)), "random": normal((16, 8), 5)}

  def step(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), None

  (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
  for w in p.values():  # from zero (onto the sphere in one step), and from elsewhere
    assert float(one(w)) < 1e-3 * float(one(jnp.zeros((16, 8))))
    np.testing.assert_allclose(float(jnp.linalg.norm(w)), target_norm, rtol=1e-5)


def test_hyperp_on_empty_leaves_and_mu_dtype():
  # Empty leaves pass through; an fp32 momentum (mu_dtype) for bf16 weights gives bf16 steps
  # that keep the weights on their sphere (to bf16 rounding).
  a = MatrixAxes
  params = {"w": jnp.zeros((0, 8)), "e": jnp.zeros((3, 0, 5)),
            "v": normal((12, 8), 0).astype(jnp.bfloat16)}
  axes = {"w": a(0, 1), "e": a(1, 2), "v": a(0, 1)}
  grads = {k: normal(x.shape, 1).astype(x.dtype) for k, x in params.items()}
  tx = hyperp(0.02, axes=axes, mu_dtype=jnp.float32)
  state = tx.init(params)
  u, state = jax.jit(tx.update)(grads, state, params)
  assert {k: u[k].shape for k in u} == {k: x.shape for k, x in params.items()}
  assert state[0].trace["v"].dtype == jnp.float32 and u["v"].dtype == jnp.bfloat16
  assert float(jnp.abs(u["v"].astype(jnp.float32)).max()) > 0
  norm = jnp.linalg.norm(optax.apply_updates(params, u)["v"].astype(jnp.float32))
  np.testing.assert_allclose(float(norm), float(state[-1].radius["v"]), rtol=1e-2)


# --- Magnitude-Direction decoupling ----------------------------------------------------------

def adam_np(st, g, lr, b1, b2, eps, name):
  t = st["t"]
  st[name + "m"] = b1 * st.get(name + "m", 0.0) + (1 - b1) * g
  st[name + "v"] = b2 * st.get(name + "v", 0.0) + (1 - b2) * g * g
  m_hat, v_hat = st[name + "m"] / (1 - b1 ** t), st[name + "v"] / (1 - b2 ** t)
  return -lr * m_hat / (np.sqrt(v_hat) + eps)


@pytest.mark.parametrize("gains", ["row_col", "col"])
def test_md_decoupled_matches_a_numpy_transcription_over_three_steps(gains):
  shape, glr, b1, b2, eps = (12, 5), 0.05, 0.9, 0.95, 1e-8
  tx = md_decoupled(symoptax.muon(LR, beta=BETA, method="svd"), gain_learning_rate=glr,
                    gains=gains)
  update = jax.jit(tx.update)
  w = normal(shape, 0) * jnp.linspace(0.5, 2.0, 5)
  state = tx.init({"w": w})
  x = f64(w)
  if gains == "row_col":
    r, c = np.linalg.norm(x, axis=1), np.ones(5)
  else:
    r, c = np.ones(12), np.linalg.norm(x, axis=0)
  v = x / r[:, None] / c[None, :]
  radius, buf, st = np.linalg.norm(v), np.zeros(shape), {}
  for t in (1, 2, 3):
    st["t"] = t
    g = f64(normal(shape, t))
    gv = g * v
    gr, gc = (gv * c).sum(1), (r[:, None] * gv).sum(0)
    dv = r[:, None] * g * c
    buf = BETA * buf + dv
    step = -LR * np.sqrt(12 / 5) * polar(dv + BETA * buf)  # muon on the direction
    v = radius * (v + step) / np.linalg.norm(v + step)
    if gains == "row_col":
      r = r + adam_np(st, gr, glr, b1, b2, eps, "r")
    c = c + adam_np(st, gc, glr, b1, b2, eps, "c")
    fused = r[:, None] * v * c
    u, state = update({"w": normal(shape, t)}, state, {"w": w})
    np.testing.assert_allclose(u["w"], fused - f64(w), rtol=1e-4, atol=2e-5)
    w = optax.apply_updates({"w": w}, u)["w"]
    np.testing.assert_allclose(w, fused, rtol=1e-4, atol=2e-5)  # the weight the model sees
    np.testing.assert_allclose(state.row_gain["w"], r, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.col_gain["w"], c, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(jnp.linalg.norm(state.direction["w"])), radius, rtol=1e-5)


def test_md_decoupled_without_gain_steps_is_the_inner_rule_on_the_sphere():
  shape, lr = (10, 7), 0.3
  w = normal(shape, 0)
  p = {"w": w, "b": jnp.arange(7.0)}
  # gain_learning_rate=0: r, c frozen; V' = R normalise(V - lr diag(r) G).
  tx = md_decoupled(optax.sgd(lr), gain_learning_rate=0.0)
  state = tx.init(p)
  r0 = state.row_gain["w"]
  g0 = {"w": normal(shape, 1), "b": normal((7,), 11)}  # without params: from the state's W
  chex.assert_trees_all_close(tx.update(g0, state)[0], tx.update(g0, state, p)[0], atol=1e-6)
  r = np.linalg.norm(f64(w), axis=1)
  v = f64(w) / r[:, None]
  for t in (1, 2):
    g = {"w": normal(shape, t), "b": normal((7,), 10 + t)}
    u, state = tx.update(g, state, p)
    x = v - lr * r[:, None] * f64(g["w"])
    v = np.sqrt(10) * x / np.linalg.norm(x)
    new = optax.apply_updates(p, u)
    np.testing.assert_allclose(new["w"], r[:, None] * v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(u["b"], -lr * g["b"], rtol=1e-6)  # vectors: the inner rule
    np.testing.assert_array_equal(state.row_gain["w"], r0)  # frozen
    p = new
  # gains="none": plain SGD projected onto the sphere of the initial norm.
  tx = md_decoupled(optax.sgd(lr), gains="none", gain_learning_rate=0.5)
  g = {"w": normal(shape, 3)}
  u, _ = tx.update(g, tx.init({"w": w}), {"w": w})
  x = f64(w) - lr * f64(g["w"])
  np.testing.assert_allclose(optax.apply_updates({"w": w}, u)["w"],
                             np.linalg.norm(f64(w)) * x / np.linalg.norm(x), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="md_decoupled: gains must be one of .*got 'rows'"):
    md_decoupled(optax.sgd(lr), gains="rows")


def test_md_decoupled_muon_converges_on_low_rank_regression():
  loss = th.low_rank_regression()
  steps = 300
  tx = md_decoupled(symoptax.muon(optax.cosine_decay_schedule(0.1, steps)),
                    gain_learning_rate=optax.cosine_decay_schedule(0.05, steps))
  p = {"w": 0.3 * normal((16, 8), 7)}

  def step(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), None

  (p, s), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
  assert float(loss(p)) < 1e-3 * float(loss({"w": jnp.zeros((16, 8))}))
  fused = s.row_gain["w"][:, None] * s.direction["w"] * s.col_gain["w"]
  np.testing.assert_allclose(p["w"], fused, atol=1e-5)


# --- Symmetry classes ------------------------------------------------------------------------

def per_row_sphere():
  """Negative control: HyperP with the momentum's rows equalised before the polar step."""
  return optax.chain(optax.trace(BETA, nesterov=True), symoptax.scale_by_row_norm(),
                     symoptax.scale_by_polar("svd", side="full"),
                     optax.scale_by_learning_rate(LR), retract_to_sphere())


MUON = lambda: symoptax.muon(LR, method="svd")
SPHERE_CLASSES = {
    # name: (optimizer, groups it must respect, a group it must fail)
    "hyperp": (lambda: hyperp(LR, method="svd"), ("biorth",), None),
    "per_row_sphere": (per_row_sphere, ("lpro",), "biorth"),
    "md_row_col": (lambda: md_decoupled(MUON(), gain_learning_rate=0.05), ("perm",),
                   "biorth"),
    "md_row": (lambda: md_decoupled(MUON(), gains="row", gain_learning_rate=0.05), ("lpro",),
               "biorth"),
    "md_none": (lambda: md_decoupled(MUON(), gains="none"), ("biorth",), None),
}


@pytest.mark.parametrize("name", sorted(SPHERE_CLASSES))
@pytest.mark.parametrize("shape", [(24, 10), (10, 24)])
def test_symmetry_class_and_negative_control(name, shape):
  make, groups, fails = SPHERE_CLASSES[name]
  for group in groups:
    assert equivariance_error(make(), group, shape) < 1e-4, group
  if fails is not None:
    assert equivariance_error(make(), fails, shape) > 1e-2


# --- The optax battery (the harness's tree: a matrix, a stack of 3 and a vector) -------------

BATTERY = {  # the exact oracle compiles fastest; the harness runs the default one
    "hyperp": lambda: hyperp(0.05, axes=th.AXES, method="svd"),
    "md_decoupled": lambda: md_decoupled(symoptax.muon(0.05, axes=th.AXES, method="svd"),
                                         gain_learning_rate=0.01, axes=th.AXES),
}


@pytest.mark.parametrize("name", sorted(BATTERY))
def test_optax_battery(name):
  tx = BATTERY[name]()
  # bf16 stays bf16, state structure and dtypes are stable, updates finite.
  for dtype in (jnp.float32, jnp.bfloat16):
    init = tx.init(th.params(dtype))
    p, state, ups = th.run(tx, steps=2, dtype=dtype, jit=True)
    chex.assert_trees_all_equal_shapes_and_dtypes(init, state)
    # The momentum (hyperp's, muon's inside md) in the parameters' dtype: mu_dtype=None.
    assert {x.dtype for x in jax.tree_util.tree_leaves(state) if x.shape == (12, 6)} == {
        jnp.dtype(dtype)}
    assert all(x.dtype == dtype for t in [p] + ups for x in jax.tree_util.tree_leaves(t))
    assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
               for x in jax.tree_util.tree_leaves(p))
  # init on abstract parameters.
  structs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                   th.params())
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(tx.init, structs),
                                                tx.init(th.params()))
  if name == "hyperp":
    return  # its MultiSteps check is the harness's (tests/test_harness.py ALIASES)
  # MultiSteps: nothing on the first micro-step, the update of the mean on the second.
  multi = optax.MultiSteps(tx, every_k_schedule=2)
  p = th.params()
  s = multi.init(p)
  step = jax.jit(multi.update)
  u1, s = step(th.grads(0), s, p)
  assert all(bool(jnp.all(x == 0)) for x in jax.tree_util.tree_leaves(u1))
  u2, _ = step(th.grads(1), s, p)
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, th.grads(0), th.grads(1))
  chex.assert_trees_all_close(u2, jax.jit(tx.update)(mean, tx.init(p), p)[0], atol=1e-4,
                              rtol=1e-4)


def test_jit_equals_no_jit():
  tx = md_decoupled(optax.sgd(0.05), gain_learning_rate=0.01, axes=th.AXES)
  _, _, eager = th.run(tx, steps=2)
  _, _, jitted = th.run(tx, steps=2, jit=True)
  chex.assert_trees_all_close(eager, jitted, atol=1e-5, rtol=1e-4)


def test_inject_hyperparams_is_live():
  p, g = th.params(), th.grads(0)
  # HyperP: the injected rate is live: set to 0.025, the step is hyperp(0.025)'s (the update
  # is not linear in the rate: the retraction is not).
  injected = optax.inject_hyperparams(hyperp)(learning_rate=0.05, axes=th.AXES, method="svd")
  state = injected.init(p)
  state.hyperparams["learning_rate"] = jnp.asarray(0.025)
  u_inj, _ = jax.jit(injected.update)(g, state, p)
  half = hyperp(0.025, axes=th.AXES, method="svd")
  chex.assert_trees_all_close(u_inj, jax.jit(half.update)(g, half.init(p), p)[0], atol=1e-5,
                              rtol=1e-4)
  # MD: the gains' rate is live too (0 freezes them).
  injected = optax.inject_hyperparams(md_decoupled, static_args=("gains",))(
      optax.sgd(0.1), gain_learning_rate=0.01, axes=th.AXES)
  state = injected.init(p)
  update = jax.jit(injected.update)
  plain = md_decoupled(optax.sgd(0.1), gain_learning_rate=0.01, axes=th.AXES)
  chex.assert_trees_all_close(update(g, state, p)[0],
                              jax.jit(plain.update)(g, plain.init(p), p)[0], atol=1e-5,
                              rtol=1e-4)
  state.hyperparams["gain_learning_rate"] = jnp.asarray(0.0)
  _, new = update(g, state, p)
  chex.assert_trees_all_equal(new.inner_state.row_gain, state.inner_state.row_gain)
  assert not np.allclose(update(g, injected.init(p), p)[1].inner_state.row_gain["w"],
                         state.inner_state.row_gain["w"])

