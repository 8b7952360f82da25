"""Stage 1 of A-GAME's training (REFERENCE.md, "Training"): DAVIS-2017 train + YouTube-VOS
train (the authors' 3171 videos, 720p ones only), 240×432 clips of 8 frames, batch 4,
Adam lr 1e-4 with coupled L2 1e-5, ×0.975 per epoch of one clip per video, 160 epochs,
fine + coarse loss. Validates on the 300 held-out YouTube-VOS videos.

    python train.py --config configs/stage1.py --workdir runs/stage1 \\
        --config.data.davis_root=/data/DAVIS --config.data.ytvos_root=/data/YouTubeVOS \\
        --config.train.backbone_init=weights/resnet101_imagenet

Add SynthVOS as in the paper with ``--config.data.sources=davis2017,ytvos,synthvos``
and its two folders. ``get_config().model`` is the released model (``Segmenter``,
``init_variables``).
"""
from agame_jax.train.defaults import base_config


def get_config():
    config = base_config()          # the defaults are stage 1
    config.lock()
    return config
