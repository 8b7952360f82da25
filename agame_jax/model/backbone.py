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
from agame_jax.model.conv import conv2d
from agame_jax.model.winograd import winograd_conv, winograd_kernel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: jax.Array) -> jax.Array:
    """uint8 (or [0, 255] float) RGB ``[..., H, W, 3]`` → ImageNet-normalised float32."""
    x = frames.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


class FrameBatchNorm(nn.Module):
    """BatchNorm whose training statistics are taken per frame over the clips.

    Inputs are ``[B·T, h, w, C]`` with ``clip_shape = (B, T)``. In training
    (``use_batch_stats``) each frame t is normalised with the mean and (biased) variance
    over ``B·h·w``, and the running statistics are updated once per frame in order
    t = 0..T−1 with the unbiased variance, exactly as T separate torch BatchNorm calls on
    ``[B, C, h, w]`` would. Otherwise the running statistics are used. The arithmetic runs
    in float32. ``affine()`` gives the inference-mode normalisation as a per-channel
    ``(multiplier, shift)``, so that it can be folded into the preceding convolution.
    """

    features: int
    momentum: float = 0.1
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        c = self.features
        self.scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        self.ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        self.ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))

    def affine(self, folded: bool = False) -> tuple[jax.Array | None, jax.Array]:
        """Inference mode as ``y = x · multiplier + shift`` (float32 ``[C]`` each).
        ``folded``: the variables come from ``fold_batchnorm`` (the multiplier is in the
        kernel already, ``bias`` holds the shift): ``(None, shift)``."""
        if folded:
            return None, self.bias.astype(jnp.float32)
        mul = jax.lax.rsqrt(self.ra_var.value + self.epsilon) * self.scale.astype(jnp.float32)
        return mul, self.bias.astype(jnp.float32) - self.ra_mean.value * mul

    def __call__(self, x: jax.Array, clip_shape: tuple[int, int] | None = None,
                 use_batch_stats: bool = False) -> jax.Array:
        if not use_batch_stats:
            mul, shift = self.affine()
            return (x.astype(jnp.float32) * mul + shift).astype(self.dtype)
        x32 = x.astype(jnp.float32)
        b, t = clip_shape if clip_shape is not None else (x.shape[0], 1)
        x32 = x32.reshape(b, t, *x.shape[1:])
        axes = (0, 2, 3)
        mean = jnp.mean(x32, axis=axes)                                      # [T, C]
        var = jnp.mean(jnp.square(x32 - mean[None, :, None, None]), axis=axes)
        if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
            n = b * x.shape[1] * x.shape[2]
            unbiased = var * (n / max(n - 1, 1))
            m = self.momentum
            # T sequential updates r ← (1−m) r + m s_t, written in closed form.
            decay = (1.0 - m) ** jnp.arange(t - 1, -1, -1, dtype=jnp.float32)  # [T]
            keep = (1.0 - m) ** t
            self.ra_mean.value = keep * self.ra_mean.value + m * jnp.einsum(
                "t,tc->c", decay, jax.lax.stop_gradient(mean))
            self.ra_var.value = keep * self.ra_var.value + m * jnp.einsum(
                "t,tc->c", decay, jax.lax.stop_gradient(unbiased))
        inv = jax.lax.rsqrt(var[None, :, None, None] + self.epsilon) * self.scale.astype(
            jnp.float32)
        y = (x32 - mean[None, :, None, None]) * inv + self.bias.astype(jnp.float32)
        return y.reshape(x.shape).astype(self.dtype)


