"""A-GAME as the authors trained and released it (REFERENCE.md), model part.

    python -c "from configs.stage1 import get_config; print(get_config())"

``get_config().model`` is what ``agame_jax.init_variables`` and ``agame_jax.Segmenter``
take. The training fields of stage 1 (data, schedule, checkpoints) arrive with
``train.py``; until then this file holds the model alone.
"""
import ml_collections

from agame_jax.config import ModelConfig


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ModelConfig().to_config_dict()
    config.lock()
    return config
