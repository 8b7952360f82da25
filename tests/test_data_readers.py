"""Training-data readers: DAVIS / YouTube-VOS layouts, the clip recipe, SynthVOS, TFDS
conversion, bad inputs, and the grain pipeline's determinism and resumability."""
import dataclasses

import numpy as np
import pytest
from PIL import Image

from agame_jax.data import clips, davis, pipeline, ytvos
from agame_jax.data.clips import ClipSpec, DataError
from datasets import write_davis, write_ytvos
from conftest import SHARED

SPEC = ClipSpec(length=4, height=32, width=48, min_object_pixels=5, min_start_pixels=20)


def _data_config(**fields):
    from agame_jax.train.defaults import base_config
    d = base_config().data
    d.update(fields)
    return d


def test_davis_clip_follows_the_recipe(tmp_path):
    root = write_davis(tmp_path / "davis", {"a": 6, "b": 5})
    videos = list(davis.training_videos(root, "train"))
    assert [v.name for v in videos] == ["davis/a", "davis/b"]
    assert len(videos[0].frames) == 6 and videos[0].labels[0].name == "00000.png"
    stats = clips.ObjectStats()
    seen_objects = set()
    for seed in range(12):
        frames, labels = clips.sample_clip(videos[0], SPEC, np.random.default_rng(seed), stats)
        assert frames.shape == (4, 32, 48, 3) and frames.dtype == np.uint8
        assert labels.shape == (4, 32, 48) and labels.dtype == np.uint8
        # One object, renumbered 1; the other object is background; void survives.
        assert set(np.unique(labels)) == {0, 1, 255}
        seen_objects.add(int((labels[0] == 1).sum()))
    assert len(seen_objects) == 2                    # both objects get chosen sometimes
    # Deterministic in the generator.
    a = clips.sample_clip(videos[0], SPEC, np.random.default_rng(3), stats)
    b = clips.sample_clip(videos[0], SPEC, np.random.default_rng(3), stats)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_start_and_object_rule_matches_a_loop():
    counts = np.zeros((6, 255), int)
    counts[:, 1] = [0, 0, 200, 300, 10, 10]           # object 1: large in frames 2, 3
    counts[:, 2] = [150, 20, 20, 20, 20, 20]          # object 2: large in frame 0 only
    spec = dataclasses.replace(SPEC, length=3, min_start_pixels=100, min_object_pixels=25)
    starts = set()
    for seed in range(40):
        start, ids = clips.choose_start_and_objects(counts, spec, 1.0, np.random.default_rng(seed))
        starts.add(start)
        # A loop over the rule: start frames with an object > 100 px that leave room
        # for the clip; the chosen object is > 25 px in the start frame.
        assert start in [s for s in range(6 - 3 + 1) if (counts[s, 1:] > 100).any()]
        assert len(ids) == 1 and counts[start, ids[0]] > 25
    assert starts == {0, 2, 3}
    # Scale (training resolution / native) applies to both thresholds.
    start, ids = clips.choose_start_and_objects(counts, spec, 0.4, np.random.default_rng(0))
    assert start == 3 and ids == [1]                  # only 300 · 0.4 > 100
    with pytest.raises(DataError, match="vid: no annotated object"):
        clips.choose_start_and_objects(counts, spec, 0.01, np.random.default_rng(0), "vid")
    with pytest.raises(DataError, match="2 labelled frames, a clip needs 3"):
        clips.choose_start_and_objects(counts[:2], spec, 1.0, np.random.default_rng(0))


def test_flip_and_resize():
    frames = np.zeros((2, 16, 32, 3), np.uint8)
    frames[:, :, :8] = 200
    labels = np.zeros((2, 16, 32), np.uint8)
    labels[:, :, :8] = 1
    spec = dataclasses.replace(SPEC, height=32, width=64)
    flips = []
    for seed in range(16):
        f, l = clips.augment(frames, labels, spec, np.random.default_rng(seed))
        assert f.shape == (2, 32, 64, 3) and l.shape == (2, 32, 64)
        assert set(np.unique(l)) == {0, 1}            # nearest: no new label values
        flips.append(bool(l[0, 0, -1]))
        np.testing.assert_array_equal(l[0] == 1, f[0, ..., 0] > 100)
    assert 0 < sum(flips) < 16
    no_flip = dataclasses.replace(spec, hflip=False)
    assert not any(clips.augment(frames, labels, no_flip, np.random.default_rng(s))[1][0, 0, -1]
                   for s in range(8))


