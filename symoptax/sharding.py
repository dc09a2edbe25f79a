"""The shard_map-aware matrix step: sharded parameters, explicit collectives, no needless gathers.

Given the parameters' shardings (a pytree of ``NamedSharding``, or of ``PartitionSpec`` plus
a ``Mesh``), every symoptax matrix primitive runs under ``jax.shard_map`` on the local blocks
of its leaves and communicates only what its mathematics needs. For an ``m x n`` matrix whose
rows are split over the mesh axes ``R`` and columns over ``C``:

* row-wise maps (row-norm, centring, shape factors): local; a ``psum`` of the per-row
  statistics over ``C`` only when the columns are split (of the per-column ones over ``R``
  when the rows are);
* right polar ``X (X^T X)^{-1/2}``: one ``psum`` over ``R`` of the ``n x n`` Gram, then local
  multiplies (the Gram-side oracles iterate on the replicated small matrix); if ``C`` is not
  empty the columns -- the short side the Gram lives on -- are gathered first. Left polar is
  the mirror image;
* maps that need the whole matrix (full-side polar/Muon, spectral clipping, Aurora, Pion):
  whole matrices of a stack of same-shape leaves are moved onto devices with ``all_to_all``
  over ``R`` and ``C`` (the stack zero-padded to a multiple of the number of shards), the map
  runs locally, and ``all_to_all`` moves the results back. No device ever holds the full stack.

Results equal the single-device results up to fp32 rounding (sums reduce in another order).
:func:`keep_shardings` pins an optimizer's state and updates to the parameters' shardings.
Multi-host runs need nothing more: call ``jax.distributed.initialize()`` and build the mesh
over ``jax.devices()``.

The few JAX APIs that moved between releases (``shard_map``, ``reshard``, mesh axis types)
are reached through the shims at the top of this module, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from symoptax.axes import from_batched, layout, path_str, to_batched
from symoptax.shards import LOCAL, MatrixShards  # re-exported: public here too

# --------------------------------------------------------------------------------------------
# Version shims (jax 0.6 .. 0.10): the only place that looks at which JAX is installed.

if hasattr(jax, "shard_map"):  # jax >= 0.6.1
  def shard_map(f, *, mesh, in_specs, out_specs):
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
else:  # pragma: no cover - jax 0.6.0
  from jax.experimental.shard_map import shard_map as _legacy_shard_map

  def shard_map(f, *, mesh, in_specs, out_specs):
    return _legacy_shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs)

if hasattr(jax.sharding, "reshard"):  # jax >= 0.7
  _reshard = jax.sharding.reshard
else:  # pragma: no cover - jax 0.6
  from jax.experimental.shard import reshard as _reshard


def use_mesh(mesh: Mesh):
  """``with use_mesh(mesh):`` makes ``mesh`` the current mesh, as Explicit mesh axes need
  (``jax.set_mesh``; ``jax.sharding.use_mesh`` before jax 0.7.1)."""
  if hasattr(jax, "set_mesh"):  # jax >= 0.7.1
    return jax.set_mesh(mesh)
  return jax.sharding.use_mesh(mesh)  # pragma: no cover - jax 0.6 .. 0.7.0


def _explicit_axes(mesh: Any) -> set[str]:
  """Names of the mesh axes of type Explicit (none before jax had axis types)."""
  types = getattr(mesh, "axis_types", None)
  axis_type = getattr(jax.sharding, "AxisType", None)
  if not types or axis_type is None:
    return set()
  return {name for name, t in zip(mesh.axis_names, types) if t == axis_type.Explicit}


def _type_sharding(x: Any) -> NamedSharding | None:
  """The sharding in ``x``'s type (Explicit mesh axes), or None."""
  typeof = getattr(jax, "typeof", None)
  if typeof is None or not hasattr(x, "shape"):  # pragma: no cover - jax < 0.7
    return None
  sharding = getattr(typeof(x), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  return sharding if mesh is not None and _explicit_axes(mesh) else None


def on_global_arrays(fn: Callable[..., Any], *args: Any, out_like: Any) -> Any:
  """``fn(*args)`` on the global arrays, XLA's partitioner placing the collectives (for steps
  that couple leaves or call ``eigh``, which do not fit :func:`map_matrices_sharded`). On
  Explicit mesh axes, where shardings are part of the types and a contraction over sharded
  axes must name its output's, ``fn`` runs under ``jax.sharding.auto_axes`` and its outputs
  (laid out like ``out_like``) come back in ``out_like``'s shardings."""
  leaves, treedef = jax.tree.flatten(out_like)
  typed = [_type_sharding(x) for x in leaves]
  if not any(typed):
    return fn(*args)
  specs = treedef.unflatten([PartitionSpec() if t is None else t.spec for t in typed])
  return jax.sharding.auto_axes(fn, out_sharding=specs)(*args)


def constrain(x: jax.Array, sharding: NamedSharding) -> jax.Array:
  """Pins ``x`` to ``sharding``: ``reshard`` on Explicit mesh axes, else a sharding constraint."""
  if _explicit_axes(sharding.mesh):
    return _reshard(x, sharding)
  return jax.lax.with_sharding_constraint(x, sharding)




# --------------------------------------------------------------------------------------------
# Resolving the shardings a user passes.


@dataclasses.dataclass(frozen=True)
class LeafSharding:
  """A leaf's mesh axes per dimension (a tuple of names per dim, padded to the leaf's ndim).

  A plain class, not a NamedTuple, so that it stays a pytree leaf."""
  dims: tuple[tuple[str, ...], ...]

  @property
  def spec(self) -> PartitionSpec:
    return PartitionSpec(*(d if len(d) > 1 else (d[0] if d else None) for d in self.dims))


def is_sharding_leaf(x: Any) -> bool:
  """Whether ``x`` is one leaf of a shardings tree (``None``, a NamedSharding or a spec)."""
  return x is None or isinstance(x, (NamedSharding, PartitionSpec))


def _dims_of(spec: PartitionSpec) -> list[tuple[str, ...]]:
  out = []
  for entry in spec:
    if entry is None:
      out.append(())
    elif isinstance(entry, str):
      out.append((entry,))
    else:
      out.append(tuple(entry))
  return out


def resolve_shardings(shardings: Any, mesh: Mesh | None, tree: Any
                      ) -> tuple[Mesh | None, Any]:
  """Checks ``shardings`` against ``tree`` and returns ``(mesh, tree of LeafSharding)``.

  Accepted: a pytree (full, or a prefix of ``tree``) of ``NamedSharding``, ``PartitionSpec``
  (then ``mesh`` is required) or ``None`` (replicated), or a callable ``tree -> pytree``.
  Every ``NamedSharding`` must live on the same mesh; every sharded dimension must divide by
  its mesh axes' sizes. Errors name the offending leaf.
  """
  if callable(shardings) and not is_sharding_leaf(shardings):
    shardings = shardings(tree)
  try:
    expanded = jax.tree_util.tree_map(
        lambda s, sub: jax.tree_util.tree_map(lambda _: s, sub), shardings, tree,
        is_leaf=is_sharding_leaf)
  except (ValueError, TypeError) as e:
    raise ValueError(
        "shardings must be a pytree matching the parameters (or a prefix of them) with "
        f"NamedSharding / PartitionSpec / None leaves. JAX reported: {e}") from e
  for s in jax.tree_util.tree_leaves(expanded, is_leaf=is_sharding_leaf):
    if not isinstance(s, NamedSharding):
      continue
    if mesh is None:
      mesh = s.mesh
    elif s.mesh != mesh and s.mesh.shape_tuple != mesh.shape_tuple:
      raise ValueError(f"shardings live on different meshes ({dict(s.mesh.shape)} and "
                       f"{dict(mesh.shape)}); symoptax needs one mesh for all parameters.")

  def resolve(path, leaf, s):
    spec = PartitionSpec() if s is None else (s.spec if isinstance(s, NamedSharding) else s)
    shape = jnp.shape(leaf)
    dims = _dims_of(spec)
    if len(dims) > len(shape):
      raise ValueError(f"shardings: {path_str(path)} of shape {tuple(shape)} has the "
                       f"{len(dims)}-entry PartitionSpec {spec}.")
    dims += [()] * (len(shape) - len(dims))
    for d, names in enumerate(dims):
      for name in names:
        if name not in mesh.shape:
          raise ValueError(f"shardings: {path_str(path)}: mesh axis {name!r} of {spec} is not "
                           f"in the mesh {dict(mesh.shape)}.")
      size = math.prod(mesh.shape[n] for n in names)
      if shape[d] % size:
        raise ValueError(f"shardings: {path_str(path)} has {shape[d]} entries along axis {d}, "
                         f"not divisible by the {size} shards of {names} in {spec}.")
    return LeafSharding(tuple(dims))

  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  specs = treedef.flatten_up_to(expanded)
  if mesh is None:
    for (path, _), s in zip(flat, specs):
      if isinstance(s, PartitionSpec):
        raise ValueError(f"shardings: {path_str(path)} has a PartitionSpec {s} but no mesh "
                         "was given; pass mesh=... or NamedShardings.")
    return None, None  # nothing sharded anywhere (all None)
  return mesh, treedef.unflatten([resolve(path, leaf, s)
                                  for (path, leaf), s in zip(flat, specs)])


# --------------------------------------------------------------------------------------------
# The sharded matrix map.

class _Group(NamedTuple):
  shape: tuple[int, int]
  dtype: Any
  batch: tuple[str, ...]
  rows: tuple[str, ...]
  cols: tuple[str, ...]


def _leaf_axes(lay, dims) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
  """The mesh axes that split a leaf's batch, rows and cols (in the layout's order)."""
  nb, nr = len(lay.batch_shape), len(lay.rows_shape)
  dims = lay.view_dims(dims)
  names = lambda axes_: tuple(n for a in axes_ for n in dims[a])
  return names(lay.perm[:nb]), names(lay.perm[nb:nb + nr]), names(lay.perm[nb + nr:])


def _check_whole_heads(lay, dims, mesh, path) -> None:
  """An axis read head by head (:attr:`symoptax.MatrixAxes.split`) may only be split over
  devices between heads: each device's block must hold whole heads."""
  view_dims = lay.view_dims(dims)
  for a, inner in lay.splits:
    devices = math.prod(mesh.shape[n] for n in view_dims[a])
    if lay.view_shape[a] % devices:
      raise ValueError(
          f"{jax.tree_util.keystr(tuple(path))}: read as {lay.view_shape[a]} heads of {inner} "
          f"(head-wise attention), but the axis is split over {devices} devices "
          f"({', '.join(view_dims[a])}), which would cut heads apart. Shard it over a mesh "
          "axis whose size divides the number of heads, or read attention whole "
          "(attention='whole').")


def _shards(mesh, rows, cols, shape) -> MatrixShards:
  return MatrixShards(rows, cols, shape, math.prod(mesh.shape[n] for n in rows + cols))


def map_matrices_sharded(fn: Callable[[jax.Array, MatrixShards], jax.Array], updates: Any,
                         axes_tree: Any, shardings_tree: Any, mesh: Mesh) -> Any:
  """The sharded counterpart of :func:`symoptax.axes.map_matrices`.

  Under one ``shard_map``, every matrix leaf's local block goes to ``[B, rows, cols]``; blocks
  of matrices with the same global shape, dtype and sharding are concatenated along the batch
  (a stack of layers becomes one batch) and go through ``fn(x, shards)`` in one call.
  Leaves without axes pass through unchanged.
  """
  leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=lambda x: x is None)
  axes_leaves = treedef.flatten_up_to(axes_tree)
  sh_leaves = treedef.flatten_up_to(shardings_tree)
  idx = [i for i, (u, ax) in enumerate(zip(leaves, axes_leaves))
         if u is not None and ax is not None]
  if not idx:
    return updates
  paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(
      updates, is_leaf=lambda x: x is None)[0]]
  groups_of = {}
  for i in idx:
    lay = layout(jnp.shape(leaves[i]), axes_leaves[i])
    _check_whole_heads(lay, sh_leaves[i].dims, mesh, paths[i])
    groups_of[i] = _Group((math.prod(lay.rows_shape), math.prod(lay.cols_shape)),
                          jnp.promote_types(leaves[i].dtype, jnp.float32),
                          *_leaf_axes(lay, sh_leaves[i].dims))
  specs = tuple(sh_leaves[i].spec for i in idx)

  def body(*blocks):
    groups: dict[_Group, list[tuple[int, jax.Array, Any]]] = {}
    for i, block in zip(idx, blocks):
      lay = layout(block.shape, axes_leaves[i])
      groups.setdefault(groups_of[i], []).append(
          (i, to_batched(block, lay).astype(groups_of[i].dtype), lay))
    out = {}
    for g, items in groups.items():
      sizes = [xb.shape[0] for _, xb, _ in items]
      x = items[0][1] if len(items) == 1 else jnp.concatenate([xb for _, xb, _ in items], 0)
      y = fn(x, _shards(mesh, g.rows, g.cols, g.shape))
      ys = [y] if len(items) == 1 else jnp.split(
          y, list(itertools.accumulate(sizes))[:-1], axis=0)
      for (i, _, lay), yi in zip(items, ys):
        out[i] = from_batched(yi, lay).astype(leaves[i].dtype)
    return tuple(out[i] for i in idx)

  results = shard_map(body, mesh=mesh, in_specs=specs, out_specs=specs)(
      *(leaves[i] for i in idx))
  out = list(leaves)
  for i, r in zip(idx, results):
    out[i] = r
  return jax.tree_util.tree_unflatten(treedef, out)


