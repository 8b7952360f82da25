"""Pick the speed settings that won an A/B run, for the next benchmark run to use.

    python benchmarks/pick_variants.py OUT_DIR/gpu_ab.log            # → overrides on stdout
    bash benchmarks/gpu_perf.sh OUT $(python benchmarks/pick_variants.py AB_DIR/gpu_ab.log)

Reads the log of ``benchmarks/gpu_ab.sh`` (or of any ``inference.py`` / ``train_step.py``
run with ``--variants``): each command's tables, with their rows of the default settings
(variant ``-``) and of the variants measured in the same process. A variant wins for its
kind of work (``inference`` rows in frames/s, ``train`` rows in snippets/s) when its
speed over the default's, geometric mean over the rows it shares with the default (object
counts, step shapes), is at least ``1 + margin`` and no row is slower than ``1 - margin``.
A training variant whose first-step loss or gradient norm (``train_step.py``'s ``loss``
and ``|grad|`` columns) moves more than ``tolerance`` from the default's, or an inference
variant whose label maps have a mean IoU below ``min_iou`` with the default's
(``inference.py``'s ``IoU vs first``), computes something else and is not picked.
Winners are combined best first, one value per ``ModelConfig`` field; settings that are
not ``ModelConfig`` fields (``unroll``) and commands run under other ``XLA_FLAGS`` are
reported, not picked.

Prints the picks as ``inference:KEY=VALUE`` / ``train:KEY=VALUE`` words (what
``gpu_perf.sh`` takes; nothing when the defaults stay) and the comparison on stderr. A
missing log is reported and picks nothing, so the benchmark that follows runs the defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from pathlib import Path

# Run as `$(python3 benchmarks/pick_variants.py LOG)` before gpu_env.sh sets PYTHONPATH.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agame_jax import ModelConfig  # noqa: E402

COMMAND = re.compile(r"^=== (?!exit |skipped|dry run|no time)(.*)$")


# Columns of result values that a variant changing only the speed keeps: train_step.py's
# first-step loss and gradient norm (compared with the default's), inference.py's mean IoU
# of the chunk's label maps against the first row's (the default's).
RESULT_COLUMNS = ("loss", "|grad|", "IoU vs first")


class Section:
    """One command of the log and the rows it printed: ``speeds[(kind, work key)]`` is
    ``{variant label: speed}``, ``results[(kind, work key)]`` ``{variant label: {column:
    value}}`` for the ``RESULT_COLUMNS`` the table has."""

    def __init__(self, command: str):
        self.command = command
        self.speeds: dict[tuple, dict[str, float]] = {}
        self.results: dict[tuple, dict[str, dict[str, float]]] = {}


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.split(" | ")]


def parse_log(text: str) -> list[Section]:
    """The commands of a ``gpu_*.sh`` log with the rows of their speed tables. A table is a
    header line with a ``variant`` column and a ``frames/s`` (inference) or ``snippets/s``
    (training) column, a ``-+-`` rule, then rows; a row printed twice (as measured, then
    in the closing table) counts once."""
    sections, header = [], None
    for line in text.splitlines():
        match = COMMAND.match(line)
        if match:
            sections.append(Section(match.group(1).strip()))
            header = None
            continue
        if not sections:
            continue
        cells = _cells(line)
        if (len(cells) > 2 and "variant" in cells
                and ("frames/s" in cells or "snippets/s" in cells)):
            header, n_cols = {name: i for i, name in enumerate(cells)}, len(cells)
            kind, speed_col = (("inference", "frames/s") if "frames/s" in header
                               else ("train", "snippets/s"))
            # The work a row measures: its columns before the timings, less the variant.
            first_timing = next((i for i, h in enumerate(cells) if h.startswith("ms/")),
                                header[speed_col])
            work_cols = [i for i, h in enumerate(cells[:first_timing]) if h != "variant"]
            result_cols = [c for c in RESULT_COLUMNS if c in header]
            continue
        if header is None or "-+-" in line:
            continue
        if len(cells) != n_cols:
            header = None                           # the table ended
            continue
        try:
            speed = float(cells[header[speed_col]])
        except ValueError:
            continue
        work = tuple(cells[i] for i in work_cols)
        results = {c: float(cells[header[c]]) for c in result_cols if cells[header[c]] != "-"}
        label = cells[header["variant"]]
        sections[-1].speeds.setdefault((kind, work), {})[label] = speed
        sections[-1].results.setdefault((kind, work), {})[label] = results
    return sections


def _settings(label: str) -> dict | None:
    """``"dilated_conv=im2col stem_conv=space_to_depth"`` → fields; None when a setting is
    not a ``ModelConfig`` field (e.g. ``unroll=4``)."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    parts = re.split(r" (?![^()]*\))", label.strip())      # "(1, 2)" is one value
    items = dict(part.partition("=")[::2] for part in parts)
    return items if items and all(k in fields for k in items) else None


