"""Optimisation on fixed-norm spheres: HyperP (Muon on the Frobenius sphere, with its
learning-rate transfer rule) and Magnitude-Direction decoupling (learnable row and column
gains over a direction on a sphere, wrapped around any base rule).

Both keep every matrix leaf's (direction's) Frobenius norm fixed, so they need the
parameters in ``update``. Leaves without axes (vectors) are left to the plain momentum
(``hyperp``) or to the wrapped rule (``md_decoupled``), as in the other named optimizers.
Sharded like the rest of symoptax: with ``shardings=`` the Frobenius norms and the gains'
row and column sums add a ``psum`` over the mesh axes that split a matrix (see
:mod:`symoptax.sharding`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from symoptax import sharding as sharding_lib
from symoptax.aliases import ScalarOrSchedule, chain, keeps_shardings, shard_kwargs
from symoptax.axes import AxesLike, flatten_with_layouts, from_batched, resolve_axes, to_batched
from symoptax.docstrings import shared_args
from symoptax.shards import LOCAL
from symoptax.transforms import (map_with_stats, matrix_transform, safe_norm, scale_by_polar,
                                 validate_polar)

_F32 = jnp.float32


def _is_nonzero_constant(x: Any) -> bool:
  """Whether ``x`` is a concrete (non-traced) value that is not zero."""
  if isinstance(x, jax.core.Tracer):
    return False
  try:
    return bool(np.any(np.asarray(x) != 0))
  except TypeError:  # an abstract value: nothing to check
    return False


def _on_sphere(x: jax.Array, radius: jax.Array, shards, fallback: jax.Array) -> jax.Array:
  r"""``radius * x / ||x||_F`` per matrix of a ``[B, m, n]`` batch (``radius`` of shape
  ``[B, 1, 1]``); ``fallback`` where ``x`` is zero. The norm is taken in units of the largest
  entry (:func:`safe_norm`), so it is exact at any scale."""
  n = safe_norm(x, (-2, -1), shards)
  return jnp.where(n > 0, radius * (x / jnp.where(n > 0, n, 1.0)), fallback)


def _matrix_norms(params: Any, axes_tree: Any) -> Any:
  """Per matrix of every matrix leaf: its Frobenius norm, shaped ``[*batch]`` (float32);
  ``None`` for leaves without axes."""
  leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
  out = []
  for p, lay in zip(leaves, lays):
    if lay is None:
      out.append(None)
      continue
    x = to_batched(jnp.asarray(p), lay).astype(jnp.promote_types(p.dtype, _F32))
    n = safe_norm(x, (-2, -1), LOCAL).astype(_F32)
    out.append(n.reshape(sharding_lib.stat_shape(lay, "matrix")))
  return treedef.unflatten(out)


# --------------------------------------------------------------------------------------------
# HyperP: Muon on the Frobenius sphere.


@shared_args
def scale_by_unit_frobenius(*, axes: AxesLike = None, shardings: Any = None,
                            mesh: Any = None) -> optax.GradientTransformation:
  r"""Rescales every matrix update to unit Frobenius norm (a zero matrix stays zero).

  .. math::
    X \mapsto X / \|X\|_F

  Invariant to orthogonal maps and permutations on either side (a norm), scale-free at any
  scale (the norm is taken in units of the largest entry).

  Args:
    axes: which axes form rows and cols.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """

  def fn(x, sh):
    n = safe_norm(x, (-2, -1), sh)
    return (x / jnp.where(n > 0, n, 1.0)).astype(x.dtype)

  return matrix_transform(fn, axes, shardings=shardings, mesh=mesh, reductions_only=True)


class RetractToSphereState(NamedTuple):
  """State of :func:`retract_to_sphere`."""
  radius: Any  # per matrix leaf: [*batch] float32, the sphere's radius R of each matrix


@shared_args
def retract_to_sphere(radius: ArrayLike | None = None, *, axes: AxesLike = None,
                      shardings: Any = None, mesh: Any = None) -> optax.GradientTransformation:
  r"""Turns a step ``u``, in units of the radius, into the step that lands on the sphere.

  .. math::
    W' = R\, \frac{W / R + u}{\|W / R + u\|_F},\qquad \text{update} = W' - W

  per matrix, with :math:`R` recorded at ``init``: the matrix's Frobenius norm then
  (``radius=None``; a matrix that starts at zero gets :math:`\sqrt{\mathrm{fan\_out}}`, the
  norm of a :math:`1/\sqrt{\mathrm{fan\_in}}`-std initialisation) or the number ``radius``.
  Applying the update puts :math:`\|W'\|_F = R` exactly (to rounding), whatever
  :math:`\|W\|_F` was; a matrix that starts at zero lands on the sphere in one step. Needs
  the parameters. Leaves without axes pass through. Equivariant under orthogonal maps on
  both sides (Frobenius norms only).

  Args:
    radius: ``None`` (each matrix's initial Frobenius norm) or a positive number (the
      Frobenius norm of every matrix).
    axes: which axes form rows and cols.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """
  if radius is not None and isinstance(radius, (int, float)) and not radius > 0:
    raise ValueError(f"retract_to_sphere: radius must be None or > 0, got {radius!r}.")

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    norms = _matrix_norms(params, axes_tree)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    out = []
    for n, lay in zip(treedef.flatten_up_to(norms), lays):
      if lay is None:
        out.append(None)
      elif radius is None:
        _, rows, cols = lay.batched_shape
        fan_out = rows if lay.fan_out == "rows" else cols
        out.append(jnp.where(n > 0, n, jnp.sqrt(jnp.asarray(fan_out, _F32))))
      else:
        out.append(jnp.full(n.shape, radius, _F32))
    radii = sharding_lib.shard_stats(treedef.unflatten(out), params, axes_tree, shardings,
                                     mesh, "matrix")
    return RetractToSphereState(radii)

  def fn(u, extras, stats, shards):
    (w,) = extras
    (rad,) = stats
    r = rad[:, None, None]
    x = w / jnp.where(r > 0, r, 1.0) + u
    return _on_sphere(x, r, shards, fallback=w) - w, [rad]

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("retract_to_sphere: update() needs params (the step is taken from the "
                       "current weights to the sphere); got params=None.")
    axes_tree = resolve_axes(axes, params)
    out, (radii,) = map_with_stats(fn, updates, params, axes_tree, shardings, mesh,
                                   extras=[params], stats=[state.radius],
                                   stat_kinds=["matrix"])
    # W' - W in the weights' dtype (an fp32 momentum on bf16 weights gives bf16 steps).
    out = jax.tree.map(lambda o, p, ax: o if ax is None else o.astype(p.dtype), out, params,
                       axes_tree, is_leaf=lambda x: x is None)
    return out, RetractToSphereState(radii)

  return optax.GradientTransformation(init_fn, update_fn)


@keeps_shardings
@shared_args
def hyperp(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    radius: ArrayLike | None = None,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""HyperP: Muon on the Frobenius sphere (MuonH), every matrix kept at a fixed norm.

  .. math::
    B_t = \beta B_{t-1} + G_t,\quad M_t = G_t + \beta B_t \;(\text{Nesterov}),\quad
    \hat U_t = \frac{\mathrm{polar}(M_t)}{\|\mathrm{polar}(M_t)\|_F},\\
    W_{t+1} = R\, \frac{W_t - \eta R\, \hat U_t}{\|W_t - \eta R\, \hat U_t\|_F}

  with :math:`R` each matrix's Frobenius norm at ``init`` (``radius=None``, the reference's
  choice: it renormalises to the norm the weights had) or the number ``radius``. The step
  before the retraction has norm :math:`\eta R`, so ``learning_rate`` is a *relative*
  (angular) rate: about :math:`\eta` radians per step, whatever the width; no shape factor.
  There is no weight decay: decaying by :math:`1 - \eta\lambda` before the retraction only
  rescales the step by :math:`1/(1 - \eta\lambda)` (a second-order change; "weight decay is
  a first-order no-op on the Frobenius sphere"), so only ``weight_decay=0`` is accepted.
  Matrices that start at zero (with ``radius=None``) get :math:`R = \sqrt{\mathrm{fan\_out}}`,
  the norm of a :math:`1/\sqrt{\mathrm{fan\_in}}`-std initialisation, and jump onto the sphere
  at :math:`-R\hat U_1` in the first step (the reference would stay at zero). Leaves without
  axes (vectors) get the plain Nesterov momentum times :math:`-\eta`, as in :func:`muon`; the
  paper trains them (and the embedding) with AdamW, which :func:`symoptax.symmetry_stack`
  does. Use :func:`hyperp_learning_rate` to transfer a tuned rate across depth, tokens and
  batch size.

  Symmetry: bi-orthogonal (a polar factor and Frobenius norms). Scale-invariant at every
  gradient scale (``polar(M)`` is, and it is normalised); the weights' norm never changes.

  Args:
    learning_rate: float or optax schedule: the relative step :math:`\eta`.
    beta: momentum coefficient.
    nesterov: use Nesterov momentum.
    radius: ``None`` (each matrix's initial Frobenius norm) or a positive number (the
      Frobenius norm of every matrix; needed to start from zero weights at a chosen norm).
    weight_decay: must be 0 (see above).
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``; ``update`` needs the parameters.

  References:
    Ren, Liu, Shen, Chen, "Rethinking Language Model Scaling under Transferable Hypersphere
    Optimization", arXiv:2603.28743, 2026 (github.com/microsoft/ArchScale, whose Muon-H step
    scales the orthogonalised update to :math:`\eta\|W\|_F` and renormalises :math:`W` to
    its norm before the step); Wen et al., "Hyperball Optimization", arXiv:2606.16899, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> from symoptax.variants.sphere import hyperp
    >>> params = {"w": jax.random.normal(jax.random.key(0), (8, 16))}
    >>> opt = hyperp(0.1, method="svd")
    >>> state = opt.init(params)
    >>> for k in range(3):
    ...   grads = {"w": jax.random.normal(jax.random.key(k + 1), (8, 16))}
    ...   u, state = opt.update(grads, state, params)
    ...   params = optax.apply_updates(params, u)
    >>> round(float(jnp.linalg.norm(params["w"]) / state[-1].radius["w"]), 5)  # on the sphere
    1.0
  """
  if _is_nonzero_constant(weight_decay):
    raise ValueError(
        f"hyperp: weight_decay must be 0, got {weight_decay!r}. On the Frobenius sphere a "
        "decay by (1 - lr wd) before the retraction only rescales the step by "
        "1 / (1 - lr wd), a second-order change; tune learning_rate instead.")
  if radius is not None and isinstance(radius, (int, float)) and not radius > 0:
    raise ValueError(f"hyperp: radius must be None or a number > 0, got {radius!r}.")
  validate_polar(method, "full", None)
  sh = shard_kwargs(shardings, mesh)
  return chain(
      optax.trace(decay=beta, nesterov=nesterov, accumulator_dtype=mu_dtype),
      scale_by_polar(method, side="full", axes=axes, **sh, compute_dtype=compute_dtype),
      scale_by_unit_frobenius(axes=axes, **sh),
      optax.scale_by_learning_rate(learning_rate),
      retract_to_sphere(radius, axes=axes, **sh))


