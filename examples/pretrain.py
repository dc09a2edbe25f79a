"""Pretrain a Qwen3-style language model (Flax NNX) with symoptax's symmetry stack.

With no arguments: the ``tiny`` model on the built-in corpus (this Python's standard-library
sources, BPE-tokenised with an 8192-token vocabulary trained on them and cached), the
default ``hybrid`` preset, 400 steps with warmup and cosine decay; about 3.5 minutes on a
2-core CPU. JAX picks the device (GPU/TPU when present); batches are split over all devices
(data parallel).

Everything a run writes goes to ``--out`` (default ``runs/pretrain/<size>-<preset>``):
``metrics.jsonl`` (one JSON object per logged step: step, loss, lr (the rate that step's
update used), grad_norm, max_logit, elapsed_s, val_loss when evaluated, and, every
``--diag-every`` steps, the per-role update statistics of :mod:`symoptax.diagnostics` as
``diag/<role>/<stat>``; ``compile_s`` on the first step a process runs, which compiles the
train step, and ``tokens_per_s`` on the later ones: a moving average over about the last 10
steps, compilation, evaluation and checkpoints left out),
``loss.png``, ``diagnostics.png``, ``config.json`` and Orbax checkpoints
(params, optimizer state, step, data position) in ``checkpoints/``. ``--resume`` continues
from the latest checkpoint there, bitwise-identically on CPU.

  python examples/pretrain.py
  python examples/pretrain.py --preset muon --steps 2000 --lr 0.01
  python examples/pretrain.py --size small --data 'corpus/*.txt' --schedule wsd
  python examples/pretrain.py --data hf:roneneldan/TinyStories      # needs `datasets`, network
  python examples/pretrain.py --role-lr lm_head=3e-4 --role-lr embedding=0.05
  python examples/pretrain.py --preset muon --rule hidden=aurora   # a Muon variant
  python examples/pretrain.py --preset muon --rule attention=compositional_muon
  SYMOPTAX_SMOKE=1 python examples/pretrain.py                      # seconds: tests, CI

``--model olmoe`` trains an OLMoE-style mixture of experts instead (softmax top-2 router over 8
stacked SwiGLU experts of a third of the size's ff each, computed densely; no load-balancing
loss), whose router gets the preset's router rule.

Sizes (``--size``; parameters of the Qwen3-style model with the default 8192 vocabulary):
  tiny    d 128, 4 layers, 4 heads (2 kv), ff 384, seq 128, batch 16      2.9M
  tiny2x  d 256, 8 layers, 8 heads (4 kv), ff 768, seq 128, batch 16      10.5M
  small   d 512, 8 layers, 8 heads (4 kv), ff 1536, seq 512, batch 32     33.6M
  medium  d 1024, 16 layers, 16 heads (8 kv), ff 3072, seq 1024, batch 64  218M
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python examples/pretrain.py`: make `examples` importable
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import symoptax
from examples import data as data_lib
from examples import progress
from examples.models import moe, qwen3
from examples.models.common import next_token_loss
from symoptax.stacks import ATTENTION_ROLES, HIDDEN_ROLES

SIZES = {  # name: (model config without vocab, seq, batch)
    "smoke": (dict(d=32, layers=2, heads=2, kv_heads=1, head_dim=16, ff=64), 32, 4),
    "tiny": (dict(d=128, layers=4, heads=4, kv_heads=2, head_dim=32, ff=384), 128, 16),
    "tiny2x": (dict(d=256, layers=8, heads=8, kv_heads=4, head_dim=32, ff=768), 128, 16),
    "small": (dict(d=512, layers=8, heads=8, kv_heads=4, head_dim=64, ff=1536), 512, 32),
    "medium": (dict(d=1024, layers=16, heads=16, kv_heads=8, head_dim=64, ff=3072), 1024, 64),
}
MODELS = {"qwen3": "Qwen3-style", "olmoe": "OLMoE-style MoE"}
MOE = dict(experts=8, top_k=2)  # --model olmoe: ff per expert = the size's ff // 3
SMOKE = dict(size="smoke", vocab=512, steps=30, max_bytes=300_000, eval_every=10,
             eval_batches=2, ckpt_every=10, warmup=3)
# Seconds to compile the train step (default preset, Qwen3-style) on a 2-core CPU, for the
# message before step 1.
CPU_COMPILE_S = {"smoke": 5, "tiny": 6}
# What a run with given arguments computes; bumped when that changes, so that benchmark
# results of an earlier version are not reused (benchmarks/quality.py --reuse). 2: the first
# update's rate is the schedule's rate after one step, no longer 0.
RESULTS_VERSION = 2


def smoke() -> bool:
  return os.environ.get("SYMOPTAX_SMOKE", "") not in ("", "0")


def make_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=progress.HelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1], allow_abbrev=False)
  p.add_argument("--size", choices=[s for s in SIZES if s != "smoke"], default="tiny")
  p.add_argument("--model", choices=MODELS, default="qwen3",
                 help="Qwen3-style dense model or OLMoE-style mixture of experts")
  p.add_argument("--preset", choices=list(symoptax.PRESETS), default=symoptax.DEFAULT_PRESET)
  p.add_argument("--lr", type=float, default=0.04,
                 help="peak Muon learning rate (0.04: the default preset's choice on the quality "
                      "benchmark); other rules use their ratio (PRESET_LR_RATIO, LR_RATIO)")
  p.add_argument("--scale", choices=list(symoptax.SCALES), default=None,
                 help="update-size convention of the matrix rules (default: the preset's; "
                      "README 'Update scales')")
  p.add_argument("--role-lr", action="append", default=[], metavar="ROLE=LR",
                 help="absolute peak learning rate for one role (repeatable), e.g. "
                      "lm_head=3e-4; follows the same schedule")
  p.add_argument("--rule", action="append", default=[], metavar="ROLE=RULE[,KEY=VALUE...]",
                 help="use RULE for ROLE instead of the preset's (repeatable), e.g. "
                      "mlp_in=aurora; ROLE 'hidden' means every attention/MLP role, "
                      "'attention' the q/k/v/o roles (attention=compositional_muon)")
  p.add_argument("--polar-method", default=None, choices=list(symoptax.polar.FULL_METHODS),
                 help="the polar oracle of every Muon-rule role (default: Muon's, "
                      "polar_express), e.g. layer_aware")
  p.add_argument("--wrap", action="append", default=[], metavar="WRAPPER[,KEY=VALUE...]",
                 help="wrap the stack (repeatable, innermost first) in a wrapper of "
                      "symoptax.variants.WRAPPERS, e.g. drop_layers,keep_prob=0.5")
  p.add_argument("--schedule", choices=["cosine", "wsd"], default="cosine",
                 help="cosine decay to 10%% of peak, or warmup-stable-decay (last 20%% "
                      "linear towards 0)")
  p.add_argument("--warmup", type=int, default=None, help="warmup steps (default 5%%)")
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--batch", type=int, default=None, help="global batch (default per size)")
  p.add_argument("--seq", type=int, default=None, help="sequence length (default per size)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--data", default="builtin",
                 help="'builtin', a file/directory/glob of text files, or hf:NAME[:CONFIG]")
  p.add_argument("--vocab", type=int, default=8192, help="BPE vocabulary size")
  p.add_argument("--max-bytes", type=int, default=16_000_000, help="corpus size cap")
  p.add_argument("--out", default=None, help="run directory (default runs/pretrain/...)")
  p.add_argument("--eval-every", type=int, default=50)
  p.add_argument("--eval-batches", type=int, default=8)
  p.add_argument("--log-every", type=int, default=1)
  p.add_argument("--diag-every", type=int, default=None,
                 help="steps between per-role update statistics (default: --eval-every)")
  p.add_argument("--uncentred", action="store_true",
                 help="no row centring on the LM head and router (an ablation of the "
                      "softmax-shift symmetry; only for rules that centre)")
  p.add_argument("--ckpt-every", type=int, default=200)
  p.add_argument("--resume", action="store_true",
                 help="continue from the latest checkpoint in --out")
  p.add_argument("--stop-at", type=int, default=None,
                 help="stop (checkpointing) after this step, as if interrupted; --resume "
                      "continues the same run")
  p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
  return p


def parse_args(argv=None) -> argparse.Namespace:
  parser = make_parser()
  args = parser.parse_args(argv)
  given = sys.argv[1:] if argv is None else argv
  explicit = {a.lstrip("-").replace("-", "_").split("=")[0] for a in given
              if a.startswith("--")}
  if smoke():  # shrink whatever the user did not set explicitly
    for k, v in SMOKE.items():
      if k not in explicit:
        setattr(args, k, v)
  model_kw, seq, batch = SIZES[args.size]
  args.seq = args.seq or seq
  args.batch = args.batch or batch
  if args.steps < 1:
    parser.error(f"--steps {args.steps}: must be at least 1")
  args.warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)
  args.warmup = min(args.warmup, args.steps - 1)  # leave at least one step to decay over
  roles = {}
  for item in args.role_lr:
    role, sep, value = item.partition("=")
    if not sep or role not in symoptax.ROLES:
      parser.error(f"--role-lr {item!r}: expected ROLE=LR with ROLE one of "
                   f"{', '.join(symoptax.ROLES)}")
    roles[role] = float(value)
  args.role_lrs = roles
  rules = {}
  for item in args.rule:
    role, sep, spec = item.partition("=")
    rule, *pairs = spec.split(",")
    targets = {"hidden": HIDDEN_ROLES, "attention": ATTENTION_ROLES}.get(role, (role,))
    if not sep or not set(targets) <= set(symoptax.ROLES) or rule not in symoptax.RULES:
      parser.error(f"--rule {item!r}: expected ROLE=RULE[,KEY=VALUE...] with ROLE 'hidden', "
                   f"'attention' or one of {', '.join(symoptax.ROLES)} and RULE one of "
                   f"{', '.join(symoptax.RULES)}")
    try:
      parse_options(pairs, f"--rule {item!r}")
    except ValueError as e:
      parser.error(str(e))
    rules.update({t: spec for t in targets})  # "RULE[,KEY=VALUE...]", as given
  args.role_rules = rules
  try:
    args.wrappers = [parse_wrapper(item) for item in args.wrap]
  except ValueError as e:
    parser.error(str(e))
  args.diag_every = args.diag_every or args.eval_every
  model = "" if args.model == "qwen3" else f"{args.model}-"
  args.out = args.out or str(Path("runs") / "pretrain" / f"{model}{args.size}-{args.preset}")
  return args


def schedule(args, peak: float) -> optax.Schedule:
  """Linear warmup to ``peak``, then cosine to 0.1 peak, or WSD (stable, last 20% linear
  towards 0).

  Written over the update number k = 1..steps: warmup gives peak * k / warmup, reaching the
  peak at update ``warmup``; cosine ends at 0.1 peak on the last update; WSD's decay would
  reach 0 one update after the last. optax calls a schedule with the count of updates done
  so far (0 for the first), hence ``count + 1``: a warmup from 0 at count 0 would make the
  first update a no-op.
  """
  if args.schedule == "cosine":
    base = optax.warmup_cosine_decay_schedule(0.0, peak, args.warmup, args.steps, 0.1 * peak)
  else:
    decay = min(max(1, args.steps // 5), args.steps - args.warmup)
    stable = max(0, args.steps - args.warmup - decay)
    base = optax.join_schedules(
        [optax.linear_schedule(0.0, peak, args.warmup), optax.constant_schedule(peak),
         optax.linear_schedule(peak, 0.0, decay + 1)],
        [args.warmup, args.warmup + stable])
  return lambda count: base(count + 1)


def overrides(args, as_schedule: bool = True) -> dict:
  """symmetry_stack overrides from --rule, --role-lr and --uncentred (rates as schedules or
  peaks)."""
  out = {}
  for role, spec in args.role_rules.items():
    rule, *pairs = spec.split(",")
    out[role] = {"rule": rule}
    if pairs:
      out[role]["options"] = parse_options(pairs, f"--rule {role}={spec}")
  for role, lr in args.role_lrs.items():
    out.setdefault(role, {})["learning_rate"] = schedule(args, lr) if as_schedule else lr
  if args.polar_method:
    table = symoptax.stacks.resolve_rules(args.lr, args.preset, out)
    for role, r in table.items():
      if r.rule == "muon":
        out.setdefault(role, {}).setdefault("options", {})["method"] = args.polar_method
  if args.uncentred:
    table = symoptax.stacks.resolve_rules(args.lr, args.preset, out)
    for role in ("lm_head", "router"):
      if table[role].center:
        out.setdefault(role, {}).setdefault("options", {})["center"] = False
  return out


def parse_wrapper(item: str) -> tuple[str, dict]:
  """``"drop_layers,keep_prob=0.5"`` -> ``("drop_layers", {"keep_prob": 0.5})`` (values are
  Python literals; anything else stays a string)."""
  name, *pairs = item.split(",")
  if name not in symoptax.variants.WRAPPERS:
    raise ValueError(f"--wrap {item!r}: unknown wrapper {name!r}; valid choices are "
                     f"{', '.join(symoptax.variants.WRAPPERS)}")
  return name, parse_options(pairs, f"--wrap {item!r}")


def parse_options(pairs: list[str], what: str) -> dict:
  """``["keep_prob=0.5", "mode=RC"]`` -> ``{"keep_prob": 0.5, "mode": "RC"}`` (values are
  Python literals; anything else stays a string)."""
  kwargs = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep:
      raise ValueError(f"{what}: expected KEY=VALUE, got {pair!r}")
    try:
      kwargs[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      kwargs[key] = value
  return kwargs


def make_optimizer(args, params) -> optax.GradientTransformation:
  tx = symoptax.symmetry_stack(schedule(args, args.lr), preset=args.preset, params=params,
                               scale=args.scale, overrides=overrides(args))
  for name, kwargs in getattr(args, "wrappers", ()):
    # Every wrapper reads leaves with the roles' axes (stacked experts [E, d, ff] included).
    kwargs = {"axes": symoptax.matrix_axes(params), **kwargs}
    tx = symoptax.variants.WRAPPERS[name](tx, **kwargs)
  return tx


def build(args, vocab: int):
  """Model pieces (graphdef, params, rest), optimizer and its initial state, all replicated
  over a 1-D ``data`` mesh of every device."""
  model_kw, _, _ = SIZES[args.size]
  if args.model == "olmoe":
    cfg = moe.Config(vocab=vocab, **{**model_kw, "ff": model_kw["ff"] // 3}, **MOE)
    model = moe.Olmoe(cfg, rngs=nnx.Rngs(args.seed))
  else:
    cfg = qwen3.Config(vocab=vocab, **model_kw)
    model = qwen3.Qwen3(cfg, rngs=nnx.Rngs(args.seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, P())
  params = jax.device_put(params, replicated)
  tx = make_optimizer(args, params)
  opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
  return cfg, graphdef, params, rest, tx, opt_state, mesh


def make_steps(graphdef, rest, tx):
  def loss_fn(params, tokens):
    return next_token_loss(nnx.merge(graphdef, params, rest), tokens)

  def loss_and_max_logit(params, tokens):
    logits = nnx.merge(graphdef, params, rest)(tokens[:, :-1]).astype(jnp.float32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    return loss, jnp.max(logits)

  @jax.jit
  def train_step(params, opt_state, tokens, diagnose):
    """One step; ``diagnose`` (a traced bool) adds symoptax.diagnostics' statistics."""
    (loss, max_logit), grads = jax.value_and_grad(loss_and_max_logit, has_aux=True)(
        params, tokens)
    updates, opt_state = tx.update(grads, opt_state, params)
    gnorm = optax.tree_utils.tree_norm(grads)
    stats = lambda: symoptax.diagnostics.update_stats(updates, params)
    zeros = lambda: jax.tree.map(jnp.zeros_like, jax.eval_shape(stats))
    diag = jax.lax.cond(diagnose, stats, zeros)
    return (optax.apply_updates(params, updates), opt_state, loss, gnorm, max_logit, diag)

  @jax.jit
  def eval_loss(params, batches):
    return jax.lax.map(lambda b: loss_fn(params, b), batches).mean()

  return train_step, eval_loss


