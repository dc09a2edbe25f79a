"""COSMOS (symoptax.cosmos, scale_by_cosmos): a numpy transcription of the reference, the
unit-RMS update, plain Adam on vectors (parity with optax), its state against SOAP's, its
symmetry class with a negative control, and the stack rule. The sharded step is in
test_sharding.py's table."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import max_rel_error, normal, orthogonal, permutation
from helpers import run_jitted as run
from symoptax.variants.cosmos import ScaleByCosmosState

B1, B2, EPS, RANK, GAMMA, LR = 0.95, 0.95, 1e-8, 3, 0.2, 0.1


def ns5(x):
  """Jordan's 5-step Newton-Schulz (the reference's polar step), float64."""
  a, b, c = 3.4445, -4.7750, 2.0315
  tall = x.shape[0] > x.shape[1]
  y = x.T if tall else x
  y = y / (np.linalg.norm(y) + 1e-7)
  for _ in range(5):
    s = y @ y.T
    y = a * y + (b * s + c * s @ s) @ y
  return y.T if tall else y


def reference(grads, params=None, weight_decay=0.0, nesterov=True):
  """COSMOS_optim.py's matrix branch (HEAD) in float64, as the updates it adds (its lr_ratio
  folded into the rate; decay on the parameters before the step, as optax decays them)."""
  m, n = grads[0].shape
  mom, outs = np.zeros((m, n)), []
  for t, g in enumerate(grads, 1):
    mom = B1 * mom + g
    if t == 1:
      p = np.linalg.eigh(g.T @ g)[1][:, ::-1][:, :RANK]
      s = (1 - B2) * (g @ p).T @ (g @ p)
      v = np.zeros((m, RANK))
    else:
      new = np.linalg.qr(B2 * p @ s + (1 - B2) * g.T @ (g @ p))[0]
      turn = p.T @ new
      s = B2 * turn.T @ s @ turn + (1 - B2) * (g @ new).T @ (g @ new)
      p = new
    v = B2 * v + (1 - B2) * (g @ p) ** 2
    c1, c2 = (1 - B1 ** t) / (1 - B1), 1 - B2 ** t
    # (not nesterov: the momentum's mean; the reference divides G there, leaving M unused)
    nes = (g + B1 * mom) / (1 + B1 * c1) if nesterov else mom / c1
    adam = ((nes @ p) / (np.sqrt(v) / np.sqrt(c2) + EPS)) @ p.T
    o = ns5(nes - nes @ p @ p.T)
    u = adam + GAMMA * np.sqrt(m * n) * o / (np.linalg.norm(o) + EPS)
    out = -LR * np.sqrt(m * n) * u / (np.linalg.norm(u) + EPS)
    if weight_decay:
      out = out - LR * weight_decay * params
    outs.append(out)
  return outs


@pytest.mark.parametrize("shape", [(12, 6), (6, 12), (8, 8)], ids=["tall", "wide", "square"])
def test_matches_a_transcription_of_the_reference(shape):
  grads = [np.asarray(normal(shape, i), np.float64) for i in range(5)]
  w = np.asarray(normal(shape, 50), np.float64)
  for wd, nesterov in ((0.0, True), (0.05, True), (0.0, False)):
    tx = symoptax.cosmos(LR, b1=B1, b2=B2, eps=EPS, rank=RANK, gamma=GAMMA, weight_decay=wd,
                         nesterov=nesterov, method="muon_ns")
    got, _ = run(tx, [{"w": jnp.asarray(g, jnp.float32)} for g in grads],
                 {"w": jnp.asarray(w, jnp.float32)})
    for step, (u, want) in enumerate(zip(got, reference(grads, w, wd, nesterov))):
      err = max_rel_error(u["w"], want)
      assert err < 5e-4, (shape, wd, nesterov, step, err)


@pytest.mark.parametrize("case", ["constant", "rank_one", "zero_then_not"])
def test_low_rank_and_zero_gradients_keep_an_orthonormal_basis(case):
  """A gradient of rank below ``rank`` (the same one every step, or rank one) or zero for a
  while: the basis stays orthonormal and the update finite."""
  shape, r = (32, 16), 4
  g0 = normal(shape, 0)
  grads = {"constant": [g0] * 4,
           "rank_one": [jnp.outer(normal((32,), i), normal((16,), 10 + i)) for i in range(4)],
           "zero_then_not": [jnp.zeros(shape)] * 2 + [g0] * 2}[case]
  outs, states = run(symoptax.scale_by_cosmos(rank=r), [{"w": g} for g in grads],
                     {"w": jnp.zeros(shape)})
  for u, state in zip(outs, states):
    assert np.isfinite(np.asarray(u["w"])).all()
    p = np.asarray(state.basis["w"], np.float64)
    np.testing.assert_allclose(p.T @ p, np.eye(r), atol=1e-4)
  assert float(jnp.abs(outs[-1]["w"]).max()) > 0


def test_the_update_has_unit_rms_and_the_basis_stays_orthonormal():
  grads = [{"w": normal((20, 10), i)} for i in range(4)]
  outs, states = run(symoptax.scale_by_cosmos(rank=4), grads, {"w": jnp.zeros((20, 10))})
  for u, state in zip(outs, states):
    assert np.isclose(float(jnp.sqrt(jnp.mean(jnp.square(u["w"])))), 1.0, rtol=1e-4)
    p = np.asarray(state.basis["w"], np.float64)
    np.testing.assert_allclose(p.T @ p, np.eye(4), atol=1e-5)


def test_state_is_linear_in_the_rank_not_quadratic_in_the_sides():
  """m n + (m + n) r + r^2 floats (+ one scale) per matrix, against SOAP's
  2 m n + 2 (m^2 + n^2): 0.17x of it at 256 x 128, rank 16."""
  m, n, r = 256, 128, 16
  state = symoptax.scale_by_cosmos(rank=r).init({"w": jnp.zeros((m, n))})
  floats = sum(x.size for x in jax.tree.leaves(state))
  assert floats == m * n + (m + n) * r + r * r + 1 + 1  # + the scale and the step count
  assert floats / (2 * m * n + 2 * (m * m + n * n)) < 0.2


def test_vectors_take_plain_adam_as_optax_computes_it():
  grads = [{"b": normal((6,), i)} for i in range(4)]
  got, _ = run(symoptax.cosmos(LR, b1=0.9, b2=0.99, eps=0.0), grads, {"b": jnp.zeros(6)})
  want, _ = run(optax.adam(LR, b1=0.9, b2=0.99, eps=0.0), grads, {"b": jnp.zeros(6)})
  for u, w in zip(got, want):
    np.testing.assert_allclose(u["b"], w["b"], rtol=1e-5)


def _equivariance(left, right, shape=(16, 8), steps=3):
  tx = symoptax.cosmos(LR, rank=3)
  grads = [normal(shape, i) for i in range(steps)]
  base, _ = run(tx, [{"w": g} for g in grads], {"w": jnp.zeros(shape)})
  moved, _ = run(tx, [{"w": left @ g @ right} for g in grads], {"w": jnp.zeros(shape)})
  return max(float(jnp.linalg.norm(mv["w"] - left @ b["w"] @ right) / jnp.linalg.norm(b["w"]))
             for b, mv in zip(base, moved))


def test_row_permutations_and_column_rotations_and_a_row_rotation_negative_control():
  assert _equivariance(permutation(16, 1), orthogonal(8, 2)) < 1e-4
  assert _equivariance(orthogonal(16, 3), orthogonal(8, 2)) > 1e-1


def test_mu_dtype_sets_the_momentum_dtype():
  params = {"w": jnp.asarray(normal((12, 8), 0), jnp.bfloat16), "b": jnp.ones(8, jnp.bfloat16)}
  grads = jax.tree.map(lambda x: x * 0.5, params)
  for mu_dtype, want in [(None, jnp.bfloat16), (jnp.float32, jnp.float32)]:
    tx = symoptax.cosmos(0.02, rank=2, mu_dtype=mu_dtype)
    u, state = jax.jit(tx.update)(grads, tx.init(params), params)
    assert isinstance(state[0], ScaleByCosmosState)
    assert {x.dtype for x in jax.tree.leaves(state[0].mu)} == {jnp.dtype(want)}
    assert all(x.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
               for x in jax.tree.leaves(u))


@pytest.mark.parametrize("rank", [0, 2.0, True])
def test_rank_must_be_a_positive_int(rank):
  with pytest.raises(ValueError, match="rank must be a positive int"):
    symoptax.cosmos(0.1, rank=rank)


def test_cosmos_trains_the_qwen3_model_as_a_stack_rule():
  from flax import nnx

  from examples.models import qwen3
  from test_variants import train_qwen3

  graphdef, params, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  hidden = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")
  overrides = {r: {"rule": "cosmos", "options": {"rank": 8}} for r in hidden}
  rows = symoptax.describe(params, preset="muon", overrides=overrides).rows
  assert {r["rule"] for r in rows if r["role"] in hidden} == {"cosmos"}
  tx = symoptax.symmetry_stack(0.02, preset="muon", overrides=overrides)
  losses = train_qwen3(tx, graphdef, params, rest, steps=8)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
