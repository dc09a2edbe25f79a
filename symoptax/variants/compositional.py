"""Compositional Muon: Muon's steepest descent on the attention circuits ``Q K^T`` and ``V O``.

:func:`scale_by_compositional_muon` is the partner-whitened step, :func:`compositional_muon`
the named optimizer (a :func:`symoptax.symmetry_stack` rule for the attention roles). Unlike
the per-matrix rules it couples leaves: each query head's step depends on its key head's
weights, the value heads' on the output projection's and back, so it reads the roles
(:func:`symoptax.label_roles`) to pair the q/k/v/o leaves of one attention block and the
head-wise axes (:func:`symoptax.matrix_axes` with ``attention="heads"``) to cut them into
heads -- HF/NNX 2-D kernels, MaxText 3-D kernels and scanned layer stacks alike. Written from
the authors' blog post and the reference repository's README (the code was not available
here); the partners' inverse roots come from coupled Newton-Schulz, as the reference's do
(:func:`inverse_sqrt`, iterated to float32 precision).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.aliases import ScalarOrSchedule, chain, keeps_shardings
from symoptax.axes import (AxesLike, from_batched, layout, matrix_mask, path_keys, path_str,
                           resolve_axes, to_batched)
from symoptax.docstrings import shared_args
from symoptax.roles import _ATTN_NAMES, label_roles, matrix_axes
from symoptax.transforms import shape_factor, validate_polar

_HI = jax.lax.Precision.HIGHEST
# The leaves the step pairs: queries with keys, values with output projections.
PAIRED_ROLES = ("attn_q", "attn_k", "attn_v", "attn_o")
_MODULE_NAMES = frozenset().union(*(_ATTN_NAMES[r] for r in PAIRED_ROLES))
# The least damping, relative to a Gram's Frobenius norm (float32's resolution of its
# eigenvalues, with room to spare; a rank-deficient partner's root stays finite at damping=0).
DAMPING_FLOOR = 1e-5


def _mm(a, b):
  return jnp.matmul(a, b, precision=_HI)


def _t(a):
  return jnp.swapaxes(a, -1, -2)


# Coupled Newton-Schulz steps for the inverse roots: the iteration multiplies a small
# eigenvalue's share of the norm by 2.25 per step, then converges quadratically, so 30 steps
# reach float32 precision for eigenvalues down to 1e-8 of the norm (the damped Grams' are
# above DAMPING_FLOOR = 1e-5 of it).
ROOT_STEPS = 30


def _frobenius(a: jax.Array) -> jax.Array:
  """Frobenius norms of a batch ``[..., n, n]`` (keepdims), in units of the largest entry: no
  square underflows or overflows; at least float32's smallest normal."""
  s = jnp.max(jnp.abs(a), axis=(-2, -1), keepdims=True)
  s = jnp.maximum(s, jnp.finfo(a.dtype).tiny)
  return s * jnp.sqrt(jnp.sum(jnp.square(a / s), axis=(-2, -1), keepdims=True))


def inverse_sqrt(a: jax.Array, steps: int = ROOT_STEPS) -> jax.Array:
  r"""``a^{-1/2}`` of a batch ``[..., n, n]`` of symmetric positive definite matrices by the
  coupled Newton-Schulz iteration (matrix products only: no LAPACK call, whose CPU kernels
  hung XLA:CPU's threads in training runs here, and no ``eigh`` inside ``shard_map``):

  .. math::
    Y_0 = a / c,\ Z_0 = I,\quad T = \tfrac12 (3 I - Z_k Y_k),\ Y_{k+1} = Y_k T,\
    Z_{k+1} = T Z_k;\qquad a^{-1/2} = Z_\infty / \sqrt{c}

  with ``c`` the Frobenius norm of ``a`` (every eigenvalue of ``a / c`` in ``(0, 1]``)."""
  n = a.shape[-1]
  eye = jnp.eye(n, dtype=a.dtype)
  c = _frobenius(a)

  def step(_, yz):
    y, z = yz
    t = 1.5 * eye - 0.5 * _mm(z, y)
    return _mm(y, t), _mm(t, z)

  _, z = jax.lax.fori_loop(0, steps, step, (a / c, jnp.broadcast_to(eye, a.shape)))
  z = 0.5 * (z + _t(z))
  return z * jax.lax.rsqrt(c)


