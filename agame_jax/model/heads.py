"""Mask propagation, fusion with the coarse predictor, and the upsampler (REFERENCE.md).

All maps are NHWC; the modules accept any leading axes that ``nn.Conv`` accepts (one
object's ``[h, w, C]`` map, or a batch ``[N, h, w, C]``). Names mirror the authors'
modules so their weights map one-to-one (``agame_jax.convert``).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from agame_jax.config import ModelConfig
from agame_jax.model.resize import upsample_bilinear


def _conv(cfg: ModelConfig, features: int, kernel: int, name: str, dilation: int = 1,
          full_precision: bool = False):
    pad = dilation * (kernel // 2)
    return nn.Conv(features, (kernel, kernel), kernel_dilation=(dilation, dilation),
                   padding=[(pad, pad), (pad, pad)],
                   dtype=jnp.float32 if full_precision else cfg.compute_dtype,
                   precision=jax.lax.Precision.HIGHEST if full_precision else None,
                   param_dtype=cfg.params_dtype, name=name)


class MaskPropagation(nn.Module):
    """RGMP-like mask propagation ("dynmod").

    ``__call__(s16, init_s16, prev_seg, init_seg) -> [..., h, w, P]``: inputs are the
    current and first-frame layer4 maps (``[..., h, w, C]``) and the previous and
    first-frame soft segmentations (``[..., h, w, 2]``, [bg, obj]), concatenated in that
    order; 1×1 conv, a dilation pyramid of 3×3 convs (one ReLU after the concatenation),
    3×3 conv, each with bias and ReLU.
    """

    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, s16, init_s16, prev_seg, init_seg):
        cfg = self.config
        dt = cfg.compute_dtype
        x = jnp.concatenate([s16.astype(dt), init_s16.astype(dt), prev_seg.astype(dt),
                             init_seg.astype(dt)], axis=-1)
        c = cfg.mask_prop_channels
        x = nn.relu(_conv(cfg, c, 1, "layer00")(x))
        x = nn.relu(jnp.concatenate(
            [_conv(cfg, c, 3, f"layer01_conv{i}", dilation=d)(x)
             for i, d in enumerate(cfg.pyramid_dilations)], axis=-1))
        return nn.relu(_conv(cfg, c, 3, "layer02")(x))


class Fusion(nn.Module):
    """Fusion module and coarse predictor ("fusmod").

    ``__call__(app_scores [..., h, w, K] or None, mask_prop [..., h, w, P] or None)``
    returns ``(encoding [..., h, w, E], coarse_logits [..., h, w, 2] float32)``.
    An ablation that drops one input passes ``None`` for it.
    """

    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, app_scores, mask_prop):
        cfg = self.config
        # The raw appearance scores are log-likelihoods of magnitude ~10²–10³ whose
        # differences carry the signal: in bfloat16 (8-bit mantissa) they would be rounded
        # to whole units. The first fusion conv therefore reads them in float32.
        exact = app_scores is not None
        dt = jnp.float32 if exact else cfg.compute_dtype
        x = jnp.concatenate([v.astype(dt) for v in (app_scores, mask_prop) if v is not None],
                            axis=-1)
        c1, c2 = cfg.fusion_channels
        x = nn.relu(_conv(cfg, c1, 3, "layer00", full_precision=exact)(x)).astype(
            cfg.compute_dtype)
        x = nn.relu(_conv(cfg, c2, 3, "layer01")(x))
        coarse = _conv(cfg, 2, cfg.coarse_kernel, "predictor")(x)
        return x, coarse.astype(jnp.float32)


class Upsampler(nn.Module):
    """Refines the coarse encoding with layer2 and layer1 features ("segmod").

    ``__call__(encoding [..., h, w, E], s8 [..., 2h, 2w, C8], s4 [..., 4h, 4w, C4])``
    returns fine logits ``[..., 16h, 16w, 2]`` float32 (bilinear ×4 of the stride-4
    prediction, before the softmax).
    """

    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, encoding, s8, s4):
        cfg = self.config
        c = cfg.upsampler_channels
        x = encoding
        for stride, skip in (("s8", s8), ("s4", s4)):
            proj = nn.relu(_conv(cfg, c, 1, f"project_{stride}")(skip.astype(cfg.compute_dtype)))
            x = jnp.concatenate([proj, upsample_bilinear(x, 2).astype(proj.dtype)], axis=-1)
            x = nn.relu(_conv(cfg, c, 3, f"blend_{stride}")(x))
        logits = _conv(cfg, 2, 3, "predictor")(x)
        return upsample_bilinear(logits.astype(jnp.float32), 4)