class Conv(nn.Module):
    """``nn.Conv`` without bias (same parameter name, shape and initialiser) that can fold
    an inference-mode BatchNorm into its kernel.

    ``__call__(x [N, H, W, C], affine=None)``; with ``affine = (multiplier, shift)``
    (``[features]`` each) it returns ``conv(x, kernel · multiplier) + shift``, which equals
    the BatchNorm applied to the convolution, in one convolution with a bias instead of a
    convolution and a separate pass over its output. A ``None`` multiplier means the
    kernel holds it already (``fold_batchnorm``). Where the variables also hold the
    kernel's ``winograd`` transform (``fold_batchnorm`` on the CPU), a float32 3×3
    convolution is computed from it (``agame_jax.model.winograd``).
    """

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, affine: tuple[jax.Array, jax.Array] | None = None):
        k, d, s = self.kernel_size, self.dilation, self.stride
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, x.shape[-1], self.features), self.param_dtype)
        if affine is not None and affine[0] is not None:
            kernel = kernel.astype(jnp.float32) * affine[0]
        if self.has_variable("params", "winograd") and (k, s, d) == (3, 1, 1) \
                and (affine is None or affine[0] is None) and jnp.dtype(self.dtype) == jnp.float32:
            # The kernel's Winograd transform, made by ``fold_batchnorm`` on the CPU.
            y = winograd_conv(x.astype(self.dtype), self.get_variable("params", "winograd"))
        else:
            y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), s, d)
        return y if affine is None else y + affine[1].astype(self.dtype)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: 1×1 → 3×3 (stride, dilation) → 1×1, ×4 expansion.

    Where the BatchNorms use running statistics they are folded into the convolutions."""

    width: int
    stride: int = 1
    dilation: int = 1
    downsample: bool = False
    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, x: jax.Array, clip_shape: tuple[int, int] | None,
                 use_batch_stats: bool, folded: bool = False) -> jax.Array:
        cfg = self.config.resolved()

        def conv_bn(x, feats, k, s, d, name, bn_name):
            conv = Conv(feats, k, s, d, cfg.dtype, cfg.param_dtype, name=name)
            bn = FrameBatchNorm(feats, cfg.bn_momentum, cfg.bn_eps, cfg.dtype,
                                cfg.param_dtype, name=bn_name)
            if use_batch_stats:
                return bn(conv(x), clip_shape, True)
            return conv(x, bn.affine(folded))

        out = nn.relu(conv_bn(x, self.width, 1, 1, 1, "conv1", "bn1"))
        out = nn.relu(conv_bn(out, self.width, 3, self.stride, self.dilation, "conv2", "bn2"))
        out = conv_bn(out, self.width * 4, 1, 1, 1, "conv3", "bn3")
        if self.downsample:
            x = conv_bn(x, self.width * 4, 1, self.stride, 1, "downsample_conv",
                        "downsample_bn")
        return nn.relu(out + x)


class ResNetOS16(nn.Module):
    """ResNet v1.5 trunk with output stride 16: layer4 is dilated instead of strided.

    ``__call__(frames [B, T, H, W, 3] normalised float, train)`` returns a dict with
    ``s4`` (layer1, ``[B, T, H/4, W/4, 4w]``), ``s8`` (layer2, ``[…, H/8, W/8, 8w]``) and
    ``s16`` (layer4, ``[…, H/16, W/16, 32w]``) for stem width ``w`` (64 in ResNet-101).
    Stem..layer3 always use running BatchNorm statistics; layer4 uses per-frame batch
    statistics when ``train`` is true. ``below_layer4`` and ``layer4`` are its two halves
    (``__call__`` is one after the other): the first never depends on ``train``, so it
    can run on the frames in any grouping.
    """

    config: ModelConfig = ModelConfig()

    # (stride, dilation of the first block, dilation of the others) per stage.
    PLAN = ((1, 1, 1), (2, 1, 1), (2, 1, 1), (1, 1, 2))

    def setup(self):
        cfg = self.config.resolved()
        width = cfg.backbone_width
        self.bn1 = FrameBatchNorm(width, cfg.bn_momentum, cfg.bn_eps, cfg.dtype,
                                  cfg.param_dtype)
        self.conv1 = Conv(width, 7, 2, 1, cfg.dtype, cfg.param_dtype)
        names = []
        for stage, (n_blocks, (stride, first_dil, rest_dil)) in enumerate(
                zip(cfg.backbone_blocks, self.PLAN), start=1):
            names.append(tuple(f"layer{stage}_{j}" for j in range(n_blocks)))
            for j, name in enumerate(names[-1]):
                setattr(self, name, Bottleneck(
                    width * 2 ** (stage - 1), stride=stride if j == 0 else 1,
                    dilation=first_dil if j == 0 else rest_dil, downsample=j == 0, config=cfg))
        self.block_names = tuple(names)

    def __call__(self, frames: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        out = self.below_layer4(frames)
        return {"s4": out["s4"], "s8": out["s8"], "s16": self.layer4(out["layer3"], train)}

    def below_layer4(self, frames: jax.Array, folded: bool = False,
                     through_layer3_first: bool = False) -> dict[str, jax.Array]:
        """Stem..layer3 of ``frames [..., H, W, 3]`` → ``s4``, ``s8`` as in ``__call__`` and
        ``layer3`` (layer3's map, ``[..., H/16, W/16, 16w]``: layer4's input).
        ``folded``: the variables come from ``fold_batchnorm`` (its BatchNorms are in the
        kernels already). ``through_layer3_first``: stop after layer3's first block
        (``layer3`` is then that block's output; ``layer3_rest`` finishes it), so that
        the two parts can run on different groupings of the frames."""
        cfg = self.config.resolved()
        lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
        x = frames.reshape(-1, h, w, 3).astype(cfg.dtype)
        x = nn.relu(self.conv1(x, self.bn1.affine(folded)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
        outputs = {}
        for stage, names in enumerate(self.block_names[:3], start=1):
            x = getattr(self, names[0])(x, None, use_batch_stats=False, folded=folded)
            if not (stage == 3 and through_layer3_first):
                x = self._later_blocks(x, stage, folded)
            if cfg.freeze_below_layer4:
                # Nothing below layer4 is trained: never build that backward pass.
                x = jax.lax.stop_gradient(x)
            outputs[{1: "s4", 2: "s8", 3: "layer3"}[stage]] = x.reshape(lead + x.shape[1:])
        return outputs

    def layer3_rest(self, x: jax.Array, folded: bool = False) -> jax.Array:
        """layer3's blocks after its first on ``x [..., h, w, 16w]`` (the ``layer3`` of
        ``below_layer4(…, through_layer3_first=True)``) → layer3's map, same shape."""
        lead = x.shape[:-3]
        x = self._later_blocks(x.reshape((-1,) + x.shape[-3:]), 3, folded)
        if self.config.freeze_below_layer4:
            x = jax.lax.stop_gradient(x)
        return x.reshape(lead + x.shape[1:])

    def _later_blocks(self, x: jax.Array, stage: int, folded: bool) -> jax.Array:
        """Stage ``stage``'s blocks after its first on ``x [N, h, w, C]``."""
        names = self.block_names[stage - 1]
        stacked = (self.variables["params"].get(f"layer{stage}_rest")
                   if folded and jax.default_backend() == "cpu" else None)
        if stacked is not None:
            return self._identical_blocks(x, stacked, names[1])
        for name in names[1:]:
            x = getattr(self, name)(x, None, use_batch_stats=False, folded=folded)
        return x

    def _identical_blocks(self, x: jax.Array, stacked: dict, like: str) -> jax.Array:
        """The blocks after a stage's first (same shapes, folded weights stacked by
        ``fold_batchnorm``) as one loop over them. XLA:CPU otherwise fuses the residual
        stream through the blocks: each block's add and ReLU recomputes every earlier
        block's from their conv3 outputs (layer3's last reads 23 maps), quadratic
        elementwise work; an optimisation barrier does not stop it (XLA:CPU removes
        barriers before fusion), a loop boundary does."""
        block = getattr(self, like)
        block = Bottleneck(block.width, block.stride, block.dilation, block.downsample,
                           block.config, parent=None)
        # Folded BatchNorms read no statistics, but their modules declare them.
        stats = {bn: {"mean": jnp.zeros(()), "var": jnp.zeros(())}
                 for bn in ("bn1", "bn2", "bn3")}

        def one(x, params):
            y = block.apply({"params": params, "batch_stats": stats}, x, None,
                            use_batch_stats=False, folded=True)
            return y, None

        return jax.lax.scan(one, x, stacked)[0]

    def layer4(self, x: jax.Array, train: bool = False, folded: bool = False) -> jax.Array:
        """layer3's map ``[B, T, h, w, 16w]`` → layer4's ``[B, T, h, w, 32w]`` (``s16``);
        with ``train``, per-frame batch statistics over the B clips; ``folded`` (not in
        training) as in ``below_layer4``."""
        if train and folded:
            raise ValueError("layer4 trains with batch statistics: its BatchNorms cannot be folded")
        b, t = x.shape[:2]
        x = x.reshape((b * t,) + x.shape[2:])
        for name in self.block_names[3]:
            x = getattr(self, name)(x, (b, t), use_batch_stats=train, folded=folded)
        return x.reshape((b, t) + x.shape[1:])


