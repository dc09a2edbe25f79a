"""The literature's primitives: column normalisation, spectral clipping, high-pass and
leverage-aware polar factors, NorMuon's row statistics, NAMO's and NAMO-D's adaptive steps.

Each is an ``optax.GradientTransformation`` built on the core's matrix machinery
(:mod:`symoptax.transforms`, :mod:`symoptax.polar`, :mod:`symoptax.sharding`), sharded the same
way. The named optimizers that chain them are in :mod:`symoptax.variants.aliases`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.axes import AxesLike, flatten_with_layouts, resolve_axes
from symoptax.docstrings import shared_args
from symoptax.shards import LOCAL
from symoptax.transforms import (map_with_stats, matrix_transform, safe_norm, safe_scale,
                                 validate_polar)


@shared_args
def scale_by_col_norm(eps: ArrayLike = 1e-8, *, axes: AxesLike = None, shardings: Any = None,
                      mesh: Any = None) -> optax.GradientTransformation:
  r"""Normalises every column of every matrix leaf to unit Euclidean norm.

  .. math::
    G_{:, j} \mapsto \frac{G_{:, j}}{\|G_{:, j}\|_2 + \epsilon}

  The mirror image of :func:`scale_by_row_norm`: equivariant under ``G -> U G P`` for an
  orthogonal ``U`` and a column permutation ``P``; scale-invariant for columns whose norm is
  far above ``eps`` (an absolute stabiliser), at any scale up to ~1e30 (:func:`safe_norm`).

  Args:
    eps: added to each column norm.
    axes: which axes form rows and cols.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """
  return matrix_transform(lambda x, sh: (x / (safe_norm(x, -2, sh) + eps)).astype(x.dtype), axes,
                    shardings=shardings, mesh=mesh, reductions_only=True)


def clip_singular_values(x: jax.Array, bound: ArrayLike, *, method: str = "polar_express",
                         compute_dtype: Any = "auto") -> jax.Array:
  r"""Clips the singular values of ``x`` at ``bound`` with polar calls (no SVD).

  For a tall :math:`X = U \Sigma V^\top` (a wide one is transposed) and :math:`c` =
  ``bound``, one polar factor of the stacked :math:`(m+n) \times n` matrix gives two
  bounded functions of :math:`\Sigma`, one polar factor of a symmetric :math:`n \times n`
  matrix (its sign) decides which of :math:`\sigma, c` is smaller, and a Newton-Schulz
  inverse square root of a matrix with spectrum in :math:`[\tfrac12, 1]` combines them:

  .. math::
    \mathrm{polar}\begin{bmatrix} X \\ cI \end{bmatrix} = \begin{bmatrix} T \\ B
    \end{bmatrix},\quad T = U \tfrac{\Sigma}{\sqrt{\Sigma^2 + c^2}} V^\top,\quad
    B = V \tfrac{c}{\sqrt{\Sigma^2 + c^2}} V^\top,\\
    D = I - 2B^2,\quad K = \tfrac12 \left(I + D\,\mathrm{sign}(D)\right)
    = V \tfrac{\max(\Sigma, c)^2}{\Sigma^2 + c^2} V^\top,\\
    \mathrm{clip}_c(X) = c\, T K^{-1/2} = U \min(\Sigma, c) V^\top .

  Every intermediate lies in [-1, 1] whatever :math:`\sigma_{max}/c`, and no two nearly
  equal terms are subtracted, so the result stays within ``bound`` (up to the oracle's error
  on :math:`T`, :math:`B`) at any ratio, and directions below ``bound`` keep their size to
  the oracle's relative accuracy (their :math:`c \tau / \beta` is a ratio of two outputs of
  the same polar call). Directions the oracle cannot resolve (singular values below ~1e-4
  of the largest for the polynomial oracles) come out no larger than ``bound``.
  """
  m, n = x.shape[-2:]
  if m < n:
    return jnp.swapaxes(clip_singular_values(jnp.swapaxes(x, -1, -2), bound, method=method,
                                             compute_dtype=compute_dtype), -1, -2)
  f32 = jnp.promote_types(x.dtype, jnp.float32)
  c = jnp.asarray(bound, f32)
  eye = jnp.eye(n, dtype=f32)
  stacked = jnp.concatenate([x.astype(f32), jnp.broadcast_to(c * eye, x.shape[:-2] + (n, n))],
                            axis=-2)
  polar = lambda a: polar_lib.polar(a, method=method, side="full", compute_dtype=compute_dtype)
  pz = polar(stacked)
  t, b = pz[..., :m, :], pz[..., m:, :]
  b = 0.5 * (b + jnp.swapaxes(b, -1, -2))
  d = eye - 2.0 * polar_lib.matmul(b, b)  # eigenvalues (s^2 - c^2) / (s^2 + c^2)
  abs_d = polar_lib.matmul(d, polar(d))
  k = 0.5 * eye + 0.25 * (abs_d + jnp.swapaxes(abs_d, -1, -2))
  return (c * polar_lib.matmul(t, _inv_sqrt_half_to_one(k))).astype(x.dtype)


def _inv_sqrt_half_to_one(k: jax.Array, iters: int = 4) -> jax.Array:
  """``K^{-1/2}`` for symmetric ``K`` with spectrum in [1/2, 1]: coupled Newton-Schulz on
  ``4/3 K`` (spectrum within 1/3 of 1: residual 1/3 -> 1e-9 in four steps)."""
  eye = jnp.eye(k.shape[-1], dtype=k.dtype)
  y, z = k * (4.0 / 3.0), jnp.broadcast_to(eye, k.shape)
  for _ in range(iters):
    t = 1.5 * eye - 0.5 * polar_lib.matmul(z, y)
    y, z = polar_lib.matmul(y, t), polar_lib.matmul(t, z)
  return z * (4.0 / 3.0) ** 0.5


def _clip_and_polar(x, bound, method, compute_dtype):
  r"""(clip_c(x), polar(x)) from two polar calls of ``x``'s shape.

  With :math:`Q = \mathrm{polar}(X)` and :math:`P = \mathrm{polar}(X - cQ)`,
  :math:`Q P^\top (X - cQ) = U |\Sigma - c| V^\top`, so :math:`\mathrm{clip}_c(X) =
  \tfrac12 (X + cQ - Q P^\top (X - cQ))`. The oracle's relative error on :math:`P` enters
  as an absolute error of order :math:`\delta \, |\sigma - c|`, so this form is accurate
  only for moderate :math:`\sigma_{max}/c` (it stops clipping beyond ~1e3 with "dsv4"):
  :func:`high_pass_polar` uses it (its ratio is at most :math:`\sqrt{\min(m, n)}` /
  threshold and it needs :math:`Q` anyway); :func:`clip_singular_values` does not.
  """
  q = polar_lib.polar(x, method=method, side="full", compute_dtype=compute_dtype)
  r = x - bound * q
  p = polar_lib.polar(r, method=method, side="full", compute_dtype=compute_dtype)
  mm = polar_lib.matmul
  # Q P^T R through the small side: (Q P^T) R for wide x, Q (P^T R) for tall x.
  if x.shape[-2] <= x.shape[-1]:
    abs_part = mm(mm(q, jnp.swapaxes(p, -1, -2)), r)
  else:
    abs_part = mm(q, mm(jnp.swapaxes(p, -1, -2), r))
  return 0.5 * (x + bound * q - abs_part), q


@shared_args
def scale_by_spectral_clip(bound: ArrayLike = 1.0, *, method: str = "dsv4",
                           axes: AxesLike = None, compute_dtype: Any = "auto",
                           shardings: Any = None, mesh: Any = None
                           ) -> optax.GradientTransformation:
  r"""Clips every matrix update's singular values at ``bound`` (SPECTRA-style).

  .. math::
    U \Sigma V^\top \mapsto U \min(\Sigma, c) V^\top

  Computed with two polar calls (:func:`clip_singular_values`: one of the stacked
  :math:`[X; cI]`, one of a small symmetric matrix), exact with ``method="svd"``/``"qdwh"``.
  The default "dsv4" converges (sigma within ~5e-4 of 1 up to cond ~1e3): measured relative
  error to the SVD clip <= 3e-4 and spectral norm <= ``bound`` (to 1e-4) for
  :math:`\sigma_{max}/c` from 1e-3 to 1e8, i.e. at any gradient scale. Polar Express's 14%
  spread is too coarse here (clipped singular values up to ~1.15c). Bi-orthogonally
  equivariant; not scale-invariant (``bound`` is absolute): linear in the input below it,
  ``bound`` times the polar factor far above it.

  Args:
    bound: the largest singular value ``c`` an update may keep.
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """
  validate_polar(method, "full", None)
  return matrix_transform(lambda x, sh: sh.whole(lambda w: clip_singular_values(
      w, bound, method=method, compute_dtype=compute_dtype), x),
      axes, shardings=shardings, mesh=mesh)


def high_pass_polar(x: jax.Array, threshold: ArrayLike = 0.5, strength: ArrayLike = 1.0, *,
                    method: str = "dsv4", compute_dtype: Any = "auto") -> jax.Array:
  r"""Polar factor that keeps strong directions and damps weak ones (Pion-style high-pass).

  With :math:`X = U \Sigma V^\top`, :math:`\tau = \text{threshold} \cdot \|X\|_F /
  \sqrt{\min(m, n)}` (a multiple of the RMS singular value, so the map is scale-invariant)
  and strength :math:`s \in [0, 1]`:

  .. math::
    h(\sigma) = \begin{cases} 1 & \sigma \ge \tau \\
      (1 - s) + s\, \sigma / \tau & \sigma < \tau \end{cases},\qquad
    \text{out} = U h(\Sigma) V^\top = (1 - s)\, Q + s\, \mathrm{clip}_\tau(X) / \tau

  with :math:`Q = \mathrm{polar}(X)`: two polar calls, no SVD. ``strength=0`` is the polar
  factor (Muon); ``strength=1`` sends singular values below ``tau`` linearly to 0.
  """
  m, n = x.shape[-2:]
  y, _ = safe_scale(x, LOCAL)  # scale-free map: in units of the largest entry, so that
  # ||X||_F neither overflows nor underflows (inputs from ~1e-30 to ~1e30)
  tau = threshold * jnp.sqrt(jnp.sum(y * y, axis=(-2, -1), keepdims=True)) / jnp.sqrt(min(m, n))
  tau = jnp.maximum(tau, jnp.finfo(jnp.float32).tiny)
  clipped, q = _clip_and_polar(y, tau, method, compute_dtype)
  return ((1 - strength) * q + strength * clipped / tau).astype(x.dtype)


@shared_args
def scale_by_high_pass_polar(threshold: ArrayLike = 0.5, strength: ArrayLike = 1.0, *,
                             method: str = "dsv4", axes: AxesLike = None,
                             compute_dtype: Any = "auto", shardings: Any = None,
                             mesh: Any = None) -> optax.GradientTransformation:
  r"""Replaces every matrix update by its high-pass polar factor (:func:`high_pass_polar`).

  Singular values at or above ``threshold`` times the RMS singular value map to 1, those
  below move toward 0 with ``strength``. Bi-orthogonally equivariant.

  Args:
    threshold: ``tau`` as a multiple of the RMS singular value ``||X||_F / sqrt(min(m, n))``.
    strength: 0 (plain polar) .. 1 (linear high-pass below ``tau``).
    method: full-side polar oracle (default "dsv4": the clip needs converged factors).
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """
  validate_polar(method, "full", None)
  return matrix_transform(lambda x, sh: sh.whole(lambda w: high_pass_polar(
      w, threshold, strength, method=method, compute_dtype=compute_dtype), x),
      axes, shardings=shardings, mesh=mesh)


def leverage_polar(x: jax.Array, steps: int = 2, row_power: ArrayLike = 0.5,
                   eps: ArrayLike = 1e-8, *, method: str = "polar_express",
                   compute_dtype: Any = "auto") -> jax.Array:
  r"""Leverage-aware polar factor (Aurora): ``polar(D X)`` with a row scaling ``D`` chosen so
  that its rows have equal norms.

  For a tall ``m x n`` matrix the squared row norms of ``polar(X)`` are the leverage scores
  of ``X`` (summing to ``n``), which can be very uneven; Aurora rescales the rows of ``X`` so
  that every row of the result has norm :math:`\rho = \sqrt{n/m}`:

  .. math::
    D_1 = \mathrm{diag}(1 / \|X_i\|),\quad U_k = \mathrm{polar}(D_k X),\quad
    D_{k+1} = D_k \, \mathrm{diag}\big((\rho^2 / \|(U_k)_i\|^2)^{p}\big)

  returning :math:`U_{\text{steps}}` (``steps`` polar calls); :math:`p` = ``row_power`` = 0.5
  is the undamped square-root step, smaller values damp oscillations. With ``steps=1`` this
  is, for tall matrices, ``polar(R(X))``: the row-then-polar map of
  :func:`symoptax.hybrid_polargrad_m` (no nu scaling, no centring). Square and wide matrices
  already have polar factors with equal row norms (orthonormal rows) and get the plain polar
  factor, whatever ``steps``. Zero rows stay zero. Equivariant under row permutations and
  right orthogonal maps (LPRO). Scale-invariant at any scale: ``X`` is first divided by its
  largest entry, so the row norms cannot overflow and ``eps`` (which only keeps zero rows
  finite) is relative to that entry.
  """
  if steps < 1:
    raise ValueError(f"leverage_polar: steps must be >= 1, got {steps}.")
  m, n = x.shape[-2:]
  polar = lambda a: polar_lib.polar(a, method=method, side="full", compute_dtype=compute_dtype)
  if m <= n:
    return polar(x)
  dtype = x.dtype
  x, _ = safe_scale(x, LOCAL)
  d = 1.0 / (jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + eps)
  u = polar(d * x)
  for _ in range(steps - 1):
    leverage = jnp.sum(jnp.square(u), axis=-1, keepdims=True)
    # Rows with no leverage (zero rows of x) keep their scaling instead of growing to inf.
    d = jnp.where(leverage > eps, d * jnp.power((n / m) / (leverage + eps), row_power), d)
    u = polar(d * x)
  return u.astype(dtype)


@shared_args
def scale_by_leverage_polar(steps: int | None = None, row_power: ArrayLike = 0.5,
                            eps: ArrayLike = 1e-8,
                            *, method: str = "polar_express", axes: AxesLike = None,
                            compute_dtype: Any = "auto", shardings: Any = None,
                            mesh: Any = None) -> optax.GradientTransformation:
  r"""Replaces every matrix update by its leverage-aware polar factor (:func:`leverage_polar`).

  Args:
    steps: number of polar calls (1 = row normalisation then polar; None: 2). A static int:
      under ``optax.inject_hyperparams`` pass ``static_args=("steps",)``.
    row_power: exponent of each row-scaling correction on the leverage scores (0.5:
      undamped; smaller: damped).
    eps: added to row norms (in units of the largest entry) and leverage scores.
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Dewulf, Pai, Yang, Zhang, Keigwin, "Aurora: A Leverage-Aware Spectral Optimizer",
    arXiv:2606.27715, 2026.
  """
  validate_polar(method, "full", None)
  steps = 2 if steps is None else polar_lib.static_steps(steps)
  if steps < 1:
    raise ValueError(f"scale_by_leverage_polar: steps must be >= 1, got {steps}.")
  return matrix_transform(lambda x, sh: sh.whole(lambda w: leverage_polar(
      w, steps, row_power, eps, method=method, compute_dtype=compute_dtype), x),
      axes, shardings=shardings, mesh=mesh)


class ScaleByRowSecondMomentState(NamedTuple):
  """State of :func:`scale_by_row_second_moment`."""
  count: jax.Array  # int32 scalar, steps taken
  nu: Any  # per matrix leaf: [*batch, *rows] float32 sqrt(v_t), the root of the EMA of the
  # mean squared row entry (the root keeps it finite for inputs up to ~1e30)


@shared_args
def scale_by_row_second_moment(b2: ArrayLike = 0.95, eps: ArrayLike = 1e-8, *,
                               axes: AxesLike = None, shardings: Any = None,
                               mesh: Any = None) -> optax.GradientTransformation:
  r"""Per-row adaptive normalisation, rescaled to keep the input's Frobenius norm (NorMuon).

  .. math::
    v_t = \beta_2 v_{t-1} + (1-\beta_2)\,\mathrm{mean}_j O_{ij}^2,\quad
    \hat O_{ij} = \frac{O_{ij}}{\sqrt{v_{t,i}} + \epsilon},\quad
    \text{out} = \hat O \,\frac{\|O\|_F}{\|\hat O\|_F}

  Row-wise, so equivariant under row permutations and right orthogonal maps (LPRO).
  Scale-invariant while :math:`\sqrt{v_t} \gg \epsilon` (an absolute stabiliser, as
  Adam's); the state keeps :math:`\sqrt{v_t}` and every norm is taken in units of the
  largest entry, so inputs from ~1e-30 to ~1e30 give finite outputs.

  Args:
    b2: EMA coefficient of the per-row second moment.
    eps: added to the root of the second moment.
    axes: which axes form rows and cols.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Li et al., "NorMuon: Making Muon more efficient and scalable", arXiv:2510.05491, 2025.
  """
  def init_fn(params):
    leaves, treedef, lays = flatten_with_layouts(params, resolve_axes(axes, params))
    nu = [None if lay is None else jnp.zeros(sharding_lib.stat_shape(lay, "rows"), jnp.float32)
          for lay in lays]
    nu = sharding_lib.shard_stats(treedef.unflatten(nu), params, resolve_axes(axes, params),
                                  shardings, mesh, "rows")
    return ScaleByRowSecondMomentState(jnp.zeros([], jnp.int32), nu)

  def fn(o, extras, stats, shards):
    del extras
    (root_v,) = stats  # sqrt(v_{t-1})
    cols = shards.matrix_shape(o)[1]
    # sqrt(v_t) = sqrt(b2 v_{t-1} + (1 - b2) ||O_i||^2 / cols) in units of the larger of its
    # two terms, and every norm in units of the largest entry: nothing squared leaves [0, 1],
    # so no input scale overflows (the plain v_t would from entries of ~1e19).
    row = (safe_norm(o, -1, shards) / jnp.sqrt(cols))[..., 0]
    top = jnp.maximum(root_v, row)
    unit = jnp.where(top > 0, top, 1.0)
    root_v = top * jnp.sqrt(b2 * jnp.square(root_v / unit) + (1 - b2) * jnp.square(row / unit))
    scaled = o / (root_v[..., None] + eps)
    ratio = (safe_norm(o, (-2, -1), shards)
             / jnp.maximum(safe_norm(scaled, (-2, -1), shards), jnp.finfo(jnp.float32).tiny))
    return (scaled * ratio).astype(o.dtype), [root_v]

  def update_fn(updates, state, params=None):
    tree = params if params is not None else updates
    out, (nu,) = map_with_stats(fn, updates, tree, resolve_axes(axes, tree), shardings, mesh,
                                 stats=[state.nu], stat_kinds=["rows"])
    return out, ScaleByRowSecondMomentState(optax.safe_increment(state.count), nu)

  return optax.GradientTransformation(init_fn, update_fn)


class ScaleByNamoState(NamedTuple):
  """State of :func:`scale_by_namo`."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # first moment (EMA of gradients), like the params
  nu: Any  # per matrix leaf: sqrt(v_t), the root of the EMA of ||G||_F^2 ([*batch], NAMO)


@shared_args
def scale_by_namo(b1: ArrayLike = 0.95, b2: ArrayLike = 0.99, eps: ArrayLike = 1e-8,
                  weight_decay: ArrayLike = 0.0, *, method: str = "polar_express",
                  axes: AxesLike = None, compute_dtype: Any = "auto", mu_dtype: Any = None,
                  shardings: Any = None, mesh: Any = None) -> optax.GradientTransformation:
  r"""NAMO's step: orthogonalised momentum times an Adam-type scalar step size per matrix.

  .. math::
    M_t = \beta_1 M_{t-1} + (1-\beta_1) G_t,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) \|G_t\|_F^2,\\
    \alpha_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{\|M_t\|_F}{\sqrt{v_t}+\epsilon},
    \quad \text{out} = \alpha_t \left(\mathrm{polar}(M_t) + \lambda W\right)

  The decoupled weight decay ``lambda`` is scaled by ``alpha`` as in the paper, so it lives
  here rather than in a later ``optax.add_decayed_weights``. Bi-orthogonally equivariant
  (every quantity is a Frobenius norm or the polar factor). Scale-invariant (``G -> kG``)
  while :math:`\sqrt{v_t} \gg \epsilon`: ``eps`` is absolute, as Adam's, so gradients of
  norm ~``eps`` and below get proportionally smaller steps (the reference formula). The state
  keeps :math:`\sqrt{v_t}` and the norms are taken in units of the largest entry, so the
  step is finite and exact for gradients from ~1e-30 to ~1e30. Leaves without axes (vectors) get
  the plain EMA momentum, as the other named optimizers give them.

  Args:
    b1: EMA coefficient of the momentum.
    b2: EMA coefficient of the squared gradient norm.
    eps: added to ``sqrt(v)``.
    weight_decay: ``lambda``.
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Zhang, Liu, Schaeffer, "Adam Improves Muon: Adaptive Moment Estimation with
    Orthogonalized Momentum", arXiv:2602.17080, 2026.
  """
  return _adaptive_polar(name="scale_by_namo", b1=b1, b2=b2, eps=eps,
                         weight_decay=weight_decay, clamp=None, method=method, axes=axes,
                         compute_dtype=compute_dtype, mu_dtype=mu_dtype,
                         shardings=shardings, mesh=mesh)


@shared_args
def scale_by_namo_d(b1: ArrayLike = 0.95, b2: ArrayLike = 0.99, eps: ArrayLike = 1e-8,
                    weight_decay: ArrayLike = 0.0, clamp: ArrayLike = 0.5, *,
                    method: str = "polar_express", axes: AxesLike = None,
                    compute_dtype: Any = "auto", mu_dtype: Any = None, shardings: Any = None,
                    mesh: Any = None) -> optax.GradientTransformation:
  r"""NAMO-D's step: orthogonalised momentum right-multiplied by a clamped diagonal of
  per-column Adam-type step sizes.

  .. math::
    M_t = \beta_1 M_{t-1} + (1-\beta_1) G_t,\quad
    v_{t,j} = \beta_2 v_{t-1,j} + (1-\beta_2) \|G_{t,:,j}\|^2,\\
    d_j = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{\|M_{t,:,j}\|}{\sqrt{v_{t,j}}+\epsilon},
    \quad \bar d = \mathrm{mean}_j\, d_j,\quad
    \tilde d_j = \mathrm{clip}(d_j,\, c\,\bar d,\, \bar d / c),\\
    \text{out} = \left(\mathrm{polar}(M_t) + \lambda W\right) \mathrm{diag}(\tilde d)

  ``clamp`` :math:`c \in (0, 1]` bounds the condition number of the diagonal by
  :math:`1/c^2`: ``c = 1`` gives one step size per matrix (the mean), small ``c`` lets every
  column adapt to its own noise level. One float per column of state besides the momentum
  (:math:`\sqrt{v_{t,j}}`, kept as a root so that it cannot overflow). Equivariant under left
  orthogonal maps and column permutations (every statistic is a column norm). Scale-invariant
  while :math:`\sqrt{v_{t,j}} \gg \epsilon` (an absolute, Adam-style stabiliser, as in the
  reference); finite for gradients from ~1e-30 to ~1e30.

  Args:
    b1: EMA coefficient of the momentum.
    b2: EMA coefficient of the squared column norms of the gradient.
    eps: added to ``sqrt(v)``.
    weight_decay: ``lambda``, scaled by the diagonal as the polar step is.
    clamp: ``c``.
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Zhang, Liu, Schaeffer, "Adam Improves Muon: Adaptive Moment Estimation with
    Orthogonalized Momentum", arXiv:2602.17080, 2026 (NAMO-D).
  """
  if isinstance(clamp, (int, float)) and not 0 < clamp <= 1:
    raise ValueError(f"scale_by_namo_d: clamp must be in (0, 1], got {clamp!r}.")
  return _adaptive_polar(name="scale_by_namo_d", b1=b1, b2=b2, eps=eps,
                         weight_decay=weight_decay, clamp=clamp, method=method, axes=axes,
                         compute_dtype=compute_dtype, mu_dtype=mu_dtype,
                         shardings=shardings, mesh=mesh)


def _adaptive_polar(*, name, b1, b2, eps, weight_decay, clamp, method, axes, compute_dtype,
                    mu_dtype, shardings, mesh):
  """NAMO (``clamp=None``: one Adam-type step size per matrix, from Frobenius norms) and
  NAMO-D (one per column, from column norms, clamped to ``[c mean, mean / c]``)."""
  validate_polar(method, "full", None)
  per_column = clamp is not None
  kind = "cols" if per_column else "matrix"
  reduce_axes = -2 if per_column else (-2, -1)

  def init_fn(params):
    leaves, treedef, lays = flatten_with_layouts(params, resolve_axes(axes, params))
    mu = [None if p is None else jnp.zeros_like(p, dtype=mu_dtype) for p in leaves]
    nu = [None if lay is None else jnp.zeros(sharding_lib.stat_shape(lay, kind), jnp.float32)
          for lay in lays]
    nu = sharding_lib.shard_stats(treedef.unflatten(nu), params, resolve_axes(axes, params),
                                  shardings, mesh, kind)
    return ScaleByNamoState(jnp.zeros([], jnp.int32), treedef.unflatten(mu), nu)

  def update_fn(updates, state, params=None):
    if params is None and not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
      raise ValueError(f"{name} with weight_decay needs params in update().")
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bias = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    mu = jax.tree.map(lambda m, g: (b1 * m + (1 - b1) * g).astype(m.dtype), state.mu, updates)

    def fn(gb, extras, stats, shards):
      mb, pb = extras
      (root_v,) = stats  # sqrt(v_{t-1})
      # Norms in units of the largest entry ([B, 1, cols] or [B, 1, 1]), and
      # sqrt(v_t) = sqrt(b2 v_{t-1} + (1 - b2) ||G||^2) in units of the larger of its two
      # terms: nothing is squared outside [0, 1], so no gradient scale overflows.
      g_norm = safe_norm(gb, reduce_axes, shards).reshape(root_v.shape)
      top = jnp.maximum(root_v, g_norm)
      unit = jnp.where(top > 0, top, 1.0)
      root_v = top * jnp.sqrt(b2 * jnp.square(root_v / unit)
                              + (1 - b2) * jnp.square(g_norm / unit))
      m_norm = safe_norm(mb, reduce_axes, shards)
      alpha = bias * m_norm / (root_v.reshape(m_norm.shape) + eps)
      if per_column:  # clamped around its mean over the (global) columns
        mean = shards.sum(alpha, -1) / shards.matrix_shape(gb)[1]
        alpha = jnp.clip(alpha, clamp * mean, mean / clamp)
      step = shards.whole(lambda w: polar_lib.polar(w, method=method, side="full",
                                                    compute_dtype=compute_dtype), mb)
      if pb is not None:
        step = step + weight_decay * pb
      return alpha * step, [root_v]

    tree = params if params is not None else updates
    # Matrix leaves get alpha * (polar(M) + wd W); vectors the plain EMA momentum, as in the
    # other named optimizers.
    axes_tree = resolve_axes(axes, tree)
    out, (nu,) = map_with_stats(fn, updates, tree, axes_tree, shardings, mesh,
                                 extras=[mu, params], stats=[state.nu], stat_kinds=[kind])
    out = jax.tree.map(lambda o, m, ax: m if ax is None else o, out, mu, axes_tree,
                       is_leaf=lambda x: x is None)
    return out, ScaleByNamoState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
