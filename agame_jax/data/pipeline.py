"""The training input pipeline: clip sources mixed into batches by grain.

Why grain: its ``MapDataset`` is random access, so element ``i`` of the stream is a pure
function of ``(seed, i)`` here, whatever the number of reader threads or worker
processes; its iterators have ``get_state``/``set_state`` (a small dict holding the next
index) that goes into every checkpoint, so a resumed run sees exactly the batches the
uninterrupted run would have seen. It reads with a thread pool and prefetches
(``data.num_threads``, ``data.prefetch``), and can move the work to worker processes
(``data.worker_processes``) when Python-side decoding becomes the bottleneck.

Sources (``data.sources``, comma separated):
  ``synthetic``   procedural videos (agame_jax.data.synthetic), no download;
  ``davis2017``   a DAVIS-layout folder (``data.davis_root``, ``data.davis_split``);
  ``ytvos``       a YouTube-VOS-layout folder (``data.ytvos_root``, ``data.ytvos_split``,
                  optionally ``data.ytvos_video_list`` and ``data.ytvos_require_size``);
  ``synthvos``    SynthVOS compositing (``data.synthvos_objects``, ``data.synthvos_backgrounds``);
  ``tfds_davis``  tensorflow-datasets' ``davis`` builder (needs tensorflow-datasets).

With ``data.weights`` empty the sources are concatenated and each pass over the
concatenation visits every video once in a fresh random order (the authors' epoch of
one clip per video); with weights, each clip picks its source with those probabilities
and a video uniformly within it (stage 2's equal mix of DAVIS and YouTube-VOS).
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Callable

import grain
import numpy as np
from absl import flags

from agame_jax.data import clips, davis, tfds_davis, ytvos
from agame_jax.data.clips import ClipSpec, DataError
from agame_jax.data.synthetic import make_video
from agame_jax.data.synthvos import SynthVOS

# Procedural sources have no natural size; in a concatenation they count as this many
# videos unless ``data.procedural_videos`` says otherwise.
SOURCES = ("synthetic", "davis2017", "ytvos", "synthvos", "tfds_davis")


class ClipSource:
    """A set of videos a clip can be drawn from: ``sample(index, rng) -> (frames, labels)``."""

    name: str = "source"

    def __len__(self) -> int:
        raise NotImplementedError

    def sample(self, index: int, rng: np.random.Generator):
        raise NotImplementedError


class VideoListSource(ClipSource):
    """Clips from ``LabelledVideo`` files (DAVIS, YouTube-VOS)."""

    def __init__(self, name: str, videos: list[clips.LabelledVideo], spec: ClipSpec):
        if not videos:
            raise DataError(f"{name}: no usable videos")
        self.name, self.videos, self.spec = name, videos, spec
        self.stats = clips.ObjectStats()

    def __len__(self):
        return len(self.videos)

    def sample(self, index, rng):
        return clips.sample_clip(self.videos[index], self.spec, rng, self.stats)

    def describe(self, index) -> str:
        return self.videos[index].name


class InMemorySource(ClipSource):
    """Clips from videos held as arrays (the TFDS reader)."""

    def __init__(self, name: str, videos: list[tuple[str, np.ndarray, np.ndarray]],
                 spec: ClipSpec):
        if not videos:
            raise DataError(f"{name}: no usable videos")
        self.name, self.videos, self.spec = name, videos, spec

    def __len__(self):
        return len(self.videos)

    def sample(self, index, rng):
        video_name, frames, labels = self.videos[index]
        return clips.clip_from_arrays(frames, labels, self.spec, rng, video_name)

    def describe(self, index) -> str:
        return self.videos[index][0]


class ProceduralSource(ClipSource):
    """A source whose every clip is new: ``make(rng) -> (frames, labels)``."""

    def __init__(self, name: str, make: Callable, nominal_size: int):
        self.name, self.make, self.nominal_size = name, make, nominal_size

    def __len__(self):
        return self.nominal_size

    def sample(self, index, rng):
        return self.make(rng)

    def describe(self, index) -> str:
        return f"{self.name} clip"


def synthetic_source(spec: ClipSpec, num_objects: int, num_distractors: int,
                     nominal_size: int) -> ProceduralSource:
    """Procedural textured videos (``agame_jax.data.synthetic``) cut by the usual rule."""

    def make(rng):
        for _ in range(10):
            video = make_video(rng, spec.length, spec.height, spec.width,
                               num_objects=num_objects, num_distractors=num_distractors)
            try:
                return clips.clip_from_arrays(video.frames, video.labels, spec, rng, "synthetic")
            except DataError:
                continue
        raise DataError("synthetic: no clip with a large enough object in 10 tries; "
                        "is data.min_start_pixels too large for the resolution?")

    return ProceduralSource("synthetic", make, nominal_size)


def _collect(name: str, items, on_error: str, log) -> list:
    """Videos from a reader's stream of videos and ``DataError``s (stop or skip)."""
    videos, skipped = [], 0
    for item in items:
        if isinstance(item, DataError):
            if on_error == "stop":
                raise item
            skipped += 1
            log(f"warning: {name}: skipping a video: {item}")
        else:
            videos.append(item)
    if skipped:
        log(f"warning: {name}: skipped {skipped} of {skipped + len(videos)} videos")
    return videos


