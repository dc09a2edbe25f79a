"""Fidelity to the paper's PyTorch reference, step by step.

The update rules of the reference implementation of arXiv:2605.18106
(github.com/timlautk/equivariant_optimizers, package ``optim/``) are transcribed below in plain
numpy (float64, with exact SVD / eigh oracles in place of the reference's Polar Express and
inverse-square-root iterations):

* ``rownorm.py`` ``RowNormM`` with ``row_ops.py`` (``row / (||row|| + 1e-8)``);
* ``rightpolargrad.py`` ``RightPolarGradM`` and ``leftpolargrad.py`` ``LeftPolarGradM``
  (``nu = trace(C R)``, the nuclear norm of the centred momentum);
* ``hybrid.py`` ``HybridPolarGradM`` (both orders, right or left Gram); on a stacked
  ``[E, m, n]`` tensor it takes ONE nu for the whole tensor (``torch.sum`` over all experts),
  which symoptax offers as ``nu_scope="leaf"`` (default ``"matrix"``: one nu per expert);
* ``muon_heads.py`` ``MuonHeadsPolarExpress`` with ``polar_express.py`` ``PolarExpressHeads``
  (Nesterov momentum without bias correction, a polar factor and a shape factor per head);
* ``utils.py`` ``decoupled_weight_decay_`` (``p <- p (1 - lr wd)`` before ``p <- p - lr u``);
* and, for ``symoptax.muon(momentum="optax")``, ``optax.contrib.muon``'s bias-corrected
  Nesterov momentum.

Momentum is the reference's EMA ``m <- beta m + (1 - beta) g`` (beta 0.95, no bias
correction) unless said otherwise. Every case feeds the same random gradients to both sides
for 5 steps (symoptax in float32 on the CPU) and compares the accumulated update
``W_k - W_0`` after step 1 and after step 5, to a relative Frobenius error of 2e-3.
"""

import jax
import numpy as np
import optax
import pytest

import symoptax
from symoptax import MatrixAxes

BETA, LR, TOL, STEPS = 0.95, 0.05, 2e-3, 5
AXES = MatrixAxes(rows=-2, cols=-1)
TALL, WIDE, EXPERTS, WIDE_EXPERTS = (12, 5), (5, 12), (3, 10, 4), (3, 4, 10)


# --- numpy transcription of the reference ------------------------------------------------


def _mT(x):
  return np.swapaxes(x, -1, -2)


def center(x):
  return x - x.mean(-2, keepdims=True)


def row_norm(x):
  return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)


def _keep(s):
  """Directions kept by the exact oracles: rank-deficient (centred) inputs get the partial
  isometry on their range."""
  return s > 1e-10 * s.max(-1, keepdims=True)


def inv_sqrt(c):
  """(Pseudo-)inverse square root of a batch of PSD Grams, by eigh."""
  w, q = np.linalg.eigh(c)
  f = np.where(_keep(w), 1.0 / np.sqrt(np.abs(w)), 0.0)
  return (q * f[..., None, :]) @ _mT(q)


def gram_polar(x, side):
  """``(U, nu)`` per matrix: ``U = X R`` with ``R = (X^T X)^{-1/2}`` ("right") or
  ``U = L X`` with ``L = (X X^T)^{-1/2}`` ("left"), and ``nu = trace(C R)``."""
  c = _mT(x) @ x if side == "right" else x @ _mT(x)
  r = inv_sqrt(c)
  u = x @ r if side == "right" else r @ x
  return u, np.trace(c @ r, axis1=-2, axis2=-1)


def svd_polar(x):
  u, s, vt = np.linalg.svd(x, full_matrices=False)
  return (u * _keep(s)[..., None, :]) @ vt


def nu_scale(u, nu, alpha, scope):
  """``nu^alpha U``; ``scope="leaf"`` sums nu over the stacked matrices (the reference's
  ``torch.sum`` over the whole tensor), ``"matrix"`` keeps one nu per matrix."""
  nu = nu.sum() if scope == "leaf" else nu[..., None, None]
  return nu**alpha * u


def ref_rownorm(centred):
  c = center if centred else (lambda x: x)
  return lambda m: c(row_norm(c(m)))


def ref_one_sided(side, alpha, centred, scope="leaf", oracle=None):
  """RightPolarGradM / LeftPolarGradM (and PolarGrad with an SVD oracle)."""
  c = center if centred else (lambda x: x)

  def update(m):
    x = c(m)
    if oracle == "svd":
      u = svd_polar(x)
      nu = np.sum(x * u, axis=(-2, -1))
    else:
      u, nu = gram_polar(x, side)
    return c(nu_scale(u, nu, alpha, scope))

  return update


