"""Quality benchmark: final validation loss of symmetry stacks against a fairly tuned Muon +
AdamW, at two widths, on the same model, data, initialisation and token budget.

Protocol (per size, per entry; an entry is a preset, optionally with a rule for the hidden
matrices or for one role, and an update scale: ``hybrid:rms``, ``muon+aurora``,
``muon+router=left_polar``):

1. **Base rate**: ``--lr`` times ``--base-multipliers`` on seed 0 (extended one step past an
   edge while the best sits there, ``--extend`` times at most).
2. **Role-group rates**, one group after another at the best base rate: the group's rate
   (vocabulary matrices: embedding and LM head; router; vectors -- the groups the model has)
   times ``--group-multipliers`` of its default ratio, extended past an edge the same way.
   Entries in ``--base-only`` skip this: the default stack with its default ratios.
   With ``--passes 2`` (or more) the knobs are swept again from the point reached: the base
   rate with every group's absolute rate held, then each group around its current rate --
   coordinate descent, which finds the baseline's better corners that one pass misses.
   ``--start vocab=6 vector=6`` starts the groups elsewhere than their default ratios (at
   a second width, from the first width's choice).
3. **Seeds**: the chosen setting on every seed; final validation loss mean and (population)
   standard deviation.

Every knob of every entry gets the same budget (the same multipliers and extensions). Runs
go through ``examples/pretrain.py`` (Qwen3-style model, BPE on the built-in corpus unless
``--data``): the model, data order and initialisation are identical across entries for a
given seed. Sweep runs may be shorter than the final ones (``--sweep-steps``), but a rate
chosen on a shorter cosine schedule is not the best one for the longer run (measured on
``tiny``, seed 0: 200-step sweeps chose Muon 0.08 with AdamW on the vocabulary at 0.02, which
finished 300 steps at 4.595, against 4.521 for Muon 0.04 with AdamW 0.04), so the default
sweeps at the final length.

A run whose pretrain arguments match one in a ``--reuse`` file (an earlier quality.json made
with the same code and ratios) is taken from it, so an interrupted or extended protocol does
not run anything twice.

Writes ``<out>/quality.json`` (every run, its argv and curve; per size the chosen settings,
means and spreads, and the validation loss at equal wall-clock) and, per size, PNGs of
validation loss against steps and against seconds.

  # README "Results" (2-core CPU): the default, base rate only, against a two-pass "muon"
  python benchmarks/quality.py --sizes tiny --entries hybrid --base-only hybrid --lr 0.04 --extend 0
  python benchmarks/quality.py --sizes tiny --entries muon --passes 2
  python benchmarks/quality.py --sizes tiny2x --entries hybrid --base-only hybrid --lr 0.04 --extend 0
  python benchmarks/quality.py --sizes tiny2x --entries muon --lr 0.02 --start vector=4 vocab=36 --groups
  python benchmarks/quality.py                      # every preset, both widths (hours on CPU)
  python benchmarks/quality.py --sizes small --steps 2000 --sweep-steps 1000   # GPU/TPU
  python benchmarks/quality.py --sizes tiny --entries muon hybrid:rms --seeds 0  # a probe
  python benchmarks/quality.py --sizes tiny --entries muon --variants aurora namo_d
  python benchmarks/quality.py --sizes tiny --entries muon --wrappers drop_layers,keep_prob=0.5
  python benchmarks/quality.py --sizes tiny --entries muon --variants polar=layer_aware
  python benchmarks/quality.py --model olmoe --sizes tiny --entries muon \
      muon+router=left_polar muon+router=rownorm --groups router   # routers (MoE)
  SYMOPTAX_SMOKE=1 python benchmarks/quality.py     # seconds
"""

from __future__ import annotations

import argparse
import dataclasses
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
from symoptax import stacks

from _results import HelpFormatter  # benchmarks/_results.py (this folder: sys.path)

# Role groups whose rate is tuned apart from the base rate.
GROUPS = {"vocab": ("embedding", "lm_head"), "router": ("router",), "vector": ("vector",),
          # Swept only on request (--groups attention): a rule given to the attention roles
          # alone (muon+attention=compositional_muon) against Muon's rate on the others.
          "attention": stacks.ATTENTION_ROLES}
