"""pytest configuration: tests import their helpers from tests/helpers.py."""

import jax

# The tests compare fp32 results with fp32 tolerances.
jax.config.update("jax_enable_x64", False)