def test_ytvos_reader_uses_labelled_frames_and_filters_size(tmp_path):
    root = write_ytvos(tmp_path / "yt", {"v1": 7, "v2": 6, "v3": 6}, unlabelled_every=3,
                       sizes={"v3": (32, 48)})
    videos = list(ytvos.training_videos(root, "train"))
    assert [v.name for v in videos] == ["ytvos/v1", "ytvos/v2", "ytvos/v3"]
    # Frames 2 and 5 of v1 have no mask: only the 5 labelled frames are kept, in order.
    assert [p.stem for p in videos[0].frames] == ["00000", "00005", "00015", "00020", "00030"]
    only = list(ytvos.training_videos(root, "train", require_size=(32, 48)))
    assert [v.name for v in only] == ["ytvos/v3"]
    listed = list(ytvos.training_videos(root, "train", video_ids=["v2"]))
    assert [v.name for v in listed] == ["ytvos/v2"]
    frames, labels = clips.sample_clip(videos[1], SPEC, np.random.default_rng(0),
                                       clips.ObjectStats())
    assert frames.shape == (4, 32, 48, 3) and set(np.unique(labels)) <= {0, 1}


def test_bad_inputs_name_the_file(tmp_path):
    root = write_davis(tmp_path / "davis", {"a": 5, "b": 5})
    with pytest.raises(FileNotFoundError, match="ImageSets/2017/val.txt"):
        list(davis.training_videos(root, "val"))
    stats = clips.ObjectStats()
    # A corrupt frame.
    bad = root / "JPEGImages" / "480p" / "a" / "00002.jpg"
    bad.write_bytes(b"not a jpeg")
    video = next(iter(davis.training_videos(root, "train")))
    with pytest.raises(DataError, match="00002.jpg: cannot read image"):
        for seed in range(10):
            clips.sample_clip(video, dataclasses.replace(SPEC, length=5), np.random.default_rng(seed),
                              stats)
    # A mask whose size does not match its frame.
    ann = root / "Annotations" / "480p" / "b" / "00001.png"
    davis.write_label_png(ann, np.ones((10, 10), np.uint8))
    video_b = list(davis.training_videos(root, "train"))[1]
    with pytest.raises(DataError, match="b/00001.png: mask is 10x10, its frame is 48x64"):
        clips.sample_clip(video_b, dataclasses.replace(SPEC, length=5), np.random.default_rng(0),
                          clips.ObjectStats())
    # A missing mask, a video without objects: stop (default) or skip with a count.
    (root / "Annotations" / "480p" / "a" / "00003.png").unlink()
    with pytest.raises(DataError, match="a/00003.png: mask missing"):
        pipeline.build_sources(_data_config(sources="davis2017", davis_root=str(root)), SPEC)
    logs = []
    sources = pipeline.build_sources(
        _data_config(sources="davis2017", davis_root=str(root), on_error="skip"), SPEC,
        log=logs.append)
    assert [v.name for v in sources[0].videos] == ["davis/b"]
    assert any("skipped 1 of 2 videos" in line for line in logs)
    with pytest.raises(ValueError, match="data.davis_root is empty"):
        pipeline.build_sources(_data_config(sources="davis2017"), SPEC)
    with pytest.raises(ValueError, match="unknown source 'kitti'"):
        pipeline.build_sources(_data_config(sources="kitti"), SPEC)


def test_empty_video_is_skipped_while_sampling(tmp_path):
    root = write_davis(tmp_path / "davis", {"a": 5, "b": 5})
    for p in (root / "Annotations" / "480p" / "a").glob("*.png"):
        davis.write_label_png(p, np.zeros((48, 64), np.uint8))
    stop = _data_config(sources="davis2017", davis_root=str(root))
    ds, _ = pipeline.make_dataset(stop, SPEC, 2, seed=0)
    with pytest.raises(DataError, match="davis/a: no annotated object"):
        for i in range(4):
            ds[i]
    logs = []
    skip = _data_config(sources="davis2017", davis_root=str(root), on_error="skip")
    ds, sampler = pipeline.make_dataset(skip, SPEC, 2, seed=0, log=logs.append)
    for i in range(4):
        assert ds[i]["labels"].shape == (2, 4, 32, 48)
    assert len(sampler.skipped) == 1 and any("davis/a" in line for line in logs)


def test_real_davis_sample_reads(tmp_path):
    root = SHARED / "data" / "davis2016_sample"
    if not root.exists():
        pytest.skip(f"{root} not found")
    videos = list(davis.training_videos(root, "val"))
    assert [v.name for v in videos] == ["davis/blackswan", "davis/car-shadow", "davis/rollerblade"]
    spec = ClipSpec(length=3, height=240, width=432)
    frames, labels = clips.sample_clip(videos[0], spec, np.random.default_rng(0),
                                       clips.ObjectStats())
    assert frames.shape == (3, 240, 432, 3)
    assert (labels[0] == 1).sum() > 100                 # the swan, at training resolution


