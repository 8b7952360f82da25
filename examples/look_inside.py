# %% [markdown]
# # Looking inside A-GAME's appearance model
#
# A script in cells (`# %%`: run it whole with `python examples/look_inside.py`, or cell by
# cell in VS Code / Jupyter with jupytext). On a CPU it takes about a minute. It uses the
# small model trained on the quickstart's synthetic videos that ships in
# `agame_jax/demo_model` (made by the command in `examples/README.md`);
# `--checkpoint DIR` takes another, `--figures DIR` writes the figures elsewhere than
# `examples/figures/`, `--quick` runs on a smaller video with fewer rates (the tests).
#
# 1. the per-component posteriors of the mixture on one frame (the paper's Fig. 3), with
#    the model's own predictions fed back (as at test time) and with the ground truth;
# 2. how the mixture drifts over a video, and what the update rate λ does to it;
# 3. where the training gradient goes: through the scored features, through the fitted
#    state, or elsewhere.

# %%
import argparse
import dataclasses
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import agame_jax  # noqa: E402
from agame_jax import checkpoint, research  # noqa: E402
from agame_jax.data.synthetic import make_video  # noqa: E402
from agame_jax.evaluation.metrics import region_similarity  # noqa: E402
from agame_jax.losses import clip_loss  # noqa: E402
from agame_jax.model.agame import AGame  # noqa: E402

HERE = Path(__file__).resolve().parent
parser = argparse.ArgumentParser()
parser.add_argument("--checkpoint", type=Path, default=agame_jax.DEMO_MODEL)
parser.add_argument("--figures", type=Path, default=HERE / "figures")
parser.add_argument("--quick", action="store_true")
args, _ = parser.parse_known_args()        # known only: a notebook kernel adds its own
args.figures.mkdir(parents=True, exist_ok=True)
config, variables = checkpoint.load_variables(args.checkpoint)
print(f"model: {args.checkpoint} (appearance model {config.appearance!r})")

# A synthetic video like the quickstart's validation ones: two objects, each with a
# look-alike distractor (same texture, another shape).
size, num_frames = (64, 5) if args.quick else (128, 12)
video = make_video(np.random.default_rng(11), num_frames=num_frames, height=size, width=size,
                   num_objects=2, num_distractors=2)
trace = research.trace(config, variables, video.frames, video.labels[0])
oracle = research.trace(config, variables, video.frames, video.labels[0], feedback="oracle",
                        oracle_labels=video.labels, record=("probs", "posteriors"))

# %% [markdown]
# ## 1. Per-component posteriors (Fig. 3)
# Components: 0 background, 1 object, 2 "hard object" (object pixels the background
# Gaussian explains), 3 "distractor" (background pixels the object Gaussian explains).
# Top row: the mixture updated with the model's own predictions, as at test time;
# bottom row: updated with the ground truth (`feedback="oracle"`), what the update rule
# would make of perfect labels.

# %%
t, obj = min(6, num_frames - 1), 0
names = ["background", "object", "hard object", "distractor"]
columns = 3 + trace.posteriors.shape[-1]
fig, rows = plt.subplots(2, columns, figsize=(2.2 * columns, 5.2))
for axes, run, label in ((rows[0], trace, "model feedback"), (rows[1], oracle, "oracle feedback")):
    post = run.posteriors[t, obj]                                      # [h, w, K]
    axes[0].imshow(video.frames[t])
    axes[0].set_title(f"frame {t}")
    axes[0].set_ylabel(label)
    axes[1].imshow(video.labels[t] == obj + 1, cmap="gray")
    axes[1].set_title(f"object {obj + 1}")
    axes[2].imshow(run.probs[t, obj + 1], vmin=0, vmax=1, cmap="magma")
    axes[2].set_title("prediction")
    for k in range(post.shape[-1]):
        axes[3 + k].imshow(post[..., k], vmin=0, vmax=1, cmap="viridis")
        axes[3 + k].set_title(names[k] if k < len(names) else f"component {k}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
fig.tight_layout()
fig.savefig(args.figures / "posteriors.png", dpi=110)
print(f"wrote {args.figures / 'posteriors.png'}")

# %% [markdown]
# ## 2. Drift of the mixture, and the update rate
# The object component's mean after each frame's update, as its distance from the
# first frame's; then the same video with other update rates λ and the per-frame J
# (region similarity) it gives.

# %%
means = trace.states.appearance.mean                                   # [T, O, K, D]
drift = np.linalg.norm(means[:, obj, 1] - means[0, obj, 1], axis=-1)
rates = [0.1, 1.0] if args.quick else [0.0, 0.05, 0.1, 0.3, 1.0]
jaccard = {}
for rate in rates:
    cfg = dataclasses.replace(config, update_rate=rate)
    tr = trace if rate == config.update_rate else research.trace(
        cfg, variables, video.frames, video.labels[0], record=("probs",))
    labels = np.argmax(tr.probs, axis=1)
    jaccard[rate] = [region_similarity(labels[i] == obj + 1, video.labels[i] == obj + 1)
                     for i in range(1, len(labels))]
fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
a.plot(drift, marker="o")
a.set_xlabel("frame")
a.set_ylabel("|mean − first mean|")
a.set_title(f"object component drift (λ = {config.update_rate})")
for rate in rates:
    b.plot(range(1, len(video.frames)), jaccard[rate], marker=".", label=f"λ = {rate}")
b.set_xlabel("frame")
b.set_ylabel(f"J of object {obj + 1}")
b.legend(fontsize=7)
fig.tight_layout()
fig.savefig(args.figures / "drift_and_update_rate.png", dpi=110)
print(f"wrote {args.figures / 'drift_and_update_rate.png'}; mean J by rate: "
      + ", ".join(f"{r}: {np.mean(jaccard[r]):.3f}" for r in rates))

# %% [markdown]
# ## 3. Where the gradient goes
# The training loss on a 4-frame clip, its gradient split by path
# (`research.gradient_paths`), summarised per module as a norm. Only the heads are
# differentiated (a backbone's share would all be "elsewhere").

# %%
model = AGame(config)
clip = video.frames[None, :4]
clip_labels = (video.labels[None, :4] == obj + 1).astype(np.uint8)
modules = ["appearance", "mask_prop", "fusion", "upsampler"]


def loss(heads):
    v = {"params": {**variables["params"], **heads}, "batch_stats": variables["batch_stats"]}
    return clip_loss(model, v, clip, clip_labels, train=False)[0]["loss"]


paths = research.gradient_paths(loss, {m: variables["params"][m] for m in modules})
norm = lambda tree: float(np.sqrt(sum(np.sum(np.square(np.asarray(x)))
                                      for x in jax.tree_util.tree_leaves(tree))))
fig, ax = plt.subplots(figsize=(7.5, 3))
width = 0.27
for i, part in enumerate(["via_features", "via_state", "elsewhere"]):
    ax.bar(np.arange(len(modules)) + (i - 1) * width,
           [norm(paths[part][m]) for m in modules], width, label=part)
ax.set_xticks(range(len(modules)), modules)
ax.set_ylabel("gradient norm")
ax.set_yscale("symlog", linthresh=1e-4)
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
fig.savefig(args.figures / "gradient_paths.png", dpi=110)
print(f"wrote {args.figures / 'gradient_paths.png'}")
for m in modules:
    print(f"  {m:11s} " + "  ".join(f"{p} {norm(paths[p][m]):.3g}"
                                    for p in ("via_features", "via_state", "elsewhere")))
