"""Two processes for real: jax.distributed on CPU (gloo collectives, a local
coordinator), each with one device and half the global batch, against one process."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(config, workdir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "train.py", "--config", str(config), "--workdir", str(workdir),
            *overrides]


def _env():
    env = dict(os.environ, JAX_DEFAULT_PRNG_IMPL="rbg", JAX_PLATFORMS="cpu")
    # One CPU device per process (conftest asks for 4 in this one).
    env["XLA_FLAGS"] = " ".join([f for f in env.get("XLA_FLAGS", "").split()
                                 if "device_count" not in f]
                                + ["--xla_force_host_platform_device_count=1"])
    return env


def _weights(workdir: Path) -> dict:
    import jax
    from agame_jax import checkpoint
    _, variables = checkpoint.load_variables(workdir / "checkpoints" / str(STEPS))
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(variables)}


def _train(config: Path, workdir: Path, steps: int, processes: int) -> None:
    """train.py to ``steps`` in ``processes`` processes (a local coordinator)."""
    command = _command(f"{config}:{steps}", workdir)
    if processes == 1:
        commands = [command]
    else:
        address = f"127.0.0.1:{_free_port()}"
        commands = [command + ["--config.train.distributed=True",
                               f"--config.train.coordinator_address={address}",
                               f"--config.train.num_processes={processes}",
                               f"--config.train.process_id={rank}"]
                    for rank in range(processes)]
    runs = [subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = [p.communicate(timeout=600)[0] for p in runs]
    assert all(p.returncode == 0 for p in runs), "\n".join(outputs)
    assert f"devices: {processes} x cpu ({processes} process(es))" in outputs[0]


@pytest.mark.slow
def test_two_processes_train_like_one_and_resume_each_other(tmp_path):
    """Four steps in one process against: two steps in two processes resumed in one, and
    two steps in one resumed in two. Each process has one device and its half of the
    global batch; the input stream's position is a count of global batches, so it carries
    over between process counts."""
    config = tmp_path / "config.py"
    config.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from test_train_loop import tiny_train_config\n\n\n"
        "def get_config(steps):\n"
        "    config = tiny_train_config(int(steps), validate=False)\n"
        "    config.train.checkpoint_every = 2\n"
        "    return config\n")
    _train(config, tmp_path / "one", STEPS, 1)
    for first, then in ((2, 1), (1, 2)):
        workdir = tmp_path / f"{first}_then_{then}"
        _train(config, workdir, STEPS // 2, first)
        _train(config, workdir, STEPS, then)
        want, got = _weights(tmp_path / "one"), _weights(workdir)
        assert got.keys() == want.keys()
        # The same clips, summed in another order over the processes: equal up to
        # rounding (Adam turns a near-zero gradient's rounding into up to one step of 1e-3).
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-3, atol=1e-4,
                                       err_msg=f"{workdir.name} {key}")


@pytest.mark.slow
def test_evaluate_over_two_processes_scores_like_one(tmp_path, tiny_model):
    """evaluate.py --distributed in two processes splits the videos and process 0
    scores them all: the same per-sequence scores as one process."""
    from agame_jax import checkpoint
    from conftest import SHARED
    sample = SHARED / "data" / "davis2016_sample"
    if not sample.exists():
        pytest.skip(f"the DAVIS sample is not at {sample}")
    cfg, variables = tiny_model
    ckpt = checkpoint.save_variables(tmp_path / "ckpt", variables, cfg)
    args = [sys.executable, "evaluate.py", "--checkpoint", str(ckpt), "--dataset", "davis2016",
            "--data-root", str(sample)]
    one = subprocess.run(args + ["--output", str(tmp_path / "one")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    address = f"127.0.0.1:{_free_port()}"
    pair = [subprocess.Popen(args + ["--output", str(tmp_path / "pair"), "--distributed",
                                     "--coordinator-address", address, "--num-processes", "2",
                                     "--process-id", str(rank)],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=600)[0] for p in pair]
    assert [p.returncode for p in pair] == [0, 0], "\n".join(outputs)
    videos = [sorted(line for line in out.splitlines() if "frames, 1 given mask" in line)
              for out in outputs]
    assert all(videos) and sum(map(len, videos)) == 3            # the videos were split
    for table in ("per-sequence.csv", "global.csv"):
        assert (tmp_path / "pair" / table).read_text() == (tmp_path / "one" / table).read_text()
