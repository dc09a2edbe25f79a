r"""Per-step, per-role quantities to log while training with a symmetry stack.

:func:`update_stats` reads an optimizer step's ``updates`` (as ``optax`` returns them, the
learning rate included) next to the ``params`` they apply to, groups the leaves by role
(:func:`symoptax.label_roles`) and returns a flat ``{"<role>/<name>": scalar}`` dict, ready
for a metrics logger:

* ``update_rms``: the RMS of the update's entries, over the role's leaves;
* ``update_rel``: :math:`\|\Delta W\|_F / \|W\|_F` over the role's leaves;
* ``update_op``: the largest spectral norm :math:`\|\Delta W\|_{op}` among the role's
  matrices (:func:`symoptax.transforms.spectral_norm`'s estimate; matrices as
  :func:`symoptax.matrix_axes` reads them, or as ``axes=`` says);
* for LM heads and routers (softmax-facing, whose logits are unchanged when the same vector
  is added to every row): ``mean_row``, :math:`\|\tfrac1V \sum_i W_i\|` (the weights' position
  along that shift direction; the largest over a leaf's matrices), and ``mean_row_step``,
  the same of the update. The gradient has no component along it (softmax gradients sum to
  zero over the vocabulary), so whatever moves ``mean_row`` comes from the optimizer's
  nonlinearity; centring (``center=True``: the row-norm, one-sided polar and hybrid rules on
  heads and routers) keeps ``mean_row_step`` at zero.
* ``max_logit`` when ``logits`` (or a precomputed ``max_logit``) is given.

Everything is computed with ``jax.numpy`` (jit it with the step). The spectral estimates cost
a few products of each matrix's smaller Gram: log them every few steps, not every step, on
large models.

References:
  arXiv:2605.18106 (symmetry-compatible optimizers; the head's shift symmetry and final-logit
  growth), 2026; Yang, Simon & Bernstein, "A Spectral Condition for Feature Learning",
  arXiv:2310.17813, 2023 (update spectral norms).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from symoptax.axes import AxesLike, flatten_with_layouts, resolve_axes, to_batched
from symoptax.roles import label_roles, matrix_axes
from symoptax.transforms import spectral_norm

SOFTMAX_ROLES = ("lm_head", "router")
STATS = ("update_rms", "update_rel", "update_op", "mean_row", "mean_row_step")


def update_stats(updates: Any, params: Any, *, roles: Any = None, axes: AxesLike = None,
                 logits: jax.Array | None = None, max_logit: jax.Array | None = None,
                 spectral: bool = True, **label_kw) -> dict[str, jax.Array]:
  r"""Per-role statistics of one optimizer step (see the module docstring).

  Args:
    updates: the step's updates (``tx.update``'s first output).
    params: the parameters the updates apply to (before the step).
    roles: a pytree of role strings like ``params``; default :func:`symoptax.label_roles`.
    axes: the matrices' axes (a pytree like ``params``, a callable or ``None``); default
      :func:`symoptax.matrix_axes` with ``attention="whole"``.
    logits: optional logits of the step's batch: adds ``max_logit``.
    max_logit: optional precomputed largest logit (instead of ``logits``).
    spectral: include ``update_op`` (the only statistic that costs matrix products).
    **label_kw: passed to :func:`symoptax.label_roles` and :func:`symoptax.matrix_axes`
      (``scan_axis``, ``rules``, ``head_dim``, ...).

  Returns:
    ``{"<role>/<stat>": float32 scalar}`` for the roles present, plus ``"max_logit"``.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> params = {"lm_head": {"kernel": jnp.ones((4, 16))}}
    >>> updates = {"lm_head": {"kernel": jnp.full((4, 16), 0.01)}}
    >>> stats = symoptax.diagnostics.update_stats(updates, params)
    >>> round(float(stats["lm_head/update_rel"]), 4), round(float(stats["lm_head/mean_row"]), 4)
    (0.01, 2.0)
  """
  if roles is None:
    roles = label_roles(params, **{k: v for k, v in label_kw.items()
                                   if k in ("scan_axis", "rules", "tied_embedding")})
  if axes is None:
    axes_tree = matrix_axes(params, roles=roles, attention=label_kw.pop("attention", "whole"),
                            **label_kw)
  else:
    axes_tree = resolve_axes(axes, params)
  u_leaves, treedef, lays = flatten_with_layouts(updates, axes_tree)
  p_leaves = treedef.flatten_up_to(params)
  r_leaves = treedef.flatten_up_to(roles)
  acc: dict[str, dict[str, list]] = {}
  for u, p, role, lay in zip(u_leaves, p_leaves, r_leaves, lays):
    a = acc.setdefault(role, {"sq_u": [], "sq_p": [], "n": [], "op": [], "mean": [],
                              "mean_step": []})
    u32, p32 = jnp.asarray(u, jnp.float32), jnp.asarray(p, jnp.float32)
    a["sq_u"].append(jnp.sum(u32 * u32))
    a["sq_p"].append(jnp.sum(p32 * p32))
    a["n"].append(u32.size)
    if lay is None or u32.size == 0:
      continue
    ub, pb = to_batched(u32, lay), to_batched(p32, lay)
    if spectral:
      a["op"].append(jnp.max(spectral_norm(ub)))
    if role in SOFTMAX_ROLES:
      mean_norm = lambda x: jnp.max(jnp.linalg.norm(jnp.mean(x, axis=-2), axis=-1))
      a["mean"].append(mean_norm(pb))
      a["mean_step"].append(mean_norm(ub))
  out = {}
  for role, a in acc.items():
    n = max(sum(a["n"]), 1)
    sq_u, sq_p = sum(a["sq_u"]), sum(a["sq_p"])
    out[f"{role}/update_rms"] = jnp.sqrt(sq_u / n)
    out[f"{role}/update_rel"] = jnp.sqrt(sq_u) / jnp.maximum(jnp.sqrt(sq_p), 1e-30)
    if a["op"]:
      out[f"{role}/update_op"] = jnp.max(jnp.stack(a["op"]))
    if a["mean"]:
      out[f"{role}/mean_row"] = jnp.max(jnp.stack(a["mean"]))
      out[f"{role}/mean_row_step"] = jnp.max(jnp.stack(a["mean_step"]))
  if logits is not None:
    max_logit = jnp.max(logits)
  if max_logit is not None:
    out["max_logit"] = jnp.asarray(max_logit, jnp.float32)
  return out
