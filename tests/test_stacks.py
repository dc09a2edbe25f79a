"""symmetry_stack: every preset trains every example model; softmax-shift control; errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import symoptax
from examples.models import gemma3, maxtext_style, moe, qwen3
from examples.models.common import next_token_loss

NNX_MODELS = {"qwen3": qwen3.Qwen3, "gemma3": gemma3.Gemma3, "olmoe": moe.Olmoe,
              "gpt_oss": moe.GptOss}
TOKENS = jax.random.randint(jax.random.key(1), (4, 17), 0, 256)


def nnx_problem(name):
  graphdef, params, rest = nnx.split(NNX_MODELS[name](rngs=nnx.Rngs(0)), nnx.Param, ...)
  loss = lambda p, toks: next_token_loss(nnx.merge(graphdef, p, rest), toks)
  # gpt-oss has no q_norm/k_norm to read the head size from.
  return params, loss, {"head_dim": 16} if name == "gpt_oss" else {}


def maxtext_problem(scan_axis):
  model, params = maxtext_style.init(maxtext_style.Config(param_scan_axis=scan_axis))

  def loss(p, toks):
    logits = model.apply({"params": p}, toks[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, toks[:, 1:]).mean()
  return params, loss, {"scan_axis": scan_axis}


def problem(name):
  return maxtext_problem(int(name[-1])) if name.startswith("maxtext") else nnx_problem(name)


def train(params, loss, tx, steps, tokens=TOKENS):
  @jax.jit
  def step(p, s, toks):
    l, g = jax.value_and_grad(loss)(p, toks)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l

  state = tx.init(params)
  losses = []
  for i in range(steps):
    params, state, l = step(params, state, jnp.roll(tokens, i, axis=1))
    losses.append(float(l))
  return params, losses


MODELS = sorted(NNX_MODELS) + ["maxtext_scan0", "maxtext_scan1"]


@pytest.mark.parametrize("preset", sorted(symoptax.PRESETS))
@pytest.mark.parametrize("model", MODELS)
def test_every_preset_trains_every_model(model, preset):
  params, loss, kw = problem(model)
  tx = symoptax.symmetry_stack(0.02, preset=preset, params=params, **kw)
  new, losses = train(params, loss, tx, steps=1)
  assert all(np.isfinite(losses))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                          jax.tree_util.tree_leaves(new)):
    assert bool(jnp.all(jnp.isfinite(b))), jax.tree_util.keystr(path)
    assert not bool(jnp.all(a == b)), f"{jax.tree_util.keystr(path)} did not change"


def test_paper_preset_lowers_the_loss_on_repeated_batches():
  params, loss, kw = problem("qwen3")
  _, losses = train(params, loss, symoptax.symmetry_stack(0.02, preset="paper", **kw), steps=30,
                    tokens=TOKENS)
  assert losses[-1] < 0.8 * losses[0]


def _mean_row_drift(model, leaf_path, preset, steps=20):
  params, loss, kw = problem(model)
  new, _ = train(params, loss, symoptax.symmetry_stack(0.02, preset=preset, **kw), steps)
  get = lambda tree: nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree
  a, b = get(params), get(new)
  for k in leaf_path:
    a, b = a[k], b[k]
  # Flax layout [d, vocab or experts]: rows (the softmax axis) are axis 1.
  return float(jnp.abs(b.mean(axis=1) - a.mean(axis=1)).max()), float(jnp.abs(b - a).max())


@pytest.mark.parametrize("model,leaf", [("qwen3", ("lm_head", "kernel")),
                                        ("olmoe", ("layers", 0, "mlp", "gate", "kernel"))])
def test_softmax_shift_is_never_drifted_along(model, leaf):
  drift, moved = _mean_row_drift(model, leaf, "paper")
  assert moved > 1e-3  # the leaf did train ...
  assert drift < 1e-6 * max(1.0, moved) * 10  # ... but its mean row stayed (fp32 rounding)
  adam_drift, _ = _mean_row_drift(model, leaf, "adamw")
  assert adam_drift > 1e3 * drift and adam_drift > 1e-4


def test_the_default_preset_takes_its_tuned_ratios_and_paper_the_reference_ones():
  assert symoptax.DEFAULT_PRESET == "hybrid"
  assert symoptax.stacks.resolve_rules(1.0).keys() == set(symoptax.ROLES)
  for preset in ("hybrid", "paper", "muon"):
    table = symoptax.stacks.resolve_rules(0.04, preset)
    ratios = symoptax.PRESET_LR_RATIO.get(preset, {})
    for role, r in table.items():
      want = ratios.get((r.rule, role), ratios.get((r.rule, "*"),
                        symoptax.stacks.LR_RATIO.get((r.rule, role),
                                                     symoptax.stacks.LR_RATIO[(r.rule, "*")])))
      assert r.learning_rate == pytest.approx(0.04 * want), (preset, role)
  default = symoptax.stacks.resolve_rules(0.04)
  assert default["lm_head"].learning_rate == pytest.approx(0.04 * 0.045)
  assert default["vector"].learning_rate == pytest.approx(0.03)
  paper = symoptax.stacks.resolve_rules(0.04, "paper")
  assert paper["lm_head"].learning_rate == pytest.approx(0.04 * 0.015)  # the reference's
  assert paper["vector"].learning_rate == pytest.approx(0.01)
  # A stack-wide scale sets its own ratios over the preset's.
  assert symoptax.stacks.resolve_rules(0.04, scale="rms")["vector"].learning_rate == 0.04
  rows = {r["path"]: r for r in symoptax.describe(
      {"lm_head": {"kernel": jnp.ones((8, 32))}}, learning_rate=0.04).rows}
  assert rows["lm_head/kernel"]["rule"] == "hybrid (centred)"
  assert rows["lm_head/kernel"]["lr"] == pytest.approx(0.04 * 0.045)


def test_overrides_change_rule_learning_rate_and_weight_decay():
  params, _, _ = problem("qwen3")
  rows = {r["path"]: r for r in symoptax.describe(
      params, learning_rate=0.02,
      overrides={"lm_head": "rownorm", "embedding": {"learning_rate": 0.5, "weight_decay": 0.1},
                 "mlp_in": {"rule": "hybrid"}}).rows}
  assert rows["lm_head/kernel"]["rule"] == "rownorm (centred)"
  assert rows["embed_tokens/embedding"]["lr"] == 0.5
  assert rows["embed_tokens/embedding"]["wd"] == 0.1
  assert rows["layers/0/mlp/up_proj/kernel"]["rule"] == "hybrid"
  assert rows["layers/0/mlp/down_proj/kernel"]["rule"] == "muon"


def test_describe_shows_rates_given_a_learning_rate_and_labelled_ratios_without():
  params, _, _ = problem("qwen3")
  own = {"embedding": {"learning_rate": 0.5}}
  ratios = symoptax.describe(params, overrides=own)
  rates = symoptax.describe(params, learning_rate=0.02, overrides=own)
  header = lambda d: str(d).splitlines()[0].split()
  assert "ratio" in header(ratios) and "ratio" not in header(rates)
  by_path = lambda d: {r["path"]: r for r in d.rows}
  r0, r1 = by_path(ratios), by_path(rates)
  head, vec = "lm_head/kernel", "norm/scale"
  table = symoptax.PRESET_LR_RATIO[symoptax.DEFAULT_PRESET]
  assert r0[head]["lr ratio"] == table[("hybrid", "lm_head")] and r0[head]["lr"] is None
  assert r1[head]["lr"] == pytest.approx(0.02 * table[("hybrid", "lm_head")])
  assert r1[vec]["lr"] == pytest.approx(0.02 * r0[vec]["lr ratio"])
  # A rate an override sets is its own, not a ratio.
  assert r0["embed_tokens/embedding"]["lr ratio"] == "0.5 (own)"
  assert r1["embed_tokens/embedding"]["lr"] == 0.5


def test_rules_take_the_named_optimizers_function_names_too():
  params, _, _ = problem("qwen3")
  for function, rule in symoptax.stacks.RULE_FUNCTIONS.items():
    assert getattr(symoptax, function) is not None and rule in symoptax.RULES
    rows = {r["path"]: r for r in symoptax.describe(params, overrides={"lm_head": function}).rows}
    assert rows["lm_head/kernel"]["rule"].split()[0] == rule
  for rule in set(symoptax.RULES) - {"adamw"} - set(symoptax.stacks.RULE_FUNCTIONS.values()):
    assert callable(getattr(symoptax, rule))  # every other rule is the optimizer of its name


def test_schedules_and_explicit_roles():
  params, loss, _ = problem("qwen3")
  roles = symoptax.label_roles(params)
  sched = optax.cosine_decay_schedule(0.02, 10)
  tx = symoptax.symmetry_stack(sched, roles=roles,
                               overrides={"lm_head": {"learning_rate": sched}})
  _, losses = train(params, loss, tx, steps=2)
  assert all(np.isfinite(losses))
  assert "schedule" in str(symoptax.describe(params, learning_rate=sched))


@pytest.mark.parametrize("kwargs,match", [
    ({"preset": "sgd"}, r"Unknown preset 'sgd'.*'paper'"),
    ({"overrides": {"head": "muon"}}, r"unknown role 'head'.*lm_head"),
    ({"overrides": {"lm_head": "lion"}}, r"overrides\['lm_head'\]: unknown rule 'lion'"),
    ({"overrides": {"lm_head": {"lr": 1.0}}}, r"unknown keys \['lr'\]"),
    ({"overrides": {"vector": "muon"}}, r"vectors .* only take 'adamw'"),
])
def test_bad_stack_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    symoptax.symmetry_stack(0.02, **kwargs)


def test_labelling_errors_surface_at_construction_with_params():
  with pytest.raises(ValueError, match=r"weird: no role matches"):
    symoptax.symmetry_stack(0.02, params={"weird": jnp.ones((2, 3, 4))})


def test_overrides_are_applied_by_the_built_transform():
  params = nnx.to_pure_dict(problem("qwen3")[0])  # the pure-dict form, as in checkpoints
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  grads["norm"]["scale"] = jnp.zeros_like(params["norm"]["scale"])
  tx = symoptax.symmetry_stack(0.02, overrides={
      "lm_head": {"learning_rate": 0.0},
      "vector": {"learning_rate": 0.5, "weight_decay": 0.1}})
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  assert bool(jnp.all(u["lm_head"]["kernel"] == 0))
  assert not bool(jnp.all(u["embed_tokens"]["embedding"] == 0))
  # Zero gradient under AdamW: the update is the decoupled decay -lr * wd * w alone.
  np.testing.assert_allclose(u["norm"]["scale"], -0.5 * 0.1 * params["norm"]["scale"],
                             rtol=1e-6)


def test_stack_works_with_eval_shape_multisteps_and_inject_hyperparams():
  params, loss, _ = problem("olmoe")
  structs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  tx = symoptax.symmetry_stack(0.02, params=structs)
  abstract = jax.eval_shape(tx.init, structs)
  concrete = tx.init(params)
  assert (jax.tree_util.tree_structure(abstract) == jax.tree_util.tree_structure(concrete))
  grads = jax.jit(jax.grad(loss))(params, TOKENS)
  multi = optax.MultiSteps(tx, every_k_schedule=2)
  s, multi_update = multi.init(params), jax.jit(multi.update)
  _, s = multi_update(grads, s, params)
  u_multi, _ = multi_update(grads, s, params)
  # Compiled against compiled: eager and compiled sums round differently, and the Gram-side
  # inverse roots of the vocabulary matrices amplify that to ~1e-6.
  u_plain, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  for a, b in zip(jax.tree_util.tree_leaves(u_multi), jax.tree_util.tree_leaves(u_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  injected = optax.inject_hyperparams(symoptax.symmetry_stack)(learning_rate=0.02)
  u_inj, _ = jax.jit(injected.update)(grads, injected.init(params), params)
  for a, b in zip(jax.tree_util.tree_leaves(u_inj), jax.tree_util.tree_leaves(u_plain)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _rule_alone(rule, lr, wd, center, axes, nu_scope="matrix"):
  """The optimizer a rule names, built on its own: what the stack must give its leaves."""
  if rule == "adamw":
    return optax.adamw(lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=wd)
  one_sided = {"rownorm": symoptax.rownorm_m, "right_polar": symoptax.right_polargrad_m,
               "left_polar": symoptax.left_polargrad_m, "hybrid": symoptax.hybrid_polargrad_m,
               "polargrad": symoptax.polargrad}
  if rule == "rownorm":
    return symoptax.rownorm_m(lr, weight_decay=wd, center=center, axes=axes)
  if rule in one_sided:
    return one_sided[rule](lr, weight_decay=wd, center=center, axes=axes, nu_scope=nu_scope)
  return getattr(symoptax, rule)(lr, weight_decay=wd, axes=axes)


@pytest.mark.parametrize("preset,overrides,lr", [(p, None, 0.02) for p in sorted(symoptax.PRESETS)] + [
    # Mixed ratios (embedding 5, head/router/experts 0.15) under a schedule.
    ("rownorm", None, optax.linear_schedule(0.02, 0.002, 2)),
    # A matrix rule with its own weight decay (a branch of its own), two AdamW decays (split
    # branches), an own learning rate (its own branch).
    ("rownorm", {"router": {"rule": "rownorm", "weight_decay": 0.1}}, 0.02),
    ("muon", {"lm_head": {"rule": "adamw", "weight_decay": 0.05},
              "router": {"learning_rate": 0.003}}, 0.02),
    # Two AdamW decays with a zero-decay role (the router) masked into a decayed branch.
    ("muon", {"lm_head": {"rule": "adamw", "weight_decay": 0.05}}, 0.02),
    # Left polar on embedding (0.015, uncentred) and router (0.625, centred); a weight decay
    # that is an array.
    ("paper", {"embedding": "left_polar", "vector": {"weight_decay": jnp.array(0.02)}}, 0.02),
])
def test_every_leaf_steps_as_its_rule_would_alone(preset, overrides, lr):
  """Branches merge roles (one per rule); each leaf must still get its own rule, learning
  rate, weight decay and centring, step after step."""
  params = nnx.to_pure_dict(problem("olmoe")[0])
  keys = iter(jax.random.split(jax.random.key(3), 100))
  grads = [jax.tree_util.tree_map(lambda x: jax.random.normal(next(keys), x.shape), params)
           for _ in range(2)]
  tx = symoptax.symmetry_stack(lr, preset=preset, params=params, overrides=overrides)
  table = symoptax.stacks.resolve_rules(lr, preset, overrides)
  opts = symoptax.stacks.stack_options(preset)
  leaf = lambda x: x is None or isinstance(x, symoptax.MatrixAxes)
  flat = lambda tree: dict(jax.tree_util.tree_flatten_with_path(tree, is_leaf=leaf)[0])
  roles = flat(symoptax.label_roles(params))
  axes = flat(symoptax.matrix_axes(params, attention=opts["attention"]))
  name = jax.tree_util.keystr
  by_role = {role: [p for p in roles if roles[p] == role] for role in set(roles.values())}
  alone = {role: _rule_alone(table[role].rule, table[role].learning_rate,
                             table[role].weight_decay, table[role].center,
                             {name(p): axes[p] for p in paths}, opts["nu_scope"])
           for role, paths in by_role.items()}

  @jax.jit  # compiled, as the stack (one program for both, to keep the test quick)
  def run(params, grads):
    state = tx.init(params)
    for g in grads:
      got, state = tx.update(g, state, params)
    want = {}
    for role, paths in by_role.items():
      sub = {name(p): flat(params)[p] for p in paths}
      s = alone[role].init(sub)
      for g in grads:
        want[role], s = alone[role].update({name(p): flat(g)[p] for p in paths}, s, sub)
    return got, want

  got, want = run(params, grads)
  got = flat(got)
  for role, paths in by_role.items():
    r = table[role]
    for p in paths:
      np.testing.assert_allclose(got[p], want[role][name(p)], rtol=1e-4, atol=1e-6,
                                 err_msg=f"{preset} {overrides}: {name(p)} ({role}: {r.rule})")

def test_branches_exist_only_for_the_rules_present():
  params = nnx.to_pure_dict(problem("qwen3")[0])  # no router, no experts
  state = symoptax.symmetry_stack(0.02, preset="paper", params=params).init(params)
  assert set(state.inner_states) == {"adamw", "muon|wd=0.0", "right_polar|wd=0.0",
                                     "hybrid|wd=0.0"}
  state = symoptax.symmetry_stack(0.02, params=params).init(params)  # the default, "hybrid"
  assert set(state.inner_states) == {"adamw", "muon|wd=0.0", "hybrid|wd=0.0"}
  state = symoptax.symmetry_stack(0.02, preset="adamw", params=params).init(params)
  assert set(state.inner_states) == {"adamw"}  # the LM head's zero decay is a mask


def test_roles_sharing_a_rule_share_one_batched_polar_step():
  """Under "hybrid" the embedding [V, d] and the LM head [d, V] (rows: V, centred) take one
  branch, and their right-polar Grams are formed as one batch of two d x d matrices."""
  params = {"embed_tokens": {"embedding": jnp.ones((64, 16))},
            "lm_head": {"kernel": jnp.ones((16, 64))}}
  grads = jax.tree_util.tree_map(
      lambda x: jax.random.normal(jax.random.key(x.shape[0]), x.shape), params)
  tx = symoptax.symmetry_stack(0.02, preset="hybrid", params=params)
  state = tx.init(params)
  assert set(state.inner_states) == {"hybrid|wd=0.0"}
  hlo = jax.jit(tx.update).lower(grads, state, params).as_text()
  grams = [line for line in hlo.splitlines() if "dot_general" in line
           and line.rstrip().endswith("-> tensor<2x16x16xf32>")]
  assert grams, "no batched Gram of both matrices"


def test_leaf_learning_rates_round_once_in_bf16():
  """A role stepping at another ratio than its branch-mates (the embedding under "rownorm")
  gets its bf16 update with one rounding of the learning rate, bit for bit as alone."""
  key = iter(jax.random.split(jax.random.key(0), 4))
  normal = lambda *shape: jax.random.normal(next(key), shape, jnp.bfloat16)
  params = {"embed_tokens": {"embedding": normal(64, 16)}, "lm_head": {"kernel": normal(16, 64)}}
  grads = {"embed_tokens": {"embedding": normal(64, 16)}, "lm_head": {"kernel": normal(16, 64)}}
  tx = symoptax.symmetry_stack(0.02, preset="rownorm", params=params)
  got, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  emb = {"e": params["embed_tokens"]["embedding"]}
  alone = symoptax.rownorm_m(5.0 * 0.02)
  want, _ = jax.jit(alone.update)({"e": grads["embed_tokens"]["embedding"]}, alone.init(emb), emb)
  assert got["embed_tokens"]["embedding"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got["embed_tokens"]["embedding"], np.float32),
                                np.asarray(want["e"], np.float32))


@pytest.mark.parametrize("wd", [optax.constant_schedule(0.1), jnp.array(0.1)])
def test_weight_decay_schedules_and_arrays_in_overrides(wd):
  params = {"mlp": {"up_proj": {"kernel": jnp.ones((8, 16))}}, "norm": {"scale": jnp.arange(8.0)}}
  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  tx = symoptax.symmetry_stack(0.02, params=params,
                               overrides={"vector": {"learning_rate": 0.5, "weight_decay": wd}})
  assert "vector:custom" in tx.init(params).inner_states
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  np.testing.assert_allclose(u["norm"]["scale"], -0.5 * 0.1 * params["norm"]["scale"], rtol=1e-6)


@pytest.mark.parametrize("form", ["state", "pure_dict", "arrays"])
def test_nnx_optimizer_and_train_state_take_params_in_any_form(form):
  """``nnx.Optimizer(model, symmetry_stack(lr, params=...), wrt=nnx.Param)`` -- the NNX
  pattern, which hands ``update`` the pure arrays of a State -- and Linen's ``TrainState``
  on a pure dict take the same steps, whichever form ``params=`` came in."""
  from flax.training import train_state
  model = qwen3.Qwen3(rngs=nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  given = {"state": state, "pure_dict": nnx.to_pure_dict(state),
           "arrays": nnx.as_pure(state)}[form]
  opt = nnx.Optimizer(model, symoptax.symmetry_stack(0.02, params=given), wrt=nnx.Param)
  graphdef, _, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  ts = train_state.TrainState.create(
      apply_fn=None, params=nnx.to_pure_dict(state),
      tx=symoptax.symmetry_stack(0.02, params=given))

  @nnx.jit
  def nnx_step(model, opt, toks):
    loss, g = nnx.value_and_grad(lambda m: next_token_loss(m, toks))(model)
    opt.update(model, g)
    return loss

  @jax.jit
  def linen_step(ts, toks):
    loss = lambda p: next_token_loss(nnx.merge(graphdef, p, rest), toks)
    l, g = jax.value_and_grad(loss)(ts.params)
    return ts.apply_gradients(grads=g), l

  losses = []
  for i in range(4):
    toks = jnp.roll(TOKENS, i, axis=1)
    losses.append(float(nnx_step(model, opt, toks)))
    ts, _ = linen_step(ts, toks)
  assert losses[-1] < losses[0]
  got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0],
                          jax.tree_util.tree_leaves(ts.params)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))


def test_a_tree_other_than_params_is_refused_naming_the_leaf():
  model = qwen3.Qwen3(rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  tx = symoptax.symmetry_stack(0.02, params=params)
  other = {**params, "extra": {"kernel": jnp.ones((4, 4))}}
  with pytest.raises(ValueError, match=r"extra/kernel is not in params=.*build the stack"):
    tx.init(other)
  del other["extra"], other["norm"]
  with pytest.raises(ValueError, match=r"params= has norm/scale, which the tree does not"):
    tx.init(other)


def test_axes_override_names_a_leaf_s_matrices_and_is_checked():
  """``axes=`` re-reads a leaf the built-ins read otherwise (here an MLP input kernel stored
  [out, in]); a 3-D leaf needs a rule that carries its axes, and the error says so."""
  A = symoptax.MatrixAxes
  key = iter(jax.random.split(jax.random.key(0), 8))
  params = {"embed_tokens": {"embedding": jax.random.normal(next(key), (64, 16))},
            "mlp": {"up_proj": {"kernel": jax.random.normal(next(key), (32, 16))}},
            "norm": {"scale": jnp.ones(16)}}
  given = {"embed_tokens": {"embedding": None}, "mlp": {"up_proj": {"kernel": A(0, 1)}},
           "norm": {"scale": None}}
  options = {"mlp_in": {"options": {"method": "svd"}}}
  tx = symoptax.symmetry_stack(0.02, preset="muon", params=params, axes=given, overrides=options)
  rows = {r["path"]: r for r in symoptax.describe(params, preset="muon",
                                                  axes=lambda p: given).rows}
  assert (rows["mlp/up_proj/kernel"]["rows"], rows["mlp/up_proj/kernel"]["cols"]) == (0, 1)
  assert rows["mlp/up_proj/kernel"]["shape factor"] == pytest.approx(2 ** 0.5, abs=0.01)
  grads = jax.tree_util.tree_map(lambda x: jax.random.normal(next(key), x.shape), params)
  u, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  alone = symoptax.muon(0.02, method="svd", axes={"w": A(0, 1)})
  w = {"w": params["mlp"]["up_proj"]["kernel"]}
  want, _ = alone.update({"w": grads["mlp"]["up_proj"]["kernel"]}, alone.init(w), w)
  np.testing.assert_allclose(u["mlp"]["up_proj"]["kernel"], want["w"], rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match=r"mlp/up_proj/kernel"):
    symoptax.symmetry_stack(0.02, params=params,
                            axes={**given, "mlp": {"up_proj": {"kernel": A(rows=2, cols=0)}}})
  with pytest.raises(ValueError, match=r"axes: norm/scale is a vector leaf"):
    symoptax.symmetry_stack(0.02, params=params, axes={**given, "norm": {"scale": A(0, 0)}})
  with pytest.raises(ValueError, match=r"MatrixAxes\(rows=\.\.\., cols=\.\.\.\)"):
    symoptax.symmetry_stack(0.02, params={"w_in": jnp.ones((4, 3, 2))},
                            rules=[(r"w_in", "mlp_in")])
