# %% [markdown]
# # Writing and training an appearance model of your own
#
# An appearance model is a flax module with five methods, registered under a name
# (`agame_jax.appearance`). Every entry point (`init_variables`, `Segmenter`, the
# training step, `train.py`, `evaluate.py`, `research.trace`) builds whatever
# `ModelConfig.appearance` names. Here: a one-Gaussian-per-class model with a single
# learned variance per class (no residual components), trained end to end through time
# on the quickstart's synthetic videos, then compared with A-GAME's shipped model on a
# held-out video. About a minute on a 2-core CPU (`--steps` trains longer; `--tiny` is the
# tests' setting: a reduced model, a few steps).

# %%
import argparse
import tempfile
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from agame_jax import DEMO_MODEL, Segmenter
from agame_jax.appearance import AppearanceModel, register
from agame_jax.data.synthetic import make_video
from agame_jax.evaluation.metrics import region_similarity


@register("two-gaussians")
class TwoGaussians(AppearanceModel):
    """Background and object as one isotropic Gaussian each: the means are fitted from
    the soft labels and blended with rate ``rate``; the variances are learned."""

    @classmethod
    def num_scores(cls, config) -> int:
        return 2                                              # [background, object]

    def setup(self):
        self.proj = nn.Conv(self.config.appearance_dim, (1, 1))
        self.log_var = self.param("log_var", nn.initializers.zeros, (2,))

    def project(self, s16):                                   # [h, w, C] -> [h, w, D]
        return self.proj(s16.astype(jnp.float32))

    def initial(self, feats, labels):                         # -> means [2, D]
        w, x = labels.reshape(-1, 2), feats.reshape(-1, feats.shape[-1])
        return (w.T @ x) / (w.sum(0)[:, None] + 1.0)          # +1: an absent object stays 0

    def update(self, means, feats, labels):
        rate = self.config.appearance_option("rate", 0.1)
        return (1 - rate) * means + rate * self.initial(feats, labels)

    def score(self, means, feats):                            # -> [h, w, 2] log-likelihoods
        sq = jnp.sum(jnp.square(feats[:, :, None, :] - means), axis=-1)
        dim = feats.shape[-1]
        return -0.5 * (sq * jnp.exp(-self.log_var) + dim * self.log_var)


# %% [markdown]
# ## Train it
# The quickstart's configuration with the model swapped by name. A config file would do
# the same: import the module that registers the model, set `config.model.appearance`.

# %%
HERE = Path(__file__).resolve().parent
parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--workdir", type=Path, default=None)
parser.add_argument("--tiny", action="store_true")
args, _ = parser.parse_known_args()        # known only: a notebook kernel adds its own

import sys  # noqa: E402
sys.path.insert(0, str(HERE.parent))
from configs import quickstart  # noqa: E402
from agame_jax.train import train_and_evaluate  # noqa: E402

config = quickstart.get_config()
config.unlock()
config.model.appearance = "two-gaussians"
config.train.num_steps = args.steps
config.train.log_every = max(1, args.steps // 6)
config.train.checkpoint_every = args.steps
config.validation.every = args.steps
size = 128
if args.tiny:                                  # the tests: reduced widths, 32×32 clips
    size = 32
    config.model.update(backbone_width=8, appearance_dim=16, mask_prop_channels=16,
                        fusion_channels=(16, 8), upsampler_channels=8)
    config.data.update(height=size, width=size, clip_length=3, min_start_pixels=20)
    config.validation.source = ""
workdir = args.workdir or Path(tempfile.mkdtemp(prefix="two-gaussians-"))
final = train_and_evaluate(config, workdir)
validated = f"; validation J&F {final['JF']:.3f}" if "JF" in final else ""
print(f"trained {final['step']} steps: loss {final['loss']:.3f}{validated}; workdir {workdir}")

# %% [markdown]
# ## Use it
# The workdir's best export loads like any checkpoint; the config it records names the
# model, so this process (which imported the class above) rebuilds it.

# %%
video = make_video(np.random.default_rng(5), num_frames=8, height=size, width=size,
                   num_objects=2, num_distractors=2)
mine = Segmenter.from_checkpoint(workdir)
labels, _ = mine(video.frames, {0: video.labels[0]})
scores = {"two-gaussians": labels}
if not args.tiny:
    shipped, _ = Segmenter.from_checkpoint(DEMO_MODEL)(video.frames,
                                                                      {0: video.labels[0]})
    scores["agame (shipped, 800 steps)"] = shipped
for name, pred in scores.items():
    j = np.mean([region_similarity(pred[t] == i, video.labels[t] == i)
                 for t in range(1, len(pred)) for i in (1, 2)])
    print(f"{name:28s} mean J on a held-out video: {j:.3f}")
