"""Shared by the ``ablation_*.py`` configs: stage 1 or 2 with one model switch on."""
from agame_jax.train.defaults import base_config


def ablation(switch: str, stage: str = "stage1"):
    if stage not in ("stage1", "stage2"):
        raise ValueError(f"ablation configs take stage1 or stage2, got {stage!r}")
    config = base_config()
    if stage == "stage2":
        from configs.stage2 import stage2
        config = stage2(config)
    if switch not in config.model:
        raise ValueError(f"unknown model switch {switch!r}")
    config.model[switch] = True
    config.lock()
    return config
