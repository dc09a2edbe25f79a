"""The "layer_aware" and "randomized" polar oracles: agreement with an exact SVD reference,
the claims their docstrings make, equivariance (with negative controls) and cost."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import log_spectrum, normal, orthogonal, with_spectrum

import symoptax
from symoptax import polar as P

# Jitted once per static configuration and shape: eager dispatch would compile every op.
polar = jax.jit(P.polar, static_argnames=("method", "steps", "side", "compute_dtype",
                                          "damping", "rank", "oversampling", "quantile"))
layer_aware_steps = jax.jit(P.layer_aware_steps, static_argnames=("quantile", "steps"))


def svd_polar(x, tol=1e-6):
  """The partial isometry U_r V_r^T over singular values >= tol sigma_max (float64)."""
  u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  keep = s >= tol * s[0]
  return (u[:, keep]) @ vt[keep]


def sigma_errors(x, out):
  """|sigma_out - 1| along every singular direction of x (the output's diagonal in x's SVD
  basis), ordered from the largest singular value of x to the smallest."""
  u, _, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  return np.abs(np.einsum("ij,ik,kj->j", u, np.asarray(out, np.float64), vt.T) - 1)


def spectral_norm(x):
  return float(np.linalg.norm(np.asarray(x, np.float64), 2))


# ----------------------------------------------------------------------------- layer_aware


def test_minimax_quintic_equioscillates_and_schedules_reach_the_tolerance():
  (a, b, c), err = P.minimax_quintic(1e-3, 1.0)
  grid = np.linspace(1e-3, 1.0, 200001)
  p = a * grid + b * grid**3 + c * grid**5
  assert abs(np.abs(1 - p).max() - err) < 1e-9  # E is the true max error: optimal (Remez)
  assert 0.99 < err < 0.995 and 8 < a < 9  # near Polar Express's first step (8.16, ...)
  for floor, schedule in zip(P.LAYER_AWARE_FLOORS, P.layer_aware_schedules()):
    s = np.concatenate([np.linspace(0, floor, 2001), np.geomspace(floor, 1.0, 4001)])
    for a, b, c in schedule:
      s = a * s + b * s**3 + c * s**5
    above = s[2001:]
    assert np.abs(above - 1).max() <= P.LAYER_AWARE_TOL, floor  # [floor, 1] -> 1 +- tol
    assert np.all(np.diff(s[:2001]) >= 0) and s.max() <= 1 + P.LAYER_AWARE_TOL  # bounded
  counts = [len(s) for s in P.layer_aware_schedules()]
  assert counts == sorted(counts) and counts[0] == 2 and counts[-1] == 13


@pytest.mark.parametrize("shape", [(128, 32), (32, 48)])
def test_quantile_estimate_matches_log_spaced_spectra(shape):
  conds = [1.0, 1e2, 1e4]
  x = jnp.stack([with_spectrum(*shape, log_spectrum(min(shape), c), seed=1) for c in conds])
  y = x if shape[0] <= shape[1] else jnp.swapaxes(x, -1, -2)
  y = y / jnp.linalg.norm(y, axis=(-2, -1), keepdims=True)
  gram = y @ jnp.swapaxes(y, -1, -2)
  est, med = jax.jit(lambda g: (P.quantile_estimate(g), P.quantile_estimate(g, 0.5)))(gram)
  for i in range(len(conds)):
    s = np.linalg.svd(np.asarray(x[i], np.float64), compute_uv=False)
    s = s / np.linalg.norm(s)
    assert abs(float(est[i]) / s[-1] - 1) < 0.2, (est[i], s[-1])  # few log-uniform points
    # The median: the log-uniform model's 0.5 quantile.
    assert abs(float(med[i]) / np.median(s) - 1) < 0.2, (med[i], np.median(s))


def test_layer_aware_beats_polar_express_with_fewer_steps_on_average():
  # "Spectral Scaling Laws of Muon": most layers' spectra stay mild, a few late layers'
  # get hard; a per-layer step count saves steps on the former and orthonormalises the
  # latter. On such a mix layer_aware averages no more steps than Polar Express's fixed 5
  # and is more accurate on every matrix, by far on the ill-conditioned ones. (On a mix
  # spread evenly over cond 1..1e4, [1, 3, 10, 1e2, 1e3, 1e4], it takes 5.33 on average.)
  conds = [1.0, 1.0, 3.0, 1e1, 1e2, 1e3, 1e4]
  x = jnp.stack([with_spectrum(128, 32, log_spectrum(32, c), seed=2) for c in conds])
  steps = np.asarray(layer_aware_steps(x))
  la = polar(x, method="layer_aware")
  pe = polar(x, method="polar_express")
  assert steps.mean() <= 5 + 1e-9, steps
  assert steps[0] < 5 and steps[-1] > 5, steps  # fewer on easy, more on hard matrices
  for i, cond in enumerate(conds):
    e_la, e_pe = sigma_errors(x[i], la[i]).max(), sigma_errors(x[i], pe[i]).max()
    assert e_la <= 1.1 * P.LAYER_AWARE_TOL and e_la < e_pe, (cond, e_la, e_pe)
    if cond >= 1e3:
      assert e_pe > 0.4 and e_la < 1e-3, (cond, e_la, e_pe)
  np.testing.assert_allclose(la[-1], svd_polar(x[-1]), atol=1e-3)


def test_layer_aware_is_bi_orthogonally_equivariant_with_negative_control():
  m, n = 40, 24
  x = with_spectrum(m, n, log_spectrum(n, 1e3), seed=3)
  u, v = orthogonal(m, 4), orthogonal(n, 5)
  out = polar(x, method="layer_aware")
  rotated = polar(u @ x @ v.T, method="layer_aware")
  assert float(jnp.abs(rotated - u @ out @ v.T).max()) < 1e-4
  # The estimate is a function of traces only: exactly invariant. A coordinate-dependent
  # statistic of the same Gram (its diagonal's spread) moves under the same rotation, so
  # the check can fail: it would if the estimate read the Gram's entries.
  y = x.T / jnp.linalg.norm(x)
  yr = (v @ x.T @ u.T) / jnp.linalg.norm(x)
  g, gr = y @ y.T, yr @ yr.T
  est, est_r = P.quantile_estimate(g), P.quantile_estimate(gr)
  assert abs(float(est_r / est) - 1) < 1e-4
  assert abs(float(gr[0, 0] / g[0, 0]) - 1) > 0.1
  # Row scaling is not an orthogonal map: the output is not D polar(x).
  d = jnp.diag(jnp.linspace(0.5, 2.0, m))
  assert float(jnp.abs(polar(d @ x, method="layer_aware") - d @ out).max()) > 0.1


def test_layer_aware_batch_mixes_schedules_without_coupling():
  easy = with_spectrum(64, 16, log_spectrum(16, 1.0), seed=6)
  hard = with_spectrum(64, 16, log_spectrum(16, 1e4), seed=7)
  x = jnp.stack([jnp.stack([easy, hard]), jnp.stack([hard, easy])])  # [2, 2, 64, 16]
  steps = np.asarray(layer_aware_steps(x))
  assert steps[0, 0] < steps[0, 1] and steps[0, 0] == steps[1, 1]
  out = polar(x, method="layer_aware")
  # Identity padding steps are exact: a matrix's result is the same alone or in any batch.
  np.testing.assert_allclose(out[0, 0], polar(easy, method="layer_aware"), atol=1e-6)
  np.testing.assert_array_equal(out[0, 1], out[1, 0])
  np.testing.assert_allclose(out[0, 1], svd_polar(hard), atol=2e-3)


def test_layer_aware_quantile_and_step_cap():
  x = with_spectrum(96, 32, log_spectrum(32, 1e4), seed=8)
  n0 = int(layer_aware_steps(x))
  n_half = int(layer_aware_steps(x, quantile=0.5))
  assert n_half < n0
  # With q = 0.5 the directions above the median still converge; the rest grow towards 1.
  err = sigma_errors(x, polar(x, method="layer_aware", quantile=0.5))
  assert err[:16].max() < 2e-2 and err.max() < 1.0
  capped = polar(x, method="layer_aware", steps=5)
  assert int(layer_aware_steps(x, steps=5)) == 5
  assert sigma_errors(x, capped).max() > 0.1 and spectral_norm(capped) <= 1.05
  with pytest.raises(ValueError, match="steps must be >= 2"):
    polar(x, method="layer_aware", steps=1)
  with pytest.raises(ValueError, match="quantile must be in \\[0, 1\\)"):
    polar(x, method="layer_aware", quantile=1.0)
  with pytest.raises(ValueError, match="applies to method 'layer_aware' only"):
    polar(x, method="polar_express", quantile=0.1)


# ------------------------------------------------------------------------------ randomized


@pytest.mark.parametrize("shape", [(96, 40), (40, 96)])
def test_randomized_is_exact_for_inputs_within_its_rank(shape):
  rank = 6
  for r in (1, rank, rank + 4):  # rank + oversampling >= rank(x): the sketch spans range(x)
    x = with_spectrum(*shape, np.logspace(0, -2, r), seed=r)
    out = polar(x, method="randomized", rank=rank, oversampling=4)
    np.testing.assert_allclose(out, svd_polar(x), atol=1e-4)
  # Batched [B, m, n]: one sketch for every matrix, so a slice alone gives the same result.
  xb = jnp.stack([with_spectrum(*shape, np.ones(3), seed=s) for s in (10, 11, 12)])
  ob = polar(xb, method="randomized", rank=3)
  for i in range(3):
    np.testing.assert_allclose(ob[i], svd_polar(xb[i]), atol=1e-4)
    np.testing.assert_allclose(ob[i], polar(xb[i], method="randomized", rank=3), atol=1e-6)


def test_randomized_default_rank_is_the_exact_polar_factor():
  x = with_spectrum(64, 24, log_spectrum(24, 1e2), seed=13)
  np.testing.assert_allclose(polar(x, method="randomized"), svd_polar(x), atol=1e-4)


def test_randomized_error_decreases_with_rank_on_a_decaying_spectrum():
  # sigma_i = 0.7^i: the sketch of rank r captures the top ~r directions.
  x = with_spectrum(128, 64, 0.7 ** np.arange(64), seed=14)
  ref = svd_polar(x)
  errs = []
  for rank in (2, 4, 8, 16):
    out = polar(x, method="randomized", rank=rank, oversampling=4)
    errs.append(float(np.linalg.norm(np.asarray(out, np.float64) - ref)))
    top = sigma_errors(x, out)[:rank // 2]
    assert top.max() < 0.02, (rank, top.max())  # the leading directions are orthonormalised
    sig = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
    assert rank <= np.sum(sig > 0.5) <= rank + 4 and sig.max() < 1 + 1e-5  # partial isometry
  assert all(a > b for a, b in itertools.pairwise(errs)), errs


def test_randomized_costs_no_m_n_n_product():
  m, n, rank, over = 512, 256, 8, 8
  s = rank + over
  jaxpr = jax.make_jaxpr(lambda a: P.polar(a, method="randomized", rank=rank,
                                           oversampling=over))(jnp.ones((m, n)))
  flops = []
  for eqn in jaxpr.jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      out = eqn.outvars[0].aval.shape
      flops.append(np.prod(out) * np.prod([lhs[d] for d in contract]))
    if eqn.primitive.name in ("svd", "qr", "householder_product", "geqrf", "eigh"):
      assert min(eqn.invars[0].aval.shape[-2:]) <= s, eqn
  assert flops and max(flops) <= m * n * s  # X Omega, Q^T X, Q (U V^T): all m x n x s
  assert len(flops) <= 6


def test_randomized_is_left_equivariant_and_right_only_within_its_rank():
  m, n = 48, 32
  u, v = orthogonal(m, 15), orthogonal(n, 16)
  x = with_spectrum(m, n, log_spectrum(n, 10.0), seed=17)  # full rank 32 > sketch 12
  f = lambda a: polar(a, method="randomized", rank=8, oversampling=4)
  out = f(x)
  assert float(jnp.abs(f(u @ x) - u @ out).max()) < 1e-4
  # Negative control: the fixed sketch Omega lives in the column coordinates, so a right
  # rotation changes which directions it captures.
  assert float(jnp.abs(f(x @ v.T) - out @ v.T).max()) > 0.1
  low = with_spectrum(m, n, np.ones(5), seed=18)  # rank 5 <= 12: exact, so both sides
  assert float(jnp.abs(f(u @ low @ v.T) - u @ f(low) @ v.T).max()) < 1e-4
  # A different key is another sketch: same exact answer within the rank, another one beyond.
  g = lambda a: polar(a, method="randomized", rank=8, oversampling=4,
                        key=jax.random.key(1))
  np.testing.assert_allclose(g(low), f(low), atol=1e-4)
  assert float(jnp.abs(g(x) - out).max()) > 0.1


def test_randomized_argument_errors():
  x = normal((16, 8), 0)
  with pytest.raises(ValueError, match="rank must be an int >= 1"):
    polar(x, method="randomized", rank=0)
  with pytest.raises(ValueError, match="oversampling must be an int >= 0"):
    polar(x, method="randomized", oversampling=-1)
  with pytest.raises(ValueError, match="takes no steps"):
    polar(x, method="randomized", steps=3)
  with pytest.raises(ValueError, match="applies to method 'randomized' only"):
    polar(x, method="svd", rank=4)
  with pytest.raises(ValueError, match="'eigh'"):
    polar(x, method="randomized", side="right")


# ------------------------------------------------------------------------------------ both


CASES = [("layer_aware", {}), ("randomized", {}), ("randomized", {"rank": 4})]


@pytest.mark.parametrize("method,kw,shape", [
    ("layer_aware", {}, (3, 2, 40, 16)), ("layer_aware", {}, (2, 16, 40)),
    ("randomized", {}, (2, 16, 40)), ("randomized", {"rank": 4}, (3, 2, 40, 16))])
def test_batched_tall_wide_bf16_zero_and_dtype(method, kw, shape):
  x = normal(shape, 19).at[0].set(0.0)  # the first matrix (or batch) is zero
  out = polar(x, method=method, **kw)
  assert out.shape == x.shape and bool(jnp.all(out[0] == 0))
  low = polar(x, method=method, compute_dtype=jnp.bfloat16, **kw)
  assert low.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(low)))
  assert float(jnp.abs(low - out).max()) < 0.05
  flat = out.reshape((-1,) + shape[-2:])
  assert max(spectral_norm(a) for a in flat) <= 1.02
  assert polar(x.astype(jnp.bfloat16), method=method, **kw).dtype == jnp.bfloat16
  if method == "layer_aware" or not kw:  # full rank: the exact polar factor
    for a, b in zip(flat, x.reshape(flat.shape)):
      if bool(jnp.any(b != 0)):  # layer_aware: sigma within LAYER_AWARE_TOL of 1
        np.testing.assert_allclose(a, svd_polar(b), atol=1e-2 if kw == {} and
                                   method == "layer_aware" else 1e-4)


@pytest.mark.parametrize("method,kw", CASES)
def test_muon_takes_the_new_oracles_and_their_options(method, kw):
  params = {"w": jnp.zeros((24, 12)), "b": jnp.zeros(12)}
  grads = {"w": with_spectrum(24, 12, log_spectrum(12, 10.0), seed=20), "b": jnp.ones(12)}
  opt = symoptax.muon(1.0, method=method, shape_rule="none", method_options=kw or None)
  u, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  want = polar(grads["w"], method=method, **kw)
  np.testing.assert_allclose(-u["w"], want, atol=1e-5)
  tx = symoptax.scale_by_polar(method, side="auto", method_options=kw or None)
  np.testing.assert_allclose(tx.update(grads, tx.init(params))[0]["w"], want, atol=1e-6)
  bad = symoptax.scale_by_polar("svd", method_options={"rank": 3})
  with pytest.raises(ValueError, match="applies to method 'randomized' only"):
    bad.update(grads, bad.init(params))
  assert isinstance(opt, optax.GradientTransformation)
