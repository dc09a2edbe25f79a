"""COSMOS: SOAP-style Adam on the gradient's leading eigensubspace, Muon on the rest.

:func:`scale_by_cosmos` is the step, :func:`cosmos` the named optimizer (a
:func:`symoptax.symmetry_stack` rule). The reference is the authors' PyTorch code
(``COSMOS_optim.py`` of github.com/lliu606/COSMOS at HEAD), its matrix branch read for
symoptax's ``[B, rows, cols]`` matrices with the subspace on the columns (the reference's
input side).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.aliases import ScalarOrSchedule, decay_and_rate, keeps_shardings
from symoptax.axes import AxesLike, flatten_with_layouts, from_batched, resolve_axes, to_batched
from symoptax.variants.conda import root_ema
from symoptax.docstrings import shared_args
from symoptax.transforms import validate_polar

_HI = jax.lax.Precision.HIGHEST


class ScaleByCosmosState(NamedTuple):
  """State of :func:`scale_by_cosmos` (per matrix leaf, ``[*batch, ...]``; per other leaf
  ``basis``/``gram``/``nu`` hold Adam's second moment in ``nu`` and ``None`` elsewhere)."""
  count: jax.Array  # int32 scalar, steps taken
  mu: Any  # momentum sum M = b1 M + G, like the params
  basis: Any  # P, [*batch, cols, r]: orthonormal basis of the leading eigensubspace of G^T G
  gram: Any  # S = P^T C P / unit^2, [*batch, r, r], C the EMA of G^T G the subspace tracks
  nu: Any  # sqrt(V), [*batch, rows, r]: V the EMA of (G P)^2 (per other leaf: Adam's sqrt(v))
  unit: Any  # per matrix leaf [*batch]: the largest gradient entry seen, S's unit


def cosmos_rank(rank: int, cols: int) -> int:
  """The subspace's dimension for matrices of ``cols`` columns."""
  return min(rank, cols)


def _orthonormal(x: jax.Array, fallback: jax.Array) -> jax.Array:
  """The ``Q`` of a thin QR of each ``[B, n, r]`` (up to column signs, which COSMOS's step
  does not see), by Cholesky QR on unit columns, three passes: matmuls, a Cholesky and a
  triangular solve of ``r x r`` matrices (no Householder QR: jaxlib 0.10.2's hung a CPU train
  step). The Gram is shifted by 1e-6 (float32 resolves no less on unit columns), so columns
  that depend on the others (a gradient of rank below ``r``) come out as some orthonormal
  completion; columns with no norm (a zero gradient) are taken from ``fallback``, the
  previous basis."""
  norms = jnp.linalg.norm(x, axis=-2, keepdims=True)
  dead = norms <= 1e-6 * jnp.max(norms, axis=-1, keepdims=True)
  x = jnp.where(dead, fallback, x)
  eye = jnp.eye(x.shape[-1], dtype=x.dtype)
  for _ in range(3):
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-2, keepdims=True), 1e-30)
    gram = jnp.einsum("bnr,bns->brs", x, x, precision=_HI)
    chol = jnp.linalg.cholesky(gram + 1e-6 * eye)
    # x R^{-1}: solve R^T y^T = x^T with R = chol^T (lower-triangular chol).
    x = jnp.swapaxes(jax.lax.linalg.triangular_solve(chol, jnp.swapaxes(x, -1, -2),
                                                     left_side=True, lower=True), -1, -2)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-2, keepdims=True), 1e-30)


def _top_eigenvectors(c: jax.Array, r: int) -> jax.Array:
  _, vecs = jnp.linalg.eigh(c)
  return vecs[..., ::-1][..., :r]  # largest first, as the reference's SVD of G^T G


def _unit_rms(x: jax.Array, eps) -> jax.Array:
  """``sqrt(m n) x / (||x||_F + eps)`` per matrix, in units of the largest entry."""
  top = jnp.max(jnp.abs(x), axis=(-2, -1), keepdims=True, initial=0.0)
  xu = x / jnp.where(top > 0, top, 1.0)
  norm = jnp.sqrt(jnp.sum(jnp.square(xu), axis=(-2, -1), keepdims=True))
  size = (x.shape[-2] * x.shape[-1]) ** 0.5
  return size * xu / (norm + eps / jnp.where(top > 0, top, 1.0))


