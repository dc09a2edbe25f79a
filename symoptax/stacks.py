"""One optimizer for a whole model: each leaf gets the rule of its role.

:func:`symmetry_stack` labels the leaves (:func:`symoptax.label_roles`), picks a rule per
role from a preset, and combines them with ``optax.multi_transform``. :func:`describe` shows
what each leaf gets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import optax
from optax.transforms import MaskedNode

from symoptax import aliases
from symoptax import sharding as sharding_lib
from symoptax import variants
from symoptax.axes import MatrixAxes, layout
from symoptax.roles import ROLES, HeadDim, ScanAxis, label_roles, matrix_axes, path_str
from symoptax.transforms import NU_SCOPES, SCALES, shape_factor

# Each rule is a named optimizer (optax.adamw for "adamw"): the paper's four go by short
# names in the stack (their function names are accepted as well, RULE_FUNCTIONS), the others
# by their own, the literature's variants (symoptax.variants) among them.
_OPTIMIZERS = {"muon": aliases.muon, "rownorm": aliases.rownorm_m,
               "right_polar": aliases.right_polargrad_m, "left_polar": aliases.left_polargrad_m,
               "hybrid": aliases.hybrid_polargrad_m, "polargrad": aliases.polargrad,
               **variants.OPTIMIZERS}
RULES = ("adamw",) + tuple(_OPTIMIZERS)
RULE_FUNCTIONS = {"rownorm_m": "rownorm", "right_polargrad_m": "right_polar",
                  "left_polargrad_m": "left_polar", "hybrid_polargrad_m": "hybrid"}
_SOFTMAX_ROLES = ("lm_head", "router")
# Roles of the hidden (bi-orthogonal) matrices: Muon in every preset but "adamw".
HIDDEN_ROLES = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o", "mlp_in", "mlp_out", "matrix")
# The attention roles whose leaves form the circuits Q K^T and V O (Compositional Muon's).
ATTENTION_ROLES = ("attn_q", "attn_k", "attn_v", "attn_o")
_EXPERTS = ("expert_in", "expert_out")


def _preset(vocab: str, router: str, experts: str, embedding: str | None = None):
  table = {r: "muon" for r in HIDDEN_ROLES}
  # Position (and token-type) tables: AdamW in every preset, as common practice does.
  table.update(embedding=embedding or vocab, lm_head=vocab, router=router, vector="adamw",
               position="adamw")
  table.update({r: experts for r in _EXPERTS})
  return table


# Preset "paper" is the reference code's library builder (arXiv:2605.18106): right polar on
# the embedding, hybrid on the head, left polar on the router, Muon on attention and dense
# MLPs, row-norm on experts. "muon" is today's common practice (AdamW on vocabulary
# matrices and routers, Muon elsewhere).
PRESETS: dict[str, dict[str, str]] = {
    "paper": _preset("hybrid", "left_polar", "rownorm", embedding="right_polar"),
    "rownorm": _preset("rownorm", "rownorm", "rownorm"),
    "hybrid": _preset("hybrid", "hybrid", "hybrid"),
    "muon": _preset("adamw", "adamw", "muon"),
    "adamw": {r: "adamw" for r in ROLES},
}
# The default preset: the best on the quality benchmark (README "Results": ahead of a Muon +
# AdamW tuned on every knob at both widths, at `tiny` by less than two seed standard
# deviations; its ratios: PRESET_LR_RATIO). "paper" reproduces the reference.
DEFAULT_PRESET = "hybrid"

# Per-preset defaults of the stack's layout options. "paper" follows the reference code:
# attention head by head, one nu over a stacked-experts tensor. The others follow
# optax.contrib.muon with MaxText's dimension numbers: whole attention matrices, one nu per
# matrix.
# ``scale``: the update-size convention of the matrix rules (None: each rule's own formula).
PRESET_OPTIONS: dict[str, dict[str, Any]] = {
    "paper": dict(attention="heads", nu_scope="leaf", scale=None),
    "rownorm": dict(attention="whole", nu_scope="matrix", scale=None),
    "hybrid": dict(attention="whole", nu_scope="matrix", scale=None),
    "muon": dict(attention="whole", nu_scope="matrix", scale=None),
    "adamw": dict(attention="whole", nu_scope="matrix", scale=None),
}
# Rules that read a fused gate/up leaf's neuron pair as one row (their symmetry permutes
# neurons); the others (Muon and its bi-orthogonal kin) orthogonalise gate and up apart, as
# the reference's Muon does.
_PAIRED_RULES = ("rownorm", "right_polar", "left_polar", "hybrid", "rmnp", "normuon", "muoneq")
# Rules that couple leaves: Compositional Muon steps each query with its key and each value
# with its output projection (the stack passes them the roles and head-wise axes).
_PAIRED_ATTENTION_RULES = ("compositional_muon",)
# Rules whose update carries Muon's shape factor (scale_by_shape, shape_rule="muon").
_SHAPED_RULES = ("muon", "normuon", "muoneq", "aurora", "pion", "auon", "hybrid_auon",
                 "muonq", "fismo")
_NU_RULES = ("right_polar", "left_polar", "hybrid", "polargrad")
# The rules a stack's ``scale`` reaches: nu-scaled ones take every convention, row-norm takes
# "rms" and "spectral", Muon and its polar-factor variants take those two as ``shape_rule``.
_ROW_RULES = ("rownorm",)
# Rules that can centre rows (LM heads and routers get it by default).
_CENTRED_RULES = _ROW_RULES + _NU_RULES

# Learning rate of each rule relative to ``learning_rate`` (the Muon rate). AdamW 0.25 and
# the router 0.625 are the reference builder's lr_other / lr_matrix (2e-4 / 8e-4) and
# lr_router / lr_matrix (5e-4 / 8e-4). nu-scaled rules (right/left polar, hybrid,
# polargrad) step by lr * ||X||_*, which is large for vocabulary matrices, so their ratios
# are small; the row-norm and nu-scaled ratios were tuned on examples/quickstart.py (see
# its sweep), whose best rates were row-norm 0.1 / 3e-3 (embedding / head), right polar
# 0.1 and hybrid 3e-4 against Muon 0.02.
LR_RATIO: dict[tuple[str, str], float] = {
    ("adamw", "*"): 0.25,
    ("muon", "*"): 1.0, ("normuon", "*"): 1.0, ("muoneq", "*"): 1.0,
    ("spectral_clip", "*"): 1.0, ("namo", "*"): 1.0, ("namo_d", "*"): 1.0,
    ("aurora", "*"): 1.0, ("pion", "*"): 1.0,
    # Conda, FISMO, COSMOS: the best of their own rate sweeps on the quality benchmark (tiny,
    # 300 steps, seed 0, AdamW groups at Muon's tuned rates; README "Conda, FISMO and COSMOS
    # against Muon"), relative to Muon's tuned 0.02: Conda 0.01 (0.005 / 0.01 / 0.02 gave
    # 4.623 / 4.610 / 4.669), FISMO 0.01 (0.005 / 0.01 / 0.02: 4.528 / 4.473 / 4.504),
    # COSMOS 0.001 (0.0005 / 0.001 / 0.002: 4.501 / 4.465 / 4.501; its update has per-entry
    # RMS 1, Adam-like).
    ("conda", "*"): 0.5, ("fismo", "*"): 0.5, ("cosmos", "*"): 0.05,
    # Compositional Muon on the attention roles, Muon at 0.02 on the MLP: its attention rate
    # swept on seed 0 (README "Compositional Muon against Muon"): 0.0067 / 0.02 / 0.06 / 0.18
    # gave 4.672 / 4.554 / 4.483 / 4.546 (a head's step is half its partner's inverse root:
    # 3x Muon's rate).
    ("compositional_muon", "*"): 3.0,
    # RMNP's row-normalised update has Muon's Frobenius norm (sqrt(rows)): Muon's rate.
    ("rmnp", "*"): 1.0,
    ("rownorm", "embedding"): 5.0, ("rownorm", "*"): 0.15,
    ("right_polar", "*"): 5.0,
    ("left_polar", "router"): 0.625, ("left_polar", "*"): 0.015,
    ("hybrid", "*"): 0.015,
    ("polargrad", "*"): 0.015,
}
# Per-preset ratios that replace LR_RATIO's, tuned for the preset on the LM
# (benchmarks/quality.py, README "Results"). "hybrid" (the default), tiny Qwen3-style model,
# 300 steps, seed 0, Muon 0.04; final validation loss:
#   vocabulary (hybrid) ratio 0.005 / 0.015 / 0.045 / 0.135: 4.748 / 4.579 / 4.538 / 4.637
#   vectors (AdamW) ratio 0.083 / 0.25 / 0.75 / 2.25 (vocab 0.045): 4.614 / 4.538 / 4.474 / 4.471
# (0.75 rather than the flat edge 2.25: Muon + AdamW's vectors chose 0.75 after one pass, 1.0
# after two). With these ratios and only its base rate swept (0.04 at both widths), the
# preset finished 4.472 ± 0.009 (tiny) and 4.355 ± 0.011 (tiny2x) against 4.484 ± 0.007 and
# 4.458 ± 0.007 for Muon + AdamW (README "Results": how each was tuned).
# "paper" keeps the reference builder's ratios (LR_RATIO).
PRESET_LR_RATIO: dict[str, dict[tuple[str, str], float]] = {
    "hybrid": {("hybrid", "embedding"): 0.045, ("hybrid", "lm_head"): 0.045,
               ("adamw", "vector"): 0.75},
}
# Decoupled weight decay: 0.01 for AdamW (the reference's wd_other) except on softmax-facing
# matrices (LM head, router), 0 for the matrix rules (as in the reference).
ADAMW = dict(b1=0.9, b2=0.95, eps=1e-8)


# Learning-rate ratios under a stack-wide ``scale`` (the rules it reaches step at
# ``learning_rate`` times these; the others keep LR_RATIO). Under "rms" and "spectral" every
# matrix rule's update has one size convention, so they share one rate.
SCALE_LR_RATIO: dict[str, dict[tuple[str, str], float]] = {
    "nuclear": {},
    "nuclear_rel": {("right_polar", "*"): 1.0, ("left_polar", "*"): 1.0, ("hybrid", "*"): 1.0,
                    ("polargrad", "*"): 1.0},
    "rms": {("adamw", "*"): 1.0, **{(r, "*"): 1.0 for r in _NU_RULES + _ROW_RULES}},
    "spectral": {(r, "*"): 1.0 for r in _NU_RULES + _ROW_RULES},
}


def _reached(rule: str, scale: str | None) -> bool:
  """Whether a stack-wide ``scale`` changes ``rule``'s update size."""
  if scale is None:
    return False
  if scale in ("nuclear", "nuclear_rel"):
    return rule in _NU_RULES
  return rule in _NU_RULES + _ROW_RULES + _SHAPED_RULES


