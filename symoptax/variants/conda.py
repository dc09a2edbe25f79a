"""Conda: Adam in the basis of the momentum's singular vectors on each matrix's short side.

:func:`scale_by_conda` is the step, :func:`conda` the named optimizer (a
:func:`symoptax.symmetry_stack` rule). The reference is the authors' PyTorch code
(``conda_torch/conda.py`` and ``projector.py`` of github.com/jie040109/Conda), its default
projection (``proj_type="std"``) read for symoptax's ``[B, rows, cols]`` matrices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax.aliases import ScalarOrSchedule, decay_and_rate, keeps_shardings, shard_kwargs
from symoptax.axes import AxesLike, flatten_with_layouts, resolve_axes
from symoptax import sharding as sharding_lib
from symoptax.docstrings import shared_args
from symoptax.shards import MatrixShards
from symoptax.transforms import map_with_stats


class ScaleByCondaState(NamedTuple):
  """State of :func:`scale_by_conda`."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # first moment (EMA of gradients) in the parameters' own basis, like the params
  nu: Any  # sqrt of the EMA of the squared projected gradient: per matrix leaf, in the
  #          projected basis (param-shaped); per other leaf, Adam's sqrt(v) of the gradient
  basis: Any  # per matrix leaf: the short side's orthonormal basis [*batch, k, k] (columns
  #             are the momentum's singular vectors, largest first); None elsewhere


def root_ema(root: jax.Array, g: jax.Array, b2) -> jax.Array:
  """``sqrt(b2 root^2 + (1 - b2) g^2)`` elementwise, in units of the larger of ``root`` and
  ``|g|``: nothing is squared outside [0, 1], so no gradient scale overflows float32."""
  top = jnp.maximum(root, jnp.abs(g))
  unit = jnp.where(top > 0, top, 1.0)
  return top * jnp.sqrt(b2 * jnp.square(root / unit) + (1 - b2) * jnp.square(g / unit))


def _col_offset(shards: MatrixShards, size: int):
  """Where this device's block of the (split) columns starts."""
  return jax.lax.axis_index(shards.cols) * size if shards.cols else 0


def short_side_basis(m: jax.Array, shards: MatrixShards) -> jax.Array:
  """The right singular vectors of each ``[B, rows, cols]`` matrix with ``rows >= cols``, as
  the columns of a ``[B, cols, cols]`` orthogonal matrix, largest singular value first.

  They are the eigenvectors of the Gram ``M^T M``; ``M`` is taken in units of its largest
  entry first, so the Gram cannot overflow. Of a split matrix, the local block is placed in
  its columns and summed over the column shards (so that every device holds the same whole
  rows), and the Gram is summed over the row shards: the basis is the same on every device.
  A zero matrix gives some orthonormal basis (every basis serves it). Directions with
  singular values below ~sqrt(eps) of the largest are resolved only as an orthonormal
  completion, which is all the step needs (its back-projection is exact for any orthogonal
  basis)."""
  m = m.astype(jnp.float32)
  top = jnp.max(jnp.abs(m), axis=(-2, -1), keepdims=True, initial=0.0)
  if shards.rows or shards.cols:
    top = jax.lax.pmax(top, shards.rows + shards.cols)
  m = m / jnp.where(top > 0, top, 1.0)
  if shards.cols:
    whole = jnp.zeros(m.shape[:-1] + (shards.matrix_shape(m)[1],), m.dtype)
    m = jax.lax.psum(jax.lax.dynamic_update_slice_in_dim(
        whole, m, _col_offset(shards, m.shape[-1]), axis=2), shards.cols)
  gram = jnp.einsum("bri,brj->bij", m, m, precision=jax.lax.Precision.HIGHEST)
  if shards.rows:
    gram = jax.lax.psum(gram, shards.rows)
  _, vecs = jnp.linalg.eigh(gram)
  return vecs[..., ::-1]  # descending, as the reference's SVD orders them


def _project(x: jax.Array, basis: jax.Array, shards: MatrixShards, back: bool) -> jax.Array:
  """``x V`` (``back=False``) or ``x V^T`` (``back=True``) for local blocks ``x`` of
  ``[B, rows, cols]`` matrices and a whole ``[B, cols, cols]`` basis ``V``: with split
  columns, each device multiplies its block by its rows of ``V`` (or ``V^T``) and a
  reduce-scatter sums the products and hands each device its block of the result."""
  hi = jax.lax.Precision.HIGHEST
  if not shards.cols:
    return jnp.einsum("brc,bkc->brk" if back else "brc,bck->brk", x, basis, precision=hi)
  rows_of_v = jax.lax.dynamic_slice_in_dim(basis, _col_offset(shards, x.shape[-1]),
                                           x.shape[-1], axis=2 if back else 1)
  y = jnp.einsum("brc,bkc->brk" if back else "brc,bck->brk", x, rows_of_v, precision=hi)
  return jax.lax.psum_scatter(y, shards.cols, scatter_dimension=2, tiled=True)


