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
    "rmnp": (lambda: symoptax.rmnp(LR), ("lpro",), "biorth"),
    "pion": (lambda: symoptax.pion(LR, threshold=0.7), ("biorth",), None),
    "namo_d": (lambda: symoptax.namo_d(LR, clamp=0.3), ("rplo",), "lpro"),
    "muon_pp": (lambda: symoptax.muon_pp(LR, weight_decay=WD), ("biorth",), None),
    # A sharp brake (gamma 30) makes AuON's one scalar per matrix visibly basis-dependent.
    "auon": (lambda: symoptax.auon(LR, gamma=30.0), ("perm",), "biorth"),
    "hybrid_auon": (lambda: symoptax.hybrid_auon(LR, gamma=30.0), ("perm",), "biorth"),
    "hyperp": (lambda: symoptax.hyperp(LR), ("biorth",), None),
    "md_decoupled": (lambda: symoptax.md_decoupled(symoptax.muon(LR), gain_learning_rate=0.05),
                     ("perm",), "biorth"),
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


def train_qwen3(tx, graphdef, params, rest, steps):
  """The losses of ``steps`` jitted steps of ``tx`` on the Qwen3 model, one fixed batch."""
  loss = lambda p, t: next_token_loss(nnx.merge(graphdef, p, rest), t)
  tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 256)

  @jax.jit
  def step(p, s):
    l, g = jax.value_and_grad(loss)(p, tokens)
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s, l

  state = tx.init(params)
  losses = []
  for _ in range(steps):
    params, state, l = step(params, state)
    losses.append(float(l))
  return losses


@pytest.mark.parametrize("rule", ["normuon", "muoneq", "spectral_clip", "namo", "namo_d",
                                  "aurora", "pion", "rmnp"])
def test_variant_trains_the_qwen3_model(rule):
  graphdef, params, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  hidden = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")
  tx = symoptax.symmetry_stack(0.02, preset="muon", overrides={r: rule for r in hidden})
  rows = symoptax.describe(params, overrides={r: rule for r in hidden}).rows
  assert {r["rule"] for r in rows if r["role"] in hidden} == {rule}
  losses = train_qwen3(tx, graphdef, params, rest, steps=8)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_the_newer_variants_train_the_qwen3_model_in_one_stack():
  """Muon++, AuON, Hybrid-AuON, HyperP and MuonQ as symmetry_stack rules, one role each (one
  compilation), with the whole stack inside noise_adaptive."""
  graphdef, params, rest = nnx.split(qwen3.Qwen3(rngs=nnx.Rngs(0)), nnx.Param, ...)
  rules = {"attn_q": "muon_pp", "attn_k": "auon", "attn_v": "hybrid_auon", "attn_o": "hyperp",
           "mlp_in": "muonq", "mlp_out": "muon"}
  rows = symoptax.describe(params, preset="muon", overrides=rules).rows
  assert {(r["role"], r["rule"]) for r in rows if r["role"] in rules} == set(rules.items())
  tx = symoptax.noise_adaptive(symoptax.symmetry_stack(0.02, preset="muon", overrides=rules))
  losses = train_qwen3(tx, graphdef, params, rest, steps=8)
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


# --- RMNP, Aurora, Pion-style high-pass, NAMO-D, QK-clip -----------------------------------

def ema(m, g):
  return BETA * (0 if m is None else m) + (1 - BETA) * g


def test_rmnp_formula_and_identity_with_uncentred_rownorm():
  rown = lambda x: x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)
  run_two_steps(symoptax.rmnp(LR, beta=BETA, weight_decay=WD), (12, 5), ema,
                lambda m, _: rown(m))
  g = {"w": normal((16, 6), 2)}
  a, b = symoptax.rmnp(0.1), symoptax.rownorm_m(0.1, center=False)
  np.testing.assert_array_equal(a.update(g, a.init(g))[0]["w"], b.update(g, b.init(g))[0]["w"])


def leverage_polar_np(x, steps, power):
  m, n = x.shape
  if m <= n:
    return polar(x)
  d = 1 / (np.linalg.norm(x, axis=1) + 1e-8)
  u = polar(d[:, None] * x)
  for _ in range(steps - 1):
    d = d * ((n / m) / (np.sum(u ** 2, axis=1) + 1e-8)) ** power
    u = polar(d[:, None] * x)
  return u


@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (6, 6)])
@pytest.mark.parametrize("steps", [1, 2, 4])
def test_aurora_formula(shape, steps):
  scale = np.sqrt(max(1, shape[0] / shape[1]))
  tx = symoptax.aurora(LR, steps=steps, beta=BETA, weight_decay=WD, method="svd")
  run_two_steps(tx, shape, nesterov({}),
                lambda m, _: scale * leverage_polar_np(m, steps, 0.5))


