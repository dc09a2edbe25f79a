r"""MuonQ: Muon whose momentum state is stored in 4 bits (or 2..8).

Su, Zhang, Liu, Zhao, Zhang, "MuonQ: Enhancing Low-Bit Muon Quantization via Directional
Fidelity Optimization", CoLM 2026, arXiv:2605.11396 (reference code: github.com/YupengSu/MuonQ,
``src/optim/muonq.py`` and ``src/quantize.py``). The paper's three components, per matrix of
Muon's momentum buffer ``B``:

1. *normalisation before quantisation*: ``B`` is divided by its Frobenius norm, so every
   quantised entry lies in [-1, 1] and the companding below sees the same range at any
   gradient scale (per tensor, as the reference's ``gran: tensor``);
2. *structural decomposition*: the dominant singular subspace of the normalised buffer is
   tracked by one step of subspace (power) iteration per optimizer step, warm-started from
   the stored factors, and kept apart, unquantised: ``B / ||B||_F = P R^T + E``;
3. *mu-law companding*: the residual ``E`` is companded,
   :math:`\mathrm{sign}(e)\,\log(1 + \mu|e|)/\log(1 + \mu)` with :math:`\mu = 255`, and
   quantised to a symmetric ``bits``-bit grid in units of its largest companded entry.

The update itself is Muon's: the momentum of step ``t`` is built from the dequantised buffer
of step ``t-1`` and the fresh gradient, in full precision, and orthogonalised; only the
buffer carried to the next step is quantised (so step 1 equals Muon's exactly).

Where this differs from the reference, and why:

* The reference (``norm=True``) also divides every gradient by its Frobenius norm and drops
  the buffer's norm after each step, which changes Muon's momentum (its memory becomes a
  recursion of unit matrices). Here one fp32 scalar per matrix restores the norm, so that,
  up to the quantisation error, the momentum is exactly Muon's (:func:`symoptax.muon`,
  ``momentum="jordan"``); ``normalized_momentum=True`` gives the reference's recursion.
  The scalar is chosen so that the *dequantised* buffer has exactly ``||B||_F``: the
  quantisation error is then a change of direction only. (Restoring ``||B||_F`` on top of
  the reconstruction instead lets the noise's energy pile up in the buffer: on random
  gradients its norm drifted 20% above Muon's in 60 steps, the update's cosine to Muon's
  fell to 0.78 instead of 0.84, 256 x 256 matrices.)
* The reference keeps ``min(m, n) // 16`` components and stores its factors in 4 bits too;
  here ``rank`` components (default 4) are stored in ``mu_dtype`` (default: the parameters'
  dtype). Its random start vectors are replaced by a deterministic one: the ``rank`` rows of
  the buffer with the largest norms (see :func:`decompose`), so the state is a function of
  the gradients alone; its QR by Gram-Schmidt (no LAPACK call).
* Codes are packed ``8 // bits`` per byte along one axis of the parameter (the last one whose
  per-device length divides by that), so the codes keep the parameter's layout and shard as
  the parameter does; 3 bits take the room of 4 and 5-7 bits that of 8.

Symmetry: quantisation acts entry by entry on a fixed grid with one scale per matrix, so
orthogonal equivariance is lost; what is left is the group of *signed permutations* on both
sides, ``W -> D_1 P_1 W P_2 D_2`` (the companded grid is odd, the per-matrix scale and the
top-rows start are invariant, and the subspace step is equivariant under any orthogonal map).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.typing import ArrayLike

from symoptax import polar as polar_lib
from symoptax import sharding as sharding_lib
from symoptax.aliases import (ScalarOrSchedule, chain, decay_and_rate, keeps_shardings,
                              shard_kwargs)
from symoptax.axes import AxesLike, flatten_with_layouts, from_batched, layout, resolve_axes, \
  to_batched
from symoptax.docstrings import shared_args
from symoptax.shards import LOCAL, MatrixShards
from symoptax.transforms import safe_norm, scale_by_shape, validate_polar

MU_LAW = 255.0  # the reference's mu (src/quantize.py)
_HI = jax.lax.Precision.HIGHEST


# --------------------------------------------------------------------------------------------
# The quantiser: mu-law companding, a symmetric grid in units of the largest companded entry.


def qmax_of(bits: int) -> int:
  """The largest code magnitude of a ``bits``-bit symmetric grid: codes are the integers
  ``-qmax..qmax`` (``2**bits - 1`` levels, zero included)."""
  return 2 ** (bits - 1) - 1


def compand(x: jax.Array, mu: float = MU_LAW) -> jax.Array:
  r"""mu-law compression of ``x`` in [-1, 1]: :math:`\mathrm{sign}(x)\log(1+\mu|x|)/\log(1+\mu)`
  (``mu=0``: the identity)."""
  if mu == 0:
    return x
  return jnp.sign(x) * jnp.log1p(mu * jnp.abs(x)) / math.log1p(mu)


def expand(c: jax.Array, mu: float = MU_LAW) -> jax.Array:
  r"""Inverse of :func:`compand`: :math:`\mathrm{sign}(c)((1+\mu)^{|c|} - 1)/\mu`."""
  if mu == 0:
    return c
  return jnp.sign(c) * jnp.expm1(jnp.abs(c) * math.log1p(mu)) / mu


def quantize(x: jax.Array, bits: int = 4, mu: float = MU_LAW,
             shards: MatrixShards = LOCAL) -> tuple[jax.Array, jax.Array]:
  r"""Quantises every matrix of a ``[B, rows, cols]`` batch with entries in [-1, 1].

  .. math::
    c = \mathrm{compand}(x),\quad \delta = \max|c| / q_{max},\quad
    q = \mathrm{round}(c / \delta) \in \{-q_{max}, \dots, q_{max}\}

  (one step :math:`\delta` per matrix; round half to even; entries outside [-1, 1] are
  clipped). Returns ``(q, delta)``: int8 codes ``[B, rows, cols]`` and float32 ``[B]``
  (0 for a zero matrix). :func:`dequantize` inverts it to within half a step in the
  companded domain.
  """
  qmax = qmax_of(bits)
  c = compand(jnp.clip(x.astype(jnp.float32), -1.0, 1.0), mu)
  top = shards.max(jnp.abs(c), (-2, -1))
  delta = jnp.where(top > 0, top / qmax, 0.0)
  q = jnp.round(c / jnp.where(delta > 0, delta, 1.0))
  return jnp.clip(q, -qmax, qmax).astype(jnp.int8), delta[..., 0, 0]


def dequantize(q: jax.Array, delta: jax.Array, mu: float = MU_LAW) -> jax.Array:
  """``expand(q * delta)``: float32 ``[B, rows, cols]`` from :func:`quantize`'s output."""
  return expand(q.astype(jnp.float32) * delta[..., None, None], mu)


