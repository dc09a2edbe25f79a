"""Quickstart: train a small byte-level language model with symoptax's named optimizers.

The model is a context-window MLP LM (token embedding -> hidden layers -> LM head) trained
on the source files of this Python interpreter's standard library, which exist on every
machine: no download, no tokenizer. Each optimizer trains the same model from the same
initialisation on the same batches; the script prints a table of validation losses and
writes it as JSON.

Optimizers compared (``--optimizers``):
  adamw    optax.adamw on every leaf.
  muon     symoptax.muon on the hidden matrices, AdamW on embedding, head and vectors
           (today's common practice).
  rownorm  Muon on hidden matrices; row-normalised momentum on the embedding and the LM head
           (centred, for the softmax shift); AdamW on vectors.
  paper    Muon on hidden matrices; right polar (nu-scaled) on the embedding; hybrid
           row-norm-then-polar (centred) on the head; AdamW on vectors.

  python examples/quickstart.py                 # about a minute on a 2-core CPU
  python examples/quickstart.py --steps 2000 --optimizers adamw paper
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python examples/quickstart.py`: make `examples` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import symoptax
from examples import progress
from symoptax import MatrixAxes

# Flax layout: Dense kernels are [in, out] (rows = output units = axis 1), the embedding is
# [vocab, d] (rows = tokens = axis 0), the head kernel [d, vocab] (rows = vocabulary = axis 1).
AXES = {"embed": MatrixAxes(0, 1), "w1": MatrixAxes(1, 0), "w2": MatrixAxes(1, 0),
        "w3": MatrixAxes(1, 0), "head": MatrixAxes(1, 0), "b1": None, "b2": None, "b3": None}
ROLES = {"embed": "embedding", "w1": "hidden", "w2": "hidden", "w3": "hidden",
         "head": "lm_head", "b1": "vector", "b2": "vector", "b3": "vector"}


def load_corpus(max_bytes: int) -> np.ndarray:
  """Bytes of the standard library's .py files, in a fixed (sorted) order."""
  root = Path(os.__file__).parent
  chunks, total = [], 0
  for path in sorted(root.glob("*.py")):
    data = path.read_bytes()
    chunks.append(data)
    total += len(data)
    if total >= max_bytes:
      break
  if total == 0:
    raise SystemExit(f"No .py files found under {root}; cannot build the default corpus.")
  return np.frombuffer(b"".join(chunks)[:max_bytes], dtype=np.uint8).astype(np.int32)


def init_params(key, context: int, d: int, hidden: int, vocab: int = 256):
  ks = jax.random.split(key, 5)
  dense = lambda k, i, o: jax.random.normal(k, (i, o)) / np.sqrt(i)
  return {
      "embed": jax.random.normal(ks[0], (vocab, d)),
      "w1": dense(ks[1], context * d, hidden), "b1": jnp.zeros(hidden),
      "w2": dense(ks[2], hidden, hidden), "b2": jnp.zeros(hidden),
      "w3": dense(ks[3], hidden, d), "b3": jnp.zeros(d),
      "head": dense(ks[4], d, vocab),
  }


