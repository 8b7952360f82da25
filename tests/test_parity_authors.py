"""The test that our model *is* A-GAME: the authors' model's outputs on shared weights.

Fixtures and tolerances: ../shared/fixtures/authors_model/README.md.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import Segmenter, merge_params, split_params
from agame_jax.convert import torch_name
from agame_jax.losses import segmentation_loss
from agame_jax.model import recurrent
from agame_jax.model.agame import AGame, pool_labels

from conftest import FIXTURES


@pytest.fixture(scope="module")
def clip():
    return np.load(FIXTURES / "clip_2obj.npz")


@pytest.fixture(scope="module")
def train_clip():
    return np.load(FIXTURES / "train_1obj.npz")


def test_segmenter_reproduces_authors_probabilities(authors_model, clip):
    cfg, variables = authors_model
    labels, probs = Segmenter(cfg, variables)(clip["frames"], {0: clip["given_0"]})
    assert probs.shape == clip["probs"].shape
    assert np.abs(probs - clip["probs"]).max() <= 1e-4
    assert (labels == clip["labels"]).mean() >= 0.999
    np.testing.assert_array_equal(labels[0], clip["labels"][0])


def test_intermediates_match_authors(authors_model, clip):
    cfg, variables = authors_model
    model = AGame(cfg)
    feats = jax.jit(lambda v, f: model.apply(v, f, method=AGame.encode))(
        variables, jnp.asarray(clip["frames"])[None])
    feats = jax.tree_util.tree_map(lambda x: x[0], feats)
    for name in ("s4", "s8", "s16"):
        np.testing.assert_allclose(getattr(feats, name)[1], clip[f"feats1_{name}"], atol=1e-4)
    ids = clip["object_ids"]
    masks = np.stack([clip["given_0"] == i for i in ids]).astype(np.float32)
    states = recurrent.init_states(model, variables, recurrent.frame_at(feats, 0),
                                   pool_labels(jnp.asarray(masks)))
    _, out = jax.jit(lambda v, s, f: recurrent.frame_step(
        model, v, s, f, 1, keep=("app_scores", "coarse_logits", "fine_logits")))(
        variables, states, recurrent.frame_at(feats, 1))
    for j, obj in enumerate(ids):
        ref = clip[f"app_scores1_obj{obj}"]
        assert np.abs(out["app_scores"][j] - ref).max() <= 2e-5 * np.abs(ref).max()
        np.testing.assert_allclose(out["coarse_logits"][j], clip[f"coarse_logits1_obj{obj}"],
                                   atol=1e-4)
        np.testing.assert_allclose(out["fine_logits"][j], clip[f"fine_logits1_obj{obj}"],
                                   atol=1e-4)


def _torch_layout(name, array, ref_shape):
    array = np.asarray(array)
    if array.ndim == 4:
        array = array.transpose(3, 2, 0, 1)
    return array.reshape(ref_shape)


def _by_torch_name(tree, collection):
    return {"trackseg." + torch_name(collection, tuple(k.key for k in path)): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_training_step_matches_authors(authors_model, train_clip):
    cfg, variables = authors_model
    model = AGame(cfg)
    d = train_clip
    trainable, frozen = split_params(variables["params"], cfg)

    def loss_fn(trainable, frozen, batch_stats, frames, labels):
        v = {"params": merge_params(trainable, frozen), "batch_stats": batch_stats}
        out, new_stats = recurrent.forward_clips(
            model, v, frames, labels[:, 0, None].astype(jnp.float32), train=True)
        losses = segmentation_loss(out["fine_logits"], out["coarse_logits"], labels[:, :, None])
        return losses["loss"], (losses, out, new_stats)

    (_, (losses, out, new_stats)), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        trainable, frozen, variables["batch_stats"], jnp.asarray(d["frames"]),
        jnp.asarray(d["labels"]))
    for key in ("loss", "loss_fine", "loss_coarse"):
        assert abs(float(losses[key]) - float(d[key])) <= 1e-5, key
    fine = jax.nn.softmax(out["fine_logits"], -1)[:, :, 0, ..., 1]
    assert np.abs(np.asarray(fine) - d["fine_prob"][:, 1:]).max() <= 1e-4
    coarse_lp = jax.nn.log_softmax(out["coarse_logits"][:, :, 0], -1)
    coarse = np.exp(np.asarray(jax.image.resize(
        coarse_lp, coarse_lp.shape[:2] + d["frames"].shape[2:4] + (2,), "bilinear")))[..., 1]
    assert np.abs(coarse - d["coarse_prob"][:, 1:]).max() <= 1e-4

    flat = _by_torch_name(grads, "params")
    assert sorted(flat) == sorted(d["grad_norm_names"])      # exactly the trained tensors
    for name, ref in zip(d["grad_norm_names"], d["grad_norms"]):
        assert abs(np.linalg.norm(flat[name]) - ref) <= 1e-3 * ref, name
    for key in d.files:
        if key.startswith("grad/"):
            name = key[5:]
            got = _torch_layout(name, flat[name], d[key].shape)
            tol = 3e-2 if ".bn" in name else 1e-3
            assert np.linalg.norm(got - d[key]) <= tol * np.linalg.norm(d[key]), name
    stats = _by_torch_name(new_stats, "batch_stats")
    for key in d.files:
        if key.startswith("bn_after/") and not key.endswith("num_batches_tracked"):
            np.testing.assert_allclose(stats[key[9:]], d[key], atol=1e-5, err_msg=key)
