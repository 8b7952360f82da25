"""Table 1 ablation switches and the mixed-precision setting."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import Segmenter, init_variables
from agame_jax.model import recurrent
from agame_jax.model.agame import AGame, pool_labels

from conftest import random_clip, tiny_config

SWITCHES = ["no_appearance", "no_mask_propagation", "unimodal_appearance",
            "no_appearance_update", "appearance_softmax", "no_fit_gradient"]


def _run(cfg, variables, frames, mask, keep=("probs", "app_scores")):
    model = AGame(cfg)
    feats = model.apply(variables, jnp.asarray(frames)[None], method=AGame.encode)
    feats = jax.tree_util.tree_map(lambda x: x[0], feats)
    init_seg = pool_labels(jnp.asarray(mask, jnp.float32)[None])
    states = recurrent.init_states(model, variables, recurrent.frame_at(feats, 0), init_seg)
    later = jax.tree_util.tree_map(lambda x: x[1:], feats)            # frames 1, 2, …
    final, out = jax.jit(lambda v, s, f: recurrent.scan_frames(
        model, v, s, f, jnp.arange(1, len(frames)), keep=keep))(variables, states, later)
    return states, final, out


@pytest.mark.parametrize("switch", SWITCHES)
def test_ablation_switch(switch):
    cfg = tiny_config(**{switch: True})
    variables = init_variables(cfg, jax.random.key(0))
    params = variables["params"]
    fusion_in = params["fusion"]["layer00"]["kernel"].shape[2]
    frames, masks = random_clip(np.random.default_rng(0), t=3, h=48, w=48)
    keep = ("probs",) if switch == "no_appearance" else ("probs", "app_scores")
    init, final, out = _run(cfg, variables, frames, masks[0], keep)
    assert np.all(np.isfinite(np.asarray(out["probs"])))
    if switch == "no_appearance":
        assert "appearance" not in params and fusion_in == cfg.mask_prop_channels
        return
    scores = np.asarray(out["app_scores"])
    if switch == "no_mask_propagation":
        assert "mask_prop" not in params and fusion_in == 4
    elif switch == "unimodal_appearance":
        assert params["appearance"]["cov_reg"].shape == (2, cfg.appearance_dim)
        assert fusion_in == 2 + cfg.mask_prop_channels and scores.shape[-1] == 2
    elif switch == "no_appearance_update":
        np.testing.assert_array_equal(final.appearance.mean, init.appearance.mean)
        np.testing.assert_array_equal(final.appearance.var, init.appearance.var)
    elif switch == "appearance_softmax":
        np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    if switch != "no_appearance_update":
        assert not np.allclose(final.appearance.mean, init.appearance.mean)


@pytest.mark.parametrize("stop", [False, True])
def test_no_fit_gradient_cuts_the_gradient_through_the_fit(stop):
    cfg = tiny_config(no_fit_gradient=stop)
    model = AGame(cfg)
    variables = init_variables(cfg, jax.random.key(0))
    frames, masks = random_clip(np.random.default_rng(1), t=2, h=48, w=48)
    feats = model.apply(variables, jnp.asarray(frames)[None], method=AGame.encode)
    f = jax.tree_util.tree_map(lambda x: x[0], feats)
    seg = pool_labels(jnp.asarray(masks[0], jnp.float32))

    def loss(params):
        v = {**variables, "params": params}
        at = lambda t: jax.tree_util.tree_map(lambda x: x[t], f)
        state = model.apply(v, at(0), seg, method=AGame.init_object)
        _, _, scores = model.apply(v, state, at(1), method=AGame.predict_object)
        return jnp.sum(jax.nn.log_softmax(scores, -1)[..., 1])

    g = jax.grad(loss)(variables["params"])["appearance"]["cov_reg"]
    # cov_reg enters the scores only through the fitted variances.
    assert (np.abs(np.asarray(g)).max() == 0.0) == stop


def test_bfloat16_convolutions_keep_mixture_in_float32(tiny_model):
    cfg32, variables = tiny_model
    cfg16 = tiny_config(dtype="bfloat16")
    frames, masks = random_clip(np.random.default_rng(2), t=3, h=48, w=64)
    feats = AGame(cfg16).apply(variables, jnp.asarray(frames)[None], method=AGame.encode)
    assert feats.s16.dtype == jnp.bfloat16 and feats.app.dtype == jnp.float32
    init, _, out = _run(cfg16, variables, frames, masks[0])
    assert init.appearance.mean.dtype == jnp.float32 and out["app_scores"].dtype == jnp.float32
    labels16, _ = Segmenter(cfg16, variables)(frames, {0: masks[0]})
    labels32, _ = Segmenter(cfg32, variables)(frames, {0: masks[0]})
    assert (labels16 == labels32).mean() > 0.9


def test_sliced_conv_parts_sum_to_the_concatenated_conv():
    """``SlicedConv``'s parts (a 4-channel one elementwise in float32, a 6-channel one a
    bfloat16 convolution) plus the bias equal the convolution of the concatenation
    (float64 loop), the few-channel part to float32 accuracy and without a convolution
    in its program (on GPUs: no float32 library call, no layout transposes)."""
    from agame_jax.model.heads import SlicedConv
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((2, 7, 9, 4)) * 300            # log-likelihood-sized
    feats = rng.standard_normal((2, 7, 9, 6))
    conv = SlicedConv(10, 5, 3, dtype=jnp.bfloat16)
    params = conv.init(jax.random.key(0), jnp.zeros((1, 7, 9, 4)), 0,
                       method=SlicedConv.part)
    params = jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), params)
    kernel, bias = (np.asarray(params["params"][n], np.float64) for n in ("kernel", "bias"))
    part = lambda x, start: conv.apply(params, jnp.asarray(x, jnp.float32), start,
                                       method=SlicedConv.part)
    x = np.concatenate([scores, feats], axis=-1)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    terms = [sum(xp[:, a:a + 7, b:b + 9, sl] @ kernel[a, b, sl] for a in range(3)
                 for b in range(3)) for sl in (slice(0, 4), slice(4, 10))]
    got_scores = np.asarray(part(scores, 0), np.float64)
    np.testing.assert_allclose(got_scores, terms[0], rtol=1e-5,
                               atol=1e-6 * np.abs(terms[0]).max())
    total = got_scores + np.asarray(part(feats, 4)) + bias
    np.testing.assert_allclose(total, terms[0] + terms[1] + bias, rtol=0.05,
                               atol=0.05 * np.abs(terms[1]).max())   # bfloat16 inputs
    prims = {e.primitive.name for e in jax.make_jaxpr(lambda x: part(x, 0))(scores).eqns}
    assert "conv_general_dilated" not in prims and "dot_general" not in prims


def test_bf16_input_projection_matches_float64_values_and_gradients():
    from agame_jax.model.appearance import bf16_input_matmul
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 40, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((64, 24)) / 8, jnp.float32)
    g = rng.standard_normal((3, 40, 24))
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    y = bf16_input_matmul(x, w)
    ref = x64 @ w64
    assert y.dtype == jnp.float32
    # float32 accuracy (a plain bfloat16 product would be off by ~1e-2 relative).
    assert np.abs(np.asarray(y) - ref).max() <= 1e-4 * np.abs(ref).max()
    dx, dw = jax.grad(lambda x, w: jnp.sum(bf16_input_matmul(x, w) * g), argnums=(0, 1))(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    ref_dw = np.einsum("bnc,bnd->cd", x64, g)
    assert np.abs(np.asarray(dw) - ref_dw).max() <= 1e-4 * np.abs(ref_dw).max()
    ref_dx = g @ w64.T
    assert np.abs(np.asarray(dx, np.float64) - ref_dx).max() <= 1e-2 * np.abs(ref_dx).max()
