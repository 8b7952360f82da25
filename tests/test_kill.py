"""train.py killed with SIGKILL at any moment, then rerun: the same result as a run that
was never interrupted (weights, optimiser state, data position), bit for bit."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6


def _config_file(tmp_path: Path) -> Path:
    """A config file for train.py: tests/test_train_loop.py's tiny pipeline, a
    checkpoint after every step (so that a kill can land inside a write), no validation."""
    path = tmp_path / "kill_config.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from test_train_loop import tiny_train_config\n\n\n"
        "def get_config():\n"
        f"    config = tiny_train_config({STEPS}, validate=False)\n"
        "    config.train.checkpoint_every = 1\n"
        "    config.train.keep_checkpoints = 2\n"
        "    return config\n")
    return path


def _env():
    # The tests' PRNG and XLA flags (conftest sets them in os.environ for this process;
    # the subprocesses must build the same programs and weights) and a compilation cache
    # shared by every run.
    env = dict(os.environ, JAX_DEFAULT_PRNG_IMPL="rbg", JAX_PLATFORMS="cpu")
    cache = os.environ.get("AGAME_TEST_XLA_CACHE")
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    return env


def _train(config: Path, workdir: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", "--config", str(config), "--workdir",
                             str(workdir)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _finish(config: Path, workdir: Path) -> str:
    proc = _train(config, workdir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _kill_when(config: Path, workdir: Path, moment) -> None:
    """Start train.py, poll ``moment(workdir)`` every millisecond, SIGKILL when true."""
    proc = _train(config, workdir)
    deadline = time.monotonic() + 600
    try:
        while not moment(workdir):
            assert proc.poll() is None, f"train.py ended before the moment: {proc.stdout.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def _steps_done(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() \
        else []


def _writing(workdir: Path, after: int = 0) -> bool:
    """A checkpoint of a step after ``after`` is being written (orbax's temporary
    directory ``<step>.orbax-checkpoint-tmp…`` is on disk)."""
    folder = workdir / "checkpoints"
    return folder.exists() and any(
        ".orbax-checkpoint-tmp" in p.name and int(p.name.split(".")[0]) > after
        for p in folder.iterdir())


def _state(workdir: Path) -> dict:
    """Weights, optimiser state and data position of the final step, as flat numpy."""
    import jax
    import orbax.checkpoint as ocp
    step = workdir / "checkpoints" / str(STEPS)
    flat = {}
    with ocp.StandardCheckpointer() as ckptr:
        for item in ("variables", "optimizer"):
            tree = ckptr.restore(step / item)
            flat.update({item + jax.tree_util.keystr(k): np.asarray(v)
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)})
    flat["data"] = (step / "data" / "metadata").read_text()
    return flat


@pytest.mark.slow
def test_kill_9_at_any_moment_then_rerun_gives_the_uninterrupted_result(tmp_path):
    config = _config_file(tmp_path)
    _finish(config, tmp_path / "whole")
    want = _state(tmp_path / "whole")
    # Killed: while compiling (nothing saved yet), once two steps are saved, and in the
    # middle of writing a later step (orbax's temporary directory on disk); each rerun
    # resumes where the last complete checkpoint left off.
    moments = {"before any checkpoint": lambda w: (w / "config.json").exists(),
               "after a checkpoint": lambda w: len(_steps_done(w)) >= 2,
               "inside a checkpoint write": lambda w: _writing(w, after=3)}
    workdir = tmp_path / "killed"
    for name, moment in moments.items():
        _kill_when(config, workdir, moment)
        if name == "inside a checkpoint write":
            assert _writing(workdir, after=3), "the kill did not land inside a write"
    out = _finish(config, workdir)
    assert "resumed from" in out
    got = _state(workdir)
    assert got.keys() == want.keys()
    for key in want:
        if key == "data":
            assert got[key] == want[key]
        else:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.slow
def test_evaluate_killed_mid_dataset_resumes_to_the_same_files(tmp_path, tiny_model):
    """evaluate.py killed in the middle of a video, rerun with --resume: the finished
    videos are skipped, the half-written one (still in its hidden temporary folder) is
    redone, and every result file and score equals an uninterrupted run's."""
    from agame_jax import checkpoint
    from agame_jax.evaluation.cli import main as evaluate
    from conftest import SHARED
    sample = SHARED / "data" / "davis2016_sample"
    if not sample.exists():
        pytest.skip(f"the DAVIS sample is not at {sample}")
    cfg, variables = tiny_model
    ckpt = checkpoint.save_variables(tmp_path / "ckpt", variables, cfg)
    args = ["--checkpoint", str(ckpt), "--dataset", "davis2016", "--data-root", str(sample)]
    assert evaluate(args + ["--output", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"

    def mid_video(_):
        if not out.exists():
            return False
        finished = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
        partial = [p for p in out.iterdir() if p.name.endswith(".tmp") and any(p.iterdir())]
        return bool(finished) and bool(partial)
    proc = subprocess.Popen([sys.executable, "evaluate.py", *args, "--output", str(out)],
                            cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not mid_video(out):
        assert proc.poll() is None and time.monotonic() < deadline, "ended before the moment"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert half and not (out / "global.csv").exists()
    rerun = subprocess.run([sys.executable, "evaluate.py", *args, "--output", str(out),
                            "--resume"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "already complete, skipped (--resume)" in rerun.stdout + rerun.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    want = {p.relative_to(tmp_path / "whole"): p.read_bytes()
            for p in (tmp_path / "whole").rglob("*.png")}
    got = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}
    assert got.keys() == want.keys() and len(want) == 50 + 40 + 35
    assert all(got[k] == want[k] for k in want)
    for table in ("per-sequence.csv", "global.csv"):
        assert (out / table).read_text() == (tmp_path / "whole" / table).read_text()
