"""The examples and the small model that ships with them."""
import runpy
import sys
from pathlib import Path

import pytest

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


@pytest.mark.slow
def test_look_inside_runs_and_draws_its_figures(monkeypatch):
    figures = ROOT / "examples" / "figures"
    monkeypatch.setattr(sys, "argv", ["look_inside.py"])
    runpy.run_path(str(ROOT / "examples" / "look_inside.py"), run_name="__main__")
    for name in ("posteriors", "drift_and_update_rate", "gradient_paths"):
        assert (figures / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
