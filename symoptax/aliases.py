"""Named optimizers: short chains of symoptax primitives and optax's own transforms.

Every alias follows the reference recipe of arXiv:2605.18106: EMA momentum
``M <- beta M + (1 - beta) G`` (no bias correction), a symmetry-compatible map of ``M``,
decoupled weight decay and the learning rate. Weight decay is added after the map, so the
step is ``W <- W (1 - lr wd) - lr f(M)``. Centring (``center=True``, or a mask of leaves) is
for softmax-facing matrices (LM heads, routers): it removes the mean row before the nonlinear
map and from the final update; momentum, weights and weight decay stay uncentred.
"""

from __future__ import annotations

import functools
from typing import Any

import optax
from jax.typing import ArrayLike

from symoptax.axes import AxesLike, matrix_mask
from symoptax.docstrings import shared_args
from symoptax.sharding import keep_shardings
from symoptax.transforms import (SCALES, center_rows, scale_by_debiased_momentum, scale_by_polar,
                                 scale_by_rms, scale_by_row_norm, scale_by_shape,
                                 scale_by_spectral_norm)

HYBRID_ORDERS = ("row_then_polar", "polar_then_row")
ScalarOrSchedule = optax.ScalarOrSchedule


def chain(*txs: optax.GradientTransformation | None) -> optax.GradientTransformation:
  return optax.chain(*(t for t in txs if t is not None))


def shard_kwargs(shardings, mesh) -> dict[str, Any]:
  """The shardings keywords passed on to each primitive (none when not sharded)."""
  return {} if shardings is None and mesh is None else dict(shardings=shardings, mesh=mesh)


def keeps_shardings(alias):
  """With ``shardings=``, an alias's state and updates stay in the parameters' shardings."""

  @functools.wraps(alias)
  def wrapped(*args, **kwargs):
    tx = alias(*args, **kwargs)
    if kwargs.get("shardings") is None:
      return tx
    return keep_shardings(tx, kwargs["shardings"], mesh=kwargs.get("mesh"))
  # The optimizer without the pinning, for callers that pin a whole stack once.
  wrapped.unpinned = alias
  return wrapped


def _centring(center, axes, sh) -> optax.GradientTransformation | None:
  """Row centring for ``center``: ``True`` (every matrix leaf), ``False`` (none), or an optax
  mask (a pytree, or a callable ``params -> pytree``, of bools) choosing the leaves."""
  if isinstance(center, bool) or center is None:
    return center_rows(axes=axes, **sh) if center else None
  return optax.masked(center_rows(axes=axes, **sh), center)


def decay_and_rate(learning_rate, weight_decay, axes):
  # Weight decay only touches matrix leaves; 0/1-D leaves are left to a stack's vector rule.
  wd = None
  if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
    wd = optax.add_decayed_weights(weight_decay, mask=matrix_mask(axes))
  return wd, optax.scale_by_learning_rate(learning_rate)


def _check_scale(scale, allowed, name):
  if scale not in allowed:
    raise ValueError(f"{name}: unknown scale {scale!r}; valid choices are "
                     f"{', '.join(map(repr, allowed))} (see README 'Update scales').")


def _nu_args(scale, nuclear_power):
  """``(nuclear_power, relative)`` of the polar step of a nu-scaled rule under ``scale``."""
  if scale in ("rms", "spectral"):  # the rescaling replaces nu
    return 0.0, False
  return nuclear_power, scale == "nuclear_rel"


def _rescale(scale, rms, axes, sh, orthogonal: bool):
  r"""The transforms that give an update the size ``scale`` names: ``"rms"`` exact per-entry
  RMS; ``"spectral"`` muP's :math:`\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}` spectral norm
  (estimated and divided out first unless the update is ``orthogonal``); else nothing."""
  if scale == "rms":
    return (scale_by_rms(rms, axes=axes, **sh),)
  if scale == "spectral":
    unit = () if orthogonal else (scale_by_spectral_norm(axes=axes, **sh),)
    return unit + (scale_by_shape("spectral", axes=axes, **sh),)
  return ()


