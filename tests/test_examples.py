"""The examples and the small model that ships with them."""
import runpy
import sys
from pathlib import Path


from agame_jax import DEMO_MODEL, checkpoint
from agame_jax.api import check_variables

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = DEMO_MODEL


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



def test_the_package_data_ships_every_file_of_the_demo_model():
    """A wheel carries what ``package-data`` names: every file of the checkpoint must be
    matched, or the app and the examples lose their model when installed from one."""
    import tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["agame_jax"]
    package = ROOT / "agame_jax"
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    files = {p for p in DEMO_MODEL.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files <= shipped, sorted(map(str, files - shipped))

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
