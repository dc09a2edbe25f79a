"""Compose your own symmetry-compatible optimizer from symoptax primitives and optax.

``symmetry_stack`` covers the common choices; this example builds a custom one by hand, the
way you would for a rule of your own:

* SwiGLU gate/up/down projections (left-permutation / right-orthogonal: rows are neurons):
  momentum -> row normalisation -> right polar (the "hybrid" order) -> learning rate;
* the LM head (also shift-invariant): momentum -> centre -> row normalisation -> centre;
* attention matrices (bi-orthogonal): ``symoptax.muon``;
* embedding and vectors: ``optax.adamw``.

Leaves are routed with ``optax.multi_transform`` and a label function built on
``symoptax.label_roles``; ``symoptax.matrix_axes`` tells every primitive which axis is the
rows axis. The script prints the labelling, what ``symoptax.describe`` says the "paper"
preset would do for comparison, and trains the Qwen3-style model for a few steps with both.

  python examples/custom_hybrid.py
  python examples/custom_hybrid.py --steps 300
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import optax
from flax import nnx

import symoptax
from examples import data as data_lib
from examples import progress
from examples.models import qwen3
from examples.models.common import next_token_loss
from symoptax.roles import path_str

CPU_COMPILE_S = 3  # seconds to compile one train step on a 2-core CPU (for the message)

# role (from symoptax.label_roles) -> the name of my rule
MY_GROUPS = {
    "mlp_in": "swiglu", "mlp_out": "swiglu",
    "lm_head": "head",
    "attn_q": "attention", "attn_k": "attention", "attn_v": "attention", "attn_o": "attention",
    "embedding": "adamw", "vector": "adamw",
}


def my_labels(params):
  """Label function for multi_transform: each leaf's role mapped to one of my groups."""
  roles = symoptax.label_roles(params)
  return jax.tree.map(lambda role: MY_GROUPS.get(role, "attention"), roles)


def my_optimizer(params, lr: float = 0.02, momentum: float = 0.95):
  """My stack: the hybrid chain on SwiGLU, a centred row-norm head, Muon on attention."""
  axes = symoptax.matrix_axes(params)  # a MatrixAxes per matrix leaf, None for vectors
  swiglu = optax.chain(
      optax.trace(decay=momentum),                     # M_t = beta M_{t-1} + G_t
      symoptax.scale_by_row_norm(axes=axes),           # R(M): unit rows (neurons)
      symoptax.scale_by_polar(side="right", axes=axes),  # polar factor via the small Gram
      symoptax.scale_by_shape("muon", axes=axes),      # Muon's sqrt(max(1, fan_out/fan_in))
      optax.scale_by_learning_rate(lr))
  head = optax.chain(
      optax.trace(decay=momentum),
      symoptax.center_rows(axes=axes),                 # no drift along the softmax shift
      symoptax.scale_by_row_norm(axes=axes),
      symoptax.center_rows(axes=axes),
      optax.scale_by_learning_rate(0.1 * lr))
  return optax.multi_transform(
      {"swiglu": swiglu, "head": head,
       "attention": symoptax.muon(lr, axes=axes),
       "adamw": optax.adamw(0.25 * lr, b1=0.9, b2=0.95, weight_decay=0.01)},
      my_labels)


def train(tx, graphdef, params, rest, data, steps, batch, seq, name="", no_progress=False):
  loss_fn = lambda p, tokens: next_token_loss(nnx.merge(graphdef, p, rest), tokens)

  @jax.jit
  def step(params, state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  progress.say(progress.compile_note(f"the {name} train step", CPU_COMPILE_S))
  state, losses = tx.init(params), []
  bar = progress.bar(steps, name, disable=no_progress)
  meter = progress.Throughput(batch * seq)
  for i in range(steps):
    params, state, loss = step(params, state, data.batch(i, batch, seq))
    if i == 0:
      bar.write(f"{name}: compiled and ran the first step in {meter.first(loss):.1f} s")
    losses.append(float(loss))  # waits for the step: the rate is measured per step
    if i:
      meter.mark(1)
      bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{meter.rate:.0f}", refresh=False)
    bar.update(1)
  bar.close()
  return losses


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=progress.HelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--lr", type=float, default=0.02)
  p.add_argument("--no-progress", action="store_true", help="no tqdm bars")
  args = p.parse_args(argv)
  vocab, batch, seq, max_bytes = 4096, 16, 128, 8_000_000
  size = dict(d=128, layers=2, heads=4, kv_heads=2, head_dim=32, ff=384)
  if os.environ.get("SYMOPTAX_SMOKE", "") not in ("", "0"):
    args.steps, vocab, batch, seq, max_bytes = 8, 512, 4, 32, 300_000
    size = dict(d=32, layers=1, heads=2, kv_heads=1, head_dim=16, ff=64)
  data = data_lib.prepare("builtin", vocab, max_bytes, log=progress.say)
  cfg = qwen3.Config(vocab=data.vocab, **size)
  graphdef, params, rest = nnx.split(qwen3.Qwen3(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)

  print("My labels:")
  for path, group in jax.tree_util.tree_flatten_with_path(my_labels(params))[0]:
    print(f"  {path_str(path):40s} {group}")
  print("\nFor comparison, symoptax.describe(params, preset='paper'):")
  print(symoptax.describe(params, preset="paper", learning_rate=args.lr))

  results = {}
  paper = symoptax.symmetry_stack(args.lr, preset="paper", params=params)
  for name, tx in [("custom", my_optimizer(params, args.lr)), ("paper preset", paper)]:
    losses = train(tx, graphdef, params, rest, data, args.steps, batch, seq, name,
                   args.no_progress)
    results[name] = losses
    tail = losses[-max(1, len(losses) // 10):]
    print(f"{name:13s} loss {losses[0]:.3f} -> {sum(tail) / len(tail):.3f} "
          f"(mean of the last {len(tail)} steps)")
  return results


if __name__ == "__main__":
  main()
