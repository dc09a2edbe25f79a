"""One process of the two-process run in ``tests/test_multihost.py`` (not a test module).

``python tests/multihost_worker.py PROCESS_ID PORT OUT_JSON``: joins a 2-process JAX cluster
on ``127.0.0.1:PORT`` through ``jax.distributed.initialize`` with 4 CPU devices per process
(gloo collectives), builds an 8-device ``(data, fsdp, tensor)`` mesh over both processes'
devices, trains a small parameter tree for three steps with the sharded ``"paper"`` and
``"muon"`` stacks and writes, per preset, the largest relative difference from the same
steps on one local device, and whether every update and state leaf kept its sharding.
"""

import json
import sys


def main(process_id: int, port: int, out: str) -> None:
  import jax  # noqa: PLC0415 (configured before the backend starts)

  jax.config.update("jax_num_cpu_devices", 4)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                             process_id=process_id, initialization_timeout=120)
  import numpy as np  # noqa: PLC0415
  from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: PLC0415

  from symoptax import sharding as sharding_lib  # noqa: PLC0415

  assert jax.process_count() == 2 and jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)  # the same numbers in both processes
  normal = lambda *s: rng.standard_normal(s).astype(np.float32)
  params = {
      "embed_tokens": {"embedding": normal(64, 16)},
      "layers": {"mlp": {"up_proj": {"kernel": normal(3, 16, 32)},
                         "down_proj": {"kernel": normal(3, 32, 16)}},
                 # q_norm gives the head size (8): "paper" reads q_proj head by head.
                 "self_attn": {"q_proj": {"kernel": normal(3, 16, 16)},
                               "q_norm": {"scale": np.ones((3, 8), np.float32)}},
                 "input_layernorm": {"scale": np.ones((3, 16), np.float32)}},
      "lm_head": {"kernel": normal(16, 64)},
  }
  grads = [jax.tree.map(lambda p: normal(*p.shape), params) for _ in range(3)]
  # The mesh's first axis spans the two processes, so every collective crosses them.
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
  specs = {
      "embed_tokens": {"embedding": P(("data", "fsdp"), "tensor")},
      "layers": {"mlp": {"up_proj": {"kernel": P(None, ("data", "fsdp"), "tensor")},
                         "down_proj": {"kernel": P(None, "tensor", ("data", "fsdp"))}},
                 "self_attn": {"q_proj": {"kernel": P(None, "data", "tensor")},
                               "q_norm": {"scale": P()}},
                 "input_layernorm": {"scale": P()}},
      "lm_head": {"kernel": P("tensor", ("data", "fsdp"))},
  }
  shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                           is_leaf=lambda x: isinstance(x, P))
  # Each process holds only its own shards of the global arrays.
  put = lambda tree: jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda idx: x[idx]), tree, shardings)
  with sharding_lib.use_mesh(mesh):  # Explicit mesh axes (newer JAX's default) need it
    report = {preset: run(preset, params, grads, shardings, put, mesh)
              for preset in ("paper", "muon")}
  with open(out, "w") as f:
    json.dump({"process_id": process_id, "process_count": jax.process_count(),
               "devices": jax.device_count(), "local_devices": jax.local_device_count(),
               "report": report}, f)
  jax.distributed.shutdown()


def run(preset, params, grads, shardings, put, mesh):
  """Three steps sharded over both processes against the same on one local device."""
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  from jax.experimental import multihost_utils  # noqa: PLC0415
  from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: PLC0415

  import symoptax  # noqa: PLC0415
  from symoptax import sharding as sharding_lib  # noqa: PLC0415

  ref_tx = symoptax.symmetry_stack(0.02, preset=preset, params=params, scan_axis=0)
  local = jax.tree.map(np.asarray, params)
  state = ref_tx.init(local)
  ref_step, ref = jax.jit(ref_tx.update), []
  for g in grads:
    u, state = ref_step(g, state, local)
    ref.append(u)
  tx = symoptax.symmetry_stack(0.02, preset=preset, params=params, scan_axis=0,
                               shardings=shardings)
  x = put(params)
  state = jax.jit(tx.init)(x)
  step = jax.jit(tx.update)
  errors, kept = [], True
  for g, u_ref in zip(grads, ref):
    u, state = step(put(g), state, x)
    kept &= all(jax.tree.leaves(jax.tree.map(
        lambda a, s: a.sharding.is_equivalent_to(s, a.ndim), u, shardings)))
    whole = multihost_utils.process_allgather(u, tiled=True)
    errors += [float(np.linalg.norm(a - b) / np.linalg.norm(b))
               for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(u_ref))]
  targets = sharding_lib.state_shardings(state, shardings, NamedSharding(mesh, P()))
  kept &= all(jax.tree.leaves(jax.tree.map(
      lambda a, s: a.sharding.is_equivalent_to(s, a.ndim), state, targets)))
  return {"max_rel_error": max(errors), "shardings_kept": bool(kept),
          "sharded_state_leaves": sum(not a.sharding.is_fully_replicated
                                      for a in jax.tree.leaves(state))}


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
