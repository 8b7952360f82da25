"""The benchmark scripts run (tiny settings, CPU) and print their tables."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_row(out: str) -> dict:
    """The last row of the last table printed, by its header's column names."""
    lines = out.splitlines()
    rule = max(i for i, line in enumerate(lines) if "-+-" in line)
    header = [c.strip() for c in lines[rule - 1].split("|")]
    last = [line for line in lines[rule + 1:] if " | " in line][-1]
    return dict(zip(header, [c.strip() for c in last.split("|")]))


def test_inference_benchmark_prints_its_rows(tmp_path, capsys):
    _load("inference").main(["--tiny", "--height", "32", "--width", "48", "--frames", "2",
                             "--objects", "2", "--dtype", "float32", "--repeats", "1",
                             "--stream", "5", "--stream-size", "30x40", "--stream-videos", "2",
                             "--profile", str(tmp_path)])
    out = capsys.readouterr().out
    assert "encode float32" in out and "float32 1v 2obj" in out
    assert "Segmenter.stream_many end to end" in out and "2x(1-5)x30x40" in out
    row = _table_row(out.split("Segmenter.stream_many")[0])
    assert row["objects"] == "2" and float(row["frames/s"]) > 0
    # Each timed program's trace comes with its HLO (for profile_summary's attribution).
    assert len(list(tmp_path.glob("*/program.hlo.txt"))) == 2
    assert list(tmp_path.glob("*/plugins/profile/*/*perfetto_trace.json.gz"))
    _load("profile_summary").main([str(tmp_path)])          # a real (CPU) trace reads
    assert "top kernels:" in capsys.readouterr().out


def test_train_step_benchmark_prints_its_rows(capsys):
    _load("train_step").main(["--tiny", "--batch", "1", "--frames", "2", "--height", "32",
                              "--width", "32", "--dtype", "float32", "--repeats", "1",
                              "--remat", "yes"])
    out = capsys.readouterr().out
    row = _table_row(out)
    assert row["remat"] == "yes" and float(row["snippets/s"]) > 0
    assert float(row["loss"]) > 0 and float(row["grad norm"]) > 0


def test_a_failing_flop_count_or_trace_leaves_the_row_its_speed(tmp_path, monkeypatch,
                                                                capsys):
    """The FLOP count and the trace read JAX internals that a newer JAX on the GPU
    machine may change: their failure is a warning and a "-", not a lost row."""
    module = _load("train_step")

    def broken(*_, **__):
        raise AttributeError("internals moved")
    monkeypatch.setattr(module, "matmul_flops", broken)
    monkeypatch.setattr(module, "profile_calls", broken)
    # The program of the test above (remat on): a compilation cache hit.
    module.main(["--tiny", "--batch", "1", "--frames", "2", "--height", "32", "--width", "32",
                 "--dtype", "float32", "--repeats", "1", "--remat", "yes",
                 "--profile", str(tmp_path)])
    out, err = capsys.readouterr()
    assert err.count("failed and is left out: AttributeError: internals moved") == 2
    row = _table_row(out)
    assert row["TFLOP/s"] == "-" and row["MFU"] == "-" and float(row["snippets/s"]) > 0


def test_cpu_vs_authors_prints_both_sides_and_the_ratios(tmp_path, capsys):
    """Our side on a reduced model, the authors' side a stand-in printing their script's
    JSON lines (faster in its second round): the table keeps each side's best round,
    pairs the rows and divides."""
    fake = tmp_path / "authors_speed.py"
    fake.write_text(
        "import json, pathlib\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = len(runs.read_text()) if runs.exists() else 0\n"
        "runs.write_text('x' * (n + 1))\n"
        "print(json.dumps({'side': 'authors', 'work': 'video', 'objects': 1, 'fps': 1.0 + n}))\n"
        "print(json.dumps({'side': 'authors', 'work': 'train', 'clips_per_s': 0.5 - n / 4}))\n")
    (tmp_path / "tools").mkdir()
    fake.rename(tmp_path / "tools" / "authors_speed.py")
    _load("cpu_vs_authors").main([
        "--tiny", "--authors-python", sys.executable, "--agame-root", str(tmp_path),
        "--shared", str(tmp_path), "--objects", "1", "--frames", "1", "--height", "32",
        "--width", "48", "--train-batch", "1", "--train-frames", "2", "--train-height", "32",
        "--train-width", "32", "--repeats", "1", "--rounds", "2"])
    out = capsys.readouterr().out
    assert (tmp_path / "runs").read_text() == "xx"
    video = next(line for line in out.splitlines() if line.strip().startswith("video, 1 obj"))
    train = next(line for line in out.splitlines() if line.strip().startswith("train pass"))
    _, _, theirs, ours, ratio = [c.strip() for c in video.split("|")]
    assert theirs == "2" and float(ratio) == pytest.approx(float(ours) / 2, rel=1e-2)
    _, _, theirs, ours, ratio = [c.strip() for c in train.split("|")]
    assert theirs == "0.5" and float(ratio) == pytest.approx(float(ours) / 0.5, rel=1e-2)


