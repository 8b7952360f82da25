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


def _dry_run_lines(script, tmp_path, *args):
    """The script's ``=== dry run`` lines: its commands and its profile summaries."""
    import os
    env = {**os.environ, "AGAME_DRY_RUN": "1", "AGAME_SHARED": str(tmp_path / "shared"),
           "AGAME_PROFILE_DIR": str(tmp_path / "prof")}
    out = subprocess.run(["bash", str(BENCH / script), str(tmp_path / "out"), *args],
                         capture_output=True, text=True, env=env, timeout=60).stdout
    return [line for line in out.splitlines() if line.startswith("=== dry run")]


def _dry_run_commands(script, tmp_path, *args):
    prefix = "=== dry run: "
    return [line[len(prefix):] for line in _dry_run_lines(script, tmp_path, *args)
            if line.startswith(prefix)]


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("gpu_*.sh")
                                          if p.name != "gpu_env.sh"))
def test_each_profile_is_summarised_right_after_its_command(script, tmp_path):
    """A command that runs into the budget's deadline leaves no time after it, so each
    profile's summary (the only part of a trace that comes back) must follow its own
    command, not wait for the end of the script."""
    import shlex
    lines = _dry_run_lines(script, tmp_path)
    for k, line in enumerate(lines):
        if not line.startswith("=== dry run: ") or line.startswith("=== dry run: python3 -c "):
            continue                                 # inline snippets: no profiles
        argv = shlex.split(line[len("=== dry run: "):])
        if "--profile" in argv:
            name = Path(argv[argv.index("--profile") + 1]).name
            assert k + 1 < len(lines) and lines[k + 1] == f"=== dry run summary: {name}", line
    summaries = [line for line in lines if line.startswith("=== dry run summary: ")]
    assert len(summaries) == sum("--profile" in line for line in lines)


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


def _load(name):
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def _model_settings(argv):
    """The ``--model`` settings of a benchmark's argv, as a set."""
    start = argv.index("--model") + 1
    stop = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
    return set(argv[start:stop])


def _ab_log():
    """A gpu_ab.sh-like log: per command, tables as the benchmarks print them (each row as
    measured, then all rows again), with the runner's and XLA's lines in between."""
    import contextlib
    import io
    common = _load("common")

    def table(header, rows):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            for row in rows:                              # as measured ...
                print("  done: a row")
                common.print_table(header, [row])
            print("\nall rows:")
            common.print_table(header, rows)              # ... and the closing table
        return buf.getvalue()
    inference = ["work", "variant", "dtype", "objects", "ms/frame", "frames/s", "obj-frames/s",
                 "pipelined frames/s", "IoU vs first"]
    train = ["variant", "dtype", "clips x frames", "ms/step", "snippets/s", "loss", "|grad|"]
    row = lambda work, variant, n, fps, iou=None: [work, variant, "bfloat16", n, 1e3 / fps, fps,
                                                   n * fps, fps, iou if variant != "-" else None]
    return "\n".join([
        "NVIDIA H200, 143771 MiB", "=== python3 benchmarks/inference.py --variants ...",
        "W1127 02:22:13.382102 cuda_timer.cc:88] Delay kernel timed out",
        table(inference, [
            row("bfloat16 1v 1obj", "-", 1, 100.0), row("bfloat16 1v 5obj", "-", 5, 50.0),
            # stem: faster on both rows, x1.09 -> picked
            row("bfloat16 1v 1obj", "stem_conv=space_to_depth", 1, 110.0, 1.0),
            row("bfloat16 1v 5obj", "stem_conv=space_to_depth", 5, 54.0, 0.95),
            # the fastest, but its labels are not the default's: not picked
            row("bfloat16 1v 1obj", "mask_prop_channels=8", 1, 300.0, 0.97),
            row("bfloat16 1v 5obj", "mask_prop_channels=8", 5, 150.0, 0.5),
            # within the margin -> not picked
            row("bfloat16 1v 1obj", "dilated_conv=space_to_batch", 1, 101.0),
            row("bfloat16 1v 5obj", "dilated_conv=space_to_batch", 5, 50.5),
            # faster on average (x1.04) but 10% slower on one row -> not picked
            row("bfloat16 1v 1obj", "dilated_conv=im2col", 1, 120.0),
            row("bfloat16 1v 5obj", "dilated_conv=im2col", 5, 45.0),
            # a tuple value, faster -> picked, written without spaces
            row("bfloat16 1v 1obj", "pyramid_dilations=(1, 2)", 1, 103.0),
            row("bfloat16 1v 5obj", "pyramid_dilations=(1, 2)", 5, 52.0)]),
        "=== exit 0 after 100 s",
        "=== python3 benchmarks/train_step.py --variants ...",
        table(train, [["-", "bfloat16", "2x14", 100.0, 10.0, "0.75", "12.0"],
                      ["dilated_conv=space_to_batch", "bfloat16", "2x14", 80.0, 12.0,
                       "0.7501", "12.01"],
                      ["dilated_conv=im2col", "bfloat16", "2x14", 75.0, 13.0, "0.75", "12.1"],
                      # the fastest, but its gradient differs by 12%: not picked
                      ["stem_conv=space_to_depth", "bfloat16", "2x14", 50.0, 20.0, "0.75",
                       "13.5"]]),
        "=== exit 0 after 150 s",
        "=== env XLA_FLAGS= --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL python3 "
        "benchmarks/inference.py --objects 1 5 --no-encode",
        table(inference, [row("bfloat16 1v 1obj", "-", 1, 150.0),
                          row("bfloat16 1v 5obj", "-", 5, 60.0)]),
        "=== exit 0 after 60 s",
        "=== python3 benchmarks/inference.py --objects 1 --no-encode --unroll 1 4",
        table(inference, [row("bfloat16 1v 1obj", "-", 1, 98.0),
                          row("bfloat16 1v 1obj", "unroll=4", 1, 140.0)]),
        "=== skipped, 30 s of the budget left: python3 -m pytest"])


