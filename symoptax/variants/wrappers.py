"""Wrappers over any optimizer: Drop-Muon's random layer dropping and LANTON-style
noise-adaptive layerwise learning rates.

Both take an ``optax.GradientTransformation`` -- one rule (``symoptax.muon(...)``) or a whole
:func:`symoptax.symmetry_stack` -- and change which layers move, or how far, leaving the
inner rule's update direction alone. They are not stack rules: wrap the stack (or a rule)
with them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike
from optax.transforms import MaskedNode

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.aliases import keeps_shardings
from symoptax.axes import AxesLike, flatten_with_layouts, path_keys, path_str, resolve_axes
from symoptax.docstrings import shared_args
from symoptax.transforms import map_with_stats, safe_norm, safe_scale, validate_polar

# --------------------------------------------------------------------------------------------
# Drop-Muon: a random subset of layers per step.


class DropLayersState(NamedTuple):
  """State of :func:`drop_layers`."""
  count: jax.Array  # int32 scalar, steps taken
  key: jax.Array  # uint32[2] PRNG key from ``seed``; step t draws from fold_in(key, t)
  inner: tuple  # one inner state per droppable group (a masked copy of the tree each)
  always: Any  # the inner state of the leaves that are never dropped (EmptyState if none)


def _group_ids(tree: Any, group: Any, keep_vectors: bool, axes: AxesLike) -> tuple[list, Any]:
  """Per leaf of ``tree``: its group id (``None``: never dropped), and the tree's treedef."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
  if axes is None:
    is_matrix = [jnp.ndim(x) >= 2 for _, x in flat]
  else:
    is_matrix = [ax is not None for ax in treedef.flatten_up_to(resolve_axes(axes, tree))]
  if group is None:
    ids = [path_str(p) for p, _ in flat]
  elif callable(group):
    ids = [group(path_keys(p)) for p, _ in flat]
  else:
    try:
      ids = treedef.flatten_up_to(group)
    except (ValueError, TypeError) as e:
      raise ValueError("drop_layers: group= must be a callable path -> id or a pytree of ids "
                       f"laid out like the parameters. JAX reported: {e}") from e
  out = []
  for (path, _), gid, mat in zip(flat, ids, is_matrix):
    if not mat and keep_vectors:
      gid = None
    if gid is not None:
      try:
        hash(gid)
      except TypeError:
        raise ValueError(f"drop_layers: group id {gid!r} of {path_str(path)} is not hashable; "
                         "group= must give hashable ids (or None: never dropped).") from None
    out.append(gid)
  return out, treedef


def _order(ids: list) -> list:
  """The distinct group ids (``None`` excluded), in the order they first appear."""
  return list(dict.fromkeys(g for g in ids if g is not None))


def _masked(tree: Any, ids: list, treedef: Any, gid: Any) -> Any:
  """``tree`` with every leaf outside group ``gid`` replaced by ``optax.MaskedNode()``."""
  if tree is None:
    return None
  leaves = treedef.flatten_up_to(tree)
  return treedef.unflatten([x if i == gid else MaskedNode() for x, i in zip(leaves, ids)])


def _check_keep_prob(p: Any) -> None:
  if isinstance(p, (int, float)) and not isinstance(p, bool) and not 0 < p <= 1:
    raise ValueError(f"drop_layers: keep_prob must be in (0, 1], got {p!r}.")


