"""FISMO: Muon's orthogonalised momentum under a Kronecker-factored Fisher metric.

:func:`scale_by_fismo` is the step, :func:`fismo` the named optimizer (a
:func:`symoptax.symmetry_stack` rule). Written from the paper's algorithm as relayed by two
secondary write-ups (the paper's body and any reference code were not available here): the
factor updates, their trace normalisation and damping, the whitened momentum and the
trust-region step below are theirs; the defaults are symoptax's choices.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.aliases import (ScalarOrSchedule, chain, decay_and_rate, keeps_shardings,
                              shard_kwargs)
from symoptax.axes import AxesLike, flatten_with_layouts, resolve_axes
from symoptax.docstrings import shared_args
from symoptax.transforms import map_with_stats, scale_by_shape, validate_polar

_HI = jax.lax.Precision.HIGHEST
EIGEN_FLOOR = 1e-6


class ScaleByFismoState(NamedTuple):
  """State of :func:`scale_by_fismo`."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # momentum of the whitened gradient P^-1/2 G Q^-1/2 (per other leaf: of G)
  left: Any  # per matrix leaf: P, [*batch, rows, rows], trace rows; None elsewhere
  right: Any  # per matrix leaf: Q, [*batch, cols, cols], trace cols; None elsewhere


def _powers(a: jax.Array, *ps: float) -> list[jax.Array]:
  """``a^p`` for each ``p`` of a batch of symmetric positive definite ``a`` (``eigh``;
  eigenvalues floored at 1e-6 of the largest: float32's eigh resolves none smaller, and the
  floor bounds what ``p < 0`` can amplify where the damping is negligible)."""
  w, v = jnp.linalg.eigh(a)
  w = jnp.maximum(w, EIGEN_FLOOR * jnp.max(w, axis=-1, keepdims=True))
  return [jnp.einsum("bij,bj,bkj->bik", v, w ** p, v, precision=_HI) for p in ps]


def _sym(a: jax.Array) -> jax.Array:
  return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _trace(a: jax.Array) -> jax.Array:
  return jnp.trace(a, axis1=-2, axis2=-1)[:, None, None]


def fismo_factors(g: jax.Array, p: jax.Array, q: jax.Array, gamma, damping, *,
                  with_root: bool = False):
  r"""One update of FISMO's Kronecker factors ``P`` (rows) and ``Q`` (cols) of
  ``[B, rows, cols]`` gradients (Gauss-Seidel: ``P`` from the old ``Q``, then ``Q`` from the
  new ``P``), each renormalised to trace = its size:

  .. math::
    \tilde P = \gamma P + (1-\gamma)\left(\tfrac{1}{n} G Q^{-1} G^\top
    + \mu\,\tfrac{\mathrm{tr} P}{m} I\right),\quad
    P \leftarrow \mathrm{sym}\!\left(\tfrac{m}{\mathrm{tr}\tilde P}\tilde P\right)

  and the mirror for ``Q`` with :math:`\tfrac{1}{m} G^\top P^{-1} G`. Since the
  renormalisation forgets any common factor of :math:`\tilde P`, it is computed divided by
  :math:`\max(1, s^2)`, ``s`` the largest entry of ``G``: no gradient scale overflows.
  ``with_root``: also return the new :math:`P^{-1/2}`, from the ``eigh`` that gives
  :math:`P^{-1}`."""
  _, m, n = g.shape
  s = jnp.max(jnp.abs(g), axis=(-2, -1), keepdims=True, initial=0.0)
  unit = jnp.where(s > 0, s, 1.0)
  gu = g / unit
  big = s >= 1
  k_coef = jnp.where(big, 1.0, jnp.square(s))  # s^2 / max(1, s^2)
  d_coef = jnp.where(big, jnp.square(1.0 / unit), 1.0)  # 1 / max(1, s^2)

  def side(x, inv_other, old, size, other_size):
    stat = jnp.einsum("bij,bjk,blk->bil", x, inv_other, x, precision=_HI) / other_size
    eye = jnp.eye(size, dtype=x.dtype)
    new = d_coef * gamma * old + (1 - gamma) * (
        k_coef * stat + d_coef * damping * _trace(old) / size * eye)
    return _sym(size * new / _trace(new))

  p, q, p_isqrt = _factors_and_root(gu, p, q, side)
  return (p, q, p_isqrt) if with_root else (p, q)