def test_aurora_one_step_is_the_hybrid_map_and_more_steps_even_out_the_rows():
  # A tall matrix with very uneven leverage: a few rows carry most of the column space.
  g = np.asarray(normal((48, 8), 5), np.float64)
  g[:4] *= 30.0
  one = symoptax.scale_by_leverage_polar(steps=1, method="svd")
  hyb = symoptax.hybrid_polargrad_m(1.0, beta=0.0, nuclear_power=0.0, method="eigh")
  gj = {"w": jax.numpy.asarray(g, jax.numpy.float32)}
  a = one.update(gj, one.init(gj))[0]["w"]
  b = -hyb.update(gj, hyb.init(gj))[0]["w"]
  np.testing.assert_allclose(a, b, atol=1e-4)
  spread = []
  for steps in (1, 2, 6):
    tx = symoptax.scale_by_leverage_polar(steps=steps, method="svd")
    u = np.asarray(tx.update(gj, tx.init(gj))[0]["w"], np.float64)
    np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-4)  # still orthonormal columns
    rows = np.linalg.norm(u, axis=1)
    spread.append(rows.max() / rows.min())
  plain = np.linalg.norm(polar(g), axis=1)
  assert plain.max() / plain.min() > 3 * spread[0]  # Muon's rows are far less even
  assert spread[2] < spread[1] < spread[0] and spread[2] < 1.05, spread


@pytest.mark.parametrize("threshold,strength", [(0.5, 1.0), (1.0, 0.5), (0.8, 0.0)])
def test_pion_formula(threshold, strength):
  shape = (12, 5)

  def direction(m, _):
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    tau = threshold * np.linalg.norm(m) / np.sqrt(min(shape))
    h = np.where(s >= tau, 1.0, (1 - strength) + strength * s / tau)
    return np.sqrt(12 / 5) * (u * h) @ vt

  tx = symoptax.pion(LR, threshold=threshold, strength=strength, beta=BETA, weight_decay=WD,
                     method="svd")
  run_two_steps(tx, shape, nesterov({}), direction)


def test_pion_is_scale_invariant_and_zero_safe():
  g = normal((20, 7), 8)
  tx = symoptax.scale_by_high_pass_polar(0.7, 1.0, method="svd")
  a = tx.update({"w": g}, tx.init(None))[0]["w"]
  b = tx.update({"w": 1e-6 * g}, tx.init(None))[0]["w"]
  np.testing.assert_allclose(a, b, atol=1e-4)
  z = tx.update({"w": 0 * g}, tx.init(None))[0]["w"]
  assert np.all(np.asarray(z) == 0)


@pytest.mark.parametrize("clamp", [0.3, 1.0])
def test_namo_d_formula(clamp):
  shape, b1, b2, eps = (12, 5), 0.9, 0.99, 1e-8
  w = np.asarray(normal(shape, 0), np.float64)
  tx = symoptax.namo_d(LR, b1=b1, b2=b2, clamp=clamp, weight_decay=WD, method="svd")
  state = tx.init({"w": w.astype(np.float32)})
  m, v = np.zeros(shape), np.zeros(shape[1])
  for t in (1, 2, 3):
    g = np.asarray(normal(shape, t), np.float64) * np.array([1, 5, 0.2, 1, 3])  # uneven cols
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * np.sum(g ** 2, axis=0)
    d = np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * np.linalg.norm(m, axis=0) / (np.sqrt(v) + eps)
    d = np.clip(d, clamp * d.mean(), d.mean() / clamp)
    u, state = tx.update({"w": g.astype(np.float32)}, state, {"w": w.astype(np.float32)})
    np.testing.assert_allclose(u["w"], -LR * (polar(m) + WD * w) * d, rtol=2e-4, atol=2e-5)
    if clamp == 1.0:
      assert np.ptp(d) < 1e-12  # one step size per matrix


@pytest.mark.parametrize("shape", [(24, 10), (10, 24), (12, 12)])
def test_aurora_symmetry_class(shape):
  make = lambda: symoptax.aurora(LR)
  assert equivariance_error(make(), "lpro", shape) < 1e-4
  if shape[0] > shape[1]:  # tall: the row scaling breaks left rotations
    assert equivariance_error(make(), "biorth", shape) > 1e-2
  else:  # square and wide: plain polar, bi-orthogonal
    assert equivariance_error(make(), "biorth", shape) < 1e-4