def test_pick_variants_reads_the_tables_and_picks_clear_winners(tmp_path):
    import shlex
    import sys
    pick = _load("pick_variants")
    sections = pick.parse_log(_ab_log())
    assert [s.command.split()[0] for s in sections] == ["python3", "python3", "env", "python3"]
    first = sections[0].speeds
    assert set(first) == {("inference", ("bfloat16 1v 1obj", "bfloat16", "1")),
                          ("inference", ("bfloat16 1v 5obj", "bfloat16", "5"))}
    assert first[("inference", ("bfloat16 1v 5obj", "bfloat16", "5"))] == {
        "-": 50.0, "stem_conv=space_to_depth": 54.0, "dilated_conv=space_to_batch": 50.5,
        "dilated_conv=im2col": 45.0, "pyramid_dilations=(1, 2)": 52.0,
        "mask_prop_channels=8": 150.0}
    assert sections[0].results[("inference", ("bfloat16 1v 5obj", "bfloat16", "5"))][
        "stem_conv=space_to_depth"] == {"IoU vs first": 0.95}
    messages = []
    picks = pick.compare(sections, margin=0.02, report=messages.append)
    # Both dilated formulations won the training step: the faster one is kept.
    assert picks == {"inference": {"stem_conv": "space_to_depth",
                                   "pyramid_dilations": "(1, 2)"},
                     "train": {"dilated_conv": "im2col"}}
    text = "\n".join(messages)
    assert "unroll=4" in text and "not a model setting" in text
    assert "|grad| 13.5 against the default's 12 on bfloat16 2x14" in text
    assert "stem_conv=space_to_depth" in text and "results differ" in text
    assert "IoU vs first 0.5 against the default's - on bfloat16 1v 5obj" in text
    assert "IoU vs first 0.97" not in text and "IoU vs first 0.95" not in text
    # The command-buffer run is compared with the first plain default rows, not picked.
    assert "XLA_FLAGS=--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL x1.500" in text
    assert "x1.200 over the same row without" in text

    (tmp_path / "ab.log").write_text(_ab_log())
    picker = [sys.executable, str(BENCH / "pick_variants.py")]
    words = subprocess.run(picker + [str(tmp_path / "ab.log")], capture_output=True, text=True,
                           check=True).stdout.split()
    assert sorted(words) == ["inference:pyramid_dilations=(1,2)",
                             "inference:stem_conv=space_to_depth", "train:dilated_conv=im2col"]
    missing = subprocess.run(picker + [str(tmp_path / "no")], capture_output=True, text=True,
                             check=True)
    assert missing.stdout.strip() == "" and "keeping the defaults" in missing.stderr

    # gpu_perf.sh gives the inference picks to the inference rows only, the training
    # picks to the training rows only, and unprefixed settings to both.
    commands = _dry_run_commands("gpu_perf.sh", tmp_path, *words, "fusion_channels=(8,4)")
    assert len(commands) == 5
    for command in commands:
        expected = ({"pyramid_dilations=(1,2)", "stem_conv=space_to_depth"}
                    if "inference.py" in command else {"dilated_conv=im2col"})
        assert _model_settings(shlex.split(command)) == expected | {"fusion_channels=(8,4)"}


def test_session_runs_the_benchmark_with_the_ab_winners(tmp_path):
    """gpu_session.sh: the A/B's log → pick_variants.py → gpu_perf.sh's rows, in one
    command (here the A/B is skipped and its log given, and every command dry-run)."""
    import os
    import shlex
    import sys
    (tmp_path / "out" / "ab").mkdir(parents=True)
    (tmp_path / "out" / "ab" / "gpu_ab.log").write_text(_ab_log())
    env = {**os.environ, "AGAME_DRY_RUN": "1", "AGAME_AB_S": "0",
           "AGAME_PROFILE_DIR": str(tmp_path / "prof"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def session(budget):
        return subprocess.run(["bash", str(BENCH / "gpu_session.sh"), str(tmp_path / "out")],
                              capture_output=True, text=True, timeout=120,
                              env={**env, "AGAME_BUDGET_S": budget}).stdout
    out = session("0")
    assert "picked: " in (tmp_path / "out" / "picks.txt").read_text()
    commands = [shlex.split(line[len("=== dry run: "):]) for line in out.splitlines()
                if line.startswith("=== dry run: ")]
    assert len(commands) == 5                        # gpu_perf.sh's, no A/B
    for argv in commands:
        assert _model_settings(argv) == ({"stem_conv=space_to_depth", "pyramid_dilations=(1,2)"}
                                         if argv[1] == "benchmarks/inference.py"
                                         else {"dilated_conv=im2col"}), argv
    assert (tmp_path / "out" / "perf" / "gpu_perf.log").exists()
    # Under a budget already spent, the benchmark is skipped and said so.
    out = session("1")
    assert "=== no time left for gpu_perf.sh" in out and "=== dry run" not in out