def ref_hybrid(order, side, centred, alpha=1.0, scope="leaf"):
  """HybridPolarGradM._compute_update."""
  c = center if centred else (lambda x: x)

  def update(m):
    x = c(m)
    if order == "row_then_polar":
      x = c(row_norm(x))
      u, nu = gram_polar(x, side)
      return c(nu_scale(u, nu, alpha, scope))
    u, nu = gram_polar(x, side)
    return c(row_norm(nu_scale(u, nu, alpha, scope)))

  return update


def muon_factor(fan_out, fan_in):
  return max(1.0, fan_out / fan_in)**0.5


def ref_muon(layout=None, head_dim=None):
  """MuonHeadsPolarExpress's update for a PyTorch [out, in] weight: the whole matrix, or
  per head for q/k/v ``[H*hd, d]`` (heads ``[H, hd, d]``) and o ``[d, H*hd]`` (heads
  ``[H, d, hd]``); shape factor of each head's ``[out, in]`` matrix."""

  def update(m):
    if layout == "qkv":
      heads = m.reshape(-1, head_dim, m.shape[-1])
      return (svd_polar(heads) * muon_factor(head_dim, m.shape[-1])).reshape(m.shape)
    if layout == "o":
      d = m.shape[0]
      heads = m.reshape(d, -1, head_dim).transpose(1, 0, 2)
      u = svd_polar(heads) * muon_factor(d, head_dim)
      return u.transpose(1, 0, 2).reshape(m.shape)
    return svd_polar(m) * muon_factor(*m.shape)

  return update


# Momentum rules: (state, gradient, step t >= 1) -> (new state, direction).


def ema(m, g, t):
  m = BETA * m + (1 - BETA) * g
  return m, m


def nesterov_jordan(buf, g, t):  # muon_heads.py; optax.trace(nesterov=True)
  buf = BETA * buf + g
  return buf, g + BETA * buf


def nesterov_optax(mu, g, t):  # optax.contrib.muon
  mu = BETA * mu + (1 - BETA) * g
  return mu, BETA * mu / (1 - BETA**(t + 1)) + (1 - BETA) * g / (1 - BETA**t)


def run_reference(update, w0, grads, wd=0.0, momentum=ema):
  """``W_t - W_0`` after every step."""
  w, state, out = w0, np.zeros_like(w0), []
  for t, g in enumerate(grads, 1):
    state, direction = momentum(state, g, t)
    w = w * (1 - LR * wd) - LR * update(direction)
    out.append(w - w0)
  return out


# --- symoptax side ------------------------------------------------------------------------


def sample(shape, seed=0):
  """``W_0`` and the per-step gradients, float32 values held in float64."""
  rng = np.random.default_rng(seed)
  f32 = lambda a: a.astype(np.float32).astype(np.float64)
  return f32(rng.standard_normal(shape)), [f32(rng.standard_normal(shape))
                                           for _ in range(STEPS)]


def run_symoptax(tx, w0, grads):
  params = {"w": np.float32(w0)}
  state = tx.init(params)

  @jax.jit
  def step(params, state, g):
    updates, state = tx.update({"w": g}, state, params)
    return optax.apply_updates(params, updates), state

  out = []
  for g in grads:
    params, state = step(params, state, np.float32(g))
    out.append(np.asarray(params["w"], np.float64) - w0)
  return out


