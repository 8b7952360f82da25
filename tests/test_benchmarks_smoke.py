"""The benchmark scripts run (tiny settings, CPU) and print their tables."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,args,header", [
    ("inference", ["--tiny", "--height", "32", "--width", "48", "--frames", "2",
                   "--objects", "2", "--dtype", "float32", "--repeats", "1"], "frames/s"),
    ("train_step", ["--tiny", "--batch", "1", "--frames", "2", "--height", "32", "--width", "32",
                    "--dtype", "float32", "--repeats", "1"], "snippets/s"),
])
def test_benchmark_prints_table(name, args, header, capsys):
    _load(name).main(args)
    out = capsys.readouterr().out
    assert header in out and "float32" in out


def test_data_pipeline_benchmark_prints_table(capsys):
    _load("data_pipeline").main(["--config", str(BENCH.parent / "configs" / "quickstart.py"),
                                 "--threads", "1", "--batches", "2", "--height", "32",
                                 "--width", "32", "--set", "data.min_start_pixels=20",
                                 "data.hflip=false"])
    out = capsys.readouterr().out
    assert "clips/s" in out and "4x32x32" in out
