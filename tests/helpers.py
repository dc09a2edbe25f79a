"""Shared test helpers: random orthogonal matrices, permutations and spectra."""

import jax
import jax.numpy as jnp
import numpy as np


def orthogonal(n: int, seed: int) -> jnp.ndarray:
  """A Haar-random orthogonal n x n matrix (fp64 QR, returned in fp32)."""
  rng = np.random.default_rng(seed)
  q, r = np.linalg.qr(rng.standard_normal((n, n)))
  return jnp.asarray(q * np.sign(np.diag(r)), jnp.float32)


def permutation(n: int, seed: int) -> jnp.ndarray:
  """A random n x n permutation matrix."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(np.eye(n)[rng.permutation(n)], jnp.float32)


def with_spectrum(m: int, n: int, singular_values, seed: int) -> jnp.ndarray:
  """An m x n fp32 matrix with the given singular values and random singular vectors."""
  rng = np.random.default_rng(seed)
  k = len(singular_values)
  u, _ = np.linalg.qr(rng.standard_normal((m, k)))
  v, _ = np.linalg.qr(rng.standard_normal((n, k)))
  return jnp.asarray((u * np.asarray(singular_values)) @ v.T, jnp.float32)


def log_spectrum(k: int, cond: float) -> np.ndarray:
  return np.logspace(0, -np.log10(cond), k)


def normal(shape, seed: int) -> jnp.ndarray:
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def run_jitted(tx, grads, params):
  """``tx``'s jitted updates over the gradient trees ``grads`` at fixed ``params``: the
  updates and the state after each step."""
  state, outs, states = tx.init(params), [], []
  step = jax.jit(tx.update)
  for g in grads:
    u, state = step(g, state, params)
    outs.append(u)
    states.append(state)
  return outs, states


def max_rel_error(got, want) -> float:
  """Largest entry of ``|got - want|`` over the largest of ``|want|`` (float64)."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / np.abs(want).max())
