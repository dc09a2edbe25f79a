"""MaxText-style training with symoptax: Linen ``nn.scan`` layers, logical axis names, a
``(data, fsdp, tensor)`` mesh over every device, and a MaxText-shaped train step.

The model (``examples/models/maxtext_style.py``) names its parameters as MaxText does
(``token_embedder``, ``decoder/layers/self_attention/query``, ``mlp/wi_0``, ``logits_dense``)
and stacks its layers with ``nn.scan`` along ``param_scan_axis`` (MaxText's default, 1).
``symmetry_stack(..., scan_axis=1)`` treats that axis as a batch of per-layer matrices.
Parameters are sharded by their logical names through ``LOGICAL_RULES``; the batch is split
over ``data`` x ``fsdp``. The optimizer gets the parameters' shardings
(``symmetry_stack(..., shardings=...)``): its matrix steps run under ``jax.shard_map`` with
explicit collectives (``--no-shard-map``: the same stack left to jit's partitioner).

  python examples/maxtext_style.py                             # all devices JAX sees
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/maxtext_style.py
  python examples/maxtext_style.py --mesh 2,2,2 --preset muon --steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import symoptax
from examples import data as data_lib
from examples import progress
from examples.models import maxtext_style as mt


def auto_mesh_shape(n: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) for n devices: tensor 2 and fsdp 2 where they divide, rest data."""
  tensor = 2 if n % 2 == 0 and n >= 4 else 1
  fsdp = 2 if (n // tensor) % 2 == 0 else 1
  return n // (tensor * fsdp), fsdp, tensor


def make_mesh(shape) -> Mesh:
  devices = np.array(jax.devices())
  if int(np.prod(shape)) != devices.size:
    raise SystemExit(f"maxtext_style.py: error: --mesh {','.join(map(str, shape))} needs "
                     f"{int(np.prod(shape))} devices; JAX sees {devices.size}")
  return Mesh(devices.reshape(shape), ("data", "fsdp", "tensor"))


def loss_fn(model, params, batch):
  """MaxText's loss: mean next-token cross entropy over the batch, logits in fp32."""
  logits = model.apply({"params": params}, batch["inputs"])
  xent = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                         batch["targets"])
  return xent.mean()


def setup(cfg: mt.Config, mesh: Mesh, tx_fn, seed: int = 0):
  """Creates the TrainState directly in its shardings, as MaxText's ``setup_initial_state``:
  parameter shardings from the logical axis names; ``tx_fn(abstract_params, shardings)``
  builds the optimizer, whose state symoptax places like the parameters
  (``symoptax.sharding.state_shardings``); step replicated."""
  model = mt.MaxTextStyleLM(cfg)
  dummy = jnp.zeros((1, 8), jnp.int32)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(seed), dummy)["params"])
  logical = nn.get_partition_spec(boxed)
  param_shardings = nn.logical_to_mesh_sharding(logical, mesh, mt.LOGICAL_RULES)
  abstract = jax.tree.map(lambda b, s: jax.ShapeDtypeStruct(b.shape, b.dtype, sharding=s),
                          nn.unbox(boxed), param_shardings)
  tx = tx_fn(abstract, param_shardings)

  def create():
    params = nn.unbox(model.init(jax.random.key(seed), dummy)["params"])
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  state_shapes = jax.eval_shape(create)
  replicated = NamedSharding(mesh, P())
  # Parameter-shaped state (momentum, Adam moments) like the parameters, counts replicated;
  # per-row/column statistics (NorMuon, NAMO-D) as symoptax's init places them.
  opt_shardings = symoptax.sharding.state_shardings(
      state_shapes.opt_state, param_shardings, replicated, params=abstract,
      other=None)  # None: jit leaves their placement to init
  state_shardings = state_shapes.replace(step=replicated, params=param_shardings,
                                         opt_state=opt_shardings)
  state = jax.jit(create, out_shardings=state_shardings)()
  # Whatever the state's placement was left to init, it is fixed from here on.
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  return model, state, state_shardings


