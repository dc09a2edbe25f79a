"""symoptax: symmetry-compatible optimizers for LLM pretraining, as optax transforms."""

from symoptax import polar, sharding
from symoptax.aliases import (
    aurora,
    hybrid_polargrad_m,
    left_polargrad_m,
    muon,
    muoneq,
    namo,
    namo_d,
    normuon,
    pion,
    polargrad,
    right_polargrad_m,
    rmnp,
    rownorm_m,
    spectral_clip,
)
from symoptax.axes import MatrixAxes, resolve_axes
from symoptax.roles import ROLES, label_roles, matrix_axes
from symoptax.stacks import PRESET_OPTIONS, PRESETS, RULES, describe, symmetry_stack
from symoptax.transforms import (center_rows, qk_clip, scale_by_col_norm,
                                 scale_by_debiased_momentum, scale_by_high_pass_polar, scale_by_leverage_polar,
                                 scale_by_namo, scale_by_namo_d, scale_by_polar,
                                 scale_by_row_norm, scale_by_row_second_moment, scale_by_shape,
                                 scale_by_spectral_clip)

__version__ = "0.1.0"

__all__ = [
    "MatrixAxes",
    "PRESETS",
    "PRESET_OPTIONS",
    "ROLES",
    "RULES",
    "describe",
    "label_roles",
    "matrix_axes",
    "symmetry_stack",
    "aurora",
    "center_rows",
    "hybrid_polargrad_m",
    "left_polargrad_m",
    "muon",
    "muoneq",
    "namo",
    "namo_d",
    "normuon",
    "pion",
    "polar",
    "sharding",
    "polargrad",
    "qk_clip",
    "resolve_axes",
    "right_polargrad_m",
    "rmnp",
    "rownorm_m",
    "scale_by_col_norm",
    "scale_by_debiased_momentum",
    "scale_by_high_pass_polar",
    "scale_by_leverage_polar",
    "scale_by_namo",
    "scale_by_namo_d",
    "scale_by_polar",
    "scale_by_row_norm",
    "scale_by_row_second_moment",
    "scale_by_shape",
    "scale_by_spectral_clip",
    "spectral_clip",
]
