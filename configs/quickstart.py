"""Quickstart: A-GAME on built-in synthetic videos, small enough to train on a laptop CPU.

    python train.py --config configs/quickstart.py --workdir runs/quickstart

No download: clips come from agame_jax.data.synthetic (textured objects with look-alike
distractors). The model is A-GAME with every part in place but reduced widths and
depths (a 4-block ResNet of width 16, 32-dim appearance features), the backbone random
and frozen below layer4 as in the paper's recipe; 128×128 clips of 4 frames. It
validates on 8 held-out synthetic videos (12 frames, 2 objects each) before training
and every 100 steps, and exports the best model to WORKDIR/best, which evaluate.py and
agame_jax.Segmenter.from_checkpoint load.
"""
from agame_jax.config import ModelConfig
from agame_jax.train.defaults import base_config


def get_config():
    config = base_config()
    config.model = ModelConfig(
        dtype="float32", backbone_blocks=(1, 1, 1, 1), backbone_width=16, appearance_dim=32,
        mask_prop_channels=32, fusion_channels=(32, 16), upsampler_channels=16,
    ).to_config_dict()
    d = config.data
    d.sources = "synthetic"
    d.clip_length, d.height, d.width = 4, 128, 128
    d.synthetic_objects, d.synthetic_distractors = 2, 2
    d.objects_per_clip = 2
    d.min_start_pixels = 100
    d.num_threads = 2
    t = config.train
    t.batch_size = 4
    t.learning_rate = 1e-3
    t.lr_decay_per_epoch = 0.9
    t.clips_per_epoch = 400
    t.num_steps = 800
    t.include_first_frame = False
    t.log_every = 25
    t.checkpoint_every = 200
    v = config.validation
    v.source = "synthetic"
    v.every = 100
    v.num_videos = 8
    v.synthetic_frames = 12
    v.synthetic_objects = 2
    config.lock()
    return config
