"""symoptax: symmetry-compatible optimizers for LLM pretraining, as optax transforms."""

from symoptax import diagnostics, polar, sharding
from symoptax.aliases import (
    hybrid_polargrad_m,
    left_polargrad_m,
    muon,
    polargrad,
    right_polargrad_m,
    rownorm_m,
)
from symoptax.axes import MatrixAxes, resolve_axes
from symoptax.roles import ROLES, label_roles, matrix_axes
from symoptax.stacks import (DEFAULT_PRESET, PRESET_LR_RATIO, PRESET_OPTIONS, PRESETS, RULES,
                              describe, symmetry_stack)
from symoptax.transforms import (SCALES, center_rows, scale_by_debiased_momentum,
                                 scale_by_polar, scale_by_rms, scale_by_row_norm,
                                 scale_by_shape, scale_by_spectral_norm)
# The literature's variants live in symoptax.variants; their names are importable from here.
from symoptax import variants
from symoptax.variants import (aurora, auon, clip_weight_spectral_norm, drop_layers,
                               hybrid_auon, hyperp, hyperp_learning_rate, md_decoupled,
                               muon_pp, muoneq, namo, namo_d, noise_adaptive,
                               normuon, pion, qk_clip, rmnp, scale_by_auon,
                               scale_by_col_norm, scale_by_high_pass_polar,
                               scale_by_leverage_polar, scale_by_namo, scale_by_namo_d,
                               scale_by_row_second_moment, scale_by_spectral_clip,
                               spectral_clip)

__version__ = "0.1.0"

__all__ = [
    "MatrixAxes",
    "PRESETS",
    "DEFAULT_PRESET",
    "PRESET_LR_RATIO",
    "PRESET_OPTIONS",
    "ROLES",
    "RULES",
    "SCALES",
    "describe",
    "label_roles",
    "matrix_axes",
    "symmetry_stack",
    "aurora",
    "auon",
    "clip_weight_spectral_norm",
    "hybrid_auon",
    "hyperp",
    "hyperp_learning_rate",
    "md_decoupled",
    "muon_pp",
    "scale_by_auon",
    "center_rows",
    "diagnostics",
    "drop_layers",
    "hybrid_polargrad_m",
    "left_polargrad_m",
    "muon",
    "muoneq",
    "namo",
    "namo_d",
    "noise_adaptive",
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
    "scale_by_rms",
    "scale_by_row_norm",
    "scale_by_row_second_moment",
    "scale_by_shape",
    "scale_by_spectral_clip",
    "scale_by_spectral_norm",
    "spectral_clip",
    "variants",
]