def pack(codes: jax.Array, axis: int | None, bits: int) -> jax.Array:
  """Packs unsigned codes (each below ``2**bits``) ``8 // bits`` to a byte along ``axis``
  (adjacent entries share a byte, the first in the low bits); ``axis=None`` or 5..8 bits:
  one code per byte."""
  k = 8 // bits
  codes = codes.astype(jnp.uint8)
  if k == 1 or axis is None:
    return codes
  u = jnp.moveaxis(codes, axis, -1)
  u = u.reshape(u.shape[:-1] + (u.shape[-1] // k, k))
  shifts = jnp.arange(k, dtype=jnp.uint8) * jnp.uint8(bits)
  packed = jnp.sum(u << shifts, axis=-1, dtype=jnp.uint8)  # disjoint bits: sum == or
  return jnp.moveaxis(packed, -1, axis)


def unpack(packed: jax.Array, axis: int | None, bits: int) -> jax.Array:
  """Inverse of :func:`pack`: uint8 codes, ``8 // bits`` times longer along ``axis``."""
  k = 8 // bits
  if k == 1 or axis is None:
    return packed
  b = jnp.moveaxis(packed, axis, -1)
  shifts = jnp.arange(k, dtype=jnp.uint8) * jnp.uint8(bits)
  u = (b[..., None] >> shifts) & jnp.uint8((1 << bits) - 1)
  return jnp.moveaxis(u.reshape(b.shape[:-1] + (b.shape[-1] * k,)), -1, axis)


def pack_axis(shape, bits: int, shard_counts=None) -> int | None:
  """The axis of a parameter of ``shape`` its codes are packed along: the last one whose
  length (per device: ``shard_counts``) divides by ``8 // bits``; ``None`` (one code a byte)
  if there is none or a byte holds one code anyway."""
  k = 8 // bits
  if k == 1:
    return None
  counts = shard_counts or (1,) * len(shape)
  for a in reversed(range(len(shape))):
    if shape[a] % (k * counts[a]) == 0:
      return a
  return None


def codes_shape(shape, axis: int | None, bits: int) -> tuple[int, ...]:
  shape = tuple(shape)
  if axis is None:
    return shape
  return shape[:axis] + (shape[axis] // (8 // bits),) + shape[axis + 1:]


# --------------------------------------------------------------------------------------------
# The structural decomposition: one warm-started subspace-iteration step.


def _psum(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
  return jax.lax.psum(x, names) if names else x


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.matmul(a, b, precision=_HI)


def _gather_rows(x: jax.Array, names: tuple[str, ...]) -> tuple[jax.Array, Any]:
  """``x`` ``[B, rows_local, k]`` gathered over the mesh axes splitting the rows, and the
  global index of the first local row."""
  if not names:
    return x, 0
  return (jax.lax.all_gather(x, names, axis=1, tiled=True),
          jax.lax.axis_index(names) * x.shape[1])


def _top_rows(b: jax.Array, rank: int, shards: MatrixShards) -> jax.Array:
  """The ``rank`` rows of each matrix with the largest norms, as columns ``[B, cols, rank]``
  in decreasing order of norm: a start for the subspace iteration that is equivariant under
  signed permutations on both sides and orthogonal maps on the right (ties, e.g. zero rows,
  go to the lower index). ``rank`` argmax passes, not ``lax.top_k``: plain reductions."""
  norms = _psum(jnp.sum(jnp.square(b), axis=-1), shards.cols)  # [B, rows_local]
  everything, offset = _gather_rows(norms[..., None], shards.rows)
  everything = everything[..., 0]
  picks = []
  for _ in range(rank):
    i = jnp.argmax(everything, axis=-1)  # [B], the first of the largest
    picks.append(i)
    everything = jnp.where(jnp.arange(everything.shape[-1]) == i[:, None], -jnp.inf, everything)
  idx = jnp.stack(picks, axis=-1)  # [B, rank], global row indices
  local = jnp.arange(b.shape[-2])[None, None, :] + offset
  pick = (idx[..., None] == local).astype(b.dtype)  # [B, rank, rows_local]
  return jnp.swapaxes(_psum(_mm(pick, b), shards.rows), -1, -2)


# A column that keeps less than this fraction of the largest column's norm once the earlier
# ones are projected out is (numerically) in their span: it is dropped, not normalised noise.
_DEPENDENT = 1e-5


def _orthonormal_columns(x: jax.Array, shards: MatrixShards) -> jax.Array:
  """An orthonormal basis of the column space of ``x`` ``[B, rows, k]``: modified
  Gram-Schmidt with one reorthogonalisation pass (orthonormal to fp32 rounding), on the rows
  gathered over the mesh. Columns (numerically) dependent on earlier ones come out zero.

  Elementwise products and sums only: no LAPACK call (jaxlib 0.10.2's CPU runtime was seen to
  deadlock when its QR custom calls ran beside the other fused kernels of a large step)."""
  full, offset = _gather_rows(x, shards.rows)
  top = jnp.max(jnp.sqrt(jnp.sum(jnp.square(full), axis=-2)), axis=-1, keepdims=True)  # [B,1]
  cols = []
  for j in range(full.shape[-1]):
    v = full[..., j]
    for _ in range(2):  # "twice is enough"
      for c in cols:
        v = v - jnp.sum(c * v, axis=-1, keepdims=True) * c
    n = jnp.sqrt(jnp.sum(jnp.square(v), axis=-1, keepdims=True))
    keep = n > _DEPENDENT * top
    cols.append(jnp.where(keep, v / jnp.where(keep, n, 1.0), 0.0))
  p = jnp.stack(cols, axis=-1)
  if not shards.rows:
    return p
  return jax.lax.dynamic_slice_in_dim(p, offset, x.shape[1], axis=1)


def decompose(b: jax.Array, right: jax.Array, rank: int, iters: int = 1, *,
              shards: MatrixShards = LOCAL) -> tuple[jax.Array, jax.Array]:
  r"""The dominant rank-``rank`` part of each matrix of ``b`` ``[B, m, n]`` as ``(P, R)``
  with ``P`` ``[B, m, r]`` orthonormal (or zero) columns and ``R = b^T P`` ``[B, n, r]``, so
  that :math:`P R^\top = P P^\top b` is ``b`` projected on the tracked subspace.

  ``iters`` steps of subspace iteration (the reference's ``poweriter1``):
  :math:`Q = R / \|R_{:,j}\|,\ P = \mathrm{orth}(b Q),\ R = b^\top P`, started from the
  stored ``right`` (the previous step's ``R``: the subspace moves slowly with the momentum).
  A column of ``right`` that is zero (all of them at the first step; one dropped as dependent)
  starts from the row of ``b`` of that rank in norm instead. A planted component far above
  the rest is captured in one step, and kept exactly by the caller (only the residual is
  quantised).
  """
  tiny = jnp.finfo(jnp.float32).tiny
  col_norms = lambda q: jnp.sqrt(_psum(jnp.sum(jnp.square(q), axis=-2, keepdims=True),
                                       shards.cols))
  q = jnp.where(col_norms(right) > 0, right, _top_rows(b, rank, shards))
  p = None
  for _ in range(iters):
    q = q / jnp.maximum(col_norms(q), tiny)
    p = _orthonormal_columns(_psum(_mm(b, q), shards.cols), shards)
    q = _psum(_mm(jnp.swapaxes(b, -1, -2), p), shards.rows)
  return p, q


# --------------------------------------------------------------------------------------------
# One step on a batch of matrices.


class _Config(NamedTuple):
  beta: Any
  nesterov: bool
  normalized: bool
  bits: int
  mu: float
  iters: int
  method: str
  compute_dtype: Any


def _unit(x: jax.Array, shards: MatrixShards) -> tuple[jax.Array, jax.Array]:
  """``(x / ||x||_F, ||x||_F)`` per matrix (a zero matrix stays zero; norm ``[B, 1, 1]``)."""
  n = safe_norm(x, (-2, -1), shards)
  return x / jnp.where(n > 0, n, 1.0), n


def _matrix_step(cfg: _Config, g, q, scale, delta, left, right, factor_dtype,
                 shards: MatrixShards):
  """Dequantise ``B_{t-1}``, Muon's momentum and polar step, requantise ``B_t``.

  ``g`` ``[B, m, n]`` float32; ``q`` int codes; ``scale``, ``delta`` ``[B]``; ``left``,
  ``right`` ``[B, m, r]``, ``[B, n, r]`` float32 or ``None`` (no decomposition). Returns the
  orthogonalised update and the new ``(q, scale, delta, left, right)``.
  """
  unit = dequantize(q, delta, cfg.mu)
  if left is not None:
    unit = unit + _mm(left, jnp.swapaxes(right, -1, -2))
  prev = scale[:, None, None] * unit
  if cfg.normalized:  # the reference's norm=True: unit gradients, unit buffer
    g = _unit(g, shards)[0]
  buf = cfg.beta * prev + g
  if cfg.normalized:
    buf = _unit(buf, shards)[0]
  m = g + cfg.beta * buf if cfg.nesterov else buf
  u = shards.whole(lambda w: polar_lib.polar(w, method=cfg.method, side="full",
                                             compute_dtype=cfg.compute_dtype), m)
  bn, n = _unit(buf, shards)
  low = 0.0
  if left is not None:
    p, r = decompose(bn, right, left.shape[-1], cfg.iters, shards=shards)
    # The residual is taken against the factors as stored (rounded to their dtype), so that
    # dequantisation adds back exactly what was subtracted.
    left = p.astype(factor_dtype).astype(jnp.float32)
    right = r.astype(factor_dtype).astype(jnp.float32)
    low = _mm(left, jnp.swapaxes(right, -1, -2))
  q, delta = quantize(bn - low, cfg.bits, cfg.mu, shards)
  # The stored scale gives the dequantised buffer B's Frobenius norm exactly: the error
  # left is a change of direction only (quantisation noise would otherwise add its energy
  # to the buffer at every step and lengthen the momentum's memory).
  rec = safe_norm(dequantize(q, delta, cfg.mu) + low, (-2, -1), shards)
  scale = n / jnp.where(rec > 0, rec, 1.0)
  return u, q, scale[:, 0, 0], delta, left, right


# --------------------------------------------------------------------------------------------
# The transform.


class ScaleByMuonQState(NamedTuple):
  """State of :func:`scale_by_muonq`: per matrix leaf, Muon's buffer
  ``B = scale * (left @ right^T + dequantize(codes, delta))``; vectors keep plain momentum."""
  mu: Any  # vector (no-axes) leaves: momentum in mu_dtype; matrix leaves: None
  codes: Any  # matrix leaves: uint8, the parameter's shape, packed 8 // bits a byte
  scale: Any  # matrix leaves: [*batch] float32, ||B||_F / ||left @ right^T + deq(codes)||_F
  delta: Any  # matrix leaves: [*batch] float32, the quantiser's step
  left: Any  # matrix leaves: [*batch, *rows, r] P (orthonormal columns), factor dtype
  right: Any  # matrix leaves: [*batch, *cols, r] R = (B / ||B||_F)^T P, factor dtype


def _leaf_rank(lay, rank: int) -> int:
  _, m, n = lay.batched_shape
  return min(rank, m, n)


def _static(name: str, value: Any, kind: type, lo: float, hi: float = math.inf):
  """``value`` as a Python ``kind`` in ``[lo, hi]``; a traced value (``inject_hyperparams``
  without ``static_args``) or a bool or a float for an int raises."""
  what = "an int" if kind is int else "a number"
  rng = f" in {lo}..{hi}" if hi < math.inf else f" >= {lo}"
  bad = ValueError(f"muonq: {name} must be {what}{rng} (a static Python value: under "
                   f"optax.inject_hyperparams pass static_args=({name!r}, ...)), got {value!r}.")
  if isinstance(value, bool):
    raise bad
  try:
    dtype = np.asarray(value).dtype
    out = kind(value)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    raise bad from None
  if (kind is int and not np.issubdtype(dtype, np.integer)) or not lo <= out <= hi:
    raise bad
  return out


@shared_args
def scale_by_muonq(
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    *,
    bits: int = 4,
    rank: int = 4,
    mu_law: float = MU_LAW,
    power_iters: int = 1,
    normalized_momentum: bool = False,
    method: str = "polar_express",
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""Muon's momentum and polar step with the momentum buffer stored quantised (MuonQ).

  Per matrix: :math:`B_{t-1} = c\,(P R^\top + \mathrm{deq}(q))`,
  :math:`B_t = \beta B_{t-1} + G_t`, output :math:`\mathrm{polar}(G_t + \beta B_t)`
  (Nesterov) or :math:`\mathrm{polar}(B_t)`; then :math:`B_t / \|B_t\|_F` is split by
  :func:`decompose` into its tracked rank-``rank`` part, stored in the factor dtype, and a
  residual, stored as ``bits``-bit mu-law codes (:func:`quantize`), and
  :math:`c = \|B_t\|_F / \|P R^\top + \mathrm{deq}(q)\|_F` (the dequantised buffer keeps
  its Frobenius norm exactly). Leaves without axes
  (vectors) get plain (Nesterov) momentum, as :func:`symoptax.muon` gives them.

  State per ``m x n`` matrix: ``ceil(m n / (8 // bits))`` bytes of codes, ``(m + n) r``
  factor entries and two float32 scalars (a 256 x 256 fp32 leaf: 40 kB instead of Muon's
  256 kB). Deterministic: no random numbers anywhere.

  Args:
    beta: momentum coefficient.
    nesterov: use Nesterov momentum.
    bits: bits per code, 2..8 (a static int).
    rank: components kept apart per matrix, at most ``min(m, n)`` (0: none; a static int).
    mu_law: the companding constant :math:`\mu` (255, the reference's; 0: a uniform grid).
    power_iters: subspace-iteration steps per optimizer step (1, as the reference).
    normalized_momentum: the reference's recursion: :math:`\hat G = G/\|G\|_F`,
      :math:`B_t = \mathrm{unit}(\beta B_{t-1} + \hat G)`, update from
      :math:`\hat G + \beta B_t` (not Muon's momentum; off by default).
    method: full-side polar oracle.
    axes: which axes form rows and cols.
    [[compute_dtype]]
    mu_dtype: dtype of the parts kept unquantised: the vector leaves' momentum and the
      matrices' factors ``P``, ``R`` (``None``: the parameters' dtype). The codes are uint8
      and the two per-matrix scalars float32 whatever it is.
    [[shardings_stateless]]

  Returns:
    An ``optax.GradientTransformation``.
  """
  bits = _static("bits", bits, int, 2, 8)
  rank = _static("rank", rank, int, 0)
  power_iters = _static("power_iters", power_iters, int, 1)
  mu_law = _static("mu_law", mu_law, float, 0.0)
  validate_polar(method, "full", None)
  cfg = _Config(beta, nesterov, normalized_momentum, bits, mu_law, power_iters, method,
                compute_dtype)
  qmax = qmax_of(bits)

  def placement(tree):
    """(mesh, per-leaf LeafSharding) or (None, None)."""
    if shardings is None:
      return None, None
    return sharding_lib.resolve_shardings(shardings, mesh, tree)

  def leaf_plan(p, ax, mesh_, sh):
    """(layout, pack axis, rank, specs or None) of a matrix leaf."""
    lay = layout(jnp.shape(p), ax)
    counts = None
    specs = None
    if mesh_ is not None:
      counts = tuple(math.prod(mesh_.shape[n] for n in d) for d in sh.dims)
      stat = lambda kind, extra=(): sharding_lib.LeafSharding(
          sharding_lib._stat_dims(lay, sh.dims, kind) + extra).spec
      specs = dict(param=sh.spec, matrix=stat("matrix"), left=stat("rows", ((),)),
                   right=stat("cols", ((),)))
    return lay, pack_axis(jnp.shape(p), bits, counts), _leaf_rank(lay, rank), specs

  def init_fn(params):
    axes_tree = resolve_axes(axes, params)
    leaves, treedef, lays = flatten_with_layouts(params, axes_tree)
    axes_leaves = treedef.flatten_up_to(axes_tree)
    mesh_, leaf_sh = placement(params)
    sh_leaves = treedef.flatten_up_to(leaf_sh) if mesh_ is not None else [None] * len(leaves)
    out = {k: [] for k in ScaleByMuonQState._fields}
    for p, ax, lay0, sh in zip(leaves, axes_leaves, lays, sh_leaves):
      if lay0 is None:
        out["mu"].append(None if p is None else jnp.zeros_like(p, dtype=mu_dtype))
        for k in ("codes", "scale", "delta", "left", "right"):
          out[k].append(None)
        continue
      lay, axis, r, specs = leaf_plan(p, ax, mesh_, sh)
      fdt = mu_dtype if mu_dtype is not None else p.dtype
      rows = sharding_lib.stat_shape(lay, "rows")
      cols = sharding_lib.stat_shape(lay, "cols")
      leaf = dict(codes=jnp.zeros(codes_shape(jnp.shape(p), axis, bits), jnp.uint8),
                  scale=jnp.zeros(sharding_lib.stat_shape(lay, "matrix"), jnp.float32),
                  delta=jnp.zeros(sharding_lib.stat_shape(lay, "matrix"), jnp.float32),
                  left=jnp.zeros(rows + (r,), fdt) if r else None,
                  right=jnp.zeros(cols + (r,), fdt) if r else None)
      if specs is not None:
        spec_of = dict(codes=specs["param"], scale=specs["matrix"], delta=specs["matrix"],
                       left=specs["left"], right=specs["right"])
        leaf = {k: None if v is None else sharding_lib.constrain(
            v, NamedSharding(mesh_, spec_of[k])) for k, v in leaf.items()}
      out["mu"].append(None)
      for k, v in leaf.items():
        out[k].append(v)
    return ScaleByMuonQState(**{k: treedef.unflatten(v) for k, v in out.items()})

  def to_inputs(g, codes, scale, delta, left, right, lay, axis):
    """A leaf's (local) arrays as the batched inputs of _matrix_step."""
    b, m, n = lay.batched_shape
    q = to_batched(unpack(codes, axis, bits), lay).astype(jnp.int32) - qmax
    f32 = lambda x, *s: None if x is None else x.astype(jnp.float32).reshape(s)
    return (to_batched(g, lay).astype(jnp.promote_types(g.dtype, jnp.float32)), q,
            scale.reshape(b), delta.reshape(b), f32(left, b, m, -1), f32(right, b, n, -1))

  def from_outputs(outs, g, lay, axis, factor_dtype):
    u, q, scale, delta, left, right = outs
    codes = pack(from_batched((q.astype(jnp.int32) + qmax).astype(jnp.uint8), lay), axis, bits)
    stat = sharding_lib.stat_shape(lay, "matrix")
    fac = lambda x, kind: None if x is None else x.astype(factor_dtype).reshape(
        sharding_lib.stat_shape(lay, kind) + (x.shape[-1],))
    return (from_batched(u, lay).astype(g.dtype), codes, scale.reshape(stat),
            delta.reshape(stat), fac(left, "rows"), fac(right, "cols"))

  def update_fn(updates, state, params=None):
    tree = params if params is not None else updates
    axes_tree = resolve_axes(axes, tree)
    leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=lambda x: x is None)
    axes_leaves = treedef.flatten_up_to(axes_tree)
    tree_leaves = treedef.flatten_up_to(tree)
    st = {k: treedef.flatten_up_to(getattr(state, k)) for k in ScaleByMuonQState._fields}
    mesh_, leaf_sh = placement(tree)
    sh_leaves = treedef.flatten_up_to(leaf_sh) if mesh_ is not None else [None] * len(leaves)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(
        updates, is_leaf=lambda x: x is None)[0]]
    out = list(leaves)
    new = {k: list(v) for k, v in st.items()}
    groups: dict[Any, list] = {}  # unsharded matrices of one shape: one batched step
    for i, (g, ax) in enumerate(zip(leaves, axes_leaves)):
      if g is None:
        continue
      if ax is None:  # plain (Nesterov) momentum, as optax.trace
        m = (beta * st["mu"][i] + g).astype(st["mu"][i].dtype)
        new["mu"][i] = m
        out[i] = g + beta * m if nesterov else m
        continue
      lay, axis, r, specs = leaf_plan(tree_leaves[i], ax, mesh_, sh_leaves[i])
      args = tuple(st[k][i] for k in ("codes", "scale", "delta", "left", "right"))
      fdt = args[3].dtype if r else None
      if mesh_ is None:
        inputs = to_inputs(g, *args, lay, axis)
        groups.setdefault((lay.batched_shape[1:], r, inputs[0].dtype, fdt), []).append(
            (i, lay, axis, inputs))
        continue
      # Sharded: this leaf's local blocks under shard_map, collectives through `shards`.
      sharding_lib._check_whole_heads(lay, sh_leaves[i].dims, mesh_, paths[i])
      _, rows, cols = sharding_lib._leaf_axes(lay, sh_leaves[i].dims)
      shards = sharding_lib._shards(mesh_, rows, cols, lay.batched_shape[1:])
      in_specs = (specs["param"], specs["param"], specs["matrix"], specs["matrix"],
                  specs["left"] if r else None, specs["right"] if r else None)

      def body(g_, codes_, scale_, delta_, left_, right_, ax=ax, axis=axis, fdt=fdt,
               shards=shards):
        lay_ = layout(g_.shape, ax)
        ins = to_inputs(g_, codes_, scale_, delta_, left_, right_, lay_, axis)
        outs = _matrix_step(cfg, *ins, fdt, shards)
        return from_outputs(outs, g_, lay_, axis, fdt)

      live = [j for j, s in enumerate(in_specs) if s is not None]
      call_specs = tuple(in_specs[j] for j in live)

      def call(*xs, body=body, live=live):
        full = [None] * 6
        for j, x in zip(live, xs):
          full[j] = x
        res = body(g_=full[0], codes_=full[1], scale_=full[2], delta_=full[3], left_=full[4],
                   right_=full[5])
        return tuple(res[j] for j in live)

      res = sharding_lib.shard_map(call, mesh=mesh_, in_specs=call_specs,
                                   out_specs=call_specs)(*[((g,) + args)[j] for j in live])
      full = [None] * 6
      for j, x in zip(live, res):
        full[j] = x
      out[i] = full[0]
      for k, v in zip(("codes", "scale", "delta", "left", "right"), full[1:]):
        new[k][i] = v
    for (_, r, _, fdt), items in groups.items():
      cat = [None if items[0][3][j] is None else
             (items[0][3][j] if len(items) == 1 else
              jnp.concatenate([it[3][j] for it in items], axis=0)) for j in range(6)]
      outs = _matrix_step(cfg, *cat, fdt, LOCAL)
      sizes = [it[3][0].shape[0] for it in items]
      cuts = list(itertools.accumulate(sizes))[:-1]
      split = [None if o is None else (jnp.split(o, cuts, axis=0) if cuts else [o])
               for o in outs]
      for n_, (i, lay, axis, _) in enumerate(items):
        res = from_outputs(tuple(None if s is None else s[n_] for s in split), leaves[i], lay,
                           axis, fdt)
        out[i] = res[0]
        for k, v in zip(("codes", "scale", "delta", "left", "right"), res[1:]):
          new[k][i] = v
    return (treedef.unflatten(out),
            ScaleByMuonQState(**{k: treedef.unflatten(v) for k, v in new.items()}))

  # One compiled program per call signature: run eagerly, the step would otherwise dispatch
  # (and compile) its many small operations one by one. Under an outer jit it is inlined.
  return optax.GradientTransformation(init_fn, jax.jit(update_fn))


@keeps_shardings
@shared_args
def muonq(
    learning_rate: ScalarOrSchedule,
    *,
    bits: int = 4,
    rank: int = 4,
    mu_law: float = MU_LAW,
    power_iters: int = 1,
    normalized_momentum: bool = False,
    beta: ArrayLike = 0.95,
    nesterov: bool = True,
    weight_decay: ArrayLike = 0.0,
    method: str = "polar_express",
    shape_rule: str = "muon",
    rms: ArrayLike = 0.2,
    axes: AxesLike = None,
    compute_dtype: Any = "auto",
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""MuonQ: Muon with its momentum buffer stored in ``bits`` bits (default 4).

  .. math::
    B_{t-1} = c \left(P R^\top + \mathrm{expand}(\delta q)\right),\quad
    B_t = \beta B_{t-1} + G_t,\quad
    W_{t+1} = W_t (1 - \eta\lambda) - \eta\, s\, \mathrm{polar}(G_t + \beta B_t)

  and :math:`B_t / \|B_t\|_F` is stored again as its tracked rank-``rank`` part
  :math:`P R^\top` (one warm-started subspace-iteration step) plus a residual quantised to
  ``bits``-bit mu-law codes ``q`` with one step :math:`\delta` per matrix, and :math:`c`
  such that the dequantised buffer has :math:`\|B_t\|_F` (:func:`scale_by_muonq`).
  :math:`s` is Muon's shape factor. The first step equals
  :func:`symoptax.muon`'s; later ones differ by the quantisation error of the carried buffer
  only. State: half a byte per matrix entry at 4 bits, plus ``(m + n) rank`` factor entries
  and two floats per matrix (a 256 x 256 fp32 matrix: 6.4x smaller than Muon's momentum;
  512 x 512: 7.1x); vectors keep full momentum. Symmetry group: signed permutations on both
  sides (an entrywise grid breaks the orthogonal ones). On random gradients (the hardest
  case: no direction persists) the updates' cosine to fp32 Muon's is > 0.97 for 10 steps on a
  128 x 64 matrix and settles near 0.84-0.93 after ~50 steps; 8 bits: > 0.999.

  Args:
    learning_rate: float or optax schedule.
    bits: bits per code, 2..8 (static; 3 bits take the room of 4, 5-7 that of 8).
    rank: singular components kept apart, unquantised (0: none; static).
    mu_law: companding constant (255 as the reference; 0: a uniform grid).
    power_iters: subspace-iteration steps per update (1 as the reference).
    normalized_momentum: the reference's unit-gradient, unit-buffer recursion instead of
      Muon's momentum (see :func:`scale_by_muonq`).
    beta, nesterov, weight_decay, method, shape_rule, rms, axes, compute_dtype: as
      :func:`symoptax.muon`.
    mu_dtype: dtype of the unquantised state: vector momentum and the factors ``P``, ``R``
      (``None``: the parameters' dtype).
    [[shardings]]

  Returns:
    An ``optax.GradientTransformation``.

  References:
    Su, Zhang, Liu, Zhao, Zhang, "MuonQ: Enhancing Low-Bit Muon Quantization via Directional
    Fidelity Optimization", CoLM 2026, arXiv:2605.11396 (github.com/YupengSu/MuonQ).

  Examples:
    >>> import jax, jax.numpy as jnp, numpy as np, symoptax
    >>> from symoptax.variants.muonq import muonq
    >>> params = {"w": jnp.zeros((256, 256))}
    >>> opt, ref = muonq(1.0, method="svd"), symoptax.muon(1.0, method="svd")
    >>> size = lambda s: sum(x.nbytes for x in jax.tree.leaves(s))
    >>> round(size(ref.init(params)) / size(opt.init(params)), 1)  # bytes of state
    6.4
    >>> grads = {"w": jax.random.normal(jax.random.key(0), (256, 256))}
    >>> u, _ = opt.update(grads, opt.init(params), params)
    >>> v, _ = ref.update(grads, ref.init(params), params)
    >>> bool(np.allclose(u["w"], v["w"], atol=1e-5))  # step 1: Muon's
    True
  """
  sh = shard_kwargs(shardings, mesh)
  return chain(
      scale_by_muonq(beta, nesterov, bits=bits, rank=rank, mu_law=mu_law,
                     power_iters=power_iters, normalized_momentum=normalized_momentum,
                     method=method, axes=axes, compute_dtype=compute_dtype, mu_dtype=mu_dtype,
                     **sh),
      scale_by_shape(shape_rule, rms=rms, axes=axes, **sh),
      *decay_and_rate(learning_rate, weight_decay, axes))
