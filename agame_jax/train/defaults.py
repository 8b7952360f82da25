"""Every training config field with its default (the authors' stage 1, REFERENCE.md).

Config files start from ``base_config()``, change what differs and lock the result, so a
mistyped field on the command line (``--config.train.batch_sise=2``) fails.
"""
from __future__ import annotations

import ml_collections

from agame_jax.config import ModelConfig

# The 300 YouTube-VOS training videos the authors hold out for stage-2 model selection,
# and the 3171 they train on; shipped with the package (agame_jax/splits/).
HELDOUT_LIST = "agame_jax/splits/ytvos_heldout_300.txt"
TRAIN_LIST = "agame_jax/splits/ytvos_train_3171.txt"


def base_config() -> ml_collections.ConfigDict:
    """All fields, unlocked. See the field comments; configs/*.py override them."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ModelConfig().to_config_dict()

    c.data = ml_collections.ConfigDict()
    d = c.data
    d.sources = "davis2017,ytvos"       # comma list: synthetic, davis2017, ytvos, synthvos, tfds_davis
    d.weights = ""                      # "" = concatenate (one clip per video per pass); or "1,1"
    d.clip_length = 8
    d.height = 240
    d.width = 432
    d.objects_per_clip = 1              # the authors' recipe; >1 tracks several, one loss each
    d.min_start_pixels = 100
    d.davis_min_object_pixels = 25
    d.ytvos_min_object_pixels = 10
    d.hflip = True
    d.scale_jitter = 0.0                # off by default, as the authors
    d.colour_jitter = 0.0
    d.on_error = "stop"                 # or "skip": a bad video is skipped with a warning
    d.davis_root = ""
    d.davis_split = "train"
    d.ytvos_root = ""
    d.ytvos_split = "train"
    d.ytvos_video_list = TRAIN_LIST     # "" = every video of the split
    d.ytvos_require_size = "720x1280"   # the authors train on the 720p videos only; "" = all
    d.synthvos_objects = ""             # folder of image+mask pairs (e.g. MSRA10k)
    d.synthvos_backgrounds = ""         # folder of images (e.g. PASCAL VOC 2012 JPEGImages)
    d.synthvos_max_objects = 5
    d.synthetic_objects = 2
    d.synthetic_distractors = 2
    d.procedural_videos = 1000          # weight of a procedural source in a concatenation
    d.tfds_davis_name = "davis/480p"
    d.tfds_data_dir = ""
    d.num_threads = 4                   # reader threads
    d.prefetch = 8                      # batches read ahead
    d.worker_processes = 0              # >0: decode in that many processes

    c.train = ml_collections.ConfigDict()
    t = c.train
    t.batch_size = 4                    # clips per step, over all devices and hosts
    t.learning_rate = 1e-4
    t.lr_decay_per_epoch = 0.975
    t.weight_decay = 1e-5
    t.clips_per_epoch = 0               # 0 = one clip per training video (the authors' epoch)
    t.num_epochs = 160
    t.num_steps = -1                    # >0 overrides num_epochs
    t.coarse_weight = 1.0               # stage 2: 0 (fine loss only)
    t.include_first_frame = True        # average the loss over frame 0 too, as the authors
    t.remat = False                     # jax.checkpoint over the per-frame step
    t.nonfinite = "stop"                # a step with a non-finite loss or gradient: "stop"
                                        # training, or "skip" its update and count it
    t.init_checkpoint = ""              # start from these weights (stage 2: a stage-1 run)
    t.require_init_checkpoint = False   # stage 2: refuse to start without init_checkpoint
    t.backbone_init = ""                # converted torchvision ResNet-101 (ImageNet) weights
    t.log_every = 50
    t.checkpoint_every = 1000
    t.keep_checkpoints = 3
    t.distributed = False               # call jax.distributed.initialize() (several hosts)
    t.coordinator_address = ""          # with distributed: "host:port" of process 0; "" = from
                                        # JAX_COORDINATOR_ADDRESS or the cluster
    t.num_processes = 0                 # with distributed: 0 = from the cluster
    t.process_id = -1                   # with distributed: this process's id; -1 = from the cluster

    c.validation = ml_collections.ConfigDict()
    v = c.validation
    v.source = "ytvos"                  # "", synthetic, ytvos (held-out list), davis2017
    v.every = 5000                      # steps; the last step always validates
    v.ytvos_video_list = HELDOUT_LIST
    v.davis_split = "val"
    v.num_videos = 0                    # 0 = all
    v.max_frames = 0                    # 0 = whole videos
    v.height = 0                        # 0 = native resolution
    v.width = 0
    v.synthetic_frames = 12
    v.synthetic_objects = 2
    v.patience = 0                      # stop after this many validations without a better J&F
    v.num_images = 3                    # videos drawn as overlays in TensorBoard
    v.chunk_size = 32
    return c