# Exponents of HyperP's transfer rule (arXiv:2603.28743; microsoft/ArchScale pretrain.py).
HYPERP_EXPONENTS = {"width": 0.0, "depth": -0.5, "tokens": -0.32, "batch_size": 0.5}


def hyperp_learning_rate(
    base_learning_rate: ArrayLike,
    *,
    width: float | None = None,
    base_width: float | None = None,
    depth: float | None = None,
    base_depth: float | None = None,
    tokens: float | None = None,
    base_tokens: float | None = None,
    batch_size: float | None = None,
    base_batch_size: float | None = None,
) -> ArrayLike:
  r"""HyperP's learning-rate transfer: a rate tuned at a base scale, moved to a target.

  .. math::
    \eta = \eta_0 \left(\frac{w}{w_0}\right)^{0}
    \left(\frac{d}{d_0}\right)^{-1/2}
    \left(\frac{T}{T_0}\right)^{-0.32}
    \left(\frac{B}{B_0}\right)^{1/2}

  * width :math:`w`: exponent 0 -- on the Frobenius sphere the relative step of
    :func:`hyperp` is width-free (the paper's proof of width transfer), so no muP factor;
  * depth :math:`d` (layers): Depth-muP's :math:`\sqrt{d_0/d}` (the paper shows it remains
    necessary; the residual branches' own depth scaling is the model's business);
  * training tokens :math:`T`: the data-scaling power law with the "magic exponent" 0.32;
  * batch size :math:`B` (tokens per step): the square-root rule the reference code applies
    (``sqrt(b / b0)``; the paper's runs mostly keep the batch at its base value).

  MoE granularity needs no factor (the paper's SqrtGate keeps the output RMS instead). Each
  ``x`` / ``base_x`` pair is optional, and given together or not at all. The rule composes:
  moving from A to B and then from B to C equals moving from A to C, and the base scale maps
  to ``base_learning_rate`` itself.

  Args:
    base_learning_rate: the rate tuned at the base scale (a float or an array).
    width, base_width: model width (only checked: exponent 0).
    depth, base_depth: number of layers.
    tokens, base_tokens: training tokens.
    batch_size, base_batch_size: batch size (tokens per optimizer step).

  Returns:
    The transferred learning rate (the type of ``base_learning_rate``).

  References:
    Ren, Liu, Shen, Chen, "Rethinking Language Model Scaling under Transferable Hypersphere
    Optimization", arXiv:2603.28743, 2026 (github.com/microsoft/ArchScale, ``pretrain.py``).

  Examples:
    >>> from symoptax.variants.sphere import hyperp_learning_rate
    >>> lr = hyperp_learning_rate(0.02, depth=32, base_depth=8)  # 4x deeper: half the rate
    >>> round(lr, 6)
    0.01
    >>> round(hyperp_learning_rate(0.02, tokens=1e10, base_tokens=1e9), 6)  # 10x the data
    0.009573
  """
  out = base_learning_rate
  pairs = {"width": (width, base_width), "depth": (depth, base_depth),
           "tokens": (tokens, base_tokens), "batch_size": (batch_size, base_batch_size)}
  for name, (value, base) in pairs.items():
    if value is None and base is None:
      continue
    if value is None or base is None:
      raise ValueError(f"hyperp_learning_rate: {name} and base_{name} go together; got "
                       f"{name}={value!r}, base_{name}={base!r}.")
    for what, x in ((name, value), (f"base_{name}", base)):
      if not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0):
        raise ValueError(f"hyperp_learning_rate: {what} must be a finite number > 0, got "
                         f"{x!r}.")
    if HYPERP_EXPONENTS[name]:
      out = out * (value / base) ** HYPERP_EXPONENTS[name]
  return out