def build_sources(data_config, spec: ClipSpec, log=print) -> list[ClipSource]:
    """The sources named in ``data_config.sources`` (see the module docstring)."""
    names = [s.strip() for s in str(data_config.sources).split(",") if s.strip()]
    if not names:
        raise ValueError("data.sources is empty")
    on_error = data_config.on_error
    if on_error not in ("stop", "skip"):
        raise ValueError(f"data.on_error must be 'stop' or 'skip', got {on_error!r}")
    sources = []
    for name in names:
        if name == "synthetic":
            sources.append(synthetic_source(spec, data_config.synthetic_objects,
                                            data_config.synthetic_distractors,
                                            data_config.procedural_videos))
        elif name == "davis2017":
            root = required_root(data_config.davis_root, "data.davis_root")
            sub = dataclasses.replace(spec, min_object_pixels=data_config.davis_min_object_pixels)
            videos = _collect(name, davis.training_videos(root, data_config.davis_split),
                              on_error, log)
            sources.append(VideoListSource(name, videos, sub))
        elif name == "ytvos":
            root = required_root(data_config.ytvos_root, "data.ytvos_root")
            ids = (ytvos.read_video_ids(resolve_path(data_config.ytvos_video_list))
                   if data_config.ytvos_video_list else None)
            size = _size(data_config.ytvos_require_size)
            sub = dataclasses.replace(spec, min_object_pixels=data_config.ytvos_min_object_pixels)
            videos = _collect(name, ytvos.training_videos(root, data_config.ytvos_split, ids,
                                                          size), on_error, log)
            sources.append(VideoListSource(name, videos, sub))
        elif name == "synthvos":
            maker = SynthVOS(
                required_root(data_config.synthvos_objects, "data.synthvos_objects"),
                required_root(data_config.synthvos_backgrounds, "data.synthvos_backgrounds"),
                data_config.synthvos_max_objects)
            sources.append(ProceduralSource("synthvos", lambda rng: maker.sample_clip(spec, rng),
                                            data_config.procedural_videos))
        elif name == "tfds_davis":
            sub = dataclasses.replace(spec, min_object_pixels=data_config.davis_min_object_pixels)
            videos = tfds_davis.load_videos(data_config.tfds_davis_name,
                                            data_config.davis_split, data_config.tfds_data_dir,
                                            (spec.height, spec.width))
            sources.append(InMemorySource(name, videos, sub))
        else:
            raise ValueError(f"data.sources: unknown source {name!r} (known: {', '.join(SOURCES)})")
    return sources


def required_root(value: str, field: str) -> Path:
    """The folder a config field names; a clear error when it is empty or missing."""
    if not value:
        raise ValueError(f"{field} is empty; set it to the dataset's folder")
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found ({field})")
    return path