@shared_args
def scale_by_conda(b1: ArrayLike = 0.9, b2: ArrayLike = 0.99, eps: ArrayLike = 1e-8,
                   update_proj_gap: int = 2000, scale: ArrayLike = 0.25, *,
                   axes: AxesLike = None, mu_dtype: Any = None, shardings: Any = None,
                   mesh: Any = None) -> optax.GradientTransformation:
  r"""Conda's step: Adam's normalisation in the short side's singular basis of the momentum.

  For a matrix with ``rows >= cols`` (the short side is the columns; a wide matrix mirrors
  every formula, with :math:`U` on the rows):

  .. math::
    M_t = \beta_1 M_{t-1} + (1-\beta_1) G_t,\quad
    V \leftarrow \text{right singular vectors of } M_t
    \text{ at steps } t-1 \equiv 0 \ (\mathrm{mod}\ T),\\
    \tilde G = G_t V,\ \ \tilde M = M_t V,\quad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) \tilde G^{\odot 2},\\
    \text{out} = s\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
    \frac{\tilde M}{\sqrt{v_t}+\epsilon}\, V^\top

  with :math:`T` = ``update_proj_gap`` and :math:`s` = ``scale``. Between refreshes ``V`` is
  kept, and so is ``v`` (its coordinates are those of the basis when each entry was
  accumulated, as in the reference). The momentum lives in the parameters' basis; ``V`` is a
  ``k x k`` matrix of state per matrix, ``k = min(rows, cols)``, and ``v`` has the
  parameters' shape. Since each column of ``V`` enters ``v`` squared and ``out`` twice, the
  singular vectors' signs do not matter.

  Symmetry: for a matrix with ``rows >= cols``, equivariant under
  :math:`W \mapsto P W Q` with :math:`P` a permutation of the rows and :math:`Q` orthogonal
  on the columns (``V \mapsto Q^\top V`` and :math:`\tilde G \mapsto P \tilde G`; Adam's
  normalisation is elementwise, so permutations pass through it and rotations of the rows do
  not); wide matrices mirror it. This is the left-permutation / right-orthogonal class of the
  vocabulary matrices (the short side is ``d``). Scale-invariant while :math:`\sqrt{v_t} \gg
  \epsilon` (Adam's absolute ``eps``); the state keeps :math:`\sqrt{v_t}`, and the basis is
  taken from the momentum in units of its largest entry, so the step is finite for
  gradients from ~1e-30 to ~1e30. Leaves without axes (vectors) take plain Adam with the
  same coefficients, without ``scale`` (the reference's parameters outside its Conda
  groups).

  The basis comes from ``eigh`` of the short side's Gram ``M^T M`` rather than the SVD of
  ``M`` (the same vectors, up to sign; under ``shardings=`` the Gram is one ``psum``), once
  every ``update_proj_gap`` steps (``lax.cond``).

  Args:
    b1: EMA coefficient of the momentum.
    b2: EMA coefficient of the squared projected gradient.
    eps: added to ``sqrt(v)``.
    update_proj_gap: ``T``, the steps between basis refreshes (the first step refreshes).
    scale: ``s``, the factor on the projected-back update.
    axes: which axes form rows and cols.
    [[mu_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Wang et al., "Conda: Column-Normalized Adam for Training Large Language Models Faster",
    arXiv:2509.24218, 2025; code: github.com/jie040109/Conda.
  """
  if not isinstance(update_proj_gap, int) or isinstance(update_proj_gap, bool) \
      or update_proj_gap < 1:
    raise ValueError(f"scale_by_conda: update_proj_gap must be a positive int, got "
                     f"{update_proj_gap!r}.")

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    mu = [None if p is None else jnp.zeros_like(p, dtype=mu_dtype) for p in leaves]
    nu = [None if p is None else jnp.zeros(jnp.shape(p), jnp.float32) for p in leaves]
    basis = [None if lay is None else
             jnp.broadcast_to(jnp.eye(sharding_lib.stat_shape(lay, "gram")[-1], dtype=jnp.float32),
                              sharding_lib.stat_shape(lay, "gram"))
             for lay in lays]
    basis = sharding_lib.shard_stats(treedef.unflatten(basis), params, axes_tree, shardings,
                                     mesh, "gram")
    return ScaleByCondaState(jnp.zeros([], jnp.int32), treedef.unflatten(mu),
                             treedef.unflatten(nu), basis)

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    bias = jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    refresh = state.count % update_proj_gap == 0
    mu = jax.tree.map(lambda m, g: None if g is None else (b1 * m + (1 - b1) * g).astype(m.dtype),
                      state.mu, updates, is_leaf=lambda x: x is None)

    def fn(gb, extras, stats, shards):
      (mb,) = extras
      root_v, old = stats
      rows, cols = shards.matrix_shape(gb)
      if min(rows, cols) == 0:  # no entries: nothing to project
        return gb, [root_v, old]
      wide = rows < cols
      if wide:  # the mirror image: the basis on the rows
        gb, mb, root_v = (jnp.swapaxes(x, -1, -2) for x in (gb, mb, root_v))
        shards = shards._replace(rows=shards.cols, cols=shards.rows,
                                 shape=None if shards.shape is None else shards.shape[::-1])
      basis = jax.lax.cond(refresh, lambda: short_side_basis(mb, shards), lambda: old)
      root_v = root_ema(root_v, _project(gb, basis, shards, back=False), b2)
      u = bias * _project(mb, basis, shards, back=False) / (root_v + eps)
      u = scale * _project(u, basis, shards, back=True)
      if wide:
        u, root_v = jnp.swapaxes(u, -1, -2), jnp.swapaxes(root_v, -1, -2)
      return u, [root_v, basis]

    axes_tree = resolve_axes(axes, updates)
    out, (nu, basis) = map_with_stats(fn, updates, updates, axes_tree, shardings, mesh,
                                      extras=[mu], stats=[state.nu, state.basis],
                                      stat_kinds=["param", "gram"])
    # Leaves without axes: Adam with the same coefficients (no projection, no scale).
    is_none = lambda x: x is None
    nu = jax.tree.map(lambda n, r, g, ax: n if ax is not None or g is None else
                      root_ema(r, g, b2), nu, state.nu, updates, axes_tree, is_leaf=is_none)
    out = jax.tree.map(
        lambda o, m, n, g, ax: o if ax is not None or g is None else
        (bias * m / (n + eps)).astype(g.dtype), out, mu, nu, updates, axes_tree,
        is_leaf=is_none)
    return out, ScaleByCondaState(count, mu, nu, basis)

  return optax.GradientTransformation(init_fn, update_fn)


