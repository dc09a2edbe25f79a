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
from typing import Any, Iterable, Mapping

import jax

from symoptax.axes import MatrixAxes, layout, path_keys, path_str

ROLES = ("embedding", "lm_head", "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o",
         "mlp_in", "mlp_out", "router", "expert_in", "expert_out", "matrix", "position",
         "vector")

# Path words (lower case, one path component each).
_EMBED = {"embed_tokens", "token_embedder", "embedder", "embed", "embedding", "embeddings",
          "wte", "tok_embeddings", "word_embeddings", "input_embedding"}
_HEAD = {"lm_head", "logits_dense", "unembed", "unembedding", "output_layer"}
_ATTN = {"attn", "attention", "self_attn", "self_attention", "cross_attn", "cross_attention"}
# Module names ending in "attention" (MaxText's GptOssAttention, Linen's
# MultiHeadDotProductAttention_0) are attention blocks too.
_ATTN_MODULE = re.compile(r"attention(_\d+)?$")
_ATTN_NAMES = {
    # MLA (DeepSeek): wq_b / wkv_b map the q / kv latents to heads; wq_a / wkv_a (the
    # down-projections into the latents) are plain matrices.
    "attn_q": {"q_proj", "query", "wq", "q", "q_einsum", "wq_b", "q_b_proj"},
    "attn_k": {"k_proj", "key", "wk", "k", "k_einsum"},
    "attn_v": {"v_proj", "value", "wv", "v"},
    "attn_qkv": {"qkv", "qkv_proj", "c_attn", "wqkv", "query_key_value", "in_proj",
                 "kv_einsum", "wkv_b", "kv_b_proj"},
    "attn_o": {"o_proj", "out", "wo", "out_proj", "o", "c_proj", "dense", "attn_vec_einsum"},
}
_MLP = {"mlp", "feed_forward", "ffn", "feedforward", "mlp_block", "ffw",
        "shared_experts", "shared_expert", "shared_mlp"}  # an MoE block's dense branch
_MLP_NUMBERED = re.compile(r"^mlp\d+$")  # gemma 4's second (dense) branch, mlp2
_IN_NAMES = {"gate_proj", "up_proj", "gate_up_proj", "wi_0", "wi_1", "wi", "w1", "w3", "fc1",
             "c_fc", "gate", "up", "dense_h_to_4h", "gating_einsum"}
_OUT_NAMES = {"down_proj", "wo", "w2", "fc2", "c_proj", "down", "linear", "dense_4h_to_h"}
_IN_NAMES |= {"fc_in"}     # GPT-J
_OUT_NAMES |= {"fc_out"}
# MLP projections whose names say so without an MLP container (OPT's decoder layers hold
# fc1/fc2 directly).
_MLP_ANYWHERE = {"fc1": "mlp_in", "fc2": "mlp_out", "fc_in": "mlp_in", "fc_out": "mlp_out",
                 "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "mlp_out",
                 "dense_h_to_4h": "mlp_in", "dense_4h_to_h": "mlp_out"}
# HF Flax GPT-2's FlaxConv1D modules: kernels stored [out, in] (applied as x @ kernel.T),
# where every other Flax Dense is [in, out].
_CONV1D = {"c_attn", "c_fc", "c_proj"}
# Containers that are MoE blocks by name: a bare "gate" in them is the router, their 3-D
# leaves are stacked experts (MaxText's MoeBlock_0, RoutedMoE's routed_experts, GptOssMlp).
_MOE_BLOCK = re.compile(r"^(moe|moeblock|moe_block|sparse_moe|block_sparse_moe|routed_experts|"
                        r"gptossmlp)(_\d+)?$")
# Depthwise convolutions (Qwen3-Next's gated-delta-net conv1d, Mamba's conv1d): per-channel
# taps with no matrix between channels, so AdamW (role "vector").
_CONV = re.compile(r"^conv(1d|_1d|2d)?(_\d+)?$")
# Embedding tables that are not vocabulary matrices (positions, relative positions, segments):
# role "position" (a lookup table of positions or token types: AdamW in every preset).
_NOT_VOCAB = re.compile(r"pos|wpe|relative|token_type|segment")
_POSITION = re.compile(r"(^|_)pos(ition)?s?(_|$)|^wpe$|token_type|segment")
_FLAX_EMBED = re.compile(r"^embed_\d+$")
_VECTOR_LEAF = re.compile(r"(^|_)(bias|sinks?)$")
# The scanned-layer containers in MaxText-style trees: decoder/layers, dense_layers,
# moe_layers. A container followed by an integer index (layers/0/...) is an unscanned list.
SCAN_KEY = re.compile(r"(^|_)layers$")
_MATRIX_LEAF = {"embedding", "kernel", "weight", "w"}

# Expected matrix dims per role (after removing a scan axis).
_NDIM = {"embedding": (2,), "position": (2,), "lm_head": (2,), "attn_q": (2, 3),
         "attn_k": (2, 3), "attn_v": (2, 3), "attn_qkv": (2, 3), "attn_o": (2, 3), "mlp_in": (2,),
         "mlp_out": (2,), "router": (2,), "expert_in": (2, 3), "expert_out": (2, 3),
         "matrix": (2,)}


