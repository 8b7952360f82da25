"""The model's convolution forms (agame_jax.model.conv) against the plain ones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from agame_jax.model.conv import conv2d, few_channel_conv, matmul_f32_out


def _plain(x, kernel, stride=1, dilation=1):
    """``lax.conv_general_dilated`` over the leading axes, at full precision."""
    pad = dilation * (kernel.shape[0] // 2)
    y = jax.lax.conv_general_dilated(
        x.reshape((-1,) + x.shape[-3:]), kernel, (stride, stride), [(pad, pad), (pad, pad)],
        rhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST)
    return y.reshape(x.shape[:-3] + y.shape[1:])


@pytest.mark.parametrize("k,stride,dilation,out,channels",
                         [(1, 1, 1, 6, 5), (1, 2, 1, 6, 5), (3, 1, 1, 6, 5), (3, 1, 3, 6, 5),
                          (3, 1, 2, 2, 5), (7, 2, 1, 6, 5), (3, 1, 1, 256, 256),
                          (3, 1, 2, 256, 256)])
def test_conv2d_values_and_gradients_match_the_plain_convolution(k, stride, dilation, out,
                                                                 channels):
    """``conv2d`` (on this CPU: 1×1 as a product, k×k with the custom gradients, whose
    weight gradient shifts the input or, with fewer output channels, the cotangent, and
    with 256 channels by Winograd's algorithm) equals ``lax.conv`` in values and
    gradients, also vmapped over objects inside a scan over frames with a kernel shared
    by all (as the heads run in training)."""
    rng = np.random.default_rng(k + 10 * dilation + 100 * stride)
    x = jnp.asarray(rng.standard_normal((3, 2, 9, 11, channels)), jnp.float32)  # [T, O, h, w, C]
    kernel = jnp.asarray(rng.standard_normal((k, k, channels, out)) / (k * channels ** 0.5),
                         jnp.float32)
    probe = jnp.asarray(rng.standard_normal(_plain(x[0], kernel, stride, dilation).shape),
                        jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    ours = lambda x, kernel: conv2d(x, kernel, stride, dilation, precision=hi)
    plain = lambda x, kernel: _plain(x, kernel, stride, dilation)
    np.testing.assert_allclose(np.asarray(ours(x, kernel)), np.asarray(plain(x, kernel)),
                               rtol=1e-5, atol=1e-5)
    if k == 3:                       # the wide ones by Winograd: no convolution left
        winograd = "conv_general_dilated" not in str(jax.make_jaxpr(ours)(x, kernel))
        assert winograd == (channels >= 256 and jax.default_backend() == "cpu")

    def loss(conv):
        def run(x, kernel):
            def frame(carry, x_t):               # objects vmapped, the kernel shared
                y = jax.vmap(lambda xo: conv(xo[None], kernel)[0])(x_t)
                return carry + jnp.sum(jnp.tanh(y) * probe), None
            return jax.lax.scan(frame, 0.0, x)[0]
        return run
    got = jax.grad(loss(ours), argnums=(0, 1))(x, kernel)
    want = jax.grad(loss(plain), argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)


def test_matmul_f32_out_rounds_only_the_cotangent():
    """Forward: the plain bfloat16 product with float32 output. Backward: the cotangent
    rounded to bfloat16, then products with float32 accumulation (float64 reference of
    exactly that), never a float32 x bfloat16 product."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((3, 40, 64)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((64, 24)) / 8, jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal((3, 40, 24)), jnp.float32)
    y = matmul_f32_out(x, w)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), np.asarray(jnp.einsum(
        "...c,cd->...d", x, w, preferred_element_type=jnp.float32)))
    loss = lambda x, w: jnp.sum(matmul_f32_out(x, w) * g)
    dx, dw = jax.grad(loss, argnums=(0, 1))(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
    g64 = np.asarray(g.astype(jnp.bfloat16), np.float64)
    for got, want in ((dx, g64 @ w64.T), (dw, np.einsum("bnc,bnd->cd", x64, g64))):
        # Exact up to the final rounding to bfloat16 (a relative 2^-8).
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2 ** -8,
                                   atol=1e-6 * np.abs(want).max())
    dots = [e for e in jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w).jaxpr.eqns
            if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)