def _inverse_root(gram: jax.Array, damping, isotropic: bool) -> jax.Array:
  """``(gram + damping I)^{-1/2}`` of a batch ``[..., n, n]``; ``isotropic``: of its
  isotropic part, ``(tr(gram)/n + damping)^{-1/2} I``. The damping is at least
  ``DAMPING_FLOOR`` times the Gram's Frobenius norm: float32 resolves no smaller eigenvalue
  of it, and the floor keeps a rank-deficient Gram's root finite at ``damping=0``."""
  n = gram.shape[-1]
  eye = jnp.eye(n, dtype=gram.dtype)
  lam = jnp.maximum(jnp.maximum(damping, DAMPING_FLOOR * _frobenius(gram)),
                    jnp.finfo(gram.dtype).tiny)  # a zero partner (zero-initialised) too
  if isotropic:
    return jax.lax.rsqrt(jnp.trace(gram, axis1=-2, axis2=-1)[..., None, None] / n + lam) * eye
  return inverse_sqrt(0.5 * (gram + _t(gram)) + lam * eye)


def _grouped(x: jax.Array, groups: int) -> jax.Array:
  """``[L, H, n, n]`` -> ``[L, H / groups, n, n]``: the sum over each group of heads."""
  l, h = x.shape[:2]
  return x.reshape((l, h // groups, groups) + x.shape[2:]).sum(axis=2)


def _per_query(x: jax.Array, groups: int) -> jax.Array:
  """``[L, Hkv, ...]`` -> ``[L, Hkv * groups, ...]``: query head ``h`` gets kv head
  ``h // groups`` (the grouping of Llama's ``repeat_kv`` and MaxText)."""
  return jnp.repeat(x, groups, axis=1)


def qk_step(mq, mk, wq, wk, *, damping, isotropic, msign):
  r"""The half-split QK step of head arrays ``[L, H, hd, d]`` (a head's rows are its
  ``hd`` outputs): momenta ``mq``, ``mk`` and weights ``wq``, ``wk``; ``H_q`` a multiple of
  ``H_kv`` (grouped-query attention: query head ``h`` reads key head ``h // G``).

  .. math::
    \Delta Q_h = \tfrac12\,C_{K}^{-1} \mathrm{msign}(C_{K}^{-1} M_{Q,h}),\quad
    \Delta K_g = \tfrac{1}{2G}\,C_{Q,g}^{-1} \mathrm{msign}(C_{Q,g}^{-1} M_{K,g})

  with :math:`C_K = (K_g K_g^\top + \lambda I)^{1/2}` and
  :math:`C_{Q,g} = (\sum_{h \in g} Q_h Q_h^\top + \lambda I)^{1/2}`."""
  g = mq.shape[1] // mk.shape[1]
  ck = _inverse_root(_mm(wk, _t(wk)), damping, isotropic)
  cq = _inverse_root(_grouped(_mm(wq, _t(wq)), g), damping, isotropic)
  ck_q = _per_query(ck, g)
  dq = _mm(ck_q, msign(_mm(ck_q, mq)))
  dk = _mm(cq, msign(_mm(cq, mk)))
  return 0.5 * dq, (0.5 / g) * dk


def ov_step(mv, mo, wv, wo, *, damping, isotropic, msign):
  r"""The hybrid OV step: value heads ``[L, H_kv, hd, d]`` one by one, the output projection
  (heads ``[L, H, d, hd]``) as the one ``d x (H hd)`` matrix that sums the heads.

  .. math::
    \Delta V_g = \tfrac{1}{2G}\,C_{O,g}^{-1} \mathrm{msign}(C_{O,g}^{-1} M_{V,g}),\quad
    [\Delta O_h]_h = \tfrac12\,\mathrm{msign}\big([M_{O,h} C_{V}^{-1}]_h\big)
    \,\mathrm{blockdiag}_h(C_{V}^{-1})

  with :math:`C_{O,g} = (\sum_{h \in g} O_h^\top O_h + \lambda I)^{1/2}` and
  :math:`C_V = (V_g V_g^\top + \lambda I)^{1/2}` for the value head ``g`` of head ``h``."""
  g = mo.shape[1] // mv.shape[1]
  co = _inverse_root(_grouped(_mm(_t(wo), wo), g), damping, isotropic)
  cv = _per_query(_inverse_root(_mm(wv, _t(wv)), damping, isotropic), g)
  dv = _mm(co, msign(_mm(co, mv)))
  l, h, d, hd = mo.shape
  x = _mm(mo, cv)  # [L, H, d, hd]
  whole = jnp.swapaxes(x, 1, 2).reshape(l, 1, d, h * hd)  # [M_O,1 C^-1, ..., M_O,H C^-1]
  p = jnp.swapaxes(msign(whole).reshape(l, d, h, hd), 1, 2)
  return (0.5 / g) * dv, 0.5 * _mm(p, cv)


class _Heads:
  """A leaf's matrices as ``[L, H, rows, cols]``: its layout with the layer axes put before
  the head axes (a MaxText out kernel ``[H, L, hd, d]`` lists heads first), read and written
  by :func:`symoptax.axes.to_batched` / :func:`from_batched`."""

  def __init__(self, shape, axes, path):
    lay = layout(shape, axes, path)
    nb = len(lay.batch_shape)
    layers = [a for a in lay.perm[:nb] if a in lay.layers]
    heads = [a for a in lay.perm[:nb] if a not in lay.layers]
    view = lay.view_shape
    self.lay = lay._replace(perm=tuple(layers + heads) + lay.perm[nb:],
                            batch_shape=tuple(view[a] for a in layers + heads))
    _, rows, cols = lay.batched_shape
    self.shape = (math.prod(view[a] for a in layers), math.prod(view[a] for a in heads),
                  rows, cols)

  def to(self, x):
    return to_batched(x, self.lay).reshape(self.shape)

  def back(self, y):
    return from_batched(y.reshape(self.lay.batched_shape), self.lay)


def _block_of(path, role: str) -> tuple[str, ...]:
  """The attention block of a q/k/v/o leaf: its path with the projection's module name
  (``q_proj``, ``query``, ``wq``, ...) replaced by ``*``."""
  keys = path_keys(path)
  low = [k.lower() for k in keys]
  at = [i for i, k in enumerate(low) if k in _MODULE_NAMES]
  if not at:
    raise ValueError(
        f"compositional_muon: {path_str(path)} ({role}) has no query/key/value/output module "
        f"name in its path ({', '.join(sorted(_MODULE_NAMES))}), so its attention block's "
        "other projections cannot be found; name the modules so, or give this leaf another "
        "rule.")
  i = at[-1]
  return tuple(keys[:i]) + ("*",) + tuple(keys[i + 1:])


def _pairs(flat, roles, axes, where: str):
  """``{block: {role: leaf index}}`` of the q/k/v/o leaves, checked: one leaf per role per
  block, queries with keys, values with output projections, head counts that group."""
  blocks: dict[tuple[str, ...], dict[str, int]] = {}
  for i, ((path, _), role) in enumerate(zip(flat, roles)):
    if role == "attn_qkv":
      raise ValueError(
          f"{where}: {path_str(path)} is a fused q/k/v kernel (role attn_qkv); compositional "
          "Muon pairs separate query, key, value and output leaves. Give attn_qkv another "
          "rule (e.g. overrides={'attn_qkv': 'muon'}).")
    if role not in PAIRED_ROLES:
      continue
    if axes[i] is None:
      raise ValueError(f"{where}: {path_str(path)} ({role}) has no matrix axes.")
    block = blocks.setdefault(_block_of(path, role), {})
    if role in block:
      raise ValueError(f"{where}: {path_str(flat[block[role]][0])} and {path_str(path)} are "
                       f"both {role} of one attention block; relabel one (rules=...).")
    block[role] = i
  for block, found in blocks.items():
    for a, b in (("attn_q", "attn_k"), ("attn_v", "attn_o")):
      if (a in found) != (b in found):
        have, miss = (a, b) if a in found else (b, a)
        raise ValueError(
            f"{where}: {path_str(flat[found[have]][0])} ({have}) has no {miss} partner in "
            f"its attention block {'/'.join(block)}; compositional Muon steps queries with "
            "keys and values with output projections. Give both roles this rule, or neither "
            "(a fused q/k/v or k/v kernel, role attn_qkv, has no separate partner: give this "
            "role another rule in such a model).")
  return blocks


def _check_heads(views, block, where, flat):
  """Layer counts, head sizes and head groups of one block's q/k/v/o views."""
  name = lambda r: path_str(flat[views[r][0]][0])
  for a, b, kv in (("attn_q", "attn_k", "attn_k"), ("attn_o", "attn_v", "attn_v")):
    if a not in views:
      continue
    (_, va), (_, vb) = views[a], views[b]
    la, ha, ra, ca = va.shape
    lb, hb, rb, cb = vb.shape
    head_a = ca if a == "attn_o" else ra  # O's heads are [d, hd]
    d_a = ra if a == "attn_o" else ca
    if la != lb or ha % hb or head_a != rb or d_a != cb:
      raise ValueError(
          f"{where}: {name(a)} reads as {la} layer(s) x {ha} heads of "
          f"{[ra, ca]} and {name(b)} as {lb} x {hb} of {[rb, cb]}; compositional Muon needs "
          f"the same layers, the same head size and model width, and {kv}'s heads to divide "
          f"the others' (grouped-query attention). Check head_dim= and scan_axis=.")


@shared_args
def scale_by_compositional_muon(
    damping: ArrayLike = 1e-2,
    *,
    isotropic: bool = False,
    method: str = "polar_express",
    roles: Any = None,
    axes: AxesLike = None,
    head_dim: Any = None,
    scan_axis: Any = None,
    compute_dtype: Any = "auto",
) -> optax.GradientTransformation:
  r"""Compositional Muon's partner-whitened step (stateless; feed it momentum).

  The loss sees a head's query and key only through :math:`Q_h^\top K_h` and its value and
  output projection through :math:`O_h V_h` (heads read as ``[hd, d]`` for q/k/v and
  ``[d, hd]`` for o: outputs by inputs). Steepest descent in the spectral norm of those
  composed maps, with the budget split evenly between the two factors, gives per head

  .. math::
    \Delta Q_h = \tfrac12\,C_K^{-1}\,\mathrm{msign}(C_K^{-1} M_{Q,h}),\qquad
    \Delta K_h = \tfrac12\,C_Q^{-1}\,\mathrm{msign}(C_Q^{-1} M_{K,h}),\\
    \Delta V_h = \tfrac12\,C_O^{-1}\,\mathrm{msign}(C_O^{-1} M_{V,h}),\qquad
    [\Delta O_h]_h = \tfrac12\,\mathrm{msign}\big([M_{O,h} C_V^{-1}]_h\big)\,
    \mathrm{blockdiag}_h(C_V^{-1})

  with the partners' damped Gram roots :math:`C_K = (K_h K_h^\top + \lambda I)^{1/2}`,
  :math:`C_Q = (Q_h Q_h^\top + \lambda I)^{1/2}`, :math:`C_O = (O_h^\top O_h + \lambda
  I)^{1/2}`, :math:`C_V = (V_h V_h^\top + \lambda I)^{1/2}` (``damping`` :math:`\lambda`),
  ``M`` the momenta and ``msign`` the polar factor. (Each leg solves
  :math:`\min \langle M_Q, \Delta Q\rangle` subject to :math:`\|\Delta Q^\top K_h\|_2 \le
  \tfrac12`: substitute :math:`Z = C_K \Delta Q`.) The output projection is one matrix over
  all heads, the authors' "hybrid" OV rule. With grouped-query attention (``G`` query heads
  per key/value head, query head ``h`` reading key/value head ``h // G``) a shared key or
  value head's partner Gram sums its group's and its step is ``1/G`` of the above.
  ``isotropic=True`` is the authors' partner-rescaled Muon: each Gram root is replaced by its
  isotropic part :math:`c = (\|W_h\|_F^2 / hd + \lambda)^{1/2}`, so each head steps by
  :math:`\tfrac12 c^{-1} \mathrm{msign}(M)` (the output projection by
  :math:`\tfrac12 \mathrm{msign}([c_h^{-1} M_{O,h}]_h)` times :math:`c_h^{-1}`), no inverse
  root.

  Symmetry: the attention's own reparametrisations. For ``damping=0`` the step is
  equivariant under every per-head invertible :math:`A_h, B_h` that leaves the circuits
  unchanged (:math:`Q_h \to A_h Q_h, K_h \to A_h^{-\top} K_h`, :math:`V_h \to B_h V_h, O_h
  \to O_h B_h^{-1}`: then :math:`\Delta Q_h \to A_h \Delta Q_h`, ..., and the composed maps'
  steps do not change), which Muon is not; with damping only under orthogonal
  :math:`A_h, B_h` (the damping fixes a scale); ``isotropic`` under scaled orthogonal ones
  (:math:`A_h = a R`) at ``damping=0``. Also under rotations of the residual stream (all
  four leaves' ``d`` side) and permutations of the key/value heads with their query heads.

  Leaves: every ``attn_q``/``attn_k`` and ``attn_v``/``attn_o`` leaf must have its partner in
  the same block (its path with the projection's name, ``q_proj``/``query``/``wq``/...,
  swapped); a fused ``attn_qkv`` leaf raises. Other matrix leaves take Muon's step
  (``msign`` times Muon's shape factor), as the authors' demo trains them; vectors pass
  through. Needs ``params`` in ``update``.

  Args:
    damping: :math:`\lambda`, added to each partner Gram before its root (1e-2, the
      reference's default).
    isotropic: the partner-rescaled approximation (above).
    method: full-side polar oracle for ``msign``.
    roles: a pytree of role strings like the updates (or a callable ``tree -> pytree``);
      default: :func:`symoptax.label_roles` of the updates with ``scan_axis``.
    axes: the leaves' head-wise axes (pytree or callable); default:
      :func:`symoptax.matrix_axes` with ``attention="heads"``, ``head_dim`` and
      ``scan_axis``.
    head_dim: the size of one head for 2-D kernels (default: read from ``q_norm``/``k_norm``
      scales; :func:`symoptax.matrix_axes`).
    scan_axis: the layer axis of scanned stacks (:func:`symoptax.label_roles`).
    [[compute_dtype]]

  Returns:
    An ``optax.GradientTransformation`` (stateless).

  References:
    Keigwin, Yang, Pai, Zhang, DeWulf, "Towards Compositional Steepest Descent", Tilde
    Research, 2026 (https://blog.tilderesearch.com/blog/compositional-muon; reference code
    github tilde-research/comp-muon-release).
  """
  validate_polar(method, "full", None)
  where = "compositional_muon"

  def msign(x):  # [L, H, r, c]
    return polar_lib.polar(x.reshape((-1,) + x.shape[2:]), method=method, side="full",
                           compute_dtype=compute_dtype).reshape(x.shape)

  def trees(updates):
    role_tree = roles(updates) if callable(roles) else roles
    if role_tree is None:
      role_tree = label_roles(updates, scan_axis=scan_axis)
    if axes is None:
      axes_tree = matrix_axes(updates, roles=role_tree, scan_axis=scan_axis,
                              attention="heads", head_dim=head_dim)
    else:
      axes_tree = resolve_axes(axes, updates)
    return role_tree, axes_tree

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{where} needs params in update(): each factor's step is whitened by "
                       "its partner's weights.")
    role_tree, axes_tree = trees(updates)
    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    role_leaves = treedef.flatten_up_to(role_tree)
    axes_leaves = treedef.flatten_up_to(axes_tree)
    weights = treedef.flatten_up_to(params)
    blocks = _pairs(flat, role_leaves, axes_leaves, where)
    grads = [u for _, u in flat]
    out = sharding_lib.on_global_arrays(
        lambda g, w: _step(g, w, flat, role_leaves, axes_leaves, blocks), grads, weights,
        out_like=grads)
    return treedef.unflatten(out), state

  def _step(grads, weights, flat, role_leaves, axes_leaves, blocks):
    out: list[Any] = [None] * len(flat)
    f32 = lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32))
    # One batched step per kind of block: blocks whose leaves read as the same head shapes
    # (the unscanned layers of one model) are concatenated along the layer axis.
    kinds: dict[Any, list[dict[str, tuple[int, _Heads]]]] = {}
    for block, found in blocks.items():
      views = {r: (i, _Heads(jnp.shape(flat[i][1]), axes_leaves[i], path_str(flat[i][0])))
               for r, i in found.items()}
      _check_heads(views, block, where, flat)
      key = tuple(sorted((r, v.shape[1:], flat[i][1].dtype) for r, (i, v) in views.items()))
      kinds.setdefault(key, []).append(views)
    for group in kinds.values():
      def stacked(role, source):
        return jnp.concatenate([views[role][1].to(f32(source[views[role][0]]))
                                for views in group], axis=0)
      steps = {}
      present = group[0].keys()
      if "attn_q" in present:
        steps["attn_q"], steps["attn_k"] = qk_step(
            stacked("attn_q", grads), stacked("attn_k", grads),
            stacked("attn_q", weights), stacked("attn_k", weights),
            damping=damping, isotropic=isotropic, msign=msign)
      if "attn_v" in present:
        steps["attn_v"], steps["attn_o"] = ov_step(
            stacked("attn_v", grads), stacked("attn_o", grads),
            stacked("attn_v", weights), stacked("attn_o", weights),
            damping=damping, isotropic=isotropic, msign=msign)
      for role, y in steps.items():
        sizes = [views[role][1].shape[0] for views in group]
        parts = jnp.split(y, list(itertools.accumulate(sizes))[:-1], axis=0)
        for views, part in zip(group, parts):
          i, v = views[role]
          out[i] = v.back(part).astype(grads[i].dtype)
    for i, ((path, _), u, ax) in enumerate(zip(flat, grads, axes_leaves)):
      if out[i] is not None:
        continue
      if ax is None or role_leaves[i] in PAIRED_ROLES:
        out[i] = u
        continue
      v = _Heads(jnp.shape(u), ax, path_str(path))  # another matrix: Muon's step
      y = msign(v.to(f32(u))) * shape_factor(v.lay, "muon")
      out[i] = v.back(y).astype(u.dtype)
    return out

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def _decay_mask(axes, roles, scan_axis) -> Callable[[Any], Any]:
  """Weight decay's mask: the matrix leaves (those with axes)."""
  if axes is not None:
    return matrix_mask(axes)

  def mask(params):
    role_tree = roles(params) if callable(roles) else roles
    if role_tree is None:
      role_tree = label_roles(params, scan_axis=scan_axis)
    return jax.tree.map(lambda r: r != "vector", role_tree)
  return mask