def rel(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def assert_close(got, want, tol=TOL):
  for k in (1, STEPS):
    err = rel(got[k - 1], want[k - 1])
    assert err < tol, f"after step {k}: relative error of W_k - W_0 is {err:.2e} > {tol:.0e}"


def check(tx, update, shape, *, wd=0.0, momentum=ema, seed=0):
  w0, grads = sample(shape, seed)
  assert_close(run_symoptax(tx, w0, grads), run_reference(update, w0, grads, wd, momentum))


def scope_kw(scope):
  return {} if scope is None else {"nu_scope": scope}


@pytest.mark.parametrize("side,shape", [("right", TALL), ("left", WIDE)], ids=["right", "left"])
@pytest.mark.parametrize("centred", [False, True])
def test_reference_oracles(side, shape, centred):
  """The transcription's Gram-side oracle is the (partial-isometry) polar factor and its nu
  the nuclear norm, also for a centred wide matrix, whose rows Gram is singular."""
  x = sample(shape, seed=5)[0]
  x = center(x) if centred else x
  u, nu = gram_polar(x, side)
  np.testing.assert_allclose(u, svd_polar(x), atol=1e-10)
  np.testing.assert_allclose(nu, np.linalg.svd(x, compute_uv=False).sum(), rtol=1e-10)


# --- 1-4: RowNormM, RightPolarGradM, LeftPolarGradM, HybridPolarGradM ----------------------


@pytest.mark.parametrize("shape", [TALL, EXPERTS], ids=["2d", "experts"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("centred", [False, True])
def test_rownorm_m(shape, wd, centred):
  tx = symoptax.rownorm_m(LR, weight_decay=wd, center=centred, axes=AXES)
  check(tx, ref_rownorm(centred), shape, wd=wd)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_one_sided_polargrad_m(side, alpha, centred):
  # Right polar on a tall matrix; left polar on a router-like wide one (centred, its rows'
  # X X^T Gram is singular: the mean row is 0).
  alias = {"right": symoptax.right_polargrad_m, "left": symoptax.left_polargrad_m}[side]
  tx = alias(LR, nuclear_power=alpha, center=centred, method="eigh", axes=AXES)
  check(tx, ref_one_sided(side, alpha, centred), TALL if side == "right" else WIDE)


@pytest.mark.parametrize("side,shape", [("right", TALL), ("left", WIDE)], ids=["right", "left"])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("order", ["row_then_polar", "polar_then_row"])
def test_hybrid_polargrad_m(order, centred, side, shape):
  tx = symoptax.hybrid_polargrad_m(LR, order=order, center=centred, method="eigh", side=side,
                                   axes=AXES)
  check(tx, ref_hybrid(order, side, centred), shape)


def test_weight_decay_with_polar():
  tx = symoptax.hybrid_polargrad_m(LR, weight_decay=0.1, center=True, method="eigh",
                                   side="right", axes=AXES)
  check(tx, ref_hybrid("row_then_polar", "right", True), TALL, wd=0.1)


# --- 5: one nu per leaf (the reference on stacked experts) or per matrix -----------------


@pytest.mark.parametrize("scope", [None, "matrix", "leaf"])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("order", ["row_then_polar", "polar_then_row"])
def test_hybrid_stacked_experts_nu_scope(order, centred, scope):
  """``nu_scope="leaf"`` is the reference; the default ``"matrix"`` its per-expert variant."""
  tx = symoptax.hybrid_polargrad_m(LR, order=order, center=centred, method="eigh",
                                   side="right", axes=AXES, **scope_kw(scope))
  check(tx, ref_hybrid(order, "right", centred, scope=scope or "matrix"), EXPERTS)


@pytest.mark.parametrize("scope", [None, "matrix", "leaf"])
@pytest.mark.parametrize("alias,side,method,shape", [
    ("right_polargrad_m", "right", "eigh", EXPERTS),
    ("left_polargrad_m", "left", "eigh", WIDE_EXPERTS),
    ("polargrad", "full", "svd", EXPERTS),
], ids=["right", "left", "polargrad"])
def test_one_sided_stacked_experts_nu_scope(alias, side, method, shape, scope):
  tx = getattr(symoptax, alias)(LR, center=True, method=method, axes=AXES, **scope_kw(scope))
  update = ref_one_sided(side, 1.0, True, scope=scope or "matrix",
                         oracle="svd" if side == "full" else None)
  check(tx, update, shape)


@pytest.mark.parametrize("scope", [None, "matrix", "leaf"])
def test_scale_by_polar_nu_scope(scope):
  x = sample(EXPERTS, seed=3)[0]
  tx = symoptax.scale_by_polar("eigh", side="right", nuclear_power=1.0, axes=AXES,
                               **scope_kw(scope))
  got, _ = tx.update({"w": np.float32(x)}, tx.init({"w": np.float32(x)}))
  u, nu = gram_polar(x, "right")
  want = nu_scale(u, nu, 1.0, scope or "matrix")
  err = rel(np.asarray(got["w"], np.float64), want)
  assert err < TOL, f"relative error {err:.2e}"


def test_coupled_nu_differs_from_per_matrix_nu():
  """Negative control: the nu_scope tests can tell the two scalings apart."""
  for ref, shape in ((lambda s: ref_hybrid("row_then_polar", "right", True, scope=s), EXPERTS),
                     (lambda s: ref_one_sided("right", 1.0, True, scope=s), EXPERTS),
                     (lambda s: ref_one_sided("left", 1.0, True, scope=s), WIDE_EXPERTS)):
    w0, grads = sample(shape)
    leaf, matrix = (run_reference(ref(s), w0, grads) for s in ("leaf", "matrix"))
    assert min(rel(m, l) for m, l in zip(matrix, leaf)) > 10 * TOL


# --- 6: Muon, whole matrix and per attention head -------------------------------------------

H, HD, D = 3, 4, 10  # heads, head_dim, model width: q [12, 10], o [10, 12]


@pytest.mark.parametrize("shape", [TALL, WIDE], ids=["tall", "wide"])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_muon_whole_matrix(shape, wd):
  tx = symoptax.muon(LR, method="svd", weight_decay=wd, axes=AXES)
  check(tx, ref_muon(), shape, wd=wd, momentum=nesterov_jordan)


@pytest.mark.parametrize("layout,shape,axes", [
    ("qkv", (H * HD, D), MatrixAxes(rows=1, cols=2, split=((0, HD),))),
    ("o", (D, H * HD), MatrixAxes(rows=0, cols=2, split=((1, HD),))),
], ids=["q", "o"])
def test_muon_heads(layout, shape, axes):
  """PyTorch [out, in] layout: q/k/v heads [hd, d], o heads [d, hd] (shape factor
  sqrt(d / hd) for o, 1 for q where the whole-matrix factor would be sqrt(12 / 10))."""
  tx = symoptax.muon(LR, method="svd", weight_decay=0.1, axes=axes)
  check(tx, ref_muon(layout, HD), shape, wd=0.1, momentum=nesterov_jordan)


def test_muon_heads_flax_layout():
  """A Flax q kernel [d, H*hd] is the PyTorch weight transposed: same update, transposed."""
  w0, grads = sample((H * HD, D))
  want = run_reference(ref_muon("qkv", HD), w0, grads, momentum=nesterov_jordan)
  tx = symoptax.muon(LR, method="svd", axes=MatrixAxes(rows=2, cols=0, split=((1, HD),)))
  got = run_symoptax(tx, w0.T, [g.T for g in grads])
  assert_close([d.T for d in got], want)


def test_per_head_differs_from_whole_matrix():
  """Negative control: the head tests can tell a per-head update from a whole-matrix one."""
  for layout, shape in (("qkv", (H * HD, D)), ("o", (D, H * HD))):
    w0, grads = sample(shape)
    heads = run_reference(ref_muon(layout, HD), w0, grads, momentum=nesterov_jordan)
    whole = run_reference(ref_muon(), w0, grads, momentum=nesterov_jordan)
    assert rel(whole[-1], heads[-1]) > 10 * TOL


# --- 7: optax.contrib.muon's momentum -------------------------------------------------------


def test_muon_optax_momentum():
  tx = symoptax.muon(LR, method="svd", momentum="optax", axes=AXES)
  check(tx, ref_muon(), TALL, momentum=nesterov_optax)


def test_jordan_momentum_differs_from_optax():
  """Negative control: the two momenta agree at step 1 (the polar factor is scale-free) and
  differ from step 2 on."""
  w0, grads = sample(TALL)
  optax_ref = run_reference(ref_muon(), w0, grads, momentum=nesterov_optax)
  jordan = run_symoptax(symoptax.muon(LR, method="svd", axes=AXES), w0, grads)
  assert rel(jordan[0], optax_ref[0]) < TOL
  assert all(rel(j, o) > 10 * TOL for j, o in zip(jordan[1:], optax_ref[1:]))


# --- 8: the shape factor follows fan_out / fan_in -------------------------------------------


@pytest.mark.parametrize("fan_out,factor", [("cols", 1.0), ("rows", (12 / 5)**0.5)])
def test_scale_by_shape_fan_out(fan_out, factor):
  """A [ff, d] = [12, 5] SwiGLU down kernel: rows are the ff neurons but its output is d."""
  x = np.float32(sample((12, 5))[0])
  tx = symoptax.scale_by_shape("muon", axes=MatrixAxes(rows=0, cols=1, fan_out=fan_out))
  got, _ = tx.update({"w": x}, tx.init({"w": x}))
  np.testing.assert_allclose(np.asarray(got["w"]), x * factor, rtol=1e-6)
