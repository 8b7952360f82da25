"""Continuous batching of videos: the host-side packing (no model) and the Segmenter's
``stream_many`` against segmenting each video on its own."""
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import Segmenter
from agame_jax.lanes import (MAX_PIECES, FrameBuffers, LaneScheduler, chunk_inputs, group_key,
                             stream_order)
from agame_jax.model.resize import avg_pool


def _fake_video(key, length, size=(16, 16), objects=1):
    """Frames whose pixel values encode (video, frame): checks that nothing is mixed up."""
    frames = [np.full(size + (3,), 0, np.uint8) for _ in range(length)]
    for t, f in enumerate(frames):
        f[0, 0] = (key, t % 256, t // 256)
    mask = np.zeros(size, np.uint8)
    for j in range(objects):
        mask[j, :4] = j + 1
    return key, frames, {0: mask}


def _drain(scheduler):
    plans = []
    while (plan := scheduler.next_chunk()) is not None:
        plans.append(plan)
    return plans


def test_scheduler_streams_every_frame_once_in_order_and_packs_the_lanes():
    lengths = [5, 2, 9, 4, 1, 7, 3]
    videos = [_fake_video(k, n) for k, n in enumerate(lengths)]
    plans = _drain(LaneScheduler(iter(videos), lanes=2, chunk=4))
    seen = {k: [] for k in range(len(lengths))}
    for group, lanes in plans:
        assert group == group_key((16, 16), 1) and len(lanes) == 2
        assert any(lane.pieces for lane in lanes)
        for lane in lanes:
            assert len(lane.pieces) <= MAX_PIECES
            pos = 0
            for piece in lane.pieces:
                assert piece.pos == pos                   # pieces are contiguous from 0
                for i in range(piece.count):
                    frame = lane.frames[piece.pos + i]
                    assert tuple(frame[0, 0]) == (piece.video.key, (piece.t0 + i) % 256, 0)
                    seen[piece.video.key].append(piece.t0 + i)
                pos += piece.count
            assert len(lane.frames) == pos
    assert all(seen[k] == list(range(n)) for k, n in enumerate(lengths))
    positions = sum(len(lanes) * 4 for _, lanes in plans)
    # 31 frames in 2 lanes of 4: whole chunks per video would take 2+1+3+1+1+2+1 = 11
    # chunks (44 positions); streamed back to back, at most a few positions are idle.
    assert positions <= 4 * 2 * 5, positions


def test_scheduler_puts_at_most_max_pieces_videos_in_a_lane_chunk():
    videos = [_fake_video(k, 1) for k in range(MAX_PIECES + 2)]
    plans = _drain(LaneScheduler(iter(videos), lanes=1, chunk=2 * MAX_PIECES))
    assert [[p.video.key for p in lanes[0].pieces] for _, lanes in plans] == [
        list(range(MAX_PIECES)), [MAX_PIECES, MAX_PIECES + 1]]
    assert len(plans[0][1][0].frames) == MAX_PIECES       # the rest of the chunk idles


def test_stream_order_most_objects_then_longest_first_so_lanes_finish_together():
    a, b, c = group_key((16, 16), 1), group_key((16, 16), 3), group_key((8, 8), 1)
    assert stream_order([b, a, a, b, a, c], [5, 2, 9, 7, 2, 1]) == [5, 3, 0, 2, 1, 4]
    lengths = [10, 40, 10, 40]
    positions = {}
    for name, order in (("given", range(4)), ("stream_order", stream_order([a] * 4, lengths))):
        videos = [_fake_video(k, lengths[k]) for k in order]
        positions[name] = 2 * 8 * len(_drain(LaneScheduler(iter(videos), lanes=2, chunk=8)))
    # Given: one lane gets 10 + 10 + 40 frames, the other 40 (8 chunks); longest first:
    # 40 + 10 each (7 chunks).
    assert positions == {"given": 128, "stream_order": 112}


def test_scheduler_keeps_frame_sizes_apart_and_runs_the_largest_videos_slots():
    videos = [_fake_video(0, 3), _fake_video(1, 2, size=(16, 32)), _fake_video(2, 2),
              _fake_video(3, 3, objects=3)]
    plans = _drain(LaneScheduler(iter(videos), lanes=2, chunk=4))
    for (size, slots), lanes in plans:
        pieces = [p for lane in lanes for p in lane.pieces]
        assert slots == max(p.video.slots for p in pieces)
        assert all(f.shape[:2] == size for lane in lanes for f in lane.frames)
    # In the given order: a frame size starts when every lane has finished the previous
    # one; videos of one size share chunks whatever their objects (v2 with 1 slot, then
    # v3 with 3 in the same lane and chunk).
    assert [group for group, _ in plans] == [group_key((16, 16), 1), group_key((16, 32), 1),
                                             group_key((16, 16), 3), group_key((16, 16), 3)]
    assert [(p.video.key, p.count) for p in plans[2][1][0].pieces] == [(2, 2), (3, 2)]


def test_scheduler_skips_empty_videos_and_names_bad_frames():
    videos = [(0, [], {}), _fake_video(1, 2)]
    plans = _drain(LaneScheduler(iter(videos), lanes=1, chunk=4))
    assert [p.video.key for _, lanes in plans for p in lanes[0].pieces] == [1]
    key, frames, masks = _fake_video(7, 3)
    frames[2] = frames[2][:8]
    with pytest.raises(ValueError, match="video 3: mask for frame 0 is 4x4"):
        _drain(LaneScheduler(iter([(3, frames, {0: np.zeros((4, 4), np.uint8)})]), 1, 4))
    with pytest.raises(ValueError, match="video 7, frame 2 is 8x16"):
        _drain(LaneScheduler(iter([(key, frames, masks)]), lanes=1, chunk=4))
    # After a good video in the same chunk: the chunk runs up to the bad video (so the
    # good one can finish), the error comes with the next chunk.
    scheduler = LaneScheduler(iter([_fake_video(1, 3), (key, frames, masks)]), 1, 8)
    _, lanes = scheduler.next_chunk()
    assert [(p.video.key, p.count) for p in lanes[0].pieces] == [(1, 3)]
    with pytest.raises(ValueError, match="video 7, frame 2"):
        scheduler.next_chunk()


def test_pooling_binary_masks_on_the_host_is_exact_and_equals_the_device():
    """The host pools the given masks with the model's own ``avg_pool``: block means of
    16×16 binary blocks are exact, so host and device agree to the bit."""
    rng = np.random.default_rng(0)
    masks = (rng.random((2, 32, 48, 1)) < 0.3).astype(np.float32)
    expected = masks.reshape(2, 2, 16, 3, 16, 1).mean(axis=(2, 4), dtype=np.float64)
    host = avg_pool(masks, 16)
    assert isinstance(host, np.ndarray)
    np.testing.assert_array_equal(host, expected.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(avg_pool(jnp.asarray(masks), 16)), host)


def _videos(rng, lengths, size=(40, 56)):
    """Videos with objects 2 and 5 at frame 0 and object 9 from frame 2 (frame 1 in a
    2-frame video): three objects, one program (bucket 3)."""
    out = []
    for k, n in enumerate(lengths):
        frames = rng.integers(0, 256, (n,) + size + (3,), dtype=np.uint8)
        given = np.zeros(size, np.uint8)
        given[4:20, 6:30] = 2
        given[24:36, 30:50] = 5
        late = np.zeros(size, np.uint8)
        late[10:30, 20:40] = 9
        out.append((f"v{k}", frames, {0: given, min(2, n - 1): late}))
    return out


def test_stream_many_equals_each_video_alone(tiny_model):
    """Videos of 7, 2, 4, 5 and 3 frames through 2 lanes of 3-frame chunks (videos end
    and start inside chunks, one ends at a chunk's end, late objects join in a video
    that started mid-chunk), then a 1-object video (in the lane the others leave, first
    with their 3 object slots, then with its own 1):
    every frame's labels and probabilities equal those of segmenting the video alone."""
    cfg, variables = tiny_model
    videos = _videos(np.random.default_rng(0), [7, 2, 4, 5, 3])
    key, frames, masks = _videos(np.random.default_rng(1), [4])[0]
    videos.append(("single", frames, {0: np.where(masks[0] == 2, 2, 0).astype(np.uint8)}))
    one = Segmenter(cfg, variables, chunk_size=3)
    alone = {key: one(frames, masks) for key, frames, masks in videos}
    seg = Segmenter(cfg, variables, chunk_size=3, lanes=2)
    got = {key: {} for key, _, _ in videos}
    for key, t, labels, probs in seg.stream_many(videos, with_probs=True):
        assert t not in got[key]
        got[key][t] = (labels, probs)
    for key, frames, _ in videos:
        labels, probs = alone[key]
        assert sorted(got[key]) == list(range(len(frames)))
        for t in range(len(frames)):
            np.testing.assert_allclose(got[key][t][1], probs[t], atol=1e-5, err_msg=f"{key} {t}")
            np.testing.assert_array_equal(got[key][t][0], labels[t], err_msg=f"{key} {t}")
    # 25 frames in 5 chunks of 2 × 3: the 1-object video starts in lane 1 in the 4th chunk
    # (3 slots, beside the end of "v3"); the 5th runs 1 slot (the states are cut to it)
    # and, holding one frame a lane, is cut to 2 × 1 positions.
    assert seg.timing["computed_positions"] == 4 * 6 + 2 and seg.num_compilations == 2
    # The other way round in one lane: the 1-object video, then a 3-object one joining in
    # its last chunk (the states are extended to 3 slots); no new program.
    compiled = one.num_compilations
    for key, t, labels, probs in one.stream_many([videos[-1], videos[3]], with_probs=True):
        np.testing.assert_allclose(probs, alone[key][1][t], atol=1e-5, err_msg=f"{key} {t}")
        np.testing.assert_array_equal(labels, alone[key][0][t], err_msg=f"{key} {t}")
    assert one.timing["computed_positions"] == 3 * 3 and one.num_compilations == compiled


def test_streaming_back_to_back_computes_the_frames_not_whole_chunks(tiny_model):
    cfg, variables = tiny_model
    videos = [(k, frames, masks) for k, (_, frames, masks) in
              enumerate(_videos(np.random.default_rng(1), [5, 5, 5]))]
    seg = Segmenter(cfg, variables, chunk_size=4)
    assert sum(1 for _ in seg.stream_many(videos)) == 15
    # 15 frames in chunks of 4, 4, 4 and 3 (the last cut to its frames), not 3 × 8 = 24
    # positions with a chunk per video.
    assert seg.timing["computed_positions"] == 15 and seg.num_compilations == 2


def test_validator_streams_its_videos_and_scores_as_one_by_one(tiny_model):
    """Training's validation runs its held-out videos through ``stream_many`` (sorted by
    object bucket); the scores equal those of segmenting each video alone."""
    from agame_jax.evaluation.metrics import evaluate_sequence
    from agame_jax.train.validation import HeldOutVideo, Validator
    cfg, variables = tiny_model
    rng = np.random.default_rng(3)
    videos = []
    for k, (n, objects) in enumerate([(5, 2), (3, 1), (6, 2), (4, 1)]):
        labels = np.zeros((n, 32, 48), np.uint8)
        for j in range(objects):
            labels[:, 4 + 12 * j:14 + 12 * j, 8:30] = j + 1
        labels[min(2, n - 1):, 20:30, 32:44] = 7            # a late object
        videos.append(HeldOutVideo(f"v{k}", rng.integers(0, 256, (n, 32, 48, 3), np.uint8),
                                   labels))
    validator = Validator(videos, cfg, chunk_size=4, num_images=2)
    scores, pictures = validator(variables)
    seg = validator.segmenter                  # one video at a time, its programs reused
    j, f = [], []
    for video in videos:
        pred = np.stack([labels for _, labels in seg.stream(video.frames, video.first_masks())])
        for obj in evaluate_sequence(pred, video.labels).values():
            j.append(np.nanmean(obj["J"]))
            f.append(np.nanmean(obj["F"]))
    assert scores["J"] == pytest.approx(np.nanmean(j), abs=1e-6)
    assert scores["F"] == pytest.approx(np.nanmean(f), abs=1e-6)
    assert [p[0] for p in pictures] == ["v0", "v1"]
    # 18 frames back to back in chunks of 4 (v2, v0 with 3 slots, then v3, v1 with 2; the
    # 3rd chunk holds the end of v0 and the start of v3), the last cut to v1's last 2
    # frames: 18 positions, with the programs of the first validation.
    validator(variables)
    assert seg.timing["computed_positions"] == 18 and seg.timing["compilations"] == 0


def test_chunk_frames_reuse_two_host_buffers_and_clear_unused_positions():
    """A chunk's frames go through one of two host buffers taken in turn (stream_many
    refills one only after the chunk before the previous finished), and positions
    without a frame are zero, not what the buffer held two chunks before."""
    buffers = FrameBuffers()
    a, b, c = (buffers.take((1, 2, 3, 4, 3)) for _ in range(3))
    assert a is not b and c is a
    d = buffers.take((2, 2, 3, 4, 3))                       # a new frame size: a new pair
    assert d.shape == (2, 2, 3, 4, 3) and buffers.take(d.shape) is not d
    assert buffers.take(d.shape) is d
    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    full = rng.integers(1, 256, (9, 16, 16, 3), dtype=np.uint8)    # chunks of 4, 4, 1
    schedule = LaneScheduler([(0, full, {0: mask})], 1, 4)
    buffers = FrameBuffers()
    sent = []
    while (planned := schedule.next_chunk()) is not None:
        # Copied at once: on CPUs the device array may share the buffer's memory.
        frames = chunk_inputs(planned[0], planned[1], 4, buffers).frames
        sent.append(np.array(frames, copy=True))
    assert len(sent) == 3
    np.testing.assert_array_equal(sent[0][0], full[0:4])
    np.testing.assert_array_equal(sent[1][0], full[4:8])
    np.testing.assert_array_equal(sent[2][0, 0], full[8])
    assert not sent[2][0, 1:].any()            # the buffer of chunk 0 held frames 1-3 there
