"""The shard_map-aware step on 8 CPU devices: sharded == single-device, collectives in the
compiled HLO, and state that stays in the parameters' shardings.

Needs 8 devices: ``SYMOPTAX_TEST_DEVICES=8 pytest tests/test_sharding.py``, or through
``tests/test_sharding_on_8_devices.py``, which the plain ``pytest`` run includes.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import symoptax
from symoptax import sharding as sharding_lib
from symoptax.polar import polar

from helpers import normal

A = symoptax.MatrixAxes
STACK = A(1, 2)  # a scanned stack [L, rows, cols]

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices: run with SYMOPTAX_TEST_DEVICES=8 (or via "
    "tests/test_sharding_on_8_devices.py)")


def make_mesh(shape, names, kind=AxisType.Auto):
  return jax.make_mesh(shape, names, axis_types=(kind,) * len(shape))


# Per mesh: leaves (shape, axes, spec) covering rows / cols / both sharded, rows over two
# mesh axes, and stacks whose length does or does not divide the number of shards of a matrix.
CASES = {
    "fsdp8": ((8,), ("fsdp",), {
        "rows": ((64, 16), A(0, 1), P("fsdp")),
        "cols": ((16, 64), A(0, 1), P(None, "fsdp")),
        "stack_div": ((8, 32, 16), STACK, P(None, "fsdp")),
        "stack_nodiv": ((3, 16, 48), STACK, P(None, None, "fsdp")),
        "flax_kernel": ((16, 48), A(1, 0), P(None, "fsdp")),  # rows = axis 1
    }),
    "fsdp4_tp2": ((4, 2), ("fsdp", "tensor"), {
        "both": ((64, 16), A(0, 1), P("fsdp", "tensor")),
        "both_t": ((16, 64), A(0, 1), P("tensor", "fsdp")),
        "rows2": ((64, 16), A(0, 1), P(("fsdp", "tensor"))),
        "stack_div": ((8, 32, 16), STACK, P(None, "fsdp", "tensor")),
        "stack_nodiv": ((5, 16, 32), STACK, P(None, "tensor", "fsdp")),
    }),
    "cube": ((2, 2, 2), ("data", "fsdp", "tensor"), {
        "stack_batch": ((6, 32, 16), STACK, P("data", "fsdp", "tensor")),
        "stack_nodiv": ((3, 48, 16), STACK, P(None, ("data", "fsdp"), "tensor")),
        "cols": ((16, 48), A(0, 1), P(None, ("data", "fsdp"))),
        "replicated": ((24, 8), A(0, 1), P()),
        "vector": ((16,), None, P("fsdp")),
    }),
}


def case(name, kind=AxisType.Auto):
  shape, names, leaves = CASES[name]
  mesh = make_mesh(shape, names, kind)
  params = {k: normal(s, i) for i, (k, (s, _, _)) in enumerate(leaves.items())}
  axes = {k: ax for k, (_, ax, _) in leaves.items()}
  shardings = {k: NamedSharding(mesh, spec) for k, (_, _, spec) in leaves.items()}
  return mesh, params, axes, shardings


# Every matrix rule of symoptax (the stack's RULES but AdamW) as an alias, and the one-sided
# primitives on the side they are meant for.
ALIASES = {
    "muon": lambda **kw: symoptax.muon(0.1, **kw),
    "rownorm": lambda **kw: symoptax.rownorm_m(0.1, center=True, **kw),
    "right_polar": lambda **kw: symoptax.right_polargrad_m(0.1, **kw),
    "left_polar": lambda **kw: symoptax.left_polargrad_m(0.1, center=True, **kw),
    "hybrid": lambda **kw: symoptax.hybrid_polargrad_m(0.1, center=True, **kw),
    "hybrid_polar_then_row": lambda **kw: symoptax.hybrid_polargrad_m(
        0.1, order="polar_then_row", **kw),
    "polargrad": lambda **kw: symoptax.polargrad(0.1, weight_decay=0.1, **kw),
    "normuon": lambda **kw: symoptax.normuon(0.1, **kw),
    "muoneq_rc": lambda **kw: symoptax.muoneq(0.1, mode="RC", **kw),
    "spectral_clip": lambda **kw: symoptax.spectral_clip(0.1, bound=0.5, **kw),
    "namo": lambda **kw: symoptax.namo(0.1, weight_decay=0.1, **kw),
    "namo_d": lambda **kw: symoptax.namo_d(0.1, weight_decay=0.1, **kw),
    "aurora": lambda **kw: symoptax.aurora(0.1, **kw),
    "pion": lambda **kw: symoptax.pion(0.1, **kw),
    "rmnp": lambda **kw: symoptax.rmnp(0.1, **kw),
    "muon_pp": lambda **kw: symoptax.muon_pp(0.1, weight_decay=0.1, **kw),
    "auon": lambda **kw: symoptax.auon(0.1, weight_decay=0.1, **kw),
    "hybrid_auon": lambda **kw: symoptax.hybrid_auon(0.1, **kw),
    "hyperp": lambda **kw: symoptax.hyperp(0.1, **kw),
    "md_decoupled": lambda **kw: symoptax.md_decoupled(symoptax.muon(0.1, **kw),
                                                       gain_learning_rate=0.05, **kw),
    "muon_layer_aware": lambda **kw: symoptax.muon(0.1, method="layer_aware", **kw),
    "muon_randomized_r4": lambda **kw: symoptax.muon(
        0.1, method="randomized", method_options={"rank": 4, "oversampling": 1}, **kw),
    # The basis refreshes at steps 1 and 3 and is kept at step 2.
    "conda": lambda **kw: symoptax.conda(0.1, update_proj_gap=2, weight_decay=0.1, **kw),
    "fismo": lambda **kw: symoptax.fismo(0.1, weight_decay=0.1, **kw),
    "cosmos": lambda **kw: symoptax.cosmos(0.1, rank=4, weight_decay=0.1, **kw),
    # Update-scale conventions (README "Update scales").
    "rownorm_rms": lambda **kw: symoptax.rownorm_m(0.1, center=True, scale="rms", **kw),
    "rownorm_spectral": lambda **kw: symoptax.rownorm_m(0.1, scale="spectral", **kw),
    "right_polar_rel": lambda **kw: symoptax.right_polargrad_m(0.1, scale="nuclear_rel", **kw),
    "hybrid_rms": lambda **kw: symoptax.hybrid_polargrad_m(0.1, center=True, scale="rms", **kw),
    "muon_eigh_auto": lambda **kw: optax.chain(symoptax.scale_by_polar("eigh", **kw)),
    "col_norm": lambda **kw: symoptax.scale_by_col_norm(**kw),
}


def oriented(axes, params, tall):
  """``axes`` with rows and cols swapped where needed so that every matrix is tall (or wide):
  a one-sided polar step is meant for matrices whose Gram is on the short side (on the long
  side the Gram is singular and the step is as ill-conditioned as its damping)."""
  def fix(ax, p):
    if ax is None:
      return None
    rows, cols = p.shape[ax.rows], p.shape[ax.cols]
    return ax if (rows >= cols) == tall else A(ax.cols, ax.rows)
  return {k: fix(axes[k], params[k]) for k in axes}


ORIENTATION = {"right_polar": True, "left_polar": False, "right_polar_rel": True}
# Conda's and COSMOS's bases are eigenvector matrices of the momentum's Gram, summed in another order when
# sharded: eigenvectors move by round-off over the eigengap (~1e-5 relative here), and so
# does the update.
TOLERANCE = {"conda": 2e-4, "cosmos": 2e-4}


def relative_error(a, b):
  return float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-30))


def run_steps(tx, params, grads_seq, jit=True):
  state = tx.init(params)
  step = jax.jit(tx.update) if jit else tx.update
  outs = []
  for g in grads_seq:
    u, state = step(g, state, params)
    outs.append(u)
  return outs, state


# The literature's variants (symoptax.variants, and Muon with their oracles): built from the
# core's sharded primitives, so they run on the two meshes that shard rows and cols together
# and batch axes (the core rules take every mesh, fsdp8 included).
VARIANT_RULES = ("normuon", "muoneq_rc", "spectral_clip", "namo", "namo_d", "aurora", "pion",
                 "rmnp", "muon_pp", "auon", "hybrid_auon", "hyperp", "md_decoupled",
                 "muon_layer_aware", "muon_randomized_r4", "conda", "fismo", "cosmos")
# FISMO and COSMOS run as plain jit on the sharded arrays (no shard_map: the partitioner
# places their collectives), so one mesh, the one with every kind of split, checks them.
JIT_RULES = ("fismo", "cosmos")
RULE_MESH = [(rule, mesh) for mesh in CASES for rule in ALIASES
             if (rule not in VARIANT_RULES or mesh != "fsdp8")
             and (rule not in JIT_RULES or mesh == "cube")]


@pytest.mark.parametrize("rule,mesh_name", RULE_MESH)
def test_sharded_update_equals_single_device(mesh_name, rule):
  mesh, params, axes, shardings = case(mesh_name)
  if rule in ORIENTATION:
    axes = oriented(axes, params, ORIENTATION[rule])
  grads = [jax.tree.map(lambda p, i=i: normal(p.shape, 100 + i) + 0.5 * p, params)
           for i in range(3)]
  ref, _ = run_steps(ALIASES[rule](axes=axes), params, grads)
  put = lambda t: jax.device_put(t, shardings)
  tx = ALIASES[rule](axes=axes, shardings=shardings)
  out, _ = run_steps(tx, put(params), [put(g) for g in grads])
  for step, (u_ref, u) in enumerate(zip(ref, out)):
    for k in params:
      err = relative_error(u[k], u_ref[k])
      assert err < TOLERANCE.get(rule, 1e-5), \
          f"{rule} on {mesh_name}: leaf {k} step {step}: rel. error {err:.2e}"
      assert u[k].sharding.is_equivalent_to(shardings[k], u[k].ndim), (k, u[k].sharding)


@pytest.mark.parametrize("rule", JIT_RULES)
def test_global_array_rules_take_explicit_mesh_axes(rule):
  """FISMO and COSMOS step on the global arrays; on Explicit mesh axes (shardings in the
  types) they run under auto axes and equal the single-device step, in the shardings."""
  mesh, params, axes, shardings = case("cube", AxisType.Explicit)
  grads = [jax.tree.map(lambda p, i=i: normal(p.shape, 100 + i) + 0.5 * p, params)
           for i in range(2)]
  ref, _ = run_steps(ALIASES[rule](axes=axes), params, grads)
  put = lambda t: jax.device_put(t, shardings)
  with sharding_lib.use_mesh(mesh):
    out, _ = run_steps(ALIASES[rule](axes=axes, shardings=shardings), put(params),
                       [put(g) for g in grads])
  for step, (u_ref, u) in enumerate(zip(ref, out)):
    for k in params:
      err = relative_error(u[k], u_ref[k])
      assert err < TOLERANCE.get(rule, 1e-5), f"{rule} leaf {k} step {step}: {err:.2e}"
      assert u[k].sharding.is_equivalent_to(shardings[k], u[k].ndim), (k, u[k].sharding)


@pytest.mark.parametrize("kind", [AxisType.Auto, AxisType.Explicit])
@pytest.mark.parametrize("preset", ["paper", "muon", "hybrid", "rownorm"])
def test_stack_keeps_shardings_and_matches_single_device(kind, preset):
  mesh = make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), kind)
  params = {
      "embed_tokens": {"embedding": normal((64, 16), 0)},
      "layers": {"mlp": {"up_proj": {"kernel": normal((3, 16, 32), 1)},
                         "down_proj": {"kernel": normal((3, 32, 16), 2)}},
                 # q_norm gives the head size (8): "paper" reads q_proj head by head,
                 # its heads split over "tensor".
                 "self_attn": {"q_proj": {"kernel": normal((3, 16, 16), 3)},
                               "q_norm": {"scale": jnp.ones((3, 8))}},
                 "input_layernorm": {"scale": jnp.ones((3, 16))}},
      "lm_head": {"kernel": normal((16, 64), 4)},
      "norm": {"scale": jnp.ones(16)},
  }
  specs = {
      "embed_tokens": {"embedding": P(("data", "fsdp"), "tensor")},
      "layers": {"mlp": {"up_proj": {"kernel": P(None, "fsdp", "tensor")},
                         "down_proj": {"kernel": P(None, "tensor", "fsdp")}},
                 "self_attn": {"q_proj": {"kernel": P(None, "fsdp", "tensor")},
                               "q_norm": {"scale": P(None, "tensor")}},
                 "input_layernorm": {"scale": P(None, "tensor")}},
      "lm_head": {"kernel": P("tensor", ("data", "fsdp"))},
      "norm": {"scale": P()},
  }
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, P))
  grads = [jax.tree.map(lambda p, i=i: normal(p.shape, 10 + i), params) for i in range(3)]
  ref_tx = symoptax.symmetry_stack(0.02, preset=preset, params=params, scan_axis=0)
  ref, _ = run_steps(ref_tx, params, grads, jit=False)
  with sharding_lib.use_mesh(mesh):
    sharded = jax.device_put(params, shardings)
    tx = symoptax.symmetry_stack(0.02, preset=preset, params=params, scan_axis=0,
                                 shardings=shardings)
    state = jax.jit(tx.init)(sharded)
    step = jax.jit(tx.update)
    outs = []
    for g in grads:
      u, state = step(jax.device_put(g, shardings), state, sharded)
      outs.append(u)
  for u, u_ref in zip(outs, ref):
    errs = jax.tree.map(relative_error, u, u_ref)
    assert max(jax.tree.leaves(errs)) < 1e-5, errs
    same = jax.tree.map(lambda a, s: a.sharding.is_equivalent_to(s, a.ndim), u, shardings)
    assert all(jax.tree.leaves(same)), same
  # Every parameter-shaped state leaf (momentum, Adam moments) is in its parameter's
  # sharding; the rest (counts) replicated.
  targets = sharding_lib.state_shardings(state, shardings, NamedSharding(mesh, P()))
  checked = jax.tree.map(lambda a, s: a.sharding.is_equivalent_to(s, a.ndim), state, targets)
  assert all(jax.tree.leaves(checked))
  n_sharded = sum(not a.sharding.is_fully_replicated for a in jax.tree.leaves(state))
  assert n_sharded >= 5, n_sharded


def test_state_created_from_shape_dtype_structs_in_its_shardings():
  # MaxText's way: abstract params with shardings -> state shapes -> jit(init, out_shardings).
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  params = {"w": normal((32, 16), 0), "stack": normal((3, 16, 32), 1), "b": jnp.ones(16)}
  specs = {"w": P("fsdp", "tensor"), "stack": P(None, "tensor", "fsdp"), "b": P()}
  shardings = {k: NamedSharding(mesh, v) for k, v in specs.items()}
  abstract = jax.tree.map(lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s),
                          params, shardings)
  axes = {"w": A(0, 1), "stack": STACK, "b": None}
  tx = symoptax.normuon(0.02, axes=axes, shardings=shardings)
  shapes = jax.eval_shape(tx.init, abstract)
  replicated = NamedSharding(mesh, P())
  out = sharding_lib.state_shardings(shapes, shardings, replicated, params=abstract,
                                     other=None)
  state = jax.jit(tx.init, out_shardings=out)(jax.device_put(params, shardings))
  trace = state[0].trace
  assert all(trace[k].sharding.is_equivalent_to(shardings[k], trace[k].ndim) for k in params)
  # NorMuon's per-row statistics: sharded like the rows they describe ([3, rows] for the
  # stack, whose rows (axis 1) are split over "tensor").
  nu = state[2].nu
  assert nu["stack"].shape == (3, 16)
  assert nu["stack"].sharding.is_equivalent_to(NamedSharding(mesh, P(None, "tensor")), 2)
  assert nu["w"].sharding.is_equivalent_to(NamedSharding(mesh, P("fsdp")), 1)


# ------------------------------------------------------------------------------------------
# Collectives in the compiled HLO.

COLLECTIVE = re.compile(r"= (\(?[^=]*?) (all-reduce|all-gather|all-to-all|"
                        r"collective-permute|reduce-scatter)(-start)?\(")


def collectives(fn, *args):
  """[(kind, result shape text)] of every collective in ``fn``'s compiled HLO."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  return [(m.group(2), m.group(1)) for m in COLLECTIVE.finditer(text)]


