"""What a training run reports: a progress line, ``metrics.jsonl`` and TensorBoard."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class MetricLogger:
    """Writes scalars to ``DIR/metrics.jsonl`` (one JSON object per call) and to
    TensorBoard (``DIR/tensorboard``, through tensorboardX); only on process 0.

    TensorBoard is optional: without tensorboardX a one-line warning is printed and
    only the JSON lines are written.
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
            except ImportError:
                print("warning: tensorboardX is not installed; TensorBoard summaries are off",
                      file=sys.stderr)

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, int(step))

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An ``[H, W, 3]`` uint8 picture (TensorBoard only)."""
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, image, int(step), dataformats="HWC")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if hasattr(v, "item") and np.ndim(v) == 0:
        return v.item()
    return v


class Progress:
    """Periodic progress lines: step, loss, lr, snippets/s and the time left."""

    def __init__(self, total_steps: int, start_step: int, batch_size: int, enabled: bool = True,
                 stream=None):
        # ``None``: whatever ``sys.stdout`` is when a line is printed (a default bound at
        # import time would keep writing to a stream that was replaced and closed since).
        self.total, self.batch, self.enabled, self.stream = total_steps, batch_size, enabled, stream
        self.last_step, self.last_time = start_step, time.perf_counter()

    def line(self, step: int, scalars: dict, first: bool = False) -> dict:
        """Print one line for ``step`` (the number of steps done); returns the rates.

        ``first``: the run's first step, which includes compilation; its time is
        reported as such and kept out of the rate and the ETA."""
        now = time.perf_counter()
        steps = max(step - self.last_step, 1)
        seconds = now - self.last_time
        rate = self.batch * steps / max(seconds, 1e-9)
        eta = (self.total - step) * seconds / steps
        self.last_step, self.last_time = step, now
        if self.enabled:
            parts = [f"step {step}/{self.total}", f"loss {scalars['loss']:.4f}"]
            if "loss_coarse" in scalars:
                parts[-1] += f" (fine {scalars['loss_fine']:.4f}, coarse {scalars['loss_coarse']:.4f})"
            parts.append(f"lr {scalars['learning_rate']:.2e}")
            if scalars.get("skipped_steps"):
                parts.append(f"{scalars['skipped_steps']:.0f} non-finite steps skipped")
            if first:
                parts.append(f"compile + first step {seconds:.1f} s")
            else:
                parts += [f"{rate:.2f} snippets/s", f"ETA {format_duration(eta)}"]
            print(" | ".join(parts), file=self.stream or sys.stdout, flush=True)
        return {} if first else {"snippets_per_s": rate}
