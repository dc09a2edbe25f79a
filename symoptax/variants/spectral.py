"""Spectral-control members of the Muon family: Muon++ (muP's spectral conditions on the update
and the weight) and AuON / Hybrid-AuON (a linear-time, cosh-braked unit-norm update instead of
the polar factor).

Primitives: :func:`auon_normalize` and :func:`scale_by_auon` (AuON's map, optionally after
Newton-Schulz steps) and :func:`clip_weight_spectral_norm` (keeps every weight matrix inside a
spectral-norm ball of muP's size by correcting the update). Named optimizers: :func:`muon_pp`,
:func:`auon`, :func:`hybrid_auon`, built like the other variants (:mod:`symoptax.variants.
aliases`) and sharded the same way.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax.aliases import ScalarOrSchedule, chain, keeps_shardings, muon_like, shard_kwargs
from symoptax.axes import AxesLike, flatten_with_layouts, resolve_axes
from symoptax.docstrings import shared_args
from symoptax.shards import LOCAL, MatrixShards
from symoptax.transforms import (checked_init, map_with_stats, matrix_transform, safe_scale,
                                 scale_by_spectral_norm, shape_factor, spectral_norm)


def _check_number(name: str, arg: str, value: Any, ok, valid: str) -> None:
  """A ``ValueError`` naming the function, the argument, the value and the valid range, for
  Python numbers (traced hyperparameters under ``inject_hyperparams`` are not checked)."""
  if isinstance(value, (int, float)) and not ok(value):
    raise ValueError(f"{name}: {arg} must be {valid}, got {value!r}.")


def auon_normalize(x: jax.Array, gamma: ArrayLike = 1.5,
                   shards: MatrixShards = LOCAL) -> jax.Array:
  r"""AuON's map of each matrix of ``x`` (``[..., m, n]``): unit Frobenius norm, then the
  hyperbolic-cosine RMS "brake".

  .. math::
    G = \frac{X}{\|X\|_F},\qquad r = \sqrt{\tfrac{1}{mn} \textstyle\sum_{ij}
    \cosh^2(\gamma G_{ij})},\qquad \mathrm{auon}(X) = \frac{G}{r}

  ``r >= 1``, so :math:`\|\mathrm{auon}(X)\|_2 \le \|\mathrm{auon}(X)\|_F = 1/r \le 1`: the
  update lies in the unit spectral-norm ball (AuON's trust region) without any matrix
  product. Since :math:`\sum G_{ij}^2 = 1` and :math:`\sinh^2(\gamma\sqrt{s})` is convex in
  :math:`s`, :math:`r^2 \in [1 + \sinh^2(\gamma/\sqrt{mn}),\; 1 + \sinh^2(\gamma)/(mn)]`:
  the brake is strongest for a single spike and fades as ``1 + O(gamma^2 / mn)`` for dense
  matrices. ``r`` is evaluated as :math:`\tfrac{e^{a}}{2}\sqrt{\mathrm{mean}\,
  e^{2(z-a)} + 2e^{-2a} + \mathrm{mean}\, e^{-2(z+a)}}` with :math:`z = \gamma|G|`,
  :math:`a = \max z`, which cannot overflow at any ``gamma``; ``X`` is divided by its largest
  entry first, so the map is exactly scale-invariant for inputs from ~1e-30 to ~1e30 (no
  absolute epsilon; a zero matrix stays zero). ``shards`` adds the ``psum``/``pmax`` over
  split axes (the map needs only reductions).
  """
  dtype = x.dtype
  y, _ = safe_scale(x, shards)
  fro = jnp.sqrt(shards.sum(y * y, (-2, -1)))
  g = y / jnp.where(fro > 0, fro, 1.0)
  m, n = shards.matrix_shape(x)
  count = max(m * n, 1)
  z = gamma * jnp.abs(g)
  a = shards.max(z, (-2, -1))
  a = jnp.where(jnp.isfinite(a), a, 0.0)  # -inf over an empty matrix
  s = ((shards.sum(jnp.exp(2.0 * (z - a)), (-2, -1))
        + shards.sum(jnp.exp(-2.0 * (z + a)), (-2, -1))) / count + 2.0 * jnp.exp(-2.0 * a))
  return (g * (2.0 * jnp.exp(-a) / jnp.sqrt(s))).astype(dtype)


def _newton_schulz_then_auon(x, gamma, ns_steps, compute_dtype):
  q = polar_lib.polar(x, method="muon_ns", steps=ns_steps, side="full",
                      compute_dtype=compute_dtype)
  return auon_normalize(q, gamma)


@shared_args
def scale_by_auon(gamma: ArrayLike = 1.5, *, ns_steps: int | None = None, axes: AxesLike = None,
                  compute_dtype: Any = "auto", shardings: Any = None,
                  mesh: Any = None) -> optax.GradientTransformation:
  r"""Replaces every matrix update by AuON's unit-norm, cosh-braked map (:func:`auon_normalize`),
  after ``ns_steps`` Newton-Schulz steps (Hybrid-AuON) when ``ns_steps > 0``.

  .. math::
    X \mapsto \mathrm{auon}(X) = \frac{X / \|X\|_F}{r},\quad
    r = \sqrt{\mathrm{mean}_{ij} \cosh^2(\gamma X_{ij} / \|X\|_F)}
    \qquad (\text{hybrid: } X \mapsto \mathrm{auon}(\mathrm{NS}^{k}(X)))

  with :math:`\mathrm{NS}^{k}` Jordan's quintic Newton-Schulz step (coefficients (3.4445,
  -4.7750, 2.0315)) applied ``k`` times to :math:`X / \|X\|_F`
  (``symoptax.polar.polar(x, method="muon_ns", steps=k)``). ``ns_steps=0`` is linear-time:
  elementwise operations and three reductions per matrix, no matrix product (sharded, one
  ``psum``/``pmax`` each, blocks stay where they are); each Newton-Schulz step costs three
  matrix products and runs on whole matrices (``all_to_all`` when sharded). Symmetry: the
  brake is a sum of an even function of the entries, so the map is equivariant under
  permutations and sign flips of rows and columns, not under rotations (the Newton-Schulz
  step is bi-orthogonal, the brake is not). Scale-invariant at any gradient scale (1e-30 ..
  1e30).

  Args:
    gamma: the brake's sharpness :math:`\gamma` (>= 0; 0 gives plain Frobenius normalisation).
    ns_steps: Newton-Schulz steps before the map (None or 0: AuON; 1: Hybrid-AuON). A
      static int: under ``optax.inject_hyperparams`` pass ``static_args=("ns_steps",)``.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates",
    arXiv:2509.24320, 2025; https://github.com/ryyzn9/AuON.

  Examples:
    >>> import jax.numpy as jnp, numpy as np
    >>> from symoptax.variants.spectral import scale_by_auon
    >>> tx = scale_by_auon()
    >>> u, _ = tx.update({"w": jnp.array([[3.0, 0.0], [0.0, 4.0]])}, tx.init(None))
    >>> np.round(np.asarray(u["w"]), 4)  # G = X / ||X||_F, then G / r: r = 1.354
    array([[0.4432, 0.    ],
           [0.    , 0.5909]], dtype=float32)
  """
  _check_number("scale_by_auon", "gamma", gamma, lambda v: v >= 0, ">= 0")
  ns_steps = 0 if ns_steps is None else polar_lib.static_steps(ns_steps)
  if ns_steps < 0:
    raise ValueError(f"scale_by_auon: ns_steps must be >= 0, got {ns_steps}.")
  if ns_steps == 0:
    return matrix_transform(lambda x, sh: auon_normalize(x, gamma, sh), axes,
                            shardings=shardings, mesh=mesh, reductions_only=True)
  return matrix_transform(lambda x, sh: sh.whole(lambda w: _newton_schulz_then_auon(
      w, gamma, ns_steps, compute_dtype), x), axes, shardings=shardings, mesh=mesh)


@shared_args
def clip_weight_spectral_norm(radius: ArrayLike = 2.0, *, squarings: int | None = None,
                              axes: AxesLike = None, shardings: Any = None,
                              mesh: Any = None) -> optax.GradientTransformation:
  r"""Corrects every matrix update so that the updated weight's spectral norm stays within
  ``radius`` times muP's :math:`\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}`.

  .. math::
    W' = W + U,\qquad R = \rho \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}},\qquad
    U \mapsto \min\!\left(1, \frac{R}{\|W'\|_2}\right) W' - W

  so that :math:`W_{t+1} = W'` while :math:`\|W'\|_2 \le R` (the update is left alone) and
  :math:`W_{t+1} = R\, W' / \|W'\|_2` otherwise. Goes last in a chain (after the learning
  rate): ``U`` is the step that ``optax.apply_updates`` adds, and the transform needs
  ``params``. :math:`\|W'\|_2` is :func:`symoptax.transforms.spectral_norm`'s estimate (a
  Gram and ``squarings`` squarings of the smaller side; a lower bound within ~5e-4 of the
  norm), on whole matrices when sharded. Bi-orthogonally equivariant (``W, U -> A W B^T,
  A U B^T`` for orthogonal ``A``, ``B``); not scale-invariant in ``W`` (``R`` is absolute);
  finite for weights and updates from ~1e-30 to ~1e30 (the norm is taken in units of the
  largest entry). The fan ratio is that of each matrix in its leaf's view
  (:attr:`symoptax.MatrixAxes.fan_out`).

  Args:
    radius: :math:`\rho`, the bound in units of :math:`\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}`
      (> 0).
    squarings: see :func:`symoptax.transforms.spectral_norm` (None: 10; a static int).
    axes: which axes form rows and cols, and the output side.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  Examples:
    >>> import jax.numpy as jnp, numpy as np, optax
    >>> from symoptax.variants.spectral import clip_weight_spectral_norm
    >>> tx = clip_weight_spectral_norm(1.0)
    >>> w = {"w": 3.0 * jnp.eye(4)}  # square: the bound is 1
    >>> u, _ = tx.update({"w": jnp.zeros((4, 4))}, tx.init(w), w)
    >>> round(float(np.linalg.norm(optax.apply_updates(w, u)["w"], 2)), 4)
    1.0
  """
  _check_number("clip_weight_spectral_norm", "radius", radius, lambda v: v > 0, "> 0")
  squarings = 10 if squarings is None else polar_lib.static_steps(squarings)

  def corrected(x, w):  # whole matrices, in units of each leaf's bound R
    new = w + x
    s = spectral_norm(new, squarings)[..., None, None]
    c = jnp.minimum(1.0, 1.0 / jnp.maximum(s, jnp.finfo(s.dtype).tiny))
    return x + (c - 1.0) * new

  def fn(x, extras, stats, shards):
    del stats
    return shards.whole(corrected, x, extras[0]), []

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("clip_weight_spectral_norm: update() needs params (the weights whose "
                       "spectral norm it bounds).")
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(updates, axes_tree)
    bounds = [None if lay is None else radius * shape_factor(lay, "spectral") for lay in lays]
    f32 = lambda x: x.astype(jnp.promote_types(x.dtype, jnp.float32))
    unit = lambda trees: [x if b is None else f32(x) / b for x, b in zip(trees, bounds)]
    u_unit = treedef.unflatten(unit(leaves))
    p_unit = treedef.unflatten(unit(treedef.flatten_up_to(params)))
    out, _ = map_with_stats(fn, u_unit, params, axes_tree, shardings, mesh, extras=[p_unit])
    out = [u if b is None else (o * b).astype(u.dtype)
           for u, o, b in zip(leaves, treedef.flatten_up_to(out), bounds)]
    return treedef.unflatten(out), state

  return optax.GradientTransformation(checked_init(axes, shardings, mesh), update_fn)


@keeps_shardings
def muon_pp(
    learning_rate: ScalarOrSchedule,
    *,
    radius: ArrayLike | None = 2.0,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    squarings: int | None = None,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Muon++: Muon whose update and weight both meet muP's spectral conditions all through
  training.

  .. math::
    B_t = \beta B_{t-1} + G_t,\quad M_t = G_t + \beta B_t,\quad
    O_t = \frac{\mathrm{polar}(M_t)}{\|\mathrm{polar}(M_t)\|_2},\quad
    s = \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}},\\
    W' = W_t (1 - \eta\lambda) - \eta\, s\, O_t,\qquad
    W_{t+1} = \min\!\left(1, \frac{\rho s}{\|W'\|_2}\right) W'

  The update has spectral norm exactly :math:`\eta s` (muP's
  :math:`\|\Delta W\|_2 = \Theta(\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}})`; dividing by the
  estimated :math:`\|\mathrm{polar}(M_t)\|_2` removes the polar oracle's spread, so this holds
  for every ``method``), and the weight never leaves the ball
  :math:`\|W\|_2 \le \rho s` (:math:`\|W\|_2 = O(\sqrt{\mathrm{fan\_out}/
  \mathrm{fan\_in}})`). The ball is kept by the update alone: by the triangle inequality
  :math:`\|W'\|_2 \le (1-\eta\lambda)\|W_t\|_2 + \eta s`, so with decoupled weight decay
  :math:`\lambda \ge 1/\rho` a weight that starts inside never reaches the boundary and the
  correction (:func:`clip_weight_spectral_norm`, one spectral-norm estimate per matrix, no
  weight normalisation step) never fires; it acts only when the weight decay is weaker, the
  initialisation larger, or the learning rate schedule and weight decay let the weight drift.
  Leaves without axes get the plain momentum. Symmetry: bi-orthogonal (polar factor,
  spectral norms and shape constants only). Scale-invariant in the gradient at any scale
  (1e-30 .. 1e30); the weight bound is absolute.

  This is symoptax's construction of the paper's stated idea (spectral control at the level
  of the update, no explicit spectral normalisation of the weights); the paper's exact
  update (and its data-dependent "adaptive" spectral condition) could not be checked here.

  Args:
    learning_rate: float or optax schedule.
    radius: :math:`\rho`, the weight bound in units of
      :math:`\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}` (> 0), or ``None`` for no weight
      correction. The default 2 admits a Gaussian :math:`N(0, 1/\mathrm{fan\_in})`
      initialisation of a matrix with ``fan_out >= fan_in``
      (:math:`\|W\|_2 \approx \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}} + 1`).
    beta, nesterov, weight_decay, method, axes, compute_dtype, mu_dtype, shardings, mesh:
      as :func:`symoptax.muon`.
    squarings: of the spectral-norm estimates (:func:`symoptax.transforms.spectral_norm`;
      None: 10; a static int: under ``optax.inject_hyperparams`` pass
      ``static_args=("squarings",)``).

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Zhao, "Towards a Principled Muon under muP: Ensuring Spectral Conditions throughout
    Training", arXiv:2601.01306, 2026; Yang, Simon, Bernstein, "A Spectral Condition for
    Feature Learning", arXiv:2310.17813, 2023.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from symoptax.variants.spectral import muon_pp
    >>> params = {"w": jnp.zeros((16, 4))}  # fan_out / fan_in = 4: s = 2
    >>> opt = muon_pp(0.1)
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (16, 4))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> round(float(np.linalg.norm(u["w"], 2)), 3)  # eta * s, whatever the polar oracle
    0.2
  """
  sh = shard_kwargs(shardings, mesh)
  squarings = 10 if squarings is None else polar_lib.static_steps(squarings)
  if radius is not None:
    _check_number("muon_pp", "radius", radius, lambda v: v > 0, "> 0 or None")
  tx = muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method=method, shape_rule="spectral", rms=0.2, axes=axes, compute_dtype=compute_dtype,
      mu_dtype=mu_dtype, sh=sh,
      post=(scale_by_spectral_norm(squarings=squarings, axes=axes, **sh),))
  if radius is None:
    return tx
  return chain(tx, clip_weight_spectral_norm(radius, squarings=squarings, axes=axes, **sh))


