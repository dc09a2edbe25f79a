"""Muon-family variants: each against a direct numpy re-derivation, its symmetry class (with
a negative control), and a smoke training run of the Qwen3-style model."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

import symoptax
from examples.models import qwen3
from examples.models.common import next_token_loss
from helpers import normal
from test_equivariance import equivariance_error

BETA, LR, WD = 0.9, 0.1, 0.5


def polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def run_two_steps(tx, shape, momentum, direction):
  """Compares two updates with -lr (direction(M_t, state) + wd W)."""
  w = np.asarray(normal(shape, 0), np.float64)
  state = tx.init({"w": w.astype(np.float32)})
  ref_state, m = {}, None
  for s in (1, 2):
    g = np.asarray(normal(shape, s), np.float64)
    m = momentum(m, g)
    u, state = tx.update({"w": g.astype(np.float32)}, state, {"w": w.astype(np.float32)})
    expected = -LR * (direction(m, ref_state) + WD * w)
    np.testing.assert_allclose(u["w"], expected, rtol=2e-4, atol=2e-5)


def nesterov(buf_holder):
  def step(m, g):
    buf_holder["b"] = BETA * buf_holder.get("b", 0.0) + g
    return g + BETA * buf_holder["b"]
  return step


@pytest.mark.parametrize("mode", ["R", "C", "RC"])
def test_muoneq_formula(mode):
  shape = (12, 5)
  rown = lambda x: x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
  coln = lambda x: x / (np.linalg.norm(x, axis=0, keepdims=True) + 1e-8)
  eq = {"R": rown, "C": coln, "RC": lambda x: coln(rown(x))}[mode]
  tx = symoptax.muoneq(LR, mode=mode, beta=BETA, weight_decay=WD, method="svd")
  run_two_steps(tx, shape, nesterov({}), lambda m, _: np.sqrt(12 / 5) * polar(eq(m)))


def test_normuon_formula():
  shape, b2, eps = (12, 5), 0.8, 1e-8

  def direction(m, st):
    o = polar(m)
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * np.mean(o ** 2, axis=1)
    hat = o / (np.sqrt(st["v"])[:, None] + eps)
    return np.sqrt(12 / 5) * hat * np.linalg.norm(o) / np.linalg.norm(hat)

  tx = symoptax.normuon(LR, beta=BETA, b2=b2, weight_decay=WD, method="svd")
  run_two_steps(tx, shape, nesterov({}), direction)


@pytest.mark.parametrize("bound", [0.05, 0.3, 10.0])
def test_spectral_clip_formula(bound):
  def direction(m, _):
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    return (u * np.minimum(s, bound)) @ vt

  tx = symoptax.spectral_clip(LR, bound=bound, beta=BETA, weight_decay=WD, method="svd")
  run_two_steps(tx, (12, 5), lambda m, g: BETA * (0 if m is None else m) + (1 - BETA) * g,
                direction)


@pytest.mark.parametrize("bound", [2.0, 6.0])
def test_spectral_clip_default_oracle_is_close_and_bounded(bound):
  g = normal((64, 16), 3)  # singular values 4.5 .. 11.2
  tx = symoptax.scale_by_spectral_clip(bound)
  out = np.asarray(tx.update({"w": g}, tx.init(None))[0]["w"], np.float64)
  s_in = np.linalg.svd(np.asarray(g, np.float64), compute_uv=False)
  s_out = np.linalg.svd(out, compute_uv=False)
  assert s_out.max() <= bound * 1.01
  np.testing.assert_allclose(s_out, np.minimum(s_in, bound), rtol=1e-2)


def test_namo_formula():
  shape, b1, b2, eps = (12, 5), 0.9, 0.99, 1e-8
  w = np.asarray(normal(shape, 0), np.float64)
  tx = symoptax.namo(LR, b1=b1, b2=b2, weight_decay=WD, method="svd")
  state = tx.init({"w": w.astype(np.float32)})
  m, v = np.zeros(shape), 0.0
  for t in (1, 2):
    g = np.asarray(normal(shape, t), np.float64)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * np.sum(g ** 2)
    alpha = np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * np.linalg.norm(m) / (np.sqrt(v) + eps)
    u, state = tx.update({"w": g.astype(np.float32)}, state, {"w": w.astype(np.float32)})
    np.testing.assert_allclose(u["w"], -LR * alpha * (polar(m) + WD * w), rtol=2e-4,
                               atol=2e-5)


CLASSES = {
    "namo": (lambda: symoptax.namo(LR, weight_decay=WD), ("biorth",), None),
    # name: (optimizer, groups it must respect, a group it must fail)
    "normuon": (lambda: symoptax.normuon(LR), ("lpro",), "biorth"),
    "muoneq_R": (lambda: symoptax.muoneq(LR, mode="R"), ("lpro",), "biorth"),
    "muoneq_C": (lambda: symoptax.muoneq(LR, mode="C"), ("rplo",), "lpro"),
    "muoneq_RC": (lambda: symoptax.muoneq(LR, mode="RC"), ("perm",), "lpro"),
    "spectral_clip": (lambda: symoptax.spectral_clip(LR, bound=0.5), ("biorth",), None),
    "scale_by_col_norm": (lambda: symoptax.scale_by_col_norm(), ("rplo",), "biorth"),
}


@pytest.mark.parametrize("name", sorted(CLASSES))
@pytest.mark.parametrize("shape", [(24, 10), (10, 24)])
def test_symmetry_class_and_negative_control(name, shape):
  make, groups, fails = CLASSES[name]
  for group in groups:
    assert equivariance_error(make(), group, shape) < 1e-4, group
  if fails is not None:
    assert equivariance_error(make(), fails, shape) > 1e-2


def test_muoneq_r_is_the_hybrid_map_on_nesterov_momentum():
  # Same row-then-polar map as hybrid_polargrad_m (no nu, no centring), up to the shape factor.
  g = normal((24, 10), 4)
  eq = symoptax.muoneq(1.0, nesterov=False, beta=0.0, shape_rule="none", method="svd")
  hyb = symoptax.hybrid_polargrad_m(1.0, beta=0.0, nuclear_power=0.0, method="eigh")
  a = eq.update({"w": g}, eq.init({"w": g}))[0]["w"]
  b = hyb.update({"w": g}, hyb.init({"w": g}))[0]["w"]
  np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("rule", ["normuon", "muoneq", "spectral_clip", "namo"])
def test_variant_trains_the_qwen3_model(rule):
  graphdef, params, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  loss = lambda p, t: next_token_loss(nnx.merge(graphdef, p, rest), t)
  hidden = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")
  tx = symoptax.symmetry_stack(0.02, preset="muon", overrides={r: rule for r in hidden})
  rows = symoptax.describe(params, overrides={r: rule for r in hidden}).rows
  assert {r["rule"] for r in rows if r["role"] in hidden} == {rule}
  tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 256)

  @jax.jit
  def step(p, s):
    l, g = jax.value_and_grad(loss)(p, tokens)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l

  state = tx.init(params)
  losses = []
  for _ in range(8):
    params, state, l = step(params, state)
    losses.append(float(l))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
