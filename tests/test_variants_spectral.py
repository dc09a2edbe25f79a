"""Muon++, AuON and Hybrid-AuON: formulas against numpy, muP's spectral conditions through a
training run, symmetry classes with negative controls, AuON's linear cost (jaxpr), a toy
problem, extreme gradient scales and argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import normal, orthogonal, permutation
from symoptax.variants.spectral import (auon, auon_normalize, clip_weight_spectral_norm,
                                        hybrid_auon, muon_pp, scale_by_auon)
from test_equivariance import equivariance_error

BETA, LR, WD = 0.9, 0.1, 0.5
MUON_NS = (3.4445, -4.7750, 2.0315)


# ------------------------------------------------------------------------------------------
# numpy transcriptions (float64)

def np_auon(x, gamma=1.5):
  g = x / np.linalg.norm(x)
  return g / np.sqrt(np.mean(np.cosh(gamma * g) ** 2))


def np_newton_schulz(x, steps):
  tall = x.shape[0] > x.shape[1]
  y = x.T if tall else x
  y = y / np.linalg.norm(y)
  a, b, c = MUON_NS
  for _ in range(steps):
    gram = y @ y.T
    y = a * y + (b * gram + c * gram @ gram) @ y
  return y.T if tall else y


def np_polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def jitted(tx):
  return optax.GradientTransformation(tx.init, jax.jit(tx.update))


def spec(x):
  return float(np.linalg.norm(np.asarray(x, np.float64), 2))


def run_two_steps(tx, shape, direction, finish=lambda u, w: u):
  """Two updates against -lr (direction(M_t) + wd W), M_t Nesterov momentum (optax.trace),
  then ``finish(u, w)`` (Muon++'s weight correction)."""
  w = np.asarray(normal(shape, 0), np.float64)
  state = tx.init({"w": w.astype(np.float32)})
  buf = 0.0
  for s in (1, 2):
    g = np.asarray(normal(shape, s), np.float64)
    buf = BETA * buf + g
    m = g + BETA * buf
    u, state = tx.update({"w": g.astype(np.float32)}, state, {"w": w.astype(np.float32)})
    expected = finish(-LR * (direction(m) + WD * w), w)
    np.testing.assert_allclose(u["w"], expected, rtol=2e-4, atol=2e-5)


# ------------------------------------------------------------------------------------------
# Formulas

@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])
def test_auon_formula(shape):
  s = np.sqrt(max(1.0, shape[0] / shape[1]))
  tx = auon(LR, beta=BETA, weight_decay=WD)
  run_two_steps(tx, shape, lambda m: s * np_auon(m))


@pytest.mark.parametrize("shape,steps", [((12, 5), 1), ((5, 12), 1), ((12, 5), 3)])
def test_hybrid_auon_formula(shape, steps):
  s = np.sqrt(max(1.0, shape[0] / shape[1]))
  tx = hybrid_auon(LR, ns_steps=steps, beta=BETA, weight_decay=WD, gamma=2.0)
  run_two_steps(tx, shape, lambda m: s * np_auon(np_newton_schulz(m, steps), 2.0))


@pytest.mark.parametrize("radius", [2.0, None])
def test_muon_pp_formula(radius):
  shape = (12, 5)  # MatrixAxes(0, 1): fan_out = rows, s = sqrt(12/5); ||W_0|| ~ 5.7 > 2 s
  s = np.sqrt(12 / 5)

  def finish(u, w):
    if radius is None:
      return u
    new = w + u
    return new * min(1.0, radius * s / spec(new)) - w

  tx = muon_pp(LR, radius=radius, beta=BETA, weight_decay=WD, method="svd")
  run_two_steps(tx, shape, lambda m: s * np_polar(m) / spec(np_polar(m)), finish)


