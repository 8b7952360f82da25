"""The recurrence: scan vs. a Python loop, aggregation, gradients, degenerate masks."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import merge_params, split_params
from agame_jax.losses import clip_loss
from agame_jax.model import recurrent
from agame_jax.model.agame import AGame, pool_labels
from agame_jax.model.aggregation import aggregate

from conftest import random_clip
from reference import aggregate_reference


@pytest.fixture(scope="module")
def tiny(tiny_model):
    cfg, variables = tiny_model
    return cfg, AGame(cfg), variables


@functools.partial(jax.jit, static_argnums=0)
def train_loss_and_grads(cfg, trainable, frozen, stats, frames, labels):
    """Training-mode loss of ``labels[:, :, None]`` given frame 0; grads of ``trainable``."""
    model = AGame(cfg)

    def loss_fn(trainable):
        v = {"params": merge_params(trainable, frozen), "batch_stats": stats}
        losses, new_stats = clip_loss(model, v, frames, labels)
        return losses["loss"], new_stats

    return jax.value_and_grad(loss_fn, has_aux=True)(trainable)


def _encode(model, variables, frames):
    feats = model.apply(variables, jnp.asarray(frames)[None], method=AGame.encode)
    return jax.tree_util.tree_map(lambda x: x[0], feats)


@pytest.mark.parametrize("feedback", ["coarse", "aggregated", "fine"])   # "oracle": test_research
def test_scan_equals_python_loop_over_step(tiny, feedback):
    """A chunk of 6 positions holding video A's frames 0-2 (objects at frames 0 and 2),
    video B's frames 0-1 (objects at 0 and 1) and one empty position, scanned from zero
    states, against a loop over ``frame_step`` that starts each object from the frame
    where it is given (``init_states`` on that frame alone)."""
    cfg, model, variables = tiny
    rng = np.random.default_rng(0)
    frames, masks = random_clip(rng, t=6, h=64, w=48)
    other = np.zeros_like(masks[0]); other[30:50, 5:20] = 1
    first_frame = jnp.asarray([[0, 2], [0, 1]], jnp.int32)            # [G, O]
    init_seg = pool_labels(jnp.asarray(np.stack([np.stack([masks[0], other]),
                                                 np.stack([other, masks[4]])]), jnp.float32))
    starts = recurrent.ObjectStarts(first_frame=first_frame, init_seg=init_seg)
    frame_index = jnp.asarray([0, 1, 2, 0, 1, -1], jnp.int32)
    segment = jnp.asarray([0, 0, 0, 1, 1, 1], jnp.int32)
    start_index = jnp.asarray([0, -3], jnp.int32)
    feats = _encode(model, variables, frames)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, recurrent.init_states(
        model, variables, recurrent.frame_at(feats, 0), init_seg[0]))
    keep = recurrent.OUTPUT_KEYS
    final, scanned = recurrent.scan_frames(model, variables, zeros, feats, frame_index, starts,
                                           segment, start_index, feedback=feedback, keep=keep)

    @jax.jit
    def step(states, feats_t, t, g):
        pick = jax.tree_util.tree_map(lambda x: x[g], starts)
        fresh = recurrent.init_states(model, variables, feats_t, pick.init_seg)
        return recurrent.frame_step(model, variables, states, feats_t, t, pick, fresh,
                                    feedback=feedback, keep=keep)

    states = zeros
    for p in range(6):
        states, out = step(states, recurrent.frame_at(feats, p), frame_index[p], segment[p])
        for k in keep:
            np.testing.assert_allclose(scanned[k][p], out[k], rtol=1e-4, atol=1e-4,
                                       err_msg=f"{k} at {p}")
    for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(states)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    probs = np.asarray(scanned["probs"])
    np.testing.assert_allclose(probs[[1, 2, 4]].sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probs[[0, 3, 5]] == 0.0)      # frames 0 are given; position 5 is empty
    assert np.all(probs[1, 2] == 0.0) and probs[2, 2].max() > 0.0   # A's 2nd from frame 2
    assert probs[4, 2].max() > 0.0              # B's second object, given at its frame 1


def test_aggregation_matches_reference_and_sums_to_one():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(3, 5, 6)).astype(np.float32)
    p[0, 0, 0] = 1.0                                 # saturated: exercises the clamps
    p[1, 0, 1] = 0.0
    active = np.array([True, False, True])
    q = np.asarray(aggregate(jnp.asarray(p), jnp.asarray(active)))
    np.testing.assert_allclose(q, aggregate_reference(p.astype(np.float64), active),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-6)
    assert np.all(q[2] == 0.0)


def test_single_object_labels_equal_own_argmax():
    p = np.random.default_rng(4).uniform(size=(1, 8, 8)).astype(np.float32)
    q = np.asarray(aggregate(jnp.asarray(p)))
    np.testing.assert_array_equal(q.argmax(0), (p[0] > 0.5).astype(int))


def test_training_forward_backward_jit_on_cpu(tiny):
    """3-frame 64×64 clips, training mode, BPTT through the scan and the mixture fit."""
    cfg, model, variables = tiny
    rng = np.random.default_rng(5)
    frames, labels = random_clip(rng, t=3, h=64, w=64, batch=2)
    trainable, frozen = split_params(variables["params"], cfg)
    (loss, new_stats), grads = train_loss_and_grads(
        cfg, trainable, frozen, variables["batch_stats"], jnp.asarray(frames), jnp.asarray(labels))
    assert np.isfinite(float(loss))
    assert set(grads) == {"backbone", "appearance", "mask_prop", "fusion", "upsampler"}
    assert all(k.startswith("layer4") for k in grads["backbone"])
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.all(np.isfinite(g)), path
        assert np.abs(g).max() > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
    # layer4's running statistics moved; the frozen BatchNorms did not.
    old = variables["batch_stats"]["backbone"]
    new = new_stats["backbone"]
    assert not np.allclose(old["layer4_0"]["bn1"]["mean"], new["layer4_0"]["bn1"]["mean"])
    np.testing.assert_array_equal(old["layer3_0"]["bn1"]["mean"], new["layer3_0"]["bn1"]["mean"])


def test_frozen_backbone_gets_no_gradient_even_when_differentiated(tiny):
    cfg, model, variables = tiny
    frames, _ = random_clip(np.random.default_rng(7), t=2, h=32, w=32, batch=1)

    def total(params):
        feats = model.apply({**variables, "params": params}, jnp.asarray(frames),
                            method=AGame.encode)
        return sum(jnp.sum(x) for x in (feats.s4, feats.s8, feats.s16))

    grads = jax.grad(total)(variables["params"])["backbone"]
    for k, v in grads.items():
        frozen = all(np.all(x == 0) for x in jax.tree_util.tree_leaves(v))
        assert frozen != k.startswith("layer4"), k


@pytest.mark.parametrize("case", ["empty", "tiny", "leaves"])
def test_degenerate_masks_stay_finite(tiny, case):
    cfg, model, variables = tiny
    rng = np.random.default_rng(6)
    frames, masks = random_clip(rng, t=3, h=64, w=64, batch=2)
    if case == "empty":
        masks[:] = 0
    elif case == "tiny":
        masks[:] = 0
        masks[:, 0, 20, 20] = 1
    else:   # the object leaves the frame: later frames are blank and fully background
        frames[:, 1:] = 0
        masks[:, 1:] = 0
    trainable, frozen = split_params(variables["params"], cfg)
    (loss, _), grads = train_loss_and_grads(
        cfg, trainable, frozen, variables["batch_stats"], jnp.asarray(frames), jnp.asarray(masks))
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    feats = _encode(model, variables, frames[0])
    init_seg = pool_labels(jnp.asarray(masks[0, :1], jnp.float32))
    states = recurrent.init_states(model, variables, recurrent.frame_at(feats, 0), init_seg)
    later = jax.tree_util.tree_map(lambda x: x[1:], feats)
    _, out = recurrent.scan_frames(model, variables, states, later, jnp.arange(1, 3))
    assert np.all(np.isfinite(np.asarray(out["probs"])))
