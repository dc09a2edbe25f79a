"""Matrix axes: how a parameter leaf is read as a batch of ``[rows, cols]`` matrices.

``rows`` index objects that may be permuted without changing the network's function
(vocabulary tokens, hidden neurons, experts); ``cols`` index the feature space on which
orthogonal changes of basis act. Every other axis of a leaf is a batch axis (scanned layers,
stacked experts, attention heads).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
from optax.contrib import MuonDimensionNumbers

AxisSpec = Union[int, Sequence[int]]


FAN_OUT = ("rows", "cols")


class MatrixAxes(NamedTuple):
  """Axes of a leaf that form the rows and the columns of its matrices.

  Two facts per matrix, not one: which side is *permuted* (``rows``: tokens, neurons,
  experts) and which side is the layer's *output* (``fan_out``). They differ for a SwiGLU
  down projection ``[ff, d]`` (rows = the ff neurons = its input side). Symmetry rules use
  the first; Muon-style shape factors ``sqrt(max(1, fan_out / fan_in))``
  use the second.

  Attributes:
    rows: axis index or tuple of indices (negative allowed) whose flattened product is the
      row dimension (the permutable objects).
    cols: axis index or tuple of indices forming the column dimension (the feature space).
    fan_out: ``"rows"`` (default) or ``"cols"``: the side that is the layer's output.
    split: ``((axis, inner), ...)``: view axis ``axis`` of the leaf as two axes
      ``[size // inner, inner]`` (a row-major reshape: head-major, as ``reshape(..., H, hd)``
      reads an HF/NNX attention kernel's ``H * hd`` axis) before reading matrices; each pair's
      ``axis`` counts in the view left by the pairs before it, and ``rows``, ``cols`` and
      ``layers`` count in the final view. With ``split=((1, hd),)`` a 2-D query kernel
      ``[d, H * hd]`` reads as ``[d, H, hd]``: ``rows=2, cols=0`` makes every head its own
      matrix (axis 1 is a batch axis), exactly as a 3-D ``[d, H, hd]`` kernel with the same
      rows and cols.
    layers: batch axes that index separate parameters (the layers of a scanned stack);
      rules that couple the matrices of one parameter (``nu_scope="leaf"``) never couple
      across them.

  All axes not named in ``rows`` or ``cols`` are batch axes: each slice along them is a
  separate matrix.

  Examples:
    >>> import symoptax
    >>> symoptax.MatrixAxes(rows=1, cols=0)   # a Flax Dense kernel [d_in, d_out]
    MatrixAxes(rows=1, cols=0)
    >>> symoptax.MatrixAxes(rows=0, cols=1, fan_out="cols")   # a SwiGLU down kernel [ff, d]
    MatrixAxes(rows=0, cols=1, fan_out='cols')
  """

  rows: AxisSpec
  cols: AxisSpec
  fan_out: str = "rows"
  split: tuple[tuple[int, int], ...] = ()
  layers: AxisSpec = ()

  def to_muon_dimension_numbers(self) -> MuonDimensionNumbers:
    """The same matrices for ``optax.contrib.muon``: reduction axis = the input side,
    output axis = :attr:`fan_out`'s side. A split leaf (:attr:`split`: head-wise attention)
    has no such form, since optax cannot split an axis: it raises."""
    if self.split:
      raise ValueError(f"{self}: optax.contrib.MuonDimensionNumbers cannot split an axis; "
                       "read attention whole (attention='whole') for optax.")
    out, red = (self.rows, self.cols) if self.fan_out == "rows" else (self.cols, self.rows)
    return MuonDimensionNumbers(reduction_axis=red, output_axis=out)

  def __repr__(self) -> str:
    extra = "".join(f", {f}={getattr(self, f)!r}" for f in ("fan_out", "split", "layers")
                    if getattr(self, f) != self._field_defaults[f])
    return f"MatrixAxes(rows={self.rows!r}, cols={self.cols!r}{extra})"


# What a user may pass wherever axes are accepted.
AxesLike = Union[None, MatrixAxes, MuonDimensionNumbers, Any, Callable[[Any], Any]]


def _is_axes_leaf(x: Any) -> bool:
  return x is None or isinstance(x, (MatrixAxes, MuonDimensionNumbers))


def _as_tuple(spec: AxisSpec, what: str = "axis", path: str = "<leaf>") -> tuple[int, ...]:
  items = (spec,) if not isinstance(spec, (tuple, list)) else tuple(spec)
  for x in items:
    if isinstance(x, bool) or not isinstance(x, (int,)) and not hasattr(x, "__index__"):
      raise ValueError(f"{path}: MatrixAxes {what} must be an int or a tuple of ints, got "
                       f"{spec!r}.")
  return tuple(int(x) for x in items)


def path_keys(path: Sequence[Any]) -> tuple[str, ...]:
  """A jax key path as plain strings; NNX's trailing ``.value`` attribute is dropped."""
  path = tuple(path)
  if len(path) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name in (
      "value", "raw_value"):
    path = path[:-1]
  out = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return tuple(out)


def path_str(path: Sequence[Any]) -> str:
  return "/".join(path_keys(path))


def _path_str(path) -> str:
  return jax.tree_util.keystr(tuple(path)) if path else "<root>"


def _to_matrix_axes(spec: Any) -> MatrixAxes | None:
  if spec is None or isinstance(spec, MatrixAxes):
    return spec
  if isinstance(spec, MuonDimensionNumbers):
    # Flax [in, out] layout: the reduction axis is the feature space (cols), the output axis
    # indexes the permutable output units (rows).
    return MatrixAxes(rows=spec.output_axis, cols=spec.reduction_axis)
  raise TypeError(
      f"Expected a MatrixAxes, MuonDimensionNumbers or None as an axes leaf, got {spec!r}.")


class _Layout(NamedTuple):
  """Static recipe to move a leaf to ``[B, rows, cols]`` and back.

  Axis indices (``perm``, ``layers``) count in the leaf's *view*: its shape after
  :attr:`MatrixAxes.split` (the leaf's own shape when nothing is split).
  """

  perm: tuple[int, ...]
  batch_shape: tuple[int, ...]
  rows_shape: tuple[int, ...]
  cols_shape: tuple[int, ...]
  view_shape: tuple[int, ...]
  shape: tuple[int, ...]
  splits: tuple[tuple[int, int], ...] = ()
  fan_out: str = "rows"
  layers: tuple[int, ...] = ()

  @property
  def batched_shape(self) -> tuple[int, int, int]:
    return (math.prod(self.batch_shape), math.prod(self.rows_shape), math.prod(self.cols_shape))

  @property
  def fan_ratio(self) -> float:
    """``fan_out / fan_in`` of each matrix."""
    _, r, c = self.batched_shape
    return r / c if self.fan_out == "rows" else c / r

  def view_dims(self, dims: Sequence[Any]) -> tuple[Any, ...]:
    """Per-axis facts of the leaf's own axes (e.g. the mesh axes that split each) carried to
    the axes of its view: a split axis's fact goes to its outer part, the inner part gets
    ``()`` (an axis split over devices must split whole heads)."""
    dims = tuple(dims)
    for a, _ in self.splits:
      dims = dims[:a] + (dims[a], ()) + dims[a + 1:]
    return dims


def _split_shape(shape: Sequence[int], split: Any, path: str) -> tuple[tuple[int, ...], tuple]:
  """The view shape after ``split`` and the normalised ``(axis, inner)`` pairs."""
  shape = tuple(shape)
  try:
    pairs = tuple((int(a), int(n)) for a, n in split)
  except (TypeError, ValueError):
    raise ValueError(f"{path}: MatrixAxes split must be a tuple of (axis, inner) pairs, got "
                     f"{split!r}.") from None
  norm = []
  for a, inner in pairs:
    nd = len(shape)
    if not -nd <= a < nd:
      raise ValueError(f"{path}: split axis {a} is out of range for a view of shape {shape}.")
    a %= nd
    if inner <= 0 or shape[a] % inner:
      raise ValueError(
          f"{path}: split ({a}, {inner}) needs axis {a} (size {shape[a]}) to be a multiple of "
          f"{inner}; with head_dim= give the size of one attention head.")
    shape = shape[:a] + (shape[a] // inner, inner) + shape[a + 1:]
    norm.append((a, inner))
  return shape, tuple(norm)


def layout(shape: Sequence[int], axes: MatrixAxes, path: str = "<leaf>") -> _Layout:
  """Checks ``axes`` against ``shape`` and returns the static reshaping recipe."""
  view, splits = _split_shape(shape, axes.split, path)
  ndim = len(view)
  rows, cols = _as_tuple(axes.rows, "rows", path), _as_tuple(axes.cols, "cols", path)
  if not rows or not cols:
    raise ValueError(f"{path}: MatrixAxes needs at least one rows axis and one cols axis, "
                     f"got {axes}.")
  if axes.fan_out not in FAN_OUT:
    raise ValueError(f"{path}: MatrixAxes fan_out must be 'rows' or 'cols', got "
                     f"{axes.fan_out!r}.")
  what = f"a leaf of shape {tuple(shape)}" + (f" viewed as {view}" if splits else "")

  def norm(axs):
    for a in axs:
      if not -ndim <= a < ndim:
        raise ValueError(
            f"{path}: axis {a} of {axes} is out of range for {what} (ndim {ndim}); valid axes "
            f"are {-ndim}..{ndim - 1}.")
    return tuple(a % ndim for a in axs)

  named = norm(rows + cols)
  if len(set(named)) != len(named):
    raise ValueError(f"{path}: {axes} names the same axis twice for {what}.")
  rows_n, cols_n = named[:len(rows)], named[len(rows):]
  batch = tuple(a for a in range(ndim) if a not in named)
  layers = norm(_as_tuple(axes.layers, "layers", path))
  if any(a not in batch for a in layers):
    raise ValueError(f"{path}: {axes}: layers must be batch axes (not rows or cols) of {what}.")
  return _Layout(
      perm=batch + rows_n + cols_n,
      batch_shape=tuple(view[a] for a in batch),
      rows_shape=tuple(view[a] for a in rows_n),
      cols_shape=tuple(view[a] for a in cols_n),
      view_shape=view,
      shape=tuple(shape),
      splits=splits,
      fan_out=axes.fan_out,
      layers=layers,
  )


def to_batched(x: jax.Array, lay: _Layout) -> jax.Array:
  """Moves a leaf to ``[B, rows, cols]`` (batch axes first, tuple axes flattened in order)."""
  return jnp.transpose(x.reshape(lay.view_shape), lay.perm).reshape(lay.batched_shape)


def from_batched(y: jax.Array, lay: _Layout) -> jax.Array:
  """Inverse of :func:`to_batched`."""
  y = y.reshape(lay.batch_shape + lay.rows_shape + lay.cols_shape)
  inv = [0] * len(lay.perm)
  for i, a in enumerate(lay.perm):
    inv[a] = i
  return jnp.transpose(y, inv).reshape(lay.shape)


def resolve_axes(axes: AxesLike, tree: Any) -> Any:
  """Resolves any accepted axes specification to a pytree of ``MatrixAxes`` or ``None``.

  Accepted forms:
    * ``None``: every 2-D leaf is read as written (rows = 0, cols = 1); 0-D and 1-D leaves
      get ``None`` (passed through unchanged); a leaf of more than 2 dims raises a ValueError
      that names its path and asks for axes.
    * a single ``MatrixAxes`` or ``optax.contrib.MuonDimensionNumbers``: used for every leaf
      of 2 or more dims (0-D and 1-D leaves pass through).
    * a pytree of them (full, or a prefix of ``tree``); a ``None`` entry means "not a matrix:
      pass through".
    * a callable ``tree -> pytree`` of the above.

  Returns:
    A pytree with the structure of ``tree`` whose leaves are ``MatrixAxes`` or ``None``; every
    ``MatrixAxes`` has been checked against its leaf's shape.
  """
  if callable(axes) and not _is_axes_leaf(axes):
    axes = axes(tree)

  if axes is None:
    def default(path, leaf):
      nd = jnp.ndim(leaf)
      if nd < 2:
        return None
      if nd == 2:
        return MatrixAxes(0, 1)
      raise ValueError(
          f"{_path_str(path)}: a leaf of shape {tuple(jnp.shape(leaf))} has {nd} dims and no "
          "axes were given. Pass axes=symoptax.MatrixAxes(rows=..., cols=...) (or a pytree "
          "of them, or a callable params -> pytree) to say which axes form the matrix; the "
          "others are batch axes.")
    return jax.tree_util.tree_map_with_path(default, tree)

  if _is_axes_leaf(axes):
    single = _to_matrix_axes(axes)

    def broadcast(path, leaf):
      if jnp.ndim(leaf) < 2:
        return None
      layout(jnp.shape(leaf), single, _path_str(path))
      return single
    return jax.tree_util.tree_map_with_path(broadcast, tree)

  try:
    expanded = jax.tree_util.tree_map(
        lambda spec, subtree: jax.tree_util.tree_map(
            lambda _: _to_matrix_axes(spec), subtree, is_leaf=lambda x: x is None),
        axes, tree, is_leaf=_is_axes_leaf)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "The axes pytree must match the parameter pytree, or be a prefix of it, with "
        f"MatrixAxes / MuonDimensionNumbers / None at its leaves. JAX reported: {e}") from e

  def check(path, leaf, spec):
    if spec is None or leaf is None:
      return None
    if jnp.ndim(leaf) < 2:
      raise ValueError(
          f"{_path_str(path)}: axes {spec} given for a leaf of shape "
          f"{tuple(jnp.shape(leaf))}; a matrix rule needs >= 2 dims. Use None for this "
          "leaf to pass it through.")
    layout(jnp.shape(leaf), spec, _path_str(path))
    return spec

  return jax.tree_util.tree_map_with_path(
      check, tree, expanded, is_leaf=lambda x: x is None)


def flatten_with_layouts(tree: Any, axes_tree: Any) -> tuple[list, Any, list]:
  """Leaves of ``tree`` (``None`` leaves kept), its treedef, and each leaf's ``_Layout``.

  ``axes_tree`` is a resolved axes tree (see :func:`resolve_axes`); the layout is ``None``
  for leaves that are ``None`` or have no axes.
  """
  leaves, treedef = jax.tree_util.tree_flatten(tree, is_leaf=lambda x: x is None)
  axes_leaves = treedef.flatten_up_to(axes_tree)
  layouts = [None if (u is None or ax is None) else layout(jnp.shape(u), ax)
             for u, ax in zip(leaves, axes_leaves)]
  return leaves, treedef, layouts


def map_matrices(fn: Callable[[jax.Array], jax.Array], updates: Any, axes_tree: Any) -> Any:
  """Applies ``fn`` to every matrix leaf as a ``[B, rows, cols]`` float32 batch.

  ``fn`` must treat the batch axis independently (every symoptax primitive does). Leaves
  whose matrices have the same ``[rows, cols]`` shape and dtype are concatenated along the
  batch axis and go through ``fn`` in one call (28 layers' gate kernels become one batched
  polar step), then are split back. Leaves whose axes are ``None`` are returned unchanged;
  results are cast back to each leaf's dtype.
  """
  leaves, treedef, layouts = flatten_with_layouts(updates, axes_tree)
  groups: dict[Any, list[tuple[int, jax.Array, _Layout]]] = {}
  for i, (u, lay) in enumerate(zip(leaves, layouts)):
    if lay is None:
      continue
    xb = to_batched(u, lay).astype(jnp.promote_types(u.dtype, jnp.float32))
    groups.setdefault((xb.shape[1:], xb.dtype), []).append((i, xb, lay))
  out = list(leaves)
  for items in groups.values():
    if len(items) == 1:
      ys = [fn(items[0][1])]
    else:
      sizes = [xb.shape[0] for _, xb, _ in items]
      y = fn(jnp.concatenate([xb for _, xb, _ in items], axis=0))
      ys = jnp.split(y, list(itertools.accumulate(sizes))[:-1], axis=0)
    for (i, _, lay), y in zip(items, ys):
      out[i] = from_batched(y, lay).astype(leaves[i].dtype)
  return jax.tree_util.tree_unflatten(treedef, out)


class LeafMatrices(NamedTuple):
  """A leaf read as matrices in its own memory layout: the row/column reductions of a
  :class:`symoptax.sharding.MatrixShards`, over the leaf's own axes (``keepdims``).

  Maps that only reduce over rows or columns and scale (row normalisation, centring, shape
  factors) run through this view without moving the leaf to ``[B, rows, cols]``: no
  transpose there and back, no concatenation with other leaves.
  """

  rows: tuple[int, ...]
  cols: tuple[int, ...]
  shape: tuple[int, int]  # (rows, cols) of each matrix

  @classmethod
  def of(cls, lay: _Layout) -> "LeafMatrices":
    nb, nr = len(lay.batch_shape), len(lay.rows_shape)
    return cls(lay.perm[nb:nb + nr], lay.perm[nb + nr:], lay.batched_shape[1:])

  def _axes(self, axis) -> tuple[int, ...]:
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    return (self.rows if -2 in axis else ()) + (self.cols if -1 in axis else ())

  def sum(self, x: jax.Array, axis) -> jax.Array:
    red = self._axes(axis)
    if x.ndim - 1 in red or jax.default_backend() != "cpu":
      return jnp.sum(x, axis=red, keepdims=True)
    # XLA:CPU sums over leading (major) axes 3-4x slower than a matrix-vector product with
    # ones does (a [128, 18992] LM-head kernel's row norms: 7.3 ms vs 2.0 ms).
    ones = jnp.ones([x.shape[a] for a in red], x.dtype)
    s = jnp.tensordot(ones, x, axes=(list(range(len(red))), list(red)),
                      precision=jax.lax.Precision.HIGHEST)
    return jnp.expand_dims(s, sorted(red))

  def max(self, x: jax.Array, axis) -> jax.Array:
    return jnp.max(x, axis=self._axes(axis), keepdims=True, initial=-jnp.inf)

  def matrix_shape(self, x: jax.Array) -> tuple[int, int]:
    del x
    return self.shape


def map_leaf_matrices(fn: Callable[[jax.Array, LeafMatrices], jax.Array], updates: Any,
                      axes_tree: Any) -> Any:
  """Applies ``fn(x, view)`` to every matrix leaf in its own layout (see
  :class:`LeafMatrices`; ``x`` in the leaf's split view, :attr:`MatrixAxes.split`), in
  float32 (or wider), cast back to the leaf's dtype."""
  leaves, treedef, layouts = flatten_with_layouts(updates, axes_tree)
  out = [u if lay is None else
         fn(u.astype(jnp.promote_types(u.dtype, jnp.float32)).reshape(lay.view_shape),
            LeafMatrices.of(lay)).reshape(lay.shape).astype(u.dtype)
         for u, lay in zip(leaves, layouts)]
  return jax.tree_util.tree_unflatten(treedef, out)


def matrix_mask(axes: AxesLike) -> Callable[[Any], Any]:
  """A callable ``params -> pytree of bool``: True where ``axes`` makes the leaf a matrix."""

  def mask(params):
    return jax.tree_util.tree_map(lambda _, ax: ax is not None, params,
                                  resolve_axes(axes, params), is_leaf=lambda x: x is None)
  return mask