def _scan_depth(path) -> int:
  """How many scanned layer stacks a leaf sits in (nested scans: Qwen3-Next's local_layers
  inside MaxText's decoder/layers)."""
  keys = [k.lower() for k in path_keys(path)]
  return sum(bool(SCAN_KEY.search(k)) and not (i + 1 < len(keys) and keys[i + 1].isdigit())
             for i, k in enumerate(keys))


def _is_axis(a) -> bool:
  return isinstance(a, int) and not isinstance(a, bool)


def check_scan_axis(scan_axis) -> None:
  """Raises a clear ValueError for a malformed ``scan_axis`` (see :func:`label_roles`)."""
  if scan_axis is None or _is_axis(scan_axis):
    return
  if isinstance(scan_axis, Mapping):
    for pattern, value in scan_axis.items():
      if not isinstance(pattern, str):
        raise ValueError(f"scan_axis: a mapping's keys are path regexes, got {pattern!r}.")
      if value is not None:
        check_scan_axis(value)
        if isinstance(value, Mapping):
          raise ValueError(f"scan_axis: {pattern!r} maps to a mapping; give an int or a "
                           "tuple of ints.")
    return
  if isinstance(scan_axis, (tuple, list)) and scan_axis and all(map(_is_axis, scan_axis)):
    return
  raise ValueError(
      f"scan_axis must be None, an int, a tuple of ints (one per nested scanned stack, "
      f"outermost first) or a {{path regex: int | tuple}} mapping, got {scan_axis!r}.")


def _scan_axes(shape, path, scan_axis) -> tuple[int, ...]:
  """The axes of ``shape`` that index layers (sorted), for a leaf ``depth`` scanned stacks
  deep. An int ``a`` places them as nested ``nn.scan`` with ``variable_axes={"params": a}``
  does (the inner scan inserts its axis at ``a``, the outer then inserts its own at ``a``:
  ``a, a + 1, ...`` outermost first for ``a >= 0``); a tuple names them outermost first; a
  mapping picks the value of the first regex found in the leaf's path."""
  depth = _scan_depth(path)
  if isinstance(scan_axis, Mapping):
    name = path_str(path)
    scan_axis = next((v for k, v in scan_axis.items() if re.search(k, name, re.IGNORECASE)),
                     None)
  if scan_axis is None or depth == 0:
    return ()
  nd = len(shape)
  where = (f"{path_str(path)}: scan_axis={scan_axis!r} is out of range for a leaf of shape "
           f"{tuple(shape)} inside {depth} scanned layer stack{'s' * (depth > 1)}")
  fix = ("; pass the axis that indexes layers (MaxText's param_scan_axis, often 1), or one "
         "axis per nested stack, outermost first.")
  if _is_axis(scan_axis):
    order = ["core"] * (nd - depth)
    for j in reversed(range(depth)):  # innermost first
      i = scan_axis if scan_axis >= 0 else scan_axis + len(order) + 1
      if nd - depth < 0 or not 0 <= i <= len(order):
        raise ValueError(where + fix)
      order.insert(i, j)
    axes = [order.index(j) for j in range(depth)]
  else:
    if len(scan_axis) < depth:
      raise ValueError(where + f" (it names {len(scan_axis)} ax"
                       f"{'is' if len(scan_axis) == 1 else 'es'})" + fix)
    axes = list(scan_axis[:depth])
    if any(not -nd <= a < nd for a in axes) or len({a % nd for a in axes}) < depth:
      raise ValueError(where + fix)
    axes = [a % nd for a in axes]
  return tuple(sorted(axes))


def _core_shape(shape, path, scan_axis):
  """Shape without the layer axes of the scanned stacks the leaf sits in, and those axes."""
  scans = _scan_axes(shape, path, scan_axis)
  return tuple(d for i, d in enumerate(shape) if i not in scans), scans


def _lift(v, scans, ndim):
  """A core axis index (or tuple) in the ``ndim``-dim view whose layer axes are ``scans``."""
  if isinstance(v, tuple):
    return tuple(_lift(a, scans, ndim) for a in v)
  return [i for i in range(ndim) if i not in scans][v]


def _is_attn(k: str) -> bool:
  return k in _ATTN or bool(_ATTN_MODULE.search(k))


def _is_mlp(k: str) -> bool:
  return k in _MLP or bool(_MLP_NUMBERED.match(k))


