"""Optimizer step time and state memory on a Qwen3-0.6B-shaped parameter tree.

Compares, on whatever device JAX sees:
  optax.adamw                       every leaf
  optax.contrib.muon + adamw        optax's Muon on the hidden matrices (attention, MLP),
                                    its internal Adam on embedding, head and vectors
  symoptax "muon" preset            symoptax.muon on the same hidden matrices, AdamW on the rest
  symoptax presets                  "paper", "rownorm", "hybrid", "adamw"
  symoptax "rownorm+rmnp"           row-norm on every matrix (RMNP on the hidden ones)

The tree is Qwen3-0.6B's (untied: vocab 151936, d 1024, 28 layers, SwiGLU ff 3072, q 2048,
kv 1024, q/k RMSNorm), every width divided by ``--scale`` (layers kept). Each step is
``tx.update`` + ``optax.apply_updates`` under jit with donated params and state, on fixed
random gradients; the time is the median of ``--repeats`` warm steps, taken round-robin
across the optimizers in a shuffled order. Also prints the
optimizer-state bytes and, per optimizer, an estimated roofline (polar-step FLOPs at the
measured matmul rate, in the precision the polar step uses on this device, plus elementwise
bytes at the measured read bandwidth). Writes JSON; asserts nothing.

  python benchmarks/step_time.py --scale 8          # CPU-sized
  python benchmarks/step_time.py --scale 1          # the real shapes (GPU/TPU)
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers

import symoptax
from symoptax.polar import resolve_compute_dtype

from _results import HelpFormatter, write_json  # benchmarks/_results.py (this folder: sys.path)


def qwen3_tree(scale: int):
  v, d, ff, q, kv, hd = (151936 // scale, 1024 // scale, 3072 // scale, 2048 // scale,
                         1024 // scale, 128 // scale)
  sds = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  layer = {"input_layernorm": {"scale": sds(d)}, "post_attention_layernorm": {"scale": sds(d)},
           "self_attn": {"q_proj": {"kernel": sds(d, q)}, "k_proj": {"kernel": sds(d, kv)},
                         "v_proj": {"kernel": sds(d, kv)}, "o_proj": {"kernel": sds(q, d)},
                         "q_norm": {"scale": sds(hd)}, "k_norm": {"scale": sds(hd)}},
           "mlp": {"gate_proj": {"kernel": sds(d, ff)}, "up_proj": {"kernel": sds(d, ff)},
                   "down_proj": {"kernel": sds(ff, d)}}}
  return {"embed_tokens": {"embedding": sds(v, d)},
          "layers": {str(i): layer for i in range(28)},
          "norm": {"scale": sds(d)}, "lm_head": {"kernel": sds(d, v)}}


HIDDEN = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")


def optax_muon_dims(params):
  """optax.contrib.muon on the hidden matrices only (Flax [in, out] kernels)."""
  roles = symoptax.label_roles(params)
  return jax.tree_util.tree_map(
      lambda r: MuonDimensionNumbers(reduction_axis=0, output_axis=1) if r in HIDDEN else None,
      roles)


# Row-norm on every matrix (RMNP on the hidden ones): the "rownorm" preset without Muon, the
# like-for-like comparison of the row-norm rule's cost with AdamW's.
ROWNORM_ALL = {r: "rmnp" for r in symoptax.stacks.HIDDEN_ROLES}
CONFIGS = {f"symoptax:{p}": dict(preset=p) for p in ("muon", "paper", "rownorm", "hybrid",
                                                      "adamw")}
CONFIGS["symoptax:rownorm+rmnp"] = dict(preset="rownorm", overrides=ROWNORM_ALL)


def optimizers(lr=0.02):
  return {
      "optax.adamw": optax.adamw(lr),
      "optax.contrib.muon+adam": optax.contrib.muon(
          lr, muon_weight_dimension_numbers=optax_muon_dims),
      **{name: symoptax.symmetry_stack(lr, **kw) for name, kw in CONFIGS.items()},
  }


def materialise(tree, seed):
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, l.shape, l.dtype) * 0.02
                            for k, l in zip(keys, leaves)])


class Runner:
  """One optimizer's jitted train step (donated params and state), compiled and warm."""

  def __init__(self, tx, params, grads):
    def step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    self.step, self.grads = jax.jit(step, donate_argnums=(0, 1)), grads
    self.state = tx.init(params)
    self.state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(self.state))
    self.params = jax.tree_util.tree_map(jnp.copy, params)
    for _ in range(2):
      self.run()
    self.times: list[float] = []

  def run(self):
    t0 = time.perf_counter()
    self.params, self.state = self.step(self.params, self.state, self.grads)
    jax.block_until_ready(self.params)
    return (time.perf_counter() - t0) * 1e3