class Checkpoints:
  """Orbax checkpoints of {params, opt_state} plus JSON metadata {step, data_pos}."""

  def __init__(self, directory: Path):
    import orbax.checkpoint as ocp
    self.ocp = ocp
    self.manager = ocp.CheckpointManager(
        directory.resolve(), options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))

  def save(self, step: int, params, opt_state, data_pos: int):
    args = self.ocp.args
    self.manager.save(step, args=args.Composite(
        state=args.StandardSave({"params": params, "opt_state": opt_state}),
        meta=args.JsonSave({"step": step, "data_pos": data_pos})), force=True)

  def latest(self):
    return self.manager.latest_step()

  def restore(self, params, opt_state):
    """Restores the latest checkpoint into the structure/shardings of the given trees."""
    args = self.ocp.args
    step = self.manager.latest_step()
    target = jax.tree.map(self.ocp.utils.to_shape_dtype_struct,
                          {"params": params, "opt_state": opt_state})
    out = self.manager.restore(step, args=args.Composite(
        state=args.StandardRestore(target), meta=args.JsonRestore()))
    return out["state"]["params"], out["state"]["opt_state"], out["meta"]

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


RESUME_KEYS = ("size", "model", "preset", "scale", "uncentred", "lr", "role_lrs",
               "role_rules", "schedule", "warmup", "steps", "batch", "seq", "seed", "data",
               "vocab", "max_bytes", "polar_method", "wrap")


