"""The dilated-convolution formulations against a numpy loop, and inside the model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import ModelConfig, init_variables
from agame_jax.api import variable_shapes
from agame_jax.model import dilated
from agame_jax.model.agame import AGame


def _reference(x, kernel, d):
    """"Same" dilated convolution, stride 1, zero padding, as an explicit loop (float64)."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    r = k // 2
    xp = np.pad(x, ((0, 0), (d * r, d * r), (d * r, d * r), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for a in range(k):
        for b in range(k):
            out += xp[:, d * a: d * a + h, d * b: d * b + w] @ kernel[a, b]
    return out


@pytest.mark.parametrize("method", dilated.METHODS)
@pytest.mark.parametrize("shape,d", [((2, 12, 18, 3), 3), ((1, 13, 10, 4), 2),
                                     ((1, 7, 11, 2), 6), ((3, 5, 4, 2), 1)])
def test_values_match_a_loop(method, shape, d):
    rng = np.random.default_rng(d)
    x = rng.normal(size=shape)
    kernel = rng.normal(size=(3, 3, shape[-1], 5))
    got = dilated.dilated_conv(jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32),
                               d, method, precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(np.asarray(got), _reference(x, kernel, d), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("method", ["space_to_batch", "im2col"])
def test_gradients_match_native(method):
    from conftest import assert_same_gradients
    conv = lambda x, kernel, m: dilated.dilated_conv(x, kernel, 3, m,
                                                     precision=jax.lax.Precision.HIGHEST)
    # Two leading axes.
    assert_same_gradients(conv, "native", method, (2, 4, 10, 14, 3), (3, 3, 3, 4))


def test_bad_method_is_refused():
    with pytest.raises(ValueError, match="dilated_conv"):
        ModelConfig(dilated_conv="winograd")
    with pytest.raises(ValueError, match="method"):
        dilated.dilated_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), 2, "fft")


def test_model_outputs_do_not_depend_on_the_method():
    """Same parameters, same outputs: the choice only changes how layer4's and the
    pyramid's dilated kernels are computed (and the parameter tree is the same)."""
    from conftest import tiny_config
    rng = np.random.default_rng(1)
    frames = jnp.asarray(rng.integers(0, 256, (1, 2, 64, 96, 3)), jnp.uint8)
    outs, variables = {}, None
    for method in dilated.METHODS:
        # Two layer4 blocks: the second one is dilated.
        cfg = tiny_config(backbone_blocks=(1, 1, 1, 2), dilated_conv=method)
        variables = variables or init_variables(cfg, jax.random.key(0))
        assert (jax.tree_util.tree_structure(variable_shapes(cfg))
                == jax.tree_util.tree_structure(variables))
        model = AGame(cfg)

        @jax.jit
        def run(variables, frames):
            feats = model.apply(variables, frames, method=AGame.encode)
            at = lambda t: jax.tree_util.tree_map(lambda v: v[0, t], feats)
            h, w = feats.s16.shape[2:4]
            seg = jnp.zeros((h, w, 2)).at[..., 0].set(1.0).at[1:3, 2:4].set(
                jnp.asarray([0.0, 1.0]))
            state = model.apply(variables, at(0), seg, method=AGame.init_object)
            return feats.s16, model.apply(variables, state, at(1), method=AGame.predict_object)
        outs[method] = run(variables, frames)
    for method in ("space_to_batch", "im2col"):
        for a, b in zip(jax.tree_util.tree_leaves(outs[method]),
                        jax.tree_util.tree_leaves(outs["native"])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-4)
