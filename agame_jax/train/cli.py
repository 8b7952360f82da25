"""Command line of ``train.py`` (absl flags + ml_collections config files)."""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from agame_jax.data.clips import DataError
from agame_jax.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/NAME.py, or configs/NAME.py:ARG); any field can be "
    "overridden with --config.FIELD=VALUE.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and config.json "
    "(default: runs/<config name>).")


def _default_workdir(argv) -> str:
    spec = flags.FLAGS["config"].config_filename or "run"
    return str(Path("runs") / Path(spec.split(":")[0]).stem)


def _main(argv) -> int:
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    logging.set_verbosity(logging.WARNING)         # orbax and jax log every save at INFO
    workdir = _WORKDIR.value or _default_workdir(argv)
    try:
        train_and_evaluate(_CONFIG.value, workdir)
    except (DataError, FileNotFoundError, ValueError, ImportError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume from the last checkpoint in "
              f"{workdir}/checkpoints", file=sys.stderr)
        return 130
    return 0


def main() -> None:
    flags.mark_flag_as_required("config")
    app.run(lambda argv: sys.exit(_main(argv)))