def check_same_run(args, config_path: Path):
  """--resume continues the same run: the settings that shape it must not change."""
  if not config_path.exists():
    return
  saved = json.loads(config_path.read_text())
  changed = [f"{k} {saved.get(k)!r} -> {getattr(args, k)!r}" for k in RESUME_KEYS
             if k in saved and saved[k] != getattr(args, k)]
  if changed:
    raise SystemExit(f"pretrain.py: error: --resume in {config_path.parent} with different "
                     f"settings ({'; '.join(changed)}); use the original flags or a new --out")


def read_metrics(path: Path, upto: int | None = None) -> list[dict]:
  if not path.exists():
    return []
  rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return [r for r in rows if upto is None or r["step"] <= upto]


def plot(rows: list[dict], path: Path, title: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  steps = np.array([r["step"] for r in rows])
  loss = np.array([r["loss"] for r in rows])
  fig, ax = plt.subplots(figsize=(7, 4.2))
  ax.plot(steps, loss, color="tab:blue", alpha=0.25, lw=0.8)
  if len(loss) > 1:  # exponential moving average of the training loss
    ema, e = np.empty_like(loss), loss[0]
    for i, v in enumerate(loss):
      e = 0.95 * e + 0.05 * v if i else v
      ema[i] = e
    ax.plot(steps, ema, color="tab:blue", label="train (EMA)")
  val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
  if val:
    ax.plot(*zip(*val), "o-", color="tab:orange", label="validation")
  ax.set(xlabel="step", ylabel="loss", title=title)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_diagnostics(rows: list[dict], path: Path, title: str):
  """Per-role ||dW|| / ||W|| and update spectral norms, the LM head's mean-row norm (its
  position along the softmax shift) and the largest logit, over the run."""
  diag = [r for r in rows if any(k.startswith("diag/") for k in r)]
  if not diag:
    return
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 2, figsize=(11, 7))
  steps = [r["step"] for r in diag]
  roles = sorted({k.split("/")[1] for r in diag for k in r if k.startswith("diag/")})
  for ax, stat, label in ((axes[0, 0], "update_rel", "||dW||_F / ||W||_F"),
                          (axes[0, 1], "update_op", "||dW||_op (estimate)")):
    for role in roles:
      ys = [r.get(f"diag/{role}/{stat}", np.nan) for r in diag]
      if np.isfinite(ys).any():
        ax.plot(steps, ys, label=role)
    ax.set(yscale="log", xlabel="step", title=label)
    ax.legend(fontsize=7)
  for role in ("lm_head", "router"):
    ys = [r.get(f"diag/{role}/mean_row", np.nan) for r in diag]
    if np.isfinite(ys).any():
      axes[1, 0].plot(steps, ys, label=role)
  axes[1, 0].set(xlabel="step", title="mean-row norm (softmax-shift direction)")
  if axes[1, 0].get_legend_handles_labels()[0]:
    axes[1, 0].legend(fontsize=7)
  axes[1, 1].plot([r["step"] for r in rows], [r["max_logit"] for r in rows])
  axes[1, 1].set(xlabel="step", title="largest logit of the training batch")
  for ax in axes.flat:
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run(args, log=progress.say) -> list[dict]:
  """Trains as ``args`` says; returns the metrics rows of the whole run (resumed included)."""
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  try:
    data = data_lib.prepare(args.data, args.vocab, args.max_bytes, log=log)
  except data_lib.DataError as e:
    raise SystemExit(f"pretrain.py: error: {e}") from None
  n_dev = jax.device_count()
  if args.batch % n_dev:
    raise SystemExit(f"pretrain.py: error: --batch {args.batch} must be a multiple of the "
                     f"device count {n_dev}")
  cfg, graphdef, params, rest, tx, opt_state, mesh = build(args, data.vocab)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  batch_sharding = NamedSharding(mesh, P("data"))
  train_step, eval_loss = make_steps(graphdef, rest, tx)
  try:
    val = data.val_batches(args.eval_batches, args.batch, args.seq)
  except data_lib.DataError as e:
    raise SystemExit(f"pretrain.py: error: {e}") from None
  val = jax.device_put(val, NamedSharding(mesh, P(None, "data")))
  # The rate of every update (lrs[k - 1] for step k), computed once: evaluating the schedule
  # op by op each step would dispatch (and first compile) a dozen small computations.
  lrs = np.asarray(jax.jit(jax.vmap(schedule(args, args.lr)))(jnp.arange(args.steps)))

  ckpt = Checkpoints(out / "checkpoints")
  metrics_path = out / "metrics.jsonl"
  start, data_pos = 0, 0
  if args.resume and ckpt.latest() is not None:
    check_same_run(args, out / "config.json")
    params, opt_state, meta = ckpt.restore(params, opt_state)
    start, data_pos = meta["step"], meta["data_pos"]
    rows = read_metrics(metrics_path, upto=start)  # drop rows logged after the checkpoint
    log(f"resumed from step {start} ({out / 'checkpoints'})")
  else:
    if args.resume:
      log(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
    elif ckpt.latest() is not None:  # a fresh run into a used --out: its checkpoints go
      log(f"starting a fresh run in {out}: removing the earlier run's checkpoints "
          "(pass --resume to continue it instead)")
      ckpt.close()
      shutil.rmtree(out / "checkpoints")
      ckpt = Checkpoints(out / "checkpoints")
    rows = []
  metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  (out / "config.json").write_text(json.dumps(
      {**{k: v for k, v in vars(args).items()}, "model_config": dataclasses.asdict(cfg),
       "params": int(n_params), "devices": [str(d) for d in jax.devices()]}, indent=1))
  log(f"model: {MODELS[args.model]} {args.size}, {n_params / 1e6:.2f}M params; preset "
      f"{args.preset}; {n_dev} x {jax.devices()[0].device_kind}; batch {args.batch} x "
      f"{args.seq} tokens")
  if start == 0:
    log(str(symoptax.describe(params, preset=args.preset, learning_rate=args.lr,
                              scale=args.scale, overrides=overrides(args, as_schedule=False))))

  end = min(args.steps, args.stop_at) if args.stop_at else args.steps
  if start < end:
    cpu_s = CPU_COMPILE_S.get(args.size) if args.model == "qwen3" else None
    log(progress.compile_note(f"the {args.preset} train step", cpu_s))
  bar = progress.bar(args.steps, args.preset, initial=start, disable=args.no_progress, log=log)
  meter = progress.Throughput(args.batch * args.seq)
  last_mark, compile_logged = start + 1, False
  with metrics_path.open("a") as f:
    for step in range(start + 1, end + 1):
      tokens = jax.device_put(data.batch(data_pos, args.batch, args.seq, args.seed),
                              batch_sharding)
      data_pos += 1
      diagnose = step % args.diag_every == 0 or step == args.steps
      params, opt_state, loss, gnorm, max_logit, diag = train_step(
          params, opt_state, tokens, diagnose)
      if step == start + 1:  # compiled the train step: time it apart from the rest
        bar.write(f"step {step}: compiled and ran the train step in "
                  f"{meter.first((params, opt_state, loss)):.1f} s")
      if (step % args.log_every == 0 or step == end or step % args.eval_every == 0
          or diagnose):
        row = {"step": step, "loss": float(loss), "lr": float(lrs[step - 1]),
               "grad_norm": float(gnorm), "max_logit": float(max_logit)}
        if step > last_mark:  # the outputs are on the host now: the interval is measured
          meter.mark(step - last_mark)
          last_mark = step
          row["tokens_per_s"] = meter.rate
        if not compile_logged:  # the first row this process logs
          row["compile_s"], compile_logged = meter.compile_s, True
        row["elapsed_s"] = meter.elapsed
        meter.pause()
        if step % args.eval_every == 0 or step == args.steps:
          row["val_loss"] = float(eval_loss(params, val))
        if diagnose:
          row.update({f"diag/{k}": float(v) for k, v in diag.items()})
        if not np.isfinite(row["loss"]):
          raise SystemExit(f"pretrain.py: error: loss is {row['loss']} at step {step}; "
                           "lower --lr")
        rows.append(row)
        f.write(json.dumps(row) + "\n")
        f.flush()
        postfix = {"loss": f"{row['loss']:.3f}", "lr": f"{row['lr']:.2e}"}
        if meter.rate is not None:
          postfix["tok_s"] = f"{meter.rate:.0f}"
        bar.set_postfix(**postfix, refresh=False)
        meter.resume()
      bar.update(1)
      if step % args.ckpt_every == 0 or step == end:
        jax.block_until_ready(params)  # the step's own time stays in the measured interval
        meter.pause()
        ckpt.save(step, params, opt_state, data_pos)
        meter.resume()
  bar.close()
  ckpt.close()
  if rows:
    title = f"{MODELS[args.model]} {args.size}, preset {args.preset}"
    plot(rows, out / "loss.png", title)
    plot_diagnostics(rows, out / "diagnostics.png", title)
  vals = [r["val_loss"] for r in rows if "val_loss" in r]
  if rows:
    log(f"step {rows[-1]['step']}: loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}"
        + (f"; val loss {vals[-1]:.3f}" if vals else "") + f"; wrote {out}/")
  return rows


def main(argv=None):
  return run(parse_args(argv))


if __name__ == "__main__":
  main()
