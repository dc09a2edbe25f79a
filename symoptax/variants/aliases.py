"""The literature's Muon-family optimizers: MuonEq, NorMuon, SPECTRA clipping, NAMO, NAMO-D,
RMNP, Aurora and Pion, each a short chain of core and variant primitives.

They follow the core aliases' conventions (:mod:`symoptax.aliases`): momentum, a matrix map,
decoupled weight decay on matrix leaves, the learning rate; ``shardings=`` runs the matrix
steps under ``shard_map`` and keeps the state in the parameters' shardings.
"""

from __future__ import annotations

from typing import Any

import optax
from jax.typing import ArrayLike

from symoptax.aliases import (ScalarOrSchedule, chain, decay_and_rate, keeps_shardings,
                              muon_like, rownorm_m, shard_kwargs)
from symoptax.axes import AxesLike
from symoptax.docstrings import shared_args
from symoptax.transforms import scale_by_row_norm
from symoptax.variants.transforms import (scale_by_col_norm, scale_by_high_pass_polar,
                                          scale_by_leverage_polar, scale_by_namo,
                                          scale_by_namo_d, scale_by_row_second_moment,
                                          scale_by_spectral_clip)


MUONEQ_MODES = ("R", "C", "RC")


@keeps_shardings
def muoneq(
    learning_rate: ScalarOrSchedule,
    *,
    mode: str = "R",
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
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
  r"""MuonEq: equilibrate rows and/or columns of the momentum, then Muon's polar step.

  .. math::
    \text{"R"}: \mathrm{polar}(R(M)),\quad \text{"C"}: \mathrm{polar}(M D_c^{-1}),\quad
    \text{"RC"}: \mathrm{polar}(R(M) D_c^{-1})

  with :math:`R` row normalisation and :math:`D_c` the column norms (of the row-normalised
  matrix for "RC"); then Muon's shape factor. Symmetry: "R" is LPRO (row permutations, right
  orthogonal maps) -- it is ``hybrid_polargrad_m``'s row-then-polar map without nu scaling or
  centring, on Nesterov momentum; "C" is its mirror (left orthogonal, column permutations);
  "RC" only keeps permutations on both sides.

  Args:
    learning_rate: float or optax schedule.
    mode: "R", "C" or "RC".
    beta, nesterov, weight_decay, method, shape_rule, rms, axes, compute_dtype,
      mu_dtype, shardings, mesh: as :func:`muon`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    MuonEq, arXiv:2603.28254, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 16))}
    >>> opt = symoptax.muoneq(1.0, mode="R", method="svd")
    >>> rows = jnp.arange(1.0, 9.0)[:, None]  # rows of very different sizes
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 16)) * rows}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> np.round(np.linalg.svd(u["w"], compute_uv=False), 3)  # rows equalised, then polar
    array([1., 1., 1., 1., 1., 1., 1., 1.], dtype=float32)
  """
  sh = shard_kwargs(shardings, mesh)
  if mode not in MUONEQ_MODES:
    raise ValueError(f"Unknown mode {mode!r}; valid choices are "
                     f"{', '.join(map(repr, MUONEQ_MODES))}.")
  pre = {"R": (scale_by_row_norm(axes=axes, **sh),),
         "C": (scale_by_col_norm(axes=axes, **sh),),
         "RC": (scale_by_row_norm(axes=axes, **sh), scale_by_col_norm(axes=axes, **sh))}[mode]
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method=method, shape_rule=shape_rule, rms=rms, axes=axes, compute_dtype=compute_dtype,
      mu_dtype=mu_dtype, sh=sh, pre=pre)


@keeps_shardings
def normuon(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    b2: ArrayLike = 0.95,
    eps: ArrayLike = 1e-8,
    nesterov: bool = True,
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
  r"""NorMuon: Muon's polar step, then per-row second-moment normalisation.

  .. math::
    O = \mathrm{polar}(M_t),\quad v_t = \beta_2 v_{t-1} + (1-\beta_2)\,\mathrm{mean}_j
    O_{ij}^2,\quad \hat O = \frac{O}{\sqrt{v_t} + \epsilon}\,
    \frac{\|O\|_F}{\|O / (\sqrt{v_t} + \epsilon)\|_F}

  then Muon's shape factor. One extra float per row of state. Symmetry: LPRO (the per-row
  statistics break left rotations).

  Args:
    learning_rate: float or optax schedule.
    beta, nesterov, weight_decay, method, shape_rule, rms, axes, compute_dtype,
      mu_dtype, shardings, mesh: as :func:`muon`.
    b2: EMA coefficient of the per-row second moment.
    eps: added to its square root.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Li et al., "NorMuon: Making Muon more efficient and scalable", arXiv:2510.05491, 2025.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.normuon(1.0, method="svd")
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> n = np.linalg.norm(u["w"], axis=1)  # per-row second moments equalise the rows
    >>> bool(np.allclose(n, n[0], rtol=1e-3))
    True
  """
  sh = shard_kwargs(shardings, mesh)
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method=method, shape_rule=shape_rule, rms=rms, axes=axes, compute_dtype=compute_dtype,
      mu_dtype=mu_dtype, sh=sh,
      post=(scale_by_row_second_moment(b2, eps, axes=axes, **sh),))


