"""The quickstart with another appearance model: ``configs/variant.py:NAME``.

    python train.py --config configs/variant.py:prototype --workdir runs/prototype
    python train.py --config configs/variant.py:agame-em --workdir runs/em \\
        --config.model.appearance_options="{'k': 3}"

NAME is any registered appearance model (``agame_jax.appearance.registered()``); the
rest is configs/quickstart.py (synthetic videos, a reduced model, a few minutes on a CPU).
"""
from agame_jax import appearance


def get_config(name="agame"):
    from configs.quickstart import get_config as quickstart
    appearance.get(name)                      # an unknown name lists the registered ones
    config = quickstart()
    config.unlock()
    config.model.appearance = name
    config.lock()
    return config
