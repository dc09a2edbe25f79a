"""The optax harness: every primitive and named optimizer through the same battery."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import symoptax
from helpers import normal
from symoptax import MatrixAxes

AXES = {"w": MatrixAxes(0, 1), "stack": MatrixAxes(rows=2, cols=1), "b": None}

# name -> (factory, keyword arguments, the numeric hyperparameter injected by the
# inject_hyperparams check)
PRIMITIVES = {
    "scale_by_row_norm": (symoptax.scale_by_row_norm, {"eps": 1e-8}, ("eps", 0.5)),
    "center_rows": (symoptax.center_rows, {}, None),
    "scale_by_shape": (symoptax.scale_by_shape, {"rule": "rms", "rms": 0.2}, ("rms", 0.3)),
    "scale_by_polar": (symoptax.scale_by_polar, {"nuclear_power": 1.0},
                       ("nuclear_power", 0.25)),
    "scale_by_col_norm": (symoptax.scale_by_col_norm, {"eps": 1e-8}, ("eps", 0.5)),
    "scale_by_spectral_clip": (symoptax.scale_by_spectral_clip, {"bound": 1.0},
                               ("bound", 0.5)),
    "scale_by_row_second_moment": (symoptax.scale_by_row_second_moment, {"b2": 0.95},
                                   ("b2", 0.5)),
    "scale_by_namo": (symoptax.scale_by_namo, {"b2": 0.99, "weight_decay": 0.1},
                      ("weight_decay", 0.5)),
    "scale_by_leverage_polar": (symoptax.scale_by_leverage_polar, {"row_power": 0.5},
                                ("row_power", 0.25)),
    "scale_by_high_pass_polar": (symoptax.scale_by_high_pass_polar, {"threshold": 0.7},
                                 ("strength", 0.5)),
    "scale_by_namo_d": (symoptax.scale_by_namo_d, {"clamp": 0.5, "weight_decay": 0.1},
                        ("clamp", 0.8)),
    "scale_by_auon": (symoptax.scale_by_auon, {"gamma": 1.5}, ("gamma", 3.0)),
    # radius 1: the weight clip is active on the harness's parameters
    "clip_weight_spectral_norm": (symoptax.clip_weight_spectral_norm, {"radius": 1.0},
                                  ("radius", 0.5)),
    "scale_by_polar_full_qdwh": (symoptax.scale_by_polar,
                                 {"method": "qdwh", "side": "full", "nuclear_power": 0.5},
                                 ("nuclear_power", 2.0)),
}
# name -> (factory, keyword arguments)
ALIASES = {
    "rownorm_m": (symoptax.rownorm_m, {"weight_decay": 0.01, "center": True}),
    "right_polargrad_m": (symoptax.right_polargrad_m, {"weight_decay": 0.01}),
    "left_polargrad_m": (symoptax.left_polargrad_m, {"center": True}),
    "hybrid_polargrad_m": (symoptax.hybrid_polargrad_m, {"center": True}),
    "hybrid_polargrad_m_polar_then_row": (symoptax.hybrid_polargrad_m,
                                          {"order": "polar_then_row"}),
    "polargrad": (symoptax.polargrad, {"weight_decay": 0.01}),
    "muon": (symoptax.muon, {"weight_decay": 0.01}),
    "muon_rms_dsv4": (symoptax.muon, {"shape_rule": "rms", "method": "dsv4"}),
    "normuon": (symoptax.normuon, {"weight_decay": 0.01}),
    "muoneq_rc": (symoptax.muoneq, {"mode": "RC"}),
    "spectral_clip": (symoptax.spectral_clip, {"bound": 0.5, "weight_decay": 0.01}),
    "namo": (symoptax.namo, {"weight_decay": 0.01}),
    "namo_d": (symoptax.namo_d, {"weight_decay": 0.01}),
    "aurora": (symoptax.aurora, {"weight_decay": 0.01}),
    "pion": (symoptax.pion, {"weight_decay": 0.01}),
    "rmnp": (symoptax.rmnp, {"weight_decay": 0.01}),
    # radius 10: the weight clip stays inactive, so the update is linear in the learning rate
    "muon_pp": (symoptax.muon_pp, {"weight_decay": 0.01, "radius": 10.0}),
    "auon": (symoptax.auon, {"weight_decay": 0.01}),
    "hybrid_auon": (symoptax.hybrid_auon, {"weight_decay": 0.01}),
    "hyperp": (symoptax.hyperp, {}),
    "muonq": (symoptax.muonq, {"weight_decay": 0.01}),
    # A basis refresh every other step: the three steps take both branches.
    "conda": (symoptax.conda, {"weight_decay": 0.01, "update_proj_gap": 2}),
    "fismo": (symoptax.fismo, {"weight_decay": 0.01}),
    "cosmos": (symoptax.cosmos, {"weight_decay": 0.01, "rank": 2}),
    # Muon with the literature's oracles (issue 18's layer-aware and randomized policies).
    "muon_layer_aware": (symoptax.muon, {"method": "layer_aware"}),
    "muon_randomized_rank2": (symoptax.muon, {"method": "randomized",
                                              "method_options": {"rank": 2}}),
    "md_decoupled_muon": (lambda learning_rate, *, gain_learning_rate=0.01, axes=None:
                          symoptax.md_decoupled(symoptax.muon(learning_rate, axes=axes),
                                                gain_learning_rate=gain_learning_rate,
                                                axes=axes), {}),
}
# Integer arguments that shape the state: static under optax.inject_hyperparams.
STATIC_ARGS = {"muonq": ("bits", "rank", "power_iters", "mu_law"),
               "conda": ("update_proj_gap",), "cosmos": ("rank", "nesterov")}
# Steps that end on a sphere are not linear in the learning rate.
NONLINEAR_IN_LR = ("hyperp", "md_decoupled_muon")


def make(name, **extra):
  if name in PRIMITIVES:
    factory, kwargs, _ = PRIMITIVES[name]
    return factory(**kwargs, axes=AXES, **extra)
  factory, kwargs = ALIASES[name]
  return factory(0.05, **kwargs, axes=AXES, **extra)


ALL = sorted(PRIMITIVES) + sorted(ALIASES)


def params(dtype=jnp.float32):
  return {"w": normal((12, 6), 0).astype(dtype), "stack": normal((3, 6, 10), 1).astype(dtype),
          "b": normal((6,), 2).astype(dtype)}


def grads(t, dtype=jnp.float32):
  return jax.tree_util.tree_map(lambda p: normal(p.shape, 10 + t).astype(dtype), params())


def run(tx, steps=3, dtype=jnp.float32, jit=False):
  p = params(dtype)
  state = tx.init(p)
  update = jax.jit(tx.update) if jit else tx.update
  out = []
  for t in range(steps):
    u, state = update(grads(t, dtype), state, p)
    p = optax.apply_updates(p, u)
    out.append(u)
  return p, state, out


@pytest.mark.parametrize("name", ALL)
def test_jit_equals_no_jit(name):
  _, _, eager = run(make(name))
  _, _, jitted = run(make(name), jit=True)
  chex.assert_trees_all_close(eager, jitted, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_bf16_params_stay_bf16(name):
  p, state, updates = run(make(name), dtype=jnp.bfloat16, jit=True)
  for tree in [p] + updates:
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree_util.tree_leaves(tree))
  assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
             for x in jax.tree_util.tree_leaves(p))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_state_structure_and_dtypes_are_stable(name, dtype):
  tx = make(name)
  init = tx.init(params(dtype))
  _, state, _ = run(tx, dtype=dtype, jit=True)
  chex.assert_trees_all_equal_structs(init, state)
  chex.assert_trees_all_equal_shapes_and_dtypes(init, state)


@pytest.mark.parametrize("name", ALL)
def test_inject_hyperparams_equals_plain(name):
  if name in PRIMITIVES:
    factory, kwargs, _ = PRIMITIVES[name]
    injected = optax.inject_hyperparams(factory)(**kwargs, axes=AXES)
  else:
    factory, kwargs = ALIASES[name]
    injected = optax.inject_hyperparams(factory, static_args=STATIC_ARGS.get(name, ()))(
        learning_rate=0.05, **kwargs, axes=AXES)
  _, _, plain = run(make(name))
  _, state, inj = run(injected, jit=True)
  chex.assert_trees_all_close(plain, inj, atol=1e-4, rtol=1e-4)
  if name in PRIMITIVES and PRIMITIVES[name][2] is not None:
    # The injected hyperparameter is live: changing it in the state equals a transform built
    # with the new value.
    factory, kwargs, (hp, value) = PRIMITIVES[name]
    state.hyperparams[hp] = jnp.asarray(value)
    u_inj, _ = injected.update(grads(3), state, params())
    plain = factory(**{**kwargs, hp: value}, axes=AXES)
    u_plain, _ = plain.update(grads(3), state.inner_state, params())
    chex.assert_trees_all_close(u_inj, u_plain, atol=1e-4, rtol=1e-4)
  if name in ALIASES:
    # The injected learning rate is live: halving it halves the next update.
    p = params()
    state.hyperparams["learning_rate"] = jnp.asarray(0.025)
    u_half, _ = injected.update(grads(3), state, p)
    if name in NONLINEAR_IN_LR:  # equals the optimizer built with the new rate
      factory, kwargs = ALIASES[name]
      want, _ = factory(0.025, **kwargs, axes=AXES).update(grads(3), state.inner_state, p)
    else:
      state.hyperparams["learning_rate"] = jnp.asarray(0.05)
      u_full, _ = injected.update(grads(3), state, p)
      want = jax.tree_util.tree_map(lambda x: x / 2, u_full)
    chex.assert_trees_all_close(u_half, want, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_multisteps_applies_the_mean_gradient(name):
  tx = optax.MultiSteps(make(name), every_k_schedule=2)
  p = params()
  state = tx.init(p)
  u1, state = tx.update(grads(0), state, p)
  assert all(bool(jnp.all(x == 0)) for x in jax.tree_util.tree_leaves(u1))
  u2, state = tx.update(grads(1), state, p)
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, grads(0), grads(1))
  inner = make(name)
  expected, _ = inner.update(mean, inner.init(p), p)
  chex.assert_trees_all_close(u2, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_state_initialises_from_shape_dtype_structs(name):
  tx = make(name)
  structs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params())
  abstract = jax.eval_shape(tx.init, structs)
  concrete = tx.init(params())
  chex.assert_trees_all_equal_structs(abstract, concrete)
  chex.assert_trees_all_equal_shapes_and_dtypes(abstract, concrete)


def low_rank_regression():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  target = jax.random.normal(k1, (16, 2)) @ jax.random.normal(k2, (2, 8)) / 2
  x = jax.random.normal(k3, (64, 16))
  return lambda p: jnp.mean((x @ p["w"] - x @ target) ** 2)


# Uncentred, no weight decay: centring pins the mean row, which this target does not have.
TOY = {
    "rownorm_m": (symoptax.rownorm_m, {}, 0.1),
    "right_polargrad_m": (symoptax.right_polargrad_m, {}, 0.3),
    "left_polargrad_m": (symoptax.left_polargrad_m, {}, 0.3),
    "hybrid_polargrad_m": (symoptax.hybrid_polargrad_m, {}, 0.03),
    "hybrid_polargrad_m_polar_then_row": (symoptax.hybrid_polargrad_m,
                                          {"order": "polar_then_row"}, 0.1),
    "polargrad": (symoptax.polargrad, {}, 0.3),
    "muon": (symoptax.muon, {}, 0.1),
    "muon_rms_dsv4": (symoptax.muon, {"shape_rule": "rms", "method": "dsv4"}, 0.1),
    "normuon": (symoptax.normuon, {}, 0.1),
    "muoneq": (symoptax.muoneq, {}, 0.1),
    "spectral_clip": (symoptax.spectral_clip, {"bound": 10.0}, 0.3),
    "namo": (symoptax.namo, {}, 0.3),
    "namo_d": (symoptax.namo_d, {"clamp": 1.0}, 0.3),
    "aurora": (symoptax.aurora, {}, 0.1),
    "pion": (symoptax.pion, {"strength": 0.5}, 0.1),
    "rmnp": (symoptax.rmnp, {}, 0.1),
    # The target's spectral norm is above Muon++'s default weight bound 2 sqrt(fan_out/fan_in).
    "muon_pp": (symoptax.muon_pp, {"radius": 10.0}, 0.1),
    # AuON's update has unit Frobenius norm (Muon's has sqrt(min(m, n))).
    "auon": (symoptax.auon, {}, 1.0),
    "hybrid_auon": (symoptax.hybrid_auon, {}, 1.0),
    # From zero, HyperP's first step lands on its sphere: here the solution's (||target||_F).
    "hyperp": (symoptax.hyperp, {"radius": 10.877}, 0.1),
    # Conda's step is Adam-sized per entry, times its scale 0.25; the basis refreshes every
    # 50 steps.
    "conda": (symoptax.conda, {"update_proj_gap": 50}, 0.3),
    "fismo": (symoptax.fismo, {}, 0.1),
    # COSMOS's update has per-entry RMS 1.
    "cosmos": (symoptax.cosmos, {"rank": 2}, 0.1),
    # The literature's polar oracles inside Muon.
    "muon_layer_aware": (symoptax.muon, {"method": "layer_aware"}, 0.1),
    "muon_randomized_rank2": (symoptax.muon, {"method": "randomized",
                                              "method_options": {"rank": 2, "oversampling": 1}}, 0.1),
}


def assert_solves_toy(make_tx, lr, steps=300):
  """``make_tx(schedule)``, on a cosine schedule from ``lr``, fits the low-rank regression
  to 1e-3 of its initial loss in ``steps`` steps."""
  tx = make_tx(optax.cosine_decay_schedule(lr, steps))
  loss = low_rank_regression()
  p = {"w": jnp.zeros((16, 8))}

  def step(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), None

  (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
  assert float(loss(p)) < 1e-3 * float(loss({"w": jnp.zeros((16, 8))}))


@pytest.mark.parametrize("name", sorted(TOY))
def test_toy_problem_converges(name):
  factory, kwargs, lr = TOY[name]
  assert_solves_toy(lambda schedule: factory(schedule, **kwargs), lr)
