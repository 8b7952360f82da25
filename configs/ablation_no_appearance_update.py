"""Table 1 ablation ``no_appearance_update``: ``model.no_appearance_update=True`` on stage 1
(default), stage 2 or, with ``:quickstart``, the quickstart (synthetic data, a CPU).

    python train.py --config configs/ablation_no_appearance_update.py --workdir runs/ablation_no_appearance_update ...
    python train.py --config configs/ablation_no_appearance_update.py:stage2 --workdir runs/ablation_no_appearance_update_s2 \\
        --config.train.init_checkpoint=runs/ablation_no_appearance_update ...

Everything else is configs/stage1.py or configs/stage2.py.
"""
from configs.ablations import ablation


def get_config(stage="stage1"):
    return ablation("no_appearance_update", stage)
