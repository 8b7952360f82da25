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
from agame_jax.appearance import AppearanceModel, register
from agame_jax.config import ModelConfig


def fit_mixture(feats: jax.Array, soft_labels: jax.Array, var_offset: jax.Array,
                prior_count: float = 1.0, residual: bool = True,
                covariance: str = "diagonal") -> gmm.Gaussians:
    """Fit the A-GAME mixture to one frame (eqs. 3, 5, 6).

    Args:
      feats: ``[..., N, D]`` projected features (float32).
      soft_labels: ``[..., N, 2]`` soft labels ``[y_bg, y_obj]`` at the features' stride.
      var_offset: ``[K, D]`` positive variance offsets (softplus of the parameter).
      prior_count: pseudo-count of ``gmm.fit``.
      residual: also fit the two residual components (K = 4); otherwise K = 2.
      covariance: ``gmm.COVARIANCES``, within each of the two fits.

    Returns:
      ``Gaussians [..., K, D]``. The residual components are fitted with weights
      ``relu(p − y)``, where ``p`` is the softmax of the freshly fitted base components'
      scores on the same frame: component 2 from the background channel (object pixels
      that look like background), component 3 from the object channel.
    """
    soft_labels = soft_labels.astype(jnp.float32)
    base = gmm.fit(feats, soft_labels, var_offset[:2], prior_count, covariance)
    if not residual:
        return base
    res = gmm.fit(feats, residual_weights(base, feats, soft_labels), var_offset[2:4],
                  prior_count, covariance)
    return jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=-2), base, res)


def residual_weights(base: gmm.Gaussians, feats: jax.Array, soft_labels: jax.Array) -> jax.Array:
    """The residual components' fit weights ``relu(p − y)`` ``[..., N, 2]`` (eqs. 5, 6):
    ``p`` the posteriors of the two ``base`` components on ``feats [..., N, D]``, ``y`` the
    soft labels. Channel 0 (→ component 2): object pixels that look like background;
    channel 1 (→ component 3): background pixels that look like the object."""
    p = jax.nn.softmax(gmm.log_likelihood(base, feats), axis=-1)
    return nn.relu(p - soft_labels.astype(jnp.float32))


