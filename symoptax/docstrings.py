"""Argument descriptions shared by many docstrings, written once.

A docstring line holding only ``[[name]]`` (at the indentation of its ``Args:`` entries)
is replaced by :data:`ARGS` ``[name]`` when the function is decorated with
:func:`shared_args`, so ``help()``, Sphinx and doctest see the whole text.
"""

from __future__ import annotations

import re
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

ARGS = {
    "shardings": """\
shardings: the parameters' shardings (pytree of ``NamedSharding``, or ``PartitionSpec``
  with ``mesh``): the matrix steps run under ``jax.shard_map`` with explicit collectives
  and the state stays in these shardings (see :mod:`symoptax.sharding`).
mesh: the mesh for ``PartitionSpec`` shardings.""",
    "shardings_stateless": """\
shardings: the parameters' shardings (pytree of ``NamedSharding``, or ``PartitionSpec``
  with ``mesh``): the step then runs under ``jax.shard_map`` with explicit collectives
  (see :mod:`symoptax.sharding`). ``None``: plain arrays.
mesh: the mesh for ``PartitionSpec`` shardings.""",
    "compute_dtype": """\
compute_dtype: ``"auto"`` (bf16 on GPU/TPU where the oracle tolerates it, fp32
  on CPU: :func:`symoptax.polar.resolve_compute_dtype`), ``None`` (fp32) or
  ``jnp.bfloat16`` for the polar oracle's matmuls in bf16 with fp32 accumulation.""",
    "nu_scale": r"""scale: the update's size convention (README "Update scales"): ``"nuclear"``
  (default: :math:`\nu^{\alpha} U`, the reference formula), ``"nuclear_rel"``
  (:math:`(\nu/\|X\|_F)^{\alpha} U`: scale-free, the paper's runs), ``"rms"``
  (per-entry RMS ``rms``: AdamW's rate carries over) or ``"spectral"``
  (:math:`\|\Delta W\|_{op} = \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}`: muP).
rms: the target RMS of ``scale="rms"``.""",
    "nu_scope": r"""nu_scope: ``"matrix"`` (one :math:`\nu` per matrix) or ``"leaf"`` (one over a
  stacked leaf's matrices, as the reference does for ``[E, m, n]`` experts): see
  :func:`symoptax.scale_by_polar`.""",
    "mu_dtype": """\
mu_dtype: the dtype of the momentum (``None``: the parameters' dtype, as
  ``optax.contrib.muon`` and ``optax.adamw`` do); e.g. ``jnp.float32`` momentum for bf16
  parameters.""",
}
_MARKER = re.compile(r"^(\s*)\[\[(\w+)\]\]\s*$")


def shared_args(fn: F) -> F:
  """Expands the ``[[name]]`` lines of ``fn``'s docstring from :data:`ARGS`."""
  if not fn.__doc__:
    return fn
  out = []
  for line in fn.__doc__.splitlines():
    m = _MARKER.match(line)
    if m is None:
      out.append(line)
      continue
    indent, name = m.groups()
    out += [indent + text if text else text for text in ARGS[name].splitlines()]
  fn.__doc__ = "\n".join(out)
  return fn
