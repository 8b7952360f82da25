"""Table 1 ablation ``no_mask_propagation``: ``model.no_mask_propagation=True`` on stage 1
(default), stage 2 or, with ``:quickstart``, the quickstart (synthetic data, a CPU).

    python train.py --config configs/ablation_no_mask_propagation.py --workdir runs/ablation_no_mask_propagation ...
    python train.py --config configs/ablation_no_mask_propagation.py:stage2 --workdir runs/ablation_no_mask_propagation_s2 \\
        --config.train.init_checkpoint=runs/ablation_no_mask_propagation ...

Everything else is configs/stage1.py or configs/stage2.py.
"""
from configs.ablations import ablation


def get_config(stage="stage1"):
    return ablation("no_mask_propagation", stage)
