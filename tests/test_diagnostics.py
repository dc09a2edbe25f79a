"""symoptax.diagnostics: per-role statistics against direct numpy computations, and the
softmax-shift drift they exist to show (zero gradient along it, zero centred steps, nonzero
AdamW steps)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import symoptax
from symoptax.diagnostics import update_stats

from helpers import normal

PARAMS = {
    "embed_tokens": {"embedding": normal((64, 8), 0)},
    "layers": {"mlp": {"up_proj": {"kernel": normal((8, 24), 1)},
                       "down_proj": {"kernel": normal((24, 8), 2)}},
               "input_layernorm": {"scale": jnp.ones(8)}},
    "lm_head": {"kernel": normal((8, 64), 3)},
}


def test_stats_match_numpy():
  updates = jax.tree.map(lambda p: 0.01 * normal(p.shape, 7) + 0.001, PARAMS)
  stats = update_stats(updates, PARAMS, logits=jnp.array([[1.0, 7.5], [-3.0, 2.0]]))
  up, down = updates["layers"]["mlp"]["up_proj"]["kernel"], updates["layers"]["mlp"][
      "down_proj"]["kernel"]
  pd = PARAMS["layers"]["mlp"]["down_proj"]["kernel"]
  assert float(stats["mlp_in/update_rms"]) == pytest.approx(
      np.sqrt(np.mean(np.square(up))), rel=1e-5)
  assert float(stats["mlp_out/update_rel"]) == pytest.approx(
      np.linalg.norm(down) / np.linalg.norm(pd), rel=1e-5)
  assert float(stats["mlp_in/update_op"]) == pytest.approx(np.linalg.norm(up, 2), rel=2e-3)
  assert float(stats["vector/update_rel"]) == pytest.approx(
      np.linalg.norm(updates["layers"]["input_layernorm"]["scale"]) / np.sqrt(8), rel=1e-5)
  assert "vector/update_op" not in stats and "mlp_in/mean_row" not in stats
  head, d_head = PARAMS["lm_head"]["kernel"], updates["lm_head"]["kernel"]  # [d, V]
  assert float(stats["lm_head/mean_row"]) == pytest.approx(
      np.linalg.norm(np.mean(head, axis=1)), rel=1e-5)
  assert float(stats["lm_head/mean_row_step"]) == pytest.approx(
      np.linalg.norm(np.mean(d_head, axis=1)), rel=1e-5)
  assert float(stats["max_logit"]) == 7.5
  jitted = jax.jit(lambda u, p: update_stats(u, p, spectral=False))(updates, PARAMS)
  assert float(jitted["lm_head/update_rms"]) == pytest.approx(float(stats["lm_head/update_rms"]))
  assert "lm_head/update_op" not in jitted


def softmax_grads(head, seed):
  """Gradient of a cross entropy through the head [d, V] on random features."""
  h = normal((32, head.shape[0]), seed)
  labels = jax.random.randint(jax.random.key(seed), (32,), 0, head.shape[1])
  loss = lambda w: optax.softmax_cross_entropy_with_integer_labels(h @ w, labels).mean()
  return jax.grad(loss)(head)


@pytest.mark.parametrize("rule,center,drifts", [
    ("adamw", False, True), ("hybrid", False, True), ("hybrid", True, False),
    ("rownorm", True, False), ("left_polar", True, False)])
def test_head_drift_along_the_softmax_shift_only_without_centring(rule, center, drifts):
  head = {"lm_head": {"kernel": PARAMS["lm_head"]["kernel"]}}
  axes = symoptax.matrix_axes(head)  # rows = the vocabulary (axis 1 of [d, V])
  kw = dict(center=center, axes=axes)
  tx = {"adamw": lambda: optax.adamw(1e-2, weight_decay=0.0),
        "hybrid": lambda: symoptax.hybrid_polargrad_m(1e-2, **kw),
        "rownorm": lambda: symoptax.rownorm_m(1e-2, **kw),
        "left_polar": lambda: symoptax.left_polargrad_m(1e-2, **kw)}[rule]()
  state, params, steps = tx.init(head), head, []
  for i in range(3):
    g = {"lm_head": {"kernel": softmax_grads(params["lm_head"]["kernel"], i)}}
    # The gradient itself has no component along the shift: its mean over the vocabulary is 0.
    assert float(update_stats(g, params)["lm_head/mean_row_step"]) < 1e-7
    u, state = tx.update(g, state, params)
    stats = update_stats(u, params)
    # The mean row's share of the update (the mean of V rows of RMS r has norm ~ r sqrt(d/V)).
    steps.append(float(stats["lm_head/mean_row_step"] / stats["lm_head/update_rms"]))
    params = optax.apply_updates(params, u)
  if drifts:
    assert min(steps) > 1e-2, steps
  else:
    assert max(steps) < 1e-5, steps
