"""train.py / train_and_evaluate: configs, resume equality, checkpoints, backbone init."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_train_config(num_steps: int, validate: bool = True):
    """The quickstart pipeline, shrunk: tiny model, 32×32 clips of 3 frames."""
    from agame_jax.train.defaults import base_config
    config = base_config()
    config.model = tiny_config().to_config_dict()
    d = config.data
    d.sources, d.clip_length, d.height, d.width = "synthetic", 3, 32, 32
    d.min_start_pixels, d.synthetic_objects, d.synthetic_distractors = 20, 1, 1
    d.num_threads, d.prefetch = 1, 2
    t = config.train
    t.batch_size = 4                     # one clip per fake device (conftest makes 4)
    t.learning_rate, t.clips_per_epoch, t.num_steps = 1e-3, 8, num_steps
    t.log_every, t.checkpoint_every, t.keep_checkpoints = 1, 2, 2
    v = config.validation
    v.source, v.every, v.num_videos, v.synthetic_frames, v.num_images = (
        "synthetic" if validate else "", 2, 2, 4, 1)
    return config


def _leaves(path):
    from agame_jax import checkpoint
    _, variables = checkpoint.load_variables(path)
    return jax.tree_util.tree_leaves(variables)


# orbax leaves an asyncio callback behind when the restore of a damaged file fails.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_resume_gives_the_same_parameters_as_one_run(tmp_path):
    from agame_jax.train import train_and_evaluate
    one, two = tmp_path / "one", tmp_path / "two"
    final = train_and_evaluate(tiny_train_config(4), one)
    assert final["step"] == 4 and np.isfinite(final["loss"])
    # Validation does not touch the weights; the resumed runs skip it to save time.
    train_and_evaluate(tiny_train_config(2, validate=False), two)
    resumed = train_and_evaluate(tiny_train_config(4, validate=False), two)   # resumes at 2
    assert resumed["step"] == 4
    for a, b in zip(_leaves(one / "checkpoints" / "4"), _leaves(two / "checkpoints" / "4")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _damaged_checkpoints_are_named_and_skipped(one, two)
    # Workdir contents: config, metrics with validation, kept steps, the best export.
    assert json.loads((one / "config.json").read_text())["train"]["num_steps"] == 4
    records = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "JF" in r] == [0, 2, 4]
    assert all(0 <= r["JF"] <= 1 for r in records if "JF" in r)
    train_records = [r for r in records if "loss" in r]
    assert {"loss", "loss_fine", "loss_coarse", "learning_rate"} <= set(train_records[0])
    assert "snippets_per_s" in train_records[1]           # not for the compiling step
    assert sorted(p.name for p in (one / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert (one / "best" / "best.json").exists()
    assert any((one / "tensorboard").iterdir())
    # The checkpoint serves inference: a workdir resolves to its best export.
    from agame_jax import Segmenter, checkpoint
    assert checkpoint.resolve(one) == one / "best"
    assert checkpoint.resolve(one, prefer="latest") == one / "checkpoints" / "4"
    assert checkpoint.resolve(one / "checkpoints") == one / "checkpoints" / "4"
    segmenter = Segmenter.from_checkpoint(one / "checkpoints" / "4")
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    labels, _ = segmenter(frames, {0: mask})
    assert labels.shape == (2, 32, 32)


def _truncate_largest_file(directory):
    largest = max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def _damaged_checkpoints_are_named_and_skipped(one, two):
    """A truncated newest checkpoint: loading it is a one-line error naming it; training
    reports it, moves it aside, resumes from the one before and ends where an
    uninterrupted run ends. With none intact (one truncated, one with a file deleted),
    training stops with a clear message."""
    from agame_jax import checkpoint
    from agame_jax.train import train_and_evaluate
    _truncate_largest_file(two / "checkpoints" / "4" / "variables")
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"checkpoint .*checkpoints/4 is damaged or incomplete"):
        checkpoint.load_variables(two / "checkpoints" / "4")
    logged = []
    from agame_jax.train import loop
    real_log = loop._log
    loop._log = lambda *a: (logged.append(" ".join(map(str, a))), real_log(*a))
    try:
        train_and_evaluate(tiny_train_config(4, validate=False), two)
    finally:
        loop._log = real_log
    assert any(line.startswith("warning: checkpoint ") and "checkpoints/4 is damaged" in line
               for line in logged), logged
    assert any("resumed from" in line and "(step 2)" in line for line in logged), logged
    assert (two / "checkpoints" / "damaged_4").is_dir()
    for a, b in zip(_leaves(one / "checkpoints" / "4"), _leaves(two / "checkpoints" / "4")):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _truncate_largest_file(two / "checkpoints" / "4" / "variables")
    (two / "checkpoints" / "2" / "optimizer" / "_METADATA").unlink()          # partly deleted
    with pytest.raises(checkpoint.CheckpointError, match="no intact checkpoint in .*checkpoints "
                                                         r"\(damaged: 4, 2\)"):
        train_and_evaluate(tiny_train_config(6, validate=False), two)


def test_half_written_step_is_ignored(tmp_path):
    """A save killed half-way lives in orbax's temporary directory: never picked up."""
    from agame_jax import checkpoint
    from agame_jax.checkpoint import TrainCheckpointer
    from agame_jax.api import init_variables
    import optax
    cfg = tiny_config()
    variables = init_variables(cfg, jax.random.key(0))
    ckpt = TrainCheckpointer(tmp_path / "checkpoints")
    ckpt.save(3, variables, optax.adam(1e-3).init(variables["params"]), {"next_index": 3},
              {"history": []}, cfg)
    ckpt.close()
    half = tmp_path / "checkpoints" / "5.orbax-checkpoint-tmp-1234"
    shutil.copytree(tmp_path / "checkpoints" / "3", half)
    for marker in half.rglob("commit_success.txt"):
        marker.unlink()
    (half / "variables" / "_METADATA").unlink(missing_ok=True)
    assert TrainCheckpointer(tmp_path / "checkpoints").latest_step() == 3
    assert checkpoint.resolve(tmp_path) == tmp_path / "checkpoints" / "3"


