"""Polar oracles: agreement with the SVD, batching, safety on hard inputs, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import log_spectrum, normal, with_spectrum
from symoptax import polar as P

FULL = P.FULL_METHODS
GRAM = P.GRAM_METHODS
SHAPES = [(96, 24), (24, 96), (40, 40)]
# Spectral-norm ceilings: polynomial oracles overshoot 1 by design (Polar Express ~1.14).
POLYNOMIAL = {"muon_ns", "polar_express"}
# Allowed leak outside x's row/column spaces for rank-deficient x (see the test below).
LEAK = {"gram": 1e-2, "qdwh": 3e-1, "dsv4": 5e-3}


def ceiling(method):
  return 1.25 if method in POLYNOMIAL else 1.05


def svd_polar(x):
  u, _, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  return u @ vt


def spectral_norm(x):
  return float(np.linalg.norm(np.asarray(x, np.float64), 2))


def singular_values_in_basis(x, out):
  """Returns (diagonal, off-diagonal max) of U^T out V for x's SVD basis."""
  u, _, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
  core = u.T @ np.asarray(out, np.float64) @ vt.T
  off = core - np.diag(np.diag(core))
  return np.diag(core), np.abs(off).max()


def oracle_cases():
  for m in FULL:
    yield "full", m
  for side, m in itertools.product(("right", "left"), GRAM):
    yield side, m


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["svd", "qdwh", "dsv4"])
def test_converging_full_oracles_match_svd(shape, method):
  x = with_spectrum(*shape, log_spectrum(min(shape), 10.0), seed=1)
  out = P.polar(x, method=method, side="full")
  np.testing.assert_allclose(out, svd_polar(x), atol=2e-3 if method == "dsv4" else 1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["muon_ns", "polar_express"])
def test_polynomial_full_oracles_are_matrix_functions(shape, method):
  # Muon/Polar Express do not converge to sigma = 1 but must keep the singular vectors and
  # map every singular value into a band around 1.
  x = with_spectrum(*shape, log_spectrum(min(shape), 10.0), seed=2)
  out = P.polar(x, method=method)
  diag, off = singular_values_in_basis(x, out)
  assert off < 1e-4
  lo = 0.65 if method == "muon_ns" else 0.8
  assert lo < diag.min() and diag.max() < 1.2


@pytest.mark.parametrize("side,shape", [("right", (96, 24)), ("left", (24, 96)),
                                        ("right", (40, 40)), ("left", (40, 40))])
@pytest.mark.parametrize("method", GRAM)
def test_gram_oracles_match_svd_on_full_rank(side, shape, method):
  x = with_spectrum(*shape, log_spectrum(min(shape), 10.0), seed=3)
  out = P.polar(x, method=method, side=side)
  if method == "polar_express":
    diag, off = singular_values_in_basis(x, out)
    assert off < 1e-4 and 0.8 < diag.min() and diag.max() < 1.2
    # The Gram route runs the same scalar map as the full-side iteration.
    np.testing.assert_allclose(out, P.polar(x, method="polar_express"), atol=1e-4)
  else:
    np.testing.assert_allclose(out, svd_polar(x), atol=1e-4)