_CONV_BN = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"),
            ("downsample_conv", "downsample_bn"))


def fold_batchnorm(params: dict, batch_stats: dict, epsilon: float) -> dict:
    """The backbone's ``params`` (its subtree) with every BatchNorm folded into the
    convolution before it: kernel ← kernel · multiplier and the BatchNorm's ``bias`` ←
    shift (``FrameBatchNorm.affine``), for ``below_layer4`` and ``layer4`` with
    ``folded=True`` (inference-mode statistics).

    Unfolded, the backbone folds them itself on every call; a loop over frames that calls it
    would redo that work (a pass over all the weights) every frame, because XLA does not
    move a computation that grows in size (here a broadcast to the kernel's shape) out
    of a loop. Folding once before the loop gives the same values."""
    def fold(conv, bn, stats):
        mul = jax.lax.rsqrt(stats["var"] + epsilon) * bn["scale"].astype(jnp.float32)
        kernel = (conv["kernel"].astype(jnp.float32) * mul).astype(conv["kernel"].dtype)
        shift = bn["bias"].astype(jnp.float32) - stats["mean"] * mul
        return {**conv, "kernel": kernel}, {**bn, "bias": shift.astype(bn["bias"].dtype)}

    out = dict(params)
    out["conv1"], out["bn1"] = fold(params["conv1"], params["bn1"], batch_stats["bn1"])
    for name, block in params.items():
        if name.startswith("layer"):
            block = dict(block)
            for conv, bn in _CONV_BN:
                if conv in block:
                    block[conv], block[bn] = fold(block[conv], block[bn],
                                                  batch_stats[name][bn])
            out[name] = block
    # layer3's blocks after its first, stacked for ``ResNetOS16._identical_blocks`` (the
    # CPU runs them as one loop; elsewhere the stack is unused and compiled away).
    rest = sorted((n for n in out if n.startswith("layer3_") and n != "layer3_0"),
                  key=lambda n: int(n.split("_")[1]))
    if len(rest) > 1:
        out["layer3_rest"] = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                                    *(out[n] for n in rest))
        conv2 = out["layer3_rest"]["conv2"]
        if jax.default_backend() == "cpu" and conv2["kernel"].dtype == jnp.float32:
            # Their 3×3 convolutions by Winograd's algorithm (``Conv``), faster on XLA:CPU
            # than its direct convolution; the kernels' transforms made once, here.
            out["layer3_rest"]["conv2"] = {**conv2,
                                           "winograd": jax.vmap(winograd_kernel)(conv2["kernel"])}
    return out