def time_steps(runners, repeats, seed=0):
  """Median step time of each runner; steps taken round-robin, so that a busy moment of the
  machine slows every optimizer alike instead of the one being timed, in a new random order
  every round (a step right after a heavy one runs slower on a CPU: caches and threads)."""
  order, rng = list(runners.values()), random.Random(seed)
  for _ in range(repeats):
    rng.shuffle(order)
    for r in order:
      r.times.append(r.run())
  return {name: statistics.median(r.times) for name, r in runners.items()}


def _best_seconds(f, x, repeats):
  jax.block_until_ready(f(x))
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(x))
    best = min(best, time.perf_counter() - t0)
  return best


def device_rates():
  """Measured matmul FLOP/s and read bandwidth (bytes/s) of the default device.

  ``"low"``: matmuls in the precision the default Polar Express step uses here
  (``compute_dtype="auto"``: bf16 inputs with fp32 accumulation on GPU/TPU, fp32 on CPU);
  ``"fp32"``: fp32 at HIGHEST precision (the Gram-side iteration and multiply back).
  """
  n = 2048 if jax.devices()[0].platform == "cpu" else 8192
  mm = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32,
                                    precision=jax.lax.Precision.HIGHEST))
  rd = jax.jit(jnp.sum)  # read bandwidth, no allocation
  b = jnp.ones((64 * 2 ** 20,), jnp.float32)
  # Best of 7: the peak the device reaches, not what a busy moment leaves of it.
  rates = {"fp32": 2 * n ** 3 / _best_seconds(mm, jnp.ones((n, n), jnp.float32), 7),
           "read": b.nbytes / _best_seconds(rd, b, 7)}
  low = resolve_compute_dtype("auto", "polar_express", "full")
  rates["low"] = (rates["fp32"] if low is None
                  else 2 * n ** 3 / _best_seconds(mm, jnp.ones((n, n), low), 7))
  return rates


FULL_POLAR = ("muon", "polargrad")
GRAM_POLAR = ("right_polar", "left_polar", "hybrid")


def polar_seconds(params, rule_of, rates, preset):
  """Time of the polar steps' matmuls at the measured rates: Polar Express (5 steps) on the
  full side for Muon and PolarGrad (every matmul in the "low" precision), on the small Gram
  for the one-sided and hybrid rules (the Gram's formation "low", its 5 steps of 4 small
  products and the multiply back fp32); ``rule_of(path, role)``; the matrices as ``preset``
  reads them (head-wise or whole attention)."""
  total = 0.0
  for row in symoptax.describe(params, preset=preset).rows:
    rule = rule_of(row["path"], row["role"])
    if row["batched"] is None or rule not in FULL_POLAR + GRAM_POLAR:
      continue
    batch, m, n = row["batched"]
    m, n = sorted((m, n))  # m the short side
    if rule in FULL_POLAR:  # per step: the Gram, its square, the product with X
      total += batch * 5 * (4 * m * m * n + 2 * m ** 3) / rates["low"]
    else:
      total += batch * (2 * m * m * n / rates["low"]
                        + (2 * m * m * n + 5 * 4 * 2 * m ** 3) / rates["fp32"])
  return total


