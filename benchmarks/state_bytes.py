"""Optimizer-state bytes of MuonQ (4-bit momentum), COSMOS, Conda and FISMO against fp32 Muon,
AdamW and SOAP's state.

Counts the bytes of ``tx.init(params)`` (every leaf of the state: codes, factors, scales,
momentum, step counts) for

  muonq              symoptax.variants.muonq.muonq(bits=--bits, rank=--rank): packed codes,
                     rank-r factors in the parameters' dtype, two fp32 scalars per matrix
  muonq/bf16-factors the same with mu_dtype=bfloat16 (factors and vector momentum in bf16)
  muon               symoptax.muon: one fp32 momentum buffer
  adamw              optax.adamw: two fp32 moments
  cosmos             symoptax.cosmos(rank=--cosmos-rank): momentum, the rank-r basis, its
                     r x r covariance and the rows x r second moment
  conda, fismo       symoptax.conda (momentum, second moment, k x k basis), symoptax.fismo
                     (momentum, rows x rows and cols x cols factors)
  soap-state         a state of SOAP's shapes (optax has no SOAP): two Adam moments plus, per
                     matrix, both sides' statistics and eigenbases (2 m n + 2 (m^2 + n^2))

on single fp32 matrices (``--shapes``) and on the Qwen3-style example model
(``examples/models/qwen3.py``), both as built by the tests (``Config()``, real arrays) and at
Qwen3-0.6B's shapes (abstract, ``nnx.eval_shape``; nothing is allocated). On a model, "all"
runs every leaf through the optimizer (vectors get plain momentum in muon/muonq), "hidden"
only the attention and MLP matrices, with AdamW on embedding, head and vectors (as the
"muon" preset of symoptax.symmetry_stack does), and "hidden matrices only" counts the
state of those matrices alone (per entry of them). The bytes come from ``jax.eval_shape``
of ``init`` (checked against the real arrays where they exist); no step is run. Prints a
table, writes JSON; asserts nothing.

  python benchmarks/state_bytes.py
  python benchmarks/state_bytes.py --bits 2 --rank 8
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import symoptax  # noqa: E402
from examples.models import qwen3  # noqa: E402
from symoptax.variants.muonq import muonq  # noqa: E402

# benchmarks/_results.py (this folder: sys.path)
from _results import HelpFormatter, write_json  # noqa: E402

HIDDEN = ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out")
QWEN3_06B = qwen3.Config(vocab=151936, d=1024, layers=28, heads=16, kv_heads=8, head_dim=128,
                         ff=3072)


def soap_state(axes=None) -> optax.GradientTransformation:
  """A transformation whose state has SOAP's shapes (init only: its update is the identity):
  Adam's two moments per leaf and, per matrix, the rows x rows and cols x cols statistics and
  their eigenbases (Vyas et al., arXiv:2409.11321)."""
  def init_fn(params):
    axes_tree = symoptax.axes.resolve_axes(axes, params)
    leaves, treedef, lays = symoptax.axes.flatten_with_layouts(params, axes_tree)
    def per(p, lay):
      moments = [jnp.zeros(p.shape, jnp.float32)] * 2
      if lay is None:
        return moments
      b, m, n = lay.batched_shape
      return moments + [jnp.zeros((b, k, k), jnp.float32) for k in (m, m, n, n)]
    return treedef.unflatten([per(p, lay) for p, lay in zip(leaves, lays)])
  return optax.GradientTransformation(init_fn, lambda u, s, p=None: (u, s))


def optimizers(bits, rank, cosmos_rank=64):
  return {
      "muonq": lambda: muonq(0.02, bits=bits, rank=rank),
      "muonq/bf16-factors": lambda: muonq(0.02, bits=bits, rank=rank, mu_dtype=jnp.bfloat16),
      "muon": lambda: symoptax.muon(0.02),
      "adamw": lambda: optax.adamw(1e-3),
      "cosmos": lambda: symoptax.cosmos(0.002, rank=cosmos_rank),
      "conda": lambda: symoptax.conda(0.01),
      "fismo": lambda: symoptax.fismo(0.02),
      "soap-state": soap_state,
  }


def nbytes(tree) -> int:
  """Bytes of a tree of arrays or ``jax.ShapeDtypeStruct``s."""
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def abstract(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def hidden_only(make, params, rest=None):
  """``make()`` on the hidden matrices, ``rest`` (AdamW; ``optax.set_to_zero()``: no state)
  on everything else."""
  roles = symoptax.label_roles(params)
  labels = jax.tree.map(lambda r: "matrix" if r in HIDDEN else "rest", roles)
  return optax.multi_transform({"matrix": make(), "rest": rest or optax.adamw(1e-3)}, labels)


def qwen3_params(cfg, concrete: bool):
  build = lambda: qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
  model = build() if concrete else nnx.eval_shape(build)
  _, params, _ = nnx.split(model, nnx.Param, ...)
  return params


def measure(make, params, concrete):
  """State bytes of ``make()`` on ``params`` (eval_shape; the real init too if concrete)."""
  tx = make()
  b = nbytes(jax.eval_shape(tx.init, abstract(params)))
  if concrete:
    real = nbytes(tx.init(params))
    assert real == b, (real, b)
  return b


def parse_shape(text: str) -> tuple[int, int]:
  m, n = text.lower().split("x")
  return int(m), int(n)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=HelpFormatter)
  parser.add_argument("--bits", type=int, default=4, help="muonq's bits per code")
  parser.add_argument("--rank", type=int, default=4, help="muonq's kept singular components")
  parser.add_argument("--cosmos-rank", type=int, default=64, help="cosmos's subspace rank")
  parser.add_argument("--shapes", nargs="*", default=["64x64", "256x256", "512x512", "256x1024",
                                                      "1024x1024", "1024x3072", "4096x4096"],
                      help="single fp32 matrices, as MxN")
  parser.add_argument("--no-0.6b", dest="big", action="store_false",
                      help="skip the Qwen3-0.6B-shaped model")
  parser.add_argument("--json", default="benchmarks/results/state_bytes.json")
  args = parser.parse_args()

  txs = optimizers(args.bits, args.rank, args.cosmos_rank)
  rows = []

  def record(target, entries, results):
    muon = results["muon"]
    for name, b in results.items():
      rows.append(dict(target=target, optimizer=name, bytes=b, entries=entries,
                       bytes_per_entry=b / entries, muon_over_this=muon / b))

  for text in args.shapes:
    shape = parse_shape(text)
    params = {"w": jax.ShapeDtypeStruct(shape, jnp.float32)}
    record(f"matrix {shape[0]}x{shape[1]}", math.prod(shape),
           {name: measure(make, params, False) for name, make in txs.items()})

  models = [("qwen3 example Config()", qwen3.Config(), True)]
  if args.big:
    models.append(("qwen3-0.6B shapes", QWEN3_06B, False))
  for label, cfg, concrete in models:
    params = qwen3_params(cfg, concrete)
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    record(f"{label} / all", n_params,
           {name: measure(make, params, concrete) for name, make in txs.items()})
    record(f"{label} / hidden", n_params,
           {name: measure(lambda make=make: hidden_only(make, params), params, concrete)
            for name, make in txs.items() if name != "adamw"}
           | {"adamw": measure(txs["adamw"], params, concrete)})
    roles = jax.tree.leaves(symoptax.label_roles(params))
    n_hidden = sum(math.prod(x.shape) for x, r in zip(jax.tree.leaves(params), roles)
                   if r in HIDDEN)
    record(f"{label} / hidden matrices only", n_hidden,
           {name: measure(lambda make=make: hidden_only(make, params, optax.set_to_zero()),
                          params, concrete) for name, make in txs.items()})

  dev = jax.devices()[0]
  print(f"muonq bits={args.bits} rank={args.rank}; fp32 parameters; jax {jax.__version__} "
        f"({dev.platform})")
  print(f"{'target':44s} {'optimizer':20s} {'state bytes':>14s} {'bytes/entry':>11s} "
        f"{'muon / this':>11s}")
  for r in rows:
    print(f"{r['target']:44s} {r['optimizer']:20s} {r['bytes']:14,d} "
          f"{r['bytes_per_entry']:11.3f} {r['muon_over_this']:11.2f}")
  write_json(args.json, bits=args.bits, rank=args.rank, cosmos_rank=args.cosmos_rank,
             results=rows)


if __name__ == "__main__":
  main()
