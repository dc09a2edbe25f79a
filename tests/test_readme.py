"""Every ```python block of README.md runs as written, with only the installed package.

Each block runs in a fresh interpreter whose working directory is an empty temporary
directory (so the repository's ``examples/`` is not importable) with ``JAX_PLATFORMS=cpu``.
An HTML comment on the line directly above a block changes how it runs:

- ``<!-- readme-test: skip (reason) -->``: not run (the reason is for the reader);
- ``<!-- readme-test: devices=N (note) -->``: run with N simulated CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=N``).

A ```text block that follows a python block with only blank lines between is its printed
output: the block's stdout must equal it line by line, numbers to 1e-4 relative (so a
`describe` table or a loss printed in the README cannot drift from what the code prints).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")


def parse_blocks(text):
  """The fenced code blocks of ``text``: dicts of line (of the opening fence, 1-based),
  lang, code and marker (the body of a ``readme-test`` comment directly above, or None)."""
  lines = text.splitlines()
  blocks, i = [], 0
  while i < len(lines):
    m = FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    fence, start = m.group("fence"), i
    j = i + 1
    while j < len(lines) and not (lines[j].startswith(fence[0] * len(fence))
                                  and not lines[j].strip(fence[0]).strip()):
      j += 1
    above = lines[start - 1] if start else ""
    marker = MARKER.match(above)
    blocks.append({"line": start + 1, "end": j + 1, "lang": m.group("lang").lower(),
                   "code": "\n".join(lines[start + 1:j]) + "\n",
                   "marker": marker.group("body") if marker else None, "output": None})
    i = j + 1
  for block, nxt in itertools.pairwise(blocks):
    between = lines[block["end"]:nxt["line"] - 1]
    if block["lang"] in ("python", "py") and nxt["lang"] == "text" and not any(
        line.strip() for line in between):
      block["output"] = nxt["code"]
  return blocks


NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def same_output(expected, actual, rtol=1e-4):
  """Whether ``actual`` prints ``expected``: equal lines (trailing blanks ignored), numbers
  with a decimal point equal to ``rtol`` relative."""
  exp, act = expected.rstrip().splitlines(), actual.rstrip().splitlines()
  if len(exp) != len(act):
    return False
  for e, a in zip(exp, act):
    if NUMBER.split(e.rstrip()) != NUMBER.split(a.rstrip()):
      return False
    for x, y in zip(NUMBER.findall(e), NUMBER.findall(a)):
      if abs(float(x) - float(y)) > rtol * max(abs(float(x)), abs(float(y))):
        return False
  return True


BLOCKS = [b for b in parse_blocks(README.read_text()) if b["lang"] in ("python", "py")]


def run_options(marker):
  """(skip reason or None, device count or None) from a block's marker."""
  if marker is None:
    return None, None
  if marker.startswith("skip"):
    return marker[4:].strip(" :-()") or "marked skip", None
  m = re.fullmatch(r"devices=(\d+)(\s+\(.*\))?", marker)
  if not m:
    raise ValueError(f"unknown readme-test marker {marker!r}: use 'skip (reason)' or "
                     "'devices=N (note)'")
  return None, int(m.group(1))


def test_same_output():
  assert same_output("a  0.04\n[6.19741582, 1.5]\n", "a  0.04\n[6.19741601, 1.5]\n\n")
  assert not same_output("a  0.04\n", "a  0.05\n")
  assert not same_output("a  0.04\n", "b  0.04\n")
  assert not same_output("a\n", "a\nb\n")


def test_readme_has_python_blocks():
  assert BLOCKS, f"no ```python blocks found in {README}: is the parser broken?"


def test_parser_reads_fences_and_markers():
  text = ("x\n<!-- readme-test: devices=8 -->\n```python\na = 1\n```\n\n```text\nout\n```\n"
          "<!-- readme-test: skip (needs a TPU) -->\n````py\nb = 2\n```\nc = 3\n````\n")
  blocks = parse_blocks(text)
  assert [(b["line"], b["lang"], b["marker"]) for b in blocks] == [
      (3, "python", "devices=8"), (7, "text", None), (11, "py", "skip (needs a TPU)")]
  assert blocks[0]["code"] == "a = 1\n" and blocks[2]["code"] == "b = 2\n```\nc = 3\n"
  assert run_options(blocks[0]["marker"]) == (None, 8)
  assert run_options(blocks[2]["marker"]) == ("needs a TPU", None)
  assert blocks[0]["output"] == "out\n" and blocks[2]["output"] is None
  assert run_options("devices=4 (any count works)") == (None, 4)
  with pytest.raises(ValueError, match="unknown readme-test marker"):
    run_options("devices=eight")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block-{b['line']}" for b in BLOCKS])
def test_readme_block_runs(block, tmp_path):
  skip, devices = run_options(block["marker"])
  if skip:
    pytest.skip(f"README.md:{block['line']}: {skip}")
  script = tmp_path / f"readme_block_{block['line']}.py"
  script.write_text(block["code"])
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env["JAX_PLATFORMS"] = "cpu"
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  proc = subprocess.run([sys.executable, script.name], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, (
      f"README.md block at line {block['line']} failed (exit {proc.returncode}):\n"
      f"{block['code']}\n--- stderr ---\n{proc.stderr[-4000:]}")
  if block["output"] is not None:
    assert same_output(block["output"], proc.stdout), (
        f"README.md block at line {block['line']} prints something else than the output "
        f"shown below it:\n--- README ---\n{block['output']}--- printed ---\n{proc.stdout}")
