"""FISMO (symoptax.fismo, scale_by_fismo): a numpy transcription of the algorithm, its
trust-region property, the factors' normalisation, Muon as the damped limit, bi-orthogonal
symmetry with a negative control, and the stack rule. The sharded step is in
test_sharding.py's table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import symoptax
from helpers import max_rel_error, normal, orthogonal
from helpers import run_jitted as run

LR = 0.1


def mpow(a, p):
  w, v = np.linalg.eigh(a)
  return (v * w ** p) @ v.T


def polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def reference(grads, beta, gamma, mu, params=None, weight_decay=0.0):
  """The algorithm in float64: Gauss-Seidel factor updates (P from the old Q, Q from the new
  P), trace-normalised and damped; the whitened EMA momentum; P^-1/2 polar(M) Q^-1/2."""
  m, n = grads[0].shape
  p, q, mom, outs = np.eye(m), np.eye(n), np.zeros((m, n)), []
  for g in grads:
    pt = gamma * p + (1 - gamma) * (g @ np.linalg.inv(q) @ g.T / n + mu * np.trace(p) / m
                                    * np.eye(m))
    p = m * pt / np.trace(pt)
    qt = gamma * q + (1 - gamma) * (g.T @ np.linalg.inv(p) @ g / m + mu * np.trace(q) / n
                                    * np.eye(n))
    q = n * qt / np.trace(qt)
    mom = beta * mom + (1 - beta) * mpow(p, -0.5) @ g @ mpow(q, -0.5)
    out = -LR * mpow(p, -0.5) @ polar(mom) @ mpow(q, -0.5)
    if weight_decay:
      out = out - LR * weight_decay * params
    outs.append(out)
  return outs


@pytest.mark.parametrize("shape", [(12, 6), (6, 12), (8, 8)], ids=["tall", "wide", "square"])
def test_matches_a_transcription_of_the_algorithm(shape):
  grads = [3 * np.asarray(normal(shape, i), np.float64) for i in range(5)]
  w = np.asarray(normal(shape, 50), np.float64)
  for wd in (0.0, 0.05):
    tx = symoptax.fismo(LR, beta=0.9, gamma=0.9, damping=0.05, weight_decay=wd, method="svd",
                        shape_rule="none")
    got, _ = run(tx, [{"w": jnp.asarray(g, jnp.float32)} for g in grads],
                 {"w": jnp.asarray(w, jnp.float32)})
    for step, (u, want) in enumerate(zip(got, reference(grads, 0.9, 0.9, 0.05, w, wd))):
      err = max_rel_error(u["w"], want)
      assert err < 1e-4, (shape, wd, step, err)


def test_the_step_is_the_trust_region_solution_and_the_factors_are_normalised():
  """P^1/2 out Q^1/2 = polar(M): every singular value 1 (the constraint is active in every
  direction); P, Q symmetric positive definite with trace rows / cols."""
  grads = [{"w": normal((16, 6), i)} for i in range(3)]
  tx = symoptax.scale_by_fismo(method="svd")
  outs, states = run(tx, grads, {"w": jnp.zeros((16, 6))})
  for u, state in zip(outs, states):
    p, q = np.asarray(state.left["w"], np.float64), np.asarray(state.right["w"], np.float64)
    for f, size in ((p, 16), (q, 6)):
      np.testing.assert_allclose(f, f.T, atol=1e-6)
      assert np.linalg.eigvalsh(f).min() > 0 and np.isclose(np.trace(f), size, rtol=1e-5)
    z = mpow(p, 0.5) @ np.asarray(u["w"], np.float64) @ mpow(q, 0.5)
    np.testing.assert_allclose(np.linalg.svd(z, compute_uv=False), 1.0, atol=2e-3)


def test_heavy_damping_keeps_the_factors_at_the_identity_and_gives_muon():
  grads = [{"w": normal((12, 8), i)} for i in range(3)]
  params = {"w": jnp.zeros((12, 8))}
  got, _ = run(symoptax.fismo(LR, damping=1e8, method="svd"), grads, params)
  want, _ = run(symoptax.muon(LR, nesterov=False, method="svd"), grads, params)
  for u, w in zip(got, want):
    np.testing.assert_allclose(u["w"], w["w"], rtol=1e-4, atol=1e-6)


def _equivariance(left, right, shape=(12, 8), steps=3):
  tx = symoptax.fismo(LR, method="svd")
  grads = [normal(shape, i) for i in range(steps)]
  base, _ = run(tx, [{"w": g} for g in grads], {"w": jnp.zeros(shape)})
  moved, _ = run(tx, [{"w": left @ g @ right} for g in grads], {"w": jnp.zeros(shape)})
  return max(float(jnp.linalg.norm(mv["w"] - left @ b["w"] @ right) / jnp.linalg.norm(b["w"]))
             for b, mv in zip(base, moved))


def test_bi_orthogonal_equivariance_and_a_row_scaling_negative_control():
  assert _equivariance(orthogonal(12, 1), orthogonal(8, 2)) < 1e-4
  scaling = jnp.diag(jnp.linspace(0.5, 2.0, 12))
  assert _equivariance(scaling, jnp.eye(8)) > 1e-1


def test_none_leaves_pass_through():
  params = {"w": jnp.zeros((6, 4)), "b": jnp.zeros(4), "n": None}
  grads = {"w": normal((6, 4), 1), "b": normal((4,), 2), "n": None}
  tx = symoptax.fismo(0.1)
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert u["n"] is None and np.isfinite(np.asarray(u["w"])).all()


def test_fismo_trains_the_qwen3_model_as_a_stack_rule():
  from flax import nnx

  from examples.models import qwen3
  from test_variants import train_qwen3

  graphdef, params, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  hidden = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")
  overrides = {r: "fismo" for r in hidden}
  rows = symoptax.describe(params, preset="muon", overrides=overrides).rows
  assert {r["rule"] for r in rows if r["role"] in hidden} == {"fismo"}
  tx = symoptax.symmetry_stack(0.02, preset="muon", overrides=overrides)
  losses = train_qwen3(tx, graphdef, params, rest, steps=8)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