def _factors_and_root(gu, p, q, side):
  """The factor updates of :func:`fismo_factors`, plus ``P^{-1/2}`` from the same ``eigh``
  of the new ``P`` that gives ``P^{-1}`` (the step needs both)."""
  _, m, n = gu.shape
  (q_inv,) = _powers(q, -1.0)
  p = side(gu, q_inv, p, m, n)
  p_inv, p_isqrt = _powers(p, -1.0, -0.5)
  q = side(jnp.swapaxes(gu, -1, -2), p_inv, q, n, m)
  return p, q, p_isqrt


@shared_args
def scale_by_fismo(beta: ArrayLike = 0.95, gamma: ArrayLike = 0.95, damping: ArrayLike = 0.01,
                   *, method: str = "polar_express", axes: AxesLike = None,
                   compute_dtype: Any = "auto", mu_dtype: Any = None, shardings: Any = None,
                   mesh: Any = None) -> optax.GradientTransformation:
  r"""FISMO's step: the polar factor of the whitened momentum, mapped back through the
  Fisher metric's inverse square roots.

  .. math::
    (P, Q) \leftarrow \text{factors}(G_t, P, Q)\ \ (\text{:func:`fismo_factors`}),\quad
    M_t = \beta M_{t-1} + (1-\beta)\, P^{-1/2} G_t Q^{-1/2},\\
    \text{out} = P^{-1/2}\,\mathrm{polar}(M_t)\,Q^{-1/2}

  ``out`` solves the trust-region problem :math:`\min_{\Delta} \langle G, \Delta\rangle`
  subject to :math:`\|P^{1/2} \Delta Q^{1/2}\|_2 \le 1` for the metric :math:`F \approx Q
  \otimes P` (substitute :math:`Z = P^{1/2}\Delta Q^{1/2}`: Muon's problem in ``Z``). With
  :math:`P = I, Q = I` it is Muon's update of the EMA momentum. The factors start at the
  identity, are trace-normalised (``tr P = rows``, ``tr Q = cols``) and damped by
  ``damping`` times the identity; their inverse powers come from ``eigh`` every step
  (``rows^3 + cols^3`` work per matrix, beside the polar step's).

  Symmetry: bi-orthogonal (``G -> A G B`` with orthogonal ``A, B`` maps ``P -> A P A^T``,
  ``Q -> B^T Q B`` and the update to ``A out B``); not under other invertible maps (the
  trace normalisation and the damping fix a scale per side). Not scale-invariant: the damping
  is absolute against :math:`G Q^{-1} G^\top`, so small gradients see factors near the
  identity (Muon) and large ones the data's metric; finite for gradients from ~1e-30 to
  ~1e30 (above ~1e19 the factors' EMA memory and damping underflow against the data's
  term and are dropped: the factors are then this step's data's). Leaves without axes
  (vectors) take the plain EMA momentum, as the other named
  optimizers give them. Under ``shardings=`` the step runs on the global arrays and XLA's
  partitioner places the collectives (gathering a split matrix for its ``eigh`` and polar
  calls); the factors are placed along stacked axes only, whole per matrix, and
  :func:`fismo` keeps the state in the parameters' shardings.

  Args:
    beta: EMA coefficient of the whitened momentum.
    gamma: EMA coefficient of the factors.
    damping: ``mu``, the factors' damping relative to their mean eigenvalue (1).
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Xu, Yan, Zhang, "FISMO: Fisher-Structured Momentum-Orthogonalized Optimizer",
    arXiv:2601.21750, 2026.
  """
  validate_polar(method, "full", None)

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    mu = [None if p is None else jnp.zeros_like(p, dtype=mu_dtype) for p in leaves]

    def eye(lay, kind):
      shape = sharding_lib.stat_shape(lay, kind)
      return jnp.broadcast_to(jnp.eye(shape[-1], dtype=jnp.float32), shape)

    factors = []
    for kind in ("rows_gram", "cols_gram"):
      tree = treedef.unflatten([None if lay is None else eye(lay, kind) for lay in lays])
      factors.append(sharding_lib.shard_stats(tree, params, axes_tree, shardings, mesh, kind))
    return ScaleByFismoState(jnp.zeros([], jnp.int32), treedef.unflatten(mu), *factors)

  def update_fn(updates, state, params=None):
    del params

    def fn(g, extras, stats, shards):
      del extras, shards  # whole matrices: the step runs outside shard_map (below)
      mu_old, p, q = stats
      if g.shape[-1] == 0 or g.shape[-2] == 0:  # no entries
        return g, [mu_old, p, q]
      p, q, p_isqrt = fismo_factors(g, p, q, gamma, damping, with_root=True)
      q_isqrt, = _powers(q, -0.5)
      whiten = lambda x: jnp.einsum("bij,bjk,bkl->bil", p_isqrt, x, q_isqrt, precision=_HI)
      mu = beta * mu_old.astype(jnp.float32) + (1 - beta) * whiten(g)
      o = polar_lib.polar(mu, method=method, side="full", compute_dtype=compute_dtype)
      return whiten(o), [mu.astype(mu_old.dtype), p, q]

    axes_tree = resolve_axes(axes, updates)
    # Under shardings= the step runs on the global arrays (no shard_map): XLA's partitioner
    # places the collectives around the eigh calls, which inside shard_map deadlock XLA:CPU's
    # simulated devices (jaxlib 0.10.2); fismo() keeps the state in the shardings.
    stats = [state.mu, state.left, state.right]
    out, (mu, left, right) = sharding_lib.on_global_arrays(
        lambda u, s: map_with_stats(fn, u, u, axes_tree, None, None, stats=s,
                                    stat_kinds=["param", "rows_gram", "cols_gram"]),
        updates, stats, out_like=(updates, stats))
    # Leaves without axes: the plain EMA momentum.
    is_none = lambda x: x is None
    mu = jax.tree.map(lambda m, old, g, ax: m if ax is not None or g is None else
                      (beta * old + (1 - beta) * g).astype(old.dtype),
                      mu, state.mu, updates, axes_tree, is_leaf=is_none)
    out = jax.tree.map(lambda o, m, g, ax: o if ax is not None or g is None else
                       m.astype(g.dtype), out, mu, updates, axes_tree, is_leaf=is_none)
    # The factors stay where init placed them (whole per matrix, split along stacked axes):
    # otherwise the partitioner picks a layout and the state's shardings change after step 1.
    left, right = (sharding_lib.shard_stats(f, updates, axes_tree, shardings, mesh, kind)
                   for f, kind in ((left, "rows_gram"), (right, "cols_gram")))
    return out, ScaleByFismoState(optax.safe_increment(state.count), mu, left, right)

  return optax.GradientTransformation(init_fn, update_fn)