# Square statistics whole on every device of a matrix (sharded only along stacked axes).
GRAM_KINDS = ("gram", "rows_gram", "cols_gram")


def stat_shape(lay, kind: str) -> tuple[int, ...]:
  """Shape of a per-matrix statistic of a leaf with layout ``lay``: its batch axes, then its
  row axes (``kind="rows"``), column axes (``"cols"``), nothing (``"matrix"``) or a square
  ``k x k`` matrix, whole on every device of a split matrix: ``"gram"`` on the short side
  (``k = min(rows, cols)``), ``"rows_gram"`` / ``"cols_gram"`` on the rows / columns;
  ``"param"``: the leaf's own shape (an elementwise statistic, sharded as the leaf)."""
  if kind == "param":
    return tuple(lay.shape)
  if kind in GRAM_KINDS:
    r, c = math.prod(lay.rows_shape), math.prod(lay.cols_shape)
    k = {"gram": min(r, c), "rows_gram": r, "cols_gram": c}[kind]
    return lay.batch_shape + (k, k)
  extra = {"rows": lay.rows_shape, "cols": lay.cols_shape, "matrix": ()}[kind]
  return lay.batch_shape + extra


def _stat_dims(lay, dims, kind):
  if kind == "param":
    return tuple(dims)
  nb, nr = len(lay.batch_shape), len(lay.rows_shape)
  view = lay.view_dims(dims)
  batch = tuple(view[a] for a in lay.perm[:nb])
  if kind in GRAM_KINDS:
    return batch + ((), ())
  pick = {"rows": lay.perm[nb:nb + nr], "cols": lay.perm[nb + nr:], "matrix": ()}[kind]
  return batch + tuple(view[a] for a in pick)


