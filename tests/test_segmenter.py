"""Segmenter against a frame-by-frame, object-by-object reference of the authors' loop."""
import jax
import numpy as np
import pytest

from agame_jax import Segmenter
from agame_jax.model.agame import AGame
from agame_jax.lanes import bucket, padding_ltrb

from reference import aggregate_reference, pool16


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model


def reference_segment(cfg, variables, frames, masks):
    """The authors' inference loop: pad, one backbone call per frame, objects one by one
    in order of appearance, aggregation, pooled feedback, crop."""
    model = AGame(cfg)
    t_len, h, w, _ = frames.shape
    ph, pw = (16 - h % 16) % 16, (16 - w % 16) % 16
    top, left = (ph + 1) // 2, (pw + 1) // 2
    pad = lambda x: np.pad(x, [(top, ph - top), (left, pw - left)] + [(0, 0)] * (x.ndim - 2),
                           mode="reflect")
    encode = jax.jit(lambda v, f: model.apply(v, f[None, None], method=AGame.encode))
    init = jax.jit(lambda v, f, y: model.apply(v, f, y, method=AGame.init_object))
    predict = jax.jit(lambda v, s, f: model.apply(v, s, f, method=AGame.predict_object))
    update = jax.jit(lambda v, s, f, y: model.apply(v, s, f, y, method=AGame.update_object))
    order, states = [], {}
    out_probs = {}
    for t in range(t_len):
        feats = jax.tree_util.tree_map(lambda x: x[0, 0], encode(variables, pad(frames[t])))
        if t in masks:
            label = pad(masks[t])
            for obj in sorted(set(np.unique(label)) - {0, 255}):
                if obj in states:
                    continue
                m = (label == obj).astype(np.float32)
                y = np.stack([pool16(1 - m), pool16(m)], -1)
                states[obj] = init(variables, feats, y)
                order.append(obj)
        if t == 0:
            continue
        p = np.stack([np.asarray(jax.nn.softmax(predict(variables, states[o], feats)[1])[..., 1])
                      for o in order]).astype(np.float64)
        q = aggregate_reference(p, [True] * len(order))
        for k, obj in enumerate(order):
            y = np.stack([pool16(1 - q[k + 1]), pool16(q[k + 1])], -1).astype(np.float32)
            states[obj] = update(variables, states[obj], feats, y)
        out_probs[t] = {obj: q[k + 1][top:top + h, left:left + w] for k, obj in enumerate(order)}
        out_probs[t][0] = q[0][top:top + h, left:left + w]
    return out_probs


def _video(rng, t_len=5, h=50, w=70):
    frames = rng.integers(0, 256, (t_len, h, w, 3), dtype=np.uint8)
    given0 = np.zeros((h, w), np.uint8)
    given0[5:25, 5:30] = 3
    given0[30:45, 40:65] = 7
    given0[0:3, 0:3] = 255                          # void pixels count as background
    given2 = np.zeros((h, w), np.uint8)
    given2[20:40, 10:30] = 5                         # a late object with a smaller id
    return frames, {0: given0, 2: given2}


def test_padding_puts_larger_half_left_and_top():
    assert padding_ltrb(480, 854) == (5, 5, 0, 0)
    assert padding_ltrb(250, 440) == (4, 4, 3, 3)
    assert padding_ltrb(49, 63) == (1, 0, 8, 7)


def test_segmenter_matches_reference_loop(tiny):
    cfg, variables = tiny
    frames, masks = _video(np.random.default_rng(0))
    labels, probs = Segmenter(cfg, variables)(frames, masks)
    ref = reference_segment(cfg, variables, frames, masks)
    assert probs.shape == (5, 4, 50, 70) and labels.dtype == np.uint8
    ids = [0, 3, 5, 7]
    for t, per_id in ref.items():
        for c, obj in enumerate(ids):
            expected = per_id.get(obj, np.zeros((50, 70)))
            np.testing.assert_allclose(probs[t, c], expected, atol=1e-4, err_msg=f"t={t} id={obj}")
    # Frame 0 is the given mask; id 5 is absent before frame 2 and predicted there.
    np.testing.assert_array_equal(labels[0], np.where(masks[0] == 255, 0, masks[0]))
    assert np.all(probs[:2, 2] == 0.0) and probs[2, 2].max() > 0.0
    assert set(np.unique(labels)) <= {0, 3, 5, 7}
    np.testing.assert_array_equal(labels, np.asarray(ids, np.uint8)[probs.argmax(1)])


def test_chunks_carry_the_state(tiny):
    cfg, variables = tiny
    frames, masks = _video(np.random.default_rng(1), t_len=7)
    whole = Segmenter(cfg, variables, chunk_size=32)(frames, masks)[1]
    seg = Segmenter(cfg, variables, chunk_size=3)
    chunked = seg(frames, masks)[1]
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    # Chunks of 3, 3 and 1 frames: the full chunks' program and the last one's.
    assert seg.num_compilations == 2 and seg.timing["computed_positions"] == 7


def test_single_object_mode_and_no_objects(tiny):
    cfg, variables = tiny
    frames, masks = _video(np.random.default_rng(2), t_len=3)
    single = {0: (masks[0] == 3).astype(np.uint8)}
    labels, probs = Segmenter(cfg, variables, single_object=True)(frames, single)
    assert probs.shape == (3, 2, 50, 70) and set(np.unique(labels)) <= {0, 1}
    labels, probs = Segmenter(cfg, variables)(frames, {})
    assert np.all(labels == 0) and np.all(probs[:, 0] == 1.0)