@keeps_shardings
@shared_args
def rownorm_m(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    center: Any = False,
    scale: str | None = None,
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Row-normalised momentum.

  .. math::
    M_t = \beta M_{t-1} + (1-\beta) G_t, \qquad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, C\!\left(R(C(M_t))\right)

  with :math:`R` row normalisation and :math:`C` row centring (identity unless ``center``).
  Symmetry group: left-permutation / right-orthogonal (``W -> P W Q``). Scale-invariant for
  momentum rows of norm far above :math:`R`'s absolute ``eps`` = 1e-8 (smaller rows are
  shrunk, not normalised; :func:`symoptax.scale_by_row_norm`), up to ~1e30.

  Args:
    learning_rate: float or optax schedule.
    beta: EMA coefficient of the momentum.
    weight_decay: decoupled weight decay (matrix leaves only).
    center: remove the mean row (softmax shift invariance: LM heads, routers); ``True``,
      ``False`` or an optax mask (pytree or callable ``params -> pytree`` of bools) of the
      leaves to centre.
    scale: ``None`` (default: unit rows, per-entry RMS :math:`1/\sqrt{\mathrm{cols}}`),
      ``"rms"`` (per-entry RMS ``rms``) or ``"spectral"`` (the update divided by its
      estimated spectral norm, times :math:`\sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}`:
      muP); see README "Update scales".
    rms: the target RMS of ``scale="rms"``.
    axes: which axes form rows and cols (see :func:`symoptax.axes.resolve_axes`).
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    arXiv:2605.18106 (symmetry-compatible optimizers for LLM pretraining), 2026.

  Examples:
    >>> import jax.numpy as jnp, optax, symoptax
    >>> params = {"embed": jnp.ones((16, 4))}
    >>> opt = symoptax.rownorm_m(1e-2)
    >>> state = opt.init(params)
    >>> u, state = opt.update({"embed": jnp.ones((16, 4))}, state, params)
    >>> params = optax.apply_updates(params, u)
  """
  _check_scale(scale, (None, "rms", "spectral"), "rownorm_m")
  sh = shard_kwargs(shardings, mesh)
  c = _centring(center, axes, sh)
  return chain(optax.ema(beta, debias=False, accumulator_dtype=mu_dtype), c,
                scale_by_row_norm(axes=axes, **sh), c,
                *_rescale(scale, rms, axes, sh, orthogonal=False),
                *decay_and_rate(learning_rate, weight_decay, axes))


def _one_sided(side: str, *, name: str, learning_rate, beta, weight_decay, nuclear_power,
               center, method, axes, compute_dtype, nu_scope, scale, rms, mu_dtype,
               shardings, mesh):
  """ema -> centre -> nu-scaled polar (``side``) -> centre -> rescale -> weight decay -> lr."""
  _check_scale(scale, SCALES, name)
  sh = shard_kwargs(shardings, mesh)
  power, relative = _nu_args(scale, nuclear_power)
  c = _centring(center, axes, sh)
  return chain(
      optax.ema(beta, debias=False, accumulator_dtype=mu_dtype), c,
      scale_by_polar(method, side=side, nuclear_power=power, axes=axes, **sh,
                     compute_dtype=compute_dtype, nu_scope=nu_scope, relative=relative),
      c, *_rescale(scale, rms, axes, sh, orthogonal=True),
      *decay_and_rate(learning_rate, weight_decay, axes))


@keeps_shardings
@shared_args
def right_polargrad_m(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    nuclear_power: ArrayLike = 1.0,
    center: Any = False,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    nu_scope: str = "matrix",
    scale: str = "nuclear",
    rms: ArrayLike = 0.2,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Right polar momentum: polar factor through the cols x cols Gram, nu-scaled.

  .. math::
    M_t = \beta M_{t-1} + (1-\beta) G_t,\quad X = C(M_t),\quad
    U = X (X^\top X)^{-1/2},\quad \nu = \langle X, U\rangle = \|X\|_*,\\
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, C(\nu^{\alpha} U)

  Cheap for tall matrices (``rows >> cols``: a vocab x d embedding): one small Gram.
  Symmetry group: left-permutation / right-orthogonal (and bi-orthogonal for full-rank X).

  Args:
    learning_rate: float or optax schedule.
    beta: EMA coefficient of the momentum.
    weight_decay: decoupled weight decay (matrix leaves only).
    nuclear_power: :math:`\alpha` (1 as in PolarGrad, 0 disables the nu scaling).
    center: remove the mean row before the polar step and from the update (``True``,
      ``False`` or an optax mask of the leaves to centre).
    method: Gram-side oracle: "polar_express", "newton_schulz" or "eigh".
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[nu_scope]]
    [[nu_scale]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    arXiv:2605.18106, 2026; Lau et al., "PolarGrad", arXiv:2505.21799, 2025;
    Amsel et al., "The Polar Express", arXiv:2505.16932, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"embed": jnp.zeros((64, 8))}  # a tall vocabulary matrix [V, d]
    >>> opt = symoptax.right_polargrad_m(1.0, nuclear_power=0.0, method="eigh")
    >>> grads = {"embed": jax.random.normal(jax.random.key(0), (64, 8))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> np.round(np.linalg.svd(u["embed"], compute_uv=False), 3)  # one 8 x 8 Gram: U
    array([1., 1., 1., 1., 1., 1., 1., 1.], dtype=float32)
  """
  return _one_sided(
      "right", name="right_polargrad_m", learning_rate=learning_rate, beta=beta,
      weight_decay=weight_decay, nuclear_power=nuclear_power, center=center, method=method,
      axes=axes, compute_dtype=compute_dtype, nu_scope=nu_scope, scale=scale, rms=rms,
      mu_dtype=mu_dtype, shardings=shardings, mesh=mesh)