def shard_stats(stats: Any, params: Any, axes_tree: Any, shardings: Any, mesh: Mesh | None,
                kind: str) -> Any:
  """Places a tree of per-matrix statistics (see :func:`stat_shape`) in the shardings of
  the rows / columns they describe; unchanged when ``shardings`` is None."""
  if shardings is None:
    return stats
  mesh, leaf_sh = resolve_shardings(shardings, mesh, params)
  if mesh is None:
    return stats
  leaves, treedef = jax.tree_util.tree_flatten(params, is_leaf=lambda x: x is None)
  out = []
  for p, ax, sh, v in zip(leaves, treedef.flatten_up_to(axes_tree),
                          treedef.flatten_up_to(leaf_sh), treedef.flatten_up_to(stats)):
    if v is None or ax is None:
      out.append(v)
      continue
    spec = LeafSharding(_stat_dims(layout(jnp.shape(p), ax), sh.dims, kind)).spec
    out.append(constrain(v, NamedSharding(mesh, spec)))
  return treedef.unflatten(out)


def map_matrices_with_stats(fn: Callable[..., Any], updates: Any, axes_tree: Any, *,
                            extras: Sequence[Any] = (), stats: Sequence[Any] = (),
                            stat_kinds: Sequence[str] = (), shardings_tree: Any = None,
                            mesh: Mesh | None = None) -> tuple[Any, list[Any]]:
  """Per matrix leaf: ``y, new_stats = fn(x, extras, stats, shards)``, sharded or not.

  ``x`` is the update as ``[B, rows, cols]`` (float32 or wider); ``extras`` are trees laid
  out like the updates (momentum, parameters; ``None`` trees give ``None``), moved the same
  way; ``stats`` are trees of per-matrix statistics (optimizer state) of the shapes
  :func:`stat_shape` gives for ``stat_kinds``, seen by ``fn`` as ``[B]``, ``[B, rows]``,
  ``[B, cols]``, ``[B, k, k]`` (the square kinds, whole) or ``[B, rows, cols]``
  (``"param"``, the leaf's own layout). With ``mesh`` each leaf runs under ``shard_map`` on local blocks (the
  statistics sharded like the rows/columns they describe) and ``shards`` does the
  collectives; without it ``shards`` is ``LOCAL``. Returns the new updates and the new
  statistics trees (``None`` where a leaf has no axes).
  """
  leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=lambda x: x is None)
  axes_leaves = treedef.flatten_up_to(axes_tree)
  extra_leaves = [treedef.flatten_up_to(e) if e is not None else [None] * len(leaves)
                  for e in extras]
  stat_leaves = [treedef.flatten_up_to(t) for t in stats]
  sh_leaves = (treedef.flatten_up_to(shardings_tree) if mesh is not None
               else [None] * len(leaves))
  paths = ([p for p, _ in jax.tree_util.tree_flatten_with_path(
      updates, is_leaf=lambda x: x is None)[0]] if mesh is not None else None)
  out, new_stats = list(leaves), [list(t) for t in stat_leaves]
  for i, (u, ax) in enumerate(zip(leaves, axes_leaves)):
    if u is None or ax is None:
      continue
    dtype = jnp.promote_types(u.dtype, jnp.float32)
    es = [e[i] for e in extra_leaves]
    ss = [t[i] for t in stat_leaves]

    def one(block, es_, ss_, shards):
      lay = layout(block.shape, ax)
      xb = to_batched(block, lay).astype(dtype)
      eb = [None if e is None else to_batched(e, lay).astype(dtype) for e in es_]
      sb = [to_batched(v, lay) if k == "param" else
            v.reshape(lay.batched_shape[:1] + ({"rows": lay.batched_shape[1:2],
                                                "cols": lay.batched_shape[2:],
                                                "matrix": ()}.get(k, v.shape[-2:])))
            for v, k in zip(ss_, stat_kinds)]
      y, new = fn(xb, eb, sb, shards)
      # (a square statistic is whole: its k is the global matrix's, not the local block's)
      new = [from_batched(n, lay) if k == "param" else
             n.reshape(lay.batch_shape + n.shape[-2:]) if k in GRAM_KINDS else
             n.reshape(stat_shape(lay, k)) for n, k in zip(new, stat_kinds)]
      return from_batched(y, lay).astype(block.dtype), new

    if mesh is None:
      y, new = one(u, es, ss, LOCAL)
    else:
      lay = layout(jnp.shape(u), ax)
      dims = sh_leaves[i].dims
      _check_whole_heads(lay, dims, mesh, paths[i])
      _, rows, cols = _leaf_axes(lay, dims)
      shards = _shards(mesh, rows, cols, (math.prod(lay.rows_shape), math.prod(lay.cols_shape)))
      spec = sh_leaves[i].spec
      stat_specs = [LeafSharding(_stat_dims(lay, dims, k)).spec for k in stat_kinds]
      present = [j for j, e in enumerate(es) if e is not None]

      def body(block, es_present, ss_):
        es_full = [None] * len(es)
        for j, e in zip(present, es_present):
          es_full[j] = e
        y_, new_ = one(block, es_full, ss_, shards)
        return y_, new_

      y, new = shard_map(body, mesh=mesh,
                         in_specs=(spec, [spec] * len(present), stat_specs),
                         out_specs=(spec, stat_specs))(u, [es[j] for j in present], ss)
    out[i] = y
    for t, n in zip(new_stats, new):
      t[i] = n
  return (jax.tree_util.tree_unflatten(treedef, out),
          [jax.tree_util.tree_unflatten(treedef, t) for t in new_stats])


