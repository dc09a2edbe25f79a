"""Accuracy, safety and speed of every polar oracle.

Sweeps every oracle x shapes (tall, square, wide) x inputs (log-spaced singular values with
condition numbers 1e0..1e6, zero, rank-1, rank-deficient) x precision (fp32 at HIGHEST
matmul precision; bf16 matmul inputs with fp32 accumulation where the oracle supports it).
For each case it reports

  err    max |sigma_out - 1| over the input's singular directions with sigma >= 1e-6 sigma_max
         (the output's diagonal in the input's SVD basis),
  norm   the output's spectral norm (the safety bound: 1.25 for the polynomial "muon_ns" and
         "polar_express" oracles, 1.05 for every other oracle),
  ms     median wall time of the jitted oracle.

Prints a table and writes JSON. It never asserts anything about time.

  python benchmarks/polar_accuracy.py                  # full sweep (minutes on a CPU)
  python benchmarks/polar_accuracy.py --quick          # small shapes, seconds

"full:randomized" runs at its default rank (min(m, n): exact); "full:randomized@k/8" at
rank min(m, n) // 8 with the default oversampling (10), the low-rank approximation.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from symoptax import polar as P

from _results import HelpFormatter, write_json  # benchmarks/_results.py (this folder: sys.path)

ORACLES = ([("full", m) for m in P.FULL_METHODS] + [("full", "randomized@k/8")]
           + [("gram", m) for m in P.GRAM_METHODS])
LOW_PRECISION = {"muon_ns", "polar_express", "dsv4", "newton_schulz", "layer_aware"}
POLYNOMIAL = {"muon_ns", "polar_express"}
CONDS = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6]


def ceiling(method: str) -> float:
  return 1.25 if method in POLYNOMIAL else 1.05


def oracle_options(method: str, shape) -> tuple[str, dict]:
  """``(method, polar keywords)`` of a sweep entry: "randomized@k/8" is rank min(m, n) // 8."""
  if method == "randomized@k/8":
    return "randomized", {"rank": max(1, min(shape) // 8)}
  return method, {}


def make_input(shape, kind, seed=0):
  rng = np.random.default_rng(seed)
  m, n = shape
  k = min(shape)
  if kind == "zero":
    s = np.zeros(0)
  elif kind == "rank1":
    s = np.ones(1)
  elif kind == "rankdef":
    s = np.logspace(0, -2, k // 4)
  else:
    s = np.logspace(0, -np.log10(kind), k)
  if len(s) == 0:
    return np.zeros(shape, np.float32)
  u, _ = np.linalg.qr(rng.standard_normal((m, len(s))))
  v, _ = np.linalg.qr(rng.standard_normal((n, len(s))))
  return ((u * s) @ v.T).astype(np.float32)


@functools.lru_cache(maxsize=None)
def case(shape, kind):
  """The input of a case and its float64 SVD, made once and shared by every oracle."""
  x = make_input(shape, kind)
  return x, np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)


def measure(x, out, svd):
  x64, out64 = np.asarray(x, np.float64), np.asarray(out, np.float64)
  if not np.all(np.isfinite(out64)):
    return float("inf"), float("inf")
  # The spectral norm from the short side's float64 Gram (no SVD of the whole output).
  gram = out64.T @ out64 if out64.shape[0] >= out64.shape[1] else out64 @ out64.T
  norm = float(np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)))
  if not np.any(x64):
    return float(np.abs(out64).max()), norm
  u, s, vt = svd
  diag = np.sum((u.T @ out64) * vt, axis=1)  # diag(U^T out V), without an m x m x n loop
  keep = s >= 1e-6 * s[0]
  return float(np.abs(diag[keep] - 1).max()), norm


def time_ms(fn, x, repeats):
  fn(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn(x).block_until_ready()
    times.append((time.perf_counter() - t0) * 1e3)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=HelpFormatter)
  parser.add_argument("--quick", action="store_true", help="small shapes (seconds)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--oracles", nargs="*", default=None,
                      help="subset, e.g. full:qdwh gram:eigh (default: all)")
  parser.add_argument("--json", default="runs/bench/polar_accuracy.json")
  args = parser.parse_args()

  if args.quick:
    shapes = {"tall": (1024, 64), "square": (128, 128), "wide": (64, 1024)}
  else:
    shapes = {"tall": (8192, 256), "square": (512, 512), "wide": (256, 8192)}
  kinds = CONDS + ["zero", "rank1", "rankdef"]
  device = jax.devices()[0]
  rows = []
  oracles = [o for o in ORACLES if args.oracles is None or f"{o[0]}:{o[1]}" in args.oracles]
  for (side, method) in oracles:
    for prec in ("fp32", "bf16"):
      if prec == "bf16" and method not in LOW_PRECISION:
        continue
      cd = jnp.bfloat16 if prec == "bf16" else None
      for sname, shape in shapes.items():
        s = "full" if side == "full" else P.auto_side(method, shape)
        name, kw = oracle_options(method, shape)
        fn = jax.jit(lambda a, s=s, name=name, kw=kw: P.polar(a, method=name, side=s,
                                                              compute_dtype=cd, **kw))
        for kind in kinds:
          x, svd = case(shape, kind)
          x = jnp.asarray(x)
          out = fn(x)
          err, norm = measure(x, out, svd)
          ms = time_ms(fn, x, args.repeats) if kind == 1e2 else None
          rows.append(dict(oracle=f"{side}:{method}", precision=prec, shape=sname,
                           dims=list(shape), input=str(kind), err=err, norm=norm, ms=ms,
                           safe=norm <= ceiling(method)))
        print(f"done {side}:{method} {prec} {sname}", flush=True)

  # Table: one line per oracle/precision/shape, err per condition number, max norm, ms.
  header = (f"{'oracle':22s} {'prec':4s} {'shape':6s} "
            + " ".join(f"{('c=' + format(c, '.0e')):>8s}" for c in CONDS)
            + f" {'zero':>7s} {'rank1':>8s} {'rankdef':>8s} {'max norm':>8s} {'ms':>8s}")
  print("\nmax |sigma - 1| over sigma >= 1e-6 sigma_max (zero input: max |output|); "
        f"device: {device.device_kind} ({device.platform}); jax {jax.__version__}")
  print(header)
  print("-" * len(header))
  unsafe = []
  for (side, method) in oracles:
    for prec in ("fp32", "bf16"):
      for sname in shapes:
        sel = [r for r in rows if r["oracle"] == f"{side}:{method}" and r["precision"] == prec
               and r["shape"] == sname]
        if not sel:
          continue
        by = {r["input"]: r for r in sel}
        ms = next(r["ms"] for r in sel if r["ms"] is not None)
        maxnorm = max(r["norm"] for r in sel)
        unsafe += [r for r in sel if not r["safe"]]
        print(f"{side + ':' + method:22s} {prec:4s} {sname:6s} "
              + " ".join(f"{by[str(c)]['err']:8.1e}" for c in CONDS)
              + f" {by['zero']['err']:7.0e} {by['rank1']['err']:8.1e} {by['rankdef']['err']:8.1e}"
              + f" {maxnorm:8.4f} {ms:8.1f}")
  print(f"\nsafety: {len(rows) - len(unsafe)}/{len(rows)} cases within their spectral-norm "
        "ceiling (1.25 muon_ns/polar_express, 1.05 others)")
  for r in unsafe:
    print("  UNSAFE:", r)

  write_json(args.json, shapes=shapes, rows=rows)


if __name__ == "__main__":
  main()