def loss_fn(params, x, y):
  h = params["embed"][x].reshape(x.shape[0], -1)
  h = jax.nn.gelu(h @ params["w1"] + params["b1"])
  h = jax.nn.gelu(h @ params["w2"] + params["b2"])
  h = h @ params["w3"] + params["b3"]
  logits = h @ params["head"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_optimizer(name: str, lr: float, steps: int) -> optax.GradientTransformation:
  """One optimizer per name, each leaf routed by its role through optax.multi_transform.

  Peak learning rates were picked by a small sweep on this script's default run (400 steps):
  nu-scaled rules (right polar, hybrid) take steps of size lr * ||X||_*, so their rates are
  not comparable with the others'.
  """
  def sched(peak):  # shifted by one: optax counts from 0, and the first update gets a rate
    warmup = optax.warmup_cosine_decay_schedule(0.0, peak, steps // 20, steps, peak * 0.1)
    return lambda count: warmup(count + 1)
  adamw = optax.adamw(sched(3e-3 * lr), b1=0.9, b2=0.95, weight_decay=0.01)
  hidden = symoptax.muon(sched(0.02 * lr), axes=AXES)
  rules = {
      "adamw": {"embedding": adamw, "hidden": adamw, "lm_head": adamw, "vector": adamw},
      "muon": {"embedding": adamw, "hidden": hidden, "lm_head": adamw, "vector": adamw},
      "rownorm": {"embedding": symoptax.rownorm_m(sched(0.1 * lr), axes=AXES),
                  "hidden": hidden,
                  "lm_head": symoptax.rownorm_m(sched(3e-3 * lr), center=True, axes=AXES),
                  "vector": adamw},
      "paper": {"embedding": symoptax.right_polargrad_m(sched(0.1 * lr), axes=AXES),
                "hidden": hidden,
                "lm_head": symoptax.hybrid_polargrad_m(sched(3e-4 * lr), center=True,
                                                       axes=AXES),
                "vector": adamw},
  }[name]
  return optax.multi_transform(rules, lambda p: {k: ROLES[k] for k in p})


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=progress.HelpFormatter,
                                   epilog=__doc__.split("\n\n", 1)[1])
  parser.add_argument("--optimizers", nargs="+", default=["adamw", "muon", "rownorm", "paper"],
                      choices=["adamw", "muon", "rownorm", "paper"])
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--context", type=int, default=16)
  parser.add_argument("--d", type=int, default=64, help="embedding width")
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--lr-scale", type=float, default=1.0,
                      help="multiplies every optimizer's learning rates")
  parser.add_argument("--corpus-bytes", type=int, default=4_000_000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="runs/quickstart/results.json")
  parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
  args = parser.parse_args(argv)
  if os.environ.get("SYMOPTAX_SMOKE"):
    args.steps, args.hidden, args.corpus_bytes = 20, 64, 200_000

  data = load_corpus(args.corpus_bytes)
  split = int(0.9 * len(data))
  train, val = data[:split], data[split:]
  rng = np.random.default_rng(args.seed)
  starts = rng.integers(0, len(train) - args.context - 1, size=(args.steps, args.batch))
  val_starts = np.random.default_rng(1).integers(0, len(val) - args.context - 1, size=2048)
  window = np.arange(args.context)
  val_x, val_y = val[val_starts[:, None] + window], val[val_starts + args.context]
  val_loss = jax.jit(loss_fn)
  params0 = init_params(jax.random.key(args.seed), args.context, args.d, args.hidden)
  print(f"corpus: {len(data):,} bytes of {Path(os.__file__).parent}; "
        f"device: {jax.devices()[0].device_kind}; steps: {args.steps}")

  results = {}
  for name in args.optimizers:
    tx = make_optimizer(name, args.lr_scale, args.steps)

    @jax.jit
    def step(params, state, x, y):
      loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
      updates, state = tx.update(grads, state, params)
      return optax.apply_updates(params, updates), state, loss

    params, state = params0, tx.init(params0)
    progress.say(progress.compile_note(f"the {name} train step", 3))
    bar = progress.bar(args.steps, name, disable=args.no_progress)
    meter, marked = progress.Throughput(args.batch), 0  # one predicted byte per example
    for i in range(args.steps):
      s = starts[i]
      params, state, loss = step(params, state, train[s[:, None] + window],
                                 train[s + args.context])
      if i == 0:
        bar.write(f"{name}: compiled and ran the first step in {meter.first(loss):.1f} s")
      elif i % 50 == 0 or i == args.steps - 1:  # waits for the step: the rate since the last
        meter.mark(i - marked, loss)
        marked = i
        bar.set_postfix(loss=f"{float(loss):.3f}", tok_s=f"{meter.rate:.0f}", refresh=False)
      bar.update(1)
    bar.close()
    results[name] = {"train_loss": float(loss), "val_loss": float(val_loss(params, val_x, val_y)),
                     "seconds": meter.elapsed, "compile_s": meter.compile_s}
    if not np.isfinite(results[name]["val_loss"]):
      raise SystemExit(f"{name}: validation loss is not finite")

  print(f"\n{'optimizer':10s} {'train loss':>10s} {'val loss':>9s} {'seconds':>8s} "
        f"{'compile s':>9s}")
  for name, r in results.items():
    print(f"{name:10s} {r['train_loss']:10.4f} {r['val_loss']:9.4f} {r['seconds']:8.1f} "
          f"{r['compile_s']:9.1f}")
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
  print(f"wrote {out}")
  return results


if __name__ == "__main__":
  main()