def qk_problem(seed=0, heads=2, head_dim=3, d=6):
  ks = jax.random.split(jax.random.key(seed), 5)
  params = {"attn": {"q_proj": {"kernel": 3 * jax.random.normal(ks[0], (d, heads * head_dim))},
                     "k_proj": {"kernel": 3 * jax.random.normal(ks[1], (d, heads * head_dim))},
                     "o_proj": {"kernel": jax.random.normal(ks[2], (heads * head_dim, d))}}}
  updates = jax.tree.map(lambda p: 0.01 * jax.random.normal(ks[3], p.shape), params)
  x = jax.random.normal(ks[4], (5, d))

  def logits(p):  # [heads, 5, 5] q.k logits of the toy attention
    q = (x @ p["attn"]["q_proj"]["kernel"]).reshape(5, heads, head_dim)
    k = (x @ p["attn"]["k_proj"]["kernel"]).reshape(5, heads, head_dim)
    return jax.numpy.einsum("qhd,khd->hqk", q, k)

  return params, updates, logits


@pytest.mark.parametrize("per_head", [False, True])
def test_qk_clip_rescales_logits_by_gamma(per_head):
  params, updates, logits = qk_problem()
  stepped = optax.apply_updates(params, updates)
  s = np.asarray(jax.numpy.max(logits(params), axis=(1, 2)))  # measured before the step
  tau = float(np.sort(s)[0]) * 0.5 if per_head else float(s.max()) * 0.5
  max_logits = jax.tree.map(lambda _: None, params)
  value = s if per_head else s.max()
  max_logits["attn"]["q_proj"]["kernel"] = value
  max_logits["attn"]["k_proj"]["kernel"] = value
  tx = symoptax.qk_clip(tau, alpha=0.3)
  out, _ = jax.jit(lambda u, p, m: tx.update(u, tx.init(p), p, max_logits=m))(
      updates, params, max_logits)
  clipped = optax.apply_updates(params, out)
  gamma = np.minimum(1.0, tau / (s if per_head else np.full_like(s, s.max())))
  np.testing.assert_allclose(logits(clipped), gamma[:, None, None] * logits(stepped),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(out["attn"]["o_proj"]["kernel"],
                                updates["attn"]["o_proj"]["kernel"])  # not a q/k leaf


def test_qk_clip_leaves_updates_alone_below_threshold_or_without_logits():
  params, updates, logits = qk_problem()
  s = float(jax.numpy.max(logits(params)))
  max_logits = jax.tree.map(lambda _: None, params)
  max_logits["attn"]["q_proj"]["kernel"] = s
  tx = symoptax.qk_clip(2 * s)
  out, _ = tx.update(updates, tx.init(params), params, max_logits=max_logits)
  chex_equal = lambda a, b: jax.tree.map(np.testing.assert_allclose, a, b)
  chex_equal(out, updates)
  chex_equal(tx.update(updates, tx.init(params), params)[0], updates)
  bad = dict(max_logits)
  bad["attn"] = {**max_logits["attn"], "q_proj": {"kernel": np.ones(4)}}  # 4 heads vs 6 cols
  with pytest.raises(ValueError, match="attn/q_proj/kernel.*head_axis"):
    tx.update(updates, tx.init(params), params, max_logits=bad)


def test_qk_clip_after_the_stack_trains_qwen3_with_sown_max_logits():
  model = qwen3.Qwen3(qwen3.Config(track_max_logit=True), rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  from symoptax.roles import path_str

  def loss_and_logits(p, tokens):
    m = nnx.merge(graphdef, p, rest)
    if hasattr(nnx, "capture"):  # flax >= 0.12.8 collects sown values this way
      loss, sown = nnx.capture(next_token_loss, nnx.Intermediate)(m, tokens)
    else:
      loss, sown = next_token_loss(m, tokens), nnx.state(m, nnx.Intermediate)
    sown = nnx.to_pure_dict(sown)
    per_layer = {i: sown["layers"][i]["self_attn"]["max_logit"][0].max()
                 for i in range(len(sown["layers"]))}

    def at(path, _):
      keys = path_str(path).split("/")
      if keys[-2] in ("q_proj", "k_proj"):
        return per_layer[int(keys[1])]
      return None

    return loss, jax.tree_util.tree_map_with_path(at, p)

  tau = 1.0  # low, so that clipping engages
  tx = optax.chain(symoptax.symmetry_stack(0.02, params=params), symoptax.qk_clip(tau))
  tokens = jax.random.randint(jax.random.key(1), (4, 17), 0, 256)

  @jax.jit
  def step(p, s):
    (l, max_logits), g = jax.value_and_grad(loss_and_logits, has_aux=True)(p, tokens)
    u, s = tx.update(g, s, p, max_logits=max_logits)
    return optax.apply_updates(p, u), s, l, max_logits

  state, losses = tx.init(params), []
  for i in range(6):
    new, state, l, max_logits = step(params, state)
    ml = jax.tree.leaves(max_logits)
    assert ml and max(float(x) for x in ml) > tau
    losses.append(float(l))
    params = new
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_qk_clip_refuses_logits_for_a_leaf_that_is_not_query_or_key():
  params, updates, _ = qk_problem()
  max_logits = jax.tree.map(lambda _: None, params)
  max_logits["attn"]["o_proj"]["kernel"] = 50.0
  tx = symoptax.qk_clip(1.0)
  with pytest.raises(ValueError, match="attn/o_proj/kernel.*not labelled a query or key"):
    tx.update(updates, tx.init(params), params, max_logits=max_logits)
  # Explicit labels name the leaves instead of the role labeller.
  labels = jax.tree.map(lambda _: None, params)
  labels["attn"]["o_proj"]["kernel"] = "q"
  out, _ = symoptax.qk_clip(1.0, labels=labels).update(updates, tx.init(params), params,
                                                      max_logits=max_logits)
  w, u = params["attn"]["o_proj"]["kernel"], updates["attn"]["o_proj"]["kernel"]
  np.testing.assert_allclose(out["attn"]["o_proj"]["kernel"],
                             (1 / 50.0) ** 0.5 * (w + u) - w, rtol=1e-5, atol=1e-6)


def test_qk_clip_is_bi_orthogonally_equivariant_and_passes_the_optax_checks():
  params, updates, logits = qk_problem()
  s = float(jax.numpy.max(logits(params)))
  max_logits = jax.tree.map(lambda _: None, params)
  max_logits["attn"]["q_proj"]["kernel"] = s
  max_logits["attn"]["k_proj"]["kernel"] = s
  tx = symoptax.qk_clip(0.5 * s)
  run = lambda u, p: tx.update(u, tx.init(p), p, max_logits=max_logits)[0]
  # f(U u V^T, U W V^T) = U f(u, W) V^T for orthogonal U, V (a per-layer scalar scaling).
  rot = lambda n, k: np.linalg.qr(np.asarray(normal((n, n), k), np.float64))[0]
  a, b = rot(6, 11), rot(6, 12)
  turn = lambda tree: jax.tree.map(lambda x: jax.numpy.asarray(a @ np.asarray(x) @ b.T,
                                                               jax.numpy.float32), tree)
  chex_close = lambda x, y: jax.tree.map(
      lambda i, j: np.testing.assert_allclose(i, j, rtol=1e-4, atol=1e-5), x, y)
  chex_close(run(turn(updates), turn(params)), turn(run(updates, params)))
  # jit == no jit; bf16 stays bf16; init from ShapeDtypeStructs; inject_hyperparams.
  chex_close(jax.jit(run)(updates, params), run(updates, params))
  bf = lambda tree: jax.tree.map(lambda x: x.astype(jax.numpy.bfloat16), tree)
  assert all(x.dtype == jax.numpy.bfloat16 for x in jax.tree.leaves(run(bf(updates), bf(params))))
  tx.init(jax.eval_shape(lambda: params))
  injected = optax.inject_hyperparams(symoptax.qk_clip, static_args=("head_axis",))(
      threshold=0.5 * s)
  out, _ = injected.update(updates, injected.init(params), params, max_logits=max_logits)
  chex_close(out, run(updates, params))
  # MultiSteps: nothing on the first micro-step, the clipped update of the mean on the second.
  multi = optax.MultiSteps(tx, every_k_schedule=2)
  state = multi.init(params)
  first, state = multi.update(updates, state, params, max_logits=max_logits)
  second, _ = multi.update(updates, state, params, max_logits=max_logits)
  assert all(float(jax.numpy.abs(x).max()) == 0 for x in jax.tree.leaves(first))
  chex_close(second, run(updates, params))


def test_variant_argument_checks_and_degenerate_inputs():
  with pytest.raises(ValueError, match=r"clamp must be in \(0, 1\]"):
    symoptax.namo_d(0.1, clamp=0.0)
  g = np.array(normal((32, 6), 3))
  g[5] = 0.0  # a zero row: no leverage, must stay finite and zero
  tx = symoptax.scale_by_leverage_polar(steps=12, method="svd")
  u = np.asarray(tx.update({"w": g}, tx.init(None))[0]["w"])
  assert np.isfinite(u).all() and np.all(u[5] == 0)
  params, updates, _ = qk_problem(heads=2, head_dim=3)
  max_logits = jax.tree.map(lambda _: None, params)
  max_logits["attn"]["k_proj"]["kernel"] = np.array([9.0, 9.0, 9.0])  # 3 values, 2 heads
  with pytest.raises(ValueError, match=r"k_proj/kernel has 2 heads of 3.*gives 3"):
    symoptax.qk_clip(1.0, head_dim=3).update(updates, optax.EmptyState(), params,
                                             max_logits=max_logits)