def test_brake_is_exact_at_large_gamma():
  # A spike: r = sqrt(mean cosh^2(gamma G)) is ~e^60 / (2 sqrt(mn)); the shifted evaluation
  # neither overflows nor loses the small entries.
  x = np.asarray(normal((6, 4), 3), np.float64)
  x[2, 1] = 40.0
  for gamma in (0.0, 1.5, 60.0):
    got = auon_normalize(jnp.asarray(x, jnp.float32), gamma)
    np.testing.assert_allclose(got, np_auon(x, gamma), rtol=1e-4, atol=1e-30)


# ------------------------------------------------------------------------------------------
# Muon++: muP's spectral conditions through training

def regression(shape, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(k1, (64, shape[1]))
  target = jax.random.normal(k2, shape) / np.sqrt(shape[1])
  return lambda p: jnp.mean((x @ p["w"].T - x @ target.T) ** 2)


def trajectory(tx, w0, loss, steps=15):
  def step(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), (u["w"], p["w"])

  _, (us, ws) = jax.lax.scan(step, ({"w": w0}, tx.init({"w": w0})), None, length=steps)
  return np.asarray(us, np.float64), np.asarray(ws, np.float64)


def test_muon_pp_keeps_both_spectral_conditions(shape=(24, 8)):
  target = np.sqrt(shape[0] / shape[1])  # fan_out = rows
  loss = regression(shape)
  sched = optax.cosine_decay_schedule(0.2, 15)
  # The update: spectral norm exactly lr_t * s at every step, with the default (Polar
  # Express, 14% spread) oracle; no weight correction, no weight decay.
  us, _ = trajectory(muon_pp(sched, radius=None), jnp.zeros(shape), loss)
  for t, u in enumerate(us):
    np.testing.assert_allclose(spec(u), float(sched(t)) * target, rtol=2e-3)
  # Plain Muon's update is not (its spectral norm is polar_express's ~1.14 times the
  # max(1, ratio) factor): the negative control.
  p = {"w": jnp.zeros(shape)}
  muon = symoptax.muon(0.2)
  mu = muon.update(jax.grad(loss)(p), muon.init(p), p)[0]["w"]
  assert abs(spec(mu) / (0.2 * target) - 1) > 0.05
  # The weight: a large initialisation (||W_0|| = 4 s) and no weight decay; after every
  # step ||W||_2 <= radius * s, and the correction acts (the first step lands on the bound).
  w0 = 4.0 * target * np.asarray(np_polar(np.asarray(normal(shape, 7), np.float64)))
  us, ws = trajectory(muon_pp(0.2, radius=1.5), jnp.asarray(w0, jnp.float32), loss)
  after = [spec(w + u) for w, u in zip(ws, us)]
  assert max(after) <= 1.5 * target * (1 + 1e-3)
  np.testing.assert_allclose(after[0], 1.5 * target, rtol=1e-3)
  # Weight decay >= 1 / radius: the update alone keeps a weight that starts inside the
  # ball there (||W_{t+1}|| <= (1 - lr wd) ||W_t|| + lr s), with no correction at all.
  w0 = 0.5 * target * np.asarray(np_polar(np.asarray(normal(shape, 8), np.float64)))
  us, ws = trajectory(muon_pp(0.2, radius=None, weight_decay=0.5),
                      jnp.asarray(w0, jnp.float32), loss)
  after = [spec(w + u) for w, u in zip(ws, us)]
  assert 1.2 * target < max(after) <= 2.0 * target * (1 + 1e-4)


# ------------------------------------------------------------------------------------------
# Symmetry classes

def transformed_error(tx, left, right, shape, steps=3):
  """equivariance_error for explicit (not necessarily orthogonal) left/right maps."""
  w = normal(shape, 1)
  s1, s2 = tx.init({"w": w}), tx.init({"w": left @ w @ right})
  worst = 0.0
  for t in range(steps):
    g = normal(shape, 2 + t)
    u1, s1 = tx.update({"w": g}, s1, {"w": w})
    u2, s2 = tx.update({"w": left @ g @ right}, s2, {"w": left @ w @ right})
    want = left @ u1["w"] @ right
    worst = max(worst, float(jnp.linalg.norm(u2["w"] - want) / jnp.linalg.norm(want)))
  return worst


def signed_permutation(n, seed):
  signs = np.where(np.random.default_rng(seed).random(n) < 0.5, -1.0, 1.0)
  return permutation(n, seed) * jnp.asarray(signs, jnp.float32)


def test_muon_pp_is_bi_orthogonal(shape=(10, 24)):
  tx = lambda: jitted(muon_pp(LR, weight_decay=WD))  # ||W_0|| ~ 6.5 > 2 s: it corrects
  assert equivariance_error(tx(), "biorth", shape) < 1e-4
  # Negative control: a non-orthogonal (row-scaling) map changes spectral norms.
  scale = jnp.diag(jnp.linspace(0.5, 2.0, shape[0]))
  assert transformed_error(tx(), scale, jnp.eye(shape[1]), shape) > 1e-2


@pytest.mark.parametrize("make", [lambda **kw: jitted(auon(LR, **kw)),
                                  lambda **kw: jitted(hybrid_auon(LR, **kw))],
                         ids=["auon", "hybrid_auon"])
@pytest.mark.parametrize("shape", [(24, 10), (10, 24)])
def test_auon_symmetry_signed_permutations_not_rotations(make, shape):
  m, n = shape
  assert equivariance_error(make(weight_decay=WD), "perm", shape) < 1e-4
  assert transformed_error(make(), signed_permutation(m, 3), signed_permutation(n, 4),
                           shape) < 1e-4
  # Negative control: a sharp brake is not rotation-equivariant (the brake is one scalar
  # per matrix, so the error is |r(G) / r(A G B^T) - 1|; weight decay would dilute it) ...
  assert equivariance_error(make(gamma=30.0), "biorth", shape) > 1e-2
  assert equivariance_error(make(gamma=30.0), "lpro", shape) > 1e-2
  # ... and without it (gamma = 0: Frobenius normalisation) the rule is bi-orthogonal.
  assert equivariance_error(make(gamma=0.0), "biorth", shape) < 1e-4


# ------------------------------------------------------------------------------------------
# Cost: AuON has no matrix product

def count_dot_generals(jaxpr) -> int:
  count = 0
  for eqn in jaxpr.eqns:
    count += eqn.primitive.name == "dot_general"
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (list, tuple)) else (v,)):
        if hasattr(sub, "eqns"):  # a Jaxpr (pjit, custom_jvp and scan bodies ...)
          count += count_dot_generals(sub)
        elif hasattr(getattr(sub, "jaxpr", None), "eqns"):  # a ClosedJaxpr
          count += count_dot_generals(sub.jaxpr)
  return count


