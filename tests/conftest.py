"""pytest configuration: tests import their helpers from tests/helpers.py; the suite runs on
the CPU.

``SYMOPTAX_TEST_DEVICES=8`` gives the process 8 CPU devices before JAX starts its backend
(``tests/test_sharding_on_8_devices.py`` runs ``tests/test_sharding.py`` that way in a
subprocess; the rest of the suite, whose examples use every device, sees one).
"""

import os
import shutil
import sys
import tempfile

# The tests hold fp32 results to fp32 tolerances. On a GPU/TPU the default
# compute_dtype="auto" runs the polar matmuls in bf16, so the suite runs on the CPU (which
# every machine has) unless JAX_PLATFORMS says otherwise; the GPU/TPU checks live in
# benchmarks/.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session (and its 8-device subprocess, which
# inherits the variable): the examples' tests compile the same train steps many times, and
# a cached executable is the one a fresh compile would give. Removed when the session ends.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="symoptax-test-jax-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
else:
  _CACHE = None

import jax  # noqa: E402

if os.environ.get("SYMOPTAX_TEST_DEVICES"):
  jax.config.update("jax_num_cpu_devices", int(os.environ["SYMOPTAX_TEST_DEVICES"]))
# The tests compare fp32 results with fp32 tolerances.
jax.config.update("jax_enable_x64", False)


def pytest_collection_modifyitems(session, config, items):
  # The 8-device sharding run is a subprocess: its test goes first (under pytest-xdist, the
  # first worker free starts it and waits, while the other runs the rest), and without
  # xdist it starts now, so that it overlaps the rest of the suite instead of following it.
  first = [i for i in items if i.nodeid.endswith("test_sharding_suite_on_8_cpu_devices")]
  items[:] = first + [i for i in items if i not in first]
  if (first and not config.option.collectonly and jax.device_count() < 8
      and "PYTEST_XDIST_WORKER" not in os.environ):
    import test_sharding_on_8_devices  # the module collection imported (tests/ is on the path)
    test_sharding_on_8_devices.start()


def pytest_sessionfinish(session, exitstatus):
  # A session that stops early (-x, Ctrl-C) leaves no 8-device run behind.
  module = sys.modules.get("test_sharding_on_8_devices")
  if module is not None and module._RUN and module._RUN["proc"].poll() is None:
    module._RUN["proc"].kill()
  if _CACHE is not None:
    shutil.rmtree(_CACHE, ignore_errors=True)