@keeps_shardings
@shared_args
def compositional_muon(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    nesterov: bool = False,
    damping: ArrayLike = 1e-2,
    isotropic: bool = False,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    roles: Any = None,
    axes: AxesLike = None,
    head_dim: Any = None,
    scan_axis: Any = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Compositional Muon: partner-whitened steps of the attention circuits.

  .. math::
    B_t = \beta B_{t-1} + G_t,\qquad
    W_{t+1} = W_t (1 - \eta\lambda_{wd}) - \eta\, \Delta(B_t; W_t)

  with :math:`\Delta` the half-split partner-whitened step of
  :func:`symoptax.scale_by_compositional_muon` (a query head's step is
  :math:`\tfrac12 C_K^{-1}\mathrm{msign}(C_K^{-1} B_{Q,h})`, :math:`C_K` its key head's
  damped Gram root; values per head, the output projection as one matrix over the heads),
  Muon's momentum trace without Nesterov (the reference's defaults: ``beta`` 0.95,
  ``damping`` 1e-2). No shape factor: a head's step is :math:`\tfrac{\eta}{2}` times its
  partner's inverse root, so its size follows the partner's scale (the authors' per-head
  dynamic learning rate). ``isotropic=True`` is their partner-rescaled Muon, no inverse root.
  Symmetry: the attention's per-head reparametrisations (orthogonal ones at any damping,
  every invertible one at ``damping=0``; see :func:`symoptax.scale_by_compositional_muon`).

  In :func:`symoptax.symmetry_stack` it is the rule of the attention roles (give it to
  ``attn_q`` and ``attn_k``, and/or to ``attn_v`` and ``attn_o``), which the stack reads
  head by head whatever its ``attention`` option. On its own it takes a whole model: other
  matrices get Muon's step (msign times Muon's shape factor), vectors the momentum.

  Args:
    learning_rate: float or optax schedule.
    beta: momentum coefficient.
    nesterov: Nesterov momentum (off in the reference).
    damping: the partner Grams' damping :math:`\lambda`.
    isotropic: the partner-rescaled approximation.
    weight_decay: decoupled weight decay on matrix leaves.
    method: full-side polar oracle for ``msign``.
    roles: role strings of the leaves (pytree or callable); default
      :func:`symoptax.label_roles`.
    axes: head-wise axes (pytree or callable); default :func:`symoptax.matrix_axes` with
      ``attention="heads"``.
    head_dim: the size of one head for 2-D kernels (default: read from
      ``q_norm``/``k_norm``).
    scan_axis: the layer axis of scanned stacks.
    [[compute_dtype]]
    [[mu_dtype]]
    shardings: the parameters' shardings (pytree of ``NamedSharding``, or ``PartitionSpec``
      with ``mesh``): the step runs on the global arrays (XLA's partitioner places the
      collectives: a head's partners live in other leaves) and the state stays in these
      shardings.
    mesh: the mesh for ``PartitionSpec`` shardings.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Keigwin, Yang, Pai, Zhang, DeWulf, "Towards Compositional Steepest Descent", Tilde
    Research, 2026 (https://blog.tilderesearch.com/blog/compositional-muon).

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> k = jax.random.split(jax.random.key(0), 4)
    >>> attn = {n: {"kernel": jax.random.normal(key, (16, 8))}
    ...         for n, key in zip(["q_proj", "k_proj", "v_proj"], k)}
    >>> attn["o_proj"] = {"kernel": jax.random.normal(k[3], (8, 16))}
    >>> params = {"attn": attn}
    >>> opt = symoptax.compositional_muon(1.0, head_dim=4, method="svd", damping=0.0)
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> # Each query head's step, read through its key head, has spectral norm 1/2.
    >>> dq = u["attn"]["q_proj"]["kernel"][:, :4]
    >>> wk = params["attn"]["k_proj"]["kernel"][:, :4]
    >>> float(np.round(np.linalg.norm(dq @ wk.T, 2), 4))
    0.5
  """
  del shardings, mesh  # keeps_shardings pins state and updates; the step runs on global arrays
  step = scale_by_compositional_muon(
      damping, isotropic=isotropic, method=method, roles=roles, axes=axes,
      head_dim=head_dim, scan_axis=scan_axis, compute_dtype=compute_dtype)
  wd = None
  if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
    wd = optax.add_decayed_weights(weight_decay,
                                   mask=_decay_mask(axes, roles, scan_axis))
  return chain(optax.trace(decay=beta, nesterov=nesterov, accumulator_dtype=mu_dtype), step,
               wd, optax.scale_by_learning_rate(learning_rate))
