"""MatrixAxes resolution and the exact [B, rows, cols] round trip."""

import jax.numpy as jnp
import numpy as np
import pytest
from optax.contrib import MuonDimensionNumbers

from symoptax.axes import (MatrixAxes, from_batched, layout, matrix_mask, resolve_axes,
                           to_batched)


@pytest.mark.parametrize("shape,axes,batched", [
    ((6, 4), MatrixAxes(0, 1), (1, 6, 4)),
    ((6, 4), MatrixAxes(1, 0), (1, 4, 6)),
    ((3, 6, 4), MatrixAxes(-1, 1), (3, 4, 6)),
    ((2, 3, 4, 5), MatrixAxes((3, 0), -2), (3, 10, 4)),
    ((2, 3, 4, 5), MatrixAxes(1, (2, 3)), (2, 3, 20)),
    ((5, 2, 7), MatrixAxes(2, 0), (2, 7, 5)),
])
def test_round_trip_is_exact(shape, axes, batched):
  x = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
  lay = layout(shape, axes)
  y = to_batched(x, lay)
  assert y.shape == batched
  assert bool(jnp.all(from_batched(y, lay) == x))


def test_batched_slices_are_the_named_matrices():
  x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  y = to_batched(x, layout(x.shape, MatrixAxes(rows=2, cols=1)))
  for b in range(2):
    np.testing.assert_array_equal(y[b], x[b].T)


def test_default_axes():
  tree = {"w": jnp.ones((3, 4)), "b": jnp.ones(4), "s": jnp.ones(())}
  assert resolve_axes(None, tree) == {"w": MatrixAxes(0, 1), "b": None, "s": None}


def test_more_than_two_dims_without_axes_names_the_path():
  with pytest.raises(ValueError, match=r"\['layers'\]\['kernel'\].*MatrixAxes"):
    resolve_axes(None, {"layers": {"kernel": jnp.ones((2, 3, 4))}})


def test_muon_dimension_numbers_are_read_in_flax_layout():
  tree = {"k": jnp.ones((8, 3, 5))}
  spec = {"k": MuonDimensionNumbers(reduction_axis=1, output_axis=2)}
  assert resolve_axes(spec, tree) == {"k": MatrixAxes(rows=2, cols=1)}


def test_single_prefix_and_callable_forms():
  tree = {"a": jnp.ones((3, 4)), "blk": {"k": jnp.ones((2, 3, 4)), "b": jnp.ones(3)}}
  single = resolve_axes(MatrixAxes(-2, -1), tree)
  assert single == {"a": MatrixAxes(-2, -1), "blk": {"k": MatrixAxes(-2, -1), "b": None}}
  prefix = resolve_axes({"a": None, "blk": {"k": MatrixAxes(2, 1), "b": None}}, tree)
  assert prefix == {"a": None, "blk": {"k": MatrixAxes(2, 1), "b": None}}
  called = resolve_axes(lambda p: {"a": MatrixAxes(1, 0), "blk": None}, tree)
  assert called == {"a": MatrixAxes(1, 0), "blk": {"k": None, "b": None}}
  assert matrix_mask(lambda p: {"a": MatrixAxes(1, 0), "blk": None})(tree) == {
      "a": True, "blk": {"k": False, "b": False}}


@pytest.mark.parametrize("axes,match", [
    (MatrixAxes(3, 0), r"\['k'\].*axis 3.*out of range"),
    (MatrixAxes(1, 1), r"\['k'\].*same axis twice"),
    (MatrixAxes((), 1), r"\['k'\].*at least one rows axis"),
])
def test_bad_axes_raise_with_path(axes, match):
  with pytest.raises(ValueError, match=match):
    resolve_axes({"k": axes}, {"k": jnp.ones((2, 3, 4))})


def test_axes_for_a_vector_leaf_and_mismatched_tree_raise():
  with pytest.raises(ValueError, match=r"\['b'\].*needs >= 2 dims"):
    resolve_axes({"b": MatrixAxes(0, 1)}, {"b": jnp.ones(3)})
  with pytest.raises(ValueError, match="prefix"):
    resolve_axes({"x": MatrixAxes(0, 1)}, {"a": jnp.ones((2, 2)), "b": jnp.ones((2, 2))})
