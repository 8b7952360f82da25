"""One optimisation step of A-GAME on a batch of clips, data-parallel over devices.

Only the trainable subtree (layer4 and the heads, ``split_params``) is differentiated and
held by the optimiser; the frozen backbone travels unchanged. The batch is sharded over a
1-D device mesh (axis ``"data"``); everything else is replicated. With one device this is
the plain single-device step.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from agame_jax.api import merge_params, split_params
from agame_jax.config import ModelConfig
from agame_jax.losses import clip_loss
from agame_jax.model.agame import AGame


# The training step on a CPU: XLA:CPU's Eigen convolutions run its convolutions (their
# gradients above all) faster than its YNNPACK ones; YNNPACK keeps the matrix products
# and reductions (docs/performance.md). Inference shows no such difference.
_CPU_TRAIN_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                      "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


@functools.cache
def cpu_train_compiler_options() -> dict[str, str]:
    """XLA options for the training step on a CPU: ``_CPU_TRAIN_OPTIONS`` where this
    jaxlib knows them (they are experimental), else none."""
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_TRAIN_OPTIONS).lower(
            np.float32(0)).compile()
    except Exception:                   # an XLA without the option rejects it by name
        return {}
    return dict(_CPU_TRAIN_OPTIONS)


@flax.struct.dataclass
class TrainState:
    """``step`` int32 scalar; ``trainable``/``frozen`` params; ``batch_stats``; ``opt_state``;
    ``skipped`` int32: steps whose loss or gradients were not finite, so that their update
    was not applied; ``first_skipped`` int32: the first such step (0: none)."""

    step: jax.Array
    trainable: dict
    frozen: dict
    batch_stats: dict
    opt_state: optax.OptState
    skipped: jax.Array = flax.struct.field(default_factory=lambda: jax.numpy.zeros((), "int32"))
    first_skipped: jax.Array = flax.struct.field(
        default_factory=lambda: jax.numpy.zeros((), "int32"))

    @property
    def variables(self) -> dict:
        return {"params": merge_params(self.trainable, self.frozen),
                "batch_stats": self.batch_stats}


def create_train_state(variables: dict, model_config, optimizer: optax.GradientTransformation
                       ) -> TrainState:
    """A ``TrainState`` at step 0 from model ``variables``.

    The state holds copies: the train step donates its input state, and must not delete
    the caller's arrays.
    """
    variables = jax.tree_util.tree_map(lambda x: jax.numpy.array(x, copy=True), variables)
    trainable, frozen = split_params(variables["params"], model_config)
    return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), trainable=trainable,
                      frozen=frozen, batch_stats=variables["batch_stats"],
                      opt_state=optimizer.init(trainable))


def make_mesh(devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh over ``devices`` (default: all devices) with axis ``"data"``."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return jax.sharding.Mesh(devices.reshape(-1), ("data",))


def make_train_step(model_config, optimizer: optax.GradientTransformation, mesh=None, *,
                    coarse_weight: float = 1.0, include_first_frame: bool = True,
                    num_objects: int = 1, remat: bool = False):
    """A jitted ``step(state, frames, labels) -> (state, metrics)``.

    ``frames [B, T, H, W, 3]`` uint8 and ``labels [B, T, H, W]`` (objects
    1..``num_objects``, 0 background, 255 ignored; the authors' recipe is one object) are
    split over the mesh's ``"data"`` axis (B divisible by its size). The input state is
    donated. ``dtype="auto"`` is resolved for the mesh's devices. ``metrics``: ``loss``,
    ``loss_fine``, ``loss_coarse``, ``grad_norm`` (replicated scalars). A step whose loss
    or gradient norm is not finite changes nothing but ``step`` and the state's
    ``skipped``/``first_skipped`` counters.
    """
    mesh = make_mesh() if mesh is None else mesh
    cfg = ModelConfig.from_any(model_config).resolved(mesh.devices.flat[0].platform)
    model = AGame(cfg)
    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))

    def step(state: TrainState, frames, labels):
        def loss_fn(trainable):
            v = {"params": merge_params(trainable, state.frozen),
                 "batch_stats": state.batch_stats}
            losses, new_stats = clip_loss(model, v, frames, labels, train=True,
                                          coarse_weight=coarse_weight,
                                          include_first_frame=include_first_frame,
                                          num_objects=num_objects, remat=remat)
            return losses["loss"], (losses, new_stats)

        (_, (losses, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        grad_norm = optax.tree.norm(grads)
        # A step with a non-finite loss or gradient leaves weights, statistics and the
        # optimiser as they were (the host decides whether to stop or go on): NaN never
        # reaches the weights, so no checkpoint can hold it.
        finite = jax.numpy.isfinite(losses["loss"]) & jax.numpy.isfinite(grad_norm)
        keep = lambda new, old: jax.tree_util.tree_map(
            lambda n, o: jax.numpy.where(finite, n, o), new, old)
        step_now = state.step + 1
        new_state = state.replace(
            step=step_now,
            trainable=keep(optax.apply_updates(state.trainable, updates), state.trainable),
            batch_stats=keep(new_stats, state.batch_stats),
            opt_state=keep(opt_state, state.opt_state),
            skipped=state.skipped + (~finite).astype(jax.numpy.int32),
            first_skipped=jax.numpy.where((state.first_skipped == 0) & ~finite, step_now,
                                          state.first_skipped))
        return new_state, {**losses, "grad_norm": grad_norm}

    platform = mesh.devices.flat[0].platform
    return jax.jit(step, in_shardings=(replicated, batch, batch),
                   out_shardings=(replicated, replicated), donate_argnums=(0,),
                   compiler_options=cpu_train_compiler_options() if platform == "cpu" else None)


def shard_batch(mesh, *arrays):
    """Place host arrays on the mesh, split along their first axis."""
    sharding = NamedSharding(mesh, P("data"))
    return tuple(jax.device_put(a, sharding) for a in arrays)


def replicate(mesh, tree):
    """Place a pytree on every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


__all__ = ["TrainState", "create_train_state", "make_mesh", "make_train_step", "shard_batch",
           "replicate"]
