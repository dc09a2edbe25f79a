"""Head drift along the softmax shift: the same run with the LM head's rows centred (the
default of the row-norm, one-sided polar and hybrid rules) and without (``--uncentred``).

The logits ignore a vector added to every row of the head, and the gradient has no component
along it; only the optimizer's nonlinearity moves the head there. Each run logs
``symoptax.diagnostics`` every ``--diag-every`` steps; this plots the head's mean-row norm
(its position along the shift), the step's drift along it and the largest training logit,
and prints a table.

  python benchmarks/head_drift.py                       # tiny, hybrid preset, 300 steps
  python benchmarks/head_drift.py --preset rownorm --steps 1000
  SYMOPTAX_SMOKE=1 python benchmarks/head_drift.py      # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from examples import pretrain

from _results import HelpFormatter  # benchmarks/_results.py (this folder: sys.path)

STATS = (("diag/lm_head/mean_row", "head mean-row norm"),
         ("diag/lm_head/mean_row_step", "drift of one step along the shift"),
         ("max_logit", "largest training logit"))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=HelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--preset", default="hybrid", choices=["hybrid", "rownorm", "paper"])
  p.add_argument("--lr", type=float, default=0.04)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--seq", type=int, default=64)
  p.add_argument("--out", default="runs/head_drift")
  args = p.parse_args(argv)
  smoke = os.environ.get("SYMOPTAX_SMOKE", "") not in ("", "0")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  runs = {}
  for name, extra in (("centred", []), ("uncentred", ["--uncentred"])):
    run_out = out / name
    if run_out.exists():
      shutil.rmtree(run_out)
    argv_ = ["--preset", args.preset, "--lr", f"{args.lr:g}", "--out", str(run_out),
             "--no-progress", *extra]
    if not smoke:
      argv_ += ["--steps", str(args.steps), "--seq", str(args.seq), "--eval-every", "25",
                "--ckpt-every", str(args.steps)]
    t0 = time.perf_counter()
    runs[name] = pretrain.run(pretrain.parse_args(argv_), log=lambda *_: None)
    print(f"{name}: {time.perf_counter() - t0:.0f}s", flush=True)
  lines = [f"{'run':10s} {'val loss':>9s} " + " ".join(f"{label:>34s}" for _, label in STATS),
           "-" * 125]
  for name, rows in runs.items():
    diag = [r for r in rows if STATS[0][0] in r]
    cells = []
    for key, _ in STATS:
      src = rows if key == "max_logit" else diag
      peak = max(r[key] for r in src)
      cells.append(f"{src[0][key]:.4g} -> {src[-1][key]:.4g} (max {peak:.4g})")
    val = [r["val_loss"] for r in rows if "val_loss" in r][-1]
    lines.append(f"{name:10s} {val:9.4f} " + " ".join(f"{c:>34s}" for c in cells))
  print("\n".join(lines))
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
  for ax, (key, label) in zip(axes, STATS):
    for name, rows in runs.items():
      pts = [(r["step"], r[key]) for r in rows if key in r]
      ax.plot(*zip(*pts), label=name)
    ax.set(xlabel="step", title=label)
    ax.grid(alpha=0.3)
    ax.legend()
  axes[1].set_yscale("symlog", linthresh=1e-6)
  fig.suptitle(f"LM head along the softmax shift: {args.preset} preset, head centred or not")
  fig.tight_layout()
  fig.savefig(out / "head_drift.png", dpi=110)
  (out / "head_drift.json").write_text(json.dumps(
      {"args": vars(args), "table": lines, "runs": runs}, indent=1))
  print(f"wrote {out}/head_drift.png and head_drift.json")
  return runs


if __name__ == "__main__":
  main()
