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


def test_matmul_flops_counts_loops_per_iteration_and_matches_xla_without_loops():
    import jax
    import jax.numpy as jnp
    common = _load("common")
    x = jnp.ones((2, 16, 16, 8))
    k = jnp.ones((3, 3, 8, 4))
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert common.matmul_flops(conv, x, k) == 2 * 2 * 16 * 16 * 4 * (3 * 3 * 8)
    # XLA skips the taps that fall on the zero padding; on a larger map that is ~2%.
    big = jnp.ones((2, 64, 64, 8))
    xla = jax.jit(conv).lower(big, k).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    assert abs(common.matmul_flops(conv, big, k) - xla["flops"]) / xla["flops"] < 0.05
    a = jnp.ones((32, 32))
    looped = lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=5)[0]
    assert common.matmul_flops(jax.jit(looped), a) == 5 * 2 * 32 ** 3
    grouped = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=2)
    assert common.matmul_flops(grouped, x, jnp.ones((3, 3, 4, 4))) == 2 * 2 * 16 * 16 * 4 * 36


def test_model_cost_prints_counts(capsys):
    _load("model_cost").main(["--tiny", "--height", "32", "--width", "48", "--frames", "2",
                              "--no-training"])
    out = capsys.readouterr().out
    assert "params: all" in out and "each further object" in out


def test_precision_agreement_on_a_checkpoint(tmp_path, tiny_model, capsys):
    from agame_jax.checkpoint import save_variables
    cfg, variables = tiny_model
    save_variables(tmp_path / "ckpt", variables, cfg)
    _load("precision_agreement").main(["--checkpoint", str(tmp_path / "ckpt"), "--videos", "1",
                                       "--frames", "3", "--size", "32"])
    out = capsys.readouterr().out
    assert "bfloat16: mean IoU over clips" in out and "float32 default precision" in out