def dot_generals(tx, shape=(24, 10)):
  p = {"w": jnp.zeros(shape)}
  state = tx.init(p)
  return count_dot_generals(jax.make_jaxpr(lambda g: tx.update(g, state, p))(p).jaxpr)


def test_auon_is_linear_time():
  assert dot_generals(auon(LR, weight_decay=WD)) == 0  # elementwise ops and reductions only
  assert dot_generals(hybrid_auon(LR)) == 3  # one Newton-Schulz step: three products
  assert dot_generals(hybrid_auon(LR, ns_steps=2)) == 6
  assert dot_generals(symoptax.muon(LR)) > 10  # the polar step it replaces


# ------------------------------------------------------------------------------------------
# Toy problem, extreme scales, edge cases, errors

def low_rank_regression():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  target = jax.random.normal(k1, (16, 2)) @ jax.random.normal(k2, (2, 8)) / 2
  x = jax.random.normal(k3, (64, 16))
  return lambda p: jnp.mean((x @ p["w"] - x @ target) ** 2)


@pytest.mark.parametrize("factory,kwargs,lr", [(muon_pp, {"radius": 10.0}, 0.1),
                                               (auon, {}, 1.0), (hybrid_auon, {}, 1.0)],
                         ids=["muon_pp", "auon", "hybrid_auon"])
