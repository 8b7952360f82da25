"""Built-in appearance models beside the stock ``"agame"`` (``agame_jax.appearance``).

Each is registered by name and takes its settings from ``config.appearance_options``:

``"agame-isotropic"``, ``"agame-tied"``
    A-GAME's mixture with one variance per component (the mean over channels), or one
    per channel shared by all components (``gmm.COVARIANCES``). Same parameters.
``"agame-learned-rate"``
    A-GAME's mixture whose update rate is learned, one per component:
    ``sigmoid(rate_logit)``, started at ``config.update_rate``.
``"agame-em"``
    ``k`` Gaussians per class (background, object) fitted by ``em_steps`` differentiable
    EM iterations (``gmm.fit_em``) instead of A-GAME's base + residual components; scores
    ``log π_j + log N_j`` of the 2k components. Options ``k`` (2), ``em_steps`` (3),
    ``covariance`` ("diagonal").
``"prototype"``
    Cosine similarity to a background and an object prototype (the soft-label-weighted
    means of the L2-normalised features), scaled by a learned temperature; blended with
    the update rate. 2 scores.
``"ridge"``
    A closed-form few-shot linear learner (the LWL/FRTM family): ridge regression from
    the features (and a constant) to the soft labels, ``W = (XᵀX + λI)⁻¹ XᵀY`` with a
    learned ``λ = softplus(·)``; the state holds ``XᵀX`` and ``XᵀY``, blended with the
    update rate, and the scores are ``X W``. Option ``dim`` (projection width, default
    ``config.appearance_dim``). 2 scores.

All project layer4 features with a 1×1 convolution (``conv_in``, float32 accuracy) as the
stock model does.
"""
from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from agame_jax import gmm
from agame_jax.appearance import AppearanceModel, register
from agame_jax.config import ModelConfig
from agame_jax.model.appearance import AppearanceModule, Projection


def _flat(a: jax.Array) -> jax.Array:
    return a.reshape(-1, a.shape[-1])


@register("agame-isotropic")
class IsotropicAppearance(AppearanceModule):
    """A-GAME's mixture with isotropic components (one variance per component)."""

    covariance = "isotropic"


@register("agame-tied")
class TiedAppearance(AppearanceModule):
    """A-GAME's mixture whose components share one diagonal covariance."""

    covariance = "tied"


@register("agame-learned-rate")
class LearnedRateAppearance(AppearanceModule):
    """A-GAME's mixture with a learned update rate per component (``rate_logit [K]``)."""

    def setup(self):
        super().setup()
        rate = self.config.update_rate
        self.rate_logit = self.param(
            "rate_logit", nn.initializers.constant(jnp.log(rate / (1.0 - rate))),
            (self.config.num_components,), jnp.float32)

    def update_rate(self) -> jax.Array:
        """The learned rates ``[K]``."""
        return jax.nn.sigmoid(self.rate_logit)

    def update(self, g, feats, labels):
        if self.config.no_appearance_update:
            return g
        return gmm.blend(g, self._fit(feats, labels), self.update_rate()[:, None])


@flax.struct.dataclass
class EMState:
    """``mixture`` ``Gaussians [2k, D]`` and ``log_mixing [2k]`` (class-major)."""

    mixture: gmm.Gaussians
    log_mixing: jax.Array


@register("agame-em")
class EMAppearance(AppearanceModel):
    """k Gaussians per class by differentiable EM (options ``k``, ``em_steps``,
    ``covariance``); scores ``log π + log N`` per component, ``[h, w, 2k]``."""

    config: ModelConfig = ModelConfig()

    @classmethod
    def num_scores(cls, config: ModelConfig) -> int:
        return 2 * int(config.appearance_option("k", 2))

    def setup(self):
        cfg = self.config.resolved()
        self.conv_in = Projection(cfg.appearance_dim, cfg.param_dtype)
        self.cov_reg = self.param("cov_reg", nn.initializers.constant(cfg.var_offset_init),
                                  (self.num_scores(cfg), cfg.appearance_dim), cfg.param_dtype)

    def project(self, s16):
        return self.conv_in(s16)

    def _fit(self, feats, labels) -> EMState:
        cfg = self.config
        g, log_pi = gmm.fit_em(
            _flat(feats), _flat(labels).astype(jnp.float32), int(cfg.appearance_option("k", 2)),
            int(cfg.appearance_option("em_steps", 3)),
            jax.nn.softplus(self.cov_reg.astype(jnp.float32)), cfg.prior_count,
            cfg.appearance_option("covariance", "diagonal"))
        return EMState(mixture=g, log_mixing=log_pi)

    def initial(self, feats, labels):
        return self._fit(feats, labels)

    def update(self, state, feats, labels):
        new = self._fit(feats, labels)
        rate = self.config.update_rate
        mixing = gmm.blend(jnp.exp(state.log_mixing), jnp.exp(new.log_mixing), rate)
        return EMState(mixture=gmm.blend(state.mixture, new.mixture, rate),
                       log_mixing=jnp.log(mixing))

    def score(self, state, feats):
        h, w, _ = feats.shape
        s = gmm.log_likelihood(state.mixture, _flat(feats)) + state.log_mixing
        return s.reshape(h, w, -1)