def _lr_ratio(rule: str, role: str, scale: str | None = None, preset: str | None = None) -> float:
  """``rule``'s rate on ``role`` relative to the Muon rate: a stack-wide ``scale``'s ratio
  (SCALE_LR_RATIO) if it sets one, else the preset's (PRESET_LR_RATIO), else LR_RATIO's."""
  for table in (SCALE_LR_RATIO.get(scale, {}) if scale is not None else {},
                PRESET_LR_RATIO.get(preset, {}) if preset is not None else {}):
    if (rule, role) in table or (rule, "*") in table:
      return table.get((rule, role), table.get((rule, "*")))
  return LR_RATIO.get((rule, role), LR_RATIO.get((rule, "*"), 1.0))


def _scale_options(rule: str, scale: str | None) -> dict[str, Any]:
  """The keywords that give ``rule`` the stack's ``scale``."""
  if not _reached(rule, scale):
    return {}
  if rule in _SHAPED_RULES:
    return {"shape_rule": scale}
  return {"scale": scale}


def _default_wd(rule: str, role: str) -> float:
  return 0.01 if rule == "adamw" and role not in _SOFTMAX_ROLES else 0.0


@dataclasses.dataclass(frozen=True)
class RoleRule:
  """The resolved rule of one role: its name, learning rate and weight decay.

  ``lr_ratio`` is the learning rate's multiple of the stack's ``learning_rate`` (``None``
  for an override's own learning rate). Roles that share a rule share one branch of the
  stack (see :func:`symmetry_stack`), so that their same-shape matrices take one batched step.
  """
  role: str
  rule: str
  learning_rate: Any
  weight_decay: float
  center: bool
  lr_ratio: float | None = 1.0
  options: tuple[tuple[str, Any], ...] = ()  # extra keywords of the rule's optimizer