def update_fn(tx):
  return lambda u: tx.update(u, tx.init(u))[0]


def test_muon_preset_on_a_sharded_model_only_moves_whole_matrices():
  # The whole stack (multi_transform, masked branches, state pinning): nothing but the
  # all-to-alls of the Muon step; AdamW and the momentum stay local.
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  params = {"embed_tokens": {"embedding": normal((64, 16), 0)},
            "layers": {"mlp": {"up_proj": {"kernel": normal((3, 16, 32), 1)}},
                       "input_layernorm": {"scale": jnp.ones((3, 16))}},
            "lm_head": {"kernel": normal((16, 64), 2)}}
  specs = {"embed_tokens": {"embedding": P("fsdp", "tensor")},
           "layers": {"mlp": {"up_proj": {"kernel": P(None, "fsdp", "tensor")}},
                      "input_layernorm": {"scale": P()}},
           "lm_head": {"kernel": P("tensor", "fsdp")}}
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, P))
  x = jax.device_put(params, shardings)
  tx = symoptax.symmetry_stack(0.02, preset="muon", params=params, scan_axis=0,
                               shardings=shardings)
  state = jax.jit(tx.init)(x)
  found = collectives(lambda p, s: optax.apply_updates(p, tx.update(p, s, p)[0]), x, state)
  assert found and {k for k, _ in found} == {"all-to-all"}, found
  # The same with a sharded named optimizer inside the user's own multi_transform.
  labels = {"embed_tokens": {"embedding": "a"}, "lm_head": {"kernel": "a"},
            "layers": {"mlp": {"up_proj": {"kernel": "m"}}, "input_layernorm": {"scale": "a"}}}
  axes = {"embed_tokens": None, "lm_head": None,
          "layers": {"mlp": {"up_proj": {"kernel": STACK}}, "input_layernorm": None}}
  tx = optax.multi_transform({"m": symoptax.muon(0.02, axes=axes, shardings=shardings),
                              "a": optax.adamw(1e-3)}, labels)
  state = jax.jit(tx.init)(x)
  trace = state.inner_states["m"].inner_state[0].trace["layers"]["mlp"]["up_proj"]["kernel"]
  assert trace.sharding.is_equivalent_to(shardings["layers"]["mlp"]["up_proj"]["kernel"], 3)
  found = collectives(lambda p, s: optax.apply_updates(p, tx.update(p, s, p)[0]), x, state)
  assert found and {k for k, _ in found} == {"all-to-all"}, found