def _builtin_roles(keys: tuple[str, ...], core_ndim: int, moe_parents: frozenset) -> set[str]:
  """Every built-in role whose pattern claims this path (normally exactly one or none)."""
  low = [k.lower() for k in keys]
  found = set()
  embed_like = any(k in _EMBED or _FLAX_EMBED.match(k) or "emb" in k for k in low)
  if any(_NOT_VOCAB.search(k) for k in low):
    if any(_POSITION.search(k) for k in low) and (embed_like or "wpe" in low):
      found.add("position")  # wpe, embed_positions, embeddings/position_embeddings, ...
  elif any(k in _EMBED or _FLAX_EMBED.match(k) for k in low):
    found.add("embedding")
  if any(k in _HEAD for k in low):
    found.add("lm_head")
  # An MoE block: named so, or a container that holds experts or a router.
  moe_block = any(_MOE_BLOCK.match(k) or tuple(low[:i]) in moe_parents
                  for i, k in enumerate(low))
  experts = "experts" in low or (moe_block and core_ndim >= 3)
  # A bare "gate" is a router only in an MoE block; elsewhere it is a dense gated-MLP input.
  router = not experts and any("router" in k or (k == "gate" and moe_block) for k in low)
  if router:
    found.add("router")
  if any(_is_attn(k) for k in low):
    i = max(i for i, k in enumerate(low) if _is_attn(k))
    for role, names in _ATTN_NAMES.items():
      if any(k in names for k in low[i + 1:]):
        found.add(role)
  if experts:
    if any(k in _IN_NAMES for k in low):
      found.add("expert_in")
    if any(k in _OUT_NAMES for k in low):
      found.add("expert_out")
  elif not router and any(_is_mlp(k) for k in low):
    i = max(i for i, k in enumerate(low) if _is_mlp(k))
    if any(k in _IN_NAMES for k in low[i + 1:]):
      found.add("mlp_in")
    if any(k in _OUT_NAMES for k in low[i + 1:]):
      found.add("mlp_out")
  elif not router and not any(_is_attn(k) for k in low):
    found.update(_MLP_ANYWHERE[k] for k in low if k in _MLP_ANYWHERE)
  return found


def _check_rules(rules):
  """``rules`` as ``(compiled regex, role, axes or None)`` triples."""
  if rules is None:
    return []
  out = []
  for item in rules:
    try:
      pattern, role, *axes = item
      if len(axes) > 1:
        raise ValueError
    except (TypeError, ValueError):
      raise ValueError(f"rules must be (regex, role) or (regex, role, axes) tuples, got "
                       f"{item!r}.") from None
    if role not in ROLES:
      raise ValueError(f"rules: unknown role {role!r} for pattern {pattern!r}; valid roles "
                       f"are {', '.join(ROLES)}.")
    axes = axes[0] if axes else None
    if axes is not None and (role == "vector" or not (isinstance(axes, MatrixAxes)
                                                       or callable(axes))):
      raise ValueError(
          f"rules: pattern {pattern!r}: the third item must be a MatrixAxes or a callable "
          f"shape -> MatrixAxes for a matrix role, got {axes!r} for role {role!r}.")
    out.append((re.compile(pattern, re.IGNORECASE), role, axes))
  return out


def _rule_axes(path, leaf, rules):
  """The axes a user's rule gives this leaf (the first rule matching its path), or None."""
  name = path_str(path)
  for pattern, _, axes in rules:
    if pattern.search(name):
      if axes is None:
        return None
      shape = tuple(jax.numpy.shape(leaf))
      got = axes(shape) if callable(axes) and not isinstance(axes, MatrixAxes) else axes
      if not isinstance(got, MatrixAxes):
        raise ValueError(f"{name}: the axes callable of rule {pattern.pattern!r} returned "
                         f"{got!r}, not a MatrixAxes.")
      layout(shape, got, name)  # axes that do not fit the leaf raise, naming it
      return got
  return None


TIED_EMBEDDING = ("embedding", "lm_head")
# scan_axis: one int, one axis per nested scanned stack (outermost first), or either per
# subtree ({path regex: axis or axes}); head_dim: an int or {path regex: int}.
ScanAxis = Any
HeadDim = Any


def _role_of(path, leaf, scan_axis, rules, moe_parents, tied_head=False) -> str:
  name = path_str(path)
  shape = jax.numpy.shape(leaf)
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and not jax.numpy.issubdtype(dtype, jax.numpy.inexact):
    raise ValueError(
        f"{name}: a leaf of dtype {dtype} is not a trainable parameter. Label only the "
        "parameters: nnx.state(model, nnx.Param), or variables['params'] in Linen.")
  core, _ = _core_shape(shape, path, scan_axis)
  nd = len(core)
  for pattern, role, axes in rules:
    if pattern.search(name):
      # A rule that names the axes defines the matrices itself (checked by matrix_axes).
      return role if axes is not None else _checked(name, shape, core, role, "your rules")
  keys = path_keys(path)
  if any(_VECTOR_LEAF.search(k.lower()) for k in keys):
    return "vector"  # biases (also bias tables such as T5's relative_attention_bias), sinks
  if nd == 3 and core[1] == 1 and any(_CONV.match(k.lower()) for k in keys):
    return "vector"  # a depthwise conv kernel [taps, 1, channels]: per-channel filters
  found = _builtin_roles(keys, nd, moe_parents)
  if tied_head and found == {"embedding"}:
    found = {"lm_head"}
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
  """Paths (lower case) of every container that holds an ``experts`` key or a router (a key
  with ``router`` in its name: gemma 4's ``mlp/router_logits``), masked or not."""
  out = set()
  for path, _ in _tree_leaves_with_path(params):
    low = [k.lower() for k in path_keys(path)]
    out.update(tuple(low[:i]) for i, k in enumerate(low) if k == "experts" or "router" in k)
  return frozenset(out)


def _tree_leaves_with_path(params):
  """``(path, leaf)`` pairs, ``None`` and optax's masked leaves included."""
  from optax.transforms import MaskedNode
  return jax.tree_util.tree_flatten_with_path(
      params, is_leaf=lambda x: x is None or isinstance(x, MaskedNode))[0]


