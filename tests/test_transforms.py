"""Primitives against their formulas; per-slice behaviour of batched leaves; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import symoptax
from helpers import log_spectrum, normal, with_spectrum
from symoptax import MatrixAxes


def apply(tx, updates, params=None):
  out, _ = tx.update(updates, tx.init(updates if params is None else params), params)
  return out


def test_row_norm_formula():
  g = normal((7, 5), 0).at[3].set(0.0)
  out = apply(symoptax.scale_by_row_norm(), {"w": g})["w"]
  expected = np.asarray(g) / (np.linalg.norm(np.asarray(g), axis=1, keepdims=True) + 1e-8)
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
  assert bool(jnp.all(out[3] == 0))


def test_row_norm_on_flax_dense_layout_normalises_output_units():
  # A Dense kernel [d_in, d_out]: rows are the output units, i.e. columns of the array.
  k = normal((6, 9), 1)
  out = apply(symoptax.scale_by_row_norm(axes=MatrixAxes(rows=1, cols=0)), {"k": k})["k"]
  np.testing.assert_allclose(jnp.linalg.norm(out, axis=0), np.ones(9), rtol=1e-5)


def test_center_rows_sums_to_zero_along_rows():
  g = normal((4, 11, 6), 2)
  out = apply(symoptax.center_rows(axes=MatrixAxes(1, 2)), {"w": g})["w"]
  np.testing.assert_allclose(out.sum(axis=1), np.zeros((4, 6)), atol=1e-5)
  np.testing.assert_allclose(out - g, jnp.broadcast_to(-g.mean(axis=1, keepdims=True), g.shape),
                             atol=1e-6)


@pytest.mark.parametrize("rule,shape,factor", [
    ("muon", (40, 10), 2.0), ("muon", (10, 40), 1.0),
    ("rms", (40, 10), 0.2 * np.sqrt(40)), ("rms", (10, 90), 0.2 * 3 * np.sqrt(10)),
    ("none", (40, 10), 1.0)])
def test_scale_by_shape(rule, shape, factor):
  g = normal(shape, 3)
  out = apply(symoptax.scale_by_shape(rule), {"w": g})["w"]
  np.testing.assert_allclose(out, g * factor, rtol=1e-6)


@pytest.mark.parametrize("method,side,rtol", [("svd", "full", 1e-5), ("qdwh", "full", 1e-5),
                                              ("eigh", "right", 1e-3),
                                              ("polar_express", "right", 0.1)])
def test_nuclear_scaling_is_the_sum_of_singular_values(method, side, rtol):
  g = with_spectrum(30, 12, log_spectrum(12, 10.0) * 3.0, seed=4)
  plain = apply(symoptax.scale_by_polar(method, side=side), {"w": g})["w"]
  scaled = apply(symoptax.scale_by_polar(method, side=side, nuclear_power=1.0), {"w": g})["w"]
  nu = np.linalg.svd(np.asarray(g, np.float64), compute_uv=False).sum()
  ratio = float(jnp.sum(scaled * plain) / jnp.sum(plain * plain))
  assert abs(ratio - nu) / nu < rtol
  half = apply(symoptax.scale_by_polar(method, side=side, nuclear_power=0.5), {"w": g})["w"]
  np.testing.assert_allclose(half * half, plain * scaled, rtol=1e-3, atol=1e-6)


TRANSFORMS = {
    "row_norm": lambda ax: symoptax.scale_by_row_norm(axes=ax),
    "center": lambda ax: symoptax.center_rows(axes=ax),
    "shape": lambda ax: symoptax.scale_by_shape("rms", axes=ax),
    "polar_full": lambda ax: symoptax.scale_by_polar("polar_express", side="full", axes=ax),
    "polar_auto_nu": lambda ax: symoptax.scale_by_polar(nuclear_power=1.0, axes=ax),
    "polar_svd": lambda ax: symoptax.scale_by_polar("svd", axes=ax),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_three_and_four_dim_leaves_equal_per_slice(name):
  make = TRANSFORMS[name]
  g3 = normal((3, 8, 5), 5)      # [L, cols, rows]
  g4 = normal((2, 5, 3, 8), 6)   # [E, rows, L, cols]
  out3 = apply(make({"a": MatrixAxes(rows=2, cols=1)}), {"a": g3})["a"]
  out4 = apply(make({"a": MatrixAxes(rows=1, cols=3)}), {"a": g4})["a"]
  plain = make(None)
  for l in range(3):
    ref = apply(plain, {"a": g3[l].T})["a"].T
    np.testing.assert_allclose(out3[l], ref, atol=1e-5)
  for e in range(2):
    for l in range(3):
      ref = apply(plain, {"a": g4[e, :, l, :]})["a"]
      np.testing.assert_allclose(out4[e, :, l, :], ref, atol=1e-5)


def test_vectors_pass_through_unchanged():
  tree = {"w": normal((4, 3), 7), "b": normal((3,), 8), "s": jnp.float32(2.0)}
  for make in TRANSFORMS.values():
    out = apply(make(None), tree)
    assert out["b"] is tree["b"] and out["s"] is tree["s"]


@pytest.mark.parametrize("build,match", [
    (lambda: symoptax.scale_by_polar("nope"), "Unknown polar method.*'polar_express'"),
    (lambda: symoptax.scale_by_polar("svd", side="right"), "Unknown polar method.*'eigh'"),
    (lambda: symoptax.scale_by_polar(side="up"), "Unknown side 'up'.*'full'"),
    (lambda: symoptax.scale_by_polar("polar_express", steps=4), "5-step coefficient table"),
    (lambda: symoptax.scale_by_shape("adam"), "Unknown shape rule 'adam'.*'muon'"),
    (lambda: symoptax.hybrid_polargrad_m(0.1, order="both"), "Unknown order 'both'"),
    (lambda: symoptax.muon(0.1, shape_rule="x"), "Unknown shape rule 'x'"),
    (lambda: symoptax.muon(0.1, method="eigh"), "Unknown polar method.*'dsv4'"),
])
def test_unknown_names_raise_with_choices(build, match):
  with pytest.raises(ValueError, match=match):
    build()


def test_leaf_errors_name_the_path_at_init_and_update():
  tx = symoptax.rownorm_m(0.1)
  params = {"layers": {"kernel": jnp.ones((2, 3, 4))}}
  with pytest.raises(ValueError, match=r"\['layers'\]\['kernel'\].*3 dims"):
    tx.init(params)
  tx = symoptax.scale_by_polar(axes={"layers": {"kernel": MatrixAxes(0, 5)}})
  with pytest.raises(ValueError, match=r"\['layers'\]\['kernel'\].*axis 5.*out of range"):
    tx.init(params)


def test_works_under_vmap():
  tx = symoptax.scale_by_polar("polar_express", nuclear_power=1.0)
  g = normal((4, 12, 6), 9)
  batched = jax.vmap(lambda x: tx.update({"w": x}, tx.init({"w": x}))[0]["w"])(g)
  per = jnp.stack([apply(tx, {"w": g[i]})["w"] for i in range(4)])
  np.testing.assert_allclose(batched, per, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_same_shape_leaves_are_batched_without_mixing(name):
  # Leaves with equal [rows, cols] (here also after transposition by their axes) go through
  # one batched call; each must still get exactly its own result.
  make = TRANSFORMS[name]
  tree = {"a": normal((8, 5), 10), "b": normal((5, 8), 11) * 100.0,
          "c": normal((3, 8, 5), 12) * 1e-3, "d": normal((6, 4), 13)}
  axes = {"a": MatrixAxes(0, 1), "b": MatrixAxes(1, 0), "c": MatrixAxes(1, 2),
          "d": MatrixAxes(0, 1)}
  together = apply(make(axes), tree)
  for k in tree:
    alone = apply(make({k: axes[k]}), {k: tree[k]})[k]
    np.testing.assert_allclose(together[k], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["row_norm", "center", "col_norm", "shape_rms"])
def test_row_and_column_maps_work_in_the_leafs_own_layout(name):
  # Scanned Flax kernels [L, in, out] with rows = out: the row/column reductions run over the
  # leaf's own axes, with no transpose to [B, rows, cols] and back.
  g = normal((3, 16, 24), 20)
  axes = MatrixAxes(rows=2, cols=1)
  x = np.asarray(g, np.float64)
  tx, want = {
      "row_norm": (symoptax.scale_by_row_norm(axes=axes),
                   x / (np.sqrt((x ** 2).sum(1, keepdims=True)) + 1e-8)),
      "center": (symoptax.center_rows(axes=axes), x - x.mean(2, keepdims=True)),
      "col_norm": (symoptax.scale_by_col_norm(axes=axes),
                   x / (np.sqrt((x ** 2).sum(2, keepdims=True)) + 1e-8)),
      "shape_rms": (symoptax.scale_by_shape("rms", axes=axes), x * 0.2 * np.sqrt(24)),
  }[name]
  np.testing.assert_allclose(apply(tx, {"k": g})["k"], want, rtol=1e-5, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(lambda u: tx.update(u, tx.init(u))[0])({"k": g}))
  assert "transpose" not in jaxpr, jaxpr