@pytest.mark.parametrize("side,method", list(oracle_cases()))
def test_batched_equals_per_slice(side, method):
  x = normal((2, 3, 20, 12), seed=4)
  out = P.polar(x, method=method, side=side)
  for i, j in itertools.product(range(2), range(3)):
    np.testing.assert_allclose(out[i, j], P.polar(x[i, j], method=method, side=side),
                               atol=2e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("side,method", list(oracle_cases()))
def test_zero_rank_one_and_rank_deficient_inputs(shape, side, method):
  m, n = shape
  zero = jnp.zeros(shape)
  out = P.polar(zero, method=method, side=side)
  assert bool(jnp.all(out == 0)), "a zero matrix must map to zero"
  for rank in (1, min(shape) // 2):
    x = with_spectrum(m, n, np.ones(rank), seed=rank)
    out = P.polar(x, method=method, side=side)
    assert bool(jnp.all(jnp.isfinite(out)))
    assert spectral_norm(out) <= ceiling(method)
    # Nothing (beyond round-off) leaks outside the row/column spaces of x. The Gram side
    # cannot tell singular values below ~sqrt(eps) sigma_max from zero. QDWH resolves
    # singular values down to 4 eps sigma_max, and for a flat spectrum of rank >~ 10 the
    # round-off in its H (~eps ||x||_F) reaches that threshold, so a few null directions
    # come back partly converged; rank 1 must still be clean.
    leak = LEAK.get(method if side == "full" else "gram", 1e-3)
    if rank == 1 and side == "full" and method == "qdwh":
      leak = 1e-3
    diag, off = singular_values_in_basis(x, out)
    assert off < leak
    assert abs(np.linalg.norm(np.asarray(out)) - np.linalg.norm(diag)) < leak


@pytest.mark.parametrize("cond", [1e0, 1e2, 1e4, 1e6])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("side,method", list(oracle_cases()))
def test_safety_sweep_spectral_norm_bounded(cond, shape, side, method):
  x = with_spectrum(*shape, log_spectrum(min(shape), cond), seed=5)
  out = P.polar(x, method=method, side=side)
  assert bool(jnp.all(jnp.isfinite(out)))
  assert spectral_norm(out) <= ceiling(method), (method, side, cond)


def test_an_oracle_is_accurate_at_cond_1e6():
  s = log_spectrum(64, 1e6)
  x = with_spectrum(256, 64, s, seed=6)
  out = P.polar(x, method="qdwh")
  sig = np.linalg.svd(np.asarray(out, np.float64), compute_uv=False)
  assert np.abs(sig - 1).max() <= 1e-3


@pytest.mark.parametrize("side,method", list(oracle_cases()))
def test_scale_invariance_tiny_and_huge_inputs(side, method):
  # No absolute epsilon: a tiny (or huge) gradient gets the same polar factor.
  x = with_spectrum(48, 16, log_spectrum(16, 10.0), seed=7)
  ref = P.polar(x, method=method, side=side)
  # "left" on a tall matrix goes through the rank-deficient 48 x 48 Gram: less accurate.
  atol = 5e-3 if side == "left" else 1e-4
  for c in (1e-25, 1e-12, 1e12, 1e25):
    np.testing.assert_allclose(P.polar(x * c, method=method, side=side), ref, atol=atol)


@pytest.mark.parametrize("side,method", [("full", "polar_express"), ("full", "muon_ns"),
                                         ("full", "dsv4"), ("right", "polar_express"),
                                         ("left", "newton_schulz")])
def test_bf16_compute_dtype(side, method):
  x = with_spectrum(128, 32, log_spectrum(32, 10.0), seed=8)
  if side == "left":
    x = x.T
  ref = P.polar(x, method=method, side=side)
  low = P.polar(x, method=method, side=side, compute_dtype=jnp.bfloat16)
  assert low.dtype == jnp.float32
  assert float(jnp.abs(low - ref).max()) < 0.05
  assert spectral_norm(low) <= ceiling(method)


@pytest.mark.parametrize("side,method", list(oracle_cases()))
def test_auto_compute_dtype_per_oracle_and_backend(side, method):
  low = {("full", "muon_ns"), ("full", "polar_express"), ("right", "polar_express"),
         ("left", "polar_express")}
  for backend in ("gpu", "tpu"):
    want = jnp.bfloat16 if (side, method) in low else None
    assert P.resolve_compute_dtype("auto", method, side, backend=backend) == want
  assert P.resolve_compute_dtype("auto", method, side, backend="cpu") is None
  # Explicit choices are kept whatever the backend; fp32 means HIGHEST-precision matmuls.
  assert P.resolve_compute_dtype(None, method, side, backend="gpu") is None
  assert P.resolve_compute_dtype(jnp.float32, method, side, backend="gpu") is None
  assert P.resolve_compute_dtype(jnp.bfloat16, method, side, backend="cpu") == jnp.bfloat16


def test_auto_compute_dtype_is_fp32_on_this_backend():
  x = with_spectrum(64, 16, log_spectrum(16, 10.0), seed=13)
  auto = P.polar(x, method="polar_express")
  want = P.resolve_compute_dtype("auto", "polar_express", "full")
  np.testing.assert_array_equal(auto, P.polar(x, method="polar_express", compute_dtype=want))
  if jax.default_backend() == "cpu":
    np.testing.assert_array_equal(auto, P.polar(x, method="polar_express", compute_dtype=None))
  with pytest.raises(ValueError, match="'auto'"):
    P.polar(x, compute_dtype="fast")
  assert P.resolve_compute_dtype("bfloat16", "eigh", "right") == jnp.bfloat16
  assert P.resolve_compute_dtype("float32", "muon_ns", "full", backend="gpu") is None


@pytest.mark.parametrize("side,method", list(oracle_cases()))
def test_dtype_is_kept(side, method):
  x = normal((16, 8), seed=9).astype(jnp.bfloat16)
  assert P.polar(x, method=method, side=side).dtype == jnp.bfloat16


def test_unknown_method_and_side_raise_with_choices():
  x = normal((8, 4), 0)
  with pytest.raises(ValueError, match="'qdwh'"):
    P.polar(x, method="nope")
  with pytest.raises(ValueError, match="'eigh'"):
    P.polar(x, method="svd", side="right")  # svd has no Gram-side form
  with pytest.raises(ValueError, match="'full'"):
    P.polar(x, side="diagonal")


@pytest.mark.parametrize("method,steps", [("polar_express", 3), ("polar_express", 7),
                                          ("dsv4", 5)])
def test_coefficient_tables_are_never_truncated_or_cycled(method, steps):
  with pytest.raises(ValueError, match="coefficient table"):
    P.polar(normal((8, 4), 0), method=method, steps=steps)


def test_free_step_counts():
  x = with_spectrum(32, 8, log_spectrum(8, 10.0), seed=10)
  few = P.polar(x, method="newton_schulz", side="right", steps=2)
  many = P.polar(x, method="newton_schulz", side="right", steps=40)
  assert np.abs(many - svd_polar(x)).max() < np.abs(few - svd_polar(x)).max()
  assert len(P.coefficients("muon_ns", 7)) == 7


def test_jit_and_vmap():
  x = normal((3, 16, 8), 11)
  f = jax.jit(lambda a: P.polar(a, method="polar_express", side="right"))
  np.testing.assert_allclose(f(x), jax.vmap(lambda a: P.polar(a, side="right"))(x), atol=1e-5)


@pytest.mark.parametrize("kind", [1e0, 1e3, 1e6, "rank1", "rankdef"])
@pytest.mark.parametrize("side,method", [("full", "muon_ns"), ("full", "polar_express"),
                                         ("full", "dsv4"), ("right", "polar_express"),
                                         ("right", "newton_schulz"), ("left", "newton_schulz")])
def test_bf16_safety_sweep(kind, side, method):
  shape = (48, 48) if side == "full" else ((96, 24) if side == "right" else (24, 96))
  k = min(shape)
  s = (np.ones(1) if kind == "rank1" else np.ones(k // 3) if kind == "rankdef"
       else log_spectrum(k, kind))
  out = P.polar(with_spectrum(*shape, s, seed=12), method=method, side=side,
                compute_dtype=jnp.bfloat16)
  assert bool(jnp.all(jnp.isfinite(out)))
  assert spectral_norm(out) <= ceiling(method)


def test_traced_steps_raise_a_clear_error():
  import optax
  import symoptax
  tx = optax.inject_hyperparams(symoptax.scale_by_polar)(method="muon_ns", steps=5, side="full")
  g = {"w": normal((8, 4), 0)}
  with pytest.raises(ValueError, match="static_args=\\('steps',\\)"):
    jax.jit(tx.update)(g, tx.init(g))
  ok = optax.inject_hyperparams(symoptax.scale_by_polar, static_args=("steps",))(
      method="muon_ns", steps=5, side="full")
  assert bool(jnp.all(jnp.isfinite(jax.jit(ok.update)(g, ok.init(g))[0]["w"])))