def _has_head(params, rules, moe_parents) -> bool:
  """Whether the tree has an LM-head leaf of its own (masked branches' leaves included)."""
  for path, leaf in _tree_leaves_with_path(params):
    if any(p.search(path_str(path)) for p, r, _ in rules if r == "lm_head"):
      return True
    if "lm_head" in _builtin_roles(path_keys(path), 2, moe_parents):
      return True
  return False


def _checked(name, shape, core, role, source):
  if role == "vector":
    return role
  low = name.lower().split("/")
  extra = tuple(nd for (n, nd) in _EINSUM if n in low and role.startswith("attn_"))
  if "gating_einsum" in low:
    extra += tuple(nd for nd, roles in _GATING_EINSUM.items() if role in roles)
  if len(core) not in _NDIM[role] + extra:
    raise ValueError(
        f"{name}: {source} make{'s' if source == 'its path' else ''} this leaf {role!r}, but "
        f"its shape {tuple(shape)} has {len(core)} matrix dims where {role!r} needs "
        f"{' or '.join(map(str, _NDIM[role] + extra))}. If it sits in a scanned layer stack pass "
        "scan_axis=; otherwise map it to the right role with rules=[(regex, role)], or name "
        "its matrices with rules=[(regex, role, MatrixAxes(rows=..., cols=...))].")
  return role