def test_right_polar_on_row_sharded_tall_matrix_has_one_gram_all_reduce_and_no_gather():
  mesh = make_mesh((8,), ("fsdp",))
  sh = {"w": NamedSharding(mesh, P("fsdp"))}
  x = jax.device_put({"w": normal((512, 32), 0)}, sh)
  for nuclear_power in (0.0, 1.0):
    tx = symoptax.scale_by_polar(side="right", nuclear_power=nuclear_power, shardings=sh)
    found = collectives(update_fn(tx), x)
    kinds = [k for k, _ in found]
    assert "all-gather" not in kinds and "all-to-all" not in kinds, found
    grams = [s for k, s in found if k == "all-reduce" and re.search(r"\[1,32,32\]", s)]
    assert len(grams) == 1, found
    # Besides the Gram: scalars only (the global max entry, and nu for nuclear_power=1).
    others = [s for k, s in found if k == "all-reduce" and s not in grams]
    assert all(re.fullmatch(r"f32\[1,1,1\]\S*", s) for s in others), found
    assert len(others) == (2 if nuclear_power else 1), found


def test_left_polar_on_col_sharded_wide_matrix_mirrors_it():
  mesh = make_mesh((8,), ("fsdp",))
  sh = {"w": NamedSharding(mesh, P(None, "fsdp"))}
  x = jax.device_put({"w": normal((32, 512), 0)}, sh)
  found = collectives(update_fn(symoptax.scale_by_polar(side="left", shardings=sh)), x)
  assert [k for k, _ in found].count("all-gather") == 0, found
  assert sum(1 for k, s in found if k == "all-reduce" and "[1,32,32]" in s) == 1, found


