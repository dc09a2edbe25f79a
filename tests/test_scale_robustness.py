"""Every named rule at gradient scales 1e-30 .. 1e30 (float32): the update is finite, scale
invariance holds where the docstrings say so, and spectral_clip stays within its bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import symoptax
from helpers import normal
from test_aliases import EMPTY_RULES

LR, BETA, BOUND = 0.1, 0.95, 1.0
EXPONENTS = (-30, -20, -10, 0, 10, 20, 30)
RTOL = 1e-3  # of the largest entry; the default oracles meet it with ~100x to spare
SHAPES = {"tall": (24, 16), "wide": (16, 24)}

# How a rule's one-step update u(k), for the gradient G 10^k, relates to u(0):
INVARIANT = "u(k) = u(0) at every scale"
EPS_BOUND = "u(k) = u(0) where the norms are far above an absolute eps (k >= 0)"
HOMOGENEOUS = "u(k) = 10^k u(0): the nu-scaled polar step grows with the gradient"
CLIPPED = "10^k (1-beta) G below the bound, bound * polar(G) far above it"
# FISMO's damping is absolute: far below it the factors stay at the identity and the step is
# Muon's; far above it they are the data's (singular for a tall matrix's rows, up to the
# eigenvalue floor), and only finiteness is claimed.
DAMPED = "u(k) = Muon's update (no Nesterov) where the damping dwarfs the data (k <= -10)"
RULES = {
    "muon": INVARIANT, "normuon": INVARIANT, "aurora": INVARIANT, "pion": INVARIANT,
    "rownorm_m": EPS_BOUND, "rmnp": EPS_BOUND, "hybrid_polargrad_m": EPS_BOUND,
    "muoneq": EPS_BOUND, "namo": EPS_BOUND, "namo_d": EPS_BOUND,
    "polargrad": HOMOGENEOUS, "right_polargrad_m": HOMOGENEOUS,
    "left_polargrad_m": HOMOGENEOUS, "spectral_clip": CLIPPED,
    "muon_pp": INVARIANT, "auon": INVARIANT, "hybrid_auon": INVARIANT, "hyperp": INVARIANT,
    "muonq": INVARIANT, "conda": EPS_BOUND, "fismo": DAMPED, "cosmos": EPS_BOUND,
}


# Keywords a rule needs on these small matrices: COSMOS's default rank (64) would cover every
# column, where the Adam and Muon parts see round-off directions (see its docstring).
KWARGS = {"cosmos": {"rank": 4}}


def test_every_named_rule_is_covered():
  assert set(RULES) == set(EMPTY_RULES)


def polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def assert_close(got, want, what):
  err = np.max(np.abs(got - want)) / np.max(np.abs(want))
  assert err <= RTOL, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("name", sorted(RULES))
def test_one_step_at_every_gradient_scale(name):
  params = {k: jnp.zeros(s, jnp.float32) for k, s in SHAPES.items()}
  grads = {k: normal(s, i + 1) for i, (k, s) in enumerate(SHAPES.items())}
  tx = getattr(symoptax, name)(LR, **KWARGS.get(name, {}))
  state = tx.init(params)
  # One compilation per rule: the scale is an argument, not a constant.
  step = jax.jit(lambda scale: tx.update(jax.tree.map(lambda g: g * scale, grads), state,
                                         params)[0])
  ups = {k: {leaf: np.asarray(u, np.float64) for leaf, u in step(jnp.float32(10.0 ** k)).items()}
         for k in EXPONENTS}
  kind = RULES[name]
  for k, up in ups.items():
    for leaf, u in up.items():
      what = f"{name} {leaf} at 1e{k}"
      assert np.all(np.isfinite(u)), what
      g = np.asarray(grads[leaf], np.float64)
      if kind == INVARIANT or (kind == EPS_BOUND and k >= 0):
        assert_close(u, ups[0][leaf], what)
      elif kind == DAMPED and k <= -10:
        muon = symoptax.muon(LR, nesterov=False)
        assert_close(u, np.asarray(muon.update(grads, muon.init(params), params)[0][leaf]), what)
      elif kind == HOMOGENEOUS:
        assert_close(u / 10.0 ** k, ups[0][leaf], what)
      elif kind == CLIPPED:
        assert np.linalg.norm(u, 2) <= LR * BOUND * 1.01, what
        if k <= -10:  # every singular value of M = (1 - beta) G 10^k is far below the bound
          assert_close(u / 10.0 ** k, -LR * (1 - BETA) * g, what)
        elif k >= 10:  # ... far above it
          assert_close(u, -LR * BOUND * polar(g), what)


# The primitives that keep statistics or normalise, on their own (two steps: the statistics
# of the first enter the second): finite everywhere; where the norms are far above eps,
# homogeneous of degree 0 (the normalisations) or 1 (NorMuon's row statistics keep the input's
# Frobenius norm).
STATEFUL_PRIMITIVES = {
    "scale_by_row_second_moment": (lambda: symoptax.scale_by_row_second_moment(0.9), 1),
    "scale_by_col_norm": (lambda: symoptax.scale_by_col_norm(), 0),
    "scale_by_row_norm": (lambda: symoptax.scale_by_row_norm(), 0),
}


@pytest.mark.parametrize("name", sorted(STATEFUL_PRIMITIVES))
def test_primitives_at_every_gradient_scale(name):
  make, degree = STATEFUL_PRIMITIVES[name]
  tx = make()
  grads = [{"w": normal(SHAPES["tall"], 10 + t)} for t in range(2)]

  @jax.jit
  def two_steps(scale):
    state = tx.init(grads[0])
    for g in grads:
      u, state = tx.update(jax.tree.map(lambda x: x * scale, g), state)
    return u["w"]

  ups = {k: np.asarray(two_steps(jnp.float32(10.0 ** k)), np.float64) for k in EXPONENTS}
  for k, u in ups.items():
    assert np.all(np.isfinite(u)), f"{name} at 1e{k}"
    if k >= 0:
      assert_close(u / 10.0 ** (degree * k), ups[0], f"{name} at 1e{k}")
