"""MuonClip's QK-clip: a whole-model transform that rescales query and key weights.

Unlike the per-matrix primitives of :mod:`symoptax.transforms`, QK-clip needs to know which
leaves are queries and which are keys, so it sits above :mod:`symoptax.roles`:
:func:`qk_labels` reads them off the roles, and :func:`qk_clip` takes any labelling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from symoptax.axes import path_str
from symoptax.roles import label_roles

_QK = {"attn_q": "q", "attn_k": "k"}


def qk_labels(params: Any, **label_kw: Any) -> Any:
  """``"q"``, ``"k"`` or ``None`` per leaf: the query and key kernels by role
  (:func:`symoptax.label_roles` with ``label_kw``: ``scan_axis``, ``rules``, ...)."""
  return jax.tree.map(_QK.get, label_roles(params, **label_kw))


def qk_clip(threshold: float = 100.0, *, alpha: float = 0.5, labels: Any = None,
            head_axis: int = -1, head_dim: int | None = None
            ) -> optax.GradientTransformationExtraArgs:
  r"""MuonClip's QK-clip: shrinks query/key weights whose attention logits grew too large.

  For every query (key) leaf whose layer -- or head -- reached a maximum pre-softmax attention
  logit :math:`S > \tau` in this step's forward pass, the updated weights are rescaled:

  .. math::
    \gamma = \tau / S,\qquad W_q \leftarrow \gamma^{\alpha} (W_q + u_q),\qquad
    W_k \leftarrow \gamma^{1-\alpha} (W_k + u_k)

  so the logits ``q . k`` of that head shrink by :math:`\gamma` -- in models whose attention
  uses the projections directly. With QK-norm (Qwen3, Gemma3: RMSNorm on q and k after the
  projections) rescaling the weights does not change the logits; QK-clip is for models
  without it (Kimi K2's MLA, GPT-style attention). Leaves with
  :math:`S \le \tau` and all other leaves keep their update. Put it last in a chain (after
  the learning rate): it returns the update that lands on the rescaled weights. A per-layer
  (or per-head) scalar scaling commutes with orthogonal maps of rows and columns.

  The step needs the max logits as an extra argument:
  ``tx.update(grads, state, params, max_logits=tree)``, where ``tree`` has the structure of
  ``params`` with, at each query/key leaf, a scalar (per layer) or a ``[heads]`` vector (per
  head) and ``None`` elsewhere. Compute them in the forward pass -- the max over batch,
  query and key positions of each head's logits, under ``jax.lax.stop_gradient`` -- and
  return them as an auxiliary output (``jax.value_and_grad(..., has_aux=True)``), e.g. with
  ``Module.sow`` and ``nnx.capture``; the example models sow them with
  ``track_max_logit=True`` (see ``tests/test_variants.py`` for the whole step).

  Args:
    threshold: :math:`\tau`.
    alpha: the query's share of the rescaling (0.5 splits it evenly, as in Kimi K2).
    labels: pytree (or callable ``params -> pytree``) of ``"q"``, ``"k"`` or ``None`` per
      leaf; default: :func:`qk_labels` (roles ``attn_q`` and ``attn_k`` from
      :func:`symoptax.label_roles`).
    head_axis: the axis of a query/key leaf that holds the heads for per-head clipping:
      either ``heads`` long, or ``heads x head_dim`` with each head's block contiguous (as
      ``reshape(..., heads, head_dim)`` reads an NNX/HF ``q_proj`` kernel's last axis). With
      grouped-query attention the key leaf has ``kv_heads`` heads: give it one value per
      key/value head (e.g. the max over its group of query heads).
    head_dim: if given, per-head values must match ``size // head_dim`` heads on every
      leaf (catches a per-query-head vector given to a grouped key leaf).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (stateless).

  References:
    Kimi Team, "Kimi K2: Open Agentic Intelligence", arXiv:2507.20534, 2025 (MuonClip).
  """
  def labels_of(params):
    if labels is None:
      return qk_labels(params)
    return labels(params) if callable(labels) else labels

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, max_logits=None, **extra):
    del extra
    if max_logits is None:
      return updates, state
    if params is None:
      raise ValueError("qk_clip needs params in update() to rescale the weights.")
    keyed = lambda tree: dict(jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: x is None)[0])
    kinds, logits, weights = keyed(labels_of(params)), keyed(max_logits), keyed(params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    out = []
    for path, u in flat:
      kind, s = kinds.get(path), logits.get(path)
      if s is not None and kind not in ("q", "k"):
        raise ValueError(f"qk_clip: max_logits has a value at {path_str(path)}, which is not "
                         "labelled a query or key leaf (roles attn_q/attn_k); pass "
                         "labels= (a tree of 'q', 'k' or None) or fix the max_logits tree.")
      if s is None:
        out.append(u)
        continue
      w = weights[path]
      s = jnp.asarray(s, jnp.float32)
      gamma = jnp.minimum(1.0, threshold / jnp.maximum(s, jnp.finfo(jnp.float32).tiny))
      scale = gamma ** (alpha if kind == "q" else 1.0 - alpha)
      if scale.ndim == 1:  # per head
        axis = head_axis % w.ndim
        size, heads = w.shape[axis], scale.shape[0]
        if head_dim is not None and size != heads * head_dim and size != heads:
          raise ValueError(f"qk_clip: {path_str(path)} has {size // head_dim} heads of "
                           f"{head_dim} along head_axis {head_axis}, but max_logits gives "
                           f"{heads}; with grouped-query attention give key leaves one value "
                           "per key/value head.")
        if size % heads:
          raise ValueError(f"qk_clip: {path_str(path)} has {size} entries along head_axis "
                           f"{head_axis}, not a multiple of the {heads} heads in max_logits; "
                           "set head_axis to the leaf's head axis.")
        scale = jnp.repeat(scale, size // heads)
        scale = scale.reshape([-1 if i == axis else 1 for i in range(w.ndim)])
      elif scale.ndim != 0:
        raise ValueError(f"qk_clip: max_logits at {path_str(path)} has shape {scale.shape}; "
                         "expected a scalar (per layer) or [heads] (per head).")
      # gamma (W + u) - W, written so that an unclipped head keeps its update bit for bit.
      uf = u.astype(jnp.float32)
      out.append((uf + (scale - 1.0) * (w.astype(jnp.float32) + uf)).astype(u.dtype))
    return treedef.unflatten(out), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