def drop_layers(
    tx: optax.GradientTransformation,
    keep_prob: optax.ScalarOrSchedule,
    *,
    seed: int = 0,
    group: Any = None,
    keep_vectors: bool = True,
    rescale: bool = False,
    axes: AxesLike = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Drop-Muon: each step only a random subset of layers is updated; the rest stay frozen.

  With :math:`S_t` the groups ("layers") drawn at step :math:`t`, each kept independently
  with probability :math:`p_t` = ``keep_prob`` (a float or a schedule of the step):

  .. math::
    \ell \in S_t:\ (u^\ell_t, s^\ell_t) = \mathrm{tx}(G^\ell_t, s^\ell_{t-1}),\qquad
    \ell \notin S_t:\ u^\ell_t = 0,\ s^\ell_t = s^\ell_{t-1}

  so a dropped layer's weights *and* its optimizer state (momentum, step count, Adam
  moments) stay as they were, as in the paper (its momentum is neither decayed nor fed the
  gradient). ``rescale=True`` multiplies kept updates by :math:`1/p_t` (an unbiased update
  in expectation; the paper does not rescale, hence the default ``False``).

  The saving is real: the inner transform runs once per group under ``jax.lax.cond``, so a
  dropped group skips its polar step (and everything else of its update). Each group has
  its own inner state, initialised on the tree with the other leaves replaced by
  ``optax.MaskedNode()`` (as ``optax.masked`` does), so path-dependent transforms see the
  full paths of their leaves. Consequences: the inner transform must accept such masked
  trees (optax's and :func:`symoptax.symmetry_stack` do; a transform that does not is
  named by a clear ``ValueError`` at init);
  transforms that couple leaves (``optax.clip_by_global_norm``, :func:`noise_adaptive`'s
  normalisation) couple them only within a group, so put those outside ``drop_layers``;
  and matrices of different groups are no longer batched into one polar call.

  Groups: by default every matrix leaf is its own group (a scanned or stacked leaf
  ``[L, m, n]`` is one group: all its layers are kept or dropped together); ``group=`` may be
  a callable ``path -> id`` (``path`` a tuple of str keys, e.g.
  ``lambda path: path[1] if path[0] == "layers" else None`` groups a transformer's leaves
  by layer) or a pytree of ids like the parameters; id ``None`` means never dropped. With
  ``keep_vectors`` (default) every vector leaf (0/1-D, or ``axes`` None) is always updated.

  Symmetry: the draw depends only on the seed and the step, never on the values, so the
  wrapper keeps the inner rule's symmetry group (with the same seed, ``f(P G Q) = P f(G) Q``
  per leaf). At any gradient scale a kept layer moves as the inner rule moves it, a dropped
  one not at all.

  Not the paper's default schedule: Drop-Muon's experiments use Randomized Progressive
  Training (a random start index :math:`s_t`, then every layer from :math:`s_t` to the
  output); its analysis covers any distribution of :math:`S_t`, of which independent
  Bernoulli(:math:`p_t`) draws per group -- implemented here -- are one. Pass ``group=`` to
  choose what a "layer" is.

  Args:
    tx: the inner optimizer (any ``optax.GradientTransformation``; extra ``update``
      arguments are passed on). Its options -- ``mu_dtype`` included -- are its own.
    keep_prob: :math:`p \in (0, 1]`, a float or an optax schedule of the step count
      (``optax.inject_hyperparams`` may make it a hyperparameter).
    seed: seed of the PRNG key kept in the state; step ``t`` draws its groups from
      ``jax.random.fold_in(key, t)``.
    group: ``None`` (each matrix leaf its own group), a callable ``path -> id`` or a pytree
      of ids (``None``: never dropped).
    keep_vectors: always update vector leaves.
    rescale: multiply kept updates by ``1 / keep_prob``.
    axes: which leaves are matrices (``None``: 2-D and higher; see
      :func:`symoptax.axes.resolve_axes`); only used to tell vectors apart.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its state is :class:`DropLayersState`.

  References:
    Gruntkowska, Maziane, Qu, Richtarik, "Drop-Muon: Update Less, Converge Faster",
    arXiv:2510.02239, 2025.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> from symoptax.variants.wrappers import drop_layers
    >>> params = {"a": jnp.ones((4, 4)), "b": jnp.ones((4, 4)), "bias": jnp.ones(4)}
    >>> opt = drop_layers(symoptax.muon(0.1), keep_prob=0.5, seed=1)
    >>> u, state = opt.update(params, opt.init(params), params)
    >>> sorted(k for k, v in u.items() if bool(jnp.any(v != 0)))  # "a" was dropped this step
    ['b', 'bias']
  """
  _check_keep_prob(keep_prob)
  tx = optax.with_extra_args_support(tx)

  def init_fn(params):
    ids, treedef = _group_ids(params, group, keep_vectors, axes)
    try:
      inner = tuple(tx.init(_masked(params, ids, treedef, g)) for g in _order(ids))
      always = (tx.init(_masked(params, ids, treedef, None)) if None in ids
                else optax.EmptyState())
    except ValueError as e:
      raise ValueError(
          "drop_layers: the inner transformation rejected a group's tree (the parameters with "
          "the other groups' leaves masked out by optax.MaskedNode, as optax.masked gives "
          f"them); wrap a transformation that accepts masked trees. Inner error: {e}") from e
    return DropLayersState(jnp.zeros([], jnp.int32), jax.random.PRNGKey(seed), inner, always)

  def update_fn(updates, state, params=None, **extra):
    ids, treedef = _group_ids(updates, group, keep_vectors, axes)
    order = _order(ids)
    p = keep_prob(state.count) if callable(keep_prob) else keep_prob
    draws = jax.random.uniform(jax.random.fold_in(state.key, state.count), (len(order),))
    keep = draws < p
    out = treedef.flatten_up_to(updates)
    new_inner = []
    for i, g in enumerate(order):
      sub_u, sub_p = _masked(updates, ids, treedef, g), _masked(params, ids, treedef, g)

      def kept(s, sub_u=sub_u, sub_p=sub_p):
        u, s = tx.update(sub_u, s, sub_p, **extra)
        if rescale:
          u = jax.tree.map(lambda x: (x / p).astype(x.dtype), u)
        return u, s

      shapes = jax.eval_shape(kept, state.inner[i])

      def dropped(s, shapes=shapes):
        zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes[0])
        return zeros, jax.tree.map(lambda x, a: jnp.asarray(x).astype(a.dtype), s, shapes[1])

      u_g, s_g = jax.lax.cond(keep[i], kept, dropped, state.inner[i])
      new_inner.append(s_g)
      for j, (leaf, gid) in enumerate(zip(treedef.flatten_up_to(u_g), ids)):
        if gid == g:
          out[j] = leaf
    always = state.always
    if None in ids:
      u_a, always = tx.update(_masked(updates, ids, treedef, None), state.always,
                              _masked(params, ids, treedef, None), **extra)
      for j, (leaf, gid) in enumerate(zip(treedef.flatten_up_to(u_a), ids)):
        if gid is None:
          out[j] = leaf
    return treedef.unflatten(out), DropLayersState(
        optax.safe_increment(state.count), state.key, tuple(new_inner), always)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------------
# LANTON-style noise-adaptive layerwise learning rates.

NORMS = ("nuclear", "frobenius", "row_l21", "l1")


class NoiseAdaptiveState(NamedTuple):
  """State of :func:`noise_adaptive`."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # EMA of the gradients on matrix leaves (None on vectors)
  nu: Any  # per matrix ([*batch], float32): sqrt of the EMA of the squared dual norm of the
  # gradient's deviation from its running mean (the root keeps it finite up to ~1e30)
  inner: Any  # the inner transformation's state


