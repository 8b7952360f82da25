"""Table 1 ablation ``no_appearance``: ``model.no_appearance=True`` on stage 1
(default), stage 2 or, with ``:quickstart``, the quickstart (synthetic data, a CPU).

    python train.py --config configs/ablation_no_appearance.py --workdir runs/ablation_no_appearance ...
    python train.py --config configs/ablation_no_appearance.py:stage2 --workdir runs/ablation_no_appearance_s2 \\
        --config.train.init_checkpoint=runs/ablation_no_appearance ...

Everything else is configs/stage1.py or configs/stage2.py.
"""
from configs.ablations import ablation


def get_config(stage="stage1"):
    return ablation("no_appearance", stage)