def label_roles(params: Any, *, scan_axis: ScanAxis = None,
                rules: Iterable[tuple[str, str]] | None = None,
                head_dim: HeadDim = None, tied_embedding: str = "embedding") -> Any:
  """Labels every leaf of a parameter tree with its role.

  Roles: ``embedding, lm_head, attn_q, attn_k, attn_v, attn_qkv, attn_o, mlp_in, mlp_out,
  router, expert_in, expert_out, matrix, position, vector``.

  Matching is on path words (case-insensitive) and shape. Known names include HF-style
  (``embed_tokens``, ``lm_head``, ``q_proj``..``o_proj``, ``gate_proj/up_proj/down_proj``,
  MoE ``mlp.gate``/``router`` and ``experts.*``), MaxText (``token_embedder``,
  ``logits_dense``, ``query/key/value/out``, ``wi_0/wi_1/wo``, ``MoeBlock_*/gate``) and Flax
  defaults (``Embed_0``, ``embedding``; unknown ``Dense_N/kernel`` become ``matrix``).
  Position and token-type tables (``wpe``, ``embed_positions``, ``position_embeddings``,
  ``pos_embedding``, ``token_type_embeddings``) are role ``position``, not vocabulary
  matrices (AdamW in every preset). MLP projections named ``fc1``/``fc2`` (OPT, directly in
  the layer), ``fc_in``/``fc_out`` (GPT-J) are ``mlp_in``/``mlp_out``; GPT-2's ``c_attn``,
  ``c_fc``, ``c_proj`` too, and :func:`matrix_axes` reads HF Flax's ``FlaxConv1D`` kernels,
  stored ``[out, in]``, from their shapes. DeepMind gemma's einsum kernels: ``q_einsum``
  ``[H, d, hd]`` and ``k_einsum`` ``[Hkv, d, hd]`` (attn_q / attn_k), ``kv_einsum``
  ``[2, Hkv, d, hd]`` (attn_qkv: k and v stacked), ``attn_vec_einsum`` ``[H, hd, d]``
  (attn_o), ``gating_einsum`` ``[2, ff, d]`` (mlp_in, gate and up stacked; its MoE form
  ``[E, 2, ff, d]`` is expert_in), ``linear`` (mlp_out / expert_out), ``router_logits``, and
  the dense branch ``mlp2``. MaxText's other blocks: ``shared_experts`` (a dense SwiGLU,
  mlp_in/mlp_out), ``routed_experts`` and ``GptOssMlp`` (MoE blocks: ``gate`` is the router),
  ``GptOssAttention`` (any module named ``*Attention``), DeepSeek MLA's ``wq_b`` (attn_q) and
  ``wkv_b`` (attn_qkv: k and v per head) with ``wq_a``/``wkv_a`` (the latent
  down-projections) as plain ``matrix``. Depthwise convolution kernels ``[taps, 1, C]``
  (``conv1d``: Qwen3-Next's gated delta net) are per-channel filters: ``vector`` (AdamW).
  Biases, attention sinks and every 0/1-D leaf are ``vector``.

  A tied embedding used as the LM head (the tree has an embedding and no LM-head leaf of its
  own) is one leaf; ``tied_embedding`` picks its role. ``"embedding"`` (default): an
  uncentred vocabulary matrix, because adding ``1 v^T`` to a tied matrix shifts every input
  embedding too, so the softmax shift is not a symmetry of the whole network and centring
  would discard a direction the loss does depend on. ``"lm_head"``: the reference code's
  choice (arXiv:2605.18106 routes a tied weight to its head rule, centred), stored as an
  embedding ``[V, d]`` (rows 0, cols 1).

  Args:
    params: a parameter pytree (NNX ``State`` or pure dict, Linen ``params``, nested dicts).
    scan_axis: for scanned layer stacks (leaves under a ``layers`` key, as MaxText's
      ``decoder/layers``), the axis that indexes layers (MaxText's ``param_scan_axis``); it is
      removed before shapes are checked and becomes a batch axis. Stacks scanned inside
      stacks (Qwen3-Next's ``decoder/layers/local_layers``) have one layer axis per level: an
      int ``a`` places them as nested ``nn.scan(variable_axes={"params": a})`` does
      (``a, a + 1, ...``, outermost first, for ``a >= 0``: MaxText's layout); a tuple names
      them, outermost first; a ``{path regex: int | tuple}`` mapping gives each subtree its
      own (the first regex found in the path wins; other leaves are unscanned).
    rules: ordered ``(regex, role)`` pairs, searched (case-insensitive) in the
      ``/``-joined path, e.g. ``[(r"blocks/\\d+/wqkv", "attn_qkv")]``. The first match wins
      and takes precedence over the built-in patterns. A third item names the leaf's axes,
      ``(regex, role, MatrixAxes)`` or ``(regex, role, shape -> MatrixAxes)``, for layouts
      the built-ins cannot read (e.g. a custom ``[H, d, hd]`` query kernel:
      ``MatrixAxes(rows=2, cols=1)``, every head a matrix); :func:`matrix_axes` and the stack
      then use those axes
      (counted in the leaf's own shape, a scan axis included), checked against the shape.
    head_dim: the size of one attention head, or ``{path regex: size}`` per block; checked
      against every 2-D attention kernel (its heads axis must be a multiple of it). See
      :func:`matrix_axes`.
    tied_embedding: ``"embedding"`` or ``"lm_head"``: the role of an embedding that is also
      the LM head (see above).

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
  if tied_embedding not in TIED_EMBEDDING:
    raise ValueError(f"Unknown tied_embedding {tied_embedding!r}; valid choices are "
                     f"{', '.join(map(repr, TIED_EMBEDDING))}.")
  check_scan_axis(scan_axis)
  compiled = _check_rules(rules)
  moe = _moe_parents(params)
  tied = tied_embedding == "lm_head" and not _has_head(params, compiled, moe)
  roles = jax.tree_util.tree_map_with_path(
      lambda path, leaf: _role_of(path, leaf, scan_axis, compiled, moe, tied), params)
  if head_dim is not None:
    matrix_axes(params, roles=roles, scan_axis=scan_axis, attention="heads",
                head_dim=head_dim)
  return roles


# Core (scan axis removed) (rows, cols, fan_out) per role and core ndim, Flax layouts.
_CORE_AXES = {
    ("embedding", 2): (0, 1, "cols"),    # [V, d]: a lookup, its output is d
    ("position", 2): (0, 1, "cols"),     # [positions, d]: a lookup too
    ("lm_head", 2): (1, 0, "rows"),      # [d, V]
    ("attn_q", 2): (1, 0, "rows"), ("attn_k", 2): (1, 0, "rows"),
    ("attn_v", 2): (1, 0, "rows"), ("attn_qkv", 2): (1, 0, "rows"),   # [d, (H hd)]
    ("attn_q", 3): (2, 0, "rows"), ("attn_k", 3): (2, 0, "rows"),
    ("attn_v", 3): (2, 0, "rows"), ("attn_qkv", 3): (2, 0, "rows"),   # [d, H, hd]
    ("attn_o", 2): (1, 0, "rows"),       # [(H hd), d]
    ("attn_o", 3): (2, 1, "rows"),       # [H, hd, d]
    ("mlp_in", 2): (1, 0, "rows"),       # [d, ff]: rows are the hidden neurons
    ("mlp_out", 2): (0, 1, "cols"),      # [ff, d]: rows are the neurons, the output is d
    ("router", 2): (1, 0, "rows"),       # [d, E]: rows are the experts
    ("expert_in", 3): (2, 1, "rows"),    # [E, d, ff]
    ("expert_out", 3): (1, 2, "cols"),   # [E, ff, d]
    ("expert_in", 2): (1, 0, "rows"),    # one expert's [d, ff] (unstacked experts/0/...)
    ("expert_out", 2): (0, 1, "cols"),   # [ff, d]
    ("matrix", 2): (1, 0, "rows"),       # Flax Dense [in, out]
}
# Attention kernels read as a whole [d, H hd] matrix (attention="whole") when stored 3-D.
_WHOLE_3D = {"attn_q": ((1, 2), 0), "attn_k": ((1, 2), 0), "attn_v": ((1, 2), 0),
             "attn_qkv": ((1, 2), 0), "attn_o": (2, (0, 1))}
# 2-D attention kernels read head by head: (core axis holding H hd, rows, cols) in the view
# where that axis is split into [H, hd].
_HEADS_2D = {"attn_q": (1, 2, 0), "attn_k": (1, 2, 0), "attn_v": (1, 2, 0),
             "attn_qkv": (1, 2, 0), "attn_o": (0, 2, 1)}
# The same for Conv1D kernels stored [out, in]: q/k/v [(H hd), d], o [d, (H hd)].
_HEADS_2D_T = {"attn_q": (0, 1, 2), "attn_k": (0, 1, 2), "attn_v": (0, 1, 2),
               "attn_qkv": (0, 1, 2), "attn_o": (1, 0, 2)}
ATTENTION = ("heads", "whole")
GATE_UP = ("interleaved", "concatenated")
_MLA_LATENT = re.compile(r"^(wq_a|wkv_a|q_a_proj|kv_a_proj\w*)$")
_QK_NORM = re.compile(r"^_?(q|k|query|key)_?(norm|layernorm|layer_norm|ln)$")


def head_dims(params: Any, *, scan_axis: ScanAxis = None) -> dict[tuple[str, ...], int]:
  """Head sizes read off query/key norm scales (``q_norm``, ``k_norm``, ``query_norm``,
  ``key_norm``: one gain per head dimension), keyed by the attention block's path (lower
  case) that holds them. In a multi-head latent attention block (DeepSeek's MLA: it holds
  ``wq_a``/``wkv_a`` or ``q_a_proj``/``kv_a_proj*``) ``q_norm`` normalises the query latent,
  not one head, and is not read."""
  found: dict[tuple[str, ...], set[int]] = {}
  mla = set()
  leaves = _tree_leaves_with_path(params)
  for path, _ in leaves:
    low = [k.lower() for k in path_keys(path)]
    mla.update(tuple(low[:i]) for i, k in enumerate(low) if _MLA_LATENT.match(k))
  for path, leaf in leaves:
    low = [k.lower() for k in path_keys(path)]
    i = next((i for i, k in enumerate(low) if _QK_NORM.match(k)), None)
    if i is None or not hasattr(leaf, "shape") or tuple(low[:i]) in mla:
      continue
    core, _ = _core_shape(jax.numpy.shape(leaf), path, scan_axis)
    if len(core) == 1:
      found.setdefault(tuple(low[:i]), set()).add(core[0])
  out = {}
  for block, sizes in found.items():
    if len(sizes) > 1:
      raise ValueError(
          f"{'/'.join(block)}: query/key norm scales of sizes {sorted(sizes)} disagree on the "
          "head size; pass head_dim= explicitly.")
    out[block] = sizes.pop()
  return out


def _attention_block(path) -> tuple[str, ...]:
  low = [k.lower() for k in path_keys(path)]
  i = max((i for i, k in enumerate(low) if _is_attn(k)), default=len(low) - 3)
  return tuple(low[:i + 1])


def _model_width(params, scan_axis) -> int | None:
  """The model width d: the embedding's ``[V, d]`` second axis (None if not one width)."""
  widths = set()
  for path, leaf in _tree_leaves_with_path(params):
    if hasattr(leaf, "shape") and "embedding" in _builtin_roles(path_keys(path), 2,
                                                                  frozenset()):
      core, _ = _core_shape(leaf.shape, path, scan_axis)
      if len(core) == 2:
        widths.add(core[1])
  return widths.pop() if len(widths) == 1 else None


