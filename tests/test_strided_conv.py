"""The strided-convolution formulations (the stem's) against a numpy loop, and in the model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import ModelConfig, init_variables
from agame_jax.model import strided
from agame_jax.model.agame import AGame


def _reference(x, kernel, s):
    """k×k convolution at stride s, zero padding k // 2, as an explicit loop (float64)."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out_h, out_w = (h - 1) // s + 1, (w - 1) // s + 1
    out = np.zeros((n, out_h, out_w, kernel.shape[-1]))
    for a in range(k):
        for b in range(k):
            out += xp[:, a: a + s * out_h: s, b: b + s * out_w: s] @ kernel[a, b]
    return out


@pytest.mark.parametrize("method", strided.METHODS)
@pytest.mark.parametrize("shape,k,s", [((2, 16, 24, 3), 7, 2),    # the stem, even sizes
                                       ((1, 13, 10, 3), 7, 2),    # odd sizes
                                       ((1, 11, 9, 5), 3, 3),     # 45 → 48 channels
                                       ((1, 8, 6, 4), 1, 2),      # 1×1: block taps only
                                       ((1, 9, 7, 2), 5, 1)])     # stride 1
def test_values_match_a_loop(method, shape, k, s):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.normal(size=shape)
    kernel = rng.normal(size=(k, k, shape[-1], 6))
    got = strided.strided_conv(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32),
                               s, method, precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(np.asarray(got), _reference(x, kernel, s), rtol=1e-4,
                               atol=1e-4)


def test_space_to_depth_runs_on_aligned_channels():
    """The stem's conv becomes a 4×4 conv on 16 channels (12 + 4 zero) at stride 1."""
    x = jnp.zeros((1, 32, 48, 3))
    jaxpr = jax.make_jaxpr(lambda x, k: strided.strided_conv(x, k, 2, "space_to_depth"))(
        x, jnp.zeros((7, 7, 3, 8)))
    convs = [e for e in jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert len(convs) == 1
    assert convs[0].invars[1].aval.shape == (4, 4, 16, 8)
    assert convs[0].params["window_strides"] == (1, 1)
    assert convs[0].outvars[0].aval.shape == (1, 16, 24, 8)


def test_gradients_match_native():
    from conftest import assert_same_gradients
    conv = lambda x, kernel, m: strided.strided_conv(x, kernel, 2, m,
                                                     precision=jax.lax.Precision.HIGHEST)
    assert_same_gradients(conv, "native", "space_to_depth", (2, 15, 18, 3), (7, 7, 3, 4))


def test_bad_method_or_kernel_is_refused():
    with pytest.raises(ValueError, match="stem_conv"):
        ModelConfig(stem_conv="im2col")
    with pytest.raises(ValueError, match="method"):
        strided.strided_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), 2, "fft")
    with pytest.raises(ValueError, match="odd square"):
        strided.strided_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((2, 2, 1, 1)), 2)


def test_backbone_features_do_not_depend_on_the_stem_method():
    """Same parameters (tree and shapes), same features: the choice only changes how the
    stem's convolution is computed."""
    from conftest import tiny_config
    rng = np.random.default_rng(2)
    frames = jnp.asarray(rng.integers(0, 256, (1, 2, 64, 96, 3)), jnp.uint8)
    variables = init_variables(tiny_config(), jax.random.key(0))
    feats = {}
    for method in strided.METHODS:
        model = AGame(tiny_config(stem_conv=method))
        out = jax.jit(lambda v, f: model.apply(v, f, method=AGame.encode))(variables, frames)
        feats[method] = (out.s4, out.s8, out.s16, out.app)
    for a, b in zip(feats["space_to_depth"], feats["native"]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)
