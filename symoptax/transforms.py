"""Symmetry-compatible primitives: row normalisation, polar steps, centring, shape scaling.

Each primitive is an ``optax.GradientTransformation`` that holds no learning rate and no
state (``optax.EmptyState``); it reads every leaf as a batch of ``[rows, cols]`` matrices
(see :class:`symoptax.MatrixAxes`) and passes leaves whose axes are ``None`` (by default the
0-D and 1-D ones) through unchanged. Chain them with optax's momentum, weight decay and
learning-rate transforms.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.axes import (AxesLike, flatten_with_layouts, map_leaf_matrices, map_matrices,
                           resolve_axes)
from symoptax.docstrings import shared_args
from symoptax.shards import LOCAL, MatrixShards

SHAPE_RULES = ("muon", "rms", "spectral", "none")
# Update-scale conventions of the matrix rules (the ``scale=`` keyword of the named
# optimizers and of symmetry_stack; see README "Update scales").
SCALES = ("nuclear", "nuclear_rel", "rms", "spectral")


def _stateless(fn_of_batch, axes: AxesLike, *, shardings: Any = None, mesh: Any = None,
               reductions_only: bool = False) -> optax.GradientTransformation:
  """A stateless transform applying ``fn_of_batch(x, shards)`` to every matrix leaf.

  ``x`` is a ``[B, rows, cols]`` batch; ``shards`` (:class:`symoptax.sharding.MatrixShards`)
  does the row/column reductions and whole-matrix moves. Without ``shardings`` the batch is
  whole and ``shards`` is ``LOCAL``; with them ``fn_of_batch`` runs under ``shard_map`` on
  local blocks (see :mod:`symoptax.sharding`). ``reductions_only``: ``fn_of_batch`` uses
  ``shards`` only for :meth:`sum`, :meth:`max` and :meth:`matrix_shape` and broadcasts, so
  unsharded leaves are processed in their own layout (:func:`symoptax.axes.map_leaf_matrices`).
  """

  def update_fn(updates, state, params=None):
    tree = params if params is not None else updates
    axes_tree = resolve_axes(axes, tree)
    if shardings is not None:
      mesh_, leaf_shardings = sharding_lib.resolve_shardings(shardings, mesh, tree)
      if mesh_ is not None:
        return sharding_lib.map_matrices_sharded(fn_of_batch, updates, axes_tree,
                                                 leaf_shardings, mesh_), state
    if reductions_only:
      return map_leaf_matrices(fn_of_batch, updates, axes_tree), state
    return map_matrices(lambda x: fn_of_batch(x, LOCAL), updates, axes_tree), state

  return optax.GradientTransformation(_checked_init(axes, shardings, mesh), update_fn)


def _checked_init(axes: AxesLike, shardings: Any, mesh: Any):
  """A stateless transform's ``init``: fails at init on bad axes or shardings, naming the
  leaf."""

  def init_fn(params):
    resolve_axes(axes, params)
    if shardings is not None:
      sharding_lib.resolve_shardings(shardings, mesh, params)
    return optax.EmptyState()
  return init_fn


def row_norm(x: jax.Array, eps: ArrayLike = 1e-8, shards: MatrixShards = LOCAL) -> jax.Array:
  r"""Row normalisation of ``[..., rows, cols]``: :math:`x_i / (\|x_i\|_2 + \epsilon)`.

  The norms are taken in units of each row's largest entry (:func:`safe_norm`), so they are
  exact for entries from ~1e-30 to ~1e30; ``eps`` is absolute, so rows whose norm is not
  far above it are shrunk rather than normalised.
  """
  return (x / (safe_norm(x, -1, shards) + eps)).astype(x.dtype)


@shared_args
def scale_by_row_norm(eps: ArrayLike = 1e-8, *, axes: AxesLike = None, shardings: Any = None,
                      mesh: Any = None) -> optax.GradientTransformation:
  r"""Normalises every row of every matrix leaf to unit Euclidean norm.

  .. math::
    R(G)_i = \frac{G_i}{\|G_i\|_2 + \epsilon}

  Equivariant under ``G -> P G Q`` for a row permutation ``P`` and an orthogonal ``Q``
  (left-permutation / right-orthogonal, "LPRO"); not under a left rotation. Scale-invariant
  (``G -> kG``) for rows whose norm is far above ``eps``: the norms are computed without
  overflow (:func:`safe_norm`), so gradients up to ~1e30 are normalised too, while ``eps`` is
  absolute, as Adam's, and shrinks rows of norm ~``eps`` and below instead.

  Args:
    eps: added to each row norm (a zero row stays zero).
    axes: which axes form rows and cols; see :func:`symoptax.axes.resolve_axes`.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    arXiv:2605.18106 (symmetry-compatible optimizers for LLM pretraining), 2026.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> tx = symoptax.scale_by_row_norm()
    >>> u, _ = tx.update({"w": jnp.array([[3.0, 4.0], [0.0, 2.0]])}, tx.init(None))
    >>> print(jnp.round(u["w"], 3))
    [[0.6 0.8]
     [0.  1. ]]
  """
  return _stateless(lambda x, sh: row_norm(x, eps, sh), axes, shardings=shardings, mesh=mesh,
                    reductions_only=True)


@shared_args
def center_rows(*, axes: AxesLike = None, shardings: Any = None, mesh: Any = None
                ) -> optax.GradientTransformation:
  r"""Removes the mean row: the projection onto updates with no softmax-shift component.

  .. math::
    C(G) = G - \tfrac{1}{r} \mathbf{1} \mathbf{1}^\top G

  For an LM head or a softmax router, ``W -> W + 1 v^T`` changes no output; a centred update
  never moves along that direction, so the head's mean row stays where it was.

  Args:
    axes: which axes form rows and cols.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """
  return _stateless(lambda x, sh: x - sh.sum(x, -2) / sh.matrix_shape(x)[0], axes,
                    shardings=shardings, mesh=mesh, reductions_only=True)


def shape_factor(lay, rule: str = "muon", rms: ArrayLike = 0.2) -> Any:
  """The factor :func:`scale_by_shape` gives every matrix of a leaf with layout ``lay``."""
  _, rows, cols = lay.batched_shape
  if rows == 0 or cols == 0:
    return 1.0  # an empty leaf: nothing to scale
  if rule == "muon":
    return max(1.0, lay.fan_ratio) ** 0.5
  if rule == "rms":
    return rms * max(rows, cols) ** 0.5
  if rule == "spectral":
    return lay.fan_ratio ** 0.5
  return 1.0


def scale_by_shape(rule: str = "muon", *, rms: ArrayLike = 0.2, axes: AxesLike = None,
                   shardings: Any = None, mesh: Any = None) -> optax.GradientTransformation:
  r"""Multiplies every matrix update by a factor of its shape.

  * ``"muon"``: :math:`\sqrt{\max(1, \mathrm{fan\_out}/\mathrm{fan\_in})}` (Jordan's Muon,
    ``optax.contrib.muon``): the output side is :attr:`symoptax.MatrixAxes.fan_out`, which
    for a SwiGLU down projection ``[ff, d]`` is its columns (d), not its permuted rows, so
    it gets 1.
  * ``"rms"``: :math:`\mathrm{rms} \cdot \sqrt{\max(\mathrm{rows}, \mathrm{cols})}`
    (Moonlight: matches AdamW's update RMS for an orthogonal update).
  * ``"spectral"``: :math:`\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}` (the spectral
    condition of muP, Yang, Simon & Bernstein, arXiv:2310.17813: an update of unit spectral
    norm gets :math:`\|\Delta W\|_{op} = \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}`).
  * ``"none"``: 1.

  The factor is a constant per leaf (of each matrix's shape in the leaf's view, so a
  head-wise attention kernel gets its heads' factor); it multiplies the leaf in place,
  sharded or not.

  Args:
    rule: one of ``"muon"``, ``"rms"``, ``"spectral"``, ``"none"``.
    rms: target RMS for ``rule="rms"``.
    axes: which axes form rows and cols, and the output side.
    shardings: accepted for symmetry with the other primitives and checked at init; a
      constant factor needs no collectives.
    mesh: the mesh for ``PartitionSpec`` shardings.

  Returns:
    An ``optax.GradientTransformation``.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> down = symoptax.MatrixAxes(rows=0, cols=1, fan_out="cols")   # [ff, d]
    >>> tx = symoptax.scale_by_shape("muon", axes=down)
    >>> u, _ = tx.update({"w": jnp.ones((16, 4))}, tx.init(None))
    >>> float(u["w"][0, 0])   # fan_out / fan_in = 4 / 16: factor 1
    1.0
  """
  if rule not in SHAPE_RULES:
    raise ValueError(f"Unknown shape rule {rule!r}; valid choices are "
                     f"{', '.join(map(repr, SHAPE_RULES))}.")

  def update_fn(updates, state, params=None):
    tree = params if params is not None else updates
    leaves, treedef, lays = flatten_with_layouts(updates, resolve_axes(axes, tree))
    out = [u if lay is None else
           (u * jnp.asarray(shape_factor(lay, rule, rms), jnp.float32)).astype(u.dtype)
           for u, lay in zip(leaves, lays)]
    return treedef.unflatten(out), state

  return optax.GradientTransformation(_checked_init(axes, shardings, mesh), update_fn)


def safe_norm(x: jax.Array, axis, shards: MatrixShards = LOCAL) -> jax.Array:
  r"""The Euclidean norm over ``axis`` (-1, -2 or both; ``keepdims``, at least fp32), in units
  of the largest entry there.

  .. math::
    \|x\| = a \sqrt{\textstyle\sum (x / a)^2},\qquad a = \max |x|

  The squares lie in [0, 1], so the norm neither overflows nor underflows (float32: entries
  from ~1e-30 to ~1e30, where the plain sum of squares gives inf or 0 beyond ~1e19 and
  ~1e-19). ``shards`` adds the ``pmax``/``psum`` over split axes. Zero (or empty) slices give 0.
  """
  y, a = _safe_scale(x, shards, axis)
  return a * jnp.sqrt(shards.sum(jnp.square(y), axis))


def _safe_scale(x: jax.Array, shards: MatrixShards,
                axis=(-2, -1)) -> tuple[jax.Array, jax.Array]:
  """``(x / a, a)`` with ``a`` the largest entry magnitude over ``axis`` (each matrix by
  default; 1 where all are zero), at least fp32, so that sums of squares neither overflow nor
  underflow at any gradient scale."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  a = shards.max(jnp.abs(x), axis)
  a = jnp.where(a > 0, a, 1.0)
  return x / a, a


def scale_by_rms(rms: ArrayLike = 0.2, *, axes: AxesLike = None, shardings: Any = None,
                 mesh: Any = None) -> optax.GradientTransformation:
  r"""Rescales every matrix update to a per-entry RMS of ``rms``.

  .. math::
    \text{update} = \mathrm{rms}\,\frac{\sqrt{mn}}{\|X\|_F}\, X
    \qquad (X \in \mathbb{R}^{m \times n};\ \text{a zero matrix stays zero})

  The exact form of Moonlight's convention (Liu et al., arXiv:2502.16982): any rule followed
  by it steps like AdamW in size, so AdamW's learning rate carries over. For a full-rank
  polar factor it equals ``scale_by_shape("rms")``; unlike that formula it also holds for
  low-rank and row-normalised updates. Invariant to orthogonal maps and permutations on
  either side (it rescales by a norm), so it keeps every rule's symmetry; scale-free.

  Args:
    rms: the target RMS of each matrix's entries.
    axes: which axes form rows and cols.
    shardings: the parameters' shardings (sums of squares are psummed over split axes).
    mesh: the mesh for ``PartitionSpec`` shardings.

  Returns:
    An ``optax.GradientTransformation``.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> tx = symoptax.scale_by_rms(0.2)
    >>> u, _ = tx.update({"w": jnp.arange(12.0).reshape(3, 4)}, tx.init(None))
    >>> round(float(jnp.sqrt(jnp.mean(u["w"] ** 2))), 6)
    0.2
  """

  def fn(x, sh):
    y, _ = _safe_scale(x, sh)
    m, n = sh.matrix_shape(x)
    norm = jnp.sqrt(sh.sum(y * y, (-2, -1)))
    scale = jnp.where(norm > 0, rms * (m * n) ** 0.5 / jnp.where(norm > 0, norm, 1.0), 0.0)
    return (y * scale).astype(x.dtype)

  return _stateless(fn, axes, shardings=shardings, mesh=mesh, reductions_only=True)


def spectral_norm(x: jax.Array, squarings: int = 10) -> jax.Array:
  r"""An estimate of :math:`\|X\|_{op}` for each matrix of ``x`` (``[..., m, n]``).

  With :math:`A = X^\top X` (or :math:`XX^\top`, the smaller), ``squarings`` normalised
  squarings give :math:`B \propto A^{2^k}`, and the estimate is the Rayleigh-type mean
  :math:`\sqrt{\mathrm{tr}(BA) / \mathrm{tr}(B)} = \sqrt{\sum_i \lambda_i^{p+1} / \sum_i
  \lambda_i^{p}}` with :math:`p = 2^k`: eigenvalues of A weighted by :math:`\lambda_i^p`, so
  it never exceeds the true norm and reaches it once :math:`(\lambda_2/\lambda_1)^p` is
  negligible (k = 10: p = 1024; singular values within 0.5% of the top one still count). It
  uses only ``A`` (no start vector), so it is exactly invariant to orthogonal maps on either
  side. Cost: one Gram and ``squarings`` products of the smaller side.
  """
  if x.shape[-2] < x.shape[-1]:
    x = jnp.swapaxes(x, -1, -2)
  y, a = _safe_scale(x, LOCAL)
  gram = jnp.swapaxes(y, -1, -2) @ y
  fro = lambda m: jnp.sqrt(jnp.sum(m * m, axis=(-2, -1), keepdims=True))
  b = gram / jnp.maximum(fro(gram), 1e-30)
  for _ in range(squarings):
    b = b @ b
    b = b / jnp.maximum(fro(b), 1e-30)
  tr = lambda m: jnp.trace(m, axis1=-2, axis2=-1)
  top = tr(b @ gram) / jnp.maximum(tr(b), 1e-30)
  return jnp.sqrt(jnp.maximum(top, 0.0)) * a[..., 0, 0]


def scale_by_spectral_norm(*, squarings: int = 10, axes: AxesLike = None,
                           shardings: Any = None, mesh: Any = None
                           ) -> optax.GradientTransformation:
  r"""Rescales every matrix update to unit spectral norm: :math:`X / \|X\|_{op}`.

  :math:`\|X\|_{op}` is :func:`spectral_norm`'s estimate (a zero matrix stays zero). Chain
  ``scale_by_shape("spectral")`` after it for muP's spectral condition
  :math:`\|\Delta W\|_{op} = \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}` on updates that are
  not orthogonal (row-normalised ones). Invariant to orthogonal maps on either side, so it
  keeps every rule's symmetry; scale-free. Sharded leaves go through whole matrices (as the
  full-side polar step).

  Args:
    squarings: see :func:`spectral_norm`.
    axes: which axes form rows and cols.
    shardings: the parameters' shardings.
    mesh: the mesh for ``PartitionSpec`` shardings.

  Returns:
    An ``optax.GradientTransformation``.
  """

  def unit(w):
    s = spectral_norm(w, squarings)[..., None, None]
    return jnp.where(s > 0, w / jnp.where(s > 0, s, 1.0), 0.0).astype(w.dtype)

  return _stateless(lambda x, sh: sh.whole(unit, x), axes, shardings=shardings, mesh=mesh)


class DebiasedMomentumState(NamedTuple):
  """State of :func:`scale_by_debiased_momentum`."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # EMA of the gradients, like the params


@shared_args
def scale_by_debiased_momentum(beta: ArrayLike = 0.95, nesterov: bool = True, *,
                               mu_dtype: Any = None) -> optax.GradientTransformation:
  r"""``optax.contrib.muon``'s momentum: a bias-corrected EMA, with Nesterov's look-ahead.

  :func:`symoptax.muon` with ``momentum="optax"`` uses it in place of Jordan's
  ``optax.trace`` (see there for how the two differ).

  .. math::
    \mu_t = \beta \mu_{t-1} + (1-\beta) G_t,\qquad
    \hat M_t = \beta \frac{\mu_t}{1-\beta^{t+1}} + (1-\beta) \frac{G_t}{1-\beta^t}
    \;(\text{Nesterov}),\quad \hat M_t = \frac{\mu_t}{1-\beta^t}\;(\text{otherwise:
    ``optax.ema(beta, debias=True)``}).

  Args:
    beta: EMA coefficient.
    nesterov: use the look-ahead.
    [[mu_dtype]]

  Returns:
    An ``optax.GradientTransformation`` whose state holds the EMA (like the params).
  """

  if not nesterov:
    return optax.ema(beta, debias=True, accumulator_dtype=mu_dtype)

  def init_fn(params):
    return DebiasedMomentumState(jnp.zeros([], jnp.int32),
                                 optax.tree_utils.tree_zeros_like(params, dtype=mu_dtype))

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree_utils.tree_update_moment(updates, state.mu, beta, 1)
    mu = optax.tree_utils.tree_cast(mu, mu_dtype)
    count = optax.safe_increment(state.count)
    out = jax.tree.map(
        lambda m, g: beta * m + (1 - beta) * g,
        optax.tree_utils.tree_bias_correction(mu, beta, optax.safe_increment(count)),
        optax.tree_utils.tree_bias_correction(updates, beta, count))
    return out, DebiasedMomentumState(count, mu)

  return optax.GradientTransformation(init_fn, update_fn)



def _validate_polar(method: str, side: str, steps: int | None) -> None:
  polar_lib.check_choice("side", side, polar_lib.SIDES + ("auto",))
  choices = {"full": polar_lib.FULL_METHODS,
             "right": polar_lib.GRAM_METHODS, "left": polar_lib.GRAM_METHODS,
             "auto": tuple(dict.fromkeys(polar_lib.GRAM_METHODS + polar_lib.FULL_METHODS))}
  polar_lib.check_choice(f"polar method for side={side!r}", method, choices[side])
  if method in ("muon_ns", "polar_express", "dsv4", "newton_schulz"):
    polar_lib.coefficients(method, steps)


def polar_scaled(x: jax.Array, *, method: str, steps: int | None, side: str,
                 nuclear_power: ArrayLike, compute_dtype: Any = "auto",
                 damping: float | None = None, relative: bool = False,
                 shards: MatrixShards = LOCAL) -> jax.Array:
  r"""``nu^alpha polar(x)`` with :math:`\nu = \langle x, \mathrm{polar}(x)\rangle = \|x\|_*`
  (``relative``: :math:`\nu = \|x\|_* / \|x\|_F`)."""
  if side == "auto":
    side = polar_lib.auto_side(method, shards.matrix_shape(x))
  u = polar_lib.sharded_polar(x, method=method, steps=steps, side=side,
                              compute_dtype=compute_dtype, damping=damping, shards=shards)
  if isinstance(nuclear_power, (int, float)) and nuclear_power == 0:
    return u
  if relative:  # in units of the largest entry: no overflow at any gradient scale
    y, _ = _safe_scale(x, shards)
    nu = (jnp.maximum(shards.sum(y * u, (-2, -1)), 0.0)
          / jnp.maximum(jnp.sqrt(shards.sum(y * y, (-2, -1))), 1e-30))
  else:
    nu = jnp.maximum(shards.sum(x * u, (-2, -1)), 0.0)
  return u * jnp.power(nu, nuclear_power).astype(u.dtype)


@shared_args
def scale_by_polar(
    method: str = "polar_express",
    *,
    steps: int | None = None,
    side: str = "auto",
    nuclear_power: ArrayLike = 0.0,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    damping: float | None = None,
    nu_scope: str = "matrix",
    relative: bool = False,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Replaces every matrix update by its orthogonal polar factor, optionally nu-scaled.

  .. math::
    U = \mathrm{polar}(G) = G (G^\top G)^{-1/2}, \qquad
    \text{update} = \nu^{\alpha} U, \quad \nu = \langle G, U \rangle = \|G\|_*

  Sides: ``"full"`` iterates on the matrix (Muon-style), ``"right"`` uses
  :math:`G (G^\top G)^{-1/2}` through the cols x cols Gram, ``"left"`` uses
  :math:`(G G^\top)^{-1/2} G` through the rows x rows Gram, ``"auto"`` picks the smaller Gram
  for Gram-capable methods ("polar_express", "newton_schulz", "eigh") and "full" for the
  others. The polar factor is equivariant under ``G -> U G V^T`` for orthogonal ``U, V``
  (bi-orthogonal), hence also under the LPRO group.

  Args:
    method: polar oracle (see :func:`symoptax.polar.polar`).
    steps: iteration count where the oracle allows a choice.
    side: ``"auto"``, ``"full"``, ``"right"`` or ``"left"``.
    nuclear_power: :math:`\alpha`; 1 gives PolarGrad's nuclear-norm scaling, 0 disables it.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    damping: relative eigenvalue damping of the "eigh" oracle.
    nu_scope: ``"matrix"`` (default): one :math:`\nu` per matrix. ``"leaf"``: one
      :math:`\nu = \sum_k \langle G_k, U_k \rangle` over every matrix ``k`` of a leaf except
      across :attr:`symoptax.MatrixAxes.layers` (scanned layers stay separate): the paper's
      reference on a stacked-experts tensor ``[E, m, n]``, whose one scalar couples the
      experts. ``"leaf"`` steps about ``E`` times larger than ``"matrix"`` there.
    relative: use :math:`\nu / \|G\|_F` instead of :math:`\nu` (the paper's runs; the
      ``"nuclear_rel"`` scale of the named optimizers): scale-free, between 1 and
      :math:`\sqrt{\mathrm{rank}\,G}` (its square root of the stable-rank-like ratio
      :math:`\|G\|_*^2/\|G\|_F^2`), so the step no longer grows with the gradient's size.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Lau, Long, Su, "PolarGrad: A Class of Matrix-Gradient Optimizers from a Unifying
    Preconditioning Perspective", arXiv:2505.21799, 2025.
    Amsel et al., "The Polar Express", arXiv:2505.16932, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, symoptax
    >>> tx = symoptax.scale_by_polar("svd", side="full")
    >>> g = {"w": jax.random.normal(jax.random.key(0), (8, 4))}
    >>> u, _ = tx.update(g, tx.init(g))
    >>> bool(jnp.allclose(u["w"].T @ u["w"], jnp.eye(4), atol=1e-5))
    True
  """
  _validate_polar(method, side, steps)
  polar_lib.check_choice("nu_scope", nu_scope, NU_SCOPES)
  per_leaf = nu_scope == "leaf" and not (isinstance(nuclear_power, (int, float))
                                         and nuclear_power == 0)
  inner = _stateless(
      lambda x, sh: sharded_polar_scaled(x, sh, method=method, steps=steps, side=side,
                                         nuclear_power=0.0 if per_leaf else nuclear_power,
                                         compute_dtype=compute_dtype, damping=damping,
                                         relative=relative),
      axes, shardings=shardings, mesh=mesh)
  if not per_leaf:
    return inner

  def update_fn(updates, state, params=None):
    polar, state = inner.update(updates, state, params)
    tree = params if params is not None else updates
    leaves, treedef, lays = flatten_with_layouts(updates, resolve_axes(axes, tree))
    out = [u if lay is None else _nu_scaled(x, u, lay, nuclear_power, relative)
           for x, u, lay in zip(leaves, treedef.flatten_up_to(polar), lays)]
    return treedef.unflatten(out), state

  return optax.GradientTransformation(inner.init, update_fn)


NU_SCOPES = ("matrix", "leaf")


def _nu_scaled(x: jax.Array, u: jax.Array, lay, power: ArrayLike,
               relative: bool = False) -> jax.Array:
  """``nu^power u`` with one ``nu = <x, u>`` per leaf (per layer of a scanned stack);
  ``relative``: ``<x, u> / ||x||_F`` over the same matrices."""
  f32 = jnp.promote_types(u.dtype, jnp.float32)
  xv, uv = x.astype(f32).reshape(lay.view_shape), u.astype(f32).reshape(lay.view_shape)
  red = tuple(a for a in range(len(lay.view_shape)) if a not in lay.layers)
  if relative:
    a = jnp.max(jnp.abs(xv), axis=red, keepdims=True, initial=0.0)
    xv = xv / jnp.where(a > 0, a, 1.0)
  nu = jnp.maximum(jnp.sum(xv * uv, axis=red, keepdims=True), 0.0)
  if relative:
    nu = nu / jnp.maximum(jnp.sqrt(jnp.sum(xv * xv, axis=red, keepdims=True)), 1e-30)
  return (uv * jnp.power(nu, power)).reshape(lay.shape).astype(u.dtype)


def sharded_polar_scaled(x: jax.Array, shards: MatrixShards, *, side: str, **kw) -> jax.Array:
  """:func:`polar_scaled` on local blocks: the full side through whole matrices
  (``all_to_all``), the right/left side through one Gram ``psum`` (see
  :class:`symoptax.sharding.MatrixShards`)."""
  if side == "auto":  # resolved here: the route depends on it
    side = polar_lib.auto_side(kw["method"], shards.matrix_shape(x))
  if side == "full":
    return shards.whole(lambda w: polar_scaled(w, side="full", **kw), x)
  return shards.gathered(side, lambda w, sh: polar_scaled(w, side=side, shards=sh, **kw), x)


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
  return _stateless(lambda x, sh: (x / (safe_norm(x, -2, sh) + eps)).astype(x.dtype), axes,
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
  _validate_polar(method, "full", None)
  return _stateless(lambda x, sh: sh.whole(lambda w: clip_singular_values(
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
  y, _ = _safe_scale(x, LOCAL)  # scale-free map: in units of the largest entry, so that
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
  _validate_polar(method, "full", None)
  return _stateless(lambda x, sh: sh.whole(lambda w: high_pass_polar(
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
  x, _ = _safe_scale(x, LOCAL)
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
  _validate_polar(method, "full", None)
  steps = 2 if steps is None else polar_lib.static_steps(steps)
  if steps < 1:
    raise ValueError(f"scale_by_leverage_polar: steps must be >= 1, got {steps}.")
  return _stateless(lambda x, sh: sh.whole(lambda w: leverage_polar(
      w, steps, row_power, eps, method=method, compute_dtype=compute_dtype), x),
      axes, shardings=shardings, mesh=mesh)


class ScaleByRowSecondMomentState(NamedTuple):
  """State of :func:`scale_by_row_second_moment`."""
  count: jax.Array  # int32 scalar, steps taken
  nu: Any  # per matrix leaf: [*batch, *rows] float32 EMA of the mean squared row entry


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
    (v,) = stats
    cols = shards.matrix_shape(o)[1]
    v = b2 * v + (1 - b2) * shards.sum(jnp.square(o), -1)[..., 0] / cols
    scaled = o / (jnp.sqrt(v)[..., None] + eps)
    fro = lambda a: jnp.sqrt(shards.sum(jnp.square(a), (-2, -1)))
    ratio = fro(o) / jnp.maximum(fro(scaled), jnp.finfo(jnp.float32).tiny)
    return scaled * ratio, [v]

  def update_fn(updates, state, params=None):
    tree = params if params is not None else updates
    out, (nu,) = _map_with_stats(fn, updates, tree, resolve_axes(axes, tree), shardings, mesh,
                                 stats=[state.nu], stat_kinds=["rows"])
    return out, ScaleByRowSecondMomentState(optax.safe_increment(state.count), nu)

  return optax.GradientTransformation(init_fn, update_fn)


def _map_with_stats(fn, updates, tree, axes_tree, shardings, mesh, *, extras=(), stats=(),
                    stat_kinds=()):
  """:func:`symoptax.sharding.map_matrices_with_stats`, sharded when ``shardings`` is given;
  ``axes_tree`` is resolved (:func:`resolve_axes`)."""
  mesh_, leaf_shardings = (sharding_lib.resolve_shardings(shardings, mesh, tree)
                           if shardings is not None else (None, None))
  return sharding_lib.map_matrices_with_stats(
      fn, updates, axes_tree, extras=extras, stats=stats, stat_kinds=stat_kinds,
      shardings_tree=leaf_shardings, mesh=mesh_)


class ScaleByNamoState(NamedTuple):
  """State of :func:`scale_by_namo`."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # first moment (EMA of gradients), like the params
  nu: Any  # per matrix leaf: sqrt(v_t), the root of the EMA of ||G||_F^2 ([*batch], NAMO)
  # or of the squared column norms ([*batch, *cols], NAMO-D): the root keeps it finite for
  # gradients up to ~1e30 (v_t itself overflows float32 from ~1e19)


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
  _validate_polar(method, "full", None)
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
    out, (nu,) = _map_with_stats(fn, updates, tree, axes_tree, shardings, mesh,
                                 extras=[mu, params], stats=[state.nu], stat_kinds=[kind])
    out = jax.tree.map(lambda o, m, ax: m if ax is None else o, out, mu, axes_tree,
                       is_leaf=lambda x: x is None)
    return out, ScaleByNamoState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)
