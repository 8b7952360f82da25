"""Mask propagation, fusion with the coarse predictor, and the upsampler (REFERENCE.md).

All maps are NHWC; the modules accept any leading axes that ``nn.Conv`` accepts (one
object's ``[h, w, C]`` map, or a batch ``[N, h, w, C]``). Names mirror the authors'
modules so their weights map one-to-one (``agame_jax.convert``).

The work that does not depend on an object (mask propagation's current-frame term, the
upsampler's skip projections and their terms of the blend convolutions) has its own
methods, so that the model can run it on all frames of a clip in one batch before the
per-frame, per-object recurrence.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from agame_jax import appearance as appearance_models
from agame_jax.config import ModelConfig
from agame_jax.model.conv import Conv, conv2d, few_channel_conv, matmul_f32_out
from agame_jax.model.resize import upsample_bilinear


def _conv(cfg: ModelConfig, features: int, kernel: int, dilation: int = 1) -> Conv:
    return Conv(features, kernel, dilation, dtype=cfg.dtype, param_dtype=cfg.param_dtype)


class SlicedConv(nn.Module):
    """A convolution over a channel concatenation, applied one input slice at a time.

    Holds ``kernel [k, k, C_in, C_out]`` and ``bias [C_out]`` exactly as ``nn.Conv`` would
    (same names, shapes and initialisers; "same" padding), but ``part(x, start)``
    convolves ``x [..., h, w, c]`` with input channels ``start:start + c`` of the kernel
    only, returning float32. By linearity ``conv(concat(xs)) = Σ part(x_i) + bias``, so
    parts that are shared (across objects, or constant over time) are computed once, and
    each part can run at its own precision.
    """

    in_features: int
    features: int
    kernel_size: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        k = self.kernel_size
        self.kernel = self.param("kernel", nn.initializers.lecun_normal(),
                                 (k, k, self.in_features, self.features), self.param_dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,),
                               self.param_dtype)

    def part(self, x: jax.Array, start: int, exact: bool = False) -> jax.Array:
        """``x [..., h, w, c]`` with kernel input channels ``start:start+c`` →
        ``[..., h, w, C_out]`` float32. ``exact``: float32 at full precision (otherwise
        the module's ``dtype``); a part of at most 4 channels is always computed in
        float32, elementwise (``conv.few_channel_conv``)."""
        w = self.kernel[:, :, start:start + x.shape[-1]]
        if x.shape[-1] <= 4:
            return few_channel_conv(x, w)
        dtype = jnp.dtype(jnp.float32 if exact else self.dtype)
        precision = jax.lax.Precision.HIGHEST if exact else None
        if self.kernel_size == 1:
            # Matrix products may return float32 from bfloat16 operands.
            if dtype != jnp.float32:
                return matmul_f32_out(x.astype(dtype), w[0, 0].astype(dtype))
            return jnp.einsum("...c,cd->...d", x.astype(dtype), w[0, 0].astype(dtype),
                              precision=precision, preferred_element_type=jnp.float32)
        return conv2d(x.astype(dtype), w.astype(dtype), precision=precision).astype(
            jnp.float32)

    def bias_term(self) -> jax.Array:
        return self.bias.astype(jnp.float32)


class MaskPropagation(nn.Module):
    """RGMP-like mask propagation ("dynmod").

    The authors' module reads the concatenation ``[s16, init_s16, prev_seg, init_seg]``
    (current and first-frame layer4 maps, previous and first-frame soft segmentations
    ``[bg, obj]``), then: 1×1 conv, a dilation pyramid of 3×3 convs (one ReLU after the
    concatenation), 3×3 conv, each with bias and ReLU. Its first 1×1 conv is split by
    linearity into three terms:

    ``current(s16 [..., h, w, C]) -> [..., h, w, P]`` float32: the current frame's term,
    shared by all objects;
    ``reference(init_s16, init_seg) -> [..., h, w, P]`` float32: the first frame's terms
    and the bias, constant for an object;
    ``__call__(current, reference, prev_seg) -> [..., h, w, P]``: adds the previous
    segmentation's term and runs the rest.
    """

    config: ModelConfig = ModelConfig()

    def setup(self):
        cfg = self.config.resolved()
        c16 = cfg.feature_channels[2]
        c = cfg.mask_prop_channels
        self.layer00 = SlicedConv(2 * c16 + 4, c, dtype=cfg.dtype,
                                  param_dtype=cfg.param_dtype)
        for i, d in enumerate(cfg.pyramid_dilations):
            setattr(self, f"layer01_conv{i}", _conv(cfg, c, 3, d))
        self.layer02 = _conv(cfg, c, 3)

    def current(self, s16: jax.Array) -> jax.Array:
        return self.layer00.part(s16, 0)

    def reference(self, init_s16: jax.Array, init_seg: jax.Array) -> jax.Array:
        c16 = self.config.feature_channels[2]
        return (self.layer00.part(init_s16, c16) + self.layer00.part(init_seg, 2 * c16 + 2)
                + self.layer00.bias_term())

    def __call__(self, current: jax.Array, reference: jax.Array, prev_seg: jax.Array):
        cfg = self.config.resolved()
        c16 = cfg.feature_channels[2]
        x = current + reference + self.layer00.part(prev_seg, 2 * c16)
        x = nn.relu(x).astype(cfg.dtype)
        x = nn.relu(jnp.concatenate(
            [getattr(self, f"layer01_conv{i}")(x) for i in range(len(cfg.pyramid_dilations))],
            axis=-1))
        return nn.relu(self.layer02(x))


class Fusion(nn.Module):
    """Fusion module and coarse predictor ("fusmod").

    ``__call__(app_scores [..., h, w, K] or None, mask_prop [..., h, w, P] or None)``
    returns ``(encoding [..., h, w, E], coarse_logits [..., h, w, 2] float32)``.
    An ablation that drops one input passes ``None`` for it.
    """

    config: ModelConfig = ModelConfig()

    def setup(self):
        cfg = self.config.resolved()
        c1, c2 = cfg.fusion_channels
        k = appearance_models.num_scores(cfg)
        p = 0 if cfg.no_mask_propagation else cfg.mask_prop_channels
        self.layer00 = SlicedConv(k + p, c1, 3, dtype=cfg.dtype,
                                  param_dtype=cfg.param_dtype)
        self.layer01 = _conv(cfg, c2, 3)
        self.predictor = _conv(cfg, 2, cfg.coarse_kernel)

    def __call__(self, app_scores, mask_prop):
        cfg = self.config.resolved()
        # The first conv reads its concatenated input [scores, mask_prop] one part at a
        # time. The raw appearance scores are log-likelihoods of magnitude ~10²–10³ whose
        # differences carry the signal: in bfloat16 (8-bit mantissa) they would be rounded
        # to whole units, so their part runs in float32 (K channels: cheap). Mask
        # propagation's output is already in the compute dtype; its part (the bulk of the
        # work) runs there too, on tensor cores.
        x = self.layer00.bias_term()
        if app_scores is not None:
            x = x + self.layer00.part(app_scores, 0, exact=True)
        if mask_prop is not None:
            start = 0 if app_scores is None else app_scores.shape[-1]
            x = x + self.layer00.part(mask_prop, start)
        x = nn.relu(x).astype(cfg.dtype)
        x = nn.relu(self.layer01(x))
        coarse = self.predictor(x)
        return x, coarse.astype(jnp.float32)


class Upsampler(nn.Module):
    """Refines the coarse encoding with layer2 and layer1 features ("segmod").

    The authors' module, per level (stride 8, then 4): project the skip map (1×1 conv,
    ReLU), concatenate ``[skip, upsample×2(x)]``, blend (3×3 conv, ReLU); then a 3×3
    predictor. Each blend conv is split by linearity into its skip-map term, which does
    not depend on the object, and its object term:

    ``project(s8 [..., 2h, 2w, C8], s4 [..., 4h, 4w, C4]) -> (skip8, skip4)``: the skip
    maps' terms of the two blend convolutions, ``[..., ·, ·, U]`` in the compute dtype
    (without bias); object-independent, so computed once per frame;
    ``__call__(encoding [..., h, w, E], skip8, skip4)`` returns fine logits
    ``[..., 16h, 16w, 2]`` float32 (bilinear ×4 of the stride-4 prediction, before the
    softmax).
    """

    config: ModelConfig = ModelConfig()

    def setup(self):
        cfg = self.config.resolved()
        c = cfg.upsampler_channels
        self.project_s8 = _conv(cfg, c, 1)
        self.project_s4 = _conv(cfg, c, 1)
        self.blend_s8 = SlicedConv(2 * c, c, 3, dtype=cfg.dtype,
                                   param_dtype=cfg.param_dtype)
        self.blend_s4 = SlicedConv(2 * c, c, 3, dtype=cfg.dtype,
                                   param_dtype=cfg.param_dtype)
        self.predictor = _conv(cfg, 2, 3)

    def project(self, s8: jax.Array, s4: jax.Array) -> tuple[jax.Array, jax.Array]:
        dt = self.config.resolved().dtype
        terms = []
        for s, project, blend in ((s8, self.project_s8, self.blend_s8),
                                  (s4, self.project_s4, self.blend_s4)):
            skip = nn.relu(project(s.astype(dt)))
            terms.append(blend.part(skip, 0).astype(dt))      # input channels [0, U)
        return terms[0], terms[1]

    def __call__(self, encoding, skip8, skip4):
        cfg = self.config.resolved()
        x = encoding
        for term, blend in ((skip8, self.blend_s8), (skip4, self.blend_s4)):
            up = upsample_bilinear(x, 2).astype(cfg.dtype)
            x = (term.astype(jnp.float32) + blend.part(up, cfg.upsampler_channels)
                 + blend.bias_term())
            x = nn.relu(x).astype(cfg.dtype)
        logits = self.predictor(x)
        return upsample_bilinear(logits.astype(jnp.float32), 4)