# --------------------------------------------------------------------------------------------
# Optimizer state in the parameters' shardings.


def state_shardings(state: Any, param_shardings: Any, default: Any, *,
                    params: Any = None, other: Any = None) -> Any:
  """Shardings for an optimizer state: in every subtree laid out like the parameters
  (momentum, Adam moments, per-row statistics; ``optax.multi_transform``'s masked leaves
  included) a leaf of its parameter's shape takes the parameter's sharding; every leaf
  outside such subtrees (step counts) takes ``default``.

  A leaf inside a parameter-like subtree whose shape is not its parameter's (a statistic
  such as NorMuon's per-row second moment, which symoptax shards itself) takes ``other``;
  telling them apart needs ``params`` (arrays or ``jax.ShapeDtypeStruct``s). Without
  ``params`` every leaf of a parameter-like subtree is taken to be parameter-shaped.

  ``state`` may be arrays or ``jax.ShapeDtypeStruct``s (``jax.eval_shape(opt.init, params)``),
  so the result can serve as ``out_shardings`` of a jitted init (then pass ``other=default``).
  """
  masked = lambda x: isinstance(x, optax.MaskedNode)
  # None stands for a leaf too: statistics trees hold None where a parameter has none. Masked
  # leaves (a multi_transform branch's view of the parameters) are leaves on both sides.
  hole = lambda x: masked(x) or x is None
  params_def = jax.tree.structure(param_shardings, is_leaf=masked)
  shapes = (jax.tree.map(lambda x: x if masked(x) else jnp.shape(x), params, is_leaf=masked)
            if params is not None
            else jax.tree.map(lambda _: None, param_shardings, is_leaf=masked))

  def like_params(x):
    return not hole(x) and jax.tree.structure(x, is_leaf=hole) == params_def

  def pick(leaf, s, shape):
    if hole(leaf):
      return leaf
    return s if shape is None or tuple(jnp.shape(leaf)) == tuple(shape) else other

  def assign(x):
    if like_params(x):
      return jax.tree.map(pick, x, param_shardings, shapes, is_leaf=hole)
    return default

  return jax.tree.map(assign, state, is_leaf=lambda x: masked(x) or like_params(x))