def test_configs_load_lock_and_differ_only_where_they_should():
    sys.path.insert(0, str(ROOT))
    try:
        from configs import quickstart, stage1, stage2, variant
        import importlib
        s1, s2, q = stage1.get_config(), stage2.get_config(), quickstart.get_config()
        with pytest.raises(AttributeError):
            s1.train.batch_sise = 2                  # locked: typos fail
        assert (s1.data.height, s1.data.clip_length, s1.train.batch_size) == (240, 8, 4)
        assert (s2.data.height, s2.data.width, s2.data.clip_length, s2.train.batch_size) == (
            480, 864, 14, 2)
        assert s2.train.coarse_weight == 0 and s2.train.learning_rate == 1e-5
        assert q.data.sources == "synthetic" and q.validation.source == "synthetic"
        for switch in ("no_appearance", "no_mask_propagation", "unimodal_appearance",
                       "no_appearance_update", "appearance_softmax", "no_fit_gradient"):
            module = importlib.import_module(f"configs.ablation_{switch}")
            for stage, base in (("stage1", s1), ("stage2", s2), ("quickstart", q)):
                config = module.get_config(stage)
                diff = {k for k in config.model if config.model[k] != base.model[k]}
                assert diff == {switch}
                assert config.to_dict() | {"model": None} == base.to_dict() | {"model": None}
        em = variant.get_config("agame-em")
        assert em.model.appearance == "agame-em"
        assert em.to_dict() | {"model": None} == q.to_dict() | {"model": None}
        with pytest.raises(ValueError, match="unknown appearance model 'nope'"):
            variant.get_config("nope")
    finally:
        sys.path.remove(str(ROOT))
    from agame_jax.config import ModelConfig
    from agame_jax.train.loop import initial_variables
    with pytest.raises(ValueError, match="train.init_checkpoint is empty"):
        initial_variables(s2, ModelConfig.from_any(s2.model))


def test_backbone_init_from_a_converted_checkpoint(tmp_path):
    from agame_jax.api import init_variables
    from agame_jax.checkpoint import save_variables
    from agame_jax.train.loop import load_backbone
    cfg = tiny_config()
    source = init_variables(cfg, jax.random.key(1))
    save_variables(tmp_path / "imagenet", source, cfg)
    fresh = init_variables(cfg, jax.random.key(2))
    out = load_backbone(str(tmp_path / "imagenet"), fresh, cfg)
    np.testing.assert_array_equal(out["params"]["backbone"]["conv1"]["kernel"],
                                  source["params"]["backbone"]["conv1"]["kernel"])
    np.testing.assert_array_equal(out["batch_stats"]["backbone"]["bn1"]["mean"],
                                  source["batch_stats"]["backbone"]["bn1"]["mean"])
    for head in ("appearance", "fusion"):
        if head in out["params"]:
            for a, b in zip(jax.tree_util.tree_leaves(out["params"][head]),
                            jax.tree_util.tree_leaves(fresh["params"][head])):
                np.testing.assert_array_equal(a, b)
    from agame_jax.api import variable_shapes
    wider = tiny_config(backbone_width=16)
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), variable_shapes(wider))
    with pytest.raises(ValueError, match="does not match config.model"):
        load_backbone(str(tmp_path / "imagenet"), zeros, wider)


def test_object_targets_match_a_loop():
    from agame_jax.losses import object_targets
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 255], size=(2, 3, 5, 6), p=[0.5, 0.2, 0.2, 0.1]).astype(np.uint8)
    labels[1, 0][labels[1, 0] == 2] = 0                 # object 2 absent from clip 1's frame 0
    out = np.asarray(object_targets(labels, 3))
    for b in range(2):
        for k in range(1, 4):
            present = (labels[b, 0] == k).any()
            for t in range(3):
                expect = np.where(labels[b, t] == 255, 255, (labels[b, t] == k).astype(int))
                if not present:
                    expect = np.full_like(expect, 255)
                np.testing.assert_array_equal(out[b, t, k - 1], expect)