def _scaled(lr, ratio):
  if ratio == 1.0:
    return lr
  if callable(lr):
    return lambda step: ratio * lr(step)
  return ratio * lr


def resolve_rules(learning_rate, preset: str = DEFAULT_PRESET,
                  overrides: Mapping[str, Any] | None = None,
                  scale: str | None = None) -> dict[str, RoleRule]:
  """The rule, learning rate and weight decay of every role for a preset, overrides and a
  stack-wide update ``scale`` (which sets the rules' learning-rate ratios)."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; valid choices are "
                     f"{', '.join(map(repr, PRESETS))}.")
  table = dict(PRESETS[preset])
  custom: dict[str, dict[str, Any]] = {}
  for role, spec in (overrides or {}).items():
    if role not in ROLES:
      raise ValueError(f"overrides: unknown role {role!r}; valid roles are "
                       f"{', '.join(ROLES)}.")
    spec = {"rule": spec} if isinstance(spec, str) else dict(spec)
    unknown = set(spec) - {"rule", "learning_rate", "weight_decay", "options"}
    if unknown:
      raise ValueError(f"overrides[{role!r}]: unknown keys {sorted(unknown)}; use 'rule', "
                       "'learning_rate', 'weight_decay' and/or 'options'.")
    if not isinstance(spec.get("options", {}), Mapping):
      raise ValueError(f"overrides[{role!r}]['options'] must be a dict of the rule's keyword "
                       f"arguments, got {spec['options']!r}.")
    reserved = set(spec.get("options", {})) & {"learning_rate", "weight_decay", "axes",
                                                "shardings", "mesh", "mask"}
    if reserved:
      raise ValueError(f"overrides[{role!r}]['options'] sets {sorted(reserved)}, which the "
                       "stack sets itself (learning_rate and weight_decay are override keys "
                       "of their own; axes come from the roles).")
    if "rule" in spec:
      spec["rule"] = RULE_FUNCTIONS.get(spec["rule"], spec["rule"])
      if spec["rule"] not in RULES:
        raise ValueError(f"overrides[{role!r}]: unknown rule {spec['rule']!r}; valid rules "
                         f"are {', '.join(RULES)} (or the named optimizers' own names: "
                         f"{', '.join(RULE_FUNCTIONS)}).")
      if role == "vector" and spec["rule"] != "adamw":
        raise ValueError(f"overrides['vector']: rule {spec['rule']!r} needs matrices; vectors "
                         "(biases, norm scales) only take 'adamw'.")
      table[role] = spec["rule"]
    custom[role] = spec
  _check_paired(table)
  out = {}
  for role in ROLES:
    rule = table[role]
    spec = custom.get(role, {})
    ratio = _lr_ratio(rule, role, scale, preset)
    lr = spec.get("learning_rate", _scaled(learning_rate, ratio))
    wd = spec.get("weight_decay", _default_wd(rule, role))
    options = dict(spec.get("options", {}))
    center = role in _SOFTMAX_ROLES and rule in _CENTRED_RULES
    if "center" in options:  # an ablation: centring on (or off) for this role
      if rule not in _CENTRED_RULES:
        raise ValueError(f"overrides[{role!r}]['options']['center']: rule {rule!r} has no "
                         f"centring; the rules with one are {', '.join(_CENTRED_RULES)}.")
      center = bool(options.pop("center"))
    out[role] = RoleRule(role, rule, lr, wd, center=center,
                         lr_ratio=None if "learning_rate" in spec else ratio,
                         options=tuple(sorted(options.items())))
  return out


def _check_paired(table: Mapping[str, str]) -> None:
  """Rules that step the attention circuits (Compositional Muon) need both factors of a
  circuit, and only attention roles."""
  for rule in _PAIRED_ATTENTION_RULES:
    roles = {r for r, v in table.items() if v == rule}
    other = sorted(roles - set(ATTENTION_ROLES))
    if other:
      raise ValueError(
          f"overrides: rule {rule!r} steps the attention circuits, so it takes only the "
          f"attention roles attn_q, attn_k, attn_v, attn_o; {', '.join(other)} got it.")
    for a, b in (("attn_q", "attn_k"), ("attn_v", "attn_o")):
      if (a in roles) != (b in roles):
        raise ValueError(
            f"overrides: rule {rule!r} steps {a} and {b} together (each factor of the "
            f"circuit is whitened by the other); give it to both or neither, e.g. "
            f"overrides={{r: {rule!r} for r in ('attn_q', 'attn_k', 'attn_v', 'attn_o')}}.")


@dataclasses.dataclass(frozen=True)
class _Branch:
  """One ``multi_transform`` branch: a rule and the roles that take it.

  The rule steps at ``learning_rate`` with ``weight_decay``. ``role_rates`` (set when the
  roles' rates differ: their ratios, or a paired rule's rates of their own): the rule then
  steps at 1 and each leaf is scaled by its role's rate (one rounding, as a single rate
  gives).
  ``centred``: the roles whose rows are centred; ``decayed``: the roles AdamW decays (the
  others get weight decay 0).
  """
  name: str
  rule: str
  roles: tuple[str, ...]
  learning_rate: Any
  weight_decay: Any
  role_rates: Mapping[str, Any] | None  # role -> its rate (float or schedule)
  centred: tuple[str, ...]
  decayed: tuple[str, ...]
  options: tuple[tuple[str, Any], ...] = ()


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _branches(table: Mapping[str, RoleRule], present: set[str]) -> list[_Branch]:
  """The branches for the roles in ``present``.

  One branch per rule, per weight decay for matrix rules and per nonzero weight decay for
  AdamW (whose zero-decay roles are masked into a decayed branch): roles with different
  learning-rate ratios or centring share it, so that their same-shape matrices (an embedding
  and an LM head under "hybrid" or "rownorm") go through one batched step. A role whose
  override sets its own learning rate, or a weight decay that is not a number (a schedule, an
  array), gets a branch of its own (``"<role>:custom"``).
  """
  keyed: dict[str, list[RoleRule]] = {}
  custom = lambda r: (r.lr_ratio is None or not _is_number(r.weight_decay)
                      or (r.rule == "adamw" and bool(r.options)))
  adamw_wds = {float(table[r].weight_decay) for r in present
               if table[r].rule == "adamw" and not custom(table[r])}
  split_adamw = len(adamw_wds - {0.0}) > 1
  for role in ROLES:
    if role not in present:
      continue
    r = table[role]
    if r.rule in _PAIRED_ATTENTION_RULES:
      key = f"{r.rule}|paired"  # its roles' leaves step together: one branch, always
    elif custom(r):
      key = f"{role}:custom"
    elif r.rule == "adamw":
      key = f"adamw|wd={float(r.weight_decay)!r}" if split_adamw and r.weight_decay else "adamw"
    else:
      key = f"{r.rule}|wd={float(r.weight_decay)!r}"
    if r.options:  # roles with the same options share a branch
      key += "|" + ",".join(f"{k}={v!r}" for k, v in r.options)
    keyed.setdefault(key, []).append(r)
  if split_adamw and "adamw" in keyed:  # zero-decay AdamW roles join a decayed branch
    first = next(k for k in keyed if k.startswith("adamw|"))
    keyed[first] += keyed.pop("adamw")
  out = []
  for key, rs in keyed.items():
    if key.endswith("|paired"):
      _check_one_setting(rs)
    wd = rs[0].weight_decay if len(rs) == 1 else max(r.weight_decay for r in rs)
    lr, role_rates = rs[0].learning_rate, None
    # Different ratios, or (a paired rule's roles) rates of their own that differ: each role
    # at its own rate (RoleRule.learning_rate: the ratio times the stack's rate, or its own).
    if len({r.lr_ratio for r in rs}) > 1 or not all(
        r.lr_ratio is not None or _same(r.learning_rate, rs[0].learning_rate) for r in rs):
      lr, role_rates = 1.0, {r.role: r.learning_rate for r in rs}
    out.append(_Branch(key, rs[0].rule, tuple(r.role for r in rs), lr, wd, role_rates,
                       centred=tuple(r.role for r in rs if r.center),
                       decayed=tuple(r.role for r in rs if not _is_number(r.weight_decay)
                                     or r.weight_decay),
                       options=rs[0].options))
  return out


def _same(a, b) -> bool:
  """The same rate or decay: one object, or equal numbers/arrays."""
  return a is b or (not callable(a) and not callable(b) and bool(jnp.all(
      jnp.asarray(a) == jnp.asarray(b))))


def _check_one_setting(rs: list[RoleRule]) -> None:
  """The roles of a paired rule (one branch, one step) must agree on weight decay and
  options; their learning rates may differ (each leaf is scaled by its own)."""
  first = rs[0]
  for r in rs[1:]:
    for what in ("weight_decay", "options"):
      a, b = getattr(first, what), getattr(r, what)
      if not (a == b if what == "options" else _same(a, b)):
        raise ValueError(
            f"overrides: rule {r.rule!r} steps {first.role} and {r.role} together (one "
            f"optimizer over the attention circuits), so they need the same {what}; got "
            f"{a!r} and {b!r}.")


def _role_mask(chosen, roles_like):
  """An optax mask (callable on a branch's tree) of the leaves whose role is in ``chosen``."""
  return lambda tree: jax.tree_util.tree_map(lambda r: r in chosen, roles_like(tree))


def _role_learning_rates(rates: Mapping[str, Any], roles_like
                         ) -> optax.GradientTransformation:
  """Scales each leaf by its role's rate (float or schedule of the step count), as
  ``optax.scale_by_schedule`` does, after a rule that stepped at learning rate 1 (its update
  already negated)."""

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    rate = lambda r: rates[r](state.count) if callable(rates[r]) else rates[r]
    scaled = jax.tree_util.tree_map(lambda u, r: jnp.asarray(rate(r), dtype=u.dtype) * u,
                                    updates, roles_like(updates))
    return scaled, optax.ScaleByScheduleState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)


