"""Writes a benchmark's JSON with the machine it ran on (device, platform, jax, date); the
benchmarks' --help formatter."""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import jax


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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
  """Description and epilog as written; each option's default in --help, unless its help
  already gives it ("(default ...", "default: ...", "; default ...") or it is an on/off flag."""

  def _get_help_string(self, action):
    text = action.help or ""
    says = "(default" in text or "default:" in text or "; default " in text
    if says or isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
      return text
    return super()._get_help_string(action)

  def _format_action(self, action):
    if (action.help is None and action.option_strings and action.default is not argparse.SUPPRESS
        and action.nargs != 0):  # an option without help: its default is its help
      action = copy.copy(action)
      action.help = "default: %(default)s"
    return super()._format_action(action)
