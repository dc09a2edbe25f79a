"""Polar oracles: the orthogonal polar factor of a batch of matrices.

For ``X = U diag(s) V^T`` (thin SVD) the polar factor is ``U V^T``; for a rank-deficient ``X``
every oracle here aims at the partial isometry ``U_r V_r^T`` over the nonzero singular values,
so a zero input gives a zero output. Arrays are ``[..., m, n]``, batched over leading axes.

Two families:

* **full side** (``side="full"``): iterate on the matrix itself. ``"muon_ns"`` (Jordan's
  quintic Newton-Schulz), ``"polar_express"`` (Amsel et al.'s 5-step table), ``"dsv4"``
  (DeepSeek-V4: Muon's quintic for 8 steps, then a converging quintic for 2), ``"qdwh"``
  (``jax.lax.linalg.qdwh``) and ``"svd"`` (exact reference).
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

from typing import Any, Sequence

import jax
import jax.numpy as jnp

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

FULL_METHODS = ("muon_ns", "polar_express", "dsv4", "qdwh", "svd")
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


def polar(
    x: jax.Array,
    *,
    method: str = "polar_express",
    steps: int | None = None,
    side: str = "full",
    compute_dtype: Any = "auto",
    damping: float | None = None,
) -> jax.Array:
  r"""Orthogonal polar factor of a batch of matrices.

  .. math::
    \mathrm{polar}(X) = U V^\top \quad\text{for}\quad X = U \Sigma V^\top,\qquad
    X (X^\top X)^{-1/2} \;(\text{right}),\qquad (X X^\top)^{-1/2} X \;(\text{left}).

  Args:
    x: array of shape ``[..., m, n]``; leading axes are batch axes.
    method: oracle name. ``side="full"``: one of ``"muon_ns", "polar_express", "dsv4",
      "qdwh", "svd"``. ``side="right"``/``"left"``: one of ``"polar_express",
      "newton_schulz", "eigh"``.
    steps: iteration count for ``"muon_ns"`` (default 5) and ``"newton_schulz"`` (default
      24); ``"polar_express"`` (5) and ``"dsv4"`` (10) only accept their table's count.
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

  Returns:
    An array of ``x``'s shape and dtype. A zero matrix maps to zero.

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024.
    Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application to
    the Muon Algorithm", arXiv:2505.16932, 2025.
    Nakatsukasa, Bai, Gygi, "Optimizing Halley's iteration for computing the matrix polar
    decomposition", SIAM J. Matrix Anal. Appl., 2010 (QDWH).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from symoptax.polar import polar
    >>> x = jax.random.normal(jax.random.key(0), (64, 16))
    >>> u = polar(x, method="svd")
    >>> bool(jnp.allclose(u.T @ u, jnp.eye(16), atol=1e-4))
    True
  """
  if side == "auto":
    side = auto_side(method, x.shape)
  check_choice("side", side, SIDES + ("auto",))
  if jnp.ndim(x) < 2:
    raise ValueError(f"polar needs an array of at least 2 dims, got shape {jnp.shape(x)}.")
  return sharded_polar(jnp.asarray(x), method=method, steps=steps, side=side,
                       compute_dtype=compute_dtype, damping=damping, shards=LOCAL)


def sharded_polar(x: jax.Array, *, method: str, steps: int | None, side: str,
                  compute_dtype: Any, damping: float | None,
                  shards: MatrixShards) -> jax.Array:
  """:func:`polar` on local blocks inside ``shard_map`` (``side`` resolved, not "auto").

  ``shards`` names the mesh axes that split the rows and columns of ``x``: the Gram of the
  right (left) side is summed over the row (column) shards with one ``psum``, and the
  iteration then runs on the replicated small Gram. The full side needs whole matrices
  (``shards`` without axes). See :mod:`symoptax.sharding`.
  """
  if side == "full" and (shards.rows or shards.cols):
    raise ValueError("full-side polar needs whole matrices; move them with "
                     "symoptax.sharding.MatrixShards.whole (all_to_all) first.")
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