def make_train_step(model, state_shardings, batch_sharding):
  def train_step(state, batch):
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model, p, batch))(state.params)
    new_state = state.apply_gradients(grads=grads)
    return new_state, {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads)}

  return jax.jit(train_step, in_shardings=(state_shardings, batch_sharding),
                 out_shardings=(state_shardings, None), donate_argnums=0)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=progress.HelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1])
  p.add_argument("--mesh", default=None, help="data,fsdp,tensor (default: from device count)")
  p.add_argument("--preset", choices=list(symoptax.PRESETS), default=symoptax.DEFAULT_PRESET)
  p.add_argument("--lr", type=float, default=0.02, help="peak Muon learning rate")
  p.add_argument("--steps", type=int, default=100)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seq", type=int, default=128)
  p.add_argument("--vocab", type=int, default=4096)
  p.add_argument("--scan-axis", type=int, default=1, choices=[0, 1],
                 help="MaxText's param_scan_axis")
  p.add_argument("--data", default="builtin")
  p.add_argument("--shard-map", action=argparse.BooleanOptionalAction, default=True,
                 help="symoptax's sharded step (default) or plain jit partitioning")
  p.add_argument("--losses", default=None, help="write the per-step losses to this JSON file")
  p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
  args = p.parse_args(argv)
  size = dict(d=128, layers=4, heads=4, kv_heads=2, head_dim=32, ff=384)
  max_bytes = 8_000_000
  if os.environ.get("SYMOPTAX_SMOKE", "") not in ("", "0"):
    args.steps, args.batch, args.seq, args.vocab, max_bytes = 6, 8, 32, 512, 300_000
    size = dict(d=32, layers=2, heads=2, kv_heads=2, head_dim=16, ff=64)

  shape = (tuple(int(x) for x in args.mesh.split(",")) if args.mesh
           else auto_mesh_shape(jax.device_count()))
  mesh = make_mesh(shape)
  try:
    data = data_lib.prepare(args.data, args.vocab, max_bytes)
  except data_lib.DataError as e:
    raise SystemExit(f"maxtext_style.py: error: {e}") from None
  progress.say("building the model and optimizer state in their shardings...")
  cfg = mt.Config(vocab=data.vocab, param_scan_axis=args.scan_axis, **size)
  warmup = optax.warmup_cosine_decay_schedule(0.0, args.lr, max(1, args.steps // 20),
                                              args.steps, 0.1 * args.lr)
  # optax passes the count of updates done (0 for the first): shifted by one, the first update
  # gets lr / warmup rather than 0, and the last one the final 0.1 lr.
  schedule = lambda count: warmup(count + 1)
  # --shard-map (default): symoptax's shard_map step with explicit collectives; else the
  # same stack without shardings, partitioned by XLA.
  tx_fn = lambda params, shardings: symoptax.symmetry_stack(
      schedule, preset=args.preset, params=params, scan_axis=args.scan_axis,
      shardings=shardings if args.shard_map else None)
  model, state, state_shardings = setup(cfg, mesh, tx_fn)
  batch_sharding = NamedSharding(mesh, nn.logical_to_mesh_axes(("batch", None),
                                                               mt.LOGICAL_RULES))
  train_step = make_train_step(model, state_shardings, batch_sharding)
  print(f"mesh (data, fsdp, tensor) = {shape} over {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}; preset {args.preset}; scan axis {args.scan_axis}")
  emb = state.params["token_embedder"]["embedding"]
  print(f"token_embedder/embedding {emb.shape} sharding: {emb.sharding.spec}")

  progress.say(progress.compile_note("the train step" + (" (symoptax's shard_map step)"
                                                         if args.shard_map else ""), 5))
  first, losses = None, []
  bar = progress.bar(args.steps, args.preset, disable=args.no_progress)
  meter = progress.Throughput(args.batch * args.seq)
  for step in range(args.steps):
    tokens = data.batch(step, args.batch, args.seq)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    state, metrics = train_step(state, jax.device_put(batch, batch_sharding))
    if step == 0:
      bar.write(f"step 1: compiled and ran the train step in {meter.first(metrics):.1f} s")
    loss = float(metrics["loss"])  # waits for the step: the rate is measured per step
    if step:
      meter.mark(1)
    losses.append(loss)
    first = loss if first is None else first
    if not np.isfinite(loss):
      raise SystemExit(f"maxtext_style.py: error: loss is {loss} at step {step + 1}")
    if (step + 1) % max(1, args.steps // 10) == 0 or step + 1 == args.steps:
      rate = f"  {meter.rate:.0f} tok/s" if meter.rate else ""
      bar.write(f"step {step + 1:5d}  loss {loss:.4f}  grad_norm "
                f"{float(metrics['grad_norm']):.3f}  {meter.elapsed:.1f}s{rate}")
    bar.set_postfix(loss=f"{loss:.3f}", **({"tok_s": f"{meter.rate:.0f}"} if meter.rate else {}),
                    refresh=False)
    bar.update(1)
  bar.close()
  kept = all(a.sharding.is_equivalent_to(s, a.ndim) for a, s in zip(
      jax.tree.leaves(state), jax.tree.leaves(state_shardings)))
  sharded = sum(not a.sharding.is_fully_replicated for a in jax.tree.leaves(state.opt_state))
  print(f"loss {first:.3f} -> {loss:.3f}; parameter and optimizer-state shardings kept: "
        f"{kept}; {sharded} optimizer-state arrays sharded")
  if args.losses:
    Path(args.losses).write_text(json.dumps(losses))
  return {"first_loss": first, "last_loss": loss, "mesh": shape, "shardings_kept": kept,
          "sharded_state_arrays": sharded, "losses": losses}


if __name__ == "__main__":
  main()
