"""Console feedback shared by the examples: flushed messages, tqdm bars and a throughput meter
that leaves the compiling first step out of the rate."""

from __future__ import annotations

import argparse
import copy
import sys
import time

import jax


def say(*args, **kwargs):
  """``print`` that flushes: a message before a long compile shows up before it, piped too."""
  print(*args, **kwargs, flush=True)


class _NoBar:
  """Stands in for a tqdm bar when there is none (``--no-progress``, tqdm not installed):
  ``write`` goes to ``log``."""

  def __init__(self, log=say):
    self.log = log

  def update(self, n=1):
    pass

  def set_postfix(self, *args, **kwargs):
    pass

  def write(self, text):
    self.log(text)

  def close(self):
    pass


def bar(total: int, desc: str, initial: int = 0, disable: bool = False, log=say):
  """A tqdm bar on stdout (its ``write`` prints above it), or a stand-in whose ``write`` is
  ``log``."""
  if not disable:
    try:
      from tqdm import tqdm
    except ImportError:  # tqdm is in the "examples" extra
      pass
    else:
      return tqdm(total=total, initial=initial, desc=desc, file=sys.stdout, dynamic_ncols=True)
  return _NoBar(log)


def compile_note(what: str, cpu_seconds: float | None = None) -> str:
  """'compiling <what>: the first step waits for it (...)...', with a CPU estimate if given."""
  if jax.devices()[0].platform == "cpu":
    hint = (f"~{cpu_seconds:.0f} s on a 2-core CPU, more under load" if cpu_seconds
            else "seconds to minutes on a CPU, by size")
  else:
    hint = "seconds to a minute"
  return f"compiling {what}: the first step waits for it ({hint})..."


class Throughput:
  """Tokens per second over the steps after the first, smoothed.

  ``first(outputs)`` blocks on the first (compiling) step's outputs and records its time as
  ``compile_s``; ``mark(steps, outputs)`` at a point where the loop already waits for a step's
  outputs (logging) adds the interval since the previous mark: tokens and seconds are
  exponential moving averages with a half-life of ``halflife`` steps, and ``rate`` is their
  ratio (a windowed rate, not an average of per-step rates). ``pause()``/``resume()`` leave
  work between steps (evaluation, checkpoints) out of the interval.
  """

  def __init__(self, tokens_per_step: int, halflife: float = 10.0):
    self.tokens_per_step, self.halflife = tokens_per_step, halflife
    self.start = self.last = time.perf_counter()
    self.compile_s: float | None = None
    self._tokens = self._seconds = 0.0
    self._paused = 0.0
    self._pause_t: float | None = None

  def first(self, outputs=None):
    """After the first step: wait for it, and time it (compilation included)."""
    jax.block_until_ready(outputs)
    self.last = time.perf_counter()
    self.compile_s = self.last - self.start
    self._paused = 0.0
    return self.compile_s

  def mark(self, steps: int, outputs=None):
    """After ``steps`` more steps, whose outputs are waited for here."""
    jax.block_until_ready(outputs)
    now = time.perf_counter()
    seconds = max(now - self.last - self._paused, 1e-9)
    self.last, self._paused = now, 0.0
    decay = 0.5 ** (steps / self.halflife)
    self._tokens = decay * self._tokens + steps * self.tokens_per_step
    self._seconds = decay * self._seconds + seconds

  def pause(self):
    self._pause_t = time.perf_counter()

  def resume(self):
    if self._pause_t is not None:
      self._paused += time.perf_counter() - self._pause_t
      self._pause_t = None

  @property
  def rate(self) -> float | None:
    """Smoothed tokens/s, or None before any step after the first was measured."""
    return self._tokens / self._seconds if self._seconds else None

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self.start


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
