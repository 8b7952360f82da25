# %% [markdown]
# # A-GAME's mixture on its own
#
# The appearance model is a set of pure functions on arrays (`agame_jax.gmm` and
# `agame_jax.model.appearance.fit_mixture`): no network, no video. Here it is fitted to
# two-dimensional "features" so that everything can be drawn: a background cloud, an
# object cloud, and a distractor (background pixels that look like the object). The
# script draws the four fitted components and their posteriors over the plane, then
# checks the gradient through the closed-form fit against finite differences.
# A few seconds on a CPU; the figure goes to `examples/figures/mixture_alone.png`.

# %%
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from agame_jax import gmm  # noqa: E402
from agame_jax.model.appearance import fit_mixture, residual_weights  # noqa: E402

FIGURES = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)

# 300 background pixels around (0, 0), 150 object pixels around (3, 2) and 60
# distractor pixels around (2.2, 1.2): labelled background, but closer to the object.
background = rng.normal([0.0, 0.0], [1.0, 0.8], size=(300, 2))
obj = rng.normal([3.0, 2.0], [0.6, 0.6], size=(150, 2))
distractor = rng.normal([2.2, 1.2], [0.3, 0.3], size=(60, 2))
x = jnp.asarray(np.concatenate([background, obj, distractor]), jnp.float32)     # [N, D]
is_obj = np.r_[np.zeros(300), np.ones(150), np.zeros(60)]
labels = jnp.asarray(np.stack([1 - is_obj, is_obj], -1), jnp.float32)           # [N, 2]
var_offset = jnp.full((4, 2), 0.05, jnp.float32)        # softplus(cov_reg) in the model

# %% [markdown]
# ## The fit (eqs. 3, 5, 6) and the posteriors
# Components 0 and 1 are fitted to the labels; 2 and 3 to what they leave unexplained:
# `relu(p − y)` with `p` the posteriors of the first two. Component 3 ends up on the
# distractor.

# %%
g = fit_mixture(x, labels, var_offset)                        # Gaussians [K=4, D]
weights = residual_weights(gmm.fit(x, labels, var_offset[:2]), x, labels)       # [N, 2]
print("means:\n", np.round(np.asarray(g.mean), 2))
print("residual weight mass (hard object, distractor):",
      np.round(np.asarray(weights.sum(0)), 1))

grid = np.stack(np.meshgrid(np.linspace(-3, 6, 120), np.linspace(-4, 5, 120)), -1)
post = np.asarray(gmm.posteriors(g, jnp.asarray(grid.reshape(-1, 2), jnp.float32)))
post = post.reshape(120, 120, 4)
names = ["background", "object", "hard object", "distractor"]
colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
fig, axes = plt.subplots(1, 5, figsize=(16, 3.4))
axes[0].scatter(*background.T, s=4, c="tab:blue", label="background")
axes[0].scatter(*obj.T, s=4, c="tab:orange", label="object")
axes[0].scatter(*distractor.T, s=4, c="tab:red", label="distractor (bg)")
for k in range(4):
    mean, var = np.asarray(g.mean[k]), np.asarray(g.var[k])
    axes[0].add_patch(Ellipse(mean, *(4 * np.sqrt(var)), fill=False, color=colours[k], lw=2))
axes[0].legend(fontsize=7, loc="upper left")
axes[0].set_title("features, components (2σ)")
for k in range(4):
    axes[k + 1].imshow(post[..., k], origin="lower", extent=(-3, 6, -4, 5), vmin=0, vmax=1)
    axes[k + 1].set_title(f"posterior: {names[k]}")
fig.tight_layout()
fig.savefig(FIGURES / "mixture_alone.png", dpi=100)
print(f"wrote {FIGURES / 'mixture_alone.png'}")

# %% [markdown]
# ## Gradients through the closed-form fit
# The fit is differentiable: here the loss is the log-likelihood that the mixture fitted
# on these points gives new object points (the training signal's shape), differentiated
# with respect to the features (what reaches the network) and the variance offsets, and
# checked against central differences along random directions, in float64 (the
# `gmm` functions compute in the inputs' precision, at least float32) so that the
# differences measure the derivative and not float32 rounding.
# (Not with respect to hard labels: `relu(p − y)` has its kink where they would move.)

# %%
with jax.enable_x64(True):
    x64, offset64 = x.astype(jnp.float64), var_offset.astype(jnp.float64)
    labels64 = labels.astype(jnp.float64)
    held_out = jnp.asarray(rng.normal([3.0, 2.0], [0.6, 0.6], size=(50, 2)), jnp.float64)

    def loss(x, var_offset):
        scores = gmm.log_likelihood(fit_mixture(x, labels64, var_offset), held_out)  # [M, 4]
        return jnp.mean(jax.nn.log_softmax(scores, axis=-1)[:, 1])

    grads = jax.grad(loss, argnums=(0, 1))(x64, offset64)
    eps = 1e-5
    worst = 0.0
    for i, (arg, grad) in enumerate(zip((x64, offset64), grads)):
        for seed in range(3):
            direction = jax.random.normal(jax.random.key(seed), arg.shape, jnp.float64)
            direction = direction / jnp.linalg.norm(direction)
            plus, minus = [x64, offset64], [x64, offset64]
            plus[i], minus[i] = arg + eps * direction, arg - eps * direction
            numeric = float(loss(*plus) - loss(*minus)) / (2 * eps)
            analytic = float(jnp.sum(grad * direction))
            error = abs(numeric - analytic) / max(abs(numeric), 1e-6)
            worst = max(worst, error)
            print(f"d loss / d {['features', 'var_offset'][i]} along direction {seed}: "
                  f"autodiff {analytic:+.7f}, finite difference {numeric:+.7f}")
print(f"largest relative difference: {worst:.1e}")
assert worst < 1e-5, "the gradient through the fit disagrees with finite differences"
