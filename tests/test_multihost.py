"""Multi-host: the sharded stack over two JAX processes joined by ``jax.distributed``.

Two processes on this machine (4 CPU devices each, gloo collectives over loopback) form one
8-device mesh, as two hosts would; ``tests/multihost_worker.py`` is one of them. The sharded
``"paper"`` and ``"muon"`` stacks must match one device and keep their shardings when every
collective crosses the process boundary.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_sharded_stack_over_two_processes_matches_one_device(tmp_path):
  port = free_port()
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("SYMOPTAX_TEST_DEVICES", None)
  procs = [subprocess.Popen(
      [sys.executable, str(HERE / "multihost_worker.py"), str(i), str(port),
       str(tmp_path / f"out{i}.json")], cwd=HERE.parent, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=600)[0])
  finally:
    for p in procs:
      p.kill()
  tails = "\n".join(log[-3000:] for log in logs)
  assert all(p.returncode == 0 for p in procs), tails
  results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
  for i, r in enumerate(results):
    assert (r["process_id"], r["process_count"], r["devices"], r["local_devices"]) == (i, 2, 8, 4)
    for preset, rep in r["report"].items():
      assert rep["max_rel_error"] < 1e-5, (i, preset, rep)
      assert rep["shardings_kept"], (i, preset, rep)
      assert rep["sharded_state_leaves"] >= 5, (i, preset, rep)
  assert results[0]["report"] == results[1]["report"]
