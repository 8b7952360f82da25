"""The examples and the small model that ships with them."""
import runpy
import sys
from pathlib import Path


from agame_jax import checkpoint
from agame_jax.api import check_variables

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "examples" / "quickstart_model"


def test_the_shipped_model_is_the_quickstart_model():
    sys.path.insert(0, str(ROOT))
    try:
        from configs import quickstart
    finally:
        sys.path.remove(str(ROOT))
    cfg, variables = checkpoint.load_variables(SHIPPED)
    assert cfg == type(cfg).from_any(quickstart.get_config().model)
    check_variables(cfg, variables)
    info = (SHIPPED / "best.json").read_text()
    assert '"JF"' in info


def _run_example(name, monkeypatch, *args):
    """Run ``examples/NAME.py`` as a script (in this process: the imports are warm)."""
    monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")


def _assert_pngs(folder, *names):
    for name in names:
        assert (folder / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name


def test_mixture_alone_draws_and_checks_its_gradient(tmp_path, monkeypatch, capsys):
    _run_example("mixture_alone.py", monkeypatch, tmp_path)  # asserts the gradient check
    _assert_pngs(tmp_path, "mixture_alone")
    assert "largest relative difference" in capsys.readouterr().out


def test_my_variant_registers_trains_and_segments(tmp_path, monkeypatch, capsys):
    from agame_jax import appearance
    _run_example("my_variant.py", monkeypatch, "--tiny", "--steps", "2",
                 "--workdir", tmp_path)
    assert "two-gaussians" in appearance.registered()
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "two-gaussians" in out
    cfg, _ = checkpoint.load_variables(tmp_path)
    assert cfg.appearance == "two-gaussians"


def test_look_inside_draws_its_figures(tmp_path, monkeypatch, capsys):
    _run_example("look_inside.py", monkeypatch, "--quick", "--figures", tmp_path)
    _assert_pngs(tmp_path, "posteriors", "drift_and_update_rate", "gradient_paths")
    out = capsys.readouterr().out
    assert "appearance  via_features" in out