def test_bad_inputs_are_clear_errors(tiny):
    cfg, variables = tiny
    frames, masks = _video(np.random.default_rng(3), t_len=3)
    seg = Segmenter(cfg, variables)
    with pytest.raises(ValueError, match="mask for frame 0 is 10x10"):
        seg(frames, {0: np.zeros((10, 10), np.uint8)})
    with pytest.raises(ValueError, match="frame 9"):
        seg(frames, {9: masks[0]})
    with pytest.raises(ValueError, match="uint8"):
        seg(frames.astype(np.float32), masks)


def test_object_buckets_change_nothing_but_the_compile_count(tiny):
    """Five objects run in a program of 6 slots (``lanes.bucket``): the unused slot takes
    no part, the result is the reference loop's; a sixth (late) object fills the bucket
    without a new program."""
    assert [bucket(n) for n in range(1, 14)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12,
                                                        12, 16]
    cfg, variables = tiny
    frames, masks = _video(np.random.default_rng(4), t_len=4)
    masks[0][40:48, 2:10] = 9                          # two more objects at frame 0
    masks[0][2:10, 60:68] = 11
    # Objects 3, 7, 9, 11 at frame 0, 5 at frame 2: 5 objects, a bucket of 6 slots.
    seg = Segmenter(cfg, variables, chunk_size=4)
    labels, probs = seg(frames, masks)
    ref = reference_segment(cfg, variables, frames, masks)
    for t, per_id in ref.items():
        for c, obj in enumerate([0, 3, 5, 7, 9, 11]):
            expected = per_id.get(obj, np.zeros((50, 70)))
            np.testing.assert_allclose(probs[t, c], expected, atol=1e-4, err_msg=f"t={t} id={obj}")
    assert seg.num_compilations == 1
    masks[1] = np.where(masks[0] == 3, 13, 0).astype(np.uint8)   # a sixth (late) object
    masks[1][0, 0] = 0
    labels, probs = seg(frames, masks)
    assert probs.shape[1] == 7 and seg.num_compilations == 1    # same bucket, no compile
    assert seg.timing["frames"] == 4 and seg.timing["compilations"] == 0


def test_stream_reads_a_long_video_lazily_with_flat_memory(tiny):
    """Thousands of small frames from a generator: at most two chunks are read ahead (one
    on the device while the previous one is handed out) and memory does not grow with
    the length."""
    import tracemalloc
    cfg, variables = tiny
    seg = Segmenter(cfg, variables, chunk_size=64)
    state = {"made": 0, "ahead": 0}
    rng = np.random.default_rng(0)

    def frames(n):
        for _ in range(n):
            state["made"] += 1
            yield rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)

    mask = np.zeros((16, 24), np.uint8)
    mask[4:12, 4:12] = 1

    def consume(n):
        count = state["made"] = 0
        tracemalloc.start()
        for t, label in seg.stream(frames(n), {0: mask}):
            state["ahead"] = max(state["ahead"], state["made"] - t - 1)
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return count, peak

    # Traced and compiled before memory is watched (tracemalloc slows tracing severalfold,
    # and compiling's memory is not the stream's); both lengths end on a 36-frame piece.
    for _ in seg.stream(frames(100), {0: mask}):
        pass
    short = consume(100)
    long = consume(1508)
    assert (short[0], long[0]) == (100, 1508)
    assert 64 <= state["ahead"] < 2 * 64              # the next chunk, not more
    assert long[1] < short[1] * 1.5 + 2 ** 18, (short[1], long[1])   # 1508 labels: 580 kB


def test_segmenter_runs_on_the_device_it_is_given_and_settings_are_fixed(tiny):
    cfg, variables = tiny
    device = jax.devices()[1]
    seg = Segmenter(cfg.with_overrides(["dtype=auto"]), variables, device=device)
    assert all(x.devices() == {device} for x in jax.tree_util.tree_leaves(seg.variables))
    frames, masks = _video(np.random.default_rng(6), t_len=2)
    seg(frames, {0: masks[0]})
    (program,) = seg._programs.values()
    assert all(s.device_set == {device}
               for s in jax.tree_util.tree_leaves(program.input_shardings))
    # "auto" is resolved for the device the program runs on (a CPU here), and the
    # settings the compiled programs depend on cannot be changed afterwards.
    assert seg.config.dtype == "float32"
    with pytest.raises(AttributeError):
        seg.chunk_size = 4
    with pytest.raises(AttributeError):
        seg.feedback = "fine"


def test_video_whose_first_frame_has_no_object(tiny):
    """Objects given only from frame 2: nothing before, tracked from then on; an id that
    never shows up again still gets a (possibly empty) probability channel, no error."""
    cfg, variables = tiny
    frames, masks = _video(np.random.default_rng(5), t_len=5)
    labels, probs = Segmenter(cfg, variables)(frames, {2: masks[2]})
    assert probs.shape == (5, 2, 50, 70)
    assert not (labels[:2] == 5).any() and set(np.unique(labels)) <= {0, 5}
    np.testing.assert_allclose(probs[:2, 0], 1.0)
