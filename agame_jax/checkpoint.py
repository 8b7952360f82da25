"""Checkpoints: the one module that talks to orbax.

Two kinds of directory:

* a **model checkpoint** (what ``convert``, ``Segmenter.from_checkpoint``, ``evaluate.py``
  and a training run's ``best/`` use)::

      DIR/model_config.json     the ModelConfig fields
      DIR/variables/            orbax tree {"params", "batch_stats"}

* a **training step** ``WORKDIR/checkpoints/<step>/`` (``TrainCheckpointer``), orbax items
  ``variables`` (the same tree), ``optimizer`` ({"opt_state"} of the trainable
  parameters), ``data`` (the grain iterator's state: where the input stream resumes),
  ``meta`` (step, validation history, best J&F) and ``model_config``.

``resolve`` finds either from a path: a model checkpoint, a step, a directory of numbered
steps (the newest complete one) or a training workdir (its ``best/`` export when there is
one, else its newest step). Writes are atomic: orbax writes a step aside and renames it
when complete (``CheckpointManager`` ignores and cleans unfinished ones), a model
checkpoint's config is written last, and ``best/`` is written aside and renamed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from agame_jax.api import check_variables, variable_shapes
from agame_jax.config import ModelConfig

CONFIG_FILE = "model_config.json"
VARIABLES_DIR = "variables"
STEP_CONFIG = Path("model_config") / "metadata"      # orbax JsonSave item of a train step
STEP_ITEMS = ("variables", "optimizer", "data", "meta", "model_config")


def _host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _abstract(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def save_variables(path: str | Path, variables, model_config) -> Path:
    """Write ``variables`` and ``model_config`` as a model checkpoint at ``path``."""
    path = Path(path).absolute()
    cfg = ModelConfig.from_any(model_config)
    path.mkdir(parents=True, exist_ok=True)
    tree = {k: v for k, v in dict(variables).items() if k in ("params", "batch_stats")}
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / VARIABLES_DIR, _host(tree))
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
    """The checkpoint directory that ``path`` names (see the module docstring).

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
    path = resolve(path, prefer)
    cfg = load_model_config(path)
    with ocp.StandardCheckpointer() as ckptr:
        stored = _readable(path, lambda: ckptr.metadata(path / VARIABLES_DIR).item_metadata)
        check_variables(cfg, stored.tree if hasattr(stored, "tree") else stored)
        variables = _readable(path, lambda: ckptr.restore(path / VARIABLES_DIR,
                                                          variable_shapes(cfg)))
    return cfg, dict(variables)


def _readable(path: Path, read):
    """``read()``, with any failure of the files under ``path`` (truncated, deleted) as one
    ``CheckpointError`` naming it."""
    try:
        return read()
    except Exception as e:              # orbax and tensorstore raise many types for damage
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete ({_reason(e)})") from e


def _reason(error: Exception) -> str:
    """An exception as one short line."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def export_best(workdir: str | Path, variables: dict, model_config, info: dict) -> Path:
    """Replace ``WORKDIR/best`` by a model checkpoint of ``variables`` with ``best.json``
    (``info``) beside it, written to ``WORKDIR/best.tmp`` first."""
    workdir = Path(workdir).absolute()
    tmp, final, old = workdir / "best.tmp", workdir / "best", workdir / "best.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_variables(tmp, variables, model_config)
    (tmp / "best.json").write_text(json.dumps(info, indent=2))
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    if old.exists():
        shutil.rmtree(old)
    return final


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (damaged, or none intact)."""


class TrainCheckpointer:
    """Save and restore training steps under ``directory`` (``WORKDIR/checkpoints``),
    keeping the newest ``keep``."""

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                               enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=STEP_ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The complete (committed) steps on disk, oldest first."""
        return sorted(self.manager.all_steps())

    def restore_newest_intact(self, variables_template: dict, opt_state_template, log=print):
        """``(step, (variables, opt_state, data_state, meta))`` of the newest step that
        restores; each damaged one (a truncated or deleted file) is reported by ``log`` in
        one line naming it. Raises ``CheckpointError`` when none restores."""
        damaged = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(step, variables_template, opt_state_template)
            except Exception as e:      # orbax and tensorstore raise many types for damage
                log(f"warning: checkpoint {self.directory / str(step)} is damaged and is "
                    f"skipped ({_reason(e)})")
                damaged.append(step)
                continue
            # Out of the way (kept, not deleted), so that training can write those steps.
            for bad in damaged:
                target = self.directory / f"damaged_{bad}"
                (self.directory / str(bad)).replace(target)
                log(f"moved the damaged checkpoint to {target}")
            if damaged:
                self.manager.reload()
            return step, restored
        raise CheckpointError(f"no intact checkpoint in {self.directory} (damaged: "
                              f"{', '.join(map(str, damaged))}); move the directory away to "
                              "start over")

    def save(self, step: int, variables: dict, opt_state, data_state: dict, meta: dict,
             model_config) -> None:
        """Write step ``step`` (blocks until it is complete on disk)."""
        args = ocp.args.Composite(
            variables=ocp.args.StandardSave(_host(variables)),
            optimizer=ocp.args.StandardSave({"opt_state": _host(opt_state)}),
            data=ocp.args.JsonSave(_jsonable(data_state)),
            meta=ocp.args.JsonSave(meta),
            model_config=ocp.args.JsonSave(ModelConfig.from_any(model_config).to_dict()))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, variables_template: dict, opt_state_template):
        """``(variables, opt_state, data_state, meta)`` of step ``step``, shaped as the
        templates (arrays or ``ShapeDtypeStruct``s)."""
        args = ocp.args.Composite(
            variables=ocp.args.StandardRestore(_abstract(variables_template)),
            optimizer=ocp.args.StandardRestore({"opt_state": _abstract(opt_state_template)}),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return (dict(out["variables"]), out["optimizer"]["opt_state"],
                _from_jsonable(out["data"]), out["meta"])

    def close(self) -> None:
        self.manager.close()


def _jsonable(state):
    """Grain iterator states are dicts of ints/strings; bytes (if any) become hex."""
    if isinstance(state, bytes):
        return {"__bytes__": state.hex()}
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_jsonable(v) for v in state]
    return state


def _from_jsonable(state):
    if isinstance(state, dict):
        if set(state) == {"__bytes__"}:
            return bytes.fromhex(state["__bytes__"])
        return {k: _from_jsonable(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_from_jsonable(v) for v in state]
    return state
