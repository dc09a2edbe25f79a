"""Roles: which kind of transformer parameter each leaf is, found from its path and shape.

``label_roles`` reads parameter trees as they come from Flax NNX (``nnx.state(model,
nnx.Param)`` or its pure-dict form), Flax Linen, MaxText and HF-style Flax ports, and returns
one role string per leaf. ``matrix_axes`` turns roles into :class:`symoptax.MatrixAxes`
(Flax layouts: Dense kernels are ``[in, out]``, embeddings ``[vocab, d]``).

Matching uses only a leaf's own path and shape, so it works on the masked trees that
``optax.multi_transform`` hands to each branch.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import jax

from symoptax.axes import MatrixAxes

ROLES = ("embedding", "lm_head", "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o",
         "mlp_in", "mlp_out", "router", "expert_in", "expert_out", "matrix", "vector")

# Path words (lower case, one path component each).
_EMBED = {"embed_tokens", "token_embedder", "embedder", "embed", "embedding", "embeddings",
          "wte", "tok_embeddings", "word_embeddings", "input_embedding"}
_HEAD = {"lm_head", "logits_dense", "unembed", "unembedding", "output_layer"}
_ATTN = {"attn", "attention", "self_attn", "self_attention", "cross_attn", "cross_attention"}
_ATTN_NAMES = {
    "attn_q": {"q_proj", "query", "wq", "q"},
    "attn_k": {"k_proj", "key", "wk", "k"},
    "attn_v": {"v_proj", "value", "wv", "v"},
    "attn_qkv": {"qkv", "qkv_proj", "c_attn", "wqkv", "query_key_value", "in_proj"},
    "attn_o": {"o_proj", "out", "wo", "out_proj", "o", "c_proj", "dense"},
}
_MLP = {"mlp", "feed_forward", "ffn", "feedforward", "mlp_block", "ffw"}
_IN_NAMES = {"gate_proj", "up_proj", "gate_up_proj", "wi_0", "wi_1", "wi", "w1", "w3", "fc1",
             "c_fc", "gate", "up", "dense_h_to_4h"}
_OUT_NAMES = {"down_proj", "wo", "w2", "fc2", "c_proj", "down", "linear", "dense_4h_to_h"}
_MOE_BLOCK = re.compile(r"^(moe|moeblock|moe_block|sparse_moe|block_sparse_moe)(_\d+)?$")
# Embedding tables that are not vocabulary matrices (positions, relative positions, segments).
_NOT_VOCAB = re.compile(r"pos|wpe|relative|token_type|segment")
_FLAX_EMBED = re.compile(r"^embed_\d+$")
_VECTOR_LEAF = re.compile(r"(^|_)(bias|sinks?)$")
# The scanned-layer containers in MaxText-style trees: decoder/layers, dense_layers,
# moe_layers. A container followed by an integer index (layers/0/...) is an unscanned list.
SCAN_KEY = re.compile(r"(^|_)layers$")
_MATRIX_LEAF = {"embedding", "kernel", "weight", "w"}

# Expected matrix dims per role (after removing a scan axis).
_NDIM = {"embedding": (2,), "lm_head": (2,), "attn_q": (2, 3), "attn_k": (2, 3),
         "attn_v": (2, 3), "attn_qkv": (2, 3), "attn_o": (2, 3), "mlp_in": (2,),
         "mlp_out": (2,), "router": (2,), "expert_in": (2, 3), "expert_out": (2, 3),
         "matrix": (2,)}


def path_keys(path: Sequence[Any]) -> tuple[str, ...]:
  """A jax key path as plain strings; NNX's trailing ``.value`` attribute is dropped."""
  path = tuple(path)
  if len(path) > 1 and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name in (
      "value", "raw_value"):
    path = path[:-1]
  out = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        out.append(str(getattr(k, attr)))
        break
    else:
      out.append(str(k))
  return tuple(out)


def path_str(path: Sequence[Any]) -> str:
  return "/".join(path_keys(path))