# The tuned roles each model has (the Qwen3-style model has no router).
MODEL_ROLES = {"qwen3": ("embedding", "lm_head", "vector"),
               "olmoe": ("embedding", "lm_head", "vector", "router")}
DEFAULT_GROUPS = ("vocab", "router", "vector")


def has_group(group: str, model: str) -> bool:
  """Whether ``model`` has roles of ``group`` (both models have attention)."""
  return group == "attention" or any(role in MODEL_ROLES[model] for role in GROUPS[group])
ENTRIES = ("adamw", "muon", "rownorm", "hybrid", "paper")
# Matrix rules a user can put on the hidden matrices for comparison (--variants): every
# symmetry_stack rule except AdamW, Muon itself and the nu-scaled one-sided polar rules.
VARIANTS = tuple(r for r in symoptax.RULES
                 if r not in ("adamw", "muon", "right_polar", "left_polar"))
# Muon with another polar oracle (--polar-method): "muon+polar=layer_aware".
POLAR_VARIANTS = tuple(f"polar={m}" for m in symoptax.polar.FULL_METHODS)


def _smoke() -> bool:
  return os.environ.get("SYMOPTAX_SMOKE", "") not in ("", "0")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of a sweep: an entry (preset, hidden-matrix variant, scale), a base rate and
  role-group multipliers."""
  preset: str
  variant: str | None
  scale: str | None
  base: float
  mults: tuple[tuple[str, float], ...] = ()
  wrap: str | None = None  # a wrapper of the whole stack: "NAME[,KEY=VALUE...]"

  @classmethod
  def of(cls, entry: str, base: float) -> "Setting":
    rest, _, wrap = entry.partition("@")
    rest, _, scale = rest.partition(":")
    preset, _, variant = rest.partition("+")
    return cls(preset, variant or None, scale or None, base, wrap=wrap or None)

  @property
  def entry(self) -> str:
    return (self.preset + (f"+{self.variant}" if self.variant else "")
            + (f":{self.scale}" if self.scale else "") + (f"@{self.wrap}" if self.wrap else ""))

  def with_(self, **kw) -> "Setting":
    return dataclasses.replace(self, **kw)

  def mult(self, group: str) -> float:
    return dict(self.mults).get(group, 1.0)

  def with_base_held(self, base: float, model: str) -> "Setting":
    """This setting at base rate ``base`` with every group's absolute rate unchanged."""
    s = self.with_(base=base)
    for group, roles in GROUPS.items():
      # The AdamW groups always; the attention group where an entry set its rate.
      if any(role in MODEL_ROLES[model] for role in roles) or group in dict(self.mults):
        s = s.with_mult(group, self.mult(group) * self.base / base)
    return s

  def with_mult(self, group: str, m: float) -> "Setting":
    mults = {**dict(self.mults), group: m}
    return self.with_(mults=tuple(sorted((g, v) for g, v in mults.items() if v != 1.0)))

  def rules(self) -> dict[str, str]:
    """``--rule`` overrides: ``{"hidden": variant}`` or ``{role: rule}``."""
    if not self.variant or self.variant.startswith("polar="):
      return {}
    head, sep, options = self.variant.partition(",")  # RULE options: "conda,update_proj_gap=50"
    role, _, rule = head.rpartition("=")
    return {role or "hidden": rule + sep + options}

  def role_lrs(self, model: str) -> dict[str, float]:
    """Absolute peak rates of the roles whose group multiplier is not 1."""
    scale = stacks.stack_options(self.preset, scale=self.scale)["scale"]
    overrides = {t: v.partition(",")[0] for r, v in self.rules().items() if r != "hidden"
                 for t in (stacks.ATTENTION_ROLES if r == "attention" else (r,))}
    table = stacks.resolve_rules(self.base, self.preset, overrides, scale=scale)
    return {role: table[role].learning_rate * m for group, m in self.mults
            for role in GROUPS[group] if role in MODEL_ROLES[model] or group == "attention"}

  def argv(self, model: str = "qwen3") -> list[str]:
    out = ["--preset", self.preset, "--lr", f"{self.base:g}", "--model", model]
    for role, rule in self.rules().items():
      out += ["--rule", f"{role}={rule}"]
    if self.scale:
      out += ["--scale", self.scale]
    if self.wrap:
      out += ["--wrap", self.wrap]
    if self.variant and self.variant.startswith("polar="):
      out += ["--polar-method", self.variant.partition("=")[2]]
    for role, lr in self.role_lrs(model).items():
      out += ["--role-lr", f"{role}={lr:.6g}"]
    return out

  def label(self) -> str:
    groups = ", ".join(f"{g} x{m:.3g}" for g, m in self.mults)
    return f"lr {self.base:g}" + (f" ({groups})" if groups else "")


