"""Conda (symoptax.conda, scale_by_conda): a numpy transcription of the reference, its
symmetry class with a negative control, plain Adam on vectors (parity with optax), the basis
refresh schedule, mu_dtype, and the sharded state (8 devices: tests/test_sharding.py imports
the test, so its 8-device subprocess runs it)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import max_rel_error, normal, orthogonal, permutation
from helpers import run_jitted as run
from symoptax.variants.conda import ScaleByCondaState

B1, B2, EPS, GAP, SCALE, LR = 0.9, 0.99, 1e-8, 3, 0.25, 0.1


def reference(grads, params=None, weight_decay=0.0):
  """The reference's step (conda_torch/conda.py with projector.py, proj_type "std") in
  float64, as the updates it adds to the parameters (its decay on the parameters before the
  step, as optax decays them)."""
  m, v, ortho, outs = np.zeros_like(grads[0]), None, None, []
  for step, g in enumerate(grads):
    m = B1 * m + (1 - B1) * g
    tall = g.shape[0] >= g.shape[1]
    if ortho is None or step % GAP == 0:
      u, _, vh = np.linalg.svd(m, full_matrices=False)
      ortho = vh if tall else u
    proj = (lambda x: x @ ortho.T) if tall else (lambda x: ortho.T @ x)
    back = (lambda x: x @ ortho) if tall else (lambda x: ortho @ x)
    gt = proj(g)
    v = (1 - B2) * gt * gt if v is None else B2 * v + (1 - B2) * gt * gt
    t = step + 1
    size = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
    out = -size * SCALE * back(proj(m) / (np.sqrt(v) + EPS))
    if weight_decay:
      out = out - LR * weight_decay * params
    outs.append(out)
  return outs


@pytest.mark.parametrize("shape", [(24, 8), (8, 24), (16, 16)], ids=["tall", "wide", "square"])
def test_matches_a_transcription_of_the_reference(shape):
  grads = [np.asarray(normal(shape, i), np.float64) for i in range(7)]
  w = np.asarray(normal(shape, 50), np.float64)
  for wd in (0.0, 0.05):
    tx = symoptax.conda(LR, b1=B1, b2=B2, eps=EPS, update_proj_gap=GAP, scale=SCALE,
                        weight_decay=wd)
    got, _ = run(tx, [{"w": jnp.asarray(g, jnp.float32)} for g in grads],
                 {"w": jnp.asarray(w, jnp.float32)})
    for step, (u, want) in enumerate(zip(got, reference(grads, w, wd))):
      err = max_rel_error(u["w"], want)
      assert err < 2e-4, (shape, wd, step, err)


def test_vectors_take_plain_adam_as_optax_computes_it():
  """Leaves without axes: Adam with the same coefficients and no scale (eps 0 on both
  sides: the reference adds eps to sqrt(v) before bias correction, optax after)."""
  grads = [{"b": normal((6,), i)} for i in range(4)]
  got, _ = run(symoptax.conda(LR, b1=B1, b2=B2, eps=0.0), grads, {"b": jnp.zeros(6)})
  want, _ = run(optax.adam(LR, b1=B1, b2=B2, eps=0.0), grads, {"b": jnp.zeros(6)})
  for u, w in zip(got, want):
    np.testing.assert_allclose(u["b"], w["b"], rtol=1e-5)


def test_the_basis_refreshes_every_gap_steps_and_is_orthogonal():
  grads = [{"w": normal((20, 6), i)} for i in range(7)]
  _, states = run(symoptax.conda(LR, update_proj_gap=GAP), grads, {"w": jnp.zeros((20, 6))})
  bases = [np.asarray(s[0].basis["w"]) for s in states]
  for step, basis in enumerate(bases):
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-5)
    changed = not np.allclose(basis, bases[step - 1]) if step else True
    assert changed == (step % GAP == 0), step
  # At a refresh, the basis is the momentum's right singular vectors (up to sign), in order.
  m = np.asarray(states[3][0].mu["w"], np.float64)
  _, _, vh = np.linalg.svd(m, full_matrices=False)
  np.testing.assert_allclose(np.abs(vh @ bases[3]), np.eye(6), atol=1e-4)


def _equivariance(shape, left, right, steps=4):
  """Max relative error of the updates of left @ G @ right against left @ u(G) @ right."""
  tx = symoptax.conda(LR, update_proj_gap=2)
  grads = [normal(shape, i) for i in range(steps)]
  base, _ = run(tx, [{"w": g} for g in grads], {"w": jnp.zeros(shape)})
  moved, _ = run(tx, [{"w": left @ g @ right} for g in grads], {"w": jnp.zeros(shape)})
  return max(float(jnp.linalg.norm(mv["w"] - left @ b["w"] @ right)
                   / jnp.linalg.norm(b["w"])) for b, mv in zip(base, moved))


@pytest.mark.parametrize("shape", [(24, 8), (8, 24)], ids=["tall", "wide"])
def test_permutations_on_the_long_side_and_rotations_on_the_short_side(shape):
  """Tall: row permutations x column rotations; wide: its mirror. Negative control: a
  rotation of the long side (Adam's normalisation is elementwise there)."""
  long, short = max(shape), min(shape)
  perm = jnp.asarray(permutation(long, 1), jnp.float32)
  rot_short, rot_long = orthogonal(short, 2), orthogonal(long, 3)
  if shape[0] >= shape[1]:
    good, bad = (perm, rot_short), (rot_long, rot_short)
  else:
    good, bad = (rot_short, perm), (rot_short, rot_long)
  assert _equivariance(shape, *good) < 1e-4
  assert _equivariance(shape, *bad) > 1e-1


def test_mu_dtype_sets_the_momentum_dtype_and_the_second_moment_stays_float32():
  params = {"w": jnp.asarray(normal((12, 8), 0), jnp.bfloat16), "b": jnp.ones(8, jnp.bfloat16)}
  grads = jax.tree.map(lambda x: x * 0.5, params)
  for mu_dtype, want in [(None, jnp.bfloat16), (jnp.float32, jnp.float32)]:
    tx = symoptax.conda(0.02, mu_dtype=mu_dtype)
    u, state = jax.jit(tx.update)(grads, tx.init(params), params)
    inner = state[0]
    assert isinstance(inner, ScaleByCondaState)
    assert {x.dtype for x in jax.tree.leaves(inner.mu)} == {jnp.dtype(want)}
    assert {x.dtype for x in jax.tree.leaves(inner.nu)} == {jnp.dtype(jnp.float32)}
    assert all(x.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
               for x in jax.tree.leaves(u))


def test_none_leaves_pass_through():
  params = {"w": jnp.zeros((6, 4)), "b": jnp.zeros(4), "n": None}
  grads = {"w": normal((6, 4), 1), "b": normal((4,), 2), "n": None}
  tx = symoptax.conda(0.1)
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert u["n"] is None and np.isfinite(np.asarray(u["w"])).all()


@pytest.mark.parametrize("gap", [0, -1, 2.0, True])
def test_update_proj_gap_must_be_a_positive_int(gap):
  with pytest.raises(ValueError, match="update_proj_gap must be a positive int"):
    symoptax.conda(0.1, update_proj_gap=gap)


MANY = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (run by "
                          "tests/test_sharding.py's 8-device subprocess, which imports it)")


@MANY
@pytest.mark.parametrize("mesh_name", ["fsdp4_tp2", "cube"])
def test_sharded_state_keeps_the_parameters_shardings_and_a_replicated_basis(mesh_name):
  """The second moment shards as its parameter; the basis is whole on every device of a
  matrix (sharded only along stacked axes); the update equals the single-device one
  (test_sharding's table checks three steps on every leaf)."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from test_sharding import case

  mesh, params, axes, shardings = case(mesh_name)
  tx = symoptax.conda(0.1, update_proj_gap=2, axes=axes, shardings=shardings)
  put = lambda t: jax.device_put(t, shardings)
  grads = jax.tree.map(lambda p: normal(p.shape, 7) + 0.5 * p, params)
  _, state = jax.jit(tx.update)(put(grads), jax.jit(tx.init)(put(params)), put(params))
  inner = next(s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(
      x, ScaleByCondaState)) if isinstance(s, ScaleByCondaState))
  for k, ax in axes.items():
    nu = inner.nu[k]
    assert nu.sharding.is_equivalent_to(shardings[k], nu.ndim), (k, nu.sharding)
    if ax is None:
      continue
    basis = inner.basis[k]
    stacked = shardings[k].spec[0] if params[k].ndim == 3 and len(shardings[k].spec) else None
    want = NamedSharding(mesh, P(*([stacked] if params[k].ndim == 3 else []), None, None))
    assert basis.sharding.is_equivalent_to(want, basis.ndim), (k, basis.sharding)


def test_conda_trains_the_qwen3_model_as_a_stack_rule():
  """Conda as the rule of the hidden matrices and of the vocabulary matrices (whose short
  side is d: permutations of the vocabulary, rotations of d) in one symmetry_stack."""
  from flax import nnx

  from examples.models import qwen3
  from test_variants import train_qwen3

  graphdef, params, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  roles = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out", "embedding", "lm_head")
  overrides = {r: {"rule": "conda", "options": {"update_proj_gap": 4}} for r in roles}
  rows = symoptax.describe(params, preset="muon", overrides=overrides).rows
  assert {r["rule"] for r in rows if r["role"] in roles} == {"conda"}
  tx = symoptax.symmetry_stack(0.02, preset="muon", overrides=overrides)
  losses = train_qwen3(tx, graphdef, params, rest, steps=8)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
