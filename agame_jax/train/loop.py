"""``train_and_evaluate(config, workdir)``: the whole training run behind ``train.py``.

Start (or resume from ``WORKDIR/checkpoints``), then repeat: next batch from the grain
pipeline → jitted, data-parallel train step → periodic progress line, metrics,
checkpoint and validation (J&F on held-out videos, best model exported to
``WORKDIR/best``, early stopping after ``validation.patience`` validations without
improvement).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from agame_jax import checkpoint, convert, distributed
from agame_jax.api import init_variables, variable_shapes
from agame_jax.config import ModelConfig
from agame_jax.data import pipeline
from agame_jax.data.clips import ClipSpec
from agame_jax.train import optim, validation
from agame_jax.train.logging import MetricLogger, Progress, format_duration
from agame_jax.train.step import create_train_state, make_mesh, make_train_step, replicate
from agame_jax.viz import strip


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Step counts derived from the config."""

    steps_per_epoch: int
    total_steps: int

    @classmethod
    def from_config(cls, train, num_videos: int) -> "Schedule":
        """``num_videos`` is the epoch when ``train.clips_per_epoch`` is 0."""
        if train.batch_size < 1:
            raise ValueError(f"train.batch_size must be positive, got {train.batch_size}")
        clips = train.clips_per_epoch if train.clips_per_epoch > 0 else num_videos
        per_epoch = max(1, clips // train.batch_size)
        total = train.num_steps if train.num_steps > 0 else train.num_epochs * per_epoch
        if total < 1:
            raise ValueError("train.num_steps / train.num_epochs give no steps to run")
        return cls(per_epoch, int(total))


NONFINITE_POLICIES = ("stop", "skip")


def clip_spec(data) -> ClipSpec:
    return ClipSpec(length=data.clip_length, height=data.height, width=data.width,
                    objects_per_clip=data.objects_per_clip,
                    min_object_pixels=data.davis_min_object_pixels,
                    min_start_pixels=data.min_start_pixels, hflip=data.hflip,
                    scale_jitter=data.scale_jitter, colour_jitter=data.colour_jitter)


def _log(*args):
    if jax.process_index() == 0:
        print(*args, flush=True)


def initial_variables(config, model_config: ModelConfig, log=_log) -> dict:
    """Fresh weights, with the backbone from ImageNet weights or a whole earlier run
    (``train.init_checkpoint``) when the config says so."""
    t = config.train
    if t.require_init_checkpoint and not t.init_checkpoint:
        raise ValueError("train.init_checkpoint is empty: this config continues an earlier run "
                         "(stage 2 starts from stage 1); set --config.train.init_checkpoint=DIR")
    if t.init_checkpoint:
        # Stage 2 starts where stage 1 ended (its newest step), as the authors do.
        saved_cfg, variables = checkpoint.load_variables(t.init_checkpoint, prefer="latest")
        _check_same_shapes(saved_cfg, model_config, t.init_checkpoint)
        log(f"init: all weights from {checkpoint.resolve(t.init_checkpoint, 'latest')}")
        return variables
    variables = init_variables(model_config, jax.random.key(config.seed))
    if t.backbone_init:
        variables = load_backbone(t.backbone_init, variables, model_config)
        log(f"init: backbone from {t.backbone_init}, heads random (seed {config.seed})")
    else:
        log("warning: train.backbone_init is empty, so the backbone starts from random "
            "weights; the paper starts from ImageNet (python -m agame_jax.convert resnet101 "
            "resnet101.pth OUT, then --config.train.backbone_init=OUT)")
    return variables


def _check_same_shapes(saved_cfg, model_config, where):
    a, b = variable_shapes(saved_cfg), variable_shapes(model_config)
    shapes = lambda tree: [(jax.tree_util.keystr(k), v.shape)
                           for k, v in jax.tree_util.tree_leaves_with_path(tree)]
    if shapes(a) != shapes(b):
        raise ValueError(f"{where}: its model does not have the shapes of config.model")


def load_backbone(path: str, variables: dict, model_config) -> dict:
    """``variables`` with the backbone from ``path``: a converted checkpoint directory
    (``python -m agame_jax.convert resnet101``) or a torchvision state dict file."""
    p = Path(path).expanduser()
    if p.is_dir():
        _, saved = checkpoint.load_variables(p)
        out = {c: dict(variables[c]) for c in variables}
        for collection in ("params", "batch_stats"):
            src, dst = saved[collection]["backbone"], variables[collection]["backbone"]
            mismatch = [jax.tree_util.keystr(k) for (k, a), (_, b) in zip(
                jax.tree_util.tree_leaves_with_path(src), jax.tree_util.tree_leaves_with_path(dst))
                if np.shape(a) != np.shape(b)]
            if jax.tree_util.tree_structure(src) != jax.tree_util.tree_structure(dst) or mismatch:
                raise ValueError(f"{p}: its backbone does not match config.model "
                                 f"({', '.join(mismatch[:3]) or 'different layers'})")
            out[collection]["backbone"] = src
        return out
    return convert.convert_resnet101(convert.load_state_dict(p), variables)


def record_validation(meta: dict, step: int, jf: float, patience: int) -> tuple[bool, bool]:
    """Add a validation's J&F to the run's ``meta`` (history, best, validations since
    the best); returns ``(improved, stop)``, ``stop`` once ``patience`` validations in a
    row brought no improvement (``patience`` 0: never)."""
    meta["history"].append({"step": step, "JF": jf})
    improved = meta["best_jf"] is None or jf > meta["best_jf"]
    if improved:
        meta.update(best_jf=jf, best_step=step, since_best=0)
    else:
        meta["since_best"] += 1
    return improved, bool(patience) and meta["since_best"] >= patience


def _save_config(config, workdir: Path) -> None:
    if jax.process_index() != 0:
        return
    path = workdir / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    tmp.replace(path)


def _global_batch(mesh, local: dict) -> tuple[jax.Array, jax.Array]:
    """Each process's rows → arrays sharded over the mesh's ``"data"`` axis."""
    sharding = NamedSharding(mesh, P("data"))
    return tuple(jax.make_array_from_process_local_data(sharding, local[k])
                 for k in ("frames", "labels"))


def train_and_evaluate(config, workdir: str | Path) -> dict:
    """Train as ``config`` says, writing everything under ``workdir``; returns the
    last logged metrics (with the final validation's, if any)."""
    workdir = Path(workdir).absolute()
    if config.train.distributed:
        distributed.start(config.train.coordinator_address, config.train.num_processes,
                          config.train.process_id)
    workdir.mkdir(parents=True, exist_ok=True)
    model_config = ModelConfig.from_any(config.model)
    spec = clip_spec(config.data)
    dataset, sampler = pipeline.make_dataset(
        config.data, spec, config.train.batch_size, config.seed,
        process_index=jax.process_index(), process_count=jax.process_count(), log=_log)
    schedule = Schedule.from_config(config.train, sampler.num_videos)
    mesh = make_mesh()
    if config.train.batch_size % mesh.size:
        raise ValueError(f"train.batch_size {config.train.batch_size} is not divisible by the "
                         f"{mesh.size} devices")
    if config.train.nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"train.nonfinite must be one of {NONFINITE_POLICIES}, "
                         f"got {config.train.nonfinite!r}")
    lr = optim.learning_rate_schedule(config.train.learning_rate,
                                      config.train.lr_decay_per_epoch, schedule.steps_per_epoch)
    optimizer = optim.adam_coupled_l2(lr, config.train.weight_decay)
    platform = mesh.devices.flat[0].platform
    _log(f"devices: {mesh.size} x {mesh.devices.flat[0].device_kind} "
         f"({jax.process_count()} process(es)); compute dtype "
         f"{model_config.resolved(platform).dtype}")
    _log(f"data: {', '.join(f'{s.name} ({len(s)} videos)' for s in sampler.sources)}; "
         f"clips of {spec.length} frames at {spec.height}x{spec.width}")
    _log(f"schedule: {schedule.total_steps} steps of {config.train.batch_size} clips "
         f"({schedule.steps_per_epoch} steps per epoch)")

    ckpt = checkpoint.TrainCheckpointer(workdir / "checkpoints", config.train.keep_checkpoints)
    if ckpt.all_steps():
        shapes = variable_shapes(model_config)
        state0 = jax.eval_shape(lambda v: create_train_state(v, model_config, optimizer), shapes)
        try:
            latest, (variables, opt_state, data_state, meta) = ckpt.restore_newest_intact(
                shapes, state0.opt_state, log=_log)
        except checkpoint.CheckpointError:
            ckpt.close()
            raise
        state = create_train_state(variables, model_config, optimizer)
        state = state.replace(step=jax.numpy.asarray(latest, jax.numpy.int32),
                              opt_state=jax.tree_util.tree_map(jax.numpy.asarray, opt_state))
        _log(f"resumed from {ckpt.directory / str(latest)} (step {latest})")
    else:
        variables = initial_variables(config, model_config)
        state = create_train_state(variables, model_config, optimizer)
        data_state, meta = None, {"history": [], "best_jf": None, "best_step": None,
                                  "since_best": 0}
    del variables
    # Only now: a config naming a missing file fails above without touching the workdir.
    _save_config(config, workdir)
    state = replicate(mesh, state)
    iterator = pipeline.make_iterator(dataset, config.data)
    if data_state is not None:
        iterator.set_state(data_state)

    step_fn = make_train_step(model_config, optimizer, mesh,
                              coarse_weight=config.train.coarse_weight,
                              include_first_frame=config.train.include_first_frame,
                              num_objects=spec.objects_per_clip, remat=config.train.remat)
    validator = None
    heldout = validation.build_heldout(config, log=_log)
    if heldout:
        validator = validation.Validator(heldout, model_config, config.validation.chunk_size,
                                         config.validation.num_images)
    logger = MetricLogger(workdir, enabled=jax.process_index() == 0)
    start = int(jax.device_get(state.step))
    progress = Progress(schedule.total_steps, start, config.train.batch_size,
                        enabled=jax.process_index() == 0)
    last: dict = {}
    t_start = time.perf_counter()
    step = start

    skipped_before = meta.get("nonfinite_skipped", 0)      # by earlier runs of this workdir
    reported = [0]

    def check_finite(step) -> int:
        """Act on steps whose update was not applied (non-finite loss or gradient): stop
        with a message, or warn once per new one and go on. Returns how many so far."""
        skipped, first = (int(x) for x in jax.device_get((state.skipped, state.first_skipped)))
        if skipped > reported[0]:
            latest = ckpt.latest_step()
            good = "none" if latest is None else str(ckpt.directory / str(latest))
            if config.train.nonfinite == "stop":
                raise FloatingPointError(
                    f"step {first}: the loss or the gradients are not finite; training stops "
                    f"without saving (its update was not applied). Last good checkpoint: "
                    f"{good}. Lower train.learning_rate, or set train.nonfinite=skip to skip "
                    "such steps.")
            _log(f"warning: {skipped - reported[0]} step(s) with a non-finite loss or gradient "
                 f"by step {step} (the first at step {first}); their updates were skipped "
                 f"({skipped_before + skipped} in this workdir)")
            reported[0] = skipped
        return skipped

    def save(step):
        meta["nonfinite_skipped"] = skipped_before + check_finite(step)
        # The step never applies a non-finite update; this makes sure before anything is
        # written (one reduction per save).
        finite = jax.tree_util.tree_reduce(
            lambda a, b: a & b, jax.tree_util.tree_map(lambda x: jax.numpy.isfinite(x).all(),
                                                       state.variables))
        if not bool(jax.device_get(finite)):
            raise FloatingPointError(f"the weights at step {step} are not finite; nothing was "
                                     f"saved (last checkpoint: {ckpt.latest_step()})")
        ckpt.save(step, state.variables, state.opt_state, iterator.get_state(), meta,
                  model_config)

    def validate(step) -> bool:
        """Validate, export a new best; True when early stopping says stop."""
        t0 = time.perf_counter()
        scores, pictures = validator(state.variables)
        j, f, jf = scores["J"], scores["F"], scores["JF"]
        logger.write(step, {"J": j, "F": f, "JF": jf, "val_seconds": time.perf_counter() - t0})
        for name, frames, pred in pictures:
            logger.image(step, f"val/{name}", strip(frames, pred))
        improved, stop = record_validation(meta, step, jf, config.validation.patience)
        if improved and jax.process_index() == 0:
            checkpoint.export_best(workdir, state.variables, model_config,
                                      {"step": step, "J": j, "F": f, "JF": jf})
        _log(f"validation at step {step}: J {j:.4f}  F {f:.4f}  "
             f"J&F {jf:.4f}  (best {meta['best_jf']:.4f} at step {meta['best_step']}; "
             f"{time.perf_counter() - t0:.1f} s)")
        last.update(J=j, F=f, JF=jf)
        return stop

    if validator is not None and start == 0 and not meta["history"]:
        validate(0)                         # the untrained model's score, for comparison
    stopped_early = False
    pending = None
    try:
        for step in range(start + 1, schedule.total_steps + 1):
            batch = next(iterator)
            frames, labels = _global_batch(mesh, batch)
            state, metrics = step_fn(state, frames, labels)
            pending = metrics
            log_now = step % config.train.log_every == 0 or step == schedule.total_steps
            if log_now or step == start + 1:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                scalars["skipped_steps"] = skipped_before + check_finite(step)
                scalars["learning_rate"] = float(lr(step - 1))
                scalars["epoch"] = (step - 1) // schedule.steps_per_epoch
                scalars.update(progress.line(step, scalars, first=step == start + 1))
                logger.write(step, scalars)
                last.update(scalars)
            end = step == schedule.total_steps
            if step % config.train.checkpoint_every == 0 or end:
                save(step)
            if validator is not None and (step % config.validation.every == 0 or end):
                if validate(step):
                    _log(f"early stopping: no better J&F in {config.validation.patience} "
                         "validations")
                    stopped_early = True
                    save(step)
                    break
    finally:
        if pending is not None:
            jax.block_until_ready(pending)
        if hasattr(iterator, "close"):
            iterator.close()                # stops worker processes and their buffers
        ckpt.close()
        logger.close()
    if sampler.skipped:
        _log(f"warning: {len(sampler.skipped)} bad videos were skipped while sampling")
    elapsed = time.perf_counter() - t_start
    _log(f"done: step {step} in {format_duration(elapsed)}"
         + (" (stopped early)" if stopped_early else "")
         + (f"; best J&F {meta['best_jf']:.4f} at step {meta['best_step']}, exported to "
            f"{workdir / 'best'}" if meta["best_jf"] is not None else ""))
    last.update(step=step, stopped_early=stopped_early)
    return last
