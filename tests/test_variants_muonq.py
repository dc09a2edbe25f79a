"""MuonQ (symoptax.variants.muonq): the quantiser against a numpy transcription, the whole step
against a numpy transcription (quantisation round trip included), the kept-apart spike
("directional fidelity"), state bytes, its symmetry group with negative controls, a toy
problem, closeness to fp32 Muon, and the sharded path (8 CPU devices: tests/test_sharding.py
imports the test, so its 8-device subprocess runs it)."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import normal, permutation
from symoptax.variants.muonq import (ScaleByMuonQState, codes_shape, dequantize, muonq, pack,
                                     pack_axis, qmax_of, quantize, scale_by_muonq, unpack)
from test_equivariance import equivariance_error

MU = 255.0
HERE = Path(__file__).resolve().parent


# --- numpy transcriptions --------------------------------------------------------------------

def np_compand(x, mu):
  return x if mu == 0 else np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)


def np_expand(c, mu):
  return c if mu == 0 else np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu


def np_quantize(x, bits, mu):
  qmax = 2 ** (bits - 1) - 1
  c = np_compand(np.clip(x, -1, 1), mu)
  delta = np.abs(c).max() / qmax
  q = np.clip(np.round(c / delta), -qmax, qmax) if delta > 0 else np.zeros_like(c)
  return q, delta


def np_dequantize(q, delta, mu):
  return np_expand(q * delta, mu)


def np_decompose(bn, right, rank):
  """Zero columns started from the rows of that rank in norm; one subspace-iteration step."""
  idx = np.argsort(-np.sum(bn ** 2, axis=1), kind="stable")[:rank]
  right = np.where(np.linalg.norm(right, axis=0) > 0, right, bn[idx].T)
  q = right / np.linalg.norm(right, axis=0, keepdims=True)
  p = np.linalg.qr(bn @ q)[0]
  return p, bn.T @ p


def np_polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


class NumpyMuonQ:
  """One matrix through muonq(lr, weight_decay=wd, method="svd"), in float64."""

  def __init__(self, shape, *, bits, rank, mu, beta, lr, wd):
    m, n = shape
    self.q, self.delta, self.scale = np.zeros(shape), 0.0, 0.0
    self.left, self.right = np.zeros((m, rank)), np.zeros((n, rank))
    self.bits, self.rank, self.mu, self.beta, self.lr, self.wd = bits, rank, mu, beta, lr, wd
    self.shape_factor = math.sqrt(max(1.0, m / n))

  def buffer(self):
    return self.scale * (np_dequantize(self.q, self.delta, self.mu) + self.left @ self.right.T)

  def step(self, g, w):
    buf = self.beta * self.buffer() + g
    update = -self.lr * (self.shape_factor * np_polar(g + self.beta * buf) + self.wd * w)
    bn = buf / np.linalg.norm(buf)
    low = 0.0
    if self.rank:
      self.left, self.right = np_decompose(bn, self.right, self.rank)
      low = self.left @ self.right.T
    self.q, self.delta = np_quantize(bn - low, self.bits, self.mu)
    self.scale = np.linalg.norm(buf) / np.linalg.norm(np_dequantize(self.q, self.delta, self.mu)
                                                      + low)
    return update


def dequantized_buffer(state, key, shape, bits, mu=MU):
  """The buffer a muonq state holds for the 2-D leaf ``key``."""
  axis = pack_axis(shape, bits)
  q = unpack(state.codes[key], axis, bits).astype(jnp.int32) - qmax_of(bits)
  unit = dequantize(q[None], state.delta[key][None], mu)[0]
  if state.left[key] is not None:
    unit = unit + state.left[key].astype(jnp.float32) @ state.right[key].astype(jnp.float32).T
  return np.asarray(state.scale[key] * unit, np.float64)


def core_state(state):
  return next(s for s in state if isinstance(s, ScaleByMuonQState))


def cosine(a, b):
  a, b = np.ravel(a), np.ravel(b)
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --- the quantiser ---------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("mu", [MU, 0.0])
def test_quantizer_matches_numpy_and_stays_within_half_a_step(bits, mu):
  x = np.asarray(normal((1, 40, 24), bits), np.float64)
  x[0, :3] *= 20.0  # a few large rows: the grid's scale is the largest companded entry
  x /= np.linalg.norm(x)
  q, delta = quantize(jnp.asarray(x, jnp.float32), bits, mu)
  q_np, delta_np = np_quantize(x[0], bits, mu)
  assert q.dtype == jnp.int8 and np.abs(np.asarray(q)).max() == qmax_of(bits)
  np.testing.assert_allclose(float(delta[0]), delta_np, rtol=1e-6)
  assert np.mean(np.asarray(q[0]) != q_np) < 2e-3  # float32 vs float64 ties only
  back = np.asarray(dequantize(q, delta, mu)[0], np.float64)
  np.testing.assert_allclose(back, np_dequantize(np.asarray(q[0], np.float64), delta_np, mu),
                             rtol=1e-5, atol=1e-9)
  # Within half a step in the companded domain; in x that is the expansion's slope there.
  err_c = np.abs(np_compand(back, mu) - np_compand(x[0], mu))
  assert err_c.max() <= delta_np / 2 * (1 + 1e-4) + 1e-7
  slope = 1.0 if mu == 0 else np.log1p(mu) / mu * (1 + mu * np.maximum(np.abs(x[0]),
                                                                        np.abs(back)))
  assert np.all(np.abs(back - x[0]) <= delta_np / 2 * slope * (1 + 1e-4) + 1e-7)
  zero_q, zero_delta = quantize(jnp.zeros((2, 3, 4)), bits, mu)
  assert not np.any(np.asarray(zero_q)) and not np.any(np.asarray(zero_delta))


def test_mu_law_beats_a_uniform_grid_on_a_normalised_gaussian_matrix():
  x = normal((1, 256, 256), 0)
  x = x / jnp.linalg.norm(x)
  err = {mu: float(jnp.linalg.norm(dequantize(*quantize(x, 4, mu), mu) - x))
         for mu in (0.0, MU)}
  assert err[MU] < 0.8 * err[0.0], err  # measured 0.129 vs 0.173


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_unpack_round_trip(bits):
  k = 8 // bits
  for shape in ((6, 8), (5, 3, 24), (7, 5)):
    codes = jax.random.randint(jax.random.key(bits), shape, 0, 2 ** bits - 1).astype(jnp.uint8)
    axis = pack_axis(shape, bits)
    packed = pack(codes, axis, bits)
    assert packed.dtype == jnp.uint8 and packed.shape == codes_shape(shape, axis, bits)
    np.testing.assert_array_equal(unpack(packed, axis, bits), codes)
    expected = math.prod(shape) // k if axis is not None else math.prod(shape)
    assert packed.size == expected
  assert pack_axis((6, 8), 4) == 1 and pack_axis((6, 7), 4) == 0 and pack_axis((7, 5), 4) is None
  assert pack_axis((8, 8), 4, (1, 8)) == 0  # 8 shards of 8 columns: one entry each, pack rows


# --- the step --------------------------------------------------------------------------------

@pytest.mark.parametrize("bits,rank,mu", [(4, 2, MU), (4, 0, MU), (3, 3, 0.0), (8, 1, MU)])
def test_updates_and_state_match_a_numpy_transcription(bits, rank, mu):
  shape, beta, lr, wd = (16, 8), 0.9, 0.1, 0.5
  w = np.asarray(normal(shape, 0), np.float64)
  tx = muonq(lr, bits=bits, rank=rank, mu_law=mu, beta=beta, weight_decay=wd, method="svd")
  ref = NumpyMuonQ(shape, bits=bits, rank=rank, mu=mu, beta=beta, lr=lr, wd=wd)
  wj = {"w": jnp.asarray(w, jnp.float32)}
  state = tx.init(wj)
  for t in range(1, 4):
    g = np.asarray(normal(shape, t), np.float64)
    u, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, wj)
    np.testing.assert_allclose(u["w"], ref.step(g, w), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(dequantized_buffer(core_state(state), "w", shape, bits, mu),
                               ref.buffer(), rtol=1e-4, atol=1e-5)


def test_first_step_is_muons_and_vectors_get_muons_momentum():
  params = {"w": jnp.zeros((24, 10)), "b": jnp.zeros(5)}
  tx, ref = muonq(0.1, method="svd"), symoptax.muon(0.1, method="svd")
  s, r = tx.init(params), ref.init(params)
  for t in range(3):
    g = {"w": normal((24, 10), t), "b": normal((5,), 10 + t)}
    u, s = tx.update(g, s, params)
    v, r = ref.update(g, r, params)
    if t == 0:
      np.testing.assert_allclose(u["w"], v["w"], atol=1e-6)
    np.testing.assert_allclose(u["b"], v["b"], atol=1e-6)


def test_a_planted_spike_is_kept_exactly():
  # Directional fidelity: the power iteration's rank-1 part holds the spike in full precision;
  # only the residual is quantised. Without it (rank=0) the spike sets the grid's scale and
  # everything else is crushed onto a few levels.
  m, n = 64, 32
  rng = np.random.default_rng(0)
  u, v = rng.standard_normal(m), rng.standard_normal(n)
  spike = np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
  noise = 10 * rng.standard_normal((m, n)) / np.sqrt(m * n)
  err = {}
  for rank in (0, 1, 4):
    tx = scale_by_muonq(0.9, rank=rank, method="svd")
    for name, g in (("pure", 100 * spike), ("noisy", 100 * spike + noise)):
      _, st = tx.update({"w": jnp.asarray(g, jnp.float32)}, tx.init({"w": jnp.zeros((m, n))}))
      b = dequantized_buffer(st, "w", (m, n), 4)
      coef, true = np.sum(b * spike), np.sum(g * spike)
      rest = np.linalg.norm((b - coef * spike) - (g - true * spike))
      err[name, rank] = (abs(coef / true - 1), rest / max(np.linalg.norm(g - true * spike), 1))
  for rank in (1, 4):
    assert err["pure", rank][0] < 1e-6 and err["pure", rank][1] < 1e-4  # exact (fp32)
    assert err["noisy", rank][0] < 5e-4 and err["noisy", rank][1] < 0.15
  assert err["pure", 0][0] > 5e-3 and err["noisy", 0][0] > 5e-3  # measured 1.3e-2
  assert err["noisy", 0][1] > 1.0  # measured 1.6: the noise is lost


def test_dependent_columns_are_dropped_then_reseeded():
  # A rank-1 buffer has one direction to track: the other columns come out zero (not
  # normalised rounding noise); a full-rank gradient next step re-seeds them from its rows.
  tx = scale_by_muonq(0.9, rank=4, method="svd")
  p = {"w": jnp.zeros((24, 10))}
  u, v = normal((24, 1), 0), normal((1, 10), 1)
  _, st = tx.update({"w": 5.0 * u @ v}, tx.init(p))
  gram = np.asarray(st.left["w"].T @ st.left["w"])
  np.testing.assert_allclose(gram, np.diag([1.0, 0.0, 0.0, 0.0]), atol=1e-5)
  _, st = tx.update({"w": normal((24, 10), 2)}, st)
  np.testing.assert_allclose(np.asarray(st.left["w"].T @ st.left["w"]), np.eye(4), atol=1e-5)


def test_decomposition_tracks_a_spike_across_steps_better_than_none():
  m, n = 64, 32
  rng = np.random.default_rng(1)
  u, v = rng.standard_normal(m), rng.standard_normal(n)
  spike = 30 * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
  ref = symoptax.muon(1.0, method="svd")
  worst = {}
  for rank in (0, 4):
    tx = muonq(1.0, rank=rank, method="svd")
    p = {"w": jnp.zeros((m, n))}
    s, r, cs = tx.init(p), ref.init(p), []
    for t in range(10):
      g = {"w": jnp.asarray(spike + rng.standard_normal((m, n)), jnp.float32)}
      a, s = tx.update(g, s, p)
      b, r = ref.update(g, r, p)
      cs.append(cosine(a["w"], b["w"]))
    worst[rank] = min(cs)
  assert worst[4] > 0.98 and worst[4] > worst[0] + 0.02, worst


# --- memory ----------------------------------------------------------------------------------

def state_bytes(tx, params):
  return sum(x.nbytes for x in jax.tree.leaves(tx.init(params)))


@pytest.mark.parametrize("shape", [(256, 256), (512, 512), (256, 1024)])
def test_state_is_at_most_a_sixth_of_muons(shape):
  params = {"w": jnp.zeros(shape)}
  ours, muon = state_bytes(muonq(0.1), params), state_bytes(symoptax.muon(0.1), params)
  assert ours <= muon / 6, (ours, muon)
  m, n = shape
  assert ours == m * n // 2 + 2 * 4 + (m + n) * 4 * 4  # codes, two scalars, rank-4 factors
  # bf16 factors (mu_dtype) halve the factors' share; 8 bits take a byte a code.
  assert state_bytes(muonq(0.1, mu_dtype=jnp.bfloat16), params) == m * n // 2 + 8 + (m + n) * 8
  assert state_bytes(muonq(0.1, bits=8, rank=0), params) == m * n + 8


# --- symmetry --------------------------------------------------------------------------------

def signed_permutation(n, seed):
  signs = np.where(np.random.default_rng(seed).random(n) < 0.5, -1.0, 1.0)
  return permutation(n, seed) * jnp.asarray(signs, jnp.float32)


def signed_permutation_error(tx, shape, seed=0, steps=3):
  m, n = shape
  left, right = signed_permutation(m, seed), signed_permutation(n, seed + 100).T
  w = normal(shape, seed + 1)
  s1, s2 = tx.init({"w": w}), tx.init({"w": left @ w @ right})
  worst = 0.0
  for t in range(steps):
    g = normal(shape, seed + 2 + t)
    u1, s1 = tx.update({"w": g}, s1, {"w": w})
    u2, s2 = tx.update({"w": left @ g @ right}, s2, {"w": left @ w @ right})
    expected = left @ u1["w"] @ right
    worst = max(worst, float(jnp.linalg.norm(u2["w"] - expected) / jnp.linalg.norm(expected)))
  return worst


@pytest.mark.parametrize("shape", [(24, 10), (10, 24)])
def test_symmetry_is_signed_permutations_and_not_rotations(shape):
  tx = muonq(0.1, weight_decay=0.1)  # stateless object: one instance, compiled once
  assert equivariance_error(tx, "perm", shape) < 1e-4
  for seed in (0, 1):
    assert signed_permutation_error(tx, shape, seed) < 1e-4
  # Negative controls: a grid of entries is no grid after a rotation on either side.
  assert equivariance_error(tx, "biorth", shape) > 1e-2
  assert equivariance_error(tx, "lpro", shape) > 1e-2
  assert equivariance_error(tx, "rplo", shape) > 1e-2
  # ... while fp32 Muon with the same settings is bi-orthogonal in the same harness.
  assert equivariance_error(symoptax.muon(0.1, weight_decay=0.1), "biorth", shape) < 1e-4


# --- training --------------------------------------------------------------------------------

def test_toy_problem_converges():
  from test_harness import assert_solves_toy

  assert_solves_toy(muonq, 0.1)


def test_updates_stay_close_to_fp32_muon_on_random_gradients():
  # The quality proxy: same gradients, both trajectories; the carried 4-bit buffer drifts
  # from Muon's by its quantisation error (measured min cosine 0.976 over these 10 steps;
  # 0.93-0.96 after 40 steps, the noise's steady state; 8 bits: > 0.9999).
  shape = (128, 64)
  params = {"w": jnp.zeros(shape)}
  ref = symoptax.muon(1.0, method="svd")
  for bits, floor in ((4, 0.95), (8, 0.999)):
    tx = muonq(1.0, bits=bits, method="svd")
    s, r = tx.init(params), ref.init(params)
    step = jax.jit(tx.update)
    for t in range(10):
      g = {"w": normal(shape, 50 + t)}
      a, s = step(g, s, params)
      b, r = ref.update(g, r, params)
      assert cosine(a["w"], b["w"]) > floor, (bits, t)


def test_stacked_leaves_dtypes_abstract_init_and_inject_hyperparams():
  params = {"w": normal((12, 8), 0), "stack": normal((3, 8, 6), 1), "b": jnp.ones(4)}
  axes = {"w": symoptax.MatrixAxes(0, 1), "stack": symoptax.MatrixAxes(1, 2), "b": None}
  grads = [jax.tree.map(lambda p, i=i: normal(p.shape, 10 + i), params) for i in range(2)]
  tx = muonq(0.1, axes=axes)
  state, first = tx.init(params), None
  for g in grads:
    u, state = tx.update(g, state, params)
    first = u if first is None else first
  # A stacked leaf is a batch of separate matrices: the same as each matrix on its own.
  one = muonq(0.1)
  so = one.init({"w": params["stack"][1]})
  for g in grads:
    uo, so = one.update({"w": g["stack"][1]}, so, {"w": params["stack"][1]})
  np.testing.assert_allclose(u["stack"][1], uo["w"], atol=1e-5)
  # Abstract init; bf16 parameters: bf16 updates and factors, unless mu_dtype says otherwise.
  shapes = lambda tree, dtype=None: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype), tree)
  abstract = jax.eval_shape(tx.init, shapes(params))
  assert jax.tree.structure(abstract) == jax.tree.structure(state)
  for mu_dtype, factor in ((None, jnp.bfloat16), (jnp.float32, jnp.float32)):
    t = muonq(0.1, axes=axes, mu_dtype=mu_dtype)
    bf = shapes(params, jnp.bfloat16)
    u_bf, st = jax.eval_shape(t.update, bf, t.init(bf), bf)
    assert u_bf["w"].dtype == u_bf["stack"].dtype == jnp.bfloat16
    core = core_state(st)
    assert core.left["w"].dtype == factor and core.mu["b"].dtype == factor
    assert core.codes["w"].dtype == jnp.uint8 and core.scale["w"].dtype == jnp.float32
  static = ("bits", "rank", "power_iters", "mu_law")
  injected = optax.inject_hyperparams(muonq, static_args=static)(learning_rate=0.1, axes=axes)
  u, _ = injected.update(grads[0], injected.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), u, first)


def test_argument_checks_and_zero_gradients():
  for kw, match in ((dict(bits=1), "bits"), (dict(bits=9), "bits"), (dict(bits=4.0), "bits"),
                    (dict(rank=-1), "rank"), (dict(power_iters=0), "power_iters"),
                    (dict(mu_law=-1.0), "mu_law"), (dict(method="eigh"), "eigh")):
    with pytest.raises(ValueError, match=match):
      muonq(0.1, **kw)
  tx = muonq(0.1)
  p = {"w": jnp.zeros((8, 6))}
  s = tx.init(p)
  for g in (jnp.zeros((8, 6)), normal((8, 6), 0), jnp.zeros((8, 6))):
    u, s = tx.update({"w": g}, s, p)
    assert np.isfinite(np.asarray(u["w"])).all()
    assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in jax.tree.leaves(s))


# --- sharded ---------------------------------------------------------------------------------

MANY = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (run by "
                          "tests/test_sharding.py's 8-device subprocess, which imports it)")


def test_sharded_path_on_one_device_equals_unsharded():
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

  mesh = jax.make_mesh((1,), ("fsdp",), axis_types=(AxisType.Auto,))
  params = {"w": normal((16, 8), 0), "b": jnp.ones(8)}
  shardings = {"w": NamedSharding(mesh, P("fsdp")), "b": NamedSharding(mesh, P())}
  grads = [jax.tree.map(lambda p, i=i: normal(p.shape, 10 + i), params) for i in range(3)]
  a, b = muonq(0.1), muonq(0.1, shardings=shardings)
  sa, sb = a.init(params), b.init(params)
  for g in grads:
    ua, sa = a.update(g, sa, params)
    ub, sb = jax.jit(b.update)(g, sb, params)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-5), ua, ub)


def shard_counts(sharding, ndim):
  dims = list(sharding.spec) + [None] * (ndim - len(sharding.spec))
  names = lambda d: () if d is None else ((d,) if isinstance(d, str) else tuple(d))
  return tuple(math.prod(sharding.mesh.shape[n] for n in names(d)) for d in dims)


def relaid(state, params, shardings, to_sharded):
  """A muonq state's codes moved between the single-device and the sharded packing axes."""
  core = core_state(state)
  codes = dict(core.codes)
  for k, c in core.codes.items():
    if c is None:
      continue
    shape = params[k].shape
    here, there = pack_axis(shape, 4), pack_axis(shape, 4, shard_counts(shardings[k],
                                                                         len(shape)))
    if not to_sharded:
      here, there = there, here
    codes[k] = pack(unpack(c, here, 4), there, 4)
  return tuple(s._replace(codes=codes) if isinstance(s, ScaleByMuonQState) else s
               for s in state)


