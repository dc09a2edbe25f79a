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


def matrix_transform(fn_of_batch, axes: AxesLike, *, shardings: Any = None, mesh: Any = None,
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

  return optax.GradientTransformation(checked_init(axes, shardings, mesh), update_fn)


def checked_init(axes: AxesLike, shardings: Any, mesh: Any):
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
  return matrix_transform(lambda x, sh: row_norm(x, eps, sh), axes, shardings=shardings, mesh=mesh,
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
  return matrix_transform(lambda x, sh: x - sh.sum(x, -2) / sh.matrix_shape(x)[0], axes,
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

  return optax.GradientTransformation(checked_init(axes, shardings, mesh), update_fn)


def safe_norm(x: jax.Array, axis, shards: MatrixShards = LOCAL) -> jax.Array:
  r"""The Euclidean norm over ``axis`` (-1, -2 or both; ``keepdims``, at least fp32), in units
  of the largest entry there.

  .. math::
    \|x\| = a \sqrt{\textstyle\sum (x / a)^2},\qquad a = \max |x|

  The squares lie in [0, 1], so the norm neither overflows nor underflows (float32: entries
  from ~1e-30 to ~1e30, where the plain sum of squares gives inf or 0 beyond ~1e19 and
  ~1e-19). ``shards`` adds the ``pmax``/``psum`` over split axes. Zero (or empty) slices give 0.
  """
  y, a = safe_scale(x, shards, axis)
  return a * jnp.sqrt(shards.sum(jnp.square(y), axis))


def safe_scale(x: jax.Array, shards: MatrixShards,
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
    y, _ = safe_scale(x, sh)
    m, n = sh.matrix_shape(x)
    norm = jnp.sqrt(sh.sum(y * y, (-2, -1)))
    scale = jnp.where(norm > 0, rms * (m * n) ** 0.5 / jnp.where(norm > 0, norm, 1.0), 0.0)
    return (y * scale).astype(x.dtype)

  return matrix_transform(fn, axes, shardings=shardings, mesh=mesh, reductions_only=True)


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
  y, a = safe_scale(x, LOCAL)
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

  return matrix_transform(lambda x, sh: sh.whole(unit, x), axes, shardings=shardings, mesh=mesh)


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


def validate_polar(method: str, side: str, steps: int | None) -> None:
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
                 shards: MatrixShards = LOCAL, method_options: dict | None = None) -> jax.Array:
  r"""``nu^alpha polar(x)`` with :math:`\nu = \langle x, \mathrm{polar}(x)\rangle = \|x\|_*`
  (``relative``: :math:`\nu = \|x\|_* / \|x\|_F`)."""
  if side == "auto":
    side = polar_lib.auto_side(method, shards.matrix_shape(x))
  u = polar_lib.sharded_polar(x, method=method, steps=steps, side=side,
                              compute_dtype=compute_dtype, damping=damping, shards=shards,
                              **(method_options or {}))
  if isinstance(nuclear_power, (int, float)) and nuclear_power == 0:
    return u
  if relative:  # in units of the largest entry: no overflow at any gradient scale
    y, _ = safe_scale(x, shards)
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
    method_options: dict | None = None,
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
    method_options: extra keywords of :func:`symoptax.polar.polar` for ``method``, e.g.
      ``{"rank": 64}`` for ``"randomized"`` or ``{"quantile": 0.1}`` for ``"layer_aware"``.

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
  validate_polar(method, side, steps)
  polar_lib.check_choice("nu_scope", nu_scope, NU_SCOPES)
  per_leaf = nu_scope == "leaf" and not (isinstance(nuclear_power, (int, float))
                                         and nuclear_power == 0)
  inner = matrix_transform(
      lambda x, sh: sharded_polar_scaled(x, sh, method=method, steps=steps, side=side,
                                         nuclear_power=0.0 if per_leaf else nuclear_power,
                                         compute_dtype=compute_dtype, damping=damping,
                                         relative=relative, method_options=method_options),
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


def map_with_stats(fn, updates, tree, axes_tree, shardings, mesh, *, extras=(), stats=(),
                    stat_kinds=()):
  """:func:`symoptax.sharding.map_matrices_with_stats`, sharded when ``shardings`` is given;
  ``axes_tree`` is resolved (:func:`resolve_axes`)."""
  mesh_, leaf_shardings = (sharding_lib.resolve_shardings(shardings, mesh, tree)
                           if shardings is not None else (None, None))
  return sharding_lib.map_matrices_with_stats(
      fn, updates, axes_tree, extras=extras, stats=stats, stat_kinds=stat_kinds,
      shardings_tree=leaf_shardings, mesh=mesh_)


  # or of the squared column norms ([*batch, *cols], NAMO-D): the root keeps it finite for
  # gradients up to ~1e30 (v_t itself overflows float32 from ~1e19)