@keeps_shardings
def auon(
    learning_rate: ScalarOrSchedule,
    *,
    gamma: ArrayLike = 1.5,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    weight_decay: ArrayLike = 0.0,
    shape_rule: str = "muon",
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""AuON: a linear-time, unit-norm alternative to Muon's polar step.

  .. math::
    B_t = \beta B_{t-1} + G_t,\quad M_t = G_t + \beta B_t,\quad
    G = \frac{M_t}{\|M_t\|_F},\quad r = \sqrt{\mathrm{mean}_{ij} \cosh^2(\gamma G_{ij})},\\
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, s\, G / r

  (:func:`scale_by_auon`) with Muon's shape factor :math:`s` (``shape_rule``, default
  :math:`\sqrt{\max(1, \mathrm{fan\_out}/\mathrm{fan\_in})}`). ``O(mn)`` per matrix: no
  Newton-Schulz, no matrix product. The update's spectral norm is at most its Frobenius
  norm :math:`s/r \le s` (AuON's spectral-norm trust region); it is about
  :math:`\sqrt{\min(m, n)}` times smaller in Frobenius norm than Muon's, so its learning
  rates are larger. Symmetry: permutations and sign flips of rows and columns (the brake
  sums an even function of the entries; Frobenius normalisation alone would be
  bi-orthogonal). For dense momenta the brake is :math:`1 + O(\gamma^2/mn)`, so rotations
  change the update only at order :math:`\gamma^4/(mn)^2`; it matters for spiky momenta
  (one dominant entry: up to :math:`r^2 = 1 + \sinh^2(\gamma)/mn`). Scale-invariant at any
  gradient scale (1e-30 .. 1e30; no absolute epsilon).

  The paper's normalised form: the reference repository's ``AuON`` divides the
  *unnormalised* momentum by ``r`` (an update proportional to the momentum's size, with
  ``gamma = 1.5``) and applies no shape factor; symoptax follows the paper's unit-norm
  update and keeps the repository's ``gamma`` and Nesterov momentum (whose EMA form differs
  from this trace by a constant factor, which the normalisation removes).

  Args:
    learning_rate: float or optax schedule.
    gamma: the brake's sharpness (>= 0).
    beta, nesterov, weight_decay, shape_rule, rms, axes, mu_dtype, shardings, mesh: as
      :func:`symoptax.muon`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates",
    arXiv:2509.24320, 2025; https://github.com/ryyzn9/AuON.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from symoptax.variants.spectral import auon
    >>> params = {"w": jnp.zeros((8, 16))}
    >>> opt = auon(1.0)
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 16))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> n = np.linalg.norm(u["w"])  # unit Frobenius norm over the brake r, r slightly > 1
    >>> bool(0.99 < n < 1.0), bool(np.linalg.norm(u["w"], 2) < 1.0)
    (True, True)
  """
  sh = shard_kwargs(shardings, mesh)
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method="polar_express", shape_rule=shape_rule, rms=rms, axes=axes,
      compute_dtype=None, mu_dtype=mu_dtype, sh=sh,
      orthogonalise=scale_by_auon(gamma, axes=axes, **sh))


@keeps_shardings
def hybrid_auon(
    learning_rate: ScalarOrSchedule,
    *,
    gamma: ArrayLike = 1.5,
    ns_steps: int | None = None,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    weight_decay: ArrayLike = 0.0,
    shape_rule: str = "muon",
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Hybrid-AuON: one Newton-Schulz step, then AuON's unit-norm cosh brake.

  .. math::
    X = \frac{M_t}{\|M_t\|_F},\quad Y = aX + b\,(XX^\top)X + c\,(XX^\top)^2 X,\quad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, s\, \mathrm{auon}(Y)

  with Jordan's quintic :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`, ``ns_steps`` times
  (default one, as the paper; the reference repository's trainer uses 5), and
  :math:`\mathrm{auon}(Y) = (Y/\|Y\|_F)/\sqrt{\mathrm{mean}\cosh^2(\gamma Y/\|Y\|_F)}`
  (:func:`scale_by_auon`), then Muon's shape factor. The step moves the singular values
  part of the way to 1 (three matrix products per step, on whole matrices), the brake
  bounds the result in the unit spectral-norm ball. Symmetry: permutations and sign flips
  of rows and columns (the Newton-Schulz step is bi-orthogonal, the brake is not).
  Scale-invariant at any gradient scale.

  Args:
    learning_rate: float or optax schedule.
    gamma: the brake's sharpness (>= 0).
    ns_steps: Newton-Schulz steps (None: 1; a static int >= 1: under
      ``optax.inject_hyperparams`` pass ``static_args=("ns_steps",)``).
    beta, nesterov, weight_decay, shape_rule, rms, axes, compute_dtype, mu_dtype,
      shardings, mesh: as :func:`symoptax.muon`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Maity, "AuON: A Linear-time Alternative to Semi-Orthogonal Momentum Updates",
    arXiv:2509.24320, 2025 (Hybrid-AuON); https://github.com/ryyzn9/AuON (``HybridAuON``:
    Newton-Schulz first, then the brake).

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from symoptax.variants.spectral import auon, hybrid_auon
    >>> params = {"w": jnp.zeros((8, 16))}
    >>> rows = jnp.arange(1.0, 9.0)[:, None]
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 16)) * rows}
    >>> s = lambda u: np.linalg.svd(u["w"], compute_uv=False)
    >>> u0, _ = auon(1.0).update(grads, auon(1.0).init(params), params)
    >>> opt = hybrid_auon(1.0)
    >>> u1, _ = opt.update(grads, opt.init(params), params)
    >>> bool(s(u1).max() / s(u1).min() < s(u0).max() / s(u0).min())  # better conditioned
    True
  """
  sh = shard_kwargs(shardings, mesh)
  ns_steps = 1 if ns_steps is None else polar_lib.static_steps(ns_steps)
  if ns_steps < 1:
    raise ValueError(f"hybrid_auon: ns_steps must be >= 1, got {ns_steps}.")
  orth = scale_by_auon(gamma, ns_steps=ns_steps, axes=axes, compute_dtype=compute_dtype, **sh)
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method="muon_ns", shape_rule=shape_rule, rms=rms, axes=axes,
      compute_dtype=compute_dtype, mu_dtype=mu_dtype, sh=sh, orthogonalise=orth)