def resolve_path(value: str) -> Path:
    """A path as given, or relative to the project (for the shipped split lists)."""
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute():
        return path
    project = Path(__file__).resolve().parents[2]
    return project / value if (project / value).exists() else path


def _size(value: str):
    if not value:
        return None
    try:
        h, w = (int(v) for v in str(value).lower().split("x"))
    except ValueError:
        raise ValueError(f"data.ytvos_require_size must look like 720x1280, got {value!r}") from None
    return h, w


def _parse_weights(value: str, count: int):
    if not value:
        return None
    weights = np.array([float(v) for v in str(value).split(",")])
    if len(weights) != count or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"data.weights needs {count} non-negative numbers, got {value!r}")
    return weights / weights.sum()


class ClipSampler:
    """Element ``i`` of the training stream, a pure function of ``(seed, i)``.

    A bad video met while sampling stops the run (``on_error="stop"``) or is skipped
    for another draw with a warning (``"skip"``); ``skipped`` counts them (per process).
    """

    def __init__(self, sources: list[ClipSource], seed: int, weights=None,
                 on_error: str = "stop", log=print):
        self.sources, self.seed, self.weights = sources, seed, weights
        self.on_error, self.log = on_error, log
        self.offsets = np.cumsum([0] + [len(s) for s in sources])
        self.skipped: set[str] = set()
        self._lock = threading.Lock()

    def __getstate__(self):                 # worker processes get a copy, without the lock
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def num_videos(self) -> int:
        """Videos in all sources (procedural ones count as ``data.procedural_videos``)."""
        return int(self.offsets[-1])

    def _pick(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        if self.weights is not None:
            s = int(rng.choice(len(self.sources), p=self.weights))
            return s, int(rng.integers(len(self.sources[s])))
        total = int(self.offsets[-1])
        epoch, position = divmod(index, total)
        order = np.random.default_rng([self.seed, 1, epoch]).permutation(total)
        flat = int(order[position])
        s = int(np.searchsorted(self.offsets, flat, side="right") - 1)
        return s, flat - int(self.offsets[s])

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, 0, int(index)])
        s, v = self._pick(int(index), rng)
        for _ in range(100):
            try:
                frames, labels = self.sources[s].sample(v, rng)
                return {"frames": frames, "labels": labels}
            except DataError as e:
                if self.on_error == "stop":
                    raise
                with self._lock:
                    first_time = str(e) not in self.skipped
                    self.skipped.add(str(e))
                if first_time:
                    self.log(f"warning: skipping: {e}")
                s = int(rng.integers(len(self.sources)))
                v = int(rng.integers(len(self.sources[s])))
        raise DataError("100 draws in a row met bad videos; see the warnings above")


def make_dataset(data_config, spec: ClipSpec, global_batch_size: int, seed: int, *,
                 process_index: int = 0, process_count: int = 1, log=print):
    """The infinite ``grain.MapDataset`` of this process's batches and its sampler.

    Batches are dicts ``frames [b, T, H, W, 3]`` uint8, ``labels [b, T, H, W]`` uint8 with
    ``b = global_batch_size / process_count``; process ``p`` takes elements ``p, p+P, …``
    so the hosts together see the stream a single host would.
    """
    if global_batch_size % process_count:
        raise ValueError(f"train.batch_size {global_batch_size} is not divisible by the "
                         f"{process_count} processes")
    sources = build_sources(data_config, spec, log)
    sampler = ClipSampler(sources, seed, _parse_weights(data_config.weights, len(sources)),
                          data_config.on_error, log)
    ds = grain.MapDataset.range(2 ** 62)[process_index::process_count].map(sampler)
    ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
    return ds, sampler


def make_iterator(dataset, data_config):
    """A checkpointable iterator over ``dataset`` with reader threads and prefetching."""
    it_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=data_config.num_threads,
                                                      prefetch_buffer_size=data_config.prefetch))
    if data_config.worker_processes > 0:
        if not flags.FLAGS.is_parsed():     # grain's workers read absl flags (library use)
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=data_config.worker_processes))
    return iter(it_ds)
