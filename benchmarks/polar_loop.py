"""Unrolled or rolled: the Polar Express loop of the full-side polar step.

``symoptax.polar`` writes the 5 steps of a coefficient table as a Python loop, which XLA sees
unrolled. The alternative is ``jax.lax.scan`` over the table (one compiled step body, the
coefficients as data). This benchmark times both on the batched hidden matrices of a
Qwen3-0.6B-shaped tree (widths divided by ``--scale``; 28 layers: q/o, gate/up/down and k/v
groups), jitted, warm, median of ``--repeats``, plus the compile time. Prints a table and writes
JSON; asserts nothing.

  python benchmarks/polar_loop.py --scale 8     # CPU-sized
  python benchmarks/polar_loop.py --scale 1     # the real shapes (GPU/TPU)
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from symoptax import polar as P

from _results import HelpFormatter, write_json  # benchmarks/_results.py (this folder: sys.path)


def scanned(x, compute_dtype):
  """Polar Express with the step loop rolled into ``lax.scan`` (same math as the library)."""
  wide = x.shape[-2] <= x.shape[-1]
  x = x if wide else x.mT
  x = P._safe_div(x, P._SCALE["polar_express"] * P._fro(x))

  def body(x, c):
    gram = P.matmul(x, x.mT, compute_dtype)
    return c[0] * x + P.matmul(c[1] * gram + c[2] * P.matmul(gram, gram, compute_dtype), x,
                               compute_dtype), None

  x = jax.lax.scan(body, x, jnp.asarray(P.POLAR_EXPRESS_COEFFS, x.dtype))[0]
  return x if wide else x.mT


def unrolled(x, compute_dtype):
  return P._full_polynomial(x, P.POLAR_EXPRESS_COEFFS, P._SCALE["polar_express"],
                            compute_dtype)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=HelpFormatter)
  parser.add_argument("--scale", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--json", default="runs/bench/polar_loop.json")
  args = parser.parse_args()
  d, q, ff, kv = (w // args.scale for w in (1024, 2048, 3072, 1024))
  shapes = [(56, d, q), (84, d, ff), (56, d, kv)]
  xs = [jax.random.normal(jax.random.key(i), s) for i, s in enumerate(shapes)]
  cd = P.resolve_compute_dtype("auto", "polar_express", "full")
  runs = {}
  for name, f in (("unrolled (library)", unrolled), ("lax.scan", scanned)):
    fn = jax.jit(lambda xs, f=f: [f(x, cd) for x in xs])
    t0 = time.perf_counter()
    fn.lower(xs).compile()
    runs[name] = dict(fn=fn, compile_ms=(time.perf_counter() - t0) * 1e3, times=[])
    jax.block_until_ready(fn(xs))
  for _ in range(args.repeats):  # interleaved, so a busy moment hits both alike
    for r in runs.values():
      t0 = time.perf_counter()
      jax.block_until_ready(r["fn"](xs))
      r["times"].append((time.perf_counter() - t0) * 1e3)
  dev = jax.devices()[0]
  print(f"Polar Express on {shapes} ({'bf16' if cd else 'fp32'} matmuls); {dev.device_kind} "
        f"({dev.platform}), jax {jax.__version__}")
  print(f"{'loop':20s} {'compile ms':>10s} {'median ms':>10s} {'min ms':>8s}")
  results = {}
  for name, r in runs.items():
    results[name] = dict(compile_ms=r["compile_ms"], median_ms=statistics.median(r["times"]),
                         min_ms=min(r["times"]))
    print(f"{name:20s} {r['compile_ms']:10.0f} {results[name]['median_ms']:10.1f} "
          f"{results[name]['min_ms']:8.1f}")
  write_json(args.json, scale=args.scale, shapes=shapes, results=results)


if __name__ == "__main__":
  main()