def _train_cli(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_train_cli_reports_bad_fields_and_missing_data(tmp_path):
    typo = _train_cli("--config", "configs/quickstart.py", "--workdir", str(tmp_path / "a"),
                      "--config.train.batch_sise=2")
    assert typo.returncode != 0 and "batch_sise" in typo.stderr
    missing = _train_cli("--config", "configs/stage1.py", "--workdir", str(tmp_path / "b"),
                         f"--config.data.davis_root={tmp_path / 'nowhere'}")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'nowhere'}: not found (data.davis_root)")


def test_a_config_naming_a_missing_file_fails_before_writing(tmp_path):
    from agame_jax.train import train_and_evaluate
    (tmp_path / "config.json").write_text("{}")          # an earlier run's
    config = tiny_train_config(2, validate=False)
    config.train.init_checkpoint = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'}: no checkpoint found"):
        train_and_evaluate(config, tmp_path)
    assert (tmp_path / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["config.json"]


def test_early_stopping_and_schedule():
    from agame_jax.train.defaults import base_config
    from agame_jax.train.loop import Schedule, record_validation
    meta = {"history": [], "best_jf": None, "best_step": None, "since_best": 0}
    decisions = [record_validation(meta, s, jf, patience=2)
                 for s, jf in [(0, 0.1), (10, 0.3), (20, 0.2), (30, 0.3), (40, 0.25)]]
    assert decisions == [(True, False), (True, False), (False, False), (False, True),
                         (False, True)]
    assert (meta["best_jf"], meta["best_step"]) == (0.3, 10)
    assert [h["step"] for h in meta["history"]] == [0, 10, 20, 30, 40]
    meta = {"history": [], "best_jf": None, "best_step": None, "since_best": 0}
    assert not any(record_validation(meta, s, 0.5 - s, patience=0)[1] for s in range(5))
    train = base_config().train                     # 160 epochs, one clip per video
    assert Schedule.from_config(train, num_videos=3231) == Schedule(807, 160 * 807)
    train.clips_per_epoch, train.num_steps = 100, 7
    assert Schedule.from_config(train, num_videos=3231) == Schedule(25, 7)


def test_progress_prints_to_the_current_stdout(monkeypatch):
    """The default stream is looked up when printing, not when the class was defined."""
    import io
    import sys
    from agame_jax.train.logging import Progress
    progress = Progress(10, 0, 4)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    progress.line(1, {"loss": 1.0, "learning_rate": 1e-3}, first=True)
    first.close()
    monkeypatch.setattr(sys, "stdout", second)
    progress.line(2, {"loss": 0.5, "learning_rate": 1e-3})
    assert "step 2/10" in second.getvalue()


def test_a_non_finite_step_stops_or_is_skipped_and_never_saved(tmp_path, monkeypatch, capsys):
    """The third batch makes the loss NaN. ``train.nonfinite="stop"`` ends training with
    a message naming step 3 and the last good checkpoint (step 2), writing nothing after
    it; ``"skip"`` leaves that update out, counts it, logs it, and finishes with finite
    weights whose checkpoint records the count."""
    import jax.numpy as jnp
    from agame_jax.train import loop, step as step_module
    real_loss, real_batch = step_module.clip_loss, loop._global_batch

    def poisoned_loss(model, v, frames, labels, **kw):       # all labels void: NaN
        losses, stats = real_loss(model, v, frames, labels, **kw)
        bad = jnp.all(labels == 255)
        return {**losses, "loss": jnp.where(bad, jnp.nan, losses["loss"])}, stats
    batches = []

    def third_batch_void(mesh, local):
        batches.append(1)
        if len(batches) == 3:
            local = {**local, "labels": np.full_like(local["labels"], 255)}
        return real_batch(mesh, local)
    monkeypatch.setattr(step_module, "clip_loss", poisoned_loss)
    monkeypatch.setattr(loop, "_global_batch", third_batch_void)

    config = tiny_train_config(4, validate=False)
    with pytest.raises(FloatingPointError, match=r"step 3: the loss or the gradients are not "
                                                 r"finite.*Last good checkpoint: .*checkpoints/2"):
        loop.train_and_evaluate(config, tmp_path / "stop")
    assert sorted(p.name for p in (tmp_path / "stop" / "checkpoints").iterdir()) == ["2"]

    batches.clear()
    config = tiny_train_config(4, validate=False)
    config.train.nonfinite = "skip"
    final = loop.train_and_evaluate(config, tmp_path / "skip")
    assert final["step"] == 4 and final["skipped_steps"] == 1
    assert "(the first at step 3); their updates were skipped" in capsys.readouterr().out
    records = [json.loads(line) for line in
               (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 1]
    assert np.isnan(records[2]["loss"]) and np.isfinite(records[3]["loss"])
    assert all(np.isfinite(np.asarray(x)).all()
               for x in _leaves(tmp_path / "skip" / "checkpoints" / "4"))
    meta = json.loads((tmp_path / "skip" / "checkpoints" / "4" / "meta" / "metadata").read_text())
    assert meta["nonfinite_skipped"] == 1