def _core_shape(shape, path, scan_axis):
  """Shape without the scan axis for leaves inside a scanned layer stack."""
  keys = [k.lower() for k in path_keys(path)]
  scanned = any(SCAN_KEY.search(k) and not (i + 1 < len(keys) and keys[i + 1].isdigit())
                for i, k in enumerate(keys))
  if scan_axis is None or not scanned:
    return tuple(shape), None
  nd = len(shape)
  if not -nd <= scan_axis < nd:
    raise ValueError(
        f"{path_str(path)}: scan_axis={scan_axis} is out of range for a leaf of shape "
        f"{tuple(shape)} inside a scanned layer stack; pass the axis that indexes layers "
        "(MaxText's param_scan_axis, often 1).")
  s = scan_axis % nd
  return tuple(d for i, d in enumerate(shape) if i != s), s


def _builtin_roles(keys: tuple[str, ...], core_ndim: int, moe_parents: frozenset) -> set[str]:
  """Every built-in role whose pattern claims this path (normally exactly one or none)."""
  low = [k.lower() for k in keys]
  found = set()
  if any(k in _EMBED or _FLAX_EMBED.match(k) for k in low) and not any(
      _NOT_VOCAB.search(k) for k in low):
    found.add("embedding")
  if any(k in _HEAD for k in low):
    found.add("lm_head")
  moe_block = any(_MOE_BLOCK.match(k) for k in low)
  experts = "experts" in low or (moe_block and core_ndim == 3)
  # A bare "gate" is a router only in an MoE block or next to an "experts" key; elsewhere it
  # is a dense gated-MLP input.
  router = not experts and (
      any("router" in k for k in low)
      or any(k == "gate" and (moe_block or tuple(low[:i]) in moe_parents)
             for i, k in enumerate(low)))
  if router:
    found.add("router")
  if any(k in _ATTN for k in low):
    i = max(i for i, k in enumerate(low) if k in _ATTN)
    for role, names in _ATTN_NAMES.items():
      if any(k in names for k in low[i + 1:]):
        found.add(role)
  if experts:
    if any(k in _IN_NAMES for k in low):
      found.add("expert_in")
    if any(k in _OUT_NAMES for k in low):
      found.add("expert_out")
  elif not router and any(k in _MLP for k in low):
    i = max(i for i, k in enumerate(low) if k in _MLP)
    if any(k in _IN_NAMES for k in low[i + 1:]):
      found.add("mlp_in")
    if any(k in _OUT_NAMES for k in low[i + 1:]):
      found.add("mlp_out")
  return found


def _check_rules(rules):
  if rules is None:
    return []
  out = []
  for item in rules:
    try:
      pattern, role = item
    except (TypeError, ValueError):
      raise ValueError(f"rules must be (regex, role) pairs, got {item!r}.") from None
    if role not in ROLES:
      raise ValueError(f"rules: unknown role {role!r} for pattern {pattern!r}; valid roles "
                       f"are {', '.join(ROLES)}.")
    out.append((re.compile(pattern, re.IGNORECASE), role))
  return out


def _role_of(path, leaf, scan_axis, rules, moe_parents) -> str:
  name = path_str(path)
  shape = jax.numpy.shape(leaf)
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and not jax.numpy.issubdtype(dtype, jax.numpy.inexact):
    raise ValueError(
        f"{name}: a leaf of dtype {dtype} is not a trainable parameter. Label only the "
        "parameters: nnx.state(model, nnx.Param), or variables['params'] in Linen.")
  core, _ = _core_shape(shape, path, scan_axis)
  nd = len(core)
  for pattern, role in rules:
    if pattern.search(name):
      return _checked(name, shape, core, role, "your rules")
  keys = path_keys(path)
  if any(_VECTOR_LEAF.search(k.lower()) for k in keys):
    return "vector"  # biases (also bias tables such as T5's relative_attention_bias), sinks
  found = _builtin_roles(keys, nd, moe_parents)
  if nd <= 1:
    if found and keys[-1].lower() in _MATRIX_LEAF:
      return _checked(name, shape, core, sorted(found)[0], "its path")
    return "vector"
  if len(found) > 1:
    raise ValueError(
        f"{name}: built-in patterns claim this leaf for several roles "
        f"({', '.join(sorted(found))}). Pass rules=[(r'<regex matching this path>', "
        "'<role>')] to decide.")
  if found:
    return _checked(name, shape, core, found.pop(), "its path")
  if nd == 2:
    return "matrix"
  raise ValueError(
      f"{name}: no role matches this {nd}-dim leaf (shape {tuple(shape)}), and only 2-D "
      "leaves fall back to 'matrix'. Pass rules=[(regex, role)] to name it, or scan_axis= "
      "if it lives in a scanned layer stack.")