def test_gpu_script_is_valid_bash():
    import subprocess
    subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")], check=True)


def test_data_pipeline_benchmark_prints_table(capsys):
    _load("data_pipeline").main(["--config", str(BENCH.parent / "configs" / "quickstart.py"),
                                 "--threads", "1", "--batches", "2", "--set",
                                 "data.height=32", "data.width=32", "data.min_start_pixels=20",
                                 "data.hflip=False"])
    out = capsys.readouterr().out
    assert "clips/s" in out and "4x32x32" in out


def test_matmul_flops_counts_loops_per_iteration_and_matches_xla_without_loops():
    import jax
    import jax.numpy as jnp
    flop_count = _load("flop_count")
    x = jnp.ones((2, 16, 16, 8))
    k = jnp.ones((3, 3, 8, 4))
    conv = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert flop_count.matmul_flops(conv, x, k) == 2 * 2 * 16 * 16 * 4 * (3 * 3 * 8)
    # XLA skips the taps that fall on the zero padding; on a larger map that is ~2%.
    big = jnp.ones((2, 64, 64, 8))
    xla = jax.jit(conv).lower(big, k).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    assert abs(flop_count.matmul_flops(conv, big, k) - xla["flops"]) / xla["flops"] < 0.05
    a = jnp.ones((32, 32))
    looped = lambda a: jax.lax.scan(lambda c, _: (c @ a, None), a, None, length=5)[0]
    assert flop_count.matmul_flops(jax.jit(looped), a) == 5 * 2 * 32 ** 3
    grouped = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=2)
    assert flop_count.matmul_flops(grouped, x, jnp.ones((3, 3, 4, 4))) == 2 * 2 * 16 * 16 * 4 * 36


def test_model_cost_prints_counts(capsys):
    _load("model_cost").main(["--tiny", "--height", "32", "--width", "48", "--frames", "2",
                              "--no-training", "--audit", "--model", "pyramid_dilations=(1, 2)"])
    out = capsys.readouterr().out
    assert "params: all" in out and "each further object" in out
    assert "bfloat16 inference chunk, 1 object, 2 frames: " in out
    assert "appearance._fit" in out                       # the float32 mixture fit


def test_precision_audit_counts_non_bfloat16_work_per_scope():
    import jax
    import jax.numpy as jnp
    flop_count = _load("flop_count")
    x16 = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
    k16 = jnp.ones((3, 3, 4, 4), jnp.bfloat16)
    a32 = jnp.ones((16, 16), jnp.float32)

    def fn(x, k, a):
        with jax.named_scope("convs"):
            y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        with jax.named_scope("loop"):
            b = jax.lax.scan(lambda c, _: (jnp.dot(c, a, precision="highest"), None), a,
                             None, length=3)[0]
        return y, b
    conv_flops, dot_flops = 2 * 2 * 8 * 8 * 4 * 36, 3 * 2 * 16 ** 3
    share, rows = flop_count.precision_audit(fn, x16, k16, a32)
    assert share == dot_flops / (conv_flops + dot_flops)
    assert len(rows) == 1
    percent, gflop, op, operands, precision, scope = rows[0]
    assert (gflop, op, operands, precision) == (dot_flops / 1e9, "dot", "float32 x float32",
                                                "HIGHEST,HIGHEST")
    assert scope.startswith("loop")


def test_bfloat16_programs_leave_bfloat16_only_where_intended(tiny_model):
    """The bfloat16 model's matrix work is bfloat16 x bfloat16 except the float32 parts
    kept on purpose: the mixture fits, the BatchNorm running averages and the backward
    of the fusion module's float32 appearance-score term (elementwise forward). A new
    float32 product in the bfloat16 path (on GPUs: CUDA cores or TF32 instead of
    bfloat16 tensor cores, as the fusion conv once was, and the backward of the 1x1
    mask-propagation terms) fails here."""
    import dataclasses
    import jax
    import jax.numpy as jnp
    from agame_jax import split_params
    from agame_jax.model.agame import AGame
    train_step = _load("train_step")
    cfg, variables = tiny_model
    cfg = dataclasses.replace(cfg, dtype="bfloat16")
    frames = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.uint8)
    chunk_fn, *chunk_args = _load("model_cost").chunk_program(AGame(cfg), variables, frames, 2)
    trainable, frozen = split_params(variables["params"], cfg)
    programs = {
        "chunk": (chunk_fn, chunk_args),
        "train": (train_step.make_step(cfg), (
            trainable, frozen, variables["batch_stats"],
            jax.ShapeDtypeStruct((1, 3, 32, 48, 3), jnp.uint8),
            jax.ShapeDtypeStruct((1, 3, 32, 48), jnp.uint8)))}
    # Training also has "t,tc->c", layer4's BatchNorm running averages ([T] x [T, C]
    # float32), and the backward of fusion's elementwise float32 appearance-score term
    # (two small products over its shifted inputs).
    intended = {"chunk": ("appearance._fit",),
                "train": ("appearance._fit", "t,tc->c", "fusion/layer00.part")}
    for name, (fn, args) in programs.items():
        share, rows = _load("flop_count").precision_audit(fn, *args, top=100)
        assert rows, name                                  # the intended float32 parts
        for _, _, _, operands, _, scope in rows:
            assert any(s in scope for s in intended[name]), (name, operands, scope)