def _build(b: _Branch, roles_like, axes, sh: Mapping[str, Any], *,
           nu_scope: str = "matrix", scale: str | None = None, mu_dtype: Any = None
           ) -> optax.GradientTransformation:
  if b.rule == "adamw":
    mask = (None if set(b.decayed) in (set(), set(b.roles))
            else _role_mask(b.decayed, roles_like))
    tx = optax.adamw(b.learning_rate, weight_decay=b.weight_decay, mask=mask,
                     **{**ADAMW, "mu_dtype": mu_dtype, **dict(b.options)})
  else:
    alias = _OPTIMIZERS[b.rule]
    kw = {"mu_dtype": mu_dtype, **_scale_options(b.rule, scale)}
    if b.rule in _CENTRED_RULES:
      kw["center"] = (bool(b.centred) if set(b.centred) in (set(), set(b.roles))
                      else _role_mask(b.centred, roles_like))
    if b.rule in _NU_RULES:
      kw["nu_scope"] = nu_scope
    if b.rule in _PAIRED_ATTENTION_RULES:
      kw["roles"] = roles_like
    tx = _unpinned(alias)(b.learning_rate, weight_decay=b.weight_decay, axes=axes,
                          **{**kw, **dict(b.options)}, **sh)
  if b.role_rates is None:
    return tx
  return optax.chain(tx, _role_learning_rates(b.role_rates, roles_like))


def _unpinned(alias):
  # The stack pins its whole state once (keep_shardings around the multi_transform); its
  # branches skip the named optimizers' own pinning.
  return getattr(alias, "unpinned", alias)