def test_row_norm_with_rows_sharded_has_no_collectives():
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  sh = {"w": NamedSharding(mesh, P(("fsdp", "tensor"))),
        "stack": NamedSharding(mesh, P("tensor", "fsdp"))}
  x = jax.device_put({"w": normal((64, 48), 0), "stack": normal((4, 32, 16), 1)}, sh)
  axes = {"w": A(0, 1), "stack": STACK}
  for tx in (symoptax.scale_by_row_norm(axes=axes, shardings=sh),
             symoptax.scale_by_shape("rms", axes=axes, shardings=sh)):
    assert collectives(update_fn(tx), x) == []


def test_row_norm_with_cols_sharded_psums_only_the_row_norms():
  mesh = make_mesh((8,), ("fsdp",))
  sh = {"w": NamedSharding(mesh, P(None, "fsdp"))}
  x = jax.device_put({"w": normal((24, 64), 0)}, sh)
  found = collectives(update_fn(symoptax.scale_by_row_norm(shardings=sh)), x)
  assert found and all(k == "all-reduce" and "[1,24,1]" in s for k, s in found), found


def test_muon_on_sharded_layer_stack_uses_all_to_all_and_never_gathers_the_stack():
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  params = {"layers": normal((6, 64, 32), 0)}  # 6 layers: not a multiple of 8
  sh = {"layers": NamedSharding(mesh, P(None, "fsdp", "tensor"))}
  x = jax.device_put(params, sh)
  tx = symoptax.muon(0.02, axes=STACK, shardings=sh)
  state = jax.jit(tx.init)(x)
  found = collectives(lambda u, s: tx.update(u, s, u), x, state)
  kinds = [k for k, _ in found]
  assert kinds.count("all-to-all") == 4, found  # there over fsdp, tensor; back over both
  assert "all-gather" not in kinds and "all-reduce" not in kinds, found


