"""Orbax checkpoints of model variables, with the model config beside them.

Layout of a variables checkpoint directory::

    DIR/model_config.json     the ModelConfig fields
    DIR/variables/            orbax StandardCheckpointer tree {"params", "batch_stats"}

``resolve`` also accepts a training step (``WORKDIR/checkpoints/<step>/``, whose
``variables`` item has the same layout and whose ``model_config/metadata`` holds the
config), a directory of numbered steps (the newest complete one is taken) or a training
workdir: its ``best/`` export (the best validation J&F) when there is one, else its
newest step.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from agame_jax.config import ModelConfig

CONFIG_FILE = "model_config.json"
VARIABLES_DIR = "variables"
STEP_CONFIG = Path("model_config") / "metadata"      # orbax JsonSave item of a train step


def save_variables(path: str | Path, variables, model_config) -> Path:
    """Write ``variables`` and ``model_config`` to ``path`` (created; must not exist)."""
    path = Path(path).absolute()
    cfg = ModelConfig.from_any(model_config)
    path.mkdir(parents=True, exist_ok=True)
    tree = {k: v for k, v in dict(variables).items() if k in ("params", "batch_stats")}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / VARIABLES_DIR, jax.tree_util.tree_map(np.asarray, tree))
        ckptr.wait_until_finished()
    # The config is written last: a directory without it is an unfinished save.
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(cfg.to_dict(), indent=2))
    tmp.replace(path / CONFIG_FILE)
    return path


def _config_file(path: Path) -> Path | None:
    for candidate in (path / CONFIG_FILE, path / STEP_CONFIG):
        if candidate.exists() and (path / VARIABLES_DIR).is_dir():
            return candidate
    return None


def resolve(path: str | Path, prefer: str = "best") -> Path:
    """The checkpoint directory that ``path`` names (see module docstring).

    For a training workdir, ``prefer="best"`` takes its ``best/`` export when there is
    one, ``prefer="latest"`` its newest step (where a run ended, e.g. to continue it).
    """
    if prefer not in ("best", "latest"):
        raise ValueError(f"prefer must be 'best' or 'latest', got {prefer!r}")
    path = Path(path).absolute()
    if _config_file(path):
        return path
    if prefer == "best" and _config_file(path / "best"):
        return path / "best"
    for base in (path / "checkpoints", path):
        if base.is_dir():
            steps = sorted((int(p.name), p) for p in base.iterdir()
                           if p.name.isdigit() and _config_file(p))
            if steps:
                return steps[-1][1]
    if _config_file(path / "best"):
        return path / "best"
    raise FileNotFoundError(f"{path}: no checkpoint found (expected {CONFIG_FILE} and "
                            f"{VARIABLES_DIR}/ there, a training workdir, or numbered step "
                            "directories)")


def load_model_config(path: str | Path) -> ModelConfig:
    """The ``ModelConfig`` saved with a checkpoint."""
    return ModelConfig.from_any(json.loads(_config_file(resolve(path)).read_text()))


def load_variables(path: str | Path, prefer: str = "best") -> tuple[ModelConfig, dict]:
    """``(model_config, variables)`` from a checkpoint directory (see ``resolve``)."""
    from agame_jax.api import variable_shapes
    path = resolve(path, prefer)
    cfg = load_model_config(path)
    target = variable_shapes(cfg)
    with ocp.StandardCheckpointer() as ckptr:
        variables = ckptr.restore(path / VARIABLES_DIR, target)
    return cfg, dict(variables)