# DeepMind gemma's einsum kernels, by name and core ndim: (rows, cols) with attention
# "heads" and "whole". Heads and the stacked k/v axis are batch axes.
_EINSUM = {
    ("q_einsum", 3): ((2, 1), ((0, 2), 1)),         # [H, d, hd]
    ("k_einsum", 3): ((2, 1), ((0, 2), 1)),         # Gemma 4's k=v kernel [Hkv, d, hd]
    ("kv_einsum", 4): ((3, 2), ((1, 3), 2)),        # [2, Hkv, d, hd]: k and v stacked
}
# gating_einsum: gate and up stacked on the axis before the matrix, [2, ff, d] (gemma 3's
# transpose_gating_einsum) or [2, d, ff]; experts [E, 2, ff, d] (gemma 4's MoE under mlp).
_GATING_EINSUM = {3: ("mlp_in",), 4: ("expert_in",)}


def _named_layout(path, core, role, attention, width):
  """(rows, cols) in core axes for gemma's einsum kernels, or None for other leaves."""
  low = [k.lower() for k in path_keys(path)]
  for (name, nd), (heads, whole) in _EINSUM.items():
    if name in low and len(core) == nd and role.startswith("attn_"):
      return heads if attention == "heads" else whole
  if "gating_einsum" in low and role in _GATING_EINSUM.get(len(core), ()):
    ff_d, d_ff = core[-1] == width, core[-2] == width
    if width is None or ff_d == d_ff:
      raise ValueError(
          f"{path_str(path)}: a stacked gate/up kernel of shape {tuple(core)} whose d axis "
          f"cannot be told from the model width ({width}, read from the embedding): name its "
          "axes with rules=[(regex, role, MatrixAxes(rows=<ff axis>, cols=<d axis>))].")
    n = len(core)
    return (n - 2, n - 1) if ff_d else (n - 1, n - 2)
  return None


def _conv1d_layout(params, roles, scan_axis) -> bool:
  """Whether the tree's GPT-2-style ``c_attn``/``c_fc``/``c_proj`` kernels are stored
  ``[out, in]`` (HF Flax's ``FlaxConv1D``) rather than as Flax Dense ``[in, out]`` kernels
  (nanoGPT-style ports use the same names). The names cannot tell; the shapes can, given
  the model width d (an embedding's ``[V, d]``): ``c_attn`` ``[3 d, d]`` and ``c_fc``
  ``[ff, d]`` are ``[out, in]``."""
  flat = [(p, x) for p, x in _tree_leaves_with_path(params) if hasattr(x, "shape")]
  role_of = {path_str(p): r for p, r in jax.tree_util.tree_flatten_with_path(roles)[0]}
  d = _model_width(params, scan_axis)
  if d is None:
    return False
  votes = {}
  for path, leaf in flat:
    low = [k.lower() for k in path_keys(path)]
    core, _ = _core_shape(leaf.shape, path, scan_axis)
    if (role_of.get(path_str(path)) in ("attn_qkv", "mlp_in") and len(core) == 2
        and any(k in ("c_attn", "c_fc") for k in low) and core[0] != core[1]):
      votes.setdefault(core[1] == d, path_str(path))
  if len(votes) > 1:
    raise ValueError(
        f"{votes[True]} is stored [out, in] (HF Flax Conv1D) but {votes[False]} [in, out] "
        "(Flax Dense); name their axes yourself: matrix_axes(...) per leaf, or rules.")
  return True in votes