def _unit(a: jax.Array) -> jax.Array:
    # rsqrt(|a|² + ε) rather than a / |a|: the gradient of |a| is 0/0 at a zero vector
    # (the prototype of an object absent from its first frame, a padding slot).
    return a * jax.lax.rsqrt(jnp.sum(jnp.square(a), axis=-1, keepdims=True) + 1e-12)


class _BlendedTwoScores(AppearanceModel):
    """Shared by the two-score models: the projection ``conv_in`` (made by ``setup``) and
    an update that blends the state with the frame's own (``initial``) at the update
    rate."""

    config: ModelConfig = ModelConfig()

    @classmethod
    def num_scores(cls, config: ModelConfig) -> int:
        return 2

    def project(self, s16):
        return self.conv_in(s16)

    def update(self, state, feats, labels):
        return gmm.blend(state, self.initial(feats, labels), self.config.update_rate)


@register("prototype")
class PrototypeAppearance(_BlendedTwoScores):
    """Cosine similarity to background/object prototypes ``[2, D]`` times a learned
    temperature (``scale``, started at 10)."""

    def setup(self):
        cfg = self.config.resolved()
        self.conv_in = Projection(cfg.appearance_dim, cfg.param_dtype)
        self.scale = self.param("scale", nn.initializers.constant(10.0), (), jnp.float32)

    def initial(self, feats, labels):
        y = _flat(labels).astype(jnp.float32)                              # [N, 2]
        total = jnp.sum(y, axis=0)[:, None] + 1e-6
        return jnp.einsum("nk,nd->kd", y, _unit(_flat(feats))) / total

    def score(self, state, feats):
        return self.scale * jnp.einsum("hwd,kd->hwk", _unit(feats), _unit(state))


@flax.struct.dataclass
class RidgeState:
    """Blended sufficient statistics of the ridge regression: ``gram [D+1, D+1]`` (XᵀX / N)
    and ``cross [D+1, 2]`` (XᵀY / N), with a constant feature appended."""

    gram: jax.Array
    cross: jax.Array


@register("ridge")
class RidgeAppearance(_BlendedTwoScores):
    """Ridge regression from features to soft labels, solved in closed form every frame
    (option ``dim``: projection width); learned ``λ = softplus(reg)``, started at 1."""

    def setup(self):
        cfg = self.config.resolved()
        dim = int(cfg.appearance_option("dim", cfg.appearance_dim))
        self.conv_in = Projection(dim, cfg.param_dtype)
        self.reg = self.param("reg", nn.initializers.constant(0.5413), (), jnp.float32)

    @staticmethod
    def _design(feats):
        x = _flat(feats).astype(jnp.float32)
        return jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=-1)       # [N, D+1]

    def initial(self, feats, labels):
        x = self._design(feats)
        y = _flat(labels).astype(jnp.float32)
        hi = jax.lax.Precision.HIGHEST
        return RidgeState(gram=jnp.einsum("nd,ne->de", x, x, precision=hi) / x.shape[0],
                          cross=jnp.einsum("nd,nk->dk", x, y, precision=hi) / x.shape[0])

    def weights(self, state) -> jax.Array:
        """The regression weights ``[D+1, 2]`` that ``score`` applies."""
        d = state.gram.shape[-1]
        a = state.gram + jax.nn.softplus(self.reg) * jnp.eye(d, dtype=state.gram.dtype)
        return jax.scipy.linalg.solve(a, state.cross, assume_a="pos")

    def score(self, state, feats):
        h, w, _ = feats.shape
        return (self._design(feats) @ self.weights(state)).reshape(h, w, 2)
