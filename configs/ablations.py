"""Shared by the ``ablation_*.py`` configs: stage 1, stage 2 or the quickstart with one
model switch on."""
from agame_jax.train.defaults import base_config

STAGES = ("stage1", "stage2", "quickstart")


def ablation(switch: str, stage: str = "stage1"):
    if stage not in STAGES:
        raise ValueError(f"ablation configs take one of {STAGES}, got {stage!r}")
    if stage == "quickstart":
        from configs.quickstart import get_config as quickstart
        config = quickstart()
        config.unlock()
    else:
        config = base_config()
    if stage == "stage2":
        from configs.stage2 import stage2
        config = stage2(config)
    if switch not in config.model:
        raise ValueError(f"unknown model switch {switch!r}")
    config.model[switch] = True
    config.lock()
    return config
