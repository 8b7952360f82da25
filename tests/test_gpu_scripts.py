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
    # 4 s budget (bash counts whole seconds, so 3-4 s of it are left after the first
    # command): the first command ends on its own, the second is stopped at the deadline
    # (timeout's status 124), the third would start with under 2 s left and is skipped.
    out = _bash("run true\nrun sleep 30\nrun echo never", tmp_path,
                AGAME_BUDGET_S="4", AGAME_MIN_STEP_S="2")
    lines = out.splitlines()
    assert lines[0] == "=== true" and lines[1].startswith("=== exit 0 after ")
    assert lines[2] == "=== sleep 30" and lines[3].startswith("=== exit 124 after ")
    assert 2 <= int(lines[3].split()[-2]) <= 5
    assert lines[4].startswith("=== skipped, ") and lines[4].endswith(": echo never")
    assert "never" not in "\n".join(lines[:4]) and len(lines) == 5


def test_runner_without_budget_uses_the_step_timeout(tmp_path):
    lines = _bash("run sleep 30\nrun echo ran", tmp_path, STEP_TIMEOUT="1").splitlines()
    assert lines[0] == "=== sleep 30" and lines[1].startswith("=== exit 124 after ")
    assert int(lines[1].split()[-2]) <= 2
    assert lines[2:4] == ["=== echo ran", "ran"] and lines[4].startswith("=== exit 0 after ")


def _dry_run_commands(script, tmp_path):
    import os
    env = {**os.environ, "AGAME_DRY_RUN": "1", "AGAME_SHARED": str(tmp_path / "shared"),
           "AGAME_PROFILE_DIR": str(tmp_path / "prof")}
    out = subprocess.run(["bash", str(BENCH / script), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, timeout=60).stdout
    prefix = "=== dry run: "
    return [line[len(prefix):] for line in out.splitlines() if line.startswith(prefix)]


def _check_train_overrides(argv):
    """``train.py --config F --config.a.b=V ...``: F loads and every field exists."""
    import importlib.util
    config_file = BENCH.parent / argv[argv.index("--config") + 1]
    spec = importlib.util.spec_from_file_location("gpu_script_config", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in argv:
        if item.startswith("--config."):
            node = config
            for key in item[len("--config."):].partition("=")[0].split("."):
                assert key in node, f"{item}: no field {key!r} in {config_file.name}"
                node = node[key]


def _check_xla_flags(value):
    """XLA parses every flag (GPU ones too) when a backend starts, and aborts on an
    unknown flag or value: start the CPU backend with them."""
    import os
    import sys
    result = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1)"],
                            env={**os.environ, "XLA_FLAGS": value, "JAX_PLATFORMS": "cpu"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"XLA_FLAGS={value!r}: {result.stderr[-500:]}"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("gpu_*.sh")
                                          if p.name != "gpu_env.sh"))
def test_gpu_script_commands_take_their_arguments(script, tmp_path):
    """Every command of the script, as bash expands it, against the parser or the files
    it names: a mistyped flag or field would otherwise surface only on a lent GPU."""
    import importlib.util
    import shlex
    import sys
    from agame_jax import ModelConfig
    from agame_jax.evaluation.cli import build_parser
    commands = _dry_run_commands(script, tmp_path)
    assert commands
    for command in commands:
        if command.startswith("python3 -c "):
            continue                                 # inline snippets: run by the scripts
        argv = shlex.split(command)
        while argv[0] == "env" or "=" in argv[0]:
            name, _, value = argv[0].partition("=")
            if name == "XLA_FLAGS":
                _check_xla_flags(value)
            argv = argv[1:]
        assert argv[0] == "python3", command
        if argv[1] == "-m":
            if argv[2] == "pytest":
                for target in (a for a in argv[3:] if a.startswith("tests/")):
                    path, _, test = target.partition("::")
                    assert (BENCH.parent / path).exists(), command
                    assert not test or f"def {test}(" in (BENCH.parent / path).read_text()
            else:
                assert importlib.util.find_spec(argv[2]) is not None, command
        elif argv[1].startswith("benchmarks/"):
            name = Path(argv[1]).stem
            spec = importlib.util.spec_from_file_location(f"gpu_{name}", BENCH.parent / argv[1])
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(BENCH))
            try:
                spec.loader.exec_module(module)
                args = module.parse_args(argv[2:])
                if getattr(args, "model", None):
                    ModelConfig().with_overrides(args.model)
            finally:
                sys.path.remove(str(BENCH))
        elif argv[1] == "evaluate.py":
            args = build_parser().parse_args(argv[2:])
            ModelConfig().with_overrides(args.model)
        elif argv[1] == "train.py":
            _check_train_overrides(argv)
        else:
            raise AssertionError(f"unchecked command in {script}: {command}")