@shared_args
def scale_by_cosmos(b1: ArrayLike = 0.95, b2: ArrayLike = 0.95, eps: ArrayLike = 1e-8,
                    rank: int = 64, gamma: ArrayLike = 0.2, nesterov: bool = True, *,
                    method: str = "muon_ns", axes: AxesLike = None, compute_dtype: Any = "auto",
                    mu_dtype: Any = None) -> optax.GradientTransformation:
  r"""COSMOS's step: Adam in the leading ``rank``-dimensional eigensubspace of the
  gradient's column covariance, Muon's polar step on the rest, the sum at unit RMS.

  Per ``[rows, cols]`` matrix, ``P`` (``cols x r``) and ``S`` (``r x r``) track the top
  eigenvectors of :math:`C_t = \beta_2 P S P^\top + (1-\beta_2) G^\top G` by one power step
  and a QR a step (at :math:`t = 1`, the top eigenvectors of :math:`G^\top G`):

  .. math::
    M_t = \beta_1 M_{t-1} + G_t,\quad P = \mathrm{qr}(\beta_2 P S + (1-\beta_2) G^\top G P),
    \quad S = P^\top C_t P,\quad V = \beta_2 V + (1-\beta_2) (G P)^{\odot 2},\\
    N = \frac{G_t + \beta_1 M_t}{1 + \beta_1 c_1}\ (\text{Nesterov; else } N = M_t / c_1),
    \quad c_1 = \tfrac{1-\beta_1^t}{1-\beta_1},\ c_2 = 1-\beta_2^t,\\
    A = \frac{N P}{\sqrt{V / c_2} + \epsilon} P^\top,\quad
    B = \mathrm{rms}_1\!\left(\mathrm{polar}(N - N P P^\top)\right),\quad
    \text{out} = \mathrm{rms}_1(A + \gamma B)

  with :math:`\mathrm{rms}_1(X) = \sqrt{mn}\, X / (\|X\|_F + \epsilon)` (the reference's
  normalisation: every update has per-entry RMS 1, so the learning rate is the RMS step).
  ``V`` is not rotated when ``P`` moves, as in the reference. State per matrix:
  ``m n + (m + n) r + r^2`` floats, against SOAP's ``2 m n + 2 (m^2 + n^2)``
  (``benchmarks/state_bytes.py``).

  Symmetry: row permutations x column rotations (``P -> Q^T P`` follows a rotation of the
  columns; Adam's normalisation is elementwise over the rows); a rotation of the rows fails.
  Finite for gradients from ~1e-30 to ~1e30; scale-invariant where the Adam part's norms are
  far above ``eps`` (the power step and ``V`` see the gradient squared, computed in units of
  its largest entry). Leaves without axes take plain Adam (``b1``, ``b2``, ``eps``; the
  reference's own Adam branch has hard-coded constants that symoptax does not copy).

  Args:
    b1: momentum coefficient (the reference's sum, no ``1 - b1`` factor).
    b2: EMA coefficient of ``V`` and of the subspace's covariance.
    eps: stabiliser of Adam's division and of the normalisations.
    rank: ``r`` (``min(rank, cols)``: with ``rank >= cols`` the step is Adam in the
      eigenbasis and there is no Muon part, whose input would be round-off). Keep it below
      the gradients' rank (``min(rows, cols)`` at most): directions of the subspace, or of the
      rest, that the gradient does not reach hold only round-off, which Adam's division and
      the rest's unit-RMS normalisation scale up (as in the reference) unless ``eps``
      dominates it.
    gamma: weight of the Muon part.
    nesterov: the reference's Nesterov form of ``N`` (``False``: the momentum's mean
      ``M_t / c_1``; the reference's non-Nesterov branch divides ``G_t`` instead, which
      leaves the momentum unused).
    method: full-side polar oracle of the Muon part (the reference: Jordan's 5-step
      Newton-Schulz, ``"muon_ns"``).
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Liu et al., "COSMOS: A Hybrid Adaptive Optimizer for Memory-Efficient Training of
    LLMs", arXiv:2502.17410, 2025; code: github.com/lliu606/COSMOS.
  """
  validate_polar(method, "full", None)
  if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
    raise ValueError(f"scale_by_cosmos: rank must be a positive int, got {rank!r}.")

  def shapes(lay):
    _, rows, cols = lay.batched_shape
    r = cosmos_rank(rank, cols)
    return (lay.batch_shape + (cols, r), lay.batch_shape + (r, r), lay.batch_shape + (rows, r))

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    mu = [None if p is None else jnp.zeros_like(p, dtype=mu_dtype) for p in leaves]
    per = [(None, None, None if p is None else jnp.zeros(jnp.shape(p), jnp.float32), None)
           if lay is None else tuple(jnp.zeros(s, jnp.float32) for s in shapes(lay))
           + (jnp.zeros(lay.batch_shape, jnp.float32),)
           for p, lay in zip(leaves, lays)]
    basis, gram, nu, unit = ([treedef.unflatten([x[i] for x in per]) for i in range(4)])
    return ScaleByCosmosState(jnp.zeros([], jnp.int32), treedef.unflatten(mu), basis, gram, nu,
                              unit)

  def matrix_step(g, m, p, s, v, unit, t, c1, c2):
    """One matrix batch ``[B, rows, cols]`` (float32); returns (out, p, s, v, unit)."""
    r = p.shape[-1]
    # S is kept in units of the largest gradient entry seen (unit^2): the old S is rescaled
    # to the new unit and G enters divided by it, so nothing squared overflows float32.
    top = jnp.max(jnp.abs(g), axis=(-2, -1), initial=0.0)
    new_unit = jnp.maximum(unit, top)
    safe = jnp.where(new_unit > 0, new_unit, 1.0)[:, None, None]
    gu = g / safe
    s = s * jnp.square(unit[:, None, None] / safe)

    def initial():
      p0 = _top_eigenvectors(jnp.einsum("bmi,bmj->bij", gu, gu, precision=_HI), r)
      gp = jnp.einsum("bmn,bnr->bmr", gu, p0, precision=_HI)
      return p0, (1 - b2) * jnp.einsum("bmr,bms->brs", gp, gp, precision=_HI)

    def tracked():  # one power step on C = b2 P S P^T + (1 - b2) G^T G, then QR
      gp_old = jnp.einsum("bmn,bnr->bmr", gu, p, precision=_HI)
      grown = (b2 * jnp.einsum("bnr,brs->bns", p, s, precision=_HI)
               + (1 - b2) * jnp.einsum("bmn,bmr->bnr", gu, gp_old, precision=_HI))
      p_new = _orthonormal(grown, p)
      turn = jnp.einsum("bnr,bns->brs", p, p_new, precision=_HI)
      gp = jnp.einsum("bmn,bnr->bmr", gu, p_new, precision=_HI)
      s_new = (b2 * jnp.einsum("brs,brq,bqt->bst", turn, s, turn, precision=_HI)
               + (1 - b2) * jnp.einsum("bmr,bms->brs", gp, gp, precision=_HI))
      return p_new, s_new

    p, s = jax.lax.cond(t == 1, initial, tracked)
    v = root_ema(v, jnp.einsum("bmn,bnr->bmr", g, p, precision=_HI), b2)  # sqrt(V)
    n = (g + b1 * m) / (1 + b1 * c1) if nesterov else m / c1
    np_ = jnp.einsum("bmn,bnr->bmr", n, p, precision=_HI)
    adam = jnp.einsum("bmr,bnr->bmn", np_ / (v / jnp.sqrt(c2) + eps), p, precision=_HI)
    if r == g.shape[-1]:  # the subspace is every column: nothing is left for the polar step
      return _unit_rms(adam, eps), p, s, v, new_unit
    rest = n - jnp.einsum("bmr,bnr->bmn", np_, p, precision=_HI)
    o = polar_lib.polar(rest, method=method, side="full", compute_dtype=compute_dtype)
    out = _unit_rms(adam + gamma * _unit_rms(o, eps), eps)
    return out, p, s, v, new_unit

  def update_fn(updates, state, params=None):
    del params
    # On the global arrays: XLA's partitioner places the collectives (under shardings=,
    # cosmos() keeps the state in the parameters' shardings).
    return sharding_lib.on_global_arrays(step, updates, state, out_like=(updates, state))

  def step(updates, state):
    count = optax.safe_increment(state.count)
    t = count.astype(jnp.float32)
    c1 = (1 - b1 ** t) / (1 - b1)
    c2 = 1 - b2 ** t
    mu = jax.tree.map(lambda m, g: (b1 * m + g).astype(m.dtype), state.mu, updates)
    axes_tree = resolve_axes(axes, updates)
    leaves, treedef, lays = flatten_with_layouts(updates, axes_tree)
    flat = [treedef.flatten_up_to(x)
            for x in (mu, state.basis, state.gram, state.nu, state.unit)]
    outs, new = [], [[], [], [], []]  # updates; basis, gram, nu, unit
    for i, (g, lay) in enumerate(zip(leaves, lays)):
      m, *stats = (x[i] for x in flat)
      out = g
      if g is not None and lay is None:  # plain Adam (sqrt(v) kept)
        stats[2] = root_ema(stats[2], g.astype(jnp.float32), b2)
        m_hat = (1 - b1) * m.astype(jnp.float32) / (1 - b1 ** t)  # (1 - b1) M: the EMA
        out = (m_hat / (stats[2] / jnp.sqrt(c2) + eps)).astype(g.dtype)
      elif g is not None and 0 not in lay.batched_shape:
        b = lay.batched_shape[0]
        flat3 = lambda x: x.reshape((b,) + x.shape[len(lay.batch_shape):])
        y, *stats = matrix_step(to_batched(g, lay).astype(jnp.float32),
                                to_batched(m, lay).astype(jnp.float32),
                                *(flat3(x) for x in stats), count, c1, c2)
        stats = [x.reshape(lay.batch_shape + x.shape[1:]) for x in stats]
        out = from_batched(y, lay).astype(g.dtype)
      outs.append(out)
      for lst, x in zip(new, stats):
        lst.append(x)
    return treedef.unflatten(outs), ScaleByCosmosState(
        count, mu, *(treedef.unflatten(x) for x in new))

  return optax.GradientTransformation(init_fn, update_fn)


