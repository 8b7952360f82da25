"""The A-GAME network: per-frame encoder and per-object init / predict / update.

``AGame`` is a linen module whose methods each do one job on one object's maps (no
batch axis; ``agame_jax.model.recurrent`` vmaps them over objects and clips and scans
them over frames). Keeping the recurrence outside the module keeps every method a
pure function of ``variables`` and its inputs, which ``jax.lax.scan`` can carry.
"""
from __future__ import annotations

import contextvars
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from agame_jax import appearance as appearance_models
from agame_jax.config import ModelConfig
from agame_jax.model.backbone import ResNetOS16, fold_batchnorm, normalize_frames
from agame_jax.model.heads import Fusion, MaskPropagation, Upsampler
from agame_jax.model.resize import avg_pool

STRIDE = 16
# Trace-time switch of ``AGame.score_object``: ``None``, which input of the appearance
# model's ``score`` is behind ``stop_gradient`` ("features", "state" or "both"), or a pair
# of traced scalars, the fractions of the gradient passed to the features and the state.
SCORE_GRADIENT_STOP: contextvars.ContextVar = contextvars.ContextVar(
    "score_gradient_stop", default=None)


def _pass_gradient(x: jax.Array, fraction: jax.Array) -> jax.Array:
    """``x`` unchanged, its gradient times ``fraction`` (a traced 0 or 1 lets one compiled
    program both pass and stop it)."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    fixed = jax.lax.stop_gradient(x)
    return fixed + fraction.astype(x.dtype) * (x - fixed)


@flax.struct.dataclass
class Features:
    """Everything about a set of frames that does not depend on the objects.

    Leading axes are whatever the frames had (``[B, T]`` from ``encode``). Backbone maps
    ``s4 [..., H/4, W/4, C4]``, ``s8 [..., H/8, W/8, C8]``, ``s16 [..., H/16, W/16, C16]``;
    ``app [..., H/16, W/16, D]`` float32 appearance features; ``prop [..., H/16, W/16, P]``
    float32 mask propagation's current-frame term; ``skip8``/``skip4`` the skip maps'
    terms of the upsampler's blend convolutions ``[..., H/8|H/4, W/8|W/4, U]``.
    ``app``/``prop`` are ``None`` in the ablations without that module. They are computed
    here, batched over all frames, so that the per-frame recurrence only runs what
    depends on the objects.
    """

    s4: jax.Array
    s8: jax.Array
    s16: jax.Array
    app: jax.Array | None
    prop: jax.Array | None
    skip8: jax.Array
    skip4: jax.Array


@flax.struct.dataclass
class ObjectState:
    """What A-GAME remembers about one object (leading axes: objects, clips, …).

    ``appearance``: the appearance model's state (any pytree of fixed-shape arrays; the
    stock model's mixture, ``Gaussians [..., K, D]``; ``None`` without the module);
    ``prop_ref [..., h, w, P]`` float32: mask propagation's first-frame term (its first
    conv applied to the first frame's layer4 map and soft labels; ``None`` without mask
    propagation); ``prev_seg [..., h, w, 2]`` the previous soft segmentation [bg, obj].
    """

    appearance: Any
    prop_ref: jax.Array | None
    prev_seg: jax.Array


def fold_backbone_batchnorm(variables: dict, config: ModelConfig) -> dict:
    """``variables`` whose backbone BatchNorms are folded into their convolutions
    (``backbone.fold_batchnorm``), for ``AGame.below_layer4`` and ``AGame.encode``
    with ``folded=True``."""
    params = dict(variables["params"])
    params["backbone"] = fold_batchnorm(params["backbone"], variables["batch_stats"]["backbone"],
                                        config.bn_eps)
    return {**variables, "params": params}


def pool_labels(object_masks: jax.Array) -> jax.Array:
    """Binary/soft object masks ``[..., H, W]`` → stride-16 soft labels ``[..., h, w, 2]``.

    16×16 average pooling of ``[1 − m, m]`` (the block fractions of background and object).
    """
    m = object_masks.astype(jnp.float32)
    return avg_pool(jnp.stack([1.0 - m, m], axis=-1), STRIDE)


class AGame(nn.Module):
    """A-GAME (Johnander et al., CVPR 2019) as a set of pure per-frame methods.

    ``encode(frames [B, T, H, W, 3] uint8, train) -> Features`` (H, W multiples of 16);
    ``init_object(feats_t, seg) -> ObjectState``;
    ``predict_object(state, feats_t) -> (coarse [h, w, 2], fine [H, W, 2], scores)``
    (``score_object``, then ``decode``, which also takes leading object/clip axes);
    ``update_object(state, feats_t, seg) -> ObjectState``;
    where ``feats_t`` is one frame's ``Features`` (no leading axes).
    ``__call__`` runs them once on a tiny clip; it exists to create the variables.
    """

    config: ModelConfig = ModelConfig()

    def setup(self):
        # dtype "auto" is resolved for JAX's default backend here; Segmenter and the
        # training step resolve it for the device they run on before building the model.
        cfg = self.config.resolved()
        self.backbone = ResNetOS16(cfg)
        if not cfg.no_appearance:
            self.appearance = appearance_models.get(cfg.appearance)(cfg)
        if not cfg.no_mask_propagation:
            self.mask_prop = MaskPropagation(cfg)
        self.fusion = Fusion(cfg)
        self.upsampler = Upsampler(cfg)

    def below_layer4(self, frames: jax.Array, folded: bool = False,
                     through_layer3_first: bool = False) -> dict[str, jax.Array]:
        """The backbone's stem..layer3 on uint8 RGB ``frames [..., H, W, 3]`` (the part that
        is the same in training and inference): ``s4``, ``s8`` and ``layer3`` maps.
        ``folded``: ``variables`` from ``fold_backbone_batchnorm``;
        ``through_layer3_first``: ``layer3`` is the map after layer3's first block, which
        ``layer3_rest`` finishes."""
        h, w = frames.shape[-3:-1]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"frame size {h}x{w} is not a multiple of {STRIDE}; pad first")
        return self.backbone.below_layer4(normalize_frames(frames), folded, through_layer3_first)

    def layer3_rest(self, x: jax.Array, folded: bool = False) -> jax.Array:
        """layer3's blocks after its first (``ResNetOS16.layer3_rest``)."""
        return self.backbone.layer3_rest(x, folded)

    def encode(self, frames: jax.Array, train: bool = False,
               below_layer4: dict[str, jax.Array] | None = None,
               folded: bool = False, predicted_from: int = 0) -> Features:
        """uint8 RGB clips ``[B, T, H, W, 3]`` → ``Features`` with leading ``[B, T]``.
        ``below_layer4``: ``AGame.below_layer4(frames)`` when it was computed apart;
        ``folded``: ``variables`` from ``fold_backbone_batchnorm`` (not in training);
        ``predicted_from``: the terms only predictions read (``prop``, ``skip8``,
        ``skip4``) are computed for frames ``predicted_from…`` only, so their time axis is
        ``T − predicted_from`` (a training clip's first frame is given, not predicted)."""
        cfg = self.config
        trunk = self.below_layer4(frames, folded) if below_layer4 is None else below_layer4
        f = {"s4": trunk["s4"], "s8": trunk["s8"],
             "s16": self.backbone.layer4(trunk["layer3"], train, folded)}
        app = None if cfg.no_appearance else self.appearance.project(f["s16"])
        later = lambda x: x[:, predicted_from:] if predicted_from else x
        prop = None if cfg.no_mask_propagation else self.mask_prop.current(later(f["s16"]))
        skip8, skip4 = self.upsampler.project(later(f["s8"]), later(f["s4"]))
        return Features(s4=f["s4"], s8=f["s8"], s16=f["s16"], app=app, prop=prop,
                        skip8=skip8, skip4=skip4)

    def init_object(self, feats: Features, seg: jax.Array) -> ObjectState:
        """State of an object from its first frame: one frame's ``feats`` (maps ``[h, w, ·]``)
        and the object's soft labels ``seg [h, w, 2]`` at stride 16."""
        cfg = self.config
        seg = seg.astype(jnp.float32)
        app = None if cfg.no_appearance else self.appearance.initial(feats.app, seg)
        prop_ref = None if cfg.no_mask_propagation else self.mask_prop.reference(feats.s16, seg)
        return ObjectState(appearance=app, prop_ref=prop_ref, prev_seg=seg)

    def predict_object(self, state: ObjectState, feats: Features):
        """One object on one frame (``feats`` without leading axes).

        Returns ``coarse_logits [h, w, 2]``, ``fine_logits [16h, 16w, 2]`` (both float32)
        and the appearance scores ``[h, w, K]`` (``None`` without the module).
        ``score_object`` then ``decode``.
        """
        scores = self.score_object(state, feats)
        coarse, fine = self.decode(state, feats, scores)
        return coarse, fine, scores

    def score_object(self, state: ObjectState, feats: Features):
        """The appearance model's scores ``[h, w, K]`` of one object on one frame (no
        leading axes; ``None`` without the module)."""
        cfg = self.config
        if cfg.no_appearance:
            return None
        fitted, app = state.appearance, feats.app
        stop = SCORE_GRADIENT_STOP.get()              # agame_jax.research.gradient_paths
        if isinstance(stop, tuple):                   # traced (features, state) pass-through
            app = _pass_gradient(app, stop[0])
            fitted = jax.tree_util.tree_map(lambda x: _pass_gradient(x, stop[1]), fitted)
        if stop in ("features", "both"):
            app = jax.lax.stop_gradient(app)
        if stop in ("state", "both"):
            fitted = jax.tree_util.tree_map(jax.lax.stop_gradient, fitted)
        scores = self.appearance.score(fitted, app)
        want = appearance_models.num_scores(cfg)
        if scores.shape[-1] != want:
            raise ValueError(f"appearance model {cfg.appearance!r} scored "
                             f"{scores.shape[-1]} channels; its num_scores says {want}")
        return scores

    def inspect_object(self, state: ObjectState, feats: Features, seg: jax.Array) -> dict:
        """The appearance model's ``inspect`` maps of one object on one frame (state before
        the frame's update, soft labels ``seg [h, w, 2]`` that update it)."""
        if self.config.no_appearance:
            return {}
        return self.appearance.inspect(state.appearance, feats.app, seg.astype(jnp.float32))

    def decode(self, state: ObjectState, feats: Features, scores):
        """Mask propagation, fusion and upsampler: ``(coarse_logits [..., h, w, 2],
        fine_logits [..., 16h, 16w, 2])`` for states and ``scores [..., h, w, K]`` with
        any leading axes (objects, clips), and ``feats`` whose leading axes broadcast
        against them (e.g. ``[B, 1]`` for ``[B, O]`` objects): the heads run as one batch,
        not vmapped per object."""
        cfg = self.config
        prop = None if cfg.no_mask_propagation else self.mask_prop(
            feats.prop, state.prop_ref, state.prev_seg)
        encoding, coarse = self.fusion(scores, prop)
        fine = self.upsampler(encoding, feats.skip8, feats.skip4)
        return coarse, fine

    def update_object(self, state: ObjectState, feats: Features,
                      seg: jax.Array) -> ObjectState:
        """Feed back this frame's soft segmentation ``seg [h, w, 2]`` (stride 16)."""
        seg = seg.astype(jnp.float32)
        app = state.appearance
        if not self.config.no_appearance:
            app = self.appearance.update(app, feats.app, seg)
        return state.replace(appearance=app, prev_seg=seg)

    def __call__(self, frames: jax.Array, first_mask: jax.Array, train: bool = False):
        """Init helper: ``frames [B, T≥2, H, W, 3]``, ``first_mask [B, H, W]``.

        Returns the fine logits of frame 1 ``[B, H, W, 2]``.
        """
        feats = self.encode(frames, train=train)
        pick = lambda t: jax.tree_util.tree_map(lambda x: x[0, t], feats)
        state = self.init_object(pick(0), pool_labels(first_mask[0]))
        coarse, fine, _ = self.predict_object(state, pick(1))
        self.update_object(state, pick(1), jax.nn.softmax(coarse, axis=-1))
        return fine[None]
