"""Compositional Muon (symoptax.compositional_muon, scale_by_compositional_muon): a numpy
transcription in the authors' convention (x W kernels, grouped-query attention), the same
step on HF 2-D, MaxText 3-D and scanned layouts, its symmetry group both ways (per-head
invertible reparametrisations at damping 0, orthogonal ones with damping, scaled orthogonal
ones for the isotropic rule; Muon and the damped/isotropic rules as negative controls),
residual-stream rotations and head permutations, the optax battery, a toy problem, the
errors, and the stack rule. The sharded step is in test_sharding.py."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from helpers import max_rel_error, normal, orthogonal

D, HD = 16, 4
LR = 0.1
ATTN = ("attn_q", "attn_k", "attn_v", "attn_o")


def tree(layers=1, heads=4, kv_heads=4, seed=0, scale=1.0):
  """HF/NNX-style unscanned layers: q/k/v kernels [d, H hd], o [H hd, d]."""
  out = {}
  for i in range(layers):
    s = seed + 10 * i
    out[f"layer_{i}"] = {"self_attn": {
        "q_proj": {"kernel": scale * normal((D, heads * HD), s)},
        "k_proj": {"kernel": scale * normal((D, kv_heads * HD), s + 1)},
        "v_proj": {"kernel": scale * normal((D, kv_heads * HD), s + 2)},
        "o_proj": {"kernel": scale * normal((heads * HD, D), s + 3)}}}
  return out


def like(params, seed):
  return jax.tree.map(lambda x: normal(x.shape, seed + x.size % 97), params)


def f64(x):
  return np.asarray(x, np.float64)


def msign(x):
  u, _, vt = np.linalg.svd(x, full_matrices=False)
  return u @ vt


def inv_root(a, lam, isotropic=False):
  n = a.shape[0]
  if isotropic:
    return np.eye(n) / np.sqrt(np.trace(a) / n + lam)
  w, v = np.linalg.eigh(a)
  return (v / np.sqrt(w + lam)) @ v.T


def reference_step(g, w, lam, isotropic=False):
  """One step's direction for one layer in the authors' convention: W_Q,h = q[:, h] (d x hd),
  W_O,h = o[h] (hd x d); query head h reads key/value head h // G."""
  heads = lambda x: [x[:, j * HD:(j + 1) * HD] for j in range(x.shape[1] // HD)]
  rows = lambda x: [x[j * HD:(j + 1) * HD] for j in range(x.shape[0] // HD)]
  gq, gk, gv, go = heads(g["q"]), heads(g["k"]), heads(g["v"]), rows(g["o"])
  wq, wk, wv, wo = heads(w["q"]), heads(w["k"]), heads(w["v"]), rows(w["o"])
  h, hk = len(wq), len(wk)
  grp = h // hk
  group = lambda j: range(j * grp, (j + 1) * grp)
  ck = [inv_root(k.T @ k, lam, isotropic) for k in wk]
  cq = [inv_root(sum(wq[i].T @ wq[i] for i in group(j)), lam, isotropic) for j in range(hk)]
  dq = [0.5 * msign(gq[i] @ ck[i // grp]) @ ck[i // grp] for i in range(h)]
  dk = [0.5 / grp * msign(gk[j] @ cq[j]) @ cq[j] for j in range(hk)]
  cv = [inv_root(v.T @ v, lam, isotropic) for v in wv]
  co = [inv_root(sum(wo[i] @ wo[i].T for i in group(j)), lam, isotropic) for j in range(hk)]
  dv = [0.5 / grp * msign(gv[j] @ co[j]) @ co[j] for j in range(hk)]
  p = msign(np.concatenate([cv[i // grp] @ go[i] for i in range(h)], axis=0))
  do = [0.5 * cv[i // grp] @ p[i * HD:(i + 1) * HD] for i in range(h)]
  return {"q": np.concatenate(dq, 1), "k": np.concatenate(dk, 1),
          "v": np.concatenate(dv, 1), "o": np.concatenate(do, 0)}


NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}


def layer(t, i):
  return {s: f64(t[f"layer_{i}"]["self_attn"][n]["kernel"]) for s, n in NAMES.items()}


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("isotropic", [False, True], ids=["whitened", "isotropic"])
def test_matches_a_transcription_in_the_authors_convention(heads, kv_heads, isotropic):
  params = tree(layers=2, heads=heads, kv_heads=kv_heads)
  grads = [like(params, 100 + t) for t in range(3)]
  beta, lam, wd = 0.9, 0.05, 0.01
  tx = symoptax.compositional_muon(LR, beta=beta, damping=lam, isotropic=isotropic,
                                   weight_decay=wd, method="svd", head_dim=HD)
  state, p = tx.init(params), params
  ref_p = {i: layer(params, i) for i in range(2)}
  ref_m = {i: {s: 0.0 for s in NAMES} for i in range(2)}
  step = jax.jit(tx.update)
  for g in grads:
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
    for i in range(2):
      gi = layer(g, i)
      ref_m[i] = {s: beta * ref_m[i][s] + gi[s] for s in NAMES}
      d = reference_step(ref_m[i], ref_p[i], lam, isotropic)
      want = {s: -LR * (d[s] + wd * ref_p[i][s]) for s in NAMES}
      got = layer(u, i)
      for s in NAMES:
        assert max_rel_error(got[s], want[s]) < 2e-4, (i, s)
      ref_p[i] = {s: ref_p[i][s] + want[s] for s in NAMES}


def to_maxtext(t, layers):
  """The same layers as a MaxText scanned tree: query/key/value [d, L, H, hd], out
  [H, L, hd, d] (scan axis 1)."""
  def stack(name):
    return jnp.stack([t[f"layer_{i}"]["self_attn"][name]["kernel"] for i in range(layers)])
  qkv = lambda x: jnp.transpose(x.reshape(layers, D, -1, HD), (1, 0, 2, 3))
  return {"decoder": {"layers": {"self_attention": {
      "query": {"kernel": qkv(stack("q_proj"))}, "key": {"kernel": qkv(stack("k_proj"))},
      "value": {"kernel": qkv(stack("v_proj"))},
      "out": {"kernel": jnp.transpose(stack("o_proj").reshape(layers, -1, HD, D),
                                      (1, 0, 2, 3))}}}}}


def to_scanned_hf(t, layers):
  """The same layers as one scanned HF-style stack: kernels [L, d, H hd], [L, H hd, d]."""
  return {"layers": {"self_attn": {n: {"kernel": jnp.stack(
      [t[f"layer_{i}"]["self_attn"][n]["kernel"] for i in range(layers)])}
      for n in NAMES.values()}}}


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_the_same_step_on_2d_3d_and_scanned_layouts(kv_heads):
  params = tree(layers=3, kv_heads=kv_heads)
  grads = like(params, 7)
  make = lambda **kw: symoptax.compositional_muon(LR, method="svd", **kw)
  tx = make(head_dim=HD)
  want, _ = tx.update(grads, tx.init(params), params)
  tx = make(scan_axis=1)
  got, _ = tx.update(to_maxtext(grads, 3), tx.init(to_maxtext(params, 3)),
                     to_maxtext(params, 3))
  chex.assert_trees_all_close(got, to_maxtext(want, 3), atol=1e-5, rtol=1e-5)
  tx = make(head_dim=HD, scan_axis=0)
  got, _ = tx.update(to_scanned_hf(grads, 3), tx.init(to_scanned_hf(params, 3)),
                     to_scanned_hf(params, 3))
  chex.assert_trees_all_close(got, to_scanned_hf(want, 3), atol=1e-5, rtol=1e-5)


def attention_loss(params, seed=0):
  """A softmax attention layer (no positions) on fixed inputs: the loss sees q/k only
  through each head's Q_h K_h^T and v/o only through V_h O_h."""
  a = params["layer_0"]["self_attn"]
  x = normal((6, D), 900 + seed)
  target = normal((6, D), 901 + seed)
  q, k, v = (x @ a[n]["kernel"] for n in ("q_proj", "k_proj", "v_proj"))
  hq, hk = q.shape[1] // HD, k.shape[1] // HD
  split = lambda y, h: y.reshape(6, h, HD).transpose(1, 0, 2)
  q, k, v = split(q, hq), jnp.repeat(split(k, hk), hq // hk, 0), jnp.repeat(split(v, hk),
                                                                           hq // hk, 0)
  att = jax.nn.softmax(q @ k.transpose(0, 2, 1) / 2, axis=-1) @ v
  y = att.transpose(1, 0, 2).reshape(6, -1) @ a["o_proj"]["kernel"]
  return jnp.sum((y - target) ** 2)


def blockdiag(mats):
  n = sum(m.shape[0] for m in mats)
  out = np.zeros((n, n))
  i = 0
  for m in mats:
    out[i:i + m.shape[0], i:i + m.shape[0]] = m
    i += m.shape[0]
  return jnp.asarray(out, jnp.float32)


def gauge(params, a, b):
  """Reparametrise with per-head A_h (queries/keys) and B_h (values/outputs): Q_h -> A_h Q_h,
  K_h -> A_h^-T K_h, V_h -> B_h V_h, O_h -> O_h B_h^-1 (heads read [hd, d] / [d, hd]); in
  the kernels' x W form: W_Q -> W_Q blockdiag(A^T), W_K -> W_K blockdiag(A^-1), W_V -> W_V
  blockdiag(B^T), W_O -> blockdiag(B^-T) W_O. The loss does not change."""
  t = lambda ms: [np.asarray(m, np.float64).T for m in ms]
  inv = lambda ms: [np.linalg.inv(np.asarray(m, np.float64)) for m in ms]
  maps = {"q_proj": (None, blockdiag(t(a))), "k_proj": (None, blockdiag(inv(a))),
          "v_proj": (None, blockdiag(t(b))), "o_proj": (blockdiag(t(inv(b))), None)}

  def apply(name, w):
    left, right = maps[name]
    w = w if left is None else left @ w
    return w if right is None else w @ right
  return {"layer_0": {"self_attn": {n: {"kernel": apply(n, x["kernel"])}
                                    for n, x in params["layer_0"]["self_attn"].items()}}}


def gauge_update(u, a, b):
  """How an equivariant step moves under :func:`gauge`: dQ_h -> A_h dQ_h, dK_h -> A_h^-T dK_h,
  dV_h -> B_h dV_h, dO_h -> dO_h B_h^-1 -- the kernels' maps of :func:`gauge`."""
  return gauge(u, a, b)


def check_gauge(tx, params, a, b):
  g = jax.grad(attention_loss)(params)
  moved = gauge(params, a, b)
  g_moved = jax.grad(attention_loss)(moved)
  assert abs(float(attention_loss(moved)) - float(attention_loss(params))) < 1e-3 * float(
      attention_loss(params))
  u, _ = tx.update(g, tx.init(params), params)
  u_moved, _ = tx.update(g_moved, tx.init(moved), moved)
  return max(max_rel_error(x, y) for x, y in zip(jax.tree.leaves(u_moved),
                                                 jax.tree.leaves(gauge_update(u, a, b))))


def invertible(n, seed):
  rng = np.random.default_rng(seed)
  return jnp.asarray(np.eye(n) + 0.4 * rng.standard_normal((n, n)), jnp.float32)


HEADS = 4


def cm(**kw):
  return symoptax.compositional_muon(1.0, method="svd", head_dim=HD, **kw)


def test_equivariant_under_every_per_head_reparametrisation_at_damping_zero():
  params = tree(scale=0.3)  # a soft softmax: well-conditioned q/k gradients
  a = [invertible(HD, s) for s in range(HEADS)]
  b = [invertible(HD, 10 + s) for s in range(HEADS)]
  assert check_gauge(cm(damping=0.0), params, a, b) < 1e-3
  # Muon (head by head, the same matrices) is only orthogonally equivariant: it moves.
  muon = symoptax.muon(1.0, method="svd", axes=symoptax.matrix_axes(params, head_dim=HD))
  assert check_gauge(muon, params, a, b) > 0.1
  # The damping fixes a scale: with weights of its size, general maps move the step...
  small = tree(scale=0.05)
  assert check_gauge(cm(damping=1e-2), small, a, b) > 0.05
  # ... and the isotropic rule sees only each Gram's trace.
  assert check_gauge(cm(damping=0.0, isotropic=True), params, a, b) > 0.05


def test_equivariant_under_per_head_rotations_with_damping():
  params = tree(scale=0.05)  # weights where the damping matters
  a = [orthogonal(HD, s) for s in range(HEADS)]
  b = [orthogonal(HD, 10 + s) for s in range(HEADS)]
  assert check_gauge(cm(damping=1e-2), params, a, b) < 1e-3
  assert check_gauge(cm(damping=1e-2, isotropic=True), params, a, b) < 1e-3


def test_isotropic_rule_is_equivariant_under_scaled_rotations_only():
  params = tree(scale=0.3)
  a = [(0.5 + s) * orthogonal(HD, s) for s in range(HEADS)]
  b = [(2.0 - 0.4 * s) * orthogonal(HD, 10 + s) for s in range(HEADS)]
  assert check_gauge(cm(damping=0.0, isotropic=True), params, a, b) < 1e-3
  diag = [jnp.diag(jnp.asarray([1.0, 2.0, 0.5, 1.5])) for _ in range(HEADS)]
  assert check_gauge(cm(damping=0.0, isotropic=True), params, diag, diag) > 0.05


def test_equivariant_under_residual_rotations_and_head_permutations():
  params = tree(kv_heads=2)
  g = like(params, 3)
  tx = cm(damping=1e-2)
  u, _ = tx.update(g, tx.init(params), params)
  rot = orthogonal(D, 5)
  # Rotate the residual stream: x -> x R (q/k/v kernels R^T W, o W R).
  turn = lambda t: {"layer_0": {"self_attn": {
      n: {"kernel": (x["kernel"] @ rot if n == "o_proj" else rot.T @ x["kernel"])}
      for n, x in t["layer_0"]["self_attn"].items()}}}
  u2, _ = tx.update(turn(g), tx.init(params), turn(params))
  chex.assert_trees_all_close(u2, turn(u), atol=2e-5)
  # Swap the two key/value heads together with their groups of query heads.
  order_q, order_kv = [2, 3, 0, 1], [1, 0]

  def perm(t):
    cols = lambda x, order: jnp.concatenate([x[:, j * HD:(j + 1) * HD] for j in order], 1)
    a = t["layer_0"]["self_attn"]
    o = a["o_proj"]["kernel"]
    return {"layer_0": {"self_attn": {
        "q_proj": {"kernel": cols(a["q_proj"]["kernel"], order_q)},
        "k_proj": {"kernel": cols(a["k_proj"]["kernel"], order_kv)},
        "v_proj": {"kernel": cols(a["v_proj"]["kernel"], order_kv)},
        "o_proj": {"kernel": jnp.concatenate([o[j * HD:(j + 1) * HD] for j in order_q], 0)}}}}
  u3, _ = tx.update(perm(g), tx.init(params), perm(params))
  chex.assert_trees_all_close(u3, perm(u), atol=2e-5)
  # A query permutation across the groups changes which key head each query reads: the
  # step moves.
  wrong = [0, 2, 1, 3]
  split = lambda t: {**t, "layer_0": {"self_attn": {**t["layer_0"]["self_attn"], "q_proj": {
      "kernel": jnp.concatenate([t["layer_0"]["self_attn"]["q_proj"]["kernel"][
          :, j * HD:(j + 1) * HD] for j in wrong], 1)}}}}
  u4, _ = tx.update(split(g), tx.init(params), split(params))
  assert max_rel_error(u4["layer_0"]["self_attn"]["q_proj"]["kernel"],
                       split(u)["layer_0"]["self_attn"]["q_proj"]["kernel"]) > 1e-2


def test_the_composed_maps_step_is_half_the_budget_per_leg():
  """At damping 0 each leg of the QK circuit's step has spectral norm 1/2 (the half-split
  trust region), per query head; under GQA a key head's leg is 1/(2G) per query head."""
  params = tree(kv_heads=2)
  u, _ = cm(damping=0.0).update(like(params, 4), cm().init(params), params)
  a, d = params["layer_0"]["self_attn"], u["layer_0"]["self_attn"]
  head = lambda x, j: np.asarray(x["kernel"][:, j * HD:(j + 1) * HD], np.float64)
  for j in range(4):
    kv = j // 2
    q_leg = head(d["q_proj"], j) @ head(a["k_proj"], kv).T
    k_leg = head(a["q_proj"], j) @ head(d["k_proj"], kv).T
    assert np.isclose(np.linalg.norm(q_leg, 2), 0.5, rtol=1e-4)
    assert np.linalg.norm(k_leg, 2) <= 0.25 * (1 + 1e-4)


# The optax battery on an attention tree (tests/test_harness.py's checks).
def make_battery(**kw):
  return symoptax.compositional_muon(0.05, weight_decay=0.01, head_dim=HD, **kw)


@pytest.mark.parametrize("isotropic", [False, True])
def test_optax_battery(isotropic):
  params = tree(layers=2, kv_heads=2)
  params["norm"] = {"scale": jnp.ones(D)}
  grads = [like(params, 20 + t) for t in range(3)]

  def run(tx, jit, dtype=jnp.float32):
    p = jax.tree.map(lambda x: x.astype(dtype), params)
    state, outs = tx.init(p), []
    step = jax.jit(tx.update) if jit else tx.update
    for g in grads:
      u, state = step(jax.tree.map(lambda x: x.astype(dtype), g), state, p)
      p = optax.apply_updates(p, u)
      outs.append(u)
    return p, state, outs

  tx = make_battery(isotropic=isotropic)
  _, state, eager = run(tx, False)
  _, _, jitted = run(tx, True)
  chex.assert_trees_all_close(eager, jitted, atol=1e-4, rtol=1e-4)
  # The vector leaf takes the momentum only (no decay).
  np.testing.assert_allclose(eager[0]["norm"]["scale"], -0.05 * grads[0]["norm"]["scale"],
                             rtol=1e-6)
  init = tx.init(params)
  chex.assert_trees_all_equal_structs(init, state)
  chex.assert_trees_all_equal_shapes_and_dtypes(init, state)
  p16, _, outs16 = run(tx, True, jnp.bfloat16)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves([p16] + outs16))
  assert all(bool(jnp.all(jnp.isfinite(x.astype(jnp.float32)))) for x in jax.tree.leaves(p16))
  structs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  chex.assert_trees_all_equal_shapes_and_dtypes(jax.eval_shape(tx.init, structs), init)
  # inject_hyperparams: the same steps, and a live learning rate.
  injected = optax.inject_hyperparams(
      symoptax.compositional_muon, static_args=("isotropic", "nesterov", "head_dim"))(
          learning_rate=0.05, weight_decay=0.01, head_dim=HD, isotropic=isotropic)
  _, inj_state, inj = run(injected, True)
  chex.assert_trees_all_close(eager, inj, atol=1e-4, rtol=1e-4)
  inj_state.hyperparams["learning_rate"] = jnp.asarray(0.025)
  half, _ = injected.update(grads[0], inj_state, params)
  inj_state.hyperparams["learning_rate"] = jnp.asarray(0.05)
  full, _ = injected.update(grads[0], inj_state, params)
  chex.assert_trees_all_close(half, jax.tree.map(lambda x: x / 2, full), atol=1e-6)
  # MultiSteps applies the mean gradient.
  ms = optax.MultiSteps(tx, every_k_schedule=2)
  s = ms.init(params)
  u1, s = ms.update(grads[0], s, params)
  assert all(bool(jnp.all(x == 0)) for x in jax.tree.leaves(u1))
  u2, _ = ms.update(grads[1], s, params)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, grads[0], grads[1])
  want, _ = tx.update(mean, tx.init(params), params)
  chex.assert_trees_all_close(u2, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("isotropic", [False, True])
def test_toy_problem_converges(isotropic):
  """Fit two heads' circuits Q_h K_h^T and V_h O_h to low-rank targets from a small random
  start (a factorised problem: zero weights have zero gradients)."""
  params = tree(heads=2, kv_heads=2, scale=0.1)
  a = params["layer_0"]["self_attn"]
  targets = [normal((D, HD), 60 + s) @ normal((HD, D), 70 + s) / 4 for s in range(4)]

  def loss(p):
    a = p["layer_0"]["self_attn"]
    h = lambda x, j: x["kernel"][:, j * HD:(j + 1) * HD]
    total = 0.0
    for j in range(2):
      total += jnp.sum((h(a["q_proj"], j) @ h(a["k_proj"], j).T - targets[j]) ** 2)
      ov = h(a["v_proj"], j) @ a["o_proj"]["kernel"][j * HD:(j + 1) * HD]
      total += jnp.sum((ov - targets[2 + j]) ** 2)
    return total

  del a
  steps = 300
  tx = symoptax.compositional_muon(optax.cosine_decay_schedule(0.3, steps), head_dim=HD,
                                   isotropic=isotropic)

  def step(carry, _):
    p, s = carry
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return (optax.apply_updates(p, u), s), None

  (p, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  assert float(loss(p)) < 1e-3 * float(loss(params))


def test_errors_name_the_leaf_and_the_fix():
  params = tree()
  tx = cm()
  with pytest.raises(ValueError, match="needs params"):
    tx.update(params, tx.init(params))
  no_k = {"layer_0": {"self_attn": {n: v for n, v in params["layer_0"]["self_attn"].items()
                                    if n != "k_proj"}}}
  with pytest.raises(ValueError, match=r"layer_0/self_attn/q_proj/kernel \(attn_q\) has no "
                                       r"attn_k partner"):
    tx.update(no_k, tx.init(no_k), no_k)
  fused = {"layer_0": {"self_attn": {"qkv_proj": {"kernel": normal((D, 3 * D), 0)},
                                     "o_proj": {"kernel": normal((D, D), 1)}}}}
  with pytest.raises(ValueError, match=r"qkv_proj/kernel is a fused q/k/v kernel"):
    tx.update(fused, tx.init(fused), fused)
  odd = tree(heads=4, kv_heads=3)
  with pytest.raises(ValueError, match="grouped-query attention"):
    tx.update(odd, tx.init(odd), odd)


def stack_model():
  params = tree(layers=2, kv_heads=2)
  params["embed_tokens"] = {"embedding": normal((32, D), 40)}
  for i in range(2):
    params[f"layer_{i}"]["mlp"] = {"up_proj": {"kernel": normal((D, 32), 41 + i)},
                                   "down_proj": {"kernel": normal((32, D), 43 + i)}}
    params[f"layer_{i}"]["self_attn"]["q_norm"] = {"scale": jnp.ones(HD)}
    params[f"layer_{i}"]["self_attn"]["k_norm"] = {"scale": jnp.ones(HD)}
  return params


def test_stack_rule_on_the_attention_roles():
  params = stack_model()
  overrides = {r: "compositional_muon" for r in ATTN}
  stack = symoptax.symmetry_stack(0.02, preset="muon", overrides=overrides, params=params)
  g = like(params, 9)
  u, _ = jax.jit(stack.update)(g, stack.init(params), params)
  ratio = symoptax.stacks.LR_RATIO[("compositional_muon", "*")]
  alone = symoptax.compositional_muon(0.02 * ratio, head_dim=HD)
  attn = lambda t: {k: {"self_attn": {n: x for n, x in v["self_attn"].items()
                                      if n.endswith("proj")}}
                    for k, v in t.items() if k.startswith("layer_")}
  want, _ = alone.update(attn(g), alone.init(attn(params)), attn(params))
  chex.assert_trees_all_close(attn(u), want, atol=1e-6, rtol=1e-5)
  # The stack reads the attention head by head for this rule, whatever its attention option.
  rows = {r["path"]: r for r in symoptax.describe(params, preset="muon",
                                                  overrides=overrides).rows}
  assert rows["layer_0/self_attn/k_proj/kernel"]["matrices"] == "2 heads x [4, 16]"
  assert rows["layer_0/mlp/up_proj/kernel"]["rule"] == "muon"


def test_stack_rejects_half_a_pair_and_other_roles():
  params = stack_model()
  with pytest.raises(ValueError, match="attn_q and attn_k"):
    symoptax.symmetry_stack(0.02, preset="muon", params=params,
                            overrides={"attn_q": "compositional_muon"})
  with pytest.raises(ValueError, match="only the attention roles"):
    symoptax.symmetry_stack(0.02, preset="muon", params=params,
                            overrides={"mlp_in": "compositional_muon"})
  # QK alone is a valid choice (the authors' cm_qk without cm_ov).
  symoptax.symmetry_stack(0.02, preset="muon", params=params,
                          overrides={"attn_q": "compositional_muon",
                                     "attn_k": "compositional_muon"})


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (tests/test_sharding.py)")
@pytest.mark.parametrize("isotropic,explicit", [(False, False), (True, False), (False, True)],
                         ids=["whitened", "isotropic", "explicit-axes"])
def test_sharded_step_equals_single_device_and_keeps_the_shardings(isotropic, explicit):
  """A MaxText-style scanned GQA tree (heads over "tensor", d over "fsdp", layers over
  "data") and an HF 2-D tree (d and the heads axis split) on a 2 x 2 x 2 mesh: the step runs
  on the global arrays, equals the single-device one, and keeps updates and momentum in the
  parameters' shardings; on Explicit mesh axes too (sharding in types)."""
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  kind = AxisType.Explicit if explicit else AxisType.Auto
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(kind,) * 3)
  hf = tree(layers=2, kv_heads=2)
  mt = to_maxtext(tree(layers=2, kv_heads=2, seed=5), 2)
  specs_mt = {"query": P("fsdp", "data", "tensor"), "key": P("fsdp", "data", "tensor"),
              "value": P("fsdp", None, "tensor"), "out": P("tensor", "data", None, "fsdp")}
  specs_hf = {"q_proj": P("fsdp", "tensor"), "k_proj": P("fsdp", "tensor"),
              "v_proj": P(None, "tensor"), "o_proj": P("tensor", "fsdp")}
  sh_mt = {"decoder": {"layers": {"self_attention": {
      n: {"kernel": NamedSharding(mesh, s)} for n, s in specs_mt.items()}}}}
  sh_hf = {f"layer_{i}": {"self_attn": {n: {"kernel": NamedSharding(mesh, s)}
                                       for n, s in specs_hf.items()}} for i in range(2)}
  for params, shardings, kw in ((mt, sh_mt, {"scan_axis": 1}), (hf, sh_hf, {"head_dim": HD})):
    grads = [like(params, 30 + t) for t in range(3)]
    make = lambda **extra: symoptax.compositional_muon(LR, isotropic=isotropic,
                                                       weight_decay=0.01, **kw, **extra)
    tx = make()
    state, ref = tx.init(params), []
    for g in grads:
      u, state = jax.jit(tx.update)(g, state, params)
      ref.append(u)
    put = lambda t: jax.device_put(t, shardings)
    tx = make(shardings=shardings)
    with symoptax.sharding.use_mesh(mesh):
      state, outs = tx.init(put(params)), []
      for g in grads:
        u, state = jax.jit(tx.update)(put(g), state, put(params))
        outs.append(u)
    for u, want in zip(outs, ref):
      for x, y, s in zip(jax.tree.leaves(u), jax.tree.leaves(want),
                         jax.tree.leaves(shardings,
                                         is_leaf=lambda x: isinstance(x, NamedSharding))):
        assert max_rel_error(x, y) < 1e-4  # sums in another order, through eigh
        assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)
    flat_sh = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    momentum = jax.tree.leaves(state[0].trace)  # optax.trace's state, like the params
    assert len(momentum) == len(flat_sh)
    for x, s in zip(momentum, flat_sh):
      assert x.sharding.is_equivalent_to(s, x.ndim), (x.sharding, s)


def test_gradient_scale_invariance_and_the_weights_scale():
  """The step is invariant to the gradient's scale (1e-30 .. 1e30, float32: msign forgets it
  and the partners' roots do not see it). In the weights' scale s it is homogeneous of
  degree -1 at damping 0 (a head's step is its partner's inverse root times a unit one),
  finite from 1e-15 to 1e15; with damping it tends to damping^-1/2 msign(...) as s -> 0."""
  params = tree(kv_heads=2)
  grads = like(params, 11)
  tx = cm(damping=0.0)
  step = jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])
  base = step(grads, params)
  for k in (-30, -20, -10, 10, 20, 30):
    u = step(jax.tree.map(lambda g: g * 10.0 ** k, grads), params)
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(base)):
      assert np.all(np.isfinite(x)) and max_rel_error(x, y) < 1e-3, k
  for k in (-15, -6, 6, 15):
    s = 10.0 ** k
    u = step(grads, jax.tree.map(lambda w: w * s, params))
    for x, y in zip(jax.tree.leaves(u), jax.tree.leaves(base)):
      assert np.all(np.isfinite(x)) and max_rel_error(np.asarray(x, np.float64) * s, y) < 1e-3, k
  lam = 1e-2
  tiny = jax.tree.map(lambda w: w * 1e-8, params)
  damped = symoptax.compositional_muon(1.0, method="svd", head_dim=HD, damping=lam)
  u, _ = damped.update(grads, damped.init(tiny), tiny)
  muon = symoptax.muon(1.0, method="svd", nesterov=False, shape_rule="none",
                       axes=symoptax.matrix_axes(params, head_dim=HD))
  m, _ = muon.update(grads, muon.init(params), params)
  a, b = u["layer_0"]["self_attn"], m["layer_0"]["self_attn"]
  for n, share in (("q_proj", 0.5), ("k_proj", 0.25), ("v_proj", 0.25)):  # G = 2
    np.testing.assert_allclose(a[n]["kernel"], share * lam ** -0.5 * b[n]["kernel"],
                               rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("n", [4, 32, 128])
def test_inverse_roots_by_coupled_newton_schulz_match_eigh(n):
  """The partners' inverse roots (coupled Newton-Schulz, matrix products only) against a
  float64 eigendecomposition: to float32's resolution of the Gram over condition numbers
  1e1 .. 1e20 (the damping floor, 1e-5 of the Gram's norm, bounds what is resolved), and
  finite for a zero Gram."""
  from symoptax.variants.compositional import DAMPING_FLOOR, _inverse_root
  rng = np.random.default_rng(n)
  for cond, tol in ((1e1, 1e-5), (1e4, 2e-4), (1e9, 2e-3), (1e20, 2e-3)):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    w = np.logspace(0, -np.log10(cond), n) * 37.0
    gram = (q * w) @ q.T
    for lam in (0.0, 1e-2):
      lam_eff = max(lam, DAMPING_FLOOR * np.linalg.norm(gram))
      want = (q / np.sqrt(w + lam_eff)) @ q.T
      got = _inverse_root(jnp.asarray(gram[None], jnp.float32), lam, False)[0]
      assert max_rel_error(got, want) < tol, (cond, lam)
  zero = _inverse_root(jnp.zeros((1, n, n)), 0.0, False)
  assert bool(jnp.all(jnp.isfinite(zero)))


def test_stack_takes_a_rate_of_its_own_per_attention_role():
  """Rates an override sets (a schedule object per role, as examples/pretrain.py --role-lr
  builds them, or different numbers) keep the four roles in one step: each leaf is scaled by
  its own rate."""
  params = stack_model()
  g = like(params, 12)
  sched = lambda peak: (lambda count: peak * (1.0 - count / 100))
  rates = {"attn_q": 0.02, "attn_k": 0.02, "attn_v": 0.04, "attn_o": 0.04}
  overrides = {r: {"rule": "compositional_muon", "learning_rate": sched(v)}
               for r, v in rates.items()}
  stack = symoptax.symmetry_stack(0.02, preset="muon", overrides=overrides, params=params)
  state = stack.init(params)
  for _ in range(2):  # the second step's rates are the schedules' at count 1
    u, state = jax.jit(stack.update)(g, state, params)
  alone = symoptax.compositional_muon(1.0, head_dim=HD)
  attn = lambda t: {k: {"self_attn": {n: x for n, x in v["self_attn"].items()
                                      if n.endswith("proj")}}
                    for k, v in t.items() if k.startswith("layer_")}
  s = alone.init(attn(params))
  for _ in range(2):
    want, s = alone.update(attn(g), s, attn(params))
  for name, role in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                     ("o_proj", "attn_o")):
    np.testing.assert_allclose(u["layer_1"]["self_attn"][name]["kernel"],
                               sched(rates[role])(1) * want["layer_1"]["self_attn"][name][
                                   "kernel"], rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="need the same weight_decay"):
    symoptax.symmetry_stack(0.02, preset="muon", params=params, overrides={
        **{r: "compositional_muon" for r in ATTN},
        "attn_k": {"rule": "compositional_muon", "weight_decay": 0.1}})