@keeps_shardings
@shared_args
def conda(
    learning_rate: ScalarOrSchedule,
    *,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.99,
    eps: ArrayLike = 1e-8,
    update_proj_gap: int = 2000,
    scale: ArrayLike = 0.25,
    weight_decay: ArrayLike = 0.0,
    axes: AxesLike = None,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Conda: column-normalised Adam, i.e. Adam in the momentum's singular basis of each
  matrix's short side, projected back.

  .. math::
    W_{t+1} = W_t - \eta\left(s\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}
    \frac{M_t V}{\sqrt{v_t}+\epsilon}V^\top + \lambda W_t\right)

  (:func:`symoptax.scale_by_conda`: ``V`` the momentum's right singular vectors for
  ``rows >= cols``, refreshed every ``update_proj_gap`` steps; ``v`` the EMA of
  :math:`(G_t V)^{\odot 2}`). State: the momentum, ``v`` (both parameter-shaped) and one
  ``k x k`` basis per matrix. Symmetry: row permutations and column rotations for tall
  matrices, the mirror for wide ones (left-permutation / right-orthogonal, the class of the
  vocabulary matrices). Defaults are the reference scripts' (betas 0.9 / 0.99, ``scale``
  0.25, gap 2000, no weight decay); the reference runs it on the hidden (attention and MLP)
  matrices at 10x AdamW's rate, with Adam on the rest. Weight decay is decoupled, on matrix
  leaves, applied to the parameters before the step (the reference decays after the step,
  a difference of order ``(lr wd)^2``).

  Args:
    learning_rate: float or optax schedule.
    b1, b2, eps: moment coefficients and stabiliser.
    update_proj_gap: steps between refreshes of the basis.
    scale: factor on the projected-back update.
    weight_decay: decoupled weight decay on matrix leaves.
    axes: which axes form rows and cols.
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Wang et al., "Conda: Column-Normalized Adam for Training Large Language Models Faster",
    arXiv:2509.24218, 2025; code: github.com/jie040109/Conda.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((32, 8))}
    >>> opt = symoptax.conda(1.0, scale=1.0)
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (32, 8))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> # step 1 is sign(G V) V^T (Adam's first step in the basis V): every row has norm sqrt(8)
    >>> bool(np.allclose(np.linalg.norm(u["w"], axis=1), np.sqrt(8), rtol=1e-3))
    True
  """
  sh = shard_kwargs(shardings, mesh)
  wd, lr = decay_and_rate(learning_rate, weight_decay, axes)
  return optax.chain(
      scale_by_conda(b1, b2, eps, update_proj_gap, scale, axes=axes, mu_dtype=mu_dtype, **sh),
      *([wd] if wd is not None else []), lr)
