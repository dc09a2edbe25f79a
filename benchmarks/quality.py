"""Quality benchmark: validation loss of the symmetry-stack presets on the same model, data,
initialisation and token budget.

For each preset, a small learning-rate sweep (multiples of ``--lr``, the Muon-equivalent rate;
each rule uses its ``LR_RATIO`` multiple of it; extended past an edge of the sweep when the
best rate sits there) on seed 0 picks the best rate by final validation loss; that rate is
then run on every seed. Runs go through ``examples/pretrain.py``
(Qwen3-style model, BPE on the built-in corpus unless ``--data``), so the model, data order and
initialisation are identical across presets for a given seed.

Prints a table (final validation loss, mean and spread over seeds, chosen rate, time per step),
writes ``<out>/quality.json`` and two PNGs: validation loss vs step and vs wall-clock.

  python benchmarks/quality.py                        # CPU scale (about 35 min on 2 cores)
  python benchmarks/quality.py --size small --steps 2000 --seeds 0 1 2   # GPU/TPU scale
  python benchmarks/quality.py --presets muon --variants aurora namo_d   # Muon variants
  SYMOPTAX_SMOKE=1 python benchmarks/quality.py       # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np

import symoptax
from examples import pretrain

PRESETS = ("adamw", "muon", "rownorm", "hybrid", "paper")
# Matrix rules a user can put on the hidden matrices for comparison (--variants): every
# symmetry_stack rule except AdamW, Muon itself and the nu-scaled one-sided polar rules.
VARIANTS = tuple(r for r in symoptax.RULES
                 if r not in ("adamw", "muon", "right_polar", "left_polar"))


def _smoke() -> bool:
  return os.environ.get("SYMOPTAX_SMOKE", "") not in ("", "0")


def run_one(args, name: str, lr: float, seed: int, out: Path) -> dict:
  preset, _, variant = name.partition("+")  # "muon+aurora": the muon preset, aurora on hidden
  argv = ["--rule", f"hidden={variant}"] if variant else []
  argv += ["--size", args.size, "--preset", preset, "--lr", f"{lr:g}", "--seed", str(seed),
          "--steps", str(args.steps), "--out", str(out), "--data", args.data,
          "--eval-every", str(args.eval_every), "--ckpt-every", str(args.steps),
          "--no-progress"]
  if args.seq:
    argv += ["--seq", str(args.seq)]
  if args.batch:
    argv += ["--batch", str(args.batch)]
  if out.exists():  # a fresh run each time, not a resume of an earlier benchmark's
    shutil.rmtree(out)
  try:
    rows = pretrain.run(pretrain.parse_args(argv), log=lambda *_: None)
  except SystemExit as e:  # a diverging rate (non-finite loss) is a result, not a crash
    print(f"  {name:8s} lr {lr:<8g} seed {seed}: {e}", flush=True)
    return {"preset": name, "lr": lr, "seed": seed, "final_val_loss": float("nan"),
            "final_train_loss": float("nan"), "val_curve": [], "seconds": float("nan"),
            "s_per_step": float("nan"), "error": str(e)}
  val = [(r["step"], r["elapsed_s"], r["val_loss"]) for r in rows if "val_loss" in r]
  final = val[-1][2] if val else float("nan")
  steps = len(rows)
  return {"preset": name, "lr": lr, "seed": seed, "final_val_loss": final,
          "final_train_loss": rows[-1]["loss"], "val_curve": val,
          "seconds": rows[-1]["elapsed_s"],
          # steady-state time per step: the median step (compilation and evaluation excluded)
          "s_per_step": float(np.median(np.diff([r["elapsed_s"] for r in rows])))
          if steps > 1 else float("nan")}


def table(summary: dict) -> str:
  lines = [f"{'preset':12s} {'best lr':>8s} {'val loss (mean ± std over seeds)':>34s} "
           f"{'seeds':>5s} {'s/step':>7s}  lr sweep (seed 0: lr -> val loss)",
           "-" * 110]
  best = np.nanmin([s["mean"] for s in summary.values()])
  for preset, s in summary.items():
    mark = " *" if s["mean"] == best else ""
    sweep = ", ".join(f"{lr:g}->{v:.3f}" for lr, v in s["sweep"])
    lines.append(f"{preset:12s} {s['lr']:8g} {s['mean']:26.4f} ± {s['std']:.4f}{mark:2s} "
                 f"{s['n']:5d} {s['s_per_step']:7.3f}  {sweep}")
  return "\n".join(lines)


def plot(results: list[dict], summary: dict, out: Path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  for xaxis, idx, label in (("steps", 0, "step"), ("wallclock", 1, "seconds")):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for preset, s in summary.items():
      runs = [r for r in results if r["preset"] == preset and r["lr"] == s["lr"]
              and r["val_curve"]]
      if not runs:  # every rate diverged
        continue
      curves = np.array([[p[2] for p in r["val_curve"]] for r in runs])
      xs = np.mean([[p[idx] for p in r["val_curve"]] for r in runs], axis=0)
      mean = curves.mean(0)
      line, = ax.plot(xs, mean, "o-", ms=3, label=f"{preset} (lr {s['lr']:g})")
      if len(runs) > 1:
        ax.fill_between(xs, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel=label, ylabel="validation loss", title="Validation loss, best lr per preset")
    lo = np.nanmin([s["mean"] for s in summary.values()])
    if np.isfinite(lo):
      ax.set_ylim(lo - 0.2, lo + 1.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"val_loss_vs_{xaxis}.png", dpi=120)
    plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
  p.add_argument("--variants", nargs="+", default=[], choices=VARIANTS,
                 help="also run the 'muon' preset with this rule on every hidden matrix")
  p.add_argument("--size", default="tiny", choices=["tiny", "small", "medium"])
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--seq", type=int, default=64)
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--lr", type=float, default=0.02, help="base (Muon-equivalent) rate")
  p.add_argument("--lr-multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
  p.add_argument("--extend", type=int, default=2,
                 help="extra sweep points allowed past an edge when the best rate is there")
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--eval-every", type=int, default=25)
  p.add_argument("--data", default="builtin")
  p.add_argument("--out", default="runs/quality")
  args = p.parse_args(argv)
  if _smoke():
    args.steps, args.lr_multipliers, args.seeds, args.eval_every = 10, [1.0], [0], 5
    args.seq = None
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"quality benchmark: {args.size}, {args.steps} steps, presets {args.presets}, "
        f"variants {args.variants}, "
        f"lr x {args.lr_multipliers}, seeds {args.seeds}; {device}")

  results, summary = [], {}
  t0 = time.perf_counter()
  for preset in list(args.presets) + [f"muon+{v}" for v in args.variants]:
    sweep, by_mult = [], {}
    mults = sorted(args.lr_multipliers)
    ratio = mults[1] / mults[0] if len(mults) > 1 else 2.0
    while mults:
      m = mults.pop(0)
      r = run_one(args, preset, args.lr * m, args.seeds[0], out / "runs" / f"{preset}-lr{m:g}-s0")
      results.append(r)
      sweep.append((r["lr"], r["final_val_loss"]))
      by_mult[m] = r["final_val_loss"] if np.isfinite(r["final_val_loss"]) else np.inf
      print(f"  {preset:8s} lr {r['lr']:<8g} seed {args.seeds[0]}: val {r['final_val_loss']:.4f}"
            f"  ({r['seconds']:.0f}s)", flush=True)
      if not mults and 1 < len(by_mult) < len(args.lr_multipliers) + args.extend:
        # The best rate sits at an edge of the sweep: extend it one step past that edge.
        best = min(by_mult, key=by_mult.get)
        if best == max(by_mult):
          mults.append(best * ratio)
        elif best == min(by_mult):
          mults.append(best / ratio)
    sweep.sort()
    finite = [(v, lr) for lr, v in sweep if np.isfinite(v)]
    best_lr = min(finite)[1] if finite else sweep[0][0]
    m_best = best_lr / args.lr
    for seed in args.seeds[1:]:
      r = run_one(args, preset, best_lr, seed, out / "runs" / f"{preset}-lr{m_best:g}-s{seed}")
      results.append(r)
      print(f"  {preset:8s} lr {best_lr:<8g} seed {seed}: val {r['final_val_loss']:.4f}"
            f"  ({r['seconds']:.0f}s)", flush=True)
    finals = [r["final_val_loss"] for r in results
              if r["preset"] == preset and r["lr"] == best_lr]
    summary[preset] = {"lr": best_lr, "mean": float(np.mean(finals)),
                       "std": float(np.std(finals)), "n": len(finals), "sweep": sweep,
                       "s_per_step": float(np.nanmean([r["s_per_step"] for r in results
                                                       if r["preset"] == preset]))}
  print()
  print(table(summary))
  report = {"args": vars(args), "device": device, "platform": platform.platform(),
            "processor": platform.processor(), "jax": jax.__version__,
            "date": time.strftime("%Y-%m-%d"), "total_seconds": time.perf_counter() - t0,
            "summary": summary, "runs": results}
  (out / "quality.json").write_text(json.dumps(report, indent=1))
  plot(results, summary, out)
  print(f"wrote {out}/quality.json, val_loss_vs_steps.png, val_loss_vs_wallclock.png")
  return report


if __name__ == "__main__":
  main()
