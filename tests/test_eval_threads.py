"""Threaded file work of the evaluation, and the Segmenter's overlap with its caller."""
import threading
import time

import numpy as np
import pytest

from agame_jax.evaluation.threads import BackgroundCalls, ordered_map


def test_ordered_map_keeps_order_and_bounds_the_work_ahead():
    started, taken = [], []
    lock = threading.Lock()

    def slow(i):
        with lock:
            started.append(i)
        time.sleep(0.002 * (i % 3))               # finish out of order
        return i * i

    def items():
        for i in range(40):
            yield i

    for value in ordered_map(slow, items(), workers=4, ahead=5):
        taken.append(value)
        with lock:
            assert len(started) - len(taken) <= 5
    assert taken == [i * i for i in range(40)]
    assert list(ordered_map(slow, range(5), workers=1, ahead=5)) == [0, 1, 4, 9, 16]


def test_ordered_map_raises_a_call_error_in_turn():
    def fn(i):
        if i == 3:
            raise ValueError("bad frame 3")
        return i
    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for v in ordered_map(fn, range(10), workers=3, ahead=4):
            got.append(v)
    assert got == [0, 1, 2]


def test_background_calls_run_all_bound_the_backlog_and_raise():
    done, peak = [], [0]
    lock = threading.Lock()
    running = [0]

    def call(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.003)
        with lock:
            running[0] -= 1
            done.append(i)

    with BackgroundCalls(3, limit=4) as calls:
        for i in range(30):
            calls.submit(call, i)
            assert len(calls.pending) <= 4
    assert sorted(done) == list(range(30)) and peak[0] <= 3
    with pytest.raises(OSError, match="disk full"):
        with BackgroundCalls(2, limit=2) as calls:
            calls.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))


def test_threaded_frame_reading_equals_sequential(tmp_path):
    from PIL import Image
    from agame_jax.evaluation.videos import EvalVideo
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i:05d}.png")
        Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(paths[-1])
    video = EvalVideo("v", tuple(paths), {})
    one = list(video.frames())
    many = list(video.frames(workers=3, ahead=2))
    assert len(many) == 7 and all(np.array_equal(a, b) for a, b in zip(one, many))


def _segmenter_and_video(tiny_model, n_frames: int, seed: int):
    """A Segmenter with 3-frame chunks, random 32×48 frames and a first-frame mask."""
    from agame_jax import Segmenter
    cfg, variables = tiny_model
    frames = np.random.default_rng(seed).integers(0, 256, (n_frames, 32, 48, 3), np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 1
    return Segmenter(cfg, variables, chunk_size=3), frames, mask


def test_model_time_leaves_out_the_callers_time(tiny_model):
    """The caller's work between frames (writing files) overlaps the device's and is not
    counted as model time."""
    seg, frames, mask = _segmenter_and_video(tiny_model, 12, seed=0)
    list(seg.stream(frames, {0: mask}))                     # compile the program
    pause = 0.05
    for t, _ in seg.stream(frames, {0: mask}):
        time.sleep(pause)
    assert seg.timing["frames"] == 12 and seg.timing["compilations"] == 0
    assert 0 < seg.timing["seconds"] < 12 * pause / 2


def test_next_chunk_is_dispatched_before_a_chunk_is_handed_out(tiny_model):
    """While the caller handles chunk k, chunk k+1 is already on the device."""
    seg, frames, mask = _segmenter_and_video(tiny_model, 10, seed=1)
    dispatched = []
    program = seg._program

    def counting(states, inputs, with_probs):
        run = program(states, inputs, with_probs)
        return lambda *args: (dispatched.append(int(args[2].frame_index[0, 0])), run(*args))[1]
    seg._program = counting
    seen = {}
    for t, _ in seg.stream(frames, {0: mask}):
        seen.setdefault(t // 3, len(dispatched))
    # Chunks start at frames 0, 3, 6, 9: when chunk k is handed out, k + 2 are dispatched.
    assert dispatched == [0, 3, 6, 9]
    assert seen == {0: 2, 1: 3, 2: 4, 3: 4}
