"""Collectives and step time of the sharded optimizer step, per preset/rule and mesh.

On a Qwen3-0.6B-shaped tree with scanned layers ([28, ...] stacks; widths divided by
``--scale``), sharded MaxText-style over ``(data, fsdp, tensor)``-named meshes (embedding and
head over fsdp x tensor, layer stacks along their matrix axes, vectors replicated), each
configuration's ``tx.update`` + ``optax.apply_updates`` is compiled two ways:

  sharded   ``symmetry_stack(..., shardings=...)``: symoptax's shard_map step
  jit       the same stack without shardings on the same sharded arrays: XLA's partitioner

and the table gives the collectives in each compiled HLO (all-reduce / all-gather /
all-to-all / others) and the median warm step time. On a CPU host the devices are faked
(``--xla_force_host_platform_device_count``), so the times say nothing about interconnects;
the collective counts are what the compiler will emit on any backend. Writes JSON; asserts
nothing.

  python benchmarks/sharded_step.py                     # 8 fake CPU devices
  python benchmarks/sharded_step.py --scale 1           # real shapes, on a GPU/TPU host
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules and "--xla_force_host_platform_device_count" not in os.environ.get(
    "XLA_FLAGS", ""):
  # Only used when the host has no accelerator: 8 fake CPU devices.
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import symoptax  # noqa: E402
from _results import HelpFormatter  # noqa: E402  (benchmarks/_results.py)

CONFIGS = {
    "paper": dict(preset="paper"),
    "muon": dict(preset="muon"),
    "rownorm": dict(preset="rownorm"),
    "hybrid": dict(preset="hybrid"),
    "hidden=normuon": dict(preset="muon", hidden="normuon"),
    "hidden=namo_d": dict(preset="muon", hidden="namo_d"),
    "hidden=spectral_clip": dict(preset="muon", hidden="spectral_clip"),
    "hidden=rmnp": dict(preset="muon", hidden="rmnp"),
}
MESHES = {"8": ((8,), ("fsdp",)), "4x2": ((4, 2), ("fsdp", "tensor")),
          "2x2x2": ((2, 2, 2), ("data", "fsdp", "tensor"))}
KINDS = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")


def qwen3_scanned(scale: int):
  """Shapes and logical sharding of a Qwen3-0.6B-shaped tree with a [28, ...] layer stack."""
  v, d, ff, q, kv, hd, n = (151936 // scale, 1024 // scale, 3072 // scale, 2048 // scale,
                            1024 // scale, 128 // scale, 28)
  # (shape, spec over the logical names "F" (fsdp-like) and "T" (tensor-like)).
  tree = {
      "embed_tokens": {"embedding": ((v, d), ("F", "T"))},
      "layers": {
          "input_layernorm": {"scale": ((n, d), (None, None))},
          "post_attention_layernorm": {"scale": ((n, d), (None, None))},
          "self_attn": {"q_proj": {"kernel": ((n, d, q), (None, "F", "T"))},
                        "k_proj": {"kernel": ((n, d, kv), (None, "F", "T"))},
                        "v_proj": {"kernel": ((n, d, kv), (None, "F", "T"))},
                        "o_proj": {"kernel": ((n, q, d), (None, "T", "F"))},
                        "q_norm": {"scale": ((n, hd), (None, None))},
                        "k_norm": {"scale": ((n, hd), (None, None))}},
          "mlp": {"gate_proj": {"kernel": ((n, d, ff), (None, "F", "T"))},
                  "up_proj": {"kernel": ((n, d, ff), (None, "F", "T"))},
                  "down_proj": {"kernel": ((n, ff, d), (None, "T", "F"))}}},
      "norm": {"scale": ((d,), (None,))},
      "lm_head": {"kernel": ((d, v), ("T", "F"))},
  }
  is_leaf = lambda x: isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)
  shapes = jax.tree.map(lambda t: t[0], tree, is_leaf=is_leaf)
  logical = jax.tree.map(lambda t: t[1], tree, is_leaf=is_leaf)
  return shapes, logical


def mesh_specs(logical, names):
  """Logical "F"/"T" -> mesh axes: F = every non-tensor axis, T = "tensor" (if present)."""
  f = tuple(n for n in names if n != "tensor")
  t = "tensor" if "tensor" in names else None
  to = {"F": f if len(f) > 1 else f[0], "T": t, None: None}
  return jax.tree.map(lambda spec: P(*(to[s] for s in spec)), logical,
                      is_leaf=lambda x: isinstance(x, tuple))


def count(text: str) -> dict[str, int]:
  return {k: len(re.findall(rf"\s{k}(-start)?\(", text)) for k in KINDS}


def bench(step, args_, repeats: int) -> float:
  out = step(*args_)
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = step(*args_)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return 1e3 * statistics.median(times)


def run(config: str, mesh_name: str, scale: int, repeats: int, paths) -> list[dict]:
  shape, names = MESHES[mesh_name]
  mesh = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))
  shapes, logical = qwen3_scanned(scale)
  specs = mesh_specs(logical, names)
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, P))
  key = iter(jax.random.split(jax.random.key(0), 64))
  params = jax.tree.map(lambda s, sh: jax.device_put(
      0.02 * jax.random.normal(next(key), s, jnp.float32), sh), shapes, shardings,
                        is_leaf=lambda x: isinstance(x, tuple) and all(
                            isinstance(i, int) for i in x))
  grads = jax.tree.map(lambda p: p * 0.1 + 0.01, params)
  cfg = dict(CONFIGS[config])
  hidden = cfg.pop("hidden", None)
  overrides = {r: hidden for r in symoptax.stacks.HIDDEN_ROLES} if hidden else None
  rows = []
  for path in paths:
    tx = symoptax.symmetry_stack(0.02, params=params, scan_axis=0, overrides=overrides,
                                 shardings=shardings if path == "sharded" else None, **cfg)
    # A real train step fixes the state's placement: parameter-shaped state like the
    # parameters, the rest replicated (for the jit path too, which does not pin it itself).
    state = jax.jit(tx.init)(params)
    replicated = NamedSharding(mesh, P())
    state_sh = symoptax.sharding.state_shardings(state, shardings, replicated, params=params,
                                                 other=replicated)
    if path == "sharded":  # symoptax places its per-row/column statistics itself
      state_sh = jax.tree.map(lambda x: x.sharding, state)
    state = jax.device_put(state, state_sh)

    def step(p, s, g):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    jitted = jax.jit(step, donate_argnums=(0, 1), out_shardings=(shardings, state_sh))
    text = jitted.lower(params, state, grads).compile().as_text()
    p2 = jax.tree.map(jnp.copy, params)
    s2 = jax.tree.map(jnp.copy, state)
    holder = {"p": p2, "s": s2}

    def call(g):
      holder["p"], holder["s"] = jitted(holder["p"], holder["s"], g)
      return holder["p"]

    ms = bench(call, (grads,), repeats)
    rows.append(dict(config=config, mesh=mesh_name, path=path, ms=ms, **count(text)))
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=HelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--scale", type=int, default=16, help="divide every width by this")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--configs", default=",".join(CONFIGS))
  p.add_argument("--meshes", default=",".join(MESHES))
  p.add_argument("--paths", default="sharded,jit")
  p.add_argument("--out", default="benchmarks/results/sharded_step.json")
  args = p.parse_args(argv)
  if jax.device_count() < 8:
    raise SystemExit(f"sharded_step.py: needs 8 devices, JAX sees {jax.device_count()}.")
  rows = []
  header = (f"{'config':<22} {'mesh':<6} {'path':<8} {'all-red':>7} {'all-gat':>7} "
            f"{'all2all':>7} {'other':>5} {'ms/step':>9}")
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; jax {jax.__version__}; "
        f"tree scale 1/{args.scale}")
  print(header)
  print("-" * len(header))
  for config in args.configs.split(","):
    for mesh_name in args.meshes.split(","):
      for r in run(config, mesh_name, args.scale, args.repeats, args.paths.split(",")):
        other = r["reduce-scatter"] + r["collective-permute"]
        print(f"{r['config']:<22} {r['mesh']:<6} {r['path']:<8} {r['all-reduce']:>7} "
              f"{r['all-gather']:>7} {r['all-to-all']:>7} {other:>5} {r['ms']:>9.1f}",
              flush=True)
        rows.append(r)
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "device": jax.devices()[0].device_kind, "device_count": jax.device_count(),
      "platform": platform.platform(), "processor": platform.processor(),
      "jax": jax.__version__, "scale": args.scale, "repeats": args.repeats, "rows": rows},
      indent=1))
  print(f"wrote {out}")
  return rows


if __name__ == "__main__":
  main()
