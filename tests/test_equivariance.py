"""Equivariance, the library's central promise: f(P G Q) = P f(G) Q for the rule's group.

Each optimizer runs three steps on transformed parameters and gradients and must return the
transformed updates. Negative controls in the same harness show the check can fail: AdamW is
not orthogonally equivariant and row normalisation is not left-orthogonally equivariant.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import normal, orthogonal, permutation

TALL, WIDE = (24, 10), (10, 24)


def group_elements(group, shape, seed):
  """biorth: U, V orthogonal; lpro: row permutation, right orthogonal; rplo: left
  orthogonal, column permutation; perm: permutations on both sides; left: left orthogonal,
  nothing on the right."""
  m, n = shape
  if group == "left":
    return orthogonal(m, seed), np.eye(n, dtype=np.float32)
  left = orthogonal(m, seed) if group in ("biorth", "rplo") else permutation(m, seed)
  right = permutation(n, seed + 100) if group in ("rplo", "perm") else orthogonal(n, seed + 100)
  return left, right


def equivariance_error(tx, group, shape, seed=0, steps=3):
  """Max over steps of ||f(P G Q) - P f(G) Q|| / ||f(G)||."""
  left, right = group_elements(group, shape, seed)
  w = normal(shape, seed + 1)
  grads = [normal(shape, seed + 2 + t) for t in range(steps)]
  s1, s2 = tx.init({"w": w}), tx.init({"w": left @ w @ right})
  worst = 0.0
  for g in grads:
    u1, s1 = tx.update({"w": g}, s1, {"w": w})
    u2, s2 = tx.update({"w": left @ g @ right}, s2, {"w": left @ w @ right})
    expected = left @ u1["w"] @ right
    worst = max(worst, float(jnp.linalg.norm(u2["w"] - expected) / jnp.linalg.norm(expected)))
  return worst


BI_ORTHOGONAL = {
    **{f"polar_full_{m}": (lambda m=m: symoptax.scale_by_polar(m, side="full"), (TALL, WIDE))
       for m in ("polar_express", "muon_ns", "dsv4", "qdwh", "svd", "randomized")},
    # randomized at its default rank: exact; layer_aware's equivariance: test_polar_oracles
    **{f"polar_right_{m}": (lambda m=m: symoptax.scale_by_polar(m, side="right",
                                                                 nuclear_power=1.0), (TALL,))
       for m in ("polar_express", "newton_schulz", "eigh")},
    **{f"polar_left_{m}": (lambda m=m: symoptax.scale_by_polar(m, side="left"), (WIDE,))
       for m in ("polar_express", "newton_schulz", "eigh")},
    "scale_by_shape": (lambda: symoptax.scale_by_shape("muon"), (TALL, WIDE)),
    "muon": (lambda: symoptax.muon(0.1, weight_decay=0.1), (TALL, WIDE)),
    "muon_rms_dsv4": (lambda: symoptax.muon(0.1, method="dsv4", shape_rule="rms"), (TALL,)),
    "polargrad": (lambda: symoptax.polargrad(0.1, weight_decay=0.1), (TALL, WIDE)),
    "polargrad_qdwh": (lambda: symoptax.polargrad(0.1, method="qdwh"), (TALL,)),
    "right_polargrad_m": (lambda: symoptax.right_polargrad_m(0.1, weight_decay=0.1), (TALL,)),
    "left_polargrad_m": (lambda: symoptax.left_polargrad_m(0.1), (WIDE,)),
}

LPRO = {
    "scale_by_row_norm": (lambda: symoptax.scale_by_row_norm(), (TALL, WIDE)),
    "center_rows": (lambda: symoptax.center_rows(), (TALL, WIDE)),
    "rownorm_m": (lambda: symoptax.rownorm_m(0.1, weight_decay=0.1), (TALL, WIDE)),
    "rownorm_m_centred": (lambda: symoptax.rownorm_m(0.1, center=True), (TALL, WIDE)),
    "right_polargrad_m_centred": (
        lambda: symoptax.right_polargrad_m(0.1, center=True), (TALL,)),
    "left_polargrad_m_centred": (lambda: symoptax.left_polargrad_m(0.1, center=True), (WIDE,)),
    "hybrid_row_then_polar": (lambda: symoptax.hybrid_polargrad_m(0.1), (TALL, WIDE)),
    "hybrid_row_then_polar_centred": (
        lambda: symoptax.hybrid_polargrad_m(0.1, center=True, weight_decay=0.1), (TALL, WIDE)),
    "hybrid_polar_then_row_centred": (
        lambda: symoptax.hybrid_polargrad_m(0.1, center=True, order="polar_then_row"),
        (TALL, WIDE)),
    "hybrid_eigh": (lambda: symoptax.hybrid_polargrad_m(0.1, method="eigh"), (TALL,)),
    "polargrad_centred": (lambda: symoptax.polargrad(0.1, center=True), (TALL,)),
}

TOL = 1e-4


def cases(table):
  return [(name, shape) for name, (_, shapes) in sorted(table.items()) for shape in shapes]


@pytest.mark.parametrize("name,shape", cases(BI_ORTHOGONAL))
def test_bi_orthogonal_equivariance(name, shape):
  make = BI_ORTHOGONAL[name][0]
  for seed in (0, 1):
    assert equivariance_error(make(), "biorth", shape, seed) < TOL


@pytest.mark.parametrize("name,shape", cases(BI_ORTHOGONAL) + cases(LPRO))
def test_lpro_equivariance(name, shape):
  make = {**BI_ORTHOGONAL, **LPRO}[name][0]
  for seed in (0, 1):
    assert equivariance_error(make(), "lpro", shape, seed) < TOL


@pytest.mark.parametrize("shape", [TALL, WIDE])
def test_negative_control_adamw_is_not_orthogonally_equivariant(shape):
  # AdamW passes the permutation part (coordinate-wise) ...
  adamw = lambda: optax.adamw(0.1, weight_decay=0.1)
  left = permutation(shape[0], 3)
  right = permutation(shape[1], 4)
  w, g = normal(shape, 5), normal(shape, 6)
  tx = adamw()
  u1, _ = tx.update({"w": g}, tx.init({"w": w}), {"w": w})
  u2, _ = tx.update({"w": left @ g @ right}, tx.init({"w": left @ w @ right}),
                    {"w": left @ w @ right})
  np.testing.assert_allclose(u2["w"], left @ u1["w"] @ right, atol=1e-6)
  # ... and fails the orthogonal one by a wide margin.
  assert equivariance_error(adamw(), "lpro", shape) > 100 * TOL


@pytest.mark.parametrize("name", ["scale_by_row_norm", "rownorm_m_centred",
                                  "hybrid_row_then_polar"])
def test_negative_control_row_rules_are_not_left_orthogonally_equivariant(name):
  assert equivariance_error(LPRO[name][0](), "biorth", TALL) > 100 * TOL


def test_centred_updates_never_move_the_mean_row():
  # Softmax shift: the update has no component along W -> W + 1 v^T.
  for tx in (symoptax.rownorm_m(0.1, center=True), symoptax.right_polargrad_m(0.1, center=True),
             symoptax.left_polargrad_m(0.1, center=True),
             symoptax.hybrid_polargrad_m(0.1, center=True),
             symoptax.hybrid_polargrad_m(0.1, center=True, order="polar_then_row")):
    w = normal(TALL, 0)
    state = tx.init({"w": w})
    for t in range(3):
      u, state = tx.update({"w": normal(TALL, t + 1) + 5.0}, state, {"w": w})
      np.testing.assert_allclose(u["w"].sum(axis=0), np.zeros(TALL[1]), atol=1e-5)


def test_low_rank_randomized_polar_is_left_orthogonal_only():
  """A rank-limited sketch lives in a fixed basis of the columns: left rotations commute with
  it, right ones (and column permutations) do not."""
  tx = lambda: symoptax.scale_by_polar("randomized", side="full",
                                       method_options={"rank": 3, "oversampling": 1})
  assert equivariance_error(tx(), "left", TALL) < 1e-4
  for group in ("biorth", "lpro", "rplo"):
    assert equivariance_error(tx(), group, TALL) > 1e-2, group