def symmetry_stack(
    learning_rate: optax.ScalarOrSchedule,
    *,
    preset: str = DEFAULT_PRESET,
    params: Any = None,
    roles: Any = None,
    overrides: Mapping[str, Any] | None = None,
    scan_axis: ScanAxis = None,
    rules: Iterable[tuple[str, str]] | None = None,
    attention: str | None = None,
    head_dim: HeadDim = None,
    nu_scope: str | None = None,
    scale: str | None = None,
    gate_up: str | None = None,
    tied_embedding: str = "embedding",
    axes: Any = None,
    mu_dtype: Any = None,
    shardings: Any = None,
    mesh: Any = None,
) -> optax.GradientTransformation:
  r"""One optimizer for a whole model: every leaf gets the rule of its role.

  Presets (role -> rule; the default is ``DEFAULT_PRESET``, ``"hybrid"``):

  * ``"hybrid"`` (default): the hybrid rule (row-norm, then polar, nu-scaled) on embedding,
    head (centred), router (centred) and experts; Muon elsewhere; AdamW on vectors. Its
    ratios (``PRESET_LR_RATIO``) were tuned on the quality benchmark: vocabulary matrices
    0.045, vectors 0.75 times the Muon rate; recommended Muon rate 0.04 (README
    "Results").
  * ``"paper"``: embedding -> right polar (nu-scaled); lm_head -> hybrid, centred; router ->
    left polar, centred; attention -> head-wise Muon; dense MLP and unknown matrices -> Muon
    (Polar Express); experts -> row-norm; vectors -> AdamW (b1 0.9, b2 0.95, eps 1e-8,
    wd 0.01); one nu per stacked-experts leaf (``nu_scope="leaf"``), as the reference.
  * ``"rownorm"``: row-norm on embedding, head, router and experts (centred on head and
    router); Muon elsewhere; AdamW on vectors.
  * ``"muon"``: AdamW on embedding, head, router and vectors; Muon elsewhere (common
    practice).
  * ``"adamw"``: AdamW everywhere.

  LM heads and routers are centred (softmax shift) under the row-norm, one-sided polar,
  hybrid and PolarGrad rules; Muon and its variants leave them uncentred.
  Learning rates are ``learning_rate`` (the Muon rate) times a per-rule ratio
  (``PRESET_LR_RATIO`` for the preset, else ``LR_RATIO``: sources in their comments);
  weight decay is 0.01 for AdamW except on head and router, 0 for matrix rules.

  Args:
    learning_rate: the Muon learning rate (float or optax schedule); other rules scale it.
    preset: one of ``"hybrid"`` (default), ``"paper", "rownorm", "muon", "adamw"``.
    params: optional parameter tree (or ``jax.ShapeDtypeStruct`` tree): labels are then
      computed and checked now, so naming errors surface before training.
    roles: optional pytree of role strings (from :func:`label_roles`, edited as you like);
      used instead of labelling.
    overrides: ``{role: rule}`` or ``{role: {"rule": ..., "learning_rate": ...,
      "weight_decay": ..., "options": {...}}}`` (learning rates absolute, float or
      schedule; ``options``: further keywords of the rule's optimizer, e.g.
      ``{"method": "muon_ns", "momentum": "optax"}`` for ``muon``, ``{"b2": 0.99}`` for
      ``adamw``, ``{"center": False}`` to switch a head's or router's centring off (an
      ablation); roles with the same rule and options share a branch;
      ``"compositional_muon"`` couples leaves: give it to ``attn_q`` with ``attn_k`` and/or
      ``attn_v`` with ``attn_o`` (``ATTENTION_ROLES``), which then share one branch (one
      step, read head by head; their rates may differ, their weight decay and options may
      not)). A rule is a name in
      ``RULES``, each the named optimizer of that name (``symoptax.<rule>``, ``optax.adamw``);
      the paper's four may be given by their function names too (``"hybrid_polargrad_m"``
      for ``"hybrid"``, ``RULE_FUNCTIONS``).
    scan_axis: the layer axis of scanned layer stacks, or one per nested stack, or a
      ``{path regex: axis}`` mapping (see :func:`label_roles`).
    rules: extra ``(regex, role)`` patterns for :func:`label_roles`.
    attention: ``"heads"`` (one polar factor per attention head, as the reference does) or
      ``"whole"`` (one per kernel, as ``optax.contrib.muon`` with MaxText's dimension
      numbers); ``None``: the preset's (``PRESET_OPTIONS``: "heads" for "paper", "whole"
      for the others). The same model stored 2-D (HF/NNX) or 3-D (MaxText) gets the same
      matrices either way (:func:`matrix_axes`).
    head_dim: the size of one attention head (or ``{path regex: size}``), for 2-D attention
      kernels under ``attention="heads"``; default: read from the model's
      ``q_norm``/``k_norm`` scales (a 2-D kernel whose head size is unknown raises, naming
      it).
    nu_scope: ``"matrix"`` or ``"leaf"`` for the nu-scaled rules (right/left polar, hybrid,
      PolarGrad): one nu per matrix, or one per stacked leaf as the reference takes for
      ``[E, m, n]`` experts (:func:`symoptax.scale_by_polar`); ``None``: the preset's
      ("leaf" for "paper", "matrix" for the others).
    scale: the update-size convention of the matrix rules (README "Update scales"):
      ``"nuclear"`` or ``"nuclear_rel"`` (the nu-scaled rules' :math:`\nu^\alpha U` or
      :math:`(\nu/\|X\|_F)^\alpha U`; other rules keep theirs), ``"rms"`` (every
      matrix rule's update has per-entry RMS 0.2, Moonlight's convention: row-norm and the
      nu-scaled rules rescale exactly, Muon and its polar-factor variants take
      ``shape_rule="rms"``) or ``"spectral"`` (muP's
      :math:`\|\Delta W\|_{op} = \sqrt{\mathrm{fan\_out}/\mathrm{fan\_in}}`).
      ``None``: the preset's (``PRESET_OPTIONS``); each rule's own formula when that is
      ``None`` too. The rules it reaches take the learning-rate ratios of
      ``SCALE_LR_RATIO[scale]`` (under "rms" and "spectral": one rate for every matrix
      rule); an override's ``options`` win over it.
    gate_up: the layout of fused SwiGLU gate/up leaves (``None``, ``"interleaved"``,
      ``"concatenated"``; see :func:`matrix_axes`): row-based rules then treat neuron j's
      gate and up weights as one row, Muon-style rules orthogonalise gate and up apart.
    tied_embedding: ``"embedding"`` (default: a tied embedding is an uncentred vocabulary
      matrix) or ``"lm_head"`` (the reference's choice: the head's rule, centred); see
      :func:`label_roles` for why.
    axes: the rows/cols of any leaves, overriding the built-in reading: a pytree like
      ``params`` of :class:`symoptax.MatrixAxes` (``None`` where the built-in reading stays),
      or a callable ``params -> pytree``. Checked against each leaf's shape now (with
      ``params``); a vector (AdamW) leaf takes none. ``rules`` with a third item name axes
      by path instead.
    mu_dtype: the dtype of every rule's momentum and of AdamW's first moment (``None``: the
      parameters' dtype, as optax); e.g. ``jnp.float32`` for bf16 parameters. A role's
      ``overrides`` options may set their own.
    shardings: the parameters' shardings: a pytree like ``params`` (or a prefix of it) of
      ``jax.sharding.NamedSharding`` -- or of ``PartitionSpec`` with ``mesh`` -- or a
      callable ``params -> pytree`` (then ``params`` is required). Every matrix rule then
      runs under ``jax.shard_map`` with explicit collectives (row statistics psummed only
      over split columns, one Gram psum for one-sided polar steps, whole matrices moved with
      ``all_to_all`` for Muon-style steps: :mod:`symoptax.sharding`), and the optimizer
      state and updates are kept in the parameters' shardings (:func:`keep_shardings`).
    mesh: the ``jax.sharding.Mesh`` for ``PartitionSpec`` shardings.

  Returns:
    An ``optax.GradientTransformation``: an ``optax.multi_transform`` with one branch per
    rule among the roles present (``"muon|wd=0.0"``, ``"adamw"``, ...; per weight decay for
    matrix rules, per nonzero weight decay for AdamW), so that the same-shape matrices of
    every role sharing a rule -- an embedding and an LM head under "hybrid" or "rownorm", a
    layer stack's kernels -- go through one batched step; learning-rate ratios are applied
    per leaf, centring and AdamW's decay are masked per leaf. A role whose override sets its
    own learning rate (or a non-numeric weight decay) has a branch ``"<role>:custom"``. The
    state holds one entry per branch (``state.inner_states[name]``).

  References:
    arXiv:2605.18106 (symmetry-compatible optimizers for LLM pretraining), 2026.

  Examples:
    >>> import jax.numpy as jnp, optax, symoptax
    >>> params = {"embed_tokens": {"embedding": jnp.ones((32, 8))},
    ...           "mlp": {"up_proj": {"kernel": jnp.ones((8, 16))}}, "norm": {"scale": jnp.ones(8)}}
    >>> opt = symoptax.symmetry_stack(0.02, params=params)
    >>> state = opt.init(params)
  """
  if mesh is not None and shardings is None:
    raise ValueError("symmetry_stack: mesh= needs shardings= (a pytree of PartitionSpecs "
                     "for the parameters).")
  if shardings is not None and callable(shardings) and not sharding_lib.is_sharding_leaf(
      shardings):
    if params is None:
      raise ValueError("symmetry_stack: a callable shardings= needs params= to evaluate it.")
    shardings = shardings(params)
  if shardings is not None and params is not None:
    sharding_lib.resolve_shardings(shardings, mesh, params)  # errors name the leaf, now
  sh = {} if shardings is None else dict(shardings=shardings, mesh=mesh)
  opts = stack_options(preset, attention=attention, nu_scope=nu_scope, scale=scale)
  table = resolve_rules(learning_rate, preset, overrides, opts["scale"])
  rules = list(rules) if rules is not None else None
  layout_kw = dict(scan_axis=scan_axis, attention=opts["attention"], head_dim=head_dim,
                   gate_up=gate_up, rules=rules)
  label = lambda tree: label_roles(tree, scan_axis=scan_axis, rules=rules,
                                   tied_embedding=tied_embedding)
  if roles is not None:
    bad = [(path_str(p), r) for p, r in jax.tree_util.tree_flatten_with_path(roles)[0]
           if r not in ROLES]
    if bad:
      raise ValueError(f"roles: {bad[0][0]} has unknown role {bad[0][1]!r}; valid roles are "
                       f"{', '.join(ROLES)}.")
  def layouts(tree):
    # Labels and axes come from the whole tree (head sizes are read off q_norm/k_norm
    # leaves, which another branch owns); each branch sees them masked like its own tree.
    role_tree = _laid_like(tree, roles, "roles") if roles is not None else label(tree)
    return role_tree, _with_given_axes(tree, role_tree, _axes_by_rule(tree, role_tree,
                                                                      **layout_kw), axes)

  # With params, label and lay out once, now: naming and layout errors surface before
  # training, and the steps reuse them (laid out like the tree they get: an NNX State with
  # Param wrappers at construction, its pure arrays in nnx.Optimizer). Without, every
  # init/update does (once per trace).
  fixed = layouts(params) if params is not None else None
  if fixed is not None:  # every rule's layout and branch now (errors before training)
    present = set(jax.tree_util.tree_leaves(fixed[0]))
    for rule in {table[r].rule for r in present}:
      fixed[1](rule)
    _branches(table, present)

  def stack(tree) -> optax.GradientTransformationExtraArgs:
    if fixed is not None:
      role_tree = _laid_like(tree, fixed[0], "params")
      axes_of_rule = lambda rule: _laid_like(tree, fixed[1](rule), "params")
    else:
      role_tree, axes_of_rule = layouts(tree)
    roles_like = lambda t: _like(role_tree, t)
    axes_like = lambda rule: (lambda t: _like(axes_of_rule(rule), t))
    # Branches only for the roles present: an absent role's branch would still carry a
    # whole masked copy of the tree in the state (and cost its flattening every step).
    branches = _branches(table, set(jax.tree_util.tree_leaves(role_tree)))
    transforms = {b.name: _build(b, roles_like, axes_like(b.rule), sh,
                                 nu_scope=opts["nu_scope"], scale=opts["scale"],
                                 mu_dtype=mu_dtype) for b in branches}
    branch_of = {role: b.name for b in branches for role in b.roles}
    return optax.multi_transform(transforms,
                                 jax.tree_util.tree_map(branch_of.__getitem__, role_tree))

  def update_fn(updates, state, params=None, **extra_args):
    return stack(updates).update(updates, state, params, **extra_args)

  tx = optax.GradientTransformationExtraArgs(lambda p: stack(p).init(p), update_fn)
  return tx if shardings is None else sharding_lib.keep_shardings(tx, shardings, mesh=mesh)


