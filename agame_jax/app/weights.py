"""Which weights the app runs, where they come from, and the frame size they work at."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from agame_jax import DEMO_MODEL, checkpoint
from agame_jax.config import RESNET101_BLOCKS, ModelConfig

DEMO_WORK_SIZE = 128     # the demo model was trained on 128x128 frames
REAL_WORK_SIZE = 480     # DAVIS's 480p, what the authors' weights were trained and tested at


@dataclasses.dataclass(frozen=True)
class Weights:
    """A checkpoint as the page describes it: ``kind`` is ``"demo"``, ``"training"`` or
    ``"release"`` (a model checkpoint of the full-size network, as converted from the
    authors' release) or ``"checkpoint"``; ``summary`` one line for the page."""

    path: Path
    kind: str
    summary: str

    @property
    def work_size(self) -> int:
        """Default long side (pixels) frames are scaled to for the model."""
        return DEMO_WORK_SIZE if self.kind == "demo" else REAL_WORK_SIZE


def describe(path: Path | None) -> Weights:
    """Where the checkpoint at ``path`` comes from (``None``: the shipped demo model),
    told from its folder: the shipped one, a training workdir (``checkpoints/`` beside
    it, or a ``best/`` export), or a stand-alone model checkpoint."""
    if path is None:
        if not DEMO_MODEL.is_dir():
            raise FileNotFoundError(f"the demo model is not at {DEMO_MODEL} (a checkout of the "
                                    "project ships it); give --checkpoint DIR")
        path = DEMO_MODEL
    given = Path(path).absolute()
    resolved = checkpoint.resolve(given)
    if resolved.resolve() == DEMO_MODEL.resolve():
        return Weights(resolved, "demo", "the small model trained on synthetic videos that ships "
                       f"with the project ({resolved}): a demonstration of the pipeline, not a "
                       "segmenter for real footage")
    workdir = _workdir(resolved)
    if workdir is not None:
        return Weights(resolved, "training", f"a training run: {resolved.relative_to(workdir)} "
                       f"of the workdir {workdir}{_best_note(resolved)}")
    cfg = checkpoint.load_model_config(resolved)
    if tuple(cfg.backbone_blocks) == tuple(RESNET101_BLOCKS):
        return Weights(resolved, "release", f"a model checkpoint of the full-size network "
                       f"({resolved}), e.g. the authors' released weights converted with "
                       "python -m agame_jax.convert")
    return Weights(resolved, "checkpoint", f"a model checkpoint of a reduced network "
                   f"({resolved}, {_size(cfg)})")


def _workdir(resolved: Path) -> Path | None:
    """The training workdir holding this checkpoint, if it is one's step or ``best/``."""
    if resolved.parent.name == "checkpoints":
        return resolved.parent.parent
    if resolved.name == "best" and (resolved.parent / "checkpoints").is_dir():
        return resolved.parent
    return None


def _best_note(resolved: Path) -> str:
    info = resolved / "best.json"
    if not info.exists():
        return ""
    best = json.loads(info.read_text())
    return f", the best validation step {best.get('step')} (J&F {best.get('JF', 0):.2f})"


def _size(cfg: ModelConfig) -> str:
    return f"backbone blocks {tuple(cfg.backbone_blocks)}, width {cfg.backbone_width}"


def work_shape(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """The ``(H, W)`` frames of ``size`` are scaled to for the model: the long side at
    most ``long_side``, both sides multiples of 16 (the model's stride, so that the
    research trace runs on the same frames) and at least 32."""
    h, w = size
    scale = min(1.0, long_side / max(h, w))
    return tuple(max(32, int(round(s * scale / 16)) * 16) for s in (h, w))
