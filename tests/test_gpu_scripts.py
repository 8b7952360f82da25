"""The GPU scripts (``benchmarks/gpu_*.sh``) parse, and their shared runner keeps to a time
budget: they run where device time is short, so a mistake found there costs a session."""
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.sh")))
def test_script_parses(script):
    subprocess.run(["bash", "-n", str(BENCH / script)], check=True)


def _bash(script, tmp_path, **env):
    import os
    full_env = {**os.environ, "AGAME_PROFILE_DIR": str(tmp_path / "prof"), **env}
    return subprocess.run(["bash", "-c", f"source {BENCH / 'gpu_env.sh'} {tmp_path / 'out'}\n"
                           + script], capture_output=True, text=True, env=full_env,
                          timeout=60).stdout


def test_runner_stops_and_skips_commands_at_the_budget(tmp_path):
    # 3 s budget: the first command ends on its own, the second is stopped at the deadline
    # (timeout's status 124), the third would start with under 2 s left and is skipped.
    out = _bash("run sleep 0.2\nrun sleep 30\nrun echo never", tmp_path,
                AGAME_BUDGET_S="3", AGAME_MIN_STEP_S="2")
    lines = out.splitlines()
    assert lines[0] == "=== sleep 0.2" and lines[1].startswith("=== exit 0 after ")
    assert lines[2] == "=== sleep 30" and lines[3].startswith("=== exit 124 after ")
    assert int(lines[3].split()[-2]) <= 4
    assert lines[4].startswith("=== skipped, ") and lines[4].endswith(": echo never")
    assert "never" not in "\n".join(lines[:4]) and len(lines) == 5


def test_runner_without_budget_uses_the_step_timeout(tmp_path):
    lines = _bash("run sleep 30\nrun echo ran", tmp_path, STEP_TIMEOUT="1").splitlines()
    assert lines[0] == "=== sleep 30" and lines[1].startswith("=== exit 124 after ")
    assert int(lines[1].split()[-2]) <= 2
    assert lines[2:4] == ["=== echo ran", "ran"] and lines[4].startswith("=== exit 0 after ")
