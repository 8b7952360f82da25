"""The generative appearance module (paper §3.2) built on ``agame_jax.gmm``.

A learned 1×1 projection maps layer4 features to D channels; a mixture of K diagonal
Gaussians in that space is fitted in closed form from soft labels and scores every
pixel. Component order follows the authors' code: 0 background, 1 object,
2 "hard object" (residual of the background fit), 3 "distractor" (residual of the object
fit). The fitting and scoring are pure functions; only the projection and the
variance offsets are parameters.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from agame_jax import gmm
from agame_jax.config import ModelConfig


def fit_mixture(feats: jax.Array, soft_labels: jax.Array, var_offset: jax.Array,
                prior_count: float = 1.0, residual: bool = True) -> gmm.Gaussians:
    """Fit the A-GAME mixture to one frame (eqs. 3, 5, 6).

    Args:
      feats: ``[..., N, D]`` projected features (float32).
      soft_labels: ``[..., N, 2]`` soft labels ``[y_bg, y_obj]`` at the features' stride.
      var_offset: ``[K, D]`` positive variance offsets (softplus of the parameter).
      prior_count: pseudo-count of ``gmm.fit``.
      residual: also fit the two residual components (K = 4); otherwise K = 2.

    Returns:
      ``Gaussians [..., K, D]``. The residual components are fitted with weights
      ``relu(p − y)``, where ``p`` is the softmax of the freshly fitted base components'
      scores on the same frame: component 2 from the background channel (object pixels
      that look like background), component 3 from the object channel.
    """
    soft_labels = soft_labels.astype(jnp.float32)
    base = gmm.fit(feats, soft_labels, var_offset[:2], prior_count)
    if not residual:
        return base
    p = jax.nn.softmax(gmm.log_likelihood(base, feats), axis=-1)
    res = gmm.fit(feats, nn.relu(p - soft_labels), var_offset[2:4], prior_count)
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=-2), base, res)


class AppearanceModule(nn.Module):
    """Projection + variance offsets; fits, updates and scores the mixture.

    Methods take one object's maps without a batch axis (vmap for more):
    ``project(s16 [h, w, C]) -> [h, w, D]`` float32 features,
    ``initial(feats [h, w, D], labels [h, w, 2]) -> Gaussians [K, D]``,
    ``update(g, feats, labels) -> Gaussians``, ``score(g, feats) -> [h, w, K]``.
    """

    config: ModelConfig = ModelConfig()

    def setup(self):
        cfg = self.config
        # The projection feeds the float32 mixture math, so it runs in float32 too
        # (one 1×1 conv at stride 16, shared by all objects: cheap).
        self.conv_in = nn.Conv(cfg.appearance_dim, (1, 1), dtype=jnp.float32,
                               precision=jax.lax.Precision.HIGHEST,
                               param_dtype=cfg.params_dtype, name="conv_in")
        self.cov_reg = self.param(
            "cov_reg", nn.initializers.constant(cfg.var_offset_init),
            (cfg.num_components, cfg.appearance_dim), cfg.params_dtype)

    def project(self, s16: jax.Array) -> jax.Array:
        """Layer4 features ``[..., h, w, C]`` → appearance features ``[..., h, w, D]`` (f32)."""
        return self.conv_in(s16.astype(jnp.float32))

    def var_offset(self) -> jax.Array:
        """softplus of the learned offsets, ``[K, D]`` float32."""
        return jax.nn.softplus(self.cov_reg.astype(jnp.float32))

    def _fit(self, feats, labels):
        cfg = self.config
        h, w, d = feats.shape
        g = fit_mixture(feats.reshape(h * w, d), labels.reshape(h * w, -1), self.var_offset(),
                        cfg.prior_count, residual=not cfg.unimodal_appearance)
        if cfg.no_fit_gradient:
            g = jax.lax.stop_gradient(g)
        return g

    def initial(self, feats: jax.Array, labels: jax.Array) -> gmm.Gaussians:
        """First-frame mixture from features ``[h, w, D]`` and soft labels ``[h, w, 2]``."""
        return self._fit(feats, labels)

    def update(self, g: gmm.Gaussians, feats: jax.Array, labels: jax.Array) -> gmm.Gaussians:
        """Refit on this frame alone and blend with rate λ (eq. 4)."""
        if self.config.no_appearance_update:
            return g
        return gmm.blend(g, self._fit(feats, labels), self.config.update_rate)

    def score(self, g: gmm.Gaussians, feats: jax.Array) -> jax.Array:
        """Raw log-likelihoods ``[h, w, K]`` (eq. 8), or their softmax in that ablation."""
        h, w, d = feats.shape
        s = gmm.log_likelihood(g, feats.reshape(h * w, d)).reshape(h, w, -1)
        if self.config.appearance_softmax:
            s = jax.nn.softmax(s, axis=-1)
        return s
