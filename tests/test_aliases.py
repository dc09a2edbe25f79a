"""Named optimizers against a direct numpy re-derivation of their update (two steps)."""

import numpy as np
import pytest

import symoptax
from helpers import normal

BETA, LR, WD = 0.9, 0.1, 0.5


def C(x):
  return x - x.mean(axis=0, keepdims=True)


def R(x):
  return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)


def polar(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def nu_polar(x, alpha=1.0):
  u = polar(x)
  return np.sum(x * u) ** alpha * u


REFERENCES = {
    # name: (optimizer, update as a function of the momentum M, shape)
    "rownorm_m": (symoptax.rownorm_m(LR, beta=BETA, weight_decay=WD),
                  lambda m: R(m), (12, 5)),
    "rownorm_m_centred": (symoptax.rownorm_m(LR, beta=BETA, weight_decay=WD, center=True),
                          lambda m: C(R(C(m))), (12, 5)),
    "right_polargrad_m": (symoptax.right_polargrad_m(LR, beta=BETA, weight_decay=WD,
                                                     method="eigh"),
                          lambda m: nu_polar(m), (12, 5)),
    "right_polargrad_m_centred_half": (
        symoptax.right_polargrad_m(LR, beta=BETA, weight_decay=WD, method="eigh", center=True,
                                   nuclear_power=0.5),
        lambda m: C(nu_polar(C(m), 0.5)), (12, 5)),
    "left_polargrad_m_centred": (
        symoptax.left_polargrad_m(LR, beta=BETA, weight_decay=WD, method="eigh", center=True),
        lambda m: C(nu_polar(C(m))), (5, 12)),
    "hybrid_row_then_polar_centred": (
        symoptax.hybrid_polargrad_m(LR, beta=BETA, weight_decay=WD, method="eigh", center=True),
        lambda m: C(nu_polar(C(R(C(m))))), (12, 5)),
    "hybrid_polar_then_row_centred": (
        symoptax.hybrid_polargrad_m(LR, beta=BETA, weight_decay=WD, method="eigh", center=True,
                                    order="polar_then_row"),
        lambda m: C(R(polar(C(m)))), (12, 5)),
    "polargrad": (symoptax.polargrad(LR, beta=BETA, weight_decay=WD, method="svd"),
                  lambda m: nu_polar(m), (5, 12)),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_ema_rules_match_their_formula(name):
  tx, f, shape = REFERENCES[name]
  w = np.asarray(normal(shape, 0), np.float64)
  g1, g2 = (np.asarray(normal(shape, s), np.float64) for s in (1, 2))
  state = tx.init({"w": w.astype(np.float32)})
  m = np.zeros(shape)
  for g in (g1, g2):
    m = BETA * m + (1 - BETA) * g  # EMA, no bias correction
    u, state = tx.update({"w": g.astype(np.float32)}, state, {"w": w.astype(np.float32)})
    expected = -LR * (f(m) + WD * w)  # decoupled weight decay, never centred
    np.testing.assert_allclose(u["w"], expected, rtol=2e-3, atol=2e-4 * np.abs(expected).max())


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("shape,factor", [((12, 5), np.sqrt(12 / 5)), ((5, 12), 1.0)])
def test_muon_matches_its_formula(nesterov, shape, factor):
  tx = symoptax.muon(LR, beta=BETA, nesterov=nesterov, weight_decay=WD, method="svd")
  w = np.asarray(normal(shape, 0), np.float64)
  state = tx.init({"w": w.astype(np.float32)})
  buf = np.zeros(shape)
  for s in (1, 2):
    g = np.asarray(normal(shape, s), np.float64)
    buf = BETA * buf + g
    m = g + BETA * buf if nesterov else buf
    u, state = tx.update({"w": g.astype(np.float32)}, state, {"w": w.astype(np.float32)})
    np.testing.assert_allclose(u["w"], -LR * (factor * polar(m) + WD * w), rtol=1e-4, atol=1e-5)


def test_centred_rule_with_weight_decay_does_not_centre_the_decay():
  tx = symoptax.rownorm_m(LR, weight_decay=WD, center=True)
  w = np.asarray(normal((12, 5), 0)) + 3.0
  u, _ = tx.update({"w": normal((12, 5), 1)}, tx.init({"w": w}), {"w": w})
  np.testing.assert_allclose(np.asarray(u["w"]).sum(axis=0), -LR * WD * w.sum(axis=0),
                             rtol=1e-4)


EMPTY_RULES = ("muon", "rownorm_m", "right_polargrad_m", "left_polargrad_m",
               "hybrid_polargrad_m", "polargrad", "normuon", "muoneq", "spectral_clip", "namo",
               "namo_d", "aurora", "pion", "rmnp", "muon_pp", "auon", "hybrid_auon",
               "hyperp", "muonq", "conda", "fismo", "cosmos")


@pytest.mark.parametrize("name", EMPTY_RULES)
def test_empty_leaves_pass_through_and_leave_the_others_alone(name):
  """A leaf with no entries ((0, 8), experts [3, 0, 5], (6, 0)) gets an empty update, and
  the other leaves the same update as without it."""
  import jax
  A = symoptax.MatrixAxes
  params = {"w": np.zeros((0, 8), np.float32), "v": np.ones((4, 8), np.float32),
            "e": np.zeros((3, 0, 5), np.float32), "z": np.zeros((6, 0), np.float32)}
  axes = {"w": A(0, 1), "v": A(0, 1), "e": A(1, 2), "z": A(0, 1)}
  grads = {k: np.asarray(normal(x.shape, 1), np.float32) for k, x in params.items()}
  tx = getattr(symoptax, name)(0.02, axes=axes)
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  alone = getattr(symoptax, name)(0.02, axes={"v": A(0, 1)})
  want, _ = jax.jit(alone.update)({"v": grads["v"]}, alone.init({"v": params["v"]}),
                                  {"v": params["v"]})
  assert {k: u[k].shape for k in params} == {k: x.shape for k, x in params.items()}
  np.testing.assert_allclose(u["v"], want["v"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("preset", sorted(symoptax.PRESETS))
def test_the_stack_takes_empty_leaves(preset):
  import jax
  params = {"embed_tokens": {"embedding": np.ones((16, 8), np.float32)},
            "mlp": {"up_proj": {"kernel": np.zeros((8, 0), np.float32)}},
            "lm_head": {"kernel": np.ones((8, 16), np.float32)}}
  grads = {"embed_tokens": {"embedding": np.asarray(normal((16, 8), 2), np.float32)},
           "mlp": {"up_proj": {"kernel": np.zeros((8, 0), np.float32)}},
           "lm_head": {"kernel": np.asarray(normal((8, 16), 3), np.float32)}}
  tx = symoptax.symmetry_stack(0.02, preset=preset, params=params)
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert u["mlp"]["up_proj"]["kernel"].shape == (8, 0)
  assert np.isfinite(u["lm_head"]["kernel"]).all() and np.abs(u["lm_head"]["kernel"]).max() > 0


def _momentum_dtypes(state, params):
  """Dtypes of the state leaves shaped like a parameter matrix (the momentum)."""
  import jax
  shapes = {x.shape for x in jax.tree_util.tree_leaves(params) if x.ndim == 2}
  return {str(x.dtype) for x in jax.tree_util.tree_leaves(state)
          if getattr(x, "shape", None) in shapes}


# MuonQ keeps its matrices' momentum as packed 4-bit codes; its mu_dtype (the vectors' momentum
# and the low-rank factors) is tested in test_variants_muonq.py, Conda's (whose fp32 second
# moment is parameter-shaped too) in test_variants_conda.py, COSMOS's (whose [rows, rank]
# second moment can have a matrix's shape) in test_variants_cosmos.py.
@pytest.mark.parametrize("name", [n for n in EMPTY_RULES if n not in ("muonq", "conda",
                                                                      "cosmos")])
def test_mu_dtype_sets_the_momentum_dtype_as_optax_does(name):
  """bf16 parameters: the momentum is bf16 by default (as optax) and fp32 with
  mu_dtype=float32; the update is finite and in the gradients' shapes either way."""
  import jax
  import jax.numpy as jnp
  params = {"w": jnp.asarray(normal((12, 8), 0), jnp.bfloat16),
            "b": jnp.ones(8, jnp.bfloat16)}
  grads = jax.tree_util.tree_map(lambda x: x * 0.5, params)
  for mu_dtype, want in [(None, {"bfloat16"}), (jnp.float32, {"float32"})]:
    tx = getattr(symoptax, name)(0.02, mu_dtype=mu_dtype)
    state = tx.init(params)
    assert _momentum_dtypes(state, params) == want, (name, mu_dtype)
    u, state = jax.jit(tx.update)(grads, state, params)
    assert _momentum_dtypes(state, params) == want, (name, mu_dtype)
    assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
               for x in jax.tree_util.tree_leaves(u))


def test_the_stack_passes_mu_dtype_to_every_rule_and_to_adamw():
  import jax
  import jax.numpy as jnp
  params = {"embed_tokens": {"embedding": jnp.ones((32, 8), jnp.bfloat16)},
            "mlp": {"up_proj": {"kernel": jnp.ones((8, 16), jnp.bfloat16)}},
            "lm_head": {"kernel": jnp.ones((8, 32), jnp.bfloat16)},
            "norm": {"scale": jnp.ones(8, jnp.bfloat16)}}
  for preset in symoptax.PRESETS:
    state = symoptax.symmetry_stack(0.02, preset=preset, params=params,
                                    mu_dtype=jnp.float32).init(params)
    shapes = {x.shape for x in jax.tree_util.tree_leaves(params)}
    moments = [x for x in jax.tree_util.tree_leaves(state) if getattr(x, "shape", 0) in shapes]
    # One first moment per parameter, each fp32 (AdamW's second moments stay bf16).
    assert sum(x.dtype == jnp.float32 for x in moments) == 4, preset
    # AdamW's second moment keeps the parameters' dtype (optax's mu_dtype is the first's).
    default = symoptax.symmetry_stack(0.02, preset=preset, params=params).init(params)
    assert {str(x.dtype) for x in jax.tree_util.tree_leaves(default)
            if getattr(x, "shape", 0) in shapes} == {"bfloat16"}, preset