def test_toy_problem_converges(factory, kwargs, lr):
  steps, loss = 300, low_rank_regression()
  tx = factory(optax.cosine_decay_schedule(lr, steps), **kwargs)

  def step(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), None

  p = {"w": jnp.zeros((16, 8))}
  (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
  assert float(loss(p)) < 1e-3 * float(loss({"w": jnp.zeros((16, 8))}))


@pytest.mark.parametrize("make", [lambda: muon_pp(LR), lambda: auon(LR),
                                  lambda: hybrid_auon(LR)], ids=["muon_pp", "auon", "hybrid"])
def test_scale_invariant_at_extreme_gradient_scales(make):
  params = {"w": jnp.zeros((16, 24)), "b": jnp.zeros(24)}
  grads = {"w": normal((16, 24), 1), "b": normal((24,), 2)}
  tx = make()
  state = tx.init(params)
  step = jax.jit(lambda k: tx.update(jax.tree.map(lambda g: g * k, grads), state, params)[0])
  ref = np.asarray(step(jnp.float32(1.0))["w"])
  for k in (1e-30, 1e-10, 1e10, 1e30):
    u = np.asarray(step(jnp.float32(k))["w"])
    assert np.all(np.isfinite(u))
    np.testing.assert_allclose(u, ref, atol=1e-3 * np.abs(ref).max())


@pytest.mark.parametrize("make", [lambda: muon_pp(LR, weight_decay=WD),
                                  lambda: auon(LR), lambda: hybrid_auon(LR)],
                         ids=["muon_pp", "auon", "hybrid"])
def test_empty_and_bf16_leaves(make):
  params = {"e": jnp.zeros((0, 8)), "v": jnp.asarray(normal((12, 8), 0), jnp.bfloat16),
            "b": jnp.ones(8)}
  grads = {"e": jnp.zeros((0, 8)), "v": jnp.asarray(normal((12, 8), 1), jnp.bfloat16),
           "b": jnp.ones(8)}
  tx = make()
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert u["e"].shape == (0, 8) and u["v"].dtype == jnp.bfloat16
  assert bool(jnp.all(jnp.isfinite(u["v"].astype(jnp.float32))))
  np.testing.assert_allclose(u["b"], -LR * (1 + 0.95) * grads["b"])  # Nesterov momentum


def test_argument_errors_name_the_function():
  with pytest.raises(ValueError, match=r"muon_pp: radius must be > 0 or None, got -1"):
    muon_pp(LR, radius=-1.0)
  with pytest.raises(ValueError, match=r"scale_by_auon: gamma must be >= 0, got -0.5"):
    auon(LR, gamma=-0.5)
  with pytest.raises(ValueError, match=r"hybrid_auon: ns_steps must be >= 1, got 0"):
    hybrid_auon(LR, ns_steps=0)
  with pytest.raises(ValueError, match=r"scale_by_auon: ns_steps must be >= 0, got -1"):
    scale_by_auon(ns_steps=-1)
  tx = clip_weight_spectral_norm(1.0)
  with pytest.raises(ValueError, match=r"clip_weight_spectral_norm: update\(\) needs params"):
    tx.update({"w": jnp.ones((4, 4))}, tx.init(None))


def test_weight_bound_is_orthogonally_invariant():
  # The correction depends on the weight only through its spectral norm.
  p, g, q = {"w": 3.0 * normal((10, 6), 0)}, {"w": normal((10, 6), 1)}, orthogonal(10, 5)
  tx = clip_weight_spectral_norm(1.0)
  u1, _ = tx.update(g, tx.init(p), p)
  u2, _ = tx.update({"w": q @ g["w"]}, tx.init(p), {"w": q @ p["w"]})
  np.testing.assert_allclose(q @ u1["w"], u2["w"], atol=1e-5)
  assert spec(p["w"] + u1["w"]) <= np.sqrt(10 / 6) * (1 + 1e-3)
