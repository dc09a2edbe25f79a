"""pytest configuration: tests import their helpers from tests/helpers.py.

``SYMOPTAX_TEST_DEVICES=8`` gives the process 8 CPU devices before JAX starts its backend
(``tests/test_sharding_on_8_devices.py`` runs ``tests/test_sharding.py`` that way in a
subprocess; the rest of the suite, whose examples use every device, sees one).
"""

import os

import jax

if os.environ.get("SYMOPTAX_TEST_DEVICES"):
  jax.config.update("jax_num_cpu_devices", int(os.environ["SYMOPTAX_TEST_DEVICES"]))
# The tests compare fp32 results with fp32 tolerances.
jax.config.update("jax_enable_x64", False)
