"""Optimiser (torch Adam with coupled L2, per-epoch decay) and the data-parallel train step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax.data.synthetic import make_video
from conftest import random_clip
from agame_jax.train.optim import adam_coupled_l2, learning_rate_schedule
from agame_jax.train.step import (create_train_state, make_mesh, make_train_step, replicate,
                                  shard_batch)


def torch_adam_reference(p, grads, lrs, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam(weight_decay=wd) written out, one step per gradient."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_optimizer_is_torch_adam_with_coupled_l2_and_epoch_decay():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(5,))
    grads = [rng.normal(size=(5,)) for _ in range(5)]
    schedule = learning_rate_schedule(1e-2, 0.5, steps_per_epoch=2)
    assert [float(schedule(s)) for s in range(5)] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3])
    opt = adam_coupled_l2(schedule, weight_decay=0.1)
    params = jnp.asarray(p0)
    state = opt.init(params)
    for g in grads:
        updates, state = opt.update(jnp.asarray(g), state, params)
        params = params + updates
    expected = torch_adam_reference(p0, grads, [float(schedule(s)) for s in range(5)], 0.1)
    np.testing.assert_allclose(params, expected, rtol=1e-5)


def _batch(n=4, t=3, size=48):
    videos = [make_video(np.random.default_rng(i), num_frames=t, height=size, width=size)
              for i in range(n)]
    frames = np.stack([v.frames for v in videos])
    labels = np.stack([(v.labels == 1).astype(np.uint8) for v in videos])
    return frames, labels


def _run(cfg, variables, mesh, steps, frames, labels):
    opt = adam_coupled_l2(1e-3, 1e-5)
    state = replicate(mesh, create_train_state(variables, cfg, opt))
    step = make_train_step(cfg, opt, mesh)
    f, l = shard_batch(mesh, frames, labels)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, f, l)
        losses.append(float(metrics["loss"]))
    return state, losses


def test_train_step_learns_and_sharding_matches_one_device(tiny_model):
    cfg, variables = tiny_model
    frames, labels = _batch()
    assert len(jax.devices()) >= 4, "conftest asks for 4 fake CPU devices"
    one, losses_one = _run(cfg, variables, make_mesh(jax.devices()[:1]), 6, frames, labels)
    assert losses_one[-1] < losses_one[0]                  # fits a fixed batch
    assert int(one.step) == 6
    four, losses_four = _run(cfg, variables, make_mesh(jax.devices()[:4]), 6, frames, labels)
    np.testing.assert_allclose(losses_four, losses_one, rtol=1e-4)
    # Adam divides each gradient by its own running magnitude, so a parameter whose
    # gradient is near zero moves by up to the learning rate (1e-3) a step on rounding
    # differences alone (the four devices sum the batch in another order): the absolute
    # tolerance is a tenth of one step.
    for a, b in zip(jax.tree_util.tree_leaves(four.trainable),
                    jax.tree_util.tree_leaves(one.trainable)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    # The frozen part is carried unchanged; layer4's running statistics moved.
    np.testing.assert_array_equal(
        np.asarray(one.frozen["backbone"]["conv1"]["kernel"]),
        np.asarray(variables["params"]["backbone"]["conv1"]["kernel"]))
    assert not np.allclose(one.batch_stats["backbone"]["layer4_0"]["bn1"]["var"],
                           variables["batch_stats"]["backbone"]["layer4_0"]["bn1"]["var"])


def test_remat_switch_reaches_the_scan(tiny_model):
    """``remat=True`` wraps the per-frame step in jax.checkpoint (a ``remat`` primitive in
    the traced program), ``False`` does not. That rematerialisation leaves values and
    gradients unchanged is JAX's contract; tracing is enough to check the wiring."""
    import jax.numpy as jnp
    from agame_jax.api import merge_params, split_params
    from agame_jax.losses import clip_loss
    from agame_jax.model.agame import AGame
    cfg, variables = tiny_model
    frames, labels = random_clip(np.random.default_rng(3), t=3, h=32, w=32, batch=1)
    trainable, frozen = split_params(variables["params"], cfg)

    def loss(trainable, remat):
        v = {"params": merge_params(trainable, frozen), "batch_stats": variables["batch_stats"]}
        return clip_loss(AGame(cfg), v, jnp.asarray(frames), jnp.asarray(labels),
                         remat=remat)[0]["loss"]

    assert "remat" in str(jax.make_jaxpr(jax.grad(lambda p: loss(p, True)))(trainable))
    assert "remat" not in str(jax.make_jaxpr(jax.grad(lambda p: loss(p, False)))(trainable))


def test_cpu_step_compiles_convolutions_outside_ynnpack_with_the_same_result(tiny_model,
                                                                              monkeypatch):
    """On a CPU the step is compiled with ``cpu_train_compiler_options`` (convolutions on
    XLA's Eigen kernels, not YNNPACK's): the option reaches the compiled program, and the
    step's loss, gradient norm and new weights equal those of the step compiled
    without it."""
    import agame_jax.train.step as step_module
    if not step_module.cpu_train_compiler_options():
        pytest.skip("this jaxlib has no xla_cpu_experimental_ynn_fusion_type option")
    cfg, variables = tiny_model
    frames, labels = _batch(n=2, t=3, size=32)
    mesh = make_mesh(jax.devices()[:1])
    opt = adam_coupled_l2(1e-3, 1e-5)

    def one_step():
        step = make_train_step(cfg, opt, mesh)
        state = replicate(mesh, create_train_state(variables, cfg, opt))
        f, l = shard_batch(mesh, frames, labels)
        compiled = step.lower(state, f, l).compile()        # compiled once, run as is
        state, metrics = compiled(state, f, l)
        return compiled.as_text(), state, metrics

    def ynn_convolutions(hlo):     # YNNPACK fusions whose computation holds a convolution
        called = {line.split("calls=%")[1].split(",")[0] for line in hlo.splitlines()
                  if "ynn_fusion" in line and "calls=%" in line}
        bodies = hlo.split("\n\n")
        return sum(1 for body in bodies for name in called
                   if body.lstrip().startswith(("%" + name + " ", name + " "))
                   and "convolution(" in body)

    hlo, state, metrics = one_step()
    monkeypatch.setattr(step_module, "cpu_train_compiler_options", lambda: {})
    plain_hlo, plain_state, plain_metrics = one_step()
    assert ynn_convolutions(plain_hlo) > 0 and ynn_convolutions(hlo) == 0
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose(float(metrics[key]), float(plain_metrics[key]), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(state.trainable),
                    jax.tree_util.tree_leaves(plain_state.trainable)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