class Runner:
  def __init__(self, args, out: Path):
    self.args, self.out, self.runs = args, out, []
    # Runs keyed by their pretrain argv without --out (the rates in it are absolute): the
    # same run reached twice in a sweep, or found in a --reuse file, is not run again.
    # A run made by another version of pretrain's computation (pretrain.RESULTS_VERSION) is
    # never reused: the same arguments no longer give the same run.
    self._cache: dict[tuple, dict] = {}
    stale = 0
    for path in args.reuse:
      for r in json.loads(Path(path).read_text())["runs"]:
        if r.get("pretrain_version", 1) != pretrain.RESULTS_VERSION:
          stale += 1
          continue
        self._cache.setdefault(_key(r["argv"]), r)
    if stale:
      print(f"--reuse: {stale} run(s) from an earlier pretrain version "
            f"(< {pretrain.RESULTS_VERSION}) will be run again.", flush=True)

  def __call__(self, size: str, s: Setting, seed: int, steps: int) -> dict:
    tag = f"{size}-{s.entry.replace(':', '-')}-{len(self.runs)}-s{seed}"
    out = self.out / "runs" / tag
    argv = s.argv(self.args.model) + ["--size", size, "--seed", str(seed), "--steps", str(steps),
                       "--out", str(out), "--data", self.args.data,
                       "--eval-every", str(max(1, steps // self.args.evals)),
                       "--ckpt-every", str(steps), "--no-progress"]
    if self.args.seq:
      argv += ["--seq", str(self.args.seq)]
    if self.args.batch:
      argv += ["--batch", str(self.args.batch)]
    key = _key(argv)
    if key in self._cache:
      r = self._cache[key]
      if r not in self.runs:
        print(f"  {size:7s} {s.entry:24s} {s.label():40s} seed {seed} {steps:5d} steps: "
              f"val {r['final_val_loss']:.4f}  (reused)", flush=True)
        self.runs.append(r)
      return r
    if out.exists():
      shutil.rmtree(out)
    t0 = time.perf_counter()
    try:
      rows = pretrain.run(pretrain.parse_args(argv), log=lambda *_: None)
      error = None
    except SystemExit as e:  # a diverging rate (non-finite loss) is a result, not a crash
      rows, error = [], str(e)
    val = [(r["step"], r["elapsed_s"], r["val_loss"]) for r in rows if "val_loss" in r]
    final = val[-1][2] if val and val[-1][0] == steps else float("nan")
    r = {"size": size, "entry": s.entry, "setting": dataclasses.asdict(s), "seed": seed,
         "steps": steps, "argv": argv, "pretrain_version": pretrain.RESULTS_VERSION,
         "final_val_loss": final, "val_curve": val,
         "spikes": spikes([row["loss"] for row in rows]),
         "seconds": time.perf_counter() - t0, "error": error,
         "s_per_step": float(np.median(np.diff([r["elapsed_s"] for r in rows])))
         if len(rows) > 1 else float("nan")}
    print(f"  {size:7s} {s.entry:24s} {s.label():40s} seed {seed} {steps:5d} steps: "
          f"val {final:.4f}  ({r['seconds']:.0f}s)" + (f"  [{error}]" if error else ""),
          flush=True)
    self.runs.append(r)
    self._cache[key] = r
    return r


def _key(argv) -> tuple:
  """A run's identity: its pretrain argv without the output directory."""
  argv = list(argv)
  if "--out" in argv:
    i = argv.index("--out")
    del argv[i:i + 2]
  return tuple(argv)


def spikes(losses, window: int = 20, k: float = 6.0, floor: float = 0.05) -> int:
  """Loss spikes: steps whose training loss exceeds the median of the previous ``window``
  steps by more than ``k`` median absolute deviations of them (and by ``floor`` nats)."""
  x, n = np.asarray(losses, float), 0
  for t in range(window, len(x)):
    prev = x[t - window:t]
    med = np.median(prev)
    if x[t] - med > max(k * np.median(np.abs(prev - med)), floor):
      n += 1
  return n


def _loss(r) -> float:
  v = r["final_val_loss"]
  return v if np.isfinite(v) else np.inf


def sweep_knob(run, start: Setting, values, make, mults, extend: int):
  """Best setting over ``make(start, m)`` for multipliers ``mults`` (ratio-spaced), extended
  one step past an edge while the best sits there (a single multiplier is a fixed value, not
  a sweep: never extended); returns (best setting, [(m, loss)])."""
  tried: dict[float, float] = {}
  queue = sorted(mults)
  ratio = queue[1] / queue[0] if len(queue) > 1 else 2.0
  extra = 0 if len(queue) > 1 else extend
  while queue:
    m = queue.pop(0)
    tried[m] = values(make(start, m))
    if not queue:
      best = min(tried, key=tried.get)
      if extra < extend and np.isfinite(tried[best]):
        if best == max(tried):
          queue, extra = [best * ratio], extra + 1
        elif best == min(tried):
          queue, extra = [best / ratio], extra + 1
  best = min(tried, key=tried.get)
  return make(start, best), sorted(tried.items())


def tune(run, args, size: str, entry: str) -> dict:
  s = Setting.of(entry, args.lr)
  if entry not in args.base_only:
    for group, m in args.start:
      s = s.with_mult(group, m)
  sweep_loss = lambda st: _loss(run(size, st, args.seeds[0], args.sweep_steps))
  log = {}
  if args.hold_groups:  # the groups' absolute rates stay where --start put them
    first = lambda st, m: s.with_base_held(args.lr * m, args.model)
  else:
    first = lambda st, m: st.with_(base=args.lr * m)
  s, log["base"] = sweep_knob(run, s, sweep_loss, first, args.base_multipliers, args.extend)
  for p in range(0 if entry in args.base_only else args.passes):
    suffix = f"/{p + 1}" if p else ""
    if p:  # the base rate again, every group's absolute rate held
      s, log["base" + suffix] = sweep_knob(
          run, s, sweep_loss, lambda st, m: st.with_base_held(st.base * m, args.model),
          args.base_multipliers, args.extend)
    for group in args.groups:
      if not has_group(group, args.model):
        continue
      s, log[group + suffix] = sweep_knob(
          run, s, sweep_loss, lambda st, m, g=group: st.with_mult(g, st.mult(g) * m),
          [1.0] + list(args.group_multipliers), args.extend)
  finals = [run(size, s, seed, args.steps) for seed in args.seeds]
  losses = np.array([r["final_val_loss"] for r in finals])
  return {"entry": entry, "setting": dataclasses.asdict(s), "label": s.label(),
          "mean": float(np.mean(losses)), "std": float(np.std(losses)),
          "finals": losses.tolist(), "sweep": log,
          "spikes": float(np.mean([r["spikes"] for r in finals])),
          "s_per_step": float(np.nanmedian([r["s_per_step"] for r in finals])),
          "curves": [r["val_curve"] for r in finals]}


def at_time(curve, t: float) -> float:
  """Validation loss at wall-clock ``t`` (linear interpolation on the logged points)."""
  ts, vs = [p[1] for p in curve], [p[2] for p in curve]
  return float(np.interp(t, ts, vs)) if ts and t >= ts[0] else float("nan")


def equal_time(summary: dict) -> float:
  """The wall-clock every entry reached: the shortest run's final elapsed time."""
  ends = [c[-1][1] for s in summary.values() for c in s["curves"] if c]
  return min(ends) if ends else float("nan")


def table(summary: dict, t_eq: float) -> str:
  lines = [f"{'entry':24s} {'chosen setting':38s} {'val loss (mean ± sd)':>22s} "
           f"{'@' + format(t_eq, '.0f') + 's':>8s} {'s/step':>7s} {'spikes':>6s}", "-" * 111]
  best = min(s["mean"] for s in summary.values())
  for entry, s in summary.items():
    eq = np.nanmean([at_time(c, t_eq) for c in s["curves"]]) if s["curves"] else np.nan
    mark = " *" if s["mean"] == best else "  "
    lines.append(f"{entry:24s} {s['label']:38s} {s['mean']:13.4f} ± {s['std']:.4f}{mark}"
                 f" {eq:8.4f} {s['s_per_step']:7.3f} {s['spikes']:6.1f}")
  return "\n".join(lines)


def plot(summary: dict, out: Path, size: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  for xaxis, idx, label in (("steps", 0, "step"), ("wallclock", 1, "seconds")):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for entry, s in summary.items():
      curves = [c for c in s["curves"] if c]
      if not curves:
        continue
      ys = np.array([[p[2] for p in c] for c in curves])
      xs = np.mean([[p[idx] for p in c] for c in curves], axis=0)
      line, = ax.plot(xs, ys.mean(0), "o-", ms=3, label=f"{entry} ({s['label']})")
      if len(curves) > 1:
        ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel=label, ylabel="validation loss", title=f"{size}: tuned entries, all seeds")
    lo = min(s["mean"] for s in summary.values())
    if np.isfinite(lo):
      ax.set_ylim(lo - 0.1, lo + 1.0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{size}_val_loss_vs_{xaxis}.png", dpi=120)
    plt.close(fig)


def _group_mult(text: str) -> tuple[str, float]:
  group, _, m = text.partition("=")
  if group not in GROUPS:
    raise argparse.ArgumentTypeError(f"{text!r}: expected GROUP=X with GROUP one of "
                                     f"{', '.join(GROUPS)}")
  try:
    return group, float(m)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: X must be a number") from None


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=HelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--model", default="qwen3", choices=list(MODEL_ROLES),
                 help="the Qwen3-style dense model or the OLMoE-style MoE (with a router)")
  p.add_argument("--sizes", nargs="+", default=["tiny", "tiny2x"],
                 choices=[s for s in pretrain.SIZES if s != "smoke"])
  p.add_argument("--entries", nargs="+", default=list(ENTRIES),
                 help="presets, each optionally with a scale (PRESET:SCALE), at the first size")
  p.add_argument("--variants", nargs="+", default=[], choices=VARIANTS + POLAR_VARIANTS,
                 help="also the 'muon' preset with this rule on every hidden matrix (or, "
                      "polar=METHOD, with Muon's polar oracle METHOD)")
  p.add_argument("--wrappers", nargs="+", default=[], metavar="WRAPPER[,KEY=VALUE...]",
                 help="also the 'muon' preset inside this wrapper (symoptax.variants.WRAPPERS)")
  p.add_argument("--wide-entries", nargs="+", default=["muon", symoptax.DEFAULT_PRESET],
                 help="the entries at the other sizes (default: the baseline and the default)")
  p.add_argument("--base-only", nargs="*", default=[],
                 help="entries whose group rates stay at their default ratios")
  p.add_argument("--groups", nargs="*", default=list(DEFAULT_GROUPS), choices=list(GROUPS))
  p.add_argument("--steps", type=int, default=300, help="steps of the final (seed) runs")
  p.add_argument("--sweep-steps", type=int, default=None, help="steps of sweep runs")
  p.add_argument("--seq", type=int, default=64)
  p.add_argument("--batch", type=int, default=None)
  p.add_argument("--lr", type=float, default=0.02, help="centre of the base-rate sweep")
  p.add_argument("--base-multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
  p.add_argument("--group-multipliers", type=float, nargs="+", default=[1 / 3, 3.0],
                 help="multipliers of a group's default rate tried besides 1")
  p.add_argument("--extend", type=int, default=1,
                 help="extra points allowed past an edge of each knob's sweep")
  p.add_argument("--hold-groups", action="store_true",
                 help="sweep the base rate with every group's absolute rate held at --lr's "
                      "(and --start's) value: a matrix rule's rate against fixed AdamW rates")
  p.add_argument("--start", nargs="*", default=[], type=_group_mult, metavar="GROUP=X",
                 help="the tuned entries' starting group multipliers (e.g. another width's "
                      "chosen ones: vocab=6 vector=6); default 1")
  p.add_argument("--passes", type=int, default=1,
                 help="coordinate-sweep passes over the knobs (from the second on, the base "
                      "rate is swept with every group's absolute rate held)")
  p.add_argument("--reuse", nargs="*", default=[],
                 help="quality.json files of earlier runs made with the same code and ratios: "
                      "a run with the same pretrain arguments is taken from them")
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--evals", type=int, default=12, help="validation points per run")
  p.add_argument("--data", default="builtin")
  p.add_argument("--out", default="runs/quality")
  args = p.parse_args(argv)
  args.entries += [f"muon+{v}" for v in args.variants]
  args.entries += [f"muon@{w}" for w in args.wrappers]
  for entry in args.entries + args.wide_entries:
    s = Setting.of(entry, 1.0)
    bad_rule = any(rule.partition(",")[0] not in (VARIANTS if role == "hidden" else symoptax.RULES)
                   or role not in ("hidden", "attention") + symoptax.ROLES
                   or any("=" not in o for o in rule.split(",")[1:])  # KEY=VALUE options
                   for role, rule in s.rules().items())
    bad_rule = bad_rule or (bool(s.variant) and s.variant.startswith("polar=")
                            and s.variant not in POLAR_VARIANTS)
    bad_wrap = s.wrap and s.wrap.partition(",")[0] not in symoptax.variants.WRAPPERS
    if (s.preset not in symoptax.PRESETS or (s.scale and s.scale not in symoptax.SCALES)
        or bad_rule or bad_wrap):
      p.error(f"entry {entry!r}: expected PRESET[+VARIANT|+ROLE=RULE][:SCALE][@WRAPPER] with "
              f"PRESET one of {', '.join(symoptax.PRESETS)}, VARIANT (a rule for every hidden "
              f"matrix) one of {', '.join(VARIANTS)}, RULE one of "
              f"{', '.join(symoptax.RULES)}, SCALE one of {', '.join(symoptax.SCALES)} and "
              f"WRAPPER one of {', '.join(symoptax.variants.WRAPPERS)} (RULE and WRAPPER take "
              f"KEY=VALUE options after commas)")
  if _smoke():  # one size, a few steps, one point per knob
    args.sizes, args.wide_entries, args.steps, args.evals = args.sizes[:1], [], 6, 2
    args.base_multipliers, args.group_multipliers, args.extend = [1.0], [3.0], 0
    args.seeds, args.seq = args.seeds[:2], None
  args.sweep_steps = args.sweep_steps or args.steps
  return args


def main(argv=None):
  args = parse(argv)
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"quality benchmark on {device}: {args.model}, sizes {args.sizes}, entries "
        f"{args.entries} (other sizes: {args.wide_entries}), {args.steps} steps "
        f"({args.sweep_steps} while sweeping), seeds {args.seeds}", flush=True)
  t0 = time.perf_counter()
  run = Runner(args, out)
  report = {"args": vars(args), "device": device, "platform": platform.platform(),
            "processor": platform.processor(), "jax": jax.__version__,
            "symoptax": symoptax.__version__, "date": time.strftime("%Y-%m-%d"), "sizes": {}}
  for i, size in enumerate(args.sizes):
    summary = {e: tune(run, args, size, e) for e in (args.entries if i == 0
                                                     else args.wide_entries)}
    t_eq = equal_time(summary)
    report["sizes"][size] = {"summary": summary, "equal_time_s": t_eq}
    print(f"\n{size}:\n{table(summary, t_eq)}\n", flush=True)
    plot(summary, out, size)
  report["runs"], report["total_seconds"] = run.runs, time.perf_counter() - t0
  (out / "quality.json").write_text(json.dumps(report, indent=1))
  print(f"wrote {out}/quality.json and the plots ({report['total_seconds'] / 60:.1f} min)")
  return report


if __name__ == "__main__":
  main()