@keeps_shardings
@shared_args
def cosmos(
    learning_rate: ScalarOrSchedule,
    *,
    b1: ArrayLike = 0.95,
    b2: ArrayLike = 0.95,
    eps: ArrayLike = 1e-8,
    rank: int = 64,
    gamma: ArrayLike = 0.2,
    nesterov: bool = True,
    weight_decay: ArrayLike = 0.0,
    method: str = "muon_ns",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""COSMOS: SOAP-style Adam on the leading eigensubspace of the gradient, Muon on the rest.

  .. math::
    W_{t+1} = W_t - \eta\left(\mathrm{rms}_1(A + \gamma B) + \lambda W_t\right)

  (:func:`symoptax.scale_by_cosmos`: ``A`` Adam in the top-``rank`` eigenbasis of the
  columns' gradient covariance, ``B`` the unit-RMS polar factor of the rest). The update has
  per-entry RMS 1, so ``learning_rate`` is the reference's ``lr * lr_ratio``. Defaults are
  the reference README's (betas 0.95 / 0.95, rank 64, gamma 0.2). State per ``m x n`` matrix:
  ``m n + (m + n) r + r^2``. Symmetry: row permutations x column rotations. Under
  ``shardings=`` the step runs on the global arrays (XLA's partitioner places the
  collectives; ``eigh`` and Cholesky inside ``shard_map`` risk XLA:CPU's deadlock) and the
  state stays in the shardings of its parameter-shaped leaves.

  Args:
    learning_rate: float or optax schedule: the update's per-entry RMS.
    b1, b2, eps: momentum, second-moment/subspace coefficients and stabiliser.
    rank: the subspace's dimension (at most the matrices' columns).
    gamma: weight of the Muon part.
    nesterov: the reference's Nesterov form.
    weight_decay: decoupled weight decay on matrix leaves.
    method: full-side polar oracle of the Muon part.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Liu et al., "COSMOS: A Hybrid Adaptive Optimizer for Memory-Efficient Training of
    LLMs", arXiv:2502.17410, 2025; code: github.com/lliu606/COSMOS.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((32, 16))}
    >>> opt = symoptax.cosmos(1.0, rank=4)
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (32, 16))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> bool(np.isclose(np.sqrt(np.mean(np.square(u["w"]))), 1.0, rtol=1e-4))  # RMS 1
    True
  """
  del shardings, mesh  # placed by keeps_shardings (the step itself runs on global arrays)
  wd, lr = decay_and_rate(learning_rate, weight_decay, axes)
  return optax.chain(
      scale_by_cosmos(b1, b2, eps, rank, gamma, nesterov, method=method, axes=axes,
                      compute_dtype=compute_dtype, mu_dtype=mu_dtype),
      *([wd] if wd is not None else []), lr)