@keeps_shardings
@shared_args
def spectral_clip(
    learning_rate: ScalarOrSchedule,
    *,
    bound: ArrayLike = 1.0,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    method: str = "dsv4",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Spectrally clipped momentum: singular values of the EMA momentum clipped at ``bound``.

  .. math::
    M_t = \beta M_{t-1} + (1-\beta) G_t = U \Sigma V^\top,\quad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, U \min(\Sigma, c) V^\top

  computed with two polar calls (no SVD on the hot path; see
  :func:`symoptax.transforms.clip_singular_values`), within ``c`` at any gradient scale.
  Small directions keep their size instead of being inflated to 1 as in Muon. Symmetry:
  bi-orthogonal.

  Args:
    learning_rate: float or optax schedule.
    bound: the clipping level ``c``.
    beta: EMA coefficient.
    weight_decay: decoupled weight decay (matrix leaves only).
    method: full-side polar oracle (default "dsv4", see :func:`scale_by_spectral_clip`).
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    SPECTRA (spectral clipping of optimizer updates); the two-polar construction is
    symoptax's.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 16))}
    >>> opt = symoptax.spectral_clip(1.0, bound=0.5, method="svd")
    >>> grads = {"w": 100.0 * jax.random.normal(jax.random.key(0), (8, 16))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> float(np.linalg.norm(u["w"], ord=2)) <= 0.5 + 1e-4  # every singular value clipped
    True
  """
  sh = shard_kwargs(shardings, mesh)
  return chain(optax.ema(beta, debias=False, accumulator_dtype=mu_dtype),
                scale_by_spectral_clip(bound, method=method, axes=axes, **sh,
                                       compute_dtype=compute_dtype),
                *decay_and_rate(learning_rate, weight_decay, axes))


@keeps_shardings
@shared_args
def namo(
    learning_rate: ScalarOrSchedule,
    *,
    b1: ArrayLike = 0.95,
    b2: ArrayLike = 0.99,
    eps: ArrayLike = 1e-8,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""NAMO: orthogonalised momentum scaled by one Adam-type step size per matrix.

  .. math::
    W_{t+1} = W_t - \eta\, \alpha_t \left(\mathrm{polar}(M_t) + \lambda W_t\right),\quad
    \alpha_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{\|M_t\|_F}{\sqrt{v_t}+\epsilon}

  with :math:`M_t` the EMA of gradients and :math:`v_t` the EMA of :math:`\|G_t\|_F^2`
  (:func:`symoptax.scale_by_namo`). One extra float per matrix of state. Symmetry:
  bi-orthogonal. Scale-invariant while :math:`\sqrt{v_t} \gg \epsilon` (``eps`` is absolute,
  as Adam's: gradients of norm ~``eps`` and below take smaller steps); finite for gradients
  from ~1e-30 to ~1e30.

  Args:
    learning_rate: float or optax schedule.
    b1, b2, eps: moment coefficients and stabiliser.
    weight_decay: decoupled weight decay, scaled by ``alpha_t`` as in the paper.
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Zhang, Liu, Schaeffer, "Adam Improves Muon: Adaptive Moment Estimation with
    Orthogonalized Momentum", arXiv:2602.17080, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.namo(1.0, method="svd")
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> s = np.linalg.svd(u["w"], compute_uv=False)  # alpha polar(M): one step size
    >>> bool(np.allclose(s, s[0], rtol=1e-4))
    True
  """
  sh = shard_kwargs(shardings, mesh)
  return optax.chain(
      scale_by_namo(b1, b2, eps, weight_decay, method=method, axes=axes, **sh,
                    compute_dtype=compute_dtype, mu_dtype=mu_dtype),
      optax.scale_by_learning_rate(learning_rate))


@keeps_shardings
@shared_args
def rmnp(
    learning_rate: ScalarOrSchedule,
    *,
    beta: ArrayLike = 0.95,
    weight_decay: ArrayLike = 0.0,
    axes: AxesLike = None,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""RMNP: row-normalised momentum as a drop-in replacement for Muon on hidden matrices.

  .. math::
    M_t = \beta M_{t-1} + (1-\beta) G_t,\qquad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, R(M_t)

  This is exactly :func:`rownorm_m` without centring: the same update, proposed for the
  hidden (attention and MLP) matrices that Muon handles, at ``O(mn)`` cost instead of the
  polar step's ``O(mn min(m, n))``. Its Frobenius norm, ``sqrt(rows)``, equals Muon's
  ``sqrt(max(1, fan_out/fan_in)) ||polar(M)||_F`` where the rows are the output side and
  ``rows >= cols`` (gate/up projections), so it takes Muon's learning rate; on a down
  projection ``[ff, d]`` (rows = its ff inputs) it is ``sqrt(ff/d)`` times Muon's. Symmetry:
  LPRO; on hidden (bi-orthogonal) matrices it gives up left rotations, which is what
  "Muon's orthogonalisation and row normalisation agree when the Gram is row-diagonally
  dominant" trades away.

  Args:
    learning_rate: float or optax schedule.
    beta: EMA coefficient of the momentum.
    weight_decay: decoupled weight decay (matrix leaves only).
    axes: which axes form rows and cols.
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Deng et al., "RMNP: Row-Momentum Normalized Preconditioning for Scalable Matrix-Based
    Optimization", arXiv:2603.20527, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((16, 8))}
    >>> opt = symoptax.rmnp(1.0)
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (16, 8))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> np.round(np.linalg.norm(u["w"], axis=1), 3)  # unit rows, no polar step
    array([1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1.], dtype=float32)
  """
  sh = shard_kwargs(shardings, mesh)
  return rownorm_m.unpinned(learning_rate, beta=beta, weight_decay=weight_decay,
                           center=False, axes=axes, mu_dtype=mu_dtype,
                           **sh)  # rmnp itself keeps shardings


@keeps_shardings
def aurora(
    learning_rate: ScalarOrSchedule,
    *,
    steps: int | None = None,
    row_power: ArrayLike = 0.5,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
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
  r"""Aurora: Muon with a leverage-aware polar step.

  .. math::
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, s\, \mathrm{polar}(D M_t)

  with ``D`` a diagonal row scaling chosen by ``steps`` alternating updates so that the rows
  of ``polar(D M)`` have equal norms (:func:`symoptax.transforms.leverage_polar`); square and
  wide matrices get the plain polar factor. ``steps=1`` is ``polar(R(M))``, the
  row-then-polar map of :func:`hybrid_polargrad_m`: hybrid is Aurora's one-step instance
  (no refinement, so no damping), here without nu scaling or centring and on Nesterov
  momentum. Symmetry: LPRO.

  Args:
    learning_rate: float or optax schedule.
    steps: polar calls per update (None: 2, as the reference).
    row_power: exponent of the row-scaling refinements on the leverage scores (0.5 =
      undamped, the reference's default; smaller damps).
    beta, nesterov, weight_decay, method, shape_rule, rms, axes, compute_dtype,
      mu_dtype, shardings, mesh: as :func:`muon`.

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Dewulf, Pai, Yang, Zhang, Keigwin, "Aurora: A Leverage-Aware Spectral Optimizer",
    arXiv:2606.27715, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((32, 8))}  # tall: leverage matters
    >>> opt = symoptax.aurora(1.0, steps=4, method="svd")
    >>> rows = jnp.arange(1.0, 33.0)[:, None]
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (32, 8)) * rows}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> n = np.linalg.norm(u["w"], axis=1)  # rows of near-equal norm, unlike polar(M)'s
    >>> bool(n.max() / n.min() < 1.5)
    True
  """
  sh = shard_kwargs(shardings, mesh)
  orth = scale_by_leverage_polar(steps, row_power, method=method, axes=axes, **sh,
                                 compute_dtype=compute_dtype)
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method=method, shape_rule=shape_rule, rms=rms, axes=axes, compute_dtype=compute_dtype,
      mu_dtype=mu_dtype, sh=sh, orthogonalise=orth)


@keeps_shardings
def pion(
    learning_rate: ScalarOrSchedule,
    *,
    threshold: ArrayLike = 0.5,
    strength: ArrayLike = 1.0,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    weight_decay: ArrayLike = 0.0,
    method: str = "dsv4",
    shape_rule: str = "muon",
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Pion-style high-pass polar: Muon whose weak singular directions are damped.

  .. math::
    M = U \Sigma V^\top,\quad W_{t+1} = W_t (1 - \eta\lambda) - \eta\, s\, U h(\Sigma)
    V^\top,\quad h(\sigma) = \begin{cases} 1 & \sigma \ge \tau \\
    1 - s_h + s_h\, \sigma/\tau & \sigma < \tau \end{cases}

  with :math:`\tau` = ``threshold`` times the RMS singular value of ``M`` and :math:`s_h` =
  ``strength`` (:func:`symoptax.transforms.high_pass_polar`; two polar calls, no SVD).
  ``strength=0`` is Muon. Symmetry: bi-orthogonal.

  Args:
    learning_rate: float or optax schedule.
    threshold: ``tau`` relative to the RMS singular value.
    strength: 0 (Muon) .. 1 (singular values below ``tau`` go linearly to 0).
    beta, nesterov, weight_decay, shape_rule, rms, axes, compute_dtype,
      mu_dtype, shardings, mesh: as :func:`muon`.
    method: full-side polar oracle (default "dsv4": the clip needs converged factors).

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Fan, Liu, Hong, Kompella, Liu, "Rethinking Muon Beyond Pretraining: Spectral Failures
    and High-Pass Remedies for VLA and RLVR", arXiv:2605.19282, 2026 (Pion: a high-pass
    filter from promotion then suppression polynomials). symoptax's filter has an explicit,
    scale-invariant threshold and strength and is built from two polar calls.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.pion(1.0, threshold=0.5, strength=1.0)
    >>> rows = jnp.arange(1.0, 9.0)[:, None]
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32)) * rows}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> s = np.linalg.svd(u["w"], compute_uv=False)  # weak directions damped below 1
    >>> bool(s.max() > 0.9 and s.min() < 0.9)
    True
  """
  sh = shard_kwargs(shardings, mesh)
  orth = scale_by_high_pass_polar(threshold, strength, method=method, axes=axes, **sh,
                                  compute_dtype=compute_dtype)
  return muon_like(
      learning_rate=learning_rate, beta=beta, nesterov=nesterov, weight_decay=weight_decay,
      method=method, shape_rule=shape_rule, rms=rms, axes=axes, compute_dtype=compute_dtype,
      mu_dtype=mu_dtype, sh=sh, orthogonalise=orth)


