"""Training: optimiser and schedule, the sharded train step, validation and the loop
(``train_and_evaluate``) behind ``train.py``."""
from agame_jax.train.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