# --------------------------------------------------------------------------------------------
# Magnitude-Direction decoupling.

MD_GAINS = ("row_col", "row", "col", "none")


class MDDecoupledState(NamedTuple):
  """State of :func:`md_decoupled`."""
  count: jax.Array  # int32 scalar, steps taken
  direction: Any  # per matrix leaf: V, like the parameter (its dtype); None for vectors
  row_gain: Any  # per matrix leaf: r, [*batch, *rows] float32
  col_gain: Any  # per matrix leaf: c, [*batch, *cols] float32
  radius: Any  # per matrix leaf: ||V||_F, [*batch] float32
  gain_state: Any  # Adam's state of the gains ({"row": ..., "col": ...})
  inner_state: Any  # the wrapped rule's state (its params: V for matrices)


@keeps_shardings
@shared_args
def md_decoupled(
    tx: optax.GradientTransformation,
    *,
    gain_learning_rate: ScalarOrSchedule = 1e-3,
    gains: str = "row_col",
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.95,
    eps: ArrayLike = 1e-8,
    axes: AxesLike = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Magnitude-Direction (MD) decoupling: row and column gains times a direction on a
  sphere, each learnt at its own rate, around any base rule ``tx``.

  Every matrix is held as :math:`W = \mathrm{diag}(r)\, V\, \mathrm{diag}(c)` with
  :math:`\|V\|_F = R` fixed; the model sees the fused :math:`W`. From :math:`G = \partial
  L / \partial W`:

  .. math::
    \frac{\partial L}{\partial V} = \mathrm{diag}(r)\, G\, \mathrm{diag}(c),\quad
    \frac{\partial L}{\partial r_i} = \sum_j G_{ij} V_{ij} c_j,\quad
    \frac{\partial L}{\partial c_j} = \sum_i r_i G_{ij} V_{ij},\\
    V' = R\, \frac{V + \Delta V}{\|V + \Delta V\|_F},\quad
    \Delta V = \mathrm{tx}\!\left(\tfrac{\partial L}{\partial V}\right),\quad
    (r', c') = (r, c) - \eta_g\, \mathrm{Adam}\!\left(\tfrac{\partial L}{\partial r},
    \tfrac{\partial L}{\partial c}\right),\\
    \text{update} = \mathrm{diag}(r')\, V'\, \mathrm{diag}(c') - W

  ``tx`` (its state lives inside this one) sees :math:`\partial L/\partial V` and
  :math:`V` as its parameters; leaves without axes (vectors) go through ``tx`` unchanged.
  At ``init`` :math:`r` = the row norms of :math:`W`, :math:`c = 1`, :math:`V =
  \mathrm{diag}(1/r) W` (unit rows) and :math:`R = \|V\|_F = \sqrt{\mathrm{rows}}`
  (counting rows that are not zero), so the fused weight is the initial one (``gains="col"``
  mirrors this with column norms; ``"row"`` freezes :math:`c = 1`; ``"none"`` keeps
  :math:`r = c = 1`, :math:`V = W`: the base rule on the sphere of the initial norm, without
  magnitudes). The gains take Adam steps (``b1``, ``b2``, ``eps``) at ``gain_learning_rate``
  on the gains themselves. These are our choices: the paper's exact magnitude update, gain
  initialisation and sphere radius were not available to us (only its abstract and summary),
  so this implements its stated idea. The update is taken from ``params`` to the new fused
  weight, so applying it lands on :math:`\mathrm{diag}(r')V'\mathrm{diag}(c')` exactly (bf16
  rounding does not accumulate); the state is the source of truth, so nothing else may write
  these weights (a write is overwritten at the next step). A row (column) that is zero at
  init stays zero: neither its gain nor its direction receives a gradient.

  Symmetry: with ``gains="row_col"``, permutations on both sides ("perm"; the gains are
  per-row and per-column); ``"row"``: row permutations x right orthogonal maps (LPRO) if
  ``tx`` respects them; ``"col"``: its mirror; ``"none"``: ``tx``'s own group (the sphere's
  Frobenius norm is bi-orthogonally invariant). At extreme gradient scales the gains move by
  at most ~``gain_learning_rate`` per step (Adam is scale-free while the gradient is far
  above ``eps``) and the direction stays on its sphere whatever ``tx`` does.

  Args:
    tx: the direction's rule (any ``optax.GradientTransformation``, learning rate included).
    gain_learning_rate: float or optax schedule: the gains' Adam rate.
    gains: ``"row_col"`` (default, the paper's best), ``"row"``, ``"col"`` or ``"none"``.
    b1, b2, eps: the gains' Adam coefficients.
    axes: which axes form rows and cols.
    [[shardings]]

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (extra arguments go to ``tx``). ``init``
    derives :math:`r, c, V` from the parameters' values (``jax.eval_shape`` gives the
    state's shapes).

  References:
    Hägele, Hernández-Cano, Kosson, Jaggi, "Improving Neural Network Training by Decoupling
    the Magnitude and Direction of Weight Vectors", arXiv:2606.25971, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, optax, symoptax
    >>> from symoptax.variants.sphere import md_decoupled
    >>> params = {"w": jax.random.normal(jax.random.key(0), (8, 16))}
    >>> opt = md_decoupled(symoptax.muon(0.05, method="svd"), gain_learning_rate=0.01)
    >>> state = opt.init(params)
    >>> grads = {"w": jax.random.normal(jax.random.key(1), (8, 16))}
    >>> u, state = opt.update(grads, state, params)
    >>> params = optax.apply_updates(params, u)
    >>> fused = state.row_gain["w"][:, None] * state.direction["w"] * state.col_gain["w"]
    >>> bool(np.allclose(fused, params["w"], atol=1e-5))  # the model sees diag(r) V diag(c)
    True
  """
  if gains not in MD_GAINS:
    raise ValueError(f"md_decoupled: gains must be one of {', '.join(map(repr, MD_GAINS))}, "
                     f"got {gains!r}.")
  if not isinstance(tx, optax.GradientTransformation):
    raise ValueError(f"md_decoupled: tx must be an optax.GradientTransformation, got {tx!r}.")
  inner = optax.with_extra_args_support(tx)
  gain_tx = optax.chain(optax.scale_by_adam(b1, b2, eps),
                        optax.scale_by_learning_rate(gain_learning_rate))
  learn_rows, learn_cols = gains in ("row_col", "row"), gains in ("row_col", "col")

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    v_out, r_out, c_out, rad_out = [], [], [], []
    for p, lay in zip(leaves, lays):
      if lay is None:
        v_out.append(None), r_out.append(None), c_out.append(None), rad_out.append(None)
        continue
      x = to_batched(jnp.asarray(p), lay).astype(jnp.promote_types(p.dtype, _F32))
      ones_r = jnp.ones(x.shape[:2], _F32)
      ones_c = jnp.ones(x.shape[:1] + x.shape[2:], _F32)
      r, c = ones_r, ones_c
      if gains in ("row_col", "row"):
        r = safe_norm(x, -1, LOCAL)[..., 0].astype(_F32)
      elif gains == "col":
        c = safe_norm(x, -2, LOCAL)[:, 0, :].astype(_F32)
      safe = lambda a: jnp.where(a > 0, a, 1.0)
      v = x / safe(r)[:, :, None] / safe(c)[:, None, :]
      v_out.append(from_batched(v, lay).astype(p.dtype))
      r_out.append(r.reshape(sharding_lib.stat_shape(lay, "rows")))
      c_out.append(c.reshape(sharding_lib.stat_shape(lay, "cols")))
      rad_out.append(safe_norm(v, (-2, -1), LOCAL).astype(_F32).reshape(
          sharding_lib.stat_shape(lay, "matrix")))
    place = lambda t, kind: sharding_lib.shard_stats(treedef.unflatten(t), params, axes_tree,
                                                     shardings, mesh, kind)
    v_tree = treedef.unflatten(v_out)
    r_tree, c_tree, rad_tree = place(r_out, "rows"), place(c_out, "cols"), place(rad_out,
                                                                                 "matrix")
    inner_params = jax.tree.map(lambda v, p: p if v is None else v, v_tree, params,
                                is_leaf=lambda x: x is None)
    return MDDecoupledState(
        count=jnp.zeros([], jnp.int32), direction=v_tree, row_gain=r_tree, col_gain=c_tree,
        radius=rad_tree, gain_state=gain_tx.init({"row": r_tree, "col": c_tree}),
        inner_state=inner.init(inner_params))

  def grads_fn(g, extras, stats, shards):
    (v,) = extras
    r, c = stats
    rb, cb = r[:, :, None], c[:, None, :]
    gv = g * v
    gr = shards.sum(gv * cb, -1)[:, :, 0] if learn_rows else jnp.zeros_like(r)
    gc = shards.sum(rb * gv, -2)[:, 0, :] if learn_cols else jnp.zeros_like(c)
    return rb * g * cb, [gr, gc]

  def retract_fn(dv, extras, stats, shards):
    (v,) = extras
    (rad,) = stats
    return _on_sphere(v + dv, rad[:, None, None], shards, fallback=v), [rad]

  def fuse_fn(v_new, extras, stats, shards):
    del shards
    v_old, w = extras
    r_new, c_new, r, c = stats
    fused = r_new[:, :, None] * v_new * c_new[:, None, :]
    if w is None:
      w = r[:, :, None] * v_old * c[:, None, :]
    return fused - w, [r_new, c_new, r, c]

  def update_fn(updates, state, params=None, **extra):
    tree = params if params is not None else updates
    axes_tree = resolve_axes(axes, tree)
    run = lambda fn, u, extras, stats, kinds: map_with_stats(
        fn, u, tree, axes_tree, shardings, mesh, extras=extras, stats=stats,
        stat_kinds=kinds)
    is_none = lambda x: x is None
    # 1. dL/dV (vectors: their gradient), dL/dr, dL/dc.
    dv, (gr, gc) = run(grads_fn, updates, [state.direction],
                       [state.row_gain, state.col_gain], ["rows", "cols"])
    # 2. The gains' Adam step.
    gain_params = {"row": state.row_gain, "col": state.col_gain}
    steps, gain_state = gain_tx.update({"row": gr, "col": gc}, state.gain_state, gain_params)
    new = optax.apply_updates(gain_params, steps)
    # 3. The base rule on the direction (vectors: on themselves), then the retraction.
    inner_params = None if params is None else jax.tree.map(
        lambda v, p: p if v is None else v, state.direction, params, is_leaf=is_none)
    proposed, inner_state = inner.update(dv, state.inner_state, inner_params, **extra)
    moved, _ = run(retract_fn, proposed, [state.direction], [state.radius], ["matrix"])
    direction = jax.tree.map(lambda v, m: None if v is None else m.astype(v.dtype),
                             state.direction, moved, is_leaf=is_none)
    # 4. From the weights (params, or the fused weight of the state) to the new fused weight;
    # vectors: the base rule's update.
    out, _ = run(fuse_fn, moved, [state.direction, params],
                 [new["row"], new["col"], state.row_gain, state.col_gain],
                 ["rows", "cols", "rows", "cols"])
    return out, MDDecoupledState(
        count=optax.safe_increment(state.count), direction=direction, row_gain=new["row"],
        col_gain=new["col"], radius=state.radius, gain_state=gain_state,
        inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
