"""What the capture scripts share: a tree's leaf list, the fixture's JSON text, and the
command line (``[--out DIR] [name ...]``). Standard library and jax only, so that it runs in
each script's own environment."""

from __future__ import annotations

import argparse
import json
import os
from typing import Callable

import jax

DEFAULT_OUT = os.path.join("tests", "fixtures", "trees")


def _key(entry) -> str:
  """One key of a jax key path as a plain string (dict keys here)."""
  for attr in ("key", "idx", "name"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def leaves(params) -> list[list]:
  """``[path, shape, dtype]`` of every leaf, sorted by its ``/``-joined path."""
  return sorted(["/".join(_key(k) for k in path), list(leaf.shape), str(leaf.dtype)]
                for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0])


def dumps(fixture: dict) -> str:
  """JSON text with one leaf per line (diff-friendly), the rest indented normally."""
  head = {k: v for k, v in fixture.items() if k != "leaves"}
  text = json.dumps(head, indent=2)[:-2]  # drop the closing "\n}"
  rows = ",\n".join("    " + json.dumps(leaf) for leaf in fixture["leaves"])
  return f'{text},\n  "leaves": [\n{rows}\n  ]\n}}\n'


def main(description: str, models, capture: Callable[[str], dict], prefix: str,
         argv=None, setup: Callable[[], None] | None = None) -> int:
  """Captures the models named on the command line (all by default) into
  ``<out>/<prefix><name>.json``."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("names", nargs="*", metavar="name",
                      help=f"models to capture (default: all of {', '.join(models)})")
  parser.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
  args = parser.parse_args(argv)
  unknown = sorted(set(args.names) - set(models))
  if unknown:
    parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(models)}")
  if setup is not None:
    setup()
  os.makedirs(args.out, exist_ok=True)
  for name in args.names or models:
    fixture = capture(name)
    path = os.path.join(args.out, f"{prefix}{name}.json")
    with open(path, "w") as f:
      f.write(dumps(fixture))
    print(f"{path}: {len(fixture['leaves'])} leaves ({fixture['source']})")
  return 0
