"""Built-in synthetic videos: deterministic, exact masks, occlusion, look-alike distractors."""
import numpy as np

from agame_jax.data.synthetic import make_video


def test_deterministic_in_the_generator():
    a = make_video(np.random.default_rng(3), num_frames=4, height=48, width=64, num_objects=2)
    b = make_video(np.random.default_rng(3), num_frames=4, height=48, width=64, num_objects=2)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_video(np.random.default_rng(4), num_frames=4, height=48, width=64, num_objects=2)
    assert not np.array_equal(a.frames, c.frames)


def test_shapes_ids_motion_and_visible_masks():
    v = make_video(np.random.default_rng(0), num_frames=6, height=64, width=80, num_objects=3)
    assert v.frames.shape == (6, 64, 80, 3) and v.frames.dtype == np.uint8
    assert v.labels.shape == (6, 64, 80) and set(np.unique(v.labels)) <= {0, 1, 2, 3}
    for k in range(1, 4):
        visible = v.labels == k
        # A visible pixel of object k lies inside its full (amodal) shape.
        assert not np.any(visible & ~v.amodal[:, k - 1])
        centroids = [np.argwhere(v.amodal[t, k - 1]).mean(0) for t in (0, 5)]
        assert np.abs(centroids[0] - centroids[1]).max() > 0.5       # it moves


def test_occlusion_happens_and_masks_hold_only_visible_parts():
    occluded = 0
    for seed in range(10):
        v = make_video(np.random.default_rng(seed), num_frames=8, height=48, width=48,
                       num_objects=2, num_distractors=3)
        for k in range(2):
            occluded += int(np.any(v.amodal[:, k] & (v.labels != k + 1)))
    assert occluded > 0


def test_distractors_look_like_their_target():
    close = 0
    for seed in range(5):
        v = make_video(np.random.default_rng(seed), num_frames=1, height=96, width=96,
                       num_objects=2, num_distractors=2)
        frame = v.frames[0].astype(float)
        assert set(v.distractor_of) <= {1, 2} and not np.any(v.labels[0][v.distractor_amodal[0].any(0)] < 0)
        background = frame[(v.labels[0] == 0) & ~v.distractor_amodal[0].any(0)].mean(0)
        for d, target in enumerate(v.distractor_of):
            t_pix = frame[v.labels[0] == target]
            d_pix = frame[v.distractor_amodal[0, d] & (v.labels[0] == 0)]
            if len(t_pix) < 30 or len(d_pix) < 30:
                continue
            # Closer in mean colour to its target than the target is to the background.
            gap = np.abs(t_pix.mean(0) - d_pix.mean(0)).max()
            close += int(gap < np.abs(t_pix.mean(0) - background).max())
    assert close >= 3
