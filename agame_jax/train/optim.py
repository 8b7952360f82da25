"""The authors' optimiser: Adam with coupled L2 weight decay, decayed once per epoch."""
from __future__ import annotations

import optax


def learning_rate_schedule(base_lr: float, decay_per_epoch: float,
                           steps_per_epoch: int) -> optax.Schedule:
    """``base_lr · decay^epoch`` with ``epoch = step // steps_per_epoch`` (a staircase, as
    torch's ``ExponentialLR`` stepped once per epoch)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    return optax.exponential_decay(base_lr, transition_steps=steps_per_epoch,
                                   decay_rate=decay_per_epoch, staircase=True)


def adam_coupled_l2(learning_rate: float | optax.Schedule, weight_decay: float,
                    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                    ) -> optax.GradientTransformation:
    """torch ``Adam(weight_decay=wd)``: the decay is added to the gradient *before* the
    moment estimates (L2 regularisation, not AdamW's decoupled decay)."""
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                       optax.scale_by_learning_rate(learning_rate))