def _is_axes_leaf(x) -> bool:
  return x is None or isinstance(x, MatrixAxes)


def _laid_like(tree, src, name: str):
  """``src`` (roles or axes of ``tree``'s leaves) with ``tree``'s pytree structure.

  The same parameters come in several forms: an NNX ``State`` with ``Param`` wrappers (what
  ``nnx.state(model, nnx.Param)`` gives), its pure form (what ``nnx.Optimizer`` passes to
  ``update``), a pure dict (``nnx.to_pure_dict``, checkpoints). Their leaves have the same
  paths (:func:`path_str` reads through the wrappers), so ``src`` is matched by path. A tree
  with ``optax.MaskedNode`` leaves (the stack inside ``optax.masked`` or
  :func:`symoptax.drop_layers`) keeps them and matches its present leaves.
  """
  if jax.tree_util.tree_structure(src, is_leaf=_is_axes_leaf) == \
      jax.tree_util.tree_structure(tree):
    return src
  masked = lambda x: isinstance(x, MaskedNode)
  by_path = {path_str(p): v for p, v in
             jax.tree_util.tree_flatten_with_path(src, is_leaf=_is_axes_leaf)[0]}
  flat, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=masked)
  present = [path_str(p) for p, x in flat if not masked(x)]
  missing = [p for p in present if p not in by_path]
  if missing or (len(by_path) != len(present) and len(present) == len(flat)):
    extra = sorted(set(by_path) - set(present))
    where = (f"{missing[0]} is not in {name}=" if missing
             else f"{name}= has {extra[0]}, which the tree does not")
    raise ValueError(f"symmetry_stack: the tree given to init/update does not match {name}= "
                     f"({where}); build the stack with {name}= of the tree you train.")
  return jax.tree_util.tree_unflatten(
      treedef, [x if masked(x) else by_path[path_str(p)] for p, x in flat])


