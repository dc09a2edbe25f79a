"""Text data for the examples: corpora, a cached BPE tokenizer, and a resumable batch stream.

Sources (``--data``):

* ``builtin`` (default): the ``.py`` files of the running interpreter's standard library, in
  sorted order. They exist wherever Python runs, so the default run needs no network.
* ``PATH``: a text file, a directory (every file under it, recursively) or a glob pattern.
* ``hf:NAME`` or ``hf:NAME:CONFIG``: a Hugging Face dataset's ``train`` split, streamed with
  the ``datasets`` package (``pip install datasets``; needs network), text column ``text``.

Texts are tokenised with a byte-level BPE tokenizer trained on the corpus itself with HF
``tokenizers`` and cached on disk (``$SYMOPTAX_CACHE``, default ``~/.cache/symoptax``) with the
token ids, keyed by a hash of the corpus and the vocabulary size. Every 20th document is held
out for validation, so the split is fixed for a given corpus.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
from pathlib import Path

import numpy as np

EOS = "<|endoftext|>"
_say = functools.partial(print, flush=True)  # messages before long work show up at once


class DataError(ValueError):
  """A ``--data`` source that cannot be read; the message names it."""


def cache_dir() -> Path:
  return Path(os.environ.get("SYMOPTAX_CACHE") or Path.home() / ".cache" / "symoptax")


def _read_files(paths, max_bytes: int) -> list[str]:
  texts, total = [], 0
  for path in paths:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if text.strip():
      texts.append(text)
      total += len(text)
    if total >= max_bytes:
      break
  return texts


def builtin_texts(max_bytes: int) -> list[str]:
  """Standard-library sources (site-packages and test suites excluded), sorted by path."""
  root = Path(os.__file__).parent
  skip = {"site-packages", "dist-packages", "test", "tests", "idle_test"}
  paths = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
  texts = _read_files(paths, max_bytes)
  if not texts:
    raise DataError(f"--data builtin: no .py files under {root}")
  return texts


def path_texts(spec: str, max_bytes: int) -> list[str]:
  """A file, a directory (recursively) or a glob pattern of text files."""
  p = Path(spec).expanduser()
  if p.is_file():
    paths = [p]
  elif p.is_dir():
    paths = sorted(q for q in p.rglob("*") if q.is_file())
  elif any(c in spec for c in "*?["):
    paths = sorted(Path(q) for q in glob.glob(os.path.expanduser(spec), recursive=True)
                   if Path(q).is_file())
    if not paths:
      raise DataError(f"--data {spec}: the pattern matches no files")
  else:
    raise DataError(f"--data {spec}: no such file or directory")
  texts = _read_files(paths, max_bytes)
  if not texts:
    raise DataError(f"--data {spec}: no text in {len(paths)} file(s) (empty?)")
  return texts


def hf_texts(spec: str, max_bytes: int) -> list[str]:
  """``hf:NAME[:CONFIG]``: the train split's ``text`` column, streamed, up to max_bytes."""
  name, _, config = spec[3:].partition(":")
  try:
    import datasets  # optional: pip install datasets
  except ImportError:
    raise DataError(f"--data {spec}: needs the 'datasets' package (pip install datasets) "
                    "and network access") from None
  try:
    stream = datasets.load_dataset(name, config or None, split="train", streaming=True)
    texts, total = [], 0
    for row in stream:
      texts.append(row["text"])
      total += len(row["text"])
      if total >= max_bytes:
        break
  except Exception as e:  # network, unknown dataset, no 'text' column: one line, named
    raise DataError(f"--data {spec}: cannot stream it ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
  if not texts:
    raise DataError(f"--data {spec}: the train split is empty")
  return texts


def load_texts(spec: str, max_bytes: int) -> list[str]:
  if spec == "builtin":
    return builtin_texts(max_bytes)
  if spec.startswith("hf:"):
    return hf_texts(spec, max_bytes)
  return path_texts(spec, max_bytes)


def train_tokenizer(texts: list[str], vocab: int):
  """A byte-level BPE tokenizer (GPT-2 style pre-tokenisation) trained on ``texts``."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer)
  return tok


class TokenData:
  """Train/validation token ids and a deterministic, resumable stream of batches.

  Training windows are the non-overlapping ``seq + 1``-token windows of the training ids,
  visited in a fresh permutation each epoch (seeded by ``seed`` and the epoch). Batch ``pos``
  depends only on ``pos``, so a run resumed at data position ``pos`` sees exactly the batches
  an uninterrupted run would.
  """

  def __init__(self, train: np.ndarray, val: np.ndarray, vocab: int, tokenizer=None):
    self.train, self.val, self.vocab, self.tokenizer = train, val, vocab, tokenizer
    self._perms: dict[tuple[int, int, int], np.ndarray] = {}

  def _windows(self, ids: np.ndarray, seq: int, split: str = "training") -> int:
    n = (len(ids) - 1) // seq
    if n < 1:
      raise DataError(f"the {split} split has {len(ids)} tokens, too few for one window of "
                      f"{seq + 1}; use more text or a smaller --seq")
    return n

  def batch(self, pos: int, batch: int, seq: int, seed: int = 0) -> np.ndarray:
    """Token ids [batch, seq + 1] of batch number ``pos``."""
    n = self._windows(self.train, seq)
    rows = []
    for k in range(pos * batch, (pos + 1) * batch):
      epoch, i = divmod(k, n)
      key = (seed, epoch, seq)
      if key not in self._perms:
        self._perms = {key: np.random.default_rng([seed, epoch]).permutation(n)}
      start = int(self._perms[key][i]) * seq
      rows.append(self.train[start:start + seq + 1])
    return np.stack(rows).astype(np.int32)

  def val_batches(self, count: int, batch: int, seq: int) -> np.ndarray:
    """The fixed validation set: [count, batch, seq + 1], windows spread evenly over it."""
    n = self._windows(self.val, seq, "validation")
    idx = np.linspace(0, n - 1, count * batch).round().astype(int)
    windows = np.stack([self.val[i * seq:i * seq + seq + 1] for i in idx])
    return windows.reshape(count, batch, seq + 1).astype(np.int32)

  @property
  def tokens(self) -> int:
    return len(self.train) + len(self.val)


def prepare(spec: str = "builtin", vocab: int = 8192, max_bytes: int = 16_000_000,
            cache: Path | None = None, log=_say) -> TokenData:
  """Reads ``spec``, trains (or loads the cached) tokenizer, and tokenises the corpus."""
  texts = load_texts(spec, max_bytes)
  digest = hashlib.sha256()
  for t in texts:
    digest.update(hashlib.sha256(t.encode("utf-8", "replace")).digest())
  digest.update(f"vocab={vocab};holdout=20;v1".encode())
  root = Path(cache or cache_dir()) / digest.hexdigest()[:16]
  from tokenizers import Tokenizer
  if (root / "val.npy").exists():
    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    train, val = np.load(root / "train.npy"), np.load(root / "val.npy")
    log(f"data: {spec}: {len(texts)} documents; tokenizer and ids from cache {root}")
  else:
    log(f"data: {spec}: {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f}M characters; "
        f"training a {vocab}-token BPE tokenizer and tokenising (once: both are cached; a few "
        "minutes on a CPU for the default corpus)...")
    tok = train_tokenizer(texts, vocab)
    eos = tok.token_to_id(EOS)
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
    splits = {"train": [], "val": []}
    for i, enc in enumerate(tok.encode_batch(texts)):
      splits["val" if i % 20 == 19 else "train"].append(np.array(enc.ids + [eos], dtype))
    if not splits["val"]:  # fewer than 20 documents: hold out the last tenth of the tokens
      ids = np.concatenate(splits["train"])
      cut = int(len(ids) * 0.9)
      splits = {"train": [ids[:cut]], "val": [ids[cut:]]}
    train, val = (np.concatenate(splits[k]) for k in ("train", "val"))
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tokenizer.json"))
    np.save(root / "train.npy", train)
    np.save(root / "val.npy", val)
    (root / "source.json").write_text(json.dumps({"data": spec, "documents": len(texts),
                                                  "vocab": vocab}))
    log(f"data: {spec}: {len(texts)} documents; trained a {tok.get_vocab_size()}-token BPE "
        f"tokenizer, cached in {root}")
  log(f"data: {len(train):,} training and {len(val):,} validation tokens")
  return TokenData(train, val, tok.get_vocab_size(), tok)