# ------------------------------------------------------------------------------------------
# The plumbing: the sharded map itself, resolving shardings, errors.


def test_whole_route_moves_whole_matrices_and_back():
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  x = normal((5, 32, 16), 0)
  spec = P(None, "fsdp", "tensor")
  shards = sharding_lib.MatrixShards(("fsdp",), ("tensor",), (32, 16), 8)
  seen = []

  def body(block):
    def f(w):
      seen.append(w.shape)
      return polar(w, method="svd")
    return shards.whole(f, block)

  out = jax.jit(sharding_lib.shard_map(body, mesh=mesh, in_specs=spec, out_specs=spec))(
      jax.device_put(x, NamedSharding(mesh, spec)))
  assert seen == [(1, 32, 16)]  # 5 matrices padded to 8, one whole matrix per device
  np.testing.assert_allclose(out, polar(x, method="svd"), atol=2e-6)


def test_partition_specs_need_a_mesh_and_errors_name_the_leaf():
  mesh = make_mesh((8,), ("fsdp",))
  params = {"a": {"w": jnp.ones((12, 16))}}
  with pytest.raises(ValueError, match=r"a/w.*PartitionSpec.*no mesh"):
    symoptax.symmetry_stack(0.1, params=params, shardings={"a": {"w": P("fsdp")}})
  with pytest.raises(ValueError, match=r"a/w has 12 entries along axis 0, not divisible"):
    symoptax.symmetry_stack(0.1, params=params, shardings={"a": {"w": P("fsdp")}}, mesh=mesh)
  with pytest.raises(ValueError, match=r"a/w: mesh axis 'model'"):
    symoptax.symmetry_stack(0.1, params=params, shardings={"a": {"w": P(None, "model")}},
                            mesh=mesh)
  with pytest.raises(ValueError, match="mesh= needs shardings="):
    symoptax.symmetry_stack(0.1, params=params, mesh=mesh)
  other = make_mesh((4, 2), ("fsdp", "tensor"))
  two = {"a": {"w": NamedSharding(mesh, P()), "v": NamedSharding(other, P())}}
  with pytest.raises(ValueError, match="different meshes"):
    symoptax.muon(0.1, shardings=two).init({"a": {"w": jnp.ones((8, 8)), "v": jnp.ones(8)}})


