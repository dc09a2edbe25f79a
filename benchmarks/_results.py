"""Writes a benchmark's JSON with the machine it ran on (device, platform, jax, date); the
benchmarks' --help formatter."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import jax

# One --help formatter for the examples and the benchmarks: examples/progress.py.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from examples.progress import HelpFormatter  # noqa: E402,F401  (re-exported)


def write_json(path: str | Path, **fields) -> Path:
  """``fields`` plus device, platform, jax version, machine and date, as indented JSON."""
  dev = jax.devices()[0]
  out = Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(dict(
      device=dev.device_kind, platform=dev.platform, jax=jax.__version__,
      machine=platform.machine(), date=time.strftime("%Y-%m-%d"), **fields), indent=1))
  print(f"wrote {out}")
  return out