def _named(shardings: Any, mesh: Mesh | None, params: Any) -> tuple[Mesh | None, Any]:
  mesh, leaf_sh = resolve_shardings(shardings, mesh, params)
  if mesh is None:  # nothing to place (no leaves, or all None)
    return None, None
  return mesh, jax.tree.map(lambda s: NamedSharding(mesh, s.spec), leaf_sh,
                            is_leaf=lambda x: isinstance(x, LeafSharding))


def keep_shardings(tx: optax.GradientTransformation, shardings: Any, *,
                   mesh: Mesh | None = None) -> optax.GradientTransformationExtraArgs:
  """Wraps ``tx`` so that its state and updates stay in the parameters' shardings.

  ``init`` places every parameter-shaped part of the state (momentum, second moments) in
  the parameters' shardings and the step counts replicated (:func:`state_shardings`);
  per-matrix statistics are left to the transform that owns them (symoptax's are sharded
  like the rows or columns they describe). ``update`` pins the updates and the new state
  the same way. Without it, ``jnp.zeros_like``
  inside a jitted ``init`` is free to come out on one device, and a step may reshard silently.

  Args:
    tx: any optax transformation.
    shardings: pytree of ``NamedSharding`` (or ``PartitionSpec`` with ``mesh``) like the
      parameters, or a callable ``params -> pytree``.
    mesh: the mesh for ``PartitionSpec`` leaves.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extra arguments are passed through).
  """

  def pin(tree, params_like, mesh_, named):
    if mesh_ is None:
      return tree
    targets = state_shardings(tree, named, NamedSharding(mesh_, PartitionSpec()),
                              params=params_like)
    keep = lambda x, s: x if isinstance(x, optax.MaskedNode) or s is None else constrain(x, s)
    return jax.tree.map(keep, tree, targets, is_leaf=lambda x: isinstance(x, optax.MaskedNode))

  def init_fn(params):
    return pin(tx.init(params), params, *_named(shardings, mesh, params))

  def update_fn(updates, state, params=None, **extra):
    if isinstance(tx, optax.GradientTransformationExtraArgs):
      new_updates, new_state = tx.update(updates, state, params, **extra)
    else:
      new_updates, new_state = tx.update(updates, state, params)
    like = params if params is not None else updates
    mesh_, named = _named(shardings, mesh, like)
    if mesh_ is not None:
      new_updates = jax.tree.map(constrain, new_updates, named)
    return new_updates, pin(new_state, like, mesh_, named)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