def _with_given_axes(tree, role_tree, axes_of_rule, given):
  """``axes_of_rule`` with the user's ``axes=`` tree (or callable) laid over it."""
  if given is None:
    return axes_of_rule
  if callable(given) and not _is_axes_leaf(given):
    given = given(tree)
  given = _laid_like(tree, given, "axes")
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  leaves = jax.tree_util.tree_leaves(given, is_leaf=_is_axes_leaf)
  for (path, leaf), role, ax in zip(flat, jax.tree_util.tree_leaves(role_tree), leaves):
    if ax is None:
      continue
    if not isinstance(ax, MatrixAxes):
      raise ValueError(f"axes: {path_str(path)} has {ax!r}; expected a MatrixAxes or None.")
    if role == "vector":
      raise ValueError(f"axes: {path_str(path)} is a vector leaf (AdamW), which takes no axes; "
                       "give it a matrix role with rules=[(regex, role)].")
    layout(tuple(jax.numpy.shape(leaf)), ax, path_str(path))
  overlay = lambda a, g: g if g is not None else a
  return lambda rule: jax.tree_util.tree_map(overlay, axes_of_rule(rule), given,
                                             is_leaf=_is_axes_leaf)


def _axes_by_rule(tree, role_tree, *, gate_up=None, **layout_kw):
  """``rule -> axes tree`` of ``tree``: fused gate/up leaves are read as neuron pairs for the
  row-based rules (``_PAIRED_RULES``) and as separate gate and up matrices for the others;
  without ``gate_up`` every rule gets the same tree."""
  paired = matrix_axes(tree, roles=role_tree, gate_up=gate_up, **layout_kw)
  heads = {}

  def head_wise():  # the attention-circuit rules read heads whatever the stack's attention
    if layout_kw.get("attention") == "heads" and gate_up is None:
      return paired
    if not heads:
      try:
        heads["axes"] = matrix_axes(tree, roles=role_tree, gate_up=gate_up,
                                    gate_up_pairs=False, **{**layout_kw, "attention": "heads"})
      except ValueError as e:
        raise ValueError(f"{', '.join(_PAIRED_ATTENTION_RULES)} reads attention head by head "
                         f"whatever the stack's attention option, so: {e}") from e
    return heads["axes"]

  if gate_up is None:
    return lambda rule: head_wise() if rule in _PAIRED_ATTENTION_RULES else paired
  apart = matrix_axes(tree, roles=role_tree, gate_up=gate_up, gate_up_pairs=False, **layout_kw)
  return lambda rule: (head_wise() if rule in _PAIRED_ATTENTION_RULES
                       else paired if rule in _PAIRED_RULES else apart)


def stack_options(preset: str, *, attention: str | None = None,
                  nu_scope: str | None = None, scale: str | None = None) -> dict[str, Any]:
  """The layout options a stack uses: the given ones, else the preset's."""
  if preset not in PRESET_OPTIONS:
    raise ValueError(f"Unknown preset {preset!r}; valid choices are "
                     f"{', '.join(map(repr, PRESETS))}.")
  out = dict(PRESET_OPTIONS[preset])
  if attention is not None:
    out["attention"] = attention
  if nu_scope is not None:
    if nu_scope not in NU_SCOPES:
      raise ValueError(f"Unknown nu_scope {nu_scope!r}; valid choices are "
                       f"{', '.join(map(repr, NU_SCOPES))}.")
    out["nu_scope"] = nu_scope
  if scale is not None:
    if scale not in SCALES:
      raise ValueError(f"Unknown scale {scale!r}; valid choices are "
                       f"{', '.join(map(repr, SCALES))}.")
    out["scale"] = scale
  return out


def _like(roles, tree):
  """``roles`` with the masked leaves of a multi_transform branch masked out too."""
  masked = lambda x: isinstance(x, MaskedNode)
  return jax.tree_util.tree_map(lambda t, r: t if masked(t) else r, tree, roles,
                                is_leaf=masked)