def test_precision_agreement_on_a_checkpoint(tmp_path, tiny_model, capsys):
    from agame_jax.checkpoint import save_variables
    cfg, variables = tiny_model
    save_variables(tmp_path / "ckpt", variables, cfg)
    _load("precision_agreement").main(["--checkpoint", str(tmp_path / "ckpt"), "--videos", "1",
                                       "--frames", "3", "--size", "32"])
    out = capsys.readouterr().out
    assert "bfloat16: mean IoU over clips" in out and "float32 default precision" in out


def test_profile_summary_attributes_kernels_to_source_scopes(tmp_path, capsys):
    """A GPU-like trace (device stream, kernels with ``hlo_op``) and the program's HLO:
    kernel time is summed per kernel and per module scope, forward and backward apart."""
    import gzip
    import json
    summary = _load("profile_summary")
    (tmp_path / "program.hlo.txt").write_text(
        'ENTRY %main {\n'
        '  %cudnn-conv.1 = (bf16[2,4]{1,0}, u8[0]{0}) custom-call(%a, %b), window={size=3x3}, '
        'metadata={op_name="jit(step)/jvp(AGame.encode)/backbone/layer4_1/conv2/'
        'conv_general_dilated" source_file="x.py" source_line=3}\n'
        '  ROOT %fusion.7 = bf16[2,4]{1,0} fusion(%c), kind=kLoop, calls=%f, '
        'metadata={op_name="jit(step)/transpose(jvp(AGame.encode))/backbone/layer4_1/conv2/'
        'conv_general_dilated"}\n}\n')
    trace_dir = tmp_path / "plugins" / "profile" / "run"
    trace_dir.mkdir(parents=True)
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "Stream #7"}}]
    kernels = [{"ph": "X", "pid": 1, "tid": 7, "ts": ts, "dur": dur, "name": name,
                "args": {"hlo_op": op}}
               for ts, dur, name, op in [(0, 30, "sm90_xmma_fprop", "cudnn-conv.1"),
                                         (40, 60, "convolve_common_engine", "fusion.7"),
                                         (100, 10, "convolve_common_engine", "fusion.7")]]
    with gzip.open(trace_dir / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": meta + kernels}, f)
    summary.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "busy 0.10 ms" in out                  # 0–30, 40–110: 100 µs busy of 110
    assert "kernels busy 0.10 ms (90.9%), 3 events, 0.10 ms" in out
    assert next(l for l in out.splitlines() if "convolve_common_engine" in l).split()[:3] == [
        "70.0%", "0.070", "ms"]
    lines = out.splitlines()
    bwd = next(l for l in lines if l.strip().endswith("bwd AGame.encode/backbone/layer4_1/conv2"))
    fwd = next(l for l in lines if l.strip().endswith("fwd AGame.encode/backbone/layer4_1/conv2"))
    assert bwd.split()[0] == "70.0%" and fwd.split()[0] == "30.0%"
    assert summary.scope_of("/while/body/closed_call/vmap(AGame.predict_object)/mask_prop/"
                            "layer01_conv2/conv_general_dilated") == \
        "fwd AGame.predict_object/mask_prop/layer01_conv2"


def test_random_variables_match_init_in_structure_and_distribution():
    import jax
    import numpy as np
    from agame_jax import init_variables
    common = _load("common")
    cfg = common.model_config("float32", True)
    fast = common.random_variables(cfg)
    real = init_variables(cfg, jax.random.key(0))
    assert jax.tree_util.tree_structure(fast) == jax.tree_util.tree_structure(real)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(fast)[0],
                            jax.tree_util.tree_leaves(real)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, path
        if path[-1].key == "kernel" and b.size >= 256:
            assert 0.7 < a.std() / b.std() < 1.3, path     # lecun_normal is truncated
        elif path[-1].key != "kernel":
            np.testing.assert_array_equal(a, b, err_msg=str(path))


def test_label_iou_against_hand_counts():
    import numpy as np
    label_iou = _load("precision_agreement").label_iou
    a = np.array([[1, 1, 0], [2, 0, 0]])
    b = np.array([[1, 0, 0], [2, 2, 0]])
    # object 1: 1 shared of 2 pixels; object 2: 1 of 2; object 3 in neither map: agree.
    assert label_iou(a, b, [1, 2, 3]) == (0.5 + 0.5 + 1.0) / 3
    keep = np.array([[True, False, True], [True, True, True]])      # drop a's extra 1
    assert label_iou(a, b, [1], keep=keep) == 1.0
    assert label_iou(a, a, [1, 2]) == 1.0 and label_iou(a, np.zeros_like(a), [1]) == 0.0