def _same_results(value: float, base: float | None, column: str, tolerance: float,
                  min_iou: float) -> bool:
    if column == "IoU vs first":
        return value >= min_iou
    return base is None or abs(value - base) <= tolerance * abs(base)


def compare(sections: list[Section], margin: float, tolerance: float = 0.05,
            min_iou: float = 0.9, report=print) -> dict[str, dict]:
    """``{kind: {field: value}}`` of the winning variants (see the module docstring); a
    variant whose loss or gradient norm differs from the default's by more than
    ``tolerance`` (relative), or whose labels' IoU with the default's is below
    ``min_iou``, on any row, is not picked."""
    # kind -> variant label -> [speed ratio per row]
    ratios: dict[str, dict[str, list[float]]] = {}
    differs: set[tuple[str, str]] = set()
    for section in sections:
        if "XLA_FLAGS=" in section.command:
            continue
        for (kind, work), speeds in section.speeds.items():
            if "-" not in speeds:
                continue
            results = section.results[(kind, work)]
            for label, speed in speeds.items():
                if label == "-":
                    continue
                ratios.setdefault(kind, {}).setdefault(label, []).append(speed / speeds["-"])
                for column, value in results[label].items():
                    base = results["-"].get(column)
                    if not _same_results(value, base, column, tolerance, min_iou):
                        differs.add((kind, label))
                        report(f"{kind:9s} {label:40s} {column} {value:.6g} against the "
                               f"default's {'-' if base is None else f'{base:.6g}'} on "
                               f"{' '.join(work)}")
    picks = {}
    for kind, by_label in sorted(ratios.items()):
        scored = []
        for label, rs in by_label.items():
            mean = math.exp(sum(math.log(r) for r in rs) / len(rs))
            settings = _settings(label)
            wins = mean >= 1 + margin and min(rs) >= 1 - margin
            verdict = ("not a model setting" if settings is None
                       else "results differ" if (kind, label) in differs
                       else "wins" if wins else "no gain")
            wins = wins and (kind, label) not in differs
            report(f"{kind:9s} {label:40s} x{mean:.3f} over the default "
                   f"(rows: {', '.join(f'{r:.3f}' for r in rs)}): {verdict}")
            if settings is not None and wins:
                scored.append((mean, settings))
        chosen: dict = {}
        for _, settings in sorted(scored, key=lambda s: -s[0]):
            if not set(settings) & set(chosen):
                chosen.update(settings)
        picks[kind] = chosen
    _report_flags(sections, report)
    return picks


def _report_flags(sections: list[Section], report) -> None:
    """Rows of commands run under ``XLA_FLAGS``, against the same rows' default setting in
    the first command without it (for the record; flags are not picked)."""
    plain: dict = {}
    for section in sections:
        if "XLA_FLAGS=" not in section.command:
            for key, speeds in section.speeds.items():
                if "-" in speeds:
                    plain.setdefault(key, speeds["-"])
    for section in sections:
        flags = re.search(r"XLA_FLAGS=(\S*(?: --\S+)*)", section.command)
        if not flags:
            continue
        for key, speeds in section.speeds.items():
            if "-" in speeds and key in plain:
                report(f"{key[0]:9s} {' '.join(key[1])}: XLA_FLAGS={flags.group(1).strip()} "
                       f"x{speeds['-'] / plain[key]:.3f} over the same row without")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", help="gpu_ab.sh's log (or any benchmark log with --variants)")
    parser.add_argument("--margin", type=float, default=0.02,
                        help="least relative gain to pick a variant (and most loss on any row)")
    parser.add_argument("--tolerance", type=float, default=0.05,
                        help="most relative change of the loss or gradient norm (training rows)")
    parser.add_argument("--min-iou", type=float, default=0.9,
                        help="least IoU of a variant's labels with the default's (inference "
                             "rows; rounding moves near ties only, a broken variant more)")
    args = parser.parse_args(argv)
    report = lambda msg: print(msg, file=sys.stderr)
    path = Path(args.log)
    if not path.exists():
        report(f"pick_variants: {path} not found; keeping the defaults")
        return
    picks = compare(parse_log(path.read_text(errors="replace")), args.margin, args.tolerance,
                    args.min_iou, report)
    # no spaces inside a word: the picks are meant for $(...) on a command line
    words = [f"{kind}:{k}={v.replace(' ', '')}"
             for kind, chosen in picks.items() for k, v in chosen.items()]
    report(f"picked: {' '.join(words) or 'nothing (the defaults stay)'}")
    print(" ".join(words))


if __name__ == "__main__":
    main()