@keeps_shardings
@shared_args
def fismo(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    gamma: ArrayLike = 0.95,
    damping: ArrayLike = 0.01,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    shape_rule: str = "muon",
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""FISMO: Muon under a Kronecker-factored Fisher metric (a trust-region step).

  .. math::
    W_{t+1} = W_t - \eta\left(s\,P^{-1/2}\,\mathrm{polar}(M_t)\,Q^{-1/2} + \lambda W_t\right),
    \quad M_t = \beta M_{t-1} + (1-\beta) P^{-1/2} G_t Q^{-1/2}

  (:func:`symoptax.scale_by_fismo`; ``P``, ``Q`` the trace-normalised, damped factors of
  :func:`symoptax.variants.fismo.fismo_factors`), with Muon's shape factor ``s``
  (``shape_rule``, as :func:`symoptax.muon`): with identity factors it is Muon without
  Nesterov, at Muon's rate. State: the momentum plus one ``rows x rows`` and one
  ``cols x cols`` factor per matrix (SOAP-sized, without SOAP's eigenbases). Symmetry:
  bi-orthogonal. The paper's defaults were not available here; ``beta`` is Muon's,
  ``gamma`` and ``damping`` are symoptax's choices.

  Args:
    learning_rate: float or optax schedule.
    beta: EMA coefficient of the whitened momentum.
    gamma: EMA coefficient of the factors.
    damping: the factors' damping, relative to their mean eigenvalue.
    weight_decay: decoupled weight decay on matrix leaves.
    method: full-side polar oracle.
    shape_rule: ``"muon"`` (default), ``"rms"``, ``"spectral"`` or ``"none"``:
      :func:`symoptax.scale_by_shape`.
    rms: the target RMS of ``shape_rule="rms"``.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Xu, Yan, Zhang, "FISMO: Fisher-Structured Momentum-Orthogonalized Optimizer",
    arXiv:2601.21750, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.fismo(1.0, method="svd", shape_rule="none")
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32))}
    >>> u, state = opt.update(grads, opt.init(params), params)
    >>> p, q = state[0].left["w"], state[0].right["w"]  # the factors, trace 8 and 32
    >>> bool(np.isclose(np.trace(p), 8, rtol=1e-5) and np.isclose(np.trace(q), 32, rtol=1e-5))
    True
  """
  sh = shard_kwargs(shardings, mesh)
  return chain(
      scale_by_fismo(beta, gamma, damping, method=method, axes=axes,
                     compute_dtype=compute_dtype, mu_dtype=mu_dtype, **sh),
      scale_by_shape(shape_rule, rms=rms, axes=axes, **sh),
      *decay_and_rate(learning_rate, weight_decay, axes))
