"""Training checkpoints: one module talks to orbax.

A step directory ``DIR/checkpoints/<step>/`` holds these orbax items:

  ``variables``     {"params", "batch_stats"}: what ``Segmenter``/``evaluate.py`` load;
  ``optimizer``     {"opt_state"} of the trainable parameters;
  ``data``          the grain iterator's state (JSON): where the input stream resumes;
  ``meta``          step, epoch, seed, validation history, best J&F (JSON);
  ``model_config``  the ``ModelConfig`` fields (JSON).

Orbax writes a step into a temporary directory and renames it when complete, so a run
killed while saving leaves no step that looks finished (``CheckpointManager`` ignores
and cleans the temporary ones). The best model by validation J&F is exported as a plain
variables checkpoint to ``DIR/best/`` (``agame_jax.checkpoint.save_variables``), again
written aside and renamed into place.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from agame_jax.config import ModelConfig

ITEMS = ("variables", "optimizer", "data", "meta", "model_config")


def _host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


class TrainCheckpointer:
    """Save and restore training state under ``directory`` (``DIR/checkpoints``)."""

    def __init__(self, directory: str | Path, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(1, keep), create=True,
                                               enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, variables: dict, opt_state, data_state: dict, meta: dict,
             model_config) -> None:
        """Write step ``step`` (blocks until it is complete on disk)."""
        cfg = ModelConfig.from_any(model_config)
        args = ocp.args.Composite(
            variables=ocp.args.StandardSave(_host(variables)),
            optimizer=ocp.args.StandardSave({"opt_state": _host(opt_state)}),
            data=ocp.args.JsonSave(_jsonable(data_state)),
            meta=ocp.args.JsonSave(meta),
            model_config=ocp.args.JsonSave(cfg.to_dict()))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, variables_template: dict, opt_state_template):
        """``(variables, opt_state, data_state, meta)`` of step ``step``, shaped as the
        templates (arrays or ``ShapeDtypeStruct``s)."""
        abstract = lambda tree: jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
        args = ocp.args.Composite(
            variables=ocp.args.StandardRestore(abstract(variables_template)),
            optimizer=ocp.args.StandardRestore({"opt_state": abstract(opt_state_template)}),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore())
        out = self.manager.restore(step, args=args)
        return (dict(out["variables"]), out["optimizer"]["opt_state"], _from_jsonable(out["data"]),
                out["meta"])

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


def export_best(workdir: str | Path, variables: dict, model_config, info: dict) -> Path:
    """Replace ``DIR/best`` by ``variables`` (written to ``DIR/best.tmp`` first)."""
    from agame_jax.checkpoint import save_variables
    workdir = Path(workdir).absolute()
    tmp, final = workdir / "best.tmp", workdir / "best"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_variables(tmp, _host(variables), model_config)
    (tmp / "best.json").write_text(json.dumps(info, indent=2))
    old = workdir / "best.old"
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    if old.exists():
        shutil.rmtree(old)
    return final