def test_partition_specs_with_mesh_and_prefix_trees():
  mesh = make_mesh((4, 2), ("fsdp", "tensor"))
  params = {"a": normal((32, 16), 0), "b": {"c": normal((16, 32), 1), "d": jnp.ones(16)}}
  grads = jax.tree.map(lambda p: normal(p.shape, 7), params)
  # A prefix: one spec for the whole subtree "b" (vectors under it are replicated by hand).
  specs = {"a": P("fsdp", "tensor"), "b": {"c": P("tensor", "fsdp"), "d": None}}
  tx = symoptax.muon(0.1, shardings=specs, mesh=mesh)
  named = {"a": NamedSharding(mesh, specs["a"]),
           "b": {"c": NamedSharding(mesh, specs["b"]["c"]), "d": NamedSharding(mesh, P())}}
  x, g = jax.device_put(params, named), jax.device_put(grads, named)
  u, _ = jax.jit(tx.update)(g, jax.jit(tx.init)(x), x)
  ref, _ = symoptax.muon(0.1).update(grads, symoptax.muon(0.1).init(params), params)
  assert max(jax.tree.leaves(jax.tree.map(relative_error, u, ref))) < 1e-5
  assert u["a"].sharding.spec == specs["a"]


def test_unsharded_state_statistics_keep_their_layout():
  # The per-row / per-column statistics are stored unflattened ([*batch, *rows]) so that they
  # can be sharded like the rows they describe.
  params = {"w": jnp.ones((3, 4, 8, 6))}
  axes = A(rows=(1, 2), cols=3)
  state = symoptax.scale_by_row_second_moment(axes=axes).init(params)
  assert state.nu["w"].shape == (3, 4, 8)
  state = symoptax.scale_by_namo_d(axes=axes).init(params)
  assert state.nu["w"].shape == (3, 6)