@MANY
@pytest.mark.parametrize("mesh_name", ["fsdp4_tp2", "cube"])  # rows, cols, both, two axes
def test_sharded_step_equals_single_device_and_state_keeps_its_shardings(mesh_name):
  from jax.sharding import NamedSharding

  from test_sharding import case  # leaves with rows, cols, both and stacks sharded

  mesh, params, axes, shardings = case(mesh_name)
  grads = [jax.tree.map(lambda p, i=i: normal(p.shape, 100 + i) + 0.5 * p, params)
           for i in range(3)]
  ref, tx = muonq(0.1, axes=axes), muonq(0.1, axes=axes, shardings=shardings)
  put = lambda t: jax.device_put(t, shardings)
  rs = ref.init(params)
  ss = jax.jit(tx.init)(put(params))
  step = jax.jit(tx.update)
  for i, g in enumerate(grads):
    # From the same incoming state (the single-device one), the step agrees to fp32 rounding.
    u_ref, rs_next = ref.update(g, rs, params)
    u, ss = step(put(g), relaid(rs, params, shardings, True) if i else ss, put(params))
    for k in params:
      err = float(jnp.linalg.norm(u[k] - u_ref[k]) / jnp.maximum(jnp.linalg.norm(u_ref[k]),
                                                                   1e-30))
      assert err < 1e-5, (mesh_name, k, i, err)
      assert u[k].sharding.is_equivalent_to(shardings[k], u[k].ndim), (k, u[k].sharding)
    a, b = core_state(rs_next), core_state(relaid(ss, params, shardings, False))
    for k, ax in axes.items():
      if ax is None:
        continue
      # Codes: the same but for the rare entry on a rounding boundary (psums reorder sums).
      qa = np.asarray(unpack(a.codes[k], pack_axis(params[k].shape, 4), 4))
      qb = np.asarray(unpack(b.codes[k], pack_axis(params[k].shape, 4), 4))
      assert np.mean(qa != qb) < 1e-2, (k, np.mean(qa != qb))
      np.testing.assert_allclose(a.scale[k], b.scale[k], rtol=1e-4)
      # The sharded codes shard as the parameter does (packed along a divisible axis).
      c = core_state(ss).codes[k]
      assert c.sharding.is_equivalent_to(NamedSharding(mesh, shardings[k].spec), c.ndim), k
    rs = rs_next



def test_multisteps_applies_the_mean_gradient():
  params = {"w": normal((12, 6), 0), "b": jnp.ones(6)}
  g0, g1 = ({k: normal(v.shape, 10 + t) for k, v in params.items()} for t in range(2))
  multi = optax.MultiSteps(muonq(0.05), every_k_schedule=2)
  state = multi.init(params)
  first, state = multi.update(g0, state, params)
  assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(first))
  second, _ = multi.update(g1, state, params)
  inner = muonq(0.05)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, g0, g1)
  want, _ = inner.update(mean, inner.init(params), params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), second, want)
