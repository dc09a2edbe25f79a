"""pytest configuration: tests import their helpers from tests/helpers.py.

The process gets 8 CPU devices (for tests/test_sharding.py) before JAX starts its backend;
single-device code still runs on device 0. Subprocesses (examples, notebooks) are unaffected.
"""

import jax

jax.config.update("jax_num_cpu_devices", 8)
# The tests compare fp32 results with fp32 tolerances.
jax.config.update("jax_enable_x64", False)