def test_headwise_attention_sharded_between_heads_matches_one_device_and_cutting_heads_raises():
  """A 2-D query kernel [d, H hd] read head by head (H = 4, hd = 8): its heads axis split
  over 2 or 4 devices keeps whole heads on each and equals the single-device step (the
  kernel's d axis split too, then not); split over 8 it would cut heads apart, which raises
  naming the leaf."""
  params = {"attn": {"q_proj": {"kernel": normal((16, 32), 0)}}}
  axes = symoptax.matrix_axes(params, head_dim=8)
  grads = [{"attn": {"q_proj": {"kernel": normal((16, 32), 1 + i)}}} for i in range(2)]
  ref, _ = run_steps(symoptax.muon(0.1, axes=axes), params, grads, jit=False)
  for spec in (P("fsdp", "tensor"), P(None, "fsdp")):  # 2 heads a device, then 1
    mesh = make_mesh((4, 2), ("fsdp", "tensor"))
    shardings = {"attn": {"q_proj": {"kernel": NamedSharding(mesh, spec)}}}
    with sharding_lib.use_mesh(mesh):
      tx = symoptax.muon(0.1, axes=axes, shardings=shardings)
      outs, _ = run_steps(tx, jax.device_put(params, shardings), grads)
    for u, u_ref in zip(outs, ref):
      err = relative_error(u["attn"]["q_proj"]["kernel"], u_ref["attn"]["q_proj"]["kernel"])
      assert err < 1e-5, (spec, err)
  mesh = make_mesh((8,), ("tensor",))
  shardings = {"attn": {"q_proj": {"kernel": NamedSharding(mesh, P(None, "tensor"))}}}
  tx = symoptax.muon(0.1, axes=axes, shardings=shardings)
  with pytest.raises(ValueError, match=r"\['attn'\]\['q_proj'\]\['kernel'\]: read as 4 heads "
                                       r"of 8 .*split over 8 devices"):
    with sharding_lib.use_mesh(mesh):
      run_steps(tx, jax.device_put(params, shardings), grads)


