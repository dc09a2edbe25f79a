"""Reductions over matrices split across mesh axes: what the polar oracles need to know of a
distribution, and nothing more.

A polar oracle reduces over rows or columns (Gram matrices, norms) and sometimes needs whole
matrices. :class:`MatrixShards` says which mesh axes split the rows and the columns of a
``[B, rows, cols]`` batch inside ``shard_map`` and adds the matching collectives; ``LOCAL`` is
the single-device case. The oracle layer (:mod:`symoptax.polar`) depends on this module only;
:mod:`symoptax.sharding` builds ``MatrixShards`` from the shardings a user passes.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class MatrixShards(NamedTuple):
  """Which mesh axes split the rows and the columns of a ``[B, rows, cols]`` batch.

  Inside ``shard_map`` a primitive sees local blocks. It reduces over rows or columns with
  :meth:`sum`/:meth:`max` (which add the ``psum``/``pmax`` over the mesh axes that split that
  dimension), reads the global matrix shape from :meth:`matrix_shape`, runs maps that need
  whole matrices through :meth:`whole` and one-sided Gram maps through :meth:`gathered`.
  ``LOCAL`` (no axes) is the single-device case, where all of these are the plain operations.
  """

  rows: tuple[str, ...] = ()
  cols: tuple[str, ...] = ()
  shape: tuple[int, int] | None = None  # global (rows, cols); None: the local shape
  count: int = 1  # number of blocks one matrix is split into (product of the axes' sizes)

  def _names(self, axis) -> tuple[str, ...]:
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    names: tuple[str, ...] = ()
    if -2 in axis:
      names += self.rows
    if -1 in axis:
      names += self.cols
    return names

  def sum(self, x: jax.Array, axis) -> jax.Array:
    """``jnp.sum(x, axis, keepdims=True)`` over the global matrix (axis -1, -2 or both)."""
    s = jnp.sum(x, axis=axis, keepdims=True)
    names = self._names(axis)
    return jax.lax.psum(s, names) if names else s

  def max(self, x: jax.Array, axis) -> jax.Array:
    """``jnp.max(x, axis, keepdims=True)`` over the global matrix (``-inf`` over no entries:
    an empty leaf, or a shard of none)."""
    s = jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf)
    names = self._names(axis)
    return jax.lax.pmax(s, names) if names else s

  def matrix_shape(self, x: jax.Array) -> tuple[int, int]:
    """The global ``(rows, cols)`` of the matrices ``x`` holds blocks of."""
    return self.shape if self.shape is not None else (x.shape[-2], x.shape[-1])

  def whole(self, f: Callable[..., Any], *xs: jax.Array) -> Any:
    """``f`` on whole matrices: ``f(*whole_xs)`` for same-shape blocks ``xs``, returning an
    array or a tuple of arrays of the blocks' shape.

    The batch is zero-padded to a multiple of :attr:`count`, ``all_to_all`` over the row and
    then the column axes gives every device ``B / count`` whole matrices, ``f`` runs on them
    locally, and the reverse ``all_to_all`` brings the results back to their blocks. ``f``
    must treat batch entries independently and map a zero matrix to zero.
    """
    if not (self.rows or self.cols):
      return f(*xs)
    b = xs[0].shape[0]
    pad = -b % self.count

    def there(x):
      if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)], axis=0)
      if self.rows:
        x = jax.lax.all_to_all(x, self.rows, 0, 1, tiled=True)
      if self.cols:
        x = jax.lax.all_to_all(x, self.cols, 0, 2, tiled=True)
      return x

    def back(y):
      if self.cols:
        y = jax.lax.all_to_all(y, self.cols, 2, 0, tiled=True)
      if self.rows:
        y = jax.lax.all_to_all(y, self.rows, 1, 0, tiled=True)
      return y[:b]

    out = f(*(there(x) for x in xs))
    return tuple(back(y) for y in out) if isinstance(out, tuple) else back(out)

  def gathered(self, side: str, f: Callable[[jax.Array, "MatrixShards"], jax.Array],
               x: jax.Array) -> jax.Array:
    """``f(x, shards)`` for a one-sided Gram map: ``side="right"`` needs whole rows (the
    ``cols x cols`` Gram is summed over the row shards inside ``f``), so split columns are
    gathered first and each device keeps its own block of the result; ``"left"`` mirrors it.
    """
    names, axis = (self.cols, 2) if side == "right" else (self.rows, 1)
    inner = self._replace(cols=()) if side == "right" else self._replace(rows=())
    if not names:
      return f(x, inner)
    full = jax.lax.all_gather(x, names, axis=axis, tiled=True)
    y = f(full, inner)
    size = x.shape[axis]
    return jax.lax.dynamic_slice_in_dim(y, jax.lax.axis_index(names) * size, size, axis=axis)


LOCAL = MatrixShards()
