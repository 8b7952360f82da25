"""Video files in and out (agame_jax.video_io): frames survive an MP4 and a GIF round trip."""
import numpy as np
import pytest
from PIL import Image

from agame_jax.video_io import (VideoError, VideoWriter, count_frames, read_frames,
                                video_info, write_video)


def moving_square(t_len=7, h=48, w=64):
    """Frames ``[t_len, h, w, 3]`` of a red square moving right over a blue-grey ramp."""
    frames = np.zeros((t_len, h, w, 3), np.uint8)
    frames[..., 2] = 90
    frames[..., 1] = np.linspace(20, 200, w, dtype=np.uint8)[None, None, :]
    for t in range(t_len):
        frames[t, 10:30, 4 + 5 * t: 24 + 5 * t] = (220, 30, 30)
    return frames


def test_mp4_round_trip_keeps_count_size_rate_and_content(tmp_path):
    frames = moving_square()
    path = tmp_path / "clip.mp4"
    assert write_video(path, frames, fps=12) == 7
    info = video_info(path)
    assert info.size == (48, 64) and info.fps == pytest.approx(12) and info.frames == 7
    assert count_frames(path) == 7
    back = np.stack(list(read_frames(path)))
    assert back.shape == frames.shape and back.dtype == np.uint8
    # Lossy (H.264, 4:2:0 colour), but close; each frame is itself, not its neighbour.
    error = np.abs(back.astype(int) - frames.astype(int)).mean(axis=(1, 2, 3))
    assert error.max() < 6
    for t in range(1, 7):
        assert np.abs(back[t].astype(int) - frames[t - 1].astype(int)).mean() > error[t] + 5


def test_odd_sizes_are_padded_by_repeating_the_edge(tmp_path):
    frames = moving_square(3, 33, 47)
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=5) as writer:
        for frame in frames:
            writer.write(frame)
    back = np.stack(list(read_frames(path)))
    assert back.shape == (3, 34, 48, 3)
    assert np.abs(back[:, :33, :47].astype(int) - frames.astype(int)).mean() < 6
    assert np.abs(back[:, 33].astype(int) - back[:, 32].astype(int)).mean() < 6


def test_gif_frames_are_read_exactly(tmp_path):
    frames = moving_square(5)
    path = tmp_path / "clip.gif"
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    back = np.stack(list(read_frames(path)))
    assert back.shape == frames.shape
    assert count_frames(path) == 5
    # Few colours: the GIF's palette holds them all, so the frames come back exactly.
    np.testing.assert_array_equal(back, frames)


def test_bad_files_and_frames_raise_clear_errors(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match="notes.mp4: not a video"):
        video_info(text)
    with pytest.raises(VideoError, match="notes.mp4"):
        list(read_frames(text))
    with pytest.raises(ValueError, match="video's first is 48x64"):
        with VideoWriter(tmp_path / "x.mp4") as writer:
            writer.write(moving_square(1)[0])
            writer.write(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])


def test_webm_without_a_frame_count_in_its_header_is_counted(tmp_path):
    import av
    path = tmp_path / "clip.webm"
    with av.open(str(path), "w") as container:          # VP9 in WebM, as browsers record
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * t, np.uint8), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert video_info(path).frames is None and count_frames(path) == 5
    means = [frame.mean() for frame in read_frames(path)]
    np.testing.assert_allclose(means, [0, 40, 80, 120, 160], atol=3)