def _write_synthvos(tmp_path):
    objects, backgrounds = tmp_path / "objects", tmp_path / "backgrounds"
    objects.mkdir()
    backgrounds.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(objects / f"o{k}.jpg")
        mask = np.zeros((40, 30), np.uint8)
        mask[5:35, 4:26] = 255
        Image.fromarray(mask).save(objects / f"o{k}.png")
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(
            backgrounds / f"b{k}.jpg")
    return objects, backgrounds


def test_synthvos_composites_objects_on_backgrounds(tmp_path):
    from agame_jax.data.synthvos import SynthVOS
    objects, backgrounds = _write_synthvos(tmp_path)
    maker = SynthVOS(objects, backgrounds, max_objects=3)
    frames, labels = maker.make_video(np.random.default_rng(1), 5, 48, 64)
    assert frames.shape == (5, 48, 64, 3) and labels.shape == (5, 48, 64)
    ids = set(np.unique(labels)) - {0}
    assert 1 <= len(ids) <= 3 and ids <= {1, 2, 3}
    # Objects move: the label maps change over time.
    assert (labels[0] != labels[-1]).any()
    clip_frames, clip_labels = maker.sample_clip(SPEC, np.random.default_rng(2))
    assert clip_frames.shape == (4, 32, 48, 3)
    assert set(np.unique(clip_labels)) <= {0, 1} and (clip_labels[0] == 1).sum() > 20
    again = maker.sample_clip(SPEC, np.random.default_rng(2))
    np.testing.assert_array_equal(again[0], clip_frames)
    with pytest.raises(DataError, match="no image with a mask"):
        SynthVOS(backgrounds, backgrounds)


def test_tfds_example_conversion():
    from agame_jax.data.tfds_davis import video_from_example
    rng = np.random.default_rng(0)
    example = {"video": {"frames": rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8),
                         "segmentations": np.ones((3, 20, 30, 1), np.uint8)},
               "metadata": {"video_name": b"bear"}}
    name, frames, labels = video_from_example(example, (32, 48))
    assert name == "tfds_davis/bear" and frames.shape == (3, 32, 48, 3)
    assert labels.shape == (3, 32, 48) and (labels == 1).all()
    bad = {"video": {"frames": example["video"]["frames"],
                     "segmentations": np.ones((2, 20, 30, 1), np.uint8)}}
    with pytest.raises(DataError, match="differ"):
        video_from_example(bad)


def test_pipeline_is_deterministic_sharded_and_resumable(tmp_path):
    root = write_davis(tmp_path / "davis", {"a": 6, "b": 5, "c": 5})
    yt = write_ytvos(tmp_path / "yt", {"v1": 6})
    config = _data_config(sources="davis2017,ytvos,synthetic", davis_root=str(root),
                          ytvos_root=str(yt), ytvos_video_list="", ytvos_require_size="",
                          procedural_videos=2, num_threads=2, prefetch=2)
    ds, sampler = pipeline.make_dataset(config, SPEC, 4, seed=5)
    assert sampler.num_videos == 3 + 1 + 2
    # An epoch (the concatenation, 6 clips) visits every video once.
    picks = [sampler._pick(i, np.random.default_rng(0)) for i in range(6)]
    assert sorted(picks) == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (2, 1)]
    it = pipeline.make_iterator(ds, config)
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    fourth = next(it)
    resumed = pipeline.make_iterator(ds, config)
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["frames"], fourth["frames"])
    # Worker processes give the same stream as threads.
    with config.unlocked():
        config.worker_processes = 1
    in_process = pipeline.make_iterator(ds, config)
    np.testing.assert_array_equal(next(in_process)["frames"], first[0]["frames"])
    with config.unlocked():
        config.worker_processes = 0
    # Same seed, same stream; element i does not depend on the threads.
    ds_again, _ = pipeline.make_dataset(config, SPEC, 4, seed=5)
    np.testing.assert_array_equal(ds_again[1]["labels"], first[1]["labels"])
    # Two processes with half batches together see the single-process stream.
    p0, _ = pipeline.make_dataset(config, SPEC, 4, seed=5, process_index=0, process_count=2)
    p1, _ = pipeline.make_dataset(config, SPEC, 4, seed=5, process_index=1, process_count=2)
    single = ds[0]["frames"]
    np.testing.assert_array_equal(p0[0]["frames"], single[0::2])
    np.testing.assert_array_equal(p1[0]["frames"], single[1::2])
    # Equal weights: a random mix.
    mixed, mixed_sampler = pipeline.make_dataset(
        _data_config(**{**config.to_dict(), "weights": "1,1,0"}), SPEC, 2, seed=5)
    assert all(mixed_sampler._pick(i, np.random.default_rng(i))[0] in (0, 1) for i in range(20))
    with pytest.raises(ValueError, match="data.weights needs 3"):
        pipeline.make_dataset(_data_config(**{**config.to_dict(), "weights": "1,1"}), SPEC, 2, 5)
