"""Table 1 ablation ``appearance_softmax``: ``model.appearance_softmax=True`` on stage 1
(default), stage 2 or, with ``:quickstart``, the quickstart (synthetic data, a CPU).

    python train.py --config configs/ablation_appearance_softmax.py --workdir runs/ablation_appearance_softmax ...
    python train.py --config configs/ablation_appearance_softmax.py:stage2 --workdir runs/ablation_appearance_softmax_s2 \\
        --config.train.init_checkpoint=runs/ablation_appearance_softmax ...

Everything else is configs/stage1.py or configs/stage2.py.
"""
from configs.ablations import ablation


def get_config(stage="stage1"):
    return ablation("appearance_softmax", stage)