@pytest.mark.parametrize("norm", ["nuclear", "row_l21"])
@pytest.mark.parametrize("mesh_name", sorted(CASES))
def test_noise_adaptive_sharded_equals_single_device(mesh_name, norm):
  """The wrapper's dual-norm statistics under shard_map (psum'd) equal the single-device ones,
  and its updates stay in the parameters' shardings."""
  mesh, params, axes, shardings = case(mesh_name)
  grads = [jax.tree.map(lambda p, i=i: (1 + i) * normal(p.shape, 100 + i) + 0.5 * p, params)
           for i in range(3)]
  make = lambda **kw: symoptax.noise_adaptive(symoptax.muon(0.1, axes=axes, **kw), norm=norm,
                                              axes=axes, **kw)
  ref, _ = run_steps(make(), params, grads)
  put = lambda t: jax.device_put(t, shardings)
  out, _ = run_steps(make(shardings=shardings), put(params), [put(g) for g in grads])
  for step, (u_ref, u) in enumerate(zip(ref, out)):
    for k in params:
      err = relative_error(u[k], u_ref[k])
      assert err < 1e-5, f"{mesh_name} {norm}: leaf {k} step {step}: rel. error {err:.2e}"
      assert u[k].sharding.is_equivalent_to(shardings[k], u[k].ndim), (k, u[k].sharding)


# MuonQ's sharded step (its state's packed codes shard as the parameters do), defined with the
# helpers it needs in test_variants_muonq.py and collected here, in the 8-device run.
from test_variants_muonq import (  # noqa: E402, F401
    test_sharded_step_equals_single_device_and_state_keeps_its_shardings as
    test_muonq_sharded_step_equals_single_device_and_state_keeps_its_shardings)
# Conda's state shardings (its parameter-shaped second moment and whole bases), likewise.
from test_variants_conda import (  # noqa: E402, F401
    test_sharded_state_keeps_the_parameters_shardings_and_a_replicated_basis as
    test_conda_sharded_state_keeps_the_parameters_shardings_and_a_replicated_basis)
# Compositional Muon's step on the global arrays (Auto and Explicit mesh axes), likewise.
from test_variants_compositional import (  # noqa: E402, F401
    test_sharded_step_equals_single_device_and_keeps_the_shardings as
    test_compositional_muon_sharded_step_equals_single_device_and_keeps_the_shardings)
