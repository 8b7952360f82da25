"""Stage 2 of A-GAME's training (REFERENCE.md): DAVIS-2017 and YouTube-VOS sampled with
equal probability, 480×864 clips of 14 frames, batch 2, lr 1e-5 ×0.985 per epoch, weight
decay 1e-6, 100 epochs, fine loss only; starts from the end of stage 1 with a fresh
optimiser; the best checkpoint by J&F on the 300 held-out YouTube-VOS videos is kept in
``WORKDIR/best``.

    python train.py --config configs/stage2.py --workdir runs/stage2 \\
        --config.train.init_checkpoint=runs/stage1 \\
        --config.data.davis_root=/data/DAVIS --config.data.ytvos_root=/data/YouTubeVOS

Add ``--config.train.remat=True`` if the step does not fit the GPU's memory.
"""
from agame_jax.train.defaults import base_config


def stage2(config):
    """Turn a stage-1 config into stage 2 (shared with the ablation configs)."""
    d, t, v = config.data, config.train, config.validation
    d.weights = "1,1"
    d.clip_length, d.height, d.width = 14, 480, 864
    t.batch_size = 2
    t.learning_rate, t.lr_decay_per_epoch, t.weight_decay = 1e-5, 0.985, 1e-6
    t.num_epochs = 100
    t.coarse_weight = 0.0
    t.require_init_checkpoint = True
    v.every = 2000
    return config


def get_config():
    config = stage2(base_config())
    config.lock()
    return config