def _moe_parents(params) -> frozenset:
  """Paths (lower case) of every container that holds an ``experts`` key, masked or not."""
  from optax.transforms import MaskedNode
  paths = jax.tree_util.tree_flatten_with_path(
      params, is_leaf=lambda x: x is None or isinstance(x, MaskedNode))[0]
  out = set()
  for path, _ in paths:
    low = [k.lower() for k in path_keys(path)]
    out.update(tuple(low[:i]) for i, k in enumerate(low) if k == "experts")
  return frozenset(out)


def _checked(name, shape, core, role, source):
  if role == "vector":
    return role
  if len(core) not in _NDIM[role]:
    raise ValueError(
        f"{name}: {source} make{'s' if source == 'its path' else ''} this leaf {role!r}, but "
        f"its shape {tuple(shape)} has {len(core)} matrix dims where {role!r} needs "
        f"{' or '.join(map(str, _NDIM[role]))}. If it sits in a scanned layer stack pass "
        "scan_axis=; otherwise map it to the right role with rules=[(regex, role)].")
  return role


def label_roles(params: Any, *, scan_axis: int | None = None,
                rules: Iterable[tuple[str, str]] | None = None) -> Any:
  """Labels every leaf of a parameter tree with its role.

  Roles: ``embedding, lm_head, attn_q, attn_k, attn_v, attn_qkv, attn_o, mlp_in, mlp_out,
  router, expert_in, expert_out, matrix, vector``.

  Matching is on path words (case-insensitive) and shape. Known names include HF-style
  (``embed_tokens``, ``lm_head``, ``q_proj``..``o_proj``, ``gate_proj/up_proj/down_proj``,
  MoE ``mlp.gate``/``router`` and ``experts.*``), MaxText (``token_embedder``,
  ``logits_dense``, ``query/key/value/out``, ``wi_0/wi_1/wo``, ``MoeBlock_*/gate``) and Flax
  defaults (``Embed_0``, ``embedding``; unknown ``Dense_N/kernel`` become ``matrix``).
  Position, relative-position and segment tables (``wpe``, ``pos_*``, ``token_type_*``) are
  not vocabulary matrices. Einsum-style kernels with stacked q/k/v axes (DeepMind Gemma's
  ``q_einsum``, ``kv_einsum``) are not recognised: name them with ``rules``.
  Biases, attention sinks and every 0/1-D leaf are ``vector``. A tied embedding used as the
  LM head is one leaf with role ``embedding``.

  Args:
    params: a parameter pytree (NNX ``State`` or pure dict, Linen ``params``, nested dicts).
    scan_axis: for scanned layer stacks (leaves under a ``layers`` key, as MaxText's
      ``decoder/layers``), the axis that indexes layers (MaxText's ``param_scan_axis``); it is
      removed before shapes are checked and becomes a batch axis.
    rules: ordered ``(regex, role)`` pairs, searched (case-insensitive) in the
      ``/``-joined path, e.g. ``[(r"blocks/\\d+/wqkv", "attn_qkv")]``. The first match wins
      and takes precedence over the built-in patterns.

  Returns:
    A pytree of role strings with the structure of ``params``.

  Raises:
    ValueError: naming the leaf's path, when two built-in patterns claim a leaf, when a role's
      shape is impossible (an ``embedding`` of one dim, a 4-dim expert leaf), when
      ``scan_axis`` is out of range, for an unknown >2-D leaf, or for a non-float leaf (RNG
      keys, counters: label ``nnx.state(model, nnx.Param)`` only).

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> params = {"embed_tokens": {"embedding": jnp.zeros((32, 8))},
    ...           "lm_head": {"kernel": jnp.zeros((8, 32))}, "norm": {"scale": jnp.ones(8)}}
    >>> symoptax.label_roles(params)
    {'embed_tokens': {'embedding': 'embedding'}, 'lm_head': {'kernel': 'lm_head'}, 'norm': {'scale': 'vector'}}
  """
  compiled = _check_rules(rules)
  moe = _moe_parents(params)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: _role_of(path, leaf, scan_axis, compiled, moe), params)


