"""The literature's Muon-family variants, kept apart from the paper's rules and primitives
(as optax keeps ``optax.contrib``): every public name here is also importable from
``symoptax`` itself, and every named optimizer is a :func:`symoptax.symmetry_stack` rule.

* :mod:`symoptax.variants.transforms`: their primitives (column normalisation, spectral
  clipping, high-pass and leverage-aware polar factors, NorMuon's row statistics, NAMO's
  adaptive steps).
* :mod:`symoptax.variants.aliases`: MuonEq, NorMuon, SPECTRA clipping, NAMO, NAMO-D, RMNP,
  Aurora, Pion.
* :mod:`symoptax.variants.clipping`: MuonClip's QK-clip.
* :mod:`symoptax.variants.spectral`: Muon++ (muP's spectral conditions on update and
  weight), AuON and Hybrid-AuON.
* :mod:`symoptax.variants.sphere`: HyperP (Muon on the Frobenius sphere, with its rate
  transfer rule) and magnitude-direction decoupling (:func:`md_decoupled`, a wrapper).
* :mod:`symoptax.variants.muonq`: MuonQ, Muon with a 4-bit momentum state.
* :mod:`symoptax.variants.conda`: Conda, Adam in the momentum's singular basis of each
  matrix's short side.
* :mod:`symoptax.variants.fismo`: FISMO, Muon under a Kronecker-factored Fisher metric.
* :mod:`symoptax.variants.cosmos`: COSMOS, Adam on the gradient's leading eigensubspace and
  Muon on the rest.
* :mod:`symoptax.variants.compositional`: Compositional Muon, partner-whitened steps of the
  attention circuits (queries with keys, values with output projections).
* :mod:`symoptax.variants.wrappers`: wrappers over any optimizer: Drop-Muon's
  :func:`drop_layers` and noise-adaptive layerwise rates (:func:`noise_adaptive`).
"""

from symoptax.variants.aliases import (aurora, muoneq, namo, namo_d, normuon, pion, rmnp,
                                       spectral_clip)
from symoptax.variants.clipping import qk_clip, qk_labels
from symoptax.variants.spectral import (auon, clip_weight_spectral_norm, hybrid_auon, muon_pp,
                                        scale_by_auon)
from symoptax.variants.muonq import muonq, scale_by_muonq
from symoptax.variants.conda import conda, scale_by_conda
from symoptax.variants.fismo import fismo, scale_by_fismo
from symoptax.variants.cosmos import cosmos, scale_by_cosmos
from symoptax.variants.compositional import compositional_muon, scale_by_compositional_muon
from symoptax.variants.sphere import (hyperp, hyperp_learning_rate, md_decoupled,
                                      retract_to_sphere, scale_by_unit_frobenius)
from symoptax.variants.wrappers import drop_layers, noise_adaptive
from symoptax.variants.transforms import (scale_by_col_norm, scale_by_high_pass_polar,
                                          scale_by_leverage_polar, scale_by_namo,
                                          scale_by_namo_d, scale_by_row_second_moment,
                                          scale_by_spectral_clip)

# The named optimizers of this package, by their symmetry_stack rule name.
OPTIMIZERS = {f.__name__: f for f in (muoneq, normuon, spectral_clip, namo, namo_d, aurora,
                                      pion, rmnp, muon_pp, auon, hybrid_auon,
                                      hyperp, muonq, conda, fismo, cosmos,
                                      compositional_muon)}
# Wrappers of a whole optimizer (a rule or a stack), by name: ``examples/pretrain.py --wrap``.
WRAPPERS = {f.__name__: f for f in (drop_layers, noise_adaptive, md_decoupled)}

__all__ = ["WRAPPERS", "drop_layers", "noise_adaptive", "auon", "clip_weight_spectral_norm",
           "hybrid_auon", "muon_pp", "scale_by_auon", "hyperp", "hyperp_learning_rate",
           "md_decoupled", "retract_to_sphere", "scale_by_unit_frobenius", "muonq",
           "scale_by_muonq", "conda", "scale_by_conda", "fismo", "scale_by_fismo", "cosmos", "scale_by_cosmos",
           "compositional_muon", "scale_by_compositional_muon", "OPTIMIZERS", "aurora", "muoneq", "namo", "namo_d", "normuon", "pion", "qk_clip",
           "qk_labels", "rmnp", "scale_by_col_norm", "scale_by_high_pass_polar",
           "scale_by_leverage_polar", "scale_by_namo", "scale_by_namo_d",
           "scale_by_row_second_moment", "scale_by_spectral_clip", "spectral_clip"]
