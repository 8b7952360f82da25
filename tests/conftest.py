"""Test options: slow and GPU-only tests are skipped by default, with the reason."""
import os
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "authors_model"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import jax
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow test: run with --run-slow"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a GPU; JAX sees none"))


@pytest.fixture(scope="session")
def authors_state_dict():
    """The authors' state dict on the fixture's reproducible weights (seed 0)."""
    if not (FIXTURES / "weights.py").exists():
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    sys.path.insert(0, str(FIXTURES))
    try:
        from weights import make_state_dict
    finally:
        sys.path.remove(str(FIXTURES))
    return make_state_dict(0)


@pytest.fixture(scope="session")
def authors_model(authors_state_dict):
    """``(config, variables)`` converted from the authors' state dict."""
    from agame_jax.convert import convert_agame
    return convert_agame(authors_state_dict)
