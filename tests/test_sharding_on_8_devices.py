"""Runs tests/test_sharding.py in a subprocess with 8 CPU devices (a process's device count
is fixed when JAX starts, and the example tests of this suite need the default one)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax

HERE = Path(__file__).resolve().parent


def test_sharding_suite_on_8_cpu_devices():
  if jax.device_count() >= 8:  # already a many-device process: test_sharding.py ran here
    return
  env = {**os.environ, "SYMOPTAX_TEST_DEVICES": "8", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
       str(HERE / "test_sharding.py")], env=env, cwd=HERE.parent, capture_output=True,
      text=True, timeout=1800)
  tail = proc.stdout[-4000:] + proc.stderr[-2000:]
  assert proc.returncode == 0, tail
  summary = proc.stdout.strip().splitlines()[-1]
  assert re.search(r"\d+ passed", summary) and "skipped" not in summary, tail
  print(summary)