@dataclasses.dataclass
class Description:
  """What :func:`symmetry_stack` gives each leaf; ``str()`` prints the table (its ``lr``
  column when a learning rate was given, ``lr ratio`` otherwise)."""
  rows: list[dict[str, Any]]
  rates: bool = True

  COLUMNS = ("path", "shape", "role", "rule", "rows", "cols", "matrices", "shape factor", "lr",
             "wd")

  def __str__(self) -> str:
    cols = [c if c != "lr" or self.rates else "lr ratio" for c in self.COLUMNS]
    cells = [[str(r[c]) for c in cols] for r in self.rows]
    width = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, width)).rstrip()
    return "\n".join([line(cols), line(["-" * w for w in width])] + [line(c) for c in cells])

  __repr__ = __str__


def _matrices(lay, role: str, attention: str) -> str:
  """``"4 heads x [16, 64]"``, ``"whole [64, 64]"``, ``"3 x [16, 8]"`` or ``"[32, 8]"``."""
  b, r, c = lay.batched_shape
  shape = f"[{r}, {c}]"
  if role.startswith("attn_"):
    n_layers = math.prod(lay.view_shape[a] for a in lay.layers)
    heads = b // n_layers
    layers = f" x {n_layers} layers" if n_layers > 1 else ""
    if attention == "heads" and (heads > 1 or lay.splits):
      return f"{heads} heads x {shape}" + layers
    # A kernel whose axes a rule named may keep batch (head) axes under "whole" too.
    return (f"{heads} x {shape}" if heads > 1 else f"whole {shape}") + layers
  return f"{b} x {shape}" if b > 1 else shape


def describe(params: Any, *, preset: str = DEFAULT_PRESET, learning_rate: Any = None,
             roles: Any = None, overrides: Mapping[str, Any] | None = None,
             scan_axis: ScanAxis = None,
             rules: Iterable[tuple[str, str]] | None = None, attention: str | None = None,
             head_dim: HeadDim = None, gate_up: str | None = None,
             tied_embedding: str = "embedding", scale: str | None = None,
             axes: Any = None) -> Description:
  """A table of what each leaf gets from :func:`symmetry_stack` with the same arguments.

  Columns: path, shape, role, rule, the rows/cols axes (of the leaf's view when it is read
  head by head, :attr:`MatrixAxes.split`), the matrices the rule sees (``"4 heads x [16,
  64]"`` for head-wise attention, ``"whole [64, 64]"`` for a whole attention kernel,
  ``"B x [rows, cols]"`` for layer and expert stacks), Muon's shape factor
  ``sqrt(max(1, fan_out / fan_in))`` for the rules that apply it (the ``shape_rule``'s
  factor under a ``scale``; the convention's name for the other rules it rescales, ``-``
  otherwise), learning
  rate and weight decay (each row's dict also holds ``batched``: the ``(B, rows, cols)`` its
  rule sees, ``None`` for vectors). Given a ``learning_rate`` (the one you pass to
  :func:`symmetry_stack`), the ``lr`` column shows each leaf's rate (``schedule`` for a
  schedule); without one, an ``lr ratio`` column shows each leaf's multiple of that rate
  (``PRESET_LR_RATIO`` / ``LR_RATIO``), and a rate an override sets itself shows as
  ``<rate> (own)``. Each row's dict holds both, ``lr`` (``None`` without a learning rate)
  and ``lr ratio``.

  Examples:
    >>> import jax.numpy as jnp, symoptax
    >>> params = {"lm_head": {"kernel": jnp.ones((8, 32))}}
    >>> print(symoptax.describe(params))
    path            shape    role     rule              rows  cols  matrices  shape factor  lr ratio  wd
    --------------  -------  -------  ----------------  ----  ----  --------  ------------  --------  ---
    lm_head/kernel  (8, 32)  lm_head  hybrid (centred)  1     0     [32, 8]   -             0.045     0.0
    >>> print(symoptax.describe(params, learning_rate=0.04))
    path            shape    role     rule              rows  cols  matrices  shape factor  lr      wd
    --------------  -------  -------  ----------------  ----  ----  --------  ------------  ------  ---
    lm_head/kernel  (8, 32)  lm_head  hybrid (centred)  1     0     [32, 8]   -             0.0018  0.0
  """
  opts = stack_options(preset, attention=attention, scale=scale)
  rates = learning_rate is not None
  table = resolve_rules(learning_rate if rates else 1.0, preset, overrides, opts["scale"])
  if roles is None:
    roles = label_roles(params, scan_axis=scan_axis, rules=rules,
                        tied_embedding=tied_embedding)
  axes_of_rule = _with_given_axes(params, roles, _axes_by_rule(
      params, roles, scan_axis=scan_axis, rules=rules, attention=opts["attention"],
      head_dim=head_dim, gate_up=gate_up), axes)
  rows = []
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaf_axes = {rule: treedef.flatten_up_to(axes_of_rule(rule))
               for rule in {table[role].rule for role in treedef.flatten_up_to(roles)}}
  for i, ((path, leaf), role) in enumerate(zip(flat, treedef.flatten_up_to(roles))):
    r = table[role]
    ax = leaf_axes[r.rule][i]
    lay = None if ax is None else layout(jax.numpy.shape(leaf), ax, path_str(path))
    rule = r.rule + (" (centred)" if r.center else "")
    own = "schedule" if callable(r.learning_rate) else float(f"{r.learning_rate:.4g}")
    ratio = f"{own} (own)" if r.lr_ratio is None else float(f"{r.lr_ratio:.4g}")
    conv = {**_scale_options(r.rule, opts["scale"]), **dict(r.options)}
    if lay is None or (r.rule not in _SHAPED_RULES and "scale" not in conv):
      factor = "-"
    elif r.rule in _SHAPED_RULES:
      factor = float(f"{shape_factor(lay, conv.get('shape_rule', 'muon')):.3g}")
    else:  # a row-norm or nu-scaled rule rescaled by the stack's convention
      factor = conv["scale"]
    rows.append(dict(path=path_str(path), shape=tuple(jax.numpy.shape(leaf)), role=role,
                     rule=rule, rows="-" if ax is None else ax.rows,
                     cols="-" if ax is None else ax.cols,
                     matrices="-" if lay is None else _matrices(
                         lay, role, "heads" if r.rule in _PAIRED_ATTENTION_RULES
                         else opts["attention"]),
                     **{"shape factor": factor}, lr=own if rates else None,
                     wd=r.weight_decay, batched=None if lay is None else lay.batched_shape,
                     **{"lr ratio": ratio}))
  return Description(rows, rates=rates)
