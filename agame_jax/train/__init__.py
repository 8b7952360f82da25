"""Training: optimiser and schedule, the sharded train step, checkpoints, validation and
the loop (``train_and_evaluate``) behind ``train.py``."""


def train_and_evaluate(config, workdir):
    """See ``agame_jax.train.loop.train_and_evaluate``."""
    from agame_jax.train.loop import train_and_evaluate as run
    return run(config, workdir)
