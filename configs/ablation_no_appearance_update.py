"""Table 1 ablation ``no_appearance_update``: stage 1 (default) or stage 2 with ``model.no_appearance_update=True``.

    python train.py --config configs/ablation_no_appearance_update.py --workdir runs/ablation_no_appearance_update ...
    python train.py --config configs/ablation_no_appearance_update.py:stage2 --workdir runs/ablation_no_appearance_update_s2 \\
        --config.train.init_checkpoint=runs/ablation_no_appearance_update ...

Everything else is configs/stage1.py or configs/stage2.py.
"""
from configs.ablations import ablation


def get_config(stage="stage1"):
    return ablation("no_appearance_update", stage)
