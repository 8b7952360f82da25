"""agame_jax.research: traces equal the Segmenter and a plain loop; gradient paths add up."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import Segmenter, gmm, research
from agame_jax.model import recurrent
from agame_jax.model.agame import AGame, pool_labels
from agame_jax.model.appearance import residual_weights
from conftest import random_clip


def two_objects(rng, t=4):
    frames, masks = random_clip(rng, t=t, h=48, w=64)
    labels = masks.copy()
    labels[:, 30:44, 40:60] = 2
    return frames, labels


def test_trace_equals_the_segmenter_and_a_loop_over_frame_step(tiny_model):
    cfg, variables = tiny_model
    frames, labels = two_objects(np.random.default_rng(0))
    tr = research.trace(cfg, variables, frames, labels[0])
    _, probs = Segmenter(cfg, variables, chunk_size=4)(frames, {0: labels[0]})
    np.testing.assert_allclose(tr.probs, probs, atol=2e-5)

    model = AGame(cfg)
    feats = jax.tree_util.tree_map(lambda x: x[0], model.apply(variables, frames[None],
                                                                method=AGame.encode))
    masks = np.stack([labels[0] == i for i in (1, 2)]).astype(np.float32)
    states = recurrent.init_states(model, variables, recurrent.frame_at(feats, 0),
                                   pool_labels(masks))
    step = jax.jit(lambda s, f, t: recurrent.frame_step(model, variables, s, f, t,
                                                        keep=recurrent.OUTPUT_KEYS))
    var_offset = np.log1p(np.exp(np.asarray(variables["params"]["appearance"]["cov_reg"])))
    for t in range(1, len(frames)):
        feats_t = recurrent.frame_at(feats, t)
        before = states
        states, out = step(states, feats_t, t)
        for key, got in (("probs", tr.probs), ("fine_logits", tr.fine_logits),
                         ("app_scores", tr.scores), ("feedback", tr.feedback)):
            assert isinstance(got, np.ndarray), key
            np.testing.assert_allclose(got[t], out[key], rtol=1e-5, atol=1e-5)
        for got, logits in ((tr.coarse_probs, out["coarse_logits"]),
                            (tr.fine_probs, out["fine_logits"])):
            np.testing.assert_allclose(got[t], jax.nn.softmax(logits)[..., 1], atol=1e-5)
        np.testing.assert_allclose(tr.states.appearance.mean[t], states.appearance.mean,
                                   rtol=1e-5, atol=1e-6)
        # Fig. 3's posteriors and the residual weights, from the state before the update.
        app = np.asarray(feats_t.app).reshape(-1, cfg.appearance_dim)
        for o in range(2):
            g = jax.tree_util.tree_map(lambda x: x[o], before.appearance)
            post = gmm.posteriors(g, app)
            np.testing.assert_allclose(tr.posteriors[t, o].reshape(-1, 4), post,
                                       rtol=1e-4, atol=1e-6)
            y = np.asarray(out["feedback"][o]).reshape(-1, 2)
            base = gmm.fit(app, y, var_offset[:2], cfg.prior_count)
            np.testing.assert_allclose(tr.inspect["residual_weights"][t, o].reshape(-1, 2),
                                       residual_weights(base, app, y), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tr.posteriors[1:].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(tr.fine_probs[0], masks)                   # the given frame


def test_trace_records_what_is_asked_and_softmaxes_scores_without_inspect():
    """``record`` keeps only the names given (the rest is ``None``); a model without its
    own ``inspect`` (the prototype model) gets the softmax over its score channels as
    posteriors."""
    from agame_jax import init_variables
    from conftest import tiny_config
    cfg = tiny_config(appearance="prototype")
    variables = init_variables(cfg, jax.random.key(1))
    frames, labels = two_objects(np.random.default_rng(3), t=3)
    tr = research.trace(cfg, variables, frames, labels[0], record=("scores", "posteriors"))
    assert tr.probs is None and tr.states is None and tr.inspect == {}
    assert tr.scores.shape == (3, 2, 3, 4, 2) and isinstance(tr.posteriors, np.ndarray)
    np.testing.assert_allclose(tr.posteriors[1:], jax.nn.softmax(tr.scores[1:]), atol=1e-6)
    np.testing.assert_array_equal(tr.posteriors[0], 0.0)
    with pytest.raises(ValueError, match="cannot record \\['residual_weights'\\]"):
        research.trace(cfg, variables, frames, labels[0], record=("residual_weights",))
    with pytest.raises(TypeError, match="sequence of names"):
        research.trace(cfg, variables, frames, labels[0], record="scores")


def test_trace_feeds_back_what_it_is_asked_to(tiny_model):
    cfg, variables = tiny_model
    frames, labels = two_objects(np.random.default_rng(1), t=3)
    oracle = research.trace(cfg, variables, frames, labels[0], feedback="oracle",
                            oracle_labels=labels)
    want = pool_labels(np.stack([labels == i for i in (1, 2)], 1).astype(np.float32))
    np.testing.assert_allclose(oracle.feedback, want, atol=1e-6)
    coarse = research.trace(cfg, variables, frames, labels[0], feedback="coarse")
    np.testing.assert_allclose(coarse.feedback[1:], jax.nn.softmax(coarse.coarse_logits[1:]),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(oracle.states.appearance.mean[-1], coarse.states.appearance.mean[-1])
    with pytest.raises(ValueError, match="needs oracle_labels"):
        research.trace(cfg, variables, frames, labels[0], feedback="oracle")
    with pytest.raises(ValueError, match="not a multiple of 16"):
        research.trace(cfg, variables, frames[:, :40], labels[0, :40])


def test_gradient_paths_add_up_and_separate_the_fit(tiny_model):
    cfg, variables = tiny_model
    frames, masks = random_clip(np.random.default_rng(2), t=3, h=32, w=32, batch=1)
    model = AGame(cfg)

    # Only the two modules the assertions read are differentiated: a backward pass
    # through the backbone would triple the compile time and add nothing here.
    studied = {k: variables["params"][k] for k in ("appearance", "mask_prop")}

    def loss(studied):           # coarse logits only: the upsampler is not compiled
        v = {"params": {**variables["params"], **studied},
             "batch_stats": variables["batch_stats"]}
        out, _ = recurrent.forward_clips(model, v, frames, masks[:, :1], keep=("coarse_logits",))
        return jnp.mean(jax.nn.log_softmax(out["coarse_logits"])[..., 1])
    paths = research.gradient_paths(loss, studied)
    leaves = lambda name: jax.tree_util.tree_leaves(paths[name])
    for total, *parts in zip(*(leaves(k) for k in ("total", "via_state", "via_features",
                                                   "elsewhere"))):
        np.testing.assert_allclose(sum(parts), total, rtol=1e-4,
                                   atol=1e-5 * float(jnp.abs(total).max()) + 1e-9)
    # The variance offsets act only through the fitted mixture, and mask propagation
    # never reaches the features the appearance model scores.
    offsets = {k: paths[k]["appearance"]["cov_reg"] for k in paths}
    scale = float(jnp.abs(offsets["total"]).max())
    assert scale > 0
    np.testing.assert_allclose(offsets["via_state"], offsets["total"], atol=1e-4 * scale)
    np.testing.assert_allclose(offsets["elsewhere"], 0.0, atol=1e-12)
    mask_prop = lambda k: jax.tree_util.tree_leaves(paths[k]["mask_prop"])
    for part, total in zip(mask_prop("via_features"), mask_prop("total")):
        assert float(jnp.abs(part).max()) <= 1e-4 * float(jnp.abs(total).max())
    # The projection is trained through both.
    proj = lambda k: paths[k]["appearance"]["conv_in"]["kernel"]
    assert min(float(jnp.abs(proj(k)).max()) for k in ("via_features", "via_state")) > 0
