"""Runs tests/test_sharding.py in a subprocess with 8 CPU devices (a process's device count
is fixed when JAX starts, and the example tests of this suite need the default one).

The subprocess starts as soon as collection shows this test will run (``conftest.py``), so
it overlaps the rest of the suite; the test waits for it and checks its result.
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

HERE = Path(__file__).resolve().parent
_RUN: dict = {}


def start():
  """Starts the 8-device run once; returns (process, output file)."""
  if not _RUN:
    env = {**os.environ, "SYMOPTAX_TEST_DEVICES": "8", "JAX_PLATFORMS": "cpu"}
    out = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rs",
         str(HERE / "test_sharding.py")], env=env, cwd=HERE.parent, stdout=out,
        stderr=subprocess.STDOUT, text=True)
    _RUN.update(proc=proc, out=out)
  return _RUN["proc"], _RUN["out"]


def test_sharding_suite_on_8_cpu_devices():
  if jax.device_count() >= 8:  # already a many-device process: test_sharding.py ran here
    return
  proc, out = start()
  returncode = proc.wait(timeout=1800)
  out.seek(0)
  text = out.read()
  tail = text[-6000:]
  assert returncode == 0, tail
  summary = text.strip().splitlines()[-1]
  assert re.search(r"\d+ passed", summary) and "skipped" not in summary, tail
  print(summary)
