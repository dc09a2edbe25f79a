"""Polar oracles: the orthogonal polar factor of a batch of matrices.

For ``X = U diag(s) V^T`` (thin SVD) the polar factor is ``U V^T``; for a rank-deficient ``X``
every oracle here aims at the partial isometry ``U_r V_r^T`` over the nonzero singular values,
so a zero input gives a zero output. Arrays are ``[..., m, n]``, batched over leading axes.

Two families:

* **full side** (``side="full"``): iterate on the matrix itself. ``"muon_ns"`` (Jordan's
  quintic Newton-Schulz), ``"polar_express"`` (Amsel et al.'s 5-step table), ``"dsv4"``
  (DeepSeek-V4: Muon's quintic for 8 steps, then a converging quintic for 2), ``"qdwh"``
  (``jax.lax.linalg.qdwh``), ``"svd"`` (exact reference), ``"layer_aware"`` (per-matrix
  step count and minimax coefficients from an estimated singular-value quantile) and
  ``"randomized"`` (Gaussian range sketch of ``rank + oversampling`` columns, then the exact
  polar factor of the small projected matrix).
* **Gram side** (``side="right"``: ``X (X^T X)^{-1/2}``, ``side="left"``:
  ``(X X^T)^{-1/2} X``): form the small Gram once, compute its inverse square root on the
  small side, multiply back once. ``"polar_express"`` and ``"newton_schulz"`` iterate a matrix
  polynomial on the Gram (the same scalar maps as their full-side versions); ``"eigh"`` uses an
  eigendecomposition.

fp32 matmuls run at ``Precision.HIGHEST`` (on GPU JAX's default fp32 precision is TF32-like
and loses the accuracy these oracles need). ``compute_dtype=jnp.bfloat16`` feeds the big
matmuls bf16 inputs with fp32 accumulation; the default ``compute_dtype="auto"`` does that on
GPU/TPU for the oracles whose accuracy and safety bf16 leaves unchanged
(``LOW_PRECISION_METHODS``) and keeps fp32 everywhere else (see
:func:`resolve_compute_dtype`).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from symoptax.shards import LOCAL, MatrixShards

Coeffs = tuple[tuple[float, float, float], ...]

MUON_COEFFS = (3.4445, -4.7750, 2.0315)
POLAR_EXPRESS_COEFFS: Coeffs = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
DSV4_COEFFS: Coeffs = (MUON_COEFFS,) * 8 + ((2.0, -1.5, 0.5),) * 2
# Classical cubic Newton-Schulz: s -> 1.5 s - 0.5 s^3 maps [0, sqrt(3)] into [0, 1].
NEWTON_SCHULZ_COEFF = (1.5, -0.5, 0.0)

FULL_METHODS = ("muon_ns", "polar_express", "dsv4", "qdwh", "svd", "layer_aware", "randomized")
GRAM_METHODS = ("polar_express", "newton_schulz", "eigh")
SIDES = ("full", "right", "left")

# Frobenius-norm safety factors: the first iteration must see singular values <= 1
# (<= sqrt(3) for the cubic Newton-Schulz map).
_SCALE = {"muon_ns": 1.0, "polar_express": 1.02, "dsv4": 1.0, "newton_schulz": 1.0 / 1.7}
DEFAULT_NEWTON_SCHULZ_STEPS = 24
# Relative damping of the Gram (trace-normalised) per Gram-side oracle, and whether a final
# Newton-Schulz polish on the undamped Gram follows (it removes the damping bias and maps
# any output singular value in [0, sqrt(3)] into [0, 1]). Chosen by benchmarks/polar_accuracy.py.
GRAM_DAMPING = {"polar_express": 1e-7, "newton_schulz": 1e-6, "eigh": 1e-6}
GRAM_POLISH = {"polar_express": False, "newton_schulz": True, "eigh": True}


# Oracles whose matmuls take bf16 inputs (fp32 accumulation) under compute_dtype="auto" on
# GPU/TPU. Chosen by benchmarks/polar_accuracy.py: for these the bf16 rows stay within the
# oracle's own spread (polar_express: max |sigma - 1| 7.0e-2 vs 5.7e-2 at cond 1, equal at
# every other condition; spectral norm 1.1423 vs 1.1411), while "dsv4" and
# "newton_schulz", which exist to converge, lose 10-30x of their accuracy at cond 1. "eigh"
# (whose only bf16 matmul would be the Gram's formation) has no bf16 row in the sweep and
# stays fp32, as do "qdwh" and "svd" (no low-precision path). Gram side: only the Gram's
# formation is bf16.
LOW_PRECISION_METHODS = {"full": ("muon_ns", "polar_express"), "gram": ("polar_express",)}


def resolve_compute_dtype(compute_dtype: Any, method: str, side: str,
                          backend: str | None = None) -> Any:
  """The matmul input dtype an oracle runs with: ``None`` (fp32, HIGHEST) or a low dtype.

  ``"auto"`` gives ``jnp.bfloat16`` for ``LOW_PRECISION_METHODS`` on a GPU/TPU backend
  (``backend``, default ``jax.default_backend()`` at trace time) and fp32 otherwise: on CPUs
  without bf16 matmul units bf16 is slower (see the README's accuracy table). ``None`` and
  ``jnp.float32`` mean fp32 at HIGHEST precision; any other dtype is used as given.
  """
  if isinstance(compute_dtype, str) and compute_dtype != "auto":
    try:
      compute_dtype = jnp.dtype(compute_dtype)  # "bfloat16", "float32", ...
    except TypeError:
      raise ValueError(f"Unknown compute_dtype {compute_dtype!r}; use 'auto', None (fp32) or "
                       "a dtype such as jnp.bfloat16.") from None
  if isinstance(compute_dtype, str):
    backend = jax.default_backend() if backend is None else backend
    kind = "full" if side == "full" else "gram"
    return jnp.bfloat16 if backend != "cpu" and method in LOW_PRECISION_METHODS[kind] else None
  if compute_dtype is None or jnp.dtype(compute_dtype) == jnp.float32:
    return None
  return compute_dtype


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  """Raises a ValueError naming ``value`` and the valid ``choices`` of ``name``."""
  if value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; valid choices are "
                     f"{', '.join(map(repr, choices))}.")


def static_steps(steps: Any) -> int:
  """``steps`` as a Python int; a traced value (under ``inject_hyperparams``) raises."""
  try:
    return int(steps)
  except (TypeError, jax.errors.ConcretizationTypeError):
    raise ValueError(
        f"steps must be a static Python int, got {steps!r}. Under optax.inject_hyperparams "
        "pass static_args=('steps',).") from None


def coefficients(method: str, steps: int | None = None) -> Coeffs:
  """The per-step (a, b, c) table of a polynomial oracle for ``steps`` steps.

  A table belongs to its step count: "polar_express" has exactly 5 steps and "dsv4" exactly
  10; asking for another count raises instead of cycling or truncating the table.
  """
  if method == "muon_ns":
    n = 5 if steps is None else static_steps(steps)
    if n < 1:
      raise ValueError(f"steps must be >= 1 for 'muon_ns', got {steps}.")
    return (MUON_COEFFS,) * n
  if method == "newton_schulz":
    n = DEFAULT_NEWTON_SCHULZ_STEPS if steps is None else static_steps(steps)
    if n < 1:
      raise ValueError(f"steps must be >= 1 for 'newton_schulz', got {steps}.")
    return (NEWTON_SCHULZ_COEFF,) * n
  tables = {"polar_express": POLAR_EXPRESS_COEFFS, "dsv4": DSV4_COEFFS}
  if method in tables:
    table = tables[method]
    if steps is not None and static_steps(steps) != len(table):
      raise ValueError(
          f"method {method!r} has a {len(table)}-step coefficient table; got steps={steps}. "
          f"Use steps=None (or {len(table)}), or 'muon_ns'/'newton_schulz' for a free step "
          "count.")
    return table
  raise ValueError(f"{method!r} is not a polynomial oracle.")


def matmul(a: jax.Array, b: jax.Array, compute_dtype: Any = None) -> jax.Array:
  """Matmul in fp32 at HIGHEST precision, or with low-precision inputs and fp32 accumulation."""
  if compute_dtype is None:
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)
  return jnp.matmul(a.astype(compute_dtype), b.astype(compute_dtype),
                    preferred_element_type=jnp.float32)


def _mT(x: jax.Array) -> jax.Array:
  return jnp.swapaxes(x, -1, -2)


def _fro(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=(-2, -1), keepdims=True))


def _safe_div(x: jax.Array, d: jax.Array) -> jax.Array:
  # A zero matrix stays zero; no absolute epsilon, so tiny gradients are not shrunk.
  return x / jnp.maximum(d, jnp.finfo(x.dtype).tiny)


def _full_polynomial(x, coeffs: Coeffs, scale: float, compute_dtype):
  # The step loop stays unrolled: benchmarks/polar_loop.py measured lax.scan over the table
  # 1.3x slower on CPU (Qwen3-0.6B/8 hidden matrices: 179 ms vs 137 ms) for half the compile.
  wide = x.shape[-2] <= x.shape[-1]
  if not wide:
    x = _mT(x)  # iterate with the small Gram x x^T
  x = _safe_div(x, scale * _fro(x))
  for a, b, c in coeffs:
    gram = matmul(x, _mT(x), compute_dtype)
    poly = b * gram + c * matmul(gram, gram, compute_dtype) if c else b * gram
    x = a * x + matmul(poly, x, compute_dtype)
  return x if wide else _mT(x)


def _gram(x, side, compute_dtype):
  return matmul(_mT(x), x, compute_dtype) if side == "right" else matmul(x, _mT(x), compute_dtype)


def _apply(x, r, side):
  # R is built in right form (X R); for the left route X^T R is the right polar of X^T, so
  # polar(X) = R^T X. Always fp32: R is an inverse square root with entries up to
  # ~damping^{-1/2}, and rounding it to bf16 destroys the cancellations that keep the output
  # orthogonal (measured: spectral norms up to 5 at bf16).
  return matmul(x, r) if side == "right" else matmul(_mT(r), x)


def _gram_polynomial(gram, coeffs: Coeffs, scale: float, damping: float):
  """R = p_k(...) with X R the polynomial iteration's result, computed on the Gram alone.

  With X_k = X R_k and R_k a polynomial in S = X^T X, X_k^T X_k = G_k = R_k S R_k, and one
  full-side step X_{k+1} = X_k p(G_k) becomes R_{k+1} = R_k p(G_k), G_{k+1} = p G_k p.
  """
  n = gram.shape[-1]
  eye = jnp.eye(n, dtype=gram.dtype)
  trace = jnp.trace(gram, axis1=-2, axis2=-1)[..., None, None]
  norm = scale * jnp.sqrt(trace)  # scale * ||X||_F
  inv = jnp.where(norm > 0, 1.0 / jnp.maximum(norm, jnp.finfo(gram.dtype).tiny), 0.0)
  # Round-off leaves eigenvalues of order -eps * trace in a PSD Gram; the polynomial maps
  # grow negative eigenvalues without bound, so shift them positive first.
  g = gram * jnp.square(inv) + damping * eye
  r = eye * inv
  for a, b, c in coeffs:
    p = a * eye + b * g + (c * matmul(g, g) if c else 0.0)
    r = matmul(r, p)
    g = matmul(p, matmul(g, p))
    g = 0.5 * (g + _mT(g))
  return r


def _gram_eigh(gram, damping: float):
  w, q = jnp.linalg.eigh(gram)
  trace = jnp.sum(jnp.maximum(w, 0.0), axis=-1, keepdims=True)
  f = jnp.where(trace > 0, jax.lax.rsqrt(jnp.maximum(w, 0.0) + damping * trace
                                         + (trace <= 0)), 0.0)
  return matmul(q * f[..., None, :], _mT(q))


def _polish(r, gram):
  """One cubic Newton-Schulz step on the output: X R -> X R (1.5 I - 0.5 R^T S R)."""
  g = matmul(_mT(r), matmul(gram, r))
  eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
  return matmul(r, 1.5 * eye - 0.5 * (0.5 * (g + _mT(g))))


def _rank_tol(s_max, dtype):
  # Numerical-rank threshold: directions below a few ulps of the top singular value are
  # round-off, which an iteration would otherwise blow up to full size. Singular values down
  # to ~1e-6 sigma_max (fp32) are kept.
  return 4.0 * jnp.finfo(dtype).eps * s_max


def _qdwh(x):
  wide = x.shape[-2] < x.shape[-1]
  if wide:
    x = _mT(x)
  norm = _fro(x)
  xs = jnp.where(norm > 0, _safe_div(x, norm), jnp.zeros_like(x))
  flat = xs.reshape((-1,) + xs.shape[-2:])
  u, h = jax.vmap(lambda m: jax.lax.linalg.qdwh(m)[:2])(flat)
  # QDWH completes null directions of a rank-deficient input to a full isometry (round-off
  # there is amplified to 1); keep the partial isometry on the numerical range of H instead.
  # Directions of H below 4 eps sigma_max are treated as null (as "svd" does): singular
  # values down to ~5e-7 sigma_max (fp32) are kept. Round-off in H is of order
  # eps * ||X||_F, so for a rank-deficient input with a flat spectrum of rank r >~ 16 some
  # null directions pass the threshold and come back partly converged (see the tests).
  w, q = jnp.linalg.eigh(0.5 * (h + _mT(h)))
  keep = (w > _rank_tol(jnp.max(w, axis=-1, keepdims=True), x.dtype)).astype(x.dtype)
  u = matmul(u, matmul(q * keep[..., None, :], _mT(q))).reshape(xs.shape)
  u = jnp.where(norm > 0, u, 0.0)
  return _mT(u) if wide else u


def _svd(x):
  u, s, vt = jnp.linalg.svd(x, full_matrices=False)
  keep = (s > _rank_tol(jnp.max(s, axis=-1, keepdims=True), x.dtype)).astype(x.dtype)
  return matmul(u * keep[..., None, :], vt)


# ---------------------------------------------------------------------------------------------
# "layer_aware": per-matrix minimax schedules chosen from an estimated singular-value quantile.

# Each schedule stops once every singular value in its design interval is within this of 1.
LAYER_AWARE_TOL = 1e-2
# Lower ends of the schedules' design intervals, in units of ||X||_F: 10^(-j/2), j = 1..14.
LAYER_AWARE_FLOORS = tuple(10.0 ** (-j / 2) for j in range(1, 15))
# Each step's polynomial is designed on [l_t, CUSHION * u_t]: round-off (or bf16 inputs) that
# pushes a singular value slightly above the interval still maps inside the next one.
LAYER_AWARE_CUSHION = 1.01
# Singular values below this fraction of (the estimate of) sigma_max are not aimed at: a
# deeper schedule would amplify round-off in the null space of a rank-deficient input
# (measured on rank-1 inputs: 3e-4 leak at this floor's 8 steps, 1e-2 at 1e-6's 11 steps).
LAYER_AWARE_RESOLUTION = 1e-4


def minimax_quintic(lower: float, upper: float, iters: int = 100
                    ) -> tuple[tuple[float, float, float], float]:
  r"""The odd quintic closest to 1 on ``[lower, upper]`` in the max norm (Remez exchange).

  .. math::
    p^\star = \arg\min_{p(x) = a x + b x^3 + c x^5}\; \max_{x \in [l, u]} |1 - p(x)|

  ``p*`` equioscillates at ``l``, its two critical points and ``u``:
  :math:`p(l) = 1 - E,\ p(x_1) = 1 + E,\ p(x_2) = 1 - E,\ p(u) = 1 + E`. Each exchange
  solves these four linear equations for ``(a, b, c, E)`` and moves ``x_1, x_2`` to the
  roots of :math:`p'(x) = a + 3 b x^2 + 5 c x^4` (a quadratic in :math:`x^2`). float64
  numpy. Returns ``((a, b, c), E)``; ``p*`` is increasing on ``[0, x_1]``, so it maps
  ``[0, l]`` into ``[0, 1 - E]``.

  This is the greedy step of Amsel et al.'s Polar Express (for ``[1e-3, 1]`` it gives
  ``(8.47, -25.11, 18.63)``; their table's first step, designed with safety margins, is
  ``(8.16, -22.48, 15.88)``).
  """
  if not 0 < lower < upper:
    raise ValueError(f"minimax_quintic needs 0 < lower < upper, got {lower}, {upper}.")
  # Start from the extrema of the cubic Chebyshev polynomial mapped to [l, u].
  xs = lower + (upper - lower) * (1 + np.cos(np.pi * np.arange(3, -1, -1) / 3)) / 2
  signs = np.array([1.0, -1.0, 1.0, -1.0])
  for _ in range(iters):
    a, b, c, err = np.linalg.solve(np.stack([xs, xs**3, xs**5, signs], 1), np.ones(4))
    disc = 9 * b * b - 20 * a * c
    if c <= 0 or disc < 0:
      break
    roots = (-3 * b + np.array([-1.0, 1.0]) * np.sqrt(disc)) / (10 * c)
    if np.any(roots <= 0):
      break
    new = np.clip(np.sqrt(np.sort(roots)), lower, upper)
    if np.array_equal(new, xs[1:3]):
      break
    xs = np.array([lower, new[0], new[1], upper])
  return (float(a), float(b), float(c)), float(abs(err))


def greedy_quintic_schedule(lower: float, tol: float = LAYER_AWARE_TOL,
                            cushion: float = LAYER_AWARE_CUSHION, max_steps: int = 30
                            ) -> Coeffs:
  r"""Minimax quintic steps, each optimal for the interval the previous one left, until
  every singular value of ``[lower, 1]`` is within ``tol`` of 1.

  .. math::
    [l_0, u_0] = [l, 1],\qquad p_t = \mathrm{minimax}(l_t, \text{cushion}\cdot u_t),\qquad
    [l_{t+1}, u_{t+1}] = [\min p_t, \max p_t] = [1 - E_t, 1 + E_t]

  The schedule stops after the first step with :math:`E_t \le` ``tol``; every singular value
  below ``l`` is mapped monotonically below :math:`1 - E_t` and never above :math:`1 + E_t`.
  """
  lo, hi, out = lower, 1.0, []
  for _ in range(max_steps):
    coeffs, err = minimax_quintic(lo, cushion * hi)
    out.append(coeffs)
    lo, hi = 1.0 - err, 1.0 + err
    if err <= tol:
      return tuple(out)
  raise ValueError(f"greedy_quintic_schedule: lower={lower} needs more than {max_steps} steps.")


@functools.cache
def layer_aware_schedules() -> tuple[Coeffs, ...]:
  """The schedule of every floor in ``LAYER_AWARE_FLOORS`` (computed once, in float64)."""
  return tuple(greedy_quintic_schedule(floor) for floor in LAYER_AWARE_FLOORS)


def _layer_aware_table(max_steps: int | None):
  """``(coefficient table [J, N, 3] padded with identity steps (1, 0, 0), step counts [J])``
  of the schedules with at most ``max_steps`` steps."""
  schedules = layer_aware_schedules()
  if max_steps is not None:
    schedules = tuple(s for s in schedules if len(s) <= max_steps)
    if not schedules:
      shortest = len(layer_aware_schedules()[0])
      raise ValueError(f"steps must be >= {shortest} for 'layer_aware' (its shortest "
                       f"schedule), got {max_steps}.")
  n = max(len(s) for s in schedules)
  table = np.array([list(s) + [(1.0, 0.0, 0.0)] * (n - len(s)) for s in schedules])
  return table, np.array([len(s) for s in schedules])


def _coth_width(kappa: jax.Array, iters: int = 60) -> jax.Array:
  """The ``L >= 0`` with ``L coth(L) = kappa`` (``kappa >= 1``), by bisection on [0, kappa]."""
  def f(w):
    w = jnp.maximum(w, 1e-6)
    e = jnp.exp(-2.0 * w)
    return w * (1.0 + e) / (1.0 - e)

  def body(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    below = f(mid) < kappa
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.zeros_like(kappa), kappa))
  return 0.5 * (lo + hi)


def quantile_estimate(gram: jax.Array, quantile: float = 0.0,
                      resolution: float = 0.0) -> jax.Array:
  r"""A moment estimate of the ``quantile`` of the singular values of ``x`` (from below), in
  units of :math:`\|x\|_F`, from its Gram ``gram = x x^T`` (``[..., k, k]``, k = min(m, n)).

  Model: the k singular values are log-uniform on :math:`[\sigma_{\max} e^{-L},
  \sigma_{\max}]`. Its first two moments of :math:`\lambda = \sigma^2` fix both parameters:

  .. math::
    \kappa = \frac{k\, \mathrm{tr}(G^2)}{\mathrm{tr}(G)^2} = \frac{k}{r_{\mathrm{eff}}}
    = L \coth L,\qquad
    \frac{\sigma_{\max}^2}{\|x\|_F^2} = \frac{2L}{k\,(1 - e^{-2L})},\qquad
    \hat\sigma_q = \sigma_{\max} \max\big(e^{-(1 - q) L},\ \text{resolution}\big).

  Exact for a log-uniform law (32 log-spaced values: within 11%; a flat spectrum gives
  :math:`\kappa = 1, L = 0`); zero singular values count as small ones (a rank-r flat
  spectrum reads as :math:`\kappa = k/r`), so rank-deficient inputs get conservative (long)
  schedules, down to ``LAYER_AWARE_RESOLUTION``. Only traces: exactly invariant
  under ``x -> U x V^T``, and free, since the first iteration forms ``gram`` anyway.
  """
  k = gram.shape[-1]
  tr = jnp.trace(gram, axis1=-2, axis2=-1)
  tr2 = jnp.sum(jnp.square(gram), axis=(-2, -1))
  kappa = jnp.where(tr > 0, k * tr2 / jnp.where(tr > 0, tr, 1.0) ** 2, 1.0)
  width = _coth_width(jnp.maximum(kappa, 1.0))
  top2 = 2.0 * width / (k * -jnp.expm1(-2.0 * jnp.maximum(width, 1e-6)))
  return jnp.sqrt(top2) * jnp.maximum(jnp.exp(-(1.0 - quantile) * width), resolution)


def _layer_aware_choice(gram, quantile: float, max_steps: int | None):
  """``(coefficients [..., N, 3], step counts [...])`` per matrix from its Gram."""
  table, counts = _layer_aware_table(max_steps)
  est = quantile_estimate(gram, quantile, LAYER_AWARE_RESOLUTION)
  floors = jnp.asarray(LAYER_AWARE_FLOORS[:len(counts)], est.dtype)
  # The largest floor at or below the estimate (the last one if the estimate is smaller).
  j = jnp.minimum(jnp.sum(est[..., None] < floors, axis=-1), len(counts) - 1)
  return jnp.asarray(table, gram.dtype)[j], jnp.asarray(counts)[j]


def layer_aware_steps(x: jax.Array, *, quantile: float = 0.0,
                      steps: int | None = None) -> jax.Array:
  """The step count ``polar(x, method="layer_aware")`` takes for each matrix of ``x``."""
  x = jnp.asarray(x, jnp.promote_types(x.dtype, jnp.float32))
  if x.shape[-2] > x.shape[-1]:
    x = _mT(x)
  x = x / jnp.where(_fro(x) > 0, _fro(x), 1.0)
  return _layer_aware_choice(matmul(x, _mT(x)), _check_quantile(quantile), steps)[1]


def _check_quantile(quantile):
  q = 0.0 if quantile is None else quantile
  if not 0.0 <= q < 1.0:
    raise ValueError(f"polar: quantile must be in [0, 1) for method 'layer_aware', got "
                     f"{quantile!r}.")
  return float(q)


def _layer_aware(x, quantile: float, max_steps: int | None, compute_dtype):
  wide = x.shape[-2] <= x.shape[-1]
  if not wide:
    x = _mT(x)
  x = _safe_div(x, _fro(x))
  gram = matmul(x, _mT(x), compute_dtype)
  coeffs, counts = _layer_aware_choice(gram, quantile, max_steps)

  def step(x, gram, t):
    a, b, c = (coeffs[..., t, i][..., None, None] for i in range(3))
    poly = b * gram + c * matmul(gram, gram, compute_dtype)
    # Finished matrices take identity steps (a, b, c) = (1, 0, 0): x + 0 x, exactly x.
    return a * x + matmul(poly, x, compute_dtype)

  x = step(x, gram, 0)  # the first step reuses the estimate's Gram
  n = jnp.max(counts)  # the batch stops when its longest schedule does

  def body(carry):
    t, x = carry
    return t + 1, step(x, matmul(x, _mT(x), compute_dtype), t)

  _, x = jax.lax.while_loop(lambda c: c[0] < n, body, (jnp.int32(1), x))
  return x if wide else _mT(x)


# ---------------------------------------------------------------------------------------------
# "randomized": polar factor of a Gaussian range sketch.

RANDOMIZED_OVERSAMPLING = 10


def sketch_size(shape: Sequence[int], rank: int | None, oversampling: int | None) -> int:
  """Columns of the sketch: ``min(rank + oversampling, m, n)`` (``rank=None``: min(m, n))."""
  k = min(shape[-2], shape[-1])
  p = RANDOMIZED_OVERSAMPLING if oversampling is None else oversampling
  r = k if rank is None else rank
  for name, v, least in (("rank", r, 1), ("oversampling", p, 0)):
    if not isinstance(v, (int, np.integer)) or v < least:
      raise ValueError(f"polar: {name} must be an int >= {least} for method 'randomized', "
                       f"got {v!r}.")
  return max(1, min(int(r) + int(p), k))


def _randomized(x, rank, oversampling, key, compute_dtype):
  n = x.shape[-1]
  s = sketch_size(x.shape, rank, oversampling)
  key = jax.random.key(0) if key is None else key
  omega = jax.random.normal(key, (n, s), x.dtype)  # one sketch for every matrix
  y = matmul(x, omega, compute_dtype)
  # Basis of the sketch's numerical range, from the SVD of Y (no QR: jaxlib 0.10.2's CPU
  # runtime hung on a QR custom call inside a whole train step). For a rank-deficient x,
  # directions of Y below 4 eps ||Y||_2 (the "svd" oracle's threshold) are round-off, and
  # polar would blow them up to size 1. (max(m, n) eps, numpy's matrix_rank threshold, also
  # drops singular values of x below ~1e-4 sigma_max: measured, err 0.5-1 at cond 1e3 in the
  # accuracy sweep.)
  uy, sy, _ = jnp.linalg.svd(y, full_matrices=False)
  keep_y = sy > _rank_tol(jnp.max(sy, axis=-1, keepdims=True), x.dtype)
  q = uy * keep_y.astype(uy.dtype)[..., None, :]
  b = matmul(_mT(q), x, compute_dtype)  # [..., s, n]
  ub, sb, vbt = jnp.linalg.svd(b, full_matrices=False)
  keep = (sb > _rank_tol(jnp.max(sb, axis=-1, keepdims=True), x.dtype)).astype(x.dtype)
  return matmul(matmul(q, ub * keep[..., None, :]), vbt, compute_dtype)


def polar(
    x: jax.Array,
    *,
    method: str = "polar_express",
    steps: int | None = None,
    side: str = "full",
    compute_dtype: Any = "auto",
    damping: float | None = None,
    rank: int | None = None,
    oversampling: int | None = None,
    key: jax.Array | None = None,
    quantile: float | None = None,
) -> jax.Array:
  r"""Orthogonal polar factor of a batch of matrices.

  .. math::
    \mathrm{polar}(X) = U V^\top \quad\text{for}\quad X = U \Sigma V^\top,\qquad
    X (X^\top X)^{-1/2} \;(\text{right}),\qquad (X X^\top)^{-1/2} X \;(\text{left}).

  Args:
    x: array of shape ``[..., m, n]``; leading axes are batch axes.
    method: oracle name. ``side="full"``: one of ``"muon_ns", "polar_express", "dsv4",
      "qdwh", "svd", "layer_aware", "randomized"``. ``side="right"``/``"left"``: one of
      ``"polar_express", "newton_schulz", "eigh"``.
    steps: iteration count for ``"muon_ns"`` (default 5) and ``"newton_schulz"`` (default
      24); ``"polar_express"`` (5) and ``"dsv4"`` (10) only accept their table's count;
      for ``"layer_aware"`` the most steps any matrix may take (default: no cap, at most
      13); ``"randomized"`` takes none.
    side: ``"full"``, ``"right"`` (``x (x^T x)^{-1/2}``, through the n x n Gram) or
      ``"left"`` (``(x x^T)^{-1/2} x``, through the m x m Gram). The two Gram forms are the
      same function of ``x`` in exact arithmetic; they differ in cost (the smaller Gram is
      cheaper), numerics and sharding. ``"auto"`` picks the smaller Gram for Gram-capable
      methods and "full" otherwise.
    compute_dtype: ``"auto"`` (bf16 on GPU/TPU for "muon_ns" and "polar_express", fp32
      otherwise: :func:`resolve_compute_dtype`), ``None`` for fp32 matmuls at HIGHEST
      precision, or e.g. ``jnp.bfloat16`` for bf16 matmul inputs with fp32 accumulation:
      every matmul of the full-side polynomial oracles; on the Gram side only the Gram's
      formation (the small iteration and the final multiply stay fp32). Ignored by "qdwh"
      and "svd".
    damping: Gram side only: ``damping * trace(Gram) * I`` is added to the Gram before its
      inverse square root, so that round-off (eigenvalues of order ``-eps * trace``) cannot
      blow up the output. Defaults per oracle in ``GRAM_DAMPING``; "newton_schulz" and
      "eigh" then take one Newton-Schulz polish step on the undamped Gram.
    rank: ``"randomized"`` only: the target rank (default ``min(m, n)``: exact).
    oversampling: ``"randomized"`` only: extra sketch columns (default 10); the sketch has
      ``min(rank + oversampling, m, n)`` columns.
    key: ``"randomized"`` only: the PRNG key of the Gaussian sketch (default
      ``jax.random.key(0)``: the same sketch at every call, for every matrix of the batch).
    quantile: ``"layer_aware"`` only: the fraction ``q`` of smallest singular values the
      schedule may leave unconverged (default 0: aim at the estimated smallest one).

  Oracles with a data-dependent schedule or a sketch:

  * ``"layer_aware"``: :func:`quantile_estimate` reads the ``quantile`` of the singular
    values of ``x / ||x||_F`` off the first Gram's two traces (a log-uniform model of the
    spectrum), and each matrix takes the minimax schedule (:func:`greedy_quintic_schedule`)
    of the largest floor in ``LAYER_AWARE_FLOORS`` below that estimate: 2 steps for a
    floor of 0.32, 4 for 0.03, 6 for 1e-3, 13 for 1e-7, each leaving its interval within
    ``LAYER_AWARE_TOL`` = 1e-2 of 1. The estimate is floored at ``LAYER_AWARE_RESOLUTION``
    = 1e-4 times the estimated :math:`\sigma_{\max}`: condition numbers up to ~1e4 are
    resolved, and a rank-deficient input (whose zeros read as tiny singular values) does not
    get a schedule that amplifies round-off in its null space. The step count is
    data-dependent, the shapes are not: a ``while_loop`` runs to the batch's longest
    schedule and shorter schedules are padded with exact identity steps, so each matrix's
    result does not depend on the others.
    Bi-orthogonally equivariant (the estimate uses traces only).
  * ``"randomized"``: with a Gaussian :math:`\Omega \in \mathbb{R}^{n \times s}`,

    .. math::
      Q = \mathrm{orth}(X \Omega),\qquad \mathrm{polar}(X) \approx Q\,
      \mathrm{polar}(Q^\top X)\quad (\text{SVD of the } s \times n \text{ matrix }
      Q^\top X).

    Exact when ``rank(x) <= s`` (the sketch then spans the range of ``x``); otherwise the
    partial isometry on the sketched range: rank at most ``s``, every singular value 0 or
    1. Cost: three ``m x n x s`` products, an SVD of ``m x s`` (the range basis: no QR,
    which hung jaxlib 0.10.2's CPU runtime inside a train step) and an SVD of ``s x n``;
    no ``m x n x min(m, n)`` product. Left-orthogonally equivariant (``x -> U x`` rotates the
    sketch's range with it); under ``x -> x V^T`` the fixed sketch sees ``x V^T \Omega``,
    so it is equivariant only in distribution over ``key`` (exactly when ``rank(x) <= s``).

  Returns:
    An array of ``x``'s shape and dtype. A zero matrix maps to zero.

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024.
    Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application to
    the Muon Algorithm", arXiv:2505.16932, 2025.
    Nakatsukasa, Bai, Gygi, "Optimizing Halley's iteration for computing the matrix polar
    decomposition", SIAM J. Matrix Anal. Appl., 2010 (QDWH).
    Magakyan, Parrilo, Ozdaglar, "Spectral Scaling Laws of Muon", arXiv:2606.04058, 2026
    ("layer_aware": the idea of a per-layer NS configuration from singular-value quantiles;
    the moment estimate and the schedule bank here are this library's, not the paper's).
    Choudhury, Cheng, Takac, Na, Kolar, "Muon with Nesterov Momentum: Heavy-Tailed Noise and
    (Randomized) Inexact Polar Decomposition", arXiv:2605.06884, 2026 ("randomized"; the
    sketch is the range finder of Halko, Martinsson, Tropp, "Finding structure with
    randomness", SIAM Review, 2011).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from symoptax.polar import polar
    >>> x = jax.random.normal(jax.random.key(0), (64, 16))
    >>> u = polar(x, method="svd")
    >>> bool(jnp.allclose(u.T @ u, jnp.eye(16), atol=1e-4))
    True
    >>> low = x[:, :3] @ jax.random.normal(jax.random.key(1), (3, 16))  # rank 3
    >>> bool(jnp.allclose(polar(low, method="randomized", rank=3), polar(low, method="svd"),
    ...                   atol=1e-4))
    True
    >>> bool(jnp.allclose(polar(x, method="layer_aware"), u, atol=1e-2))
    True
  """
  if side == "auto":
    side = auto_side(method, x.shape)
  check_choice("side", side, SIDES + ("auto",))
  if jnp.ndim(x) < 2:
    raise ValueError(f"polar needs an array of at least 2 dims, got shape {jnp.shape(x)}.")
  return sharded_polar(jnp.asarray(x), method=method, steps=steps, side=side,
                       compute_dtype=compute_dtype, damping=damping, shards=LOCAL, rank=rank,
                       oversampling=oversampling, key=key, quantile=quantile)


def sharded_polar(x: jax.Array, *, method: str, steps: int | None, side: str,
                  compute_dtype: Any, damping: float | None,
                  shards: MatrixShards, rank: int | None = None,
                  oversampling: int | None = None, key: jax.Array | None = None,
                  quantile: float | None = None) -> jax.Array:
  """:func:`polar` on local blocks inside ``shard_map`` (``side`` resolved, not "auto").

  ``shards`` names the mesh axes that split the rows and columns of ``x``: the Gram of the
  right (left) side is summed over the row (column) shards with one ``psum``, and the
  iteration then runs on the replicated small Gram. The full side needs whole matrices
  (``shards`` without axes). See :mod:`symoptax.sharding`.
  """
  if side == "full" and (shards.rows or shards.cols):
    raise ValueError("full-side polar needs whole matrices; move them with "
                     "symoptax.sharding.MatrixShards.whole (all_to_all) first.")
  options = {"rank": (rank, "randomized"), "oversampling": (oversampling, "randomized"),
             "key": (key, "randomized"), "quantile": (quantile, "layer_aware")}
  for name, (value, owner) in options.items():
    if value is not None and method != owner:
      raise ValueError(f"polar: {name}={value!r} applies to method {owner!r} only, "
                       f"got method {method!r}.")
  compute_dtype = resolve_compute_dtype(compute_dtype, method, side)
  dtype = x.dtype
  work = x.astype(jnp.promote_types(dtype, jnp.float32))
  # The polar factor is scale-invariant; dividing by the largest entry first keeps the
  # Frobenius norm and the Gram representable for inputs from ~1e-30 to ~1e30.
  amax = shards.max(jnp.abs(work), (-2, -1))
  work = work / jnp.where(amax > 0, amax, 1.0)
  if side == "full":
    check_choice("full-side polar method", method, FULL_METHODS)
    if method == "svd":
      out = _svd(work)
    elif method == "qdwh":
      out = _qdwh(work)
    elif method == "layer_aware":
      out = _layer_aware(work, _check_quantile(quantile),
                         None if steps is None else static_steps(steps), compute_dtype)
    elif method == "randomized":
      if steps is not None:
        raise ValueError(f"polar: method 'randomized' takes no steps, got steps={steps}.")
      out = _randomized(work, rank, oversampling, key, compute_dtype)
    else:
      out = _full_polynomial(work, coefficients(method, steps), _SCALE[method], compute_dtype)
  else:
    check_choice(f"{side}-side (Gram) polar method", method, GRAM_METHODS)
    if compute_dtype is not None:
      # The output must be the polar factor of the very matrix whose Gram was formed: an
      # inverse square root amplifies any mismatch along small singular directions.
      work = work.astype(compute_dtype).astype(work.dtype)
    gram = _gram(work, side, compute_dtype)
    long_side = shards.rows if side == "right" else shards.cols
    if long_side:
      gram = jax.lax.psum(gram, long_side)
    damping = GRAM_DAMPING[method] if damping is None else damping
    if method == "eigh":
      r = _gram_eigh(gram, damping)
    else:
      r = _gram_polynomial(gram, coefficients(method, steps), _SCALE[method], damping)
    if GRAM_POLISH[method]:
      r = _polish(r, gram)
    out = _apply(work, r, side)
  return out.astype(dtype)


def auto_side(method: str, shape: Sequence[int]) -> str:
  """The cheaper Gram side for Gram-capable methods, else "full"."""
  if method in GRAM_METHODS:
    return "right" if shape[-2] >= shape[-1] else "left"
  return "full"