@keeps_shardings
@shared_args
def namo_d(
    learning_rate: ScalarOrSchedule,
    *,
    b1: ArrayLike = 0.95,
    b2: ArrayLike = 0.99,
    eps: ArrayLike = 1e-8,
    clamp: ArrayLike = 0.5,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""NAMO-D: orthogonalised momentum times a clamped diagonal of per-column step sizes.

  .. math::
    W_{t+1} = W_t - \eta \left(\mathrm{polar}(M_t) + \lambda W_t\right)
    \mathrm{diag}(\tilde d_t)

  with :math:`\tilde d_{t,j}` the Adam-type ratio
  :math:`\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \|M_{t,:,j}\| / (\sqrt{v_{t,j}}+\epsilon)`
  clamped to :math:`[c \bar d, \bar d / c]` around its mean (:func:`symoptax.scale_by_namo_d`).
  One extra float per column. Symmetry: left orthogonal x column permutations. Scale-invariant
  while :math:`\sqrt{v_{t,j}} \gg \epsilon` (an absolute, Adam-style stabiliser); finite for
  gradients from ~1e-30 to ~1e30.

  Args:
    learning_rate: float or optax schedule.
    b1, b2, eps: moment coefficients and stabiliser.
    clamp: ``c`` in (0, 1] (1: one step size per matrix).
    weight_decay: decoupled weight decay, scaled by the diagonal.
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    [[mu_dtype]]
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Zhang, Liu, Schaeffer, "Adam Improves Muon: Adaptive Moment Estimation with
    Orthogonalized Momentum", arXiv:2602.17080, 2026.

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> params = {"w": jnp.zeros((8, 32))}
    >>> opt = symoptax.namo_d(1.0, clamp=1.0, method="svd")  # clamp 1: one step size
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (8, 32))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> s = np.linalg.svd(u["w"], compute_uv=False)
    >>> bool(np.allclose(s, s[0], rtol=1e-4))
    True
  """
  sh = shard_kwargs(shardings, mesh)
  return optax.chain(
      scale_by_namo_d(b1, b2, eps, weight_decay, clamp, method=method, axes=axes, **sh,
                      compute_dtype=compute_dtype, mu_dtype=mu_dtype),
      optax.scale_by_learning_rate(learning_rate))