def _axes_of(path, leaf, role, scan_axis, attention="whole", head_dim=None, gate_up=None,
             pair=True, transposed=False, width=None):
  if role == "vector":
    return None
  shape = tuple(jax.numpy.shape(leaf))
  core, scans = _core_shape(shape, path, scan_axis)
  named = _named_layout(path, core, role, attention, width)
  if named is not None:
    rows, cols = named
    return MatrixAxes(rows=_lift(rows, scans, len(shape)), cols=_lift(cols, scans, len(shape)),
                      layers=scans)
  key = (role, len(core))
  if role == "lm_head" and "embedding" in _builtin_roles(path_keys(path), 2, frozenset()):
    key = ("embedding", 2)  # a tied embedding serving as the head: stored [V, d]
  if key not in _CORE_AXES:
    raise ValueError(f"{path_str(path)}: role {role!r} does not fit a leaf of shape "
                     f"{shape}.")
  rows, cols, fan_out = _CORE_AXES[key]
  if transposed:  # a Conv1D kernel [out, in]: the Dense layout's axes swapped
    rows, cols = 1 - rows, 1 - cols
  if role == "lm_head":
    fan_out = "rows"  # the vocabulary logits, also for a tied embedding stored [V, d]
  split = None  # (core axis, inner size)
  if role in _HEADS_2D:
    if attention == "whole" and len(core) == 3:
      rows, cols = _WHOLE_3D[role]
    elif attention == "heads" and len(core) == 2:
      if head_dim is None:
        raise ValueError(
            f"{path_str(path)}: attention='heads' orthogonalises attention head by head (as "
            "the paper's reference does), but this 2-D kernel's head size is unknown: the "
            "model has no q_norm/k_norm scale to read it from. Pass head_dim=<size of one "
            "head>, or attention='whole' to orthogonalise the whole matrix.")
      axis, rows, cols = (_HEADS_2D_T if transposed else _HEADS_2D)[role]
      split = (axis, head_dim)
  elif gate_up is not None and role in ("mlp_in", "expert_in") and any(
      "gate_up" in k.lower() for k in path_keys(path)):
    axis = rows  # the fused 2 ff axis
    n = core[axis]
    if n % 2:
      raise ValueError(f"{path_str(path)}: gate_up={gate_up!r} needs an even fused gate/up "
                       f"axis, got {n} (shape {shape}).")
    # View the fused axis as [ff, 2] (interleaved) or [2, ff] (concatenated); the neuron
    # axis is the row, the gate/up pair axis joins the columns (pair=True: both halves of
    # neuron j form one row) or is a batch axis (pair=False: gate and up are two matrices).
    split = (axis, 2 if gate_up == "interleaved" else n // 2)
    neuron, pair_ax = (axis, axis + 1) if gate_up == "interleaved" else (axis + 1, axis)
    shift = lambda a: a + 1 if a > axis else a
    rows = neuron
    cols = (shift(cols), pair_ax) if pair else shift(cols)
  nd = len(shape)
  if split is None:
    return MatrixAxes(rows=_lift(rows, scans, nd), cols=_lift(cols, scans, nd),
                      fan_out=fan_out, layers=scans)
  c, inner = split
  orig = _lift(c, scans, nd)  # the split axis in the leaf; the view has one axis more
  view_scans = tuple(a if a < orig else a + 1 for a in scans)
  axes = MatrixAxes(rows=_lift(rows, view_scans, nd + 1), cols=_lift(cols, view_scans, nd + 1),
                    fan_out=fan_out, split=((orig, inner),), layers=view_scans)
  layout(shape, axes, path_str(path))  # a head size that does not divide raises here
  return axes


def _check_head_dim(head_dim) -> None:
  values = head_dim.values() if isinstance(head_dim, Mapping) else [head_dim]
  if head_dim is None or (all(_is_axis(v) and v > 0 for v in values) and all(
      isinstance(k, str) for k in (head_dim if isinstance(head_dim, Mapping) else ()))):
    return
  raise ValueError(f"head_dim must be a positive int or a {{path regex: positive int}} "
                   f"mapping, got {head_dim!r}.")


def _head_dim_for(path, head_dim) -> int | None:
  """``head_dim`` for this leaf: the int, or the value of the first regex found in its path."""
  if isinstance(head_dim, Mapping):
    name = path_str(path)
    return next((v for k, v in head_dim.items() if re.search(k, name, re.IGNORECASE)), None)
  return head_dim


def matrix_axes(params: Any, *, roles: Any = None, scan_axis: ScanAxis = None,
                rules: Iterable[tuple[str, str]] | None = None, attention: str = "heads",
                head_dim: HeadDim = None, gate_up: str | None = None,
                tied_embedding: str = "embedding", gate_up_pairs: bool = True) -> Any:
  """Rows/cols axes of every leaf from its role and layout (``None`` for vectors).

  Kernels are read in Flax's Dense layout ``[in, out]``, except GPT-2-style ``c_attn``,
  ``c_fc``, ``c_proj`` kernels when their shapes show HF Flax's ``FlaxConv1D`` storage
  ``[out, in]`` (``c_attn`` ``[3 d, d]`` against the embedding's width d; a nanoGPT-style
  port with the same names and Dense kernels keeps the Dense reading).

  Layer axes (``scan_axis``) and expert axes become batch axes, so each layer / expert is its
  own matrix; the layer axes are recorded as :attr:`MatrixAxes.layers`. Each leaf's output
  side (:attr:`MatrixAxes.fan_out`) follows its role: the rows, except for SwiGLU down
  projections and expert outputs ``[ff, d]`` and embeddings ``[V, d]``, whose output is d.

  Attention (roles ``attn_*``):

  * ``attention="heads"`` (default): one matrix per head, as the paper's reference does
    (q/k/v as ``[H, hd, d]``, o as ``[H, d, hd]`` in its PyTorch layout). 3-D kernels
    (MaxText ``[d, H, hd]``, ``[H, hd, d]``) have a heads axis already; a 2-D kernel
    (HF/NNX ``[d, H hd]``, ``[H hd, d]``) is viewed as heads inside the step
    (:attr:`MatrixAxes.split`), so both layouts get the same matrices. The head size is
    ``head_dim`` or, when not given, read from the attention block's ``q_norm``/``k_norm``
    scales; a 2-D kernel whose head size is neither raises (naming it).
  * ``attention="whole"``: one matrix ``[d, H hd]`` per kernel, 2-D or 3-D (what
    ``optax.contrib.muon`` with MaxText's dimension numbers does).

  Args:
    params: a parameter pytree.
    roles: a pytree of role strings (from :func:`label_roles`), or None to label here.
    scan_axis: the layer axis of scanned stacks (see :func:`label_roles`).
    rules: passed to :func:`label_roles` when ``roles`` is None; a rule's axes (its third
      item) win over the built-in reading either way.
    attention: ``"heads"`` or ``"whole"`` (above).
    head_dim: the size of one attention head, for 2-D kernels under ``attention="heads"``,
      or ``{path regex: size}`` when blocks differ (Qwen3-Next's gated delta net heads are
      not its attention heads); default, and for blocks no regex names: read from the
      block's ``q_norm``/``k_norm`` scales.
    gate_up: the layout of fused SwiGLU gate/up leaves (paths with ``gate_up``, e.g.
      ``gate_up_proj`` ``[d, 2 ff]`` or experts ``[E, d, 2 ff]``): ``None`` (each of the
      2 ff outputs is its own row), ``"interleaved"`` (gate_j, up_j adjacent, gpt-oss) or
      ``"concatenated"`` (all gates, then all ups). With a layout, neuron j's gate and up
      weights form one row ``[gate_j, up_j]``: the neuron pair is what a permutation moves.
    tied_embedding: passed to :func:`label_roles` when ``roles`` is None.
    gate_up_pairs: with ``gate_up``, ``True`` reads each neuron pair as one row (for the
      row-based rules); ``False`` reads the gate and the up halves as two matrices (Muon's
      convention in the reference, where each is orthogonalised on its own).

  Returns:
    A pytree of :class:`symoptax.MatrixAxes` or ``None`` with the structure of ``params``.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> params = {"attn": {"q_proj": {"kernel": jnp.zeros((32, 4 * 8))}}}
    >>> symoptax.matrix_axes(params, head_dim=8)["attn"]["q_proj"]["kernel"]
    MatrixAxes(rows=2, cols=0, split=((1, 8),))
    >>> symoptax.matrix_axes(params, attention="whole")["attn"]["q_proj"]["kernel"]
    MatrixAxes(rows=1, cols=0)
  """
  if attention not in ATTENTION:
    raise ValueError(f"Unknown attention {attention!r}; valid choices are "
                     f"{', '.join(map(repr, ATTENTION))}.")
  if gate_up is not None and gate_up not in GATE_UP:
    raise ValueError(f"Unknown gate_up {gate_up!r}; valid choices are None, "
                     f"{', '.join(map(repr, GATE_UP))}.")
  _check_head_dim(head_dim)
  check_scan_axis(scan_axis)
  if roles is None:
    roles = label_roles(params, scan_axis=scan_axis, rules=rules,
                        tied_embedding=tied_embedding)
  compiled = _check_rules(rules)
  inferred = head_dims(params, scan_axis=scan_axis) if attention == "heads" else {}
  conv1d = _conv1d_layout(params, roles, scan_axis)
  width = _model_width(params, scan_axis)

  def one(path, leaf, role):
    if role != "vector" and compiled:
      given = _rule_axes(path, leaf, compiled)
      if given is not None:
        return given
    hd = _head_dim_for(path, head_dim)
    hd = hd if hd is not None else inferred.get(_attention_block(path))
    transposed = conv1d and any(k.lower() in _CONV1D for k in path_keys(path)) and len(
        _core_shape(jax.numpy.shape(leaf), path, scan_axis)[0]) == 2
    return _axes_of(path, leaf, role, scan_axis, attention, hd, gate_up, gate_up_pairs,
                    transposed, width)

  return jax.tree_util.tree_map_with_path(one, params, roles)