def _dual_norm(d: jax.Array, shards, norm: str, method: str, compute_dtype: Any) -> jax.Array:
  """The dual norm of every matrix of ``d`` ([B, rows, cols] -> [B, 1, 1]), in units of the
  largest entry (no overflow at any scale)."""
  y, a = safe_scale(d, shards)
  if norm == "frobenius":
    n = jnp.sqrt(shards.sum(y * y, (-2, -1)))
  elif norm == "l1":
    n = shards.sum(jnp.abs(y), (-2, -1))
  elif norm == "row_l21":
    n = shards.sum(safe_norm(y, -1, shards), -2)
  else:  # nuclear: <Y, polar(Y)>
    u = shards.whole(lambda w: polar_lib.polar(w, method=method, side="full",
                                               compute_dtype=compute_dtype), y)
    n = jnp.maximum(shards.sum(y * u, (-2, -1)), 0.0)
  return n * a


@keeps_shardings
@shared_args
def noise_adaptive(
    tx: optax.GradientTransformation,
    *,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.99,
    eps: ArrayLike = 1e-8,
    norm: str = "nuclear",
    clamp: ArrayLike = 0.1,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Noise-adaptive layerwise learning rates (LANTON-style) over any optimizer.

  Per matrix :math:`\ell` (a matrix leaf, or each matrix of a stacked leaf), with the
  running mean :math:`\mu` of its gradients and the dual norm :math:`\|\cdot\|_\dagger` of
  the inner rule's LMO norm (``norm=``):

  .. math::
    \mu_t = \beta_1 \mu_{t-1} + (1-\beta_1) G_t,\qquad
    v_t = \beta_2 v_{t-1} + (1-\beta_2) \Big\|G_t - \frac{\mu_{t-1}}{1-\beta_1^{t-1}}
    \Big\|_\dagger^2 \ (t \ge 2),\\
    \sigma_\ell = \sqrt{v_t / (1-\beta_2^{t-1})},\quad
    r_\ell = \frac{1}{\sigma_\ell + \epsilon},\quad
    f_\ell = \mathrm{clip}\Big(\frac{r_\ell}{\mathrm{mean}_k\, r_k},\ c,\ 1/c\Big),\qquad
    u_\ell = f_\ell \cdot \mathrm{tx}(G)_\ell

  :math:`\sigma_\ell` estimates the gradient noise of layer :math:`\ell` in the dual norm
  (an online estimate: the deviation of each gradient from the running mean of the ones
  before it); noisier layers get smaller steps, the factors average 1 over the matrices of
  the tree before the clip (so ``tx``'s learning rate stays the mean rate unless ``clamp``
  binds) and ``clamp`` :math:`c` bounds them to :math:`[c, 1/c]`. The first step has no estimate and leaves ``tx``'s update
  alone; matrices with no noise measured (zero or empty) keep factor 1 and stay out of the
  mean; vector leaves are passed through with factor 1.

  Norms (the dual of the LMO's norm): ``"nuclear"`` (Muon and the polar rules: the LMO is
  over the spectral norm; :math:`\|X\|_* = \langle X, \mathrm{polar}(X)\rangle`, one extra
  polar call per matrix and step, no SVD), ``"frobenius"`` (self-dual), ``"row_l21"`` (the
  sum of row norms, dual of the max row norm: row-normalised rules), ``"l1"`` (dual of
  :math:`\ell_\infty`: sign descent, AdamW).

  Symmetry: the factor is a scalar per matrix computed from invariant statistics, so the
  wrapper keeps the inner rule's group when the norm is invariant under it: ``"nuclear"``
  and ``"frobenius"`` are bi-orthogonally invariant, ``"row_l21"`` is LPRO-invariant (row
  permutations, right orthogonal maps), ``"l1"`` only permutation (and sign) invariant -- it
  breaks a bi-orthogonal rule's rotations. Scale: :math:`r_\ell/\mathrm{mean}\,r` is
  scale-free while :math:`\sigma \gg \epsilon` (an absolute, Adam-style stabiliser): for
  gradients far below ``eps`` every factor tends to 1 (``tx`` itself); the norms are taken
  in units of each matrix's largest entry and the state keeps :math:`\sqrt{v}`, so the
  factors are finite for gradients from ~1e-30 to ~1e30.

  The paper's exact estimator and rate formula could not be retrieved here (only its
  abstract and summaries: "estimates gradient variance in the dual norm induced by the
  chosen LMO on the fly, and uses it to assign time-varying noise-adaptive layerwise
  learning rates within each group"); this implements that stated idea with the estimator
  and normalisation above, which are symoptax's choices.

  Args:
    tx: the inner optimizer (a rule or a whole :func:`symoptax.symmetry_stack`); its
      options -- ``mu_dtype`` included -- are its own.
    b1: EMA coefficient of the running mean of the gradients.
    b2: EMA coefficient of the squared dual-norm deviations.
    eps: added to :math:`\sigma_\ell`.
    norm: ``"nuclear"``, ``"frobenius"``, ``"row_l21"`` or ``"l1"``.
    clamp: :math:`c \in (0, 1]`; 1 gives every matrix factor 1 (``tx`` unchanged).
    method: full-side polar oracle of the nuclear norm.
    axes: which axes form rows and cols (the matrices that get a factor).
    [[compute_dtype]]
    mu_dtype: the dtype of this wrapper's running mean (``None``: the parameters' dtype).
    [[shardings]]

  Returns:
    An ``optax.GradientTransformationExtraArgs``; its state is :class:`NoiseAdaptiveState`.

  References:
    Hao, Gong, Xu, Wang, Liu, "Noise-Adaptive Layerwise Learning Rates: Accelerating
    Geometry-Aware Optimization for Deep Neural Network Training" (LANTON),
    arXiv:2510.14009, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, symoptax
    >>> from symoptax.variants.wrappers import noise_adaptive
    >>> params = {"quiet": jnp.zeros((4, 8)), "noisy": jnp.zeros((4, 8))}
    >>> opt = noise_adaptive(symoptax.muon(1.0, method="svd"), norm="frobenius")
    >>> state = opt.init(params)
    >>> for t in range(4):
    ...   noise = jax.random.normal(jax.random.key(t), (4, 8))
    ...   u, state = opt.update({"quiet": jnp.ones((4, 8)) + 0.01 * noise,
    ...                          "noisy": jnp.ones((4, 8)) + noise}, state, params)
    >>> bool(jnp.linalg.norm(u["quiet"]) > 5 * jnp.linalg.norm(u["noisy"]))
    True
  """
  polar_lib.check_choice("norm", norm, NORMS)
  if isinstance(clamp, (int, float)) and not 0 < clamp <= 1:
    raise ValueError(f"noise_adaptive: clamp must be in (0, 1], got {clamp!r}.")
  if norm == "nuclear":
    validate_polar(method, "full", None)
  tx = optax.with_extra_args_support(tx)

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    mu = [None if lay is None else jnp.zeros_like(p, dtype=mu_dtype)
          for p, lay in zip(leaves, lays)]
    nu = [None if lay is None else jnp.zeros(sharding_lib.stat_shape(lay, "matrix"), jnp.float32)
          for lay in lays]
    nu = sharding_lib.shard_stats(treedef.unflatten(nu), params, axes_tree, shardings, mesh,
                                  "matrix")
    return NoiseAdaptiveState(jnp.zeros([], jnp.int32), treedef.unflatten(mu), nu,
                              tx.init(params))

  def update_fn(updates, state, params=None, **extra):
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    prev_bias = 1 - b1 ** (t - 1)  # 0 at the first step: no running mean yet
    started = count > 1

    def fn(gb, extras, stats, shards):
      (mb,) = extras
      (root_v,) = stats  # sqrt(v_{t-1})
      mean = mb / jnp.where(started, prev_bias, 1.0)
      n = _dual_norm(gb - mean, shards, norm, method, compute_dtype).reshape(root_v.shape)
      # sqrt(b2 v + (1 - b2) n^2) in units of the larger term: nothing overflows.
      top = jnp.maximum(root_v, n)
      unit = jnp.where(top > 0, top, 1.0)
      new = top * jnp.sqrt(b2 * jnp.square(root_v / unit) + (1 - b2) * jnp.square(n / unit))
      return gb, [jnp.where(started, new, root_v)]

    tree = params if params is not None else updates
    axes_tree = resolve_axes(axes, tree)
    _, (nu,) = map_with_stats(fn, updates, tree, axes_tree, shardings, mesh,
                              extras=[state.mu], stats=[state.nu], stat_kinds=["matrix"])
    is_none = lambda x: x is None
    mu = jax.tree.map(lambda m, g: None if m is None else
                      (b1 * m + (1 - b1) * g).astype(m.dtype), state.mu, updates,
                      is_leaf=is_none)
    # Factors: r = 1 / (sigma + eps) over the matrices with a noise estimate, / their mean.
    sigma = jax.tree.map(lambda v: None if v is None else
                         v / jnp.sqrt(jnp.maximum(1 - b2 ** (t - 1), 1e-30)), nu,
                         is_leaf=is_none)
    sig_leaves = [s for s in jax.tree.leaves(sigma) if s is not None]
    valid = [s > 0 for s in sig_leaves]
    r_leaves = [1.0 / (s + eps) for s in sig_leaves]
    total = sum((jnp.sum(jnp.where(v, r, 0.0)) for v, r in zip(valid, r_leaves)),
                jnp.zeros([], jnp.float32))
    num = sum((jnp.sum(v.astype(jnp.float32)) for v in valid), jnp.zeros([], jnp.float32))
    mean_r = total / jnp.maximum(num, 1.0)

    def factor(s):
      f = jnp.clip((1.0 / (s + eps)) / jnp.where(mean_r > 0, mean_r, 1.0), clamp, 1.0 / clamp)
      return jnp.where((s > 0) & started, f, 1.0)

    inner_u, inner_state = tx.update(updates, state.inner, params, **extra)
    leaves, treedef, lays = flatten_with_layouts(inner_u, axes_tree)
    sig_flat = treedef.flatten_up_to(sigma)
    out = []
    for u, lay, s in zip(leaves, lays, sig_flat):
      if lay is None or u is None:
        out.append(u)
        continue
      batch = lay.perm[:len(lay.batch_shape)]
      f = factor(s).reshape([lay.view_shape[a] if a in batch else 1
                             for a in range(len(lay.view_shape))])
      out.append((u.reshape(lay.view_shape) * f).reshape(lay.shape).astype(u.dtype))
    return treedef.unflatten(out), NoiseAdaptiveState(count, mu, nu, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