def roofline_ms(name, params, rates):
  """Estimated lower bound: the polar steps' matmuls at the measured rates plus the
  elementwise traffic (AdamW: read params, grads, two moments, write three; one-buffer rules:
  read three, write two) at the measured read bandwidth."""
  preset = "muon"  # optax.contrib.muon reads attention whole, as the "muon" preset
  if name == "optax.adamw":
    rules = lambda path, role: "adamw"
  elif name == "optax.contrib.muon+adam":
    rules = lambda path, role: "muon" if role in HIDDEN else "adamw"
  else:
    table = symoptax.stacks.resolve_rules(1.0, **CONFIGS[name])
    rules = lambda path, role: table[role].rule
    preset = CONFIGS[name].get("preset", "paper")
  words = 0
  for row in symoptax.describe(params).rows:
    words += math.prod(row["shape"]) * (7 if rules(row["path"], row["role"]) == "adamw" else 5)
  return (polar_seconds(params, rules, rates, preset) + 4 * words / rates["read"]) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=HelpFormatter)
  parser.add_argument("--scale", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--only", nargs="*", default=None, help="subset of optimizer names")
  parser.add_argument("--json", default="runs/bench/step_time.json")
  parser.add_argument("--sequential", action="store_true",
                      help="time one optimizer at a time and free it before the next (less "
                           "memory: --scale 1 holds every optimizer's state at once otherwise, "
                           "~60 GB)")
  args = parser.parse_args()

  abstract = qwen3_tree(args.scale)
  params, grads = materialise(abstract, 0), materialise(abstract, 1)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  rates = device_rates()

  txs = optimizers()
  names = [n for n in txs if not args.only or n in args.only]
  results = {}
  for batch in ([[n] for n in names] if args.sequential else [names]):
    runners = {}
    for name in batch:
      runners[name] = Runner(txs[name], params, grads)
      print(f"compiled {name}", flush=True)
    for name, ms in time_steps(runners, args.repeats).items():
      results[name] = {"ms": ms, "state_bytes": runners[name].state_bytes,
                       "roofline_ms": roofline_ms(name, params, rates)}
      print(f"{name}: {ms:.2f} ms/step, state {runners[name].state_bytes / 2**20:.1f} MB",
            flush=True)
    del runners
    if args.sequential:  # what is measured so far survives a run stopped part way
      write_json(args.json, scale=args.scale, n_params=n_params, rates=rates,
                 sequential=args.sequential, results=results, partial=True)

  dev = jax.devices()[0]
  print(f"\nQwen3-0.6B-shaped tree / {args.scale}: {n_params / 1e6:.1f} M params; device "
        f"{dev.device_kind} ({dev.platform}), jax {jax.__version__}; measured matmul "
        f"{rates['low'] / 1e9:.0f} GFLOP/s (polar precision), {rates['fp32'] / 1e9:.0f} "
        f"GFLOP/s (fp32 HIGHEST), read {rates['read'] / 1e9:.1f} GB/s")
  base = results.get("optax.adamw", {}).get("ms")
  muon = results.get("optax.contrib.muon+adam", {}).get("ms")
  base_b = results.get("optax.adamw", {}).get("state_bytes")
  print(f"{'optimizer':26s} {'ms/step':>9s} {'x adamw':>8s} {'x optax muon':>12s} "
        f"{'state MB':>9s} {'x adamw state':>13s} {'roofline ms':>11s} {'x roofline':>10s}")
  for name, r in results.items():
    f = lambda x, b: f"{x / b:.2f}" if b else "-"
    print(f"{name:26s} {r['ms']:9.1f} {f(r['ms'], base):>8s} {f(r['ms'], muon):>12s} "
          f"{r['state_bytes'] / 2**20:9.1f} {f(r['state_bytes'], base_b):>13s} "
          f"{r['roofline_ms']:11.1f} {f(r['ms'], r['roofline_ms']):>10s}")
  write_json(args.json, scale=args.scale, n_params=n_params, rates=rates,
             sequential=args.sequential, results=results)


if __name__ == "__main__":
  main()