def _split_bf16(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``a ≈ hi + lo`` with both bfloat16: 16 significant bits instead of 8."""
    a = a.astype(jnp.float32)
    hi = a.astype(jnp.bfloat16)
    return hi, (a - hi.astype(jnp.float32)).astype(jnp.bfloat16)


def _matmul_f32(x, w):
    return jnp.einsum("...c,cd->...d", x, w, preferred_element_type=jnp.float32)


@jax.custom_vjp
def bf16_input_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [..., C] bfloat16 @ w [C, D] float32 -> [..., D] float32`` on bfloat16 tensor
    cores, to ~float32 accuracy.

    ``x`` is exact in bfloat16 and ``w`` is split into two bfloat16 terms, so two bfloat16
    products with float32 accumulation give what a float32 product gives, up to a relative
    ~2⁻¹⁶ on the weights. The backward pass splits the float32 cotangent the same way for
    the weight gradient; the input's gradient is rounded to bfloat16 like ``x`` itself.
    (A float32 product would run on a GPU's CUDA cores, not its bfloat16 tensor cores.)
    """
    hi, lo = _split_bf16(w)
    return _matmul_f32(x, hi) + _matmul_f32(x, lo)


def _bf16_input_matmul_fwd(x, w):
    return bf16_input_matmul(x, w), (x, w)


def _bf16_input_matmul_bwd(residuals, g):
    x, w = residuals
    g_hi, g_lo = _split_bf16(g)
    w_hi, w_lo = _split_bf16(w)
    dx = (_matmul_f32(g_hi, w_hi.T) + _matmul_f32(g_lo, w_hi.T)
          + _matmul_f32(g_hi, w_lo.T)).astype(x.dtype)
    xs = x.reshape(-1, x.shape[-1]).T                                     # [C, N]
    flat = lambda a: a.reshape(-1, a.shape[-1])                           # [N, D]
    dw = _matmul_f32(xs, flat(g_hi)) + _matmul_f32(xs, flat(g_lo))
    return dx, dw.astype(w.dtype)


bf16_input_matmul.defvjp(_bf16_input_matmul_fwd, _bf16_input_matmul_bwd)


class Projection(nn.Module):
    """The appearance module's 1×1 projection (``nn.Conv``'s parameters: ``kernel [1, 1,
    C, D]``, ``bias [D]``), computed to float32 accuracy: in float32 at full precision for
    float32 inputs, by ``bf16_input_matmul`` for bfloat16 inputs."""

    features: int
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (1, 1, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        w = kernel[0, 0].astype(jnp.float32)
        if x.dtype == jnp.bfloat16:
            y = bf16_input_matmul(x, w)
        else:
            y = jnp.einsum("...c,cd->...d", x.astype(jnp.float32), w,
                           precision=jax.lax.Precision.HIGHEST)
        return y + bias.astype(jnp.float32)


@register("agame")
class AppearanceModule(AppearanceModel):
    """A-GAME's generative appearance model (registered as ``"agame"``): projection +
    variance offsets; fits, updates and scores the mixture.

    Methods take one object's maps without a batch axis (vmap for more):
    ``project(s16 [h, w, C]) -> [h, w, D]`` float32 features,
    ``initial(feats [h, w, D], labels [h, w, 2]) -> Gaussians [K, D]``,
    ``update(g, feats, labels) -> Gaussians``, ``score(g, feats) -> [h, w, K]``.
    """

    config: ModelConfig = ModelConfig()
    covariance = "diagonal"        # gmm.COVARIANCES; variants set another

    @classmethod
    def num_scores(cls, config: ModelConfig) -> int:
        return config.num_components

    def setup(self):
        cfg = self.config.resolved()
        # The projection feeds the float32 mixture math, so it is computed to float32
        # accuracy (see Projection; one 1×1 conv at stride 16, shared by all objects).
        self.conv_in = Projection(cfg.appearance_dim, cfg.param_dtype)
        self.cov_reg = self.param(
            "cov_reg", nn.initializers.constant(cfg.var_offset_init),
            (cfg.num_components, cfg.appearance_dim), cfg.param_dtype)

    def project(self, s16: jax.Array) -> jax.Array:
        """Layer4 features ``[..., h, w, C]`` → appearance features ``[..., h, w, D]`` (f32)."""
        return self.conv_in(s16)

    def var_offset(self) -> jax.Array:
        """softplus of the learned offsets, ``[K, D]`` float32."""
        return jax.nn.softplus(self.cov_reg.astype(jnp.float32))

    def _fit(self, feats, labels):
        cfg = self.config.resolved()
        h, w, d = feats.shape
        g = fit_mixture(feats.reshape(h * w, d), labels.reshape(h * w, -1), self.var_offset(),
                        cfg.prior_count, residual=not cfg.unimodal_appearance,
                        covariance=self.covariance)
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

    def inspect(self, g: gmm.Gaussians, feats: jax.Array, labels: jax.Array) -> dict:
        """``posteriors [h, w, K]``: each component's posterior under the current mixture
        (equal weights; the paper's Fig. 3); with the residual components,
        ``residual_weights [h, w, 2]``: the weights this frame's refit gives them."""
        cfg = self.config.resolved()
        h, w, d = feats.shape
        x = feats.reshape(h * w, d)
        out = {"posteriors": gmm.posteriors(g, x).reshape(h, w, -1)}
        if not cfg.unimodal_appearance:
            y = labels.reshape(h * w, 2).astype(jnp.float32)
            base = gmm.fit(x, y, self.var_offset()[:2], cfg.prior_count, self.covariance)
            out["residual_weights"] = residual_weights(base, x, y).reshape(h, w, 2)
        return out

    def score(self, g: gmm.Gaussians, feats: jax.Array) -> jax.Array:
        """Raw log-likelihoods ``[h, w, K]`` (eq. 8), or their softmax in that ablation."""
        h, w, d = feats.shape
        s = gmm.log_likelihood(g, feats.reshape(h * w, d)).reshape(h, w, -1)
        if self.config.appearance_softmax:
            s = jax.nn.softmax(s, axis=-1)
        return s