@keeps_shardings
@shared_args
def left_polargrad_m(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    nuclear_power: ArrayLike = 1.0,
    center: Any = False,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    nu_scope: str = "matrix",
    scale: str = "nuclear",
    rms: ArrayLike = 0.2,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Left polar momentum: polar factor through the rows x rows Gram, nu-scaled.

  .. math::
    X = C(M_t),\quad U = (X X^\top)^{-1/2} X,\quad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, C(\langle X, U\rangle^{\alpha} U)

  Cheap for wide matrices (few rows: a MoE router with E experts as rows).
  Symmetry group: left-permutation / right-orthogonal (and bi-orthogonal for full-rank X).

  Args: as :func:`right_polargrad_m`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    arXiv:2605.18106, 2026; Lau et al., "PolarGrad", arXiv:2505.21799, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"router": jnp.zeros((4, 32))}  # E = 4 experts as rows, centred
    >>> opt = symoptax.left_polargrad_m(1.0, nuclear_power=0.0, method="eigh", center=True)
    >>> grads = {"router": jax.random.normal(jax.random.key(0), (4, 32))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> np.round(np.linalg.svd(u["router"], compute_uv=False), 3)  # rank E - 1 once centred
    array([1., 1., 1., 0.], dtype=float32)
  """
  return _one_sided(
      "left", name="left_polargrad_m", learning_rate=learning_rate, beta=beta,
      weight_decay=weight_decay, nuclear_power=nuclear_power, center=center, method=method,
      axes=axes, compute_dtype=compute_dtype, nu_scope=nu_scope, scale=scale, rms=rms,
      mu_dtype=mu_dtype, shardings=shardings, mesh=mesh)


@keeps_shardings
@shared_args
def hybrid_polargrad_m(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    nuclear_power: ArrayLike = 1.0,
    center: Any = False,
    method: str = "polar_express",
    order: str = "row_then_polar",
    side: str = "auto",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    nu_scope: str = "matrix",
    scale: str = "nuclear",
    rms: ArrayLike = 0.2,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Hybrid: row normalisation and the polar factor, in either order.

  ``order="row_then_polar"`` (default):

  .. math::
    X = C(R(C(M_t))),\quad U = \mathrm{polar}(X),\quad
    \text{update} = C(\langle X, U\rangle^{\alpha} U)

  ``order="polar_then_row"``: :math:`C(R(\mathrm{polar}(C(M_t))))` (``nuclear_power`` has no
  effect there, since the row normalisation removes any scale).

  Row-normalising first equalises the row norms, which improves the conditioning the polar
  step sees. Symmetry group: left-permutation / right-orthogonal.

  Args:
    learning_rate: float or optax schedule.
    beta: EMA coefficient of the momentum.
    weight_decay: decoupled weight decay (matrix leaves only).
    nuclear_power: :math:`\alpha` for "row_then_polar".
    center: centre rows (before, between and after), for softmax-facing matrices
      (``True``, ``False`` or an optax mask of the leaves to centre).
    method: polar oracle.
    order: "row_then_polar" or "polar_then_row".
    side: polar side ("auto" picks the smaller Gram).
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[nu_scope]]
    [[nu_scale]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    arXiv:2605.18106, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"lm_head": jnp.zeros((32, 8))}  # [V, d] rows, centred
    >>> opt = symoptax.hybrid_polargrad_m(1e-2, center=True)
    >>> grads = {"lm_head": jax.random.normal(jax.random.key(0), (32, 8))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> bool(np.allclose(u["lm_head"].mean(axis=0), 0, atol=1e-7))  # no drift along 1 v^T
    True
  """
  sh = shard_kwargs(shardings, mesh)
  if order not in HYBRID_ORDERS:
    raise ValueError(f"Unknown order {order!r}; valid choices are "
                     f"{', '.join(map(repr, HYBRID_ORDERS))}.")
  _check_scale(scale, SCALES, "hybrid_polargrad_m")
  c = _centring(center, axes, sh)
  row = scale_by_row_norm(axes=axes, **sh)
  if order == "row_then_polar":
    power, relative = _nu_args(scale, nuclear_power)
    polar = scale_by_polar(method, side=side, nuclear_power=power, axes=axes, **sh,
                           compute_dtype=compute_dtype, nu_scope=nu_scope, relative=relative)
    body = (c, row, c, polar, c)
  else:
    polar = scale_by_polar(method, side=side, axes=axes, **sh, compute_dtype=compute_dtype)
    body = (c, polar, row, c)
  rescale = _rescale(scale, rms, axes, sh, orthogonal=order == "row_then_polar")
  return chain(optax.ema(beta, debias=False, accumulator_dtype=mu_dtype), *body,
                *rescale,
                *decay_and_rate(learning_rate, weight_decay, axes))


@keeps_shardings
@shared_args
def polargrad(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    nuclear_power: ArrayLike = 1.0,
    center: Any = False,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    nu_scope: str = "matrix",
    scale: str = "nuclear",
    rms: ArrayLike = 0.2,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""PolarGrad with EMA momentum: the full polar factor, nuclear-norm scaled.

  .. math::
    U = \mathrm{polar}(C(M_t)),\quad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, C(\|C(M_t)\|_*^{\alpha} U)

  Symmetry group: bi-orthogonal (``W -> U W V^T``).

  Args:
    learning_rate: float or optax schedule.
    beta: EMA coefficient of the momentum.
    weight_decay: decoupled weight decay (matrix leaves only).
    nuclear_power: :math:`\alpha`.
    center: centre rows (breaks the bi-orthogonal symmetry down to LPRO); ``True``,
      ``False`` or an optax mask of the leaves to centre.
    method: full-side oracle ("polar_express", "muon_ns", "dsv4", "qdwh", "svd").
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[nu_scope]]
    [[nu_scale]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Lau, Long, Su, "PolarGrad", arXiv:2505.21799, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.polargrad(1.0, method="svd")
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> s = np.linalg.svd(u["w"], compute_uv=False)  # nu U: all equal to ||M||_*
    >>> bool(np.allclose(s, s[0], rtol=1e-4))
    True
  """
  return _one_sided(
      "full", name="polargrad", learning_rate=learning_rate, beta=beta,
      weight_decay=weight_decay, nuclear_power=nuclear_power, center=center, method=method,
      axes=axes, compute_dtype=compute_dtype, nu_scope=nu_scope, scale=scale, rms=rms,
      mu_dtype=mu_dtype, shardings=shardings, mesh=mesh)


MOMENTA = ("jordan", "optax")


@keeps_shardings
@shared_args
def muon(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    momentum: str = "jordan",
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    shape_rule: str = "muon",
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
    method_options: dict | None = None,
) -> optax.GradientTransformation:
  r"""Muon: orthogonalised (Nesterov) momentum with a shape factor.

  .. math::
    B_t = \beta B_{t-1} + G_t,\quad M_t = G_t + \beta B_t \;(\text{Nesterov}),\\
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, s\, \mathrm{polar}(M_t)

  with :math:`s = \sqrt{\max(1, \mathrm{fan\_out}/\mathrm{fan\_in})}` ("muon": Jordan's,
  optax's and the paper's convention; the output side is
  :attr:`symoptax.MatrixAxes.fan_out`, so a SwiGLU down projection ``[ff, d]`` gets 1) or
  :math:`0.2\sqrt{\max(\mathrm{rows}, \mathrm{cols})}` ("rms", Moonlight). Symmetry group:
  bi-orthogonal.

  Momentum: ``momentum="jordan"`` (default) is the trace above (Jordan's Muon and the paper's
  reference, no bias correction); ``momentum="optax"`` is ``optax.contrib.muon``'s
  bias-corrected EMA (:func:`scale_by_debiased_momentum`). Both feed the same direction at
  step 1; from step 2 on they weigh past gradients differently, and the updates differ,
  mostly by 4-13% (relative) per step on random gradients.

  Unlike ``optax.contrib.muon`` this applies to the leaves it is given (0/1-D leaves pass
  through); use :func:`symoptax.symmetry_stack` to route other leaves to AdamW.

  Args:
    learning_rate: float or optax schedule.
    beta: momentum coefficient.
    nesterov: use Nesterov momentum.
    momentum: ``"jordan"`` or ``"optax"`` (above).
    weight_decay: decoupled weight decay (matrix leaves only).
    method: full-side polar oracle (default Polar Express, 5 steps).
    shape_rule: "muon", "rms" or "none" (see :func:`symoptax.scale_by_shape`).
    rms: target RMS for ``shape_rule="rms"``.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]
    method_options: extra keywords of the oracle (see :func:`symoptax.scale_by_polar`), e.g.
      ``{"rank": 64}`` with ``method="randomized"``.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
    (https://kellerjordan.github.io/posts/muon/); Liu et al., "Muon is Scalable for LLM
    Training", arXiv:2502.16982, 2025; Amsel et al., "The Polar Express",
    arXiv:2505.16932, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.muon(1.0, method="svd")
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> np.round(np.linalg.svd(u["w"], compute_uv=False), 3)  # -polar(M), shape factor 1
    array([1., 1., 1., 1., 1., 1., 1., 1.], dtype=float32)
  """
  sh = shard_kwargs(shardings, mesh)
  if momentum not in MOMENTA:
    raise ValueError(f"Unknown momentum {momentum!r}; valid choices are "
                     f"{', '.join(map(repr, MOMENTA))}.")
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method=method, shape_rule=shape_rule, rms=rms, axes=axes, compute_dtype=compute_dtype,
      mu_dtype=mu_dtype, sh=sh, momentum=momentum, method_options=method_options)


def muon_like(*, learning_rate, beta, nesterov, weight_decay, method, shape_rule, rms, axes,
               compute_dtype, mu_dtype, sh, pre=(), post=(), orthogonalise=None,
               momentum="jordan", method_options=None):
  """trace -> pre... -> polar (full) -> post... -> shape factor -> weight decay -> lr."""
  if orthogonalise is None:
    orthogonalise = scale_by_polar(method, side="full", axes=axes, **sh,
                                   compute_dtype=compute_dtype, method_options=method_options)
  mom = (optax.trace(decay=beta, nesterov=nesterov, accumulator_dtype=mu_dtype)
         if momentum == "jordan"
         else scale_by_debiased_momentum(beta, nesterov, mu_dtype=mu_dtype))
  return chain(
      mom, *pre, orthogonalise, *post,
      scale_by_shape(shape_rule, rms=rms, axes=axes, **sh),
      *decay_and_rate(learning_rate, weight_decay, axes))