@pytest.mark.parametrize("k", [1, 3])
def test_few_channel_conv_values_and_gradients_match_a_convolution(k):
    """The elementwise few-channel convolution and its backward (for k > 1 a custom
    one, two matrix products over the shifted copies) against ``lax.conv`` at full
    precision, with two leading axes (objects under ``vmap`` in the model)."""
    rng = np.random.default_rng(k)
    x = jnp.asarray(rng.standard_normal((2, 3, 6, 8, 4)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, 4, 5)), jnp.float32)
    probe = jnp.asarray(rng.standard_normal((2, 3, 6, 8, 5)), jnp.float32)

    def conv(x, kernel):
        y = jax.lax.conv_general_dilated(
            x.reshape(6, 6, 8, 4), kernel, (1, 1), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST)
        return y.reshape(2, 3, 6, 8, 5)
    loss = lambda f: lambda x, kernel: jnp.sum(jnp.tanh(f(x, kernel) / 4) * probe)
    np.testing.assert_allclose(np.asarray(few_channel_conv(x, kernel)),
                               np.asarray(conv(x, kernel)), rtol=1e-5, atol=1e-5)
    got = jax.grad(loss(few_channel_conv), argnums=(0, 1))(x, kernel)
    want = jax.grad(loss(conv), argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    grad_jaxpr = jax.make_jaxpr(jax.grad(loss(few_channel_conv), argnums=(0, 1)))(x, kernel)
    names = [e.primitive.name for e in grad_jaxpr.eqns]
    assert "conv_general_dilated" not in names
    if k > 1:                       # two products, not a reduction per tap and channel
        assert names.count("reduce_sum") <= 2 and names.count("dot_general") == 2


def test_cpu_and_accelerator_forms_compute_the_same(tiny_model, monkeypatch):
    """The model chooses some computations by backend (1×1 convolutions as products, the
    convolutions' gradients, per-frame encoding, conditionals over unpredicted frames,
    lanes one after another on a CPU). Traced as for an accelerator (``default_backend``
    reporting a GPU, run on this CPU), a video's probabilities and a training step's
    loss and gradients equal the CPU forms'."""
    from agame_jax import Segmenter, merge_params, split_params
    from agame_jax.losses import clip_loss
    from agame_jax.model.agame import AGame
    from conftest import random_clip
    cfg, variables = tiny_model
    frames, masks = random_clip(np.random.default_rng(0), t=5, h=40, w=56)
    later = np.zeros_like(masks[0])
    later[4:20, 30:50] = 2
    given = {0: masks[0], 2: later}
    clips, labels = random_clip(np.random.default_rng(1), t=3, h=32, w=48, batch=2)
    trainable, frozen = split_params(variables["params"], cfg)

    def run():
        seg = Segmenter(cfg, variables, chunk_size=4, lanes=2)
        probs = seg.stream_many([(0, frames, given), (1, frames[:3], {0: masks[0]})],
                                with_probs=True)
        out = {(key, t): p for key, t, _, p in probs}
        conditionals = ["conditional" in p.as_text() for p in seg._programs.values()]

        def loss(trainable):
            v = {"params": merge_params(trainable, frozen), "batch_stats": variables["batch_stats"]}
            losses, stats = clip_loss(AGame(cfg), v, jnp.asarray(clips), jnp.asarray(labels),
                                      train=True)
            return losses["loss"], stats
        (value, stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(trainable)
        return out, conditionals, (value, (grads, stats))

    primitives = lambda: {e.primitive.name for e in jax.make_jaxpr(lambda x, k: conv2d(x, k))(
        jnp.ones((1, 4, 4, 3)), jnp.ones((1, 1, 3, 2))).eqns}
    cpu_probs, cpu_conditionals, (cpu_loss, cpu_grads) = run()
    assert "conv_general_dilated" not in primitives() and all(cpu_conditionals)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    gpu_probs, gpu_conditionals, (gpu_loss, gpu_grads) = run()
    # The accelerator forms were traced: library convolutions, no conditionals.
    assert "conv_general_dilated" in primitives() and not any(gpu_conditionals)
    assert sorted(cpu_probs) == sorted(gpu_probs) and len(cpu_probs) == 8
    for key, p in cpu_probs.items():
        np.testing.assert_allclose(gpu_probs[key], p, atol=1e-5, err_msg=str(key))
    np.testing.assert_allclose(float(gpu_loss), float(cpu_loss), rtol=1e-5)
    # Gradients, and layer4's running statistics (updated frame by frame on both).
    for g, c in zip(jax.tree_util.tree_leaves(gpu_grads), jax.tree_util.tree_leaves(cpu_grads)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(c), rtol=1e-3,
                                   atol=1e-5 * (np.abs(np.asarray(c)).max() + 1e-12))


def test_folded_batchnorm_gives_the_same_backbone():
    """``fold_backbone_batchnorm`` once, then ``folded=True``: the same maps as the
    backbone folding its (non-trivial) inference statistics itself, below layer4 and
    through ``encode``. With three blocks in layer3, the last two run as one loop over
    their stacked weights on the CPU (``ResNetOS16._identical_blocks``); split after
    layer3's first block (``layer3_rest`` finishing it) they are the same again."""
    from agame_jax import init_variables
    from agame_jax.model.agame import AGame, fold_backbone_batchnorm
    cfg = tiny_config(backbone_blocks=(1, 1, 3, 1))
    variables = init_variables(cfg, jax.random.key(0))
    rng = np.random.default_rng(3)
    # Means small enough that deep maps stay non-zero after their ReLUs.
    stats = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape) if path[-1].key == "var"
                                    else rng.uniform(-0.2, 0.2, a.shape), a.dtype),
        variables["batch_stats"])
    variables = {**variables, "batch_stats": stats}
    frames = jnp.asarray(rng.integers(0, 256, (1, 2, 32, 48, 3)), jnp.uint8)
    model = AGame(cfg)
    folded = fold_backbone_batchnorm(variables, cfg)
    assert folded["params"]["backbone"]["layer3_rest"]["conv2"]["kernel"].shape[0] == 2
    for method in (AGame.below_layer4, AGame.encode):
        want = model.apply(variables, frames, method=method)
        got = model.apply(folded, frames, folded=True, method=method)
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            assert float(jnp.abs(w).max()) > 0
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5,
                                       atol=1e-5 * float(jnp.abs(w).max()))
    # Split after layer3's first block, one frame at a time, and finished on both frames
    # at once (as the CPU training step runs it): the same maps.
    want = model.apply(variables, frames, method=AGame.below_layer4)
    for v, fold in ((variables, False), (folded, True)):
        part = jax.lax.map(lambda f: model.apply(v, f, fold, True, method=AGame.below_layer4),
                           frames[0])
        assert not np.allclose(np.asarray(part["layer3"]), np.asarray(want["layer3"][0]),
                               atol=1e-3)
        part["layer3"] = model.apply(v, part["layer3"], fold, method=AGame.layer3_rest)
        for key in want:
            np.testing.assert_allclose(np.asarray(part[key]), np.asarray(want[key][0]),
                                       rtol=1e-5, atol=1e-5 * float(jnp.abs(want[key]).max()))
    with pytest.raises(ValueError, match="cannot be folded"):
        model.apply(folded, frames, train=True, folded=True, method=AGame.encode,
                    mutable=["batch_stats"])
