"""Video files in and out: decode frames one at a time, encode an MP4 frame by frame.

PyAV (FFmpeg's libraries, shipped inside its wheels) does the work, so MP4, WebM, GIF,
MOV, AVI… are read and H.264 MP4 is written with nothing to install by hand. Frames are
uint8 RGB ``[H, W, 3]``; a whole video is never held in memory here.
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mov", ".avi", ".mkv", ".m4v")


class VideoError(ValueError):
    """A file that cannot be read (or written) as a video; the message names it,
    ``reason`` is FFmpeg's word on why (or ``""``)."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video's header says: ``size (H, W)``, frames per second and the frame
    count when the container records it (``None`` otherwise: count by decoding)."""

    size: tuple[int, int]
    fps: float
    frames: int | None


def _open(path):
    import av
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"{Path(path).name}: not a video that can be read ({_short(e)})",
                         _short(e)) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{Path(path).name}: holds no video stream", "no video stream")
    return container


def _short(error: Exception) -> str:
    # FFmpeg's own words without the file's path (the caller names the file).
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())[:160]


def video_info(path) -> VideoInfo:
    """The size, frame rate and (when recorded) frame count of a video file."""
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 25
        frames = stream.frames or None
        return VideoInfo((stream.height, stream.width), float(rate), frames)


def read_frames(path) -> Iterator[np.ndarray]:
    """The frames of a video file in order, each ``[H, W, 3]`` uint8 RGB, decoded one at
    a time (memory does not grow with the video's length). A decoding error part way is
    a ``VideoError`` naming the file and the frame."""
    import av
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"          # frame-parallel decoding where the codec allows
        t = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                t += 1
        except av.error.FFmpegError as e:
            raise VideoError(f"{Path(path).name}: cannot decode frame {t} ({_short(e)})") from None


def count_frames(path) -> int:
    """The number of frames of a video file: from its header when recorded, else by
    demuxing it (packets only, no decoding)."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


class VideoWriter:
    """Write ``[H, W, 3]`` uint8 RGB frames to an H.264 MP4 one at a time::

        with VideoWriter("out.mp4", fps=24) as writer:
            for frame in frames:
                writer.write(frame)

    The size is taken from the first frame; odd sizes are padded by one pixel (H.264's
    4:2:0 colour needs even sizes) with the edge row/column repeated. ``crf``: quality,
    lower is better (x264's scale, 23 its default).
    """

    def __init__(self, path, fps: float = 24.0, crf: int = 20):
        self.path, self.fps, self.crf = Path(path), fps, crf
        self._container = self._stream = None
        self._size = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Append one frame ``[H, W, 3]`` uint8 (all of the first frame's size)."""
        import av
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
        if self._container is None:
            self._start(frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame {self.frames} is {frame.shape[0]}x{frame.shape[1]}, the "
                             f"video's first is {self._size[0]}x{self._size[1]}")
        pad_h, pad_w = self._stream.height - frame.shape[0], self._stream.width - frame.shape[1]
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        for packet in self._stream.encode(picture):
            self._container.mux(packet)
        self.frames += 1

    def _start(self, size: tuple[int, int]) -> None:
        import av
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        # A rational rate: x264 needs one, and 29.97 etc. stay exact enough.
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.height, self._stream.width = size[0] + size[0] % 2, size[1] + size[1] % 2
        # yuv420p: the pixel format every browser and player decodes.
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self.crf)}
        self._size = size

    def close(self) -> None:
        """Flush the encoder and finish the file (a writer given no frame writes none)."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_video(path, frames, fps: float = 24.0) -> int:
    """Encode an iterable of ``[H, W, 3]`` uint8 frames as an MP4; returns the count."""
    with VideoWriter(path, fps) as writer:
        for frame in frames:
            writer.write(frame)
    if writer.frames == 0:
        raise ValueError("no frames to write")
    return writer.frames