# Core (scan axis removed) (rows, cols) per role and core ndim, Flax layouts.
_CORE_AXES = {
    ("embedding", 2): (0, 1),    # [V, d]
    ("lm_head", 2): (1, 0),      # [d, V]
    ("attn_q", 2): (1, 0), ("attn_k", 2): (1, 0), ("attn_v", 2): (1, 0),
    ("attn_qkv", 2): (1, 0),     # [d, (H hd)]
    ("attn_q", 3): (2, 0), ("attn_k", 3): (2, 0), ("attn_v", 3): (2, 0),
    ("attn_qkv", 3): (2, 0),     # [d, H, hd]: heads are a batch axis
    ("attn_o", 2): (1, 0),       # [(H hd), d]
    ("attn_o", 3): (2, 1),       # [H, hd, d]
    ("mlp_in", 2): (1, 0),       # [d, ff]: rows are the hidden neurons
    ("mlp_out", 2): (0, 1),      # [ff, d]
    ("router", 2): (1, 0),       # [d, E]: rows are the experts
    ("expert_in", 3): (2, 1),    # [E, d, ff]
    ("expert_out", 3): (1, 2),   # [E, ff, d]
    ("expert_in", 2): (1, 0),    # one expert's [d, ff] (unstacked experts/0/...)
    ("expert_out", 2): (0, 1),   # [ff, d]
    ("matrix", 2): (1, 0),       # Flax Dense [in, out]
}


def _axes_of(path, leaf, role, scan_axis):
  if role == "vector":
    return None
  core, s = _core_shape(jax.numpy.shape(leaf), path, scan_axis)
  key = (role, len(core))
  if key not in _CORE_AXES:
    raise ValueError(f"{path_str(path)}: role {role!r} does not fit a leaf of shape "
                     f"{tuple(jax.numpy.shape(leaf))}.")
  lift = lambda a: a if s is None or a < s else a + 1
  rows, cols = _CORE_AXES[key]
  return MatrixAxes(rows=lift(rows), cols=lift(cols))


def matrix_axes(params: Any, *, roles: Any = None, scan_axis: int | None = None,
                rules: Iterable[tuple[str, str]] | None = None) -> Any:
  """Rows/cols axes of every leaf from its role and layout (``None`` for vectors).

  Layer axes (``scan_axis``), expert axes and attention-head axes become batch axes, so each
  layer / expert / head is its own matrix.

  Args:
    params: a parameter pytree.
    roles: a pytree of role strings (from :func:`label_roles`), or None to label here.
    scan_axis: the layer axis of scanned stacks (see :func:`label_roles`).
    rules: passed to :func:`label_roles` when ``roles`` is None.

  Returns:
    A pytree of :class:`symoptax.MatrixAxes` or ``None`` with the structure of ``params``.
  """
  if roles is None:
    roles = label_roles(params, scan_axis=scan_axis, rules=rules)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf, role: _axes_of(path, leaf, role, scan_axis), params, roles)
