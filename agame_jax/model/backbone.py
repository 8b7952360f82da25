"""ResNet v1.5 (torchvision layout) with output stride 16, in NHWC.

Variable names map one-to-one to torchvision's ``resnet101`` state dict (see
``agame_jax.convert``): ``conv1``/``bn1`` for the stem, ``layer{i}_{j}`` for block j of
stage i with ``conv{1,2,3}``, ``bn{1,2,3}`` and ``downsample_conv``/``downsample_bn``.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agame_jax.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: jax.Array) -> jax.Array:
    """uint8 (or [0, 255] float) RGB ``[..., H, W, 3]`` → ImageNet-normalised float32."""
    x = frames.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


class FrameBatchNorm(nn.Module):
    """BatchNorm whose training statistics are taken per frame over the clips.

    Inputs are ``[B·T, h, w, C]`` with ``clip_shape = (B, T)``. In training (``use_batch_stats``) each frame t is
    normalised with the mean and (biased) variance over ``B·h·w``, and the running
    statistics are updated once per frame in order t = 0..T−1 with the unbiased
    variance, exactly as T separate torch BatchNorm calls on ``[B, C, h, w]`` would.
    Otherwise the running statistics are used. The arithmetic runs in float32.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, clip_shape: tuple[int, int] | None = None,
                 use_batch_stats: bool = False) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        x32 = x.astype(jnp.float32)
        if use_batch_stats:
            b, t = clip_shape if clip_shape is not None else (x.shape[0], 1)
            x32 = x32.reshape(b, t, *x.shape[1:])
            axes = (0, 2, 3)
            mean = jnp.mean(x32, axis=axes)                                  # [T, C]
            var = jnp.mean(jnp.square(x32 - mean[None, :, None, None]), axis=axes)
            if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
                n = b * x.shape[1] * x.shape[2]
                unbiased = var * (n / max(n - 1, 1))
                m = self.momentum
                # T sequential updates r ← (1−m) r + m s_t, written in closed form.
                decay = (1.0 - m) ** jnp.arange(t - 1, -1, -1, dtype=jnp.float32)  # [T]
                keep = (1.0 - m) ** t
                ra_mean.value = keep * ra_mean.value + m * jnp.einsum(
                    "t,tc->c", decay, jax.lax.stop_gradient(mean))
                ra_var.value = keep * ra_var.value + m * jnp.einsum(
                    "t,tc->c", decay, jax.lax.stop_gradient(unbiased))
            mean = mean[None, :, None, None]
            var = var[None, :, None, None]
        else:
            mean, var = ra_mean.value, ra_var.value
        inv = jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)
        y = (x32 - mean) * inv + bias.astype(jnp.float32)
        return y.reshape(x.shape).astype(self.dtype)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: 1×1 → 3×3 (stride, dilation) → 1×1, ×4 expansion."""

    width: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, x: jax.Array, clip_shape: tuple[int, int],
                 use_batch_stats: bool) -> jax.Array:
        cfg = self.config
        conv = lambda feats, k, s, d, name: nn.Conv(
            feats, (k, k), strides=(s, s), kernel_dilation=(d, d),
            padding=[(d * (k // 2), d * (k // 2))] * 2, use_bias=False,
            dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, name=name)
        bn = lambda name: FrameBatchNorm(cfg.bn_momentum, cfg.bn_eps, cfg.compute_dtype,
                                         cfg.params_dtype, name=name)
        out = conv(self.width, 1, 1, 1, "conv1")(x)
        out = nn.relu(bn("bn1")(out, clip_shape, use_batch_stats))
        out = conv(self.width, 3, self.stride, self.dilation, "conv2")(out)
        out = nn.relu(bn("bn2")(out, clip_shape, use_batch_stats))
        out = conv(self.width * 4, 1, 1, 1, "conv3")(out)
        out = bn("bn3")(out, clip_shape, use_batch_stats)
        if self.downsample:
            x = conv(self.width * 4, 1, self.stride, 1, "downsample_conv")(x)
            x = bn("downsample_bn")(x, clip_shape, use_batch_stats)
        return nn.relu(out + x)


class ResNetOS16(nn.Module):
    """ResNet v1.5 trunk with output stride 16: layer4 is dilated instead of strided.

    ``__call__(frames [B, T, H, W, 3] normalised float, train)`` returns a dict with
    ``s4`` (layer1, ``[B, T, H/4, W/4, 4w]``), ``s8`` (layer2, ``[…, H/8, W/8, 8w]``) and
    ``s16`` (layer4, ``[…, H/16, W/16, 32w]``) for stem width ``w`` (64 in ResNet-101).
    Stem..layer3 always use running BatchNorm statistics; layer4 uses per-frame batch
    statistics when ``train`` is true.
    """

    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        cfg = self.config
        b, t, h, w, _ = frames.shape
        clip = (b, t)
        x = frames.reshape(b * t, h, w, 3).astype(cfg.compute_dtype)
        width = cfg.backbone_width
        x = nn.Conv(width, (7, 7), strides=(2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                    dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, name="conv1")(x)
        x = nn.relu(FrameBatchNorm(cfg.bn_momentum, cfg.bn_eps, cfg.compute_dtype, cfg.params_dtype,
                                  name="bn1")(x, clip, False))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        outputs = {}
        # (stride, dilation of the first block, dilation of the others) per stage.
        plan = [(1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2)]
        for stage, (n_blocks, (stride, first_dil, rest_dil)) in enumerate(
                zip(cfg.backbone_blocks, plan), start=1):
            trainable = stage == 4
            if trainable and cfg.freeze_below_layer4:
                # Nothing below layer4 is trained: never build that backward pass.
                x = jax.lax.stop_gradient(x)
            for j in range(n_blocks):
                x = Bottleneck(width * 2 ** (stage - 1), stride=stride if j == 0 else 1,
                               dilation=first_dil if j == 0 else rest_dil,
                               downsample=j == 0, config=cfg, name=f"layer{stage}_{j}")(
                    x, clip, use_batch_stats=train and trainable)
            if stage in (1, 2, 4):
                out = x if trainable or not cfg.freeze_below_layer4 else jax.lax.stop_gradient(x)
                outputs[{1: "s4", 2: "s8", 4: "s16"}[stage]] = out.reshape(b, t, *x.shape[1:])
        return outputs
