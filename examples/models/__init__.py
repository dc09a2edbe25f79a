"""Small, structurally faithful example LMs (Flax NNX and a MaxText-style Linen model).

Each module has a ``Config`` dataclass (tiny defaults, every size configurable), the model
class, and ``loss_fn`` for next-token cross entropy. They exist to exercise
:func:`symoptax.label_roles` and :func:`symoptax.symmetry_stack` on real naming schemes.
"""
