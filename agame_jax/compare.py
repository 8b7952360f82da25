"""Train appearance models and ablations at quickstart scale over seeds; tabulate and plot.

    python -m agame_jax.compare --models agame prototype ridge agame-em \\
        --ablations unimodal_appearance no_appearance_update --seeds 0 1 2 --out runs/compare

Each entry is ``configs/variant.py:NAME`` (a registered appearance model) or
``configs/ablation_SWITCH.py:quickstart`` (a Table 1 switch on the stock model): the
quickstart's synthetic videos and reduced network, trained with ``config.seed`` set to
each seed in ``OUT/NAME/seed_S`` (rerunning resumes or skips finished runs). The score
of a run is its best validation J&F (``best/best.json``). It prints a table of J&F
mean ± standard deviation over seeds (with J and F), writes it to ``OUT/compare.md`` and
``OUT/compare.json``, and plots it to ``OUT/compare.png``. ``--set FIELD=VALUE`` changes
any config field of every run (e.g. ``train.num_steps=400``).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config_for(entry: str, seed: int, overrides: list[str]):
    """The config of one run: ``entry`` is a registered appearance model or
    ``ablation:SWITCH``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))                 # the configs/ package
    if entry.startswith("ablation:"):
        config = importlib.import_module(f"configs.ablation_{entry[9:]}").get_config(
            "quickstart")
    else:
        config = importlib.import_module("configs.variant").get_config(entry)
    config.unlock()
    config.seed = seed
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants FIELD=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text                                # a bare string
        config.update_from_flattened_dict({key.strip(): value})
    config.lock()
    return config


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    """Per entry: ``runs``, ``JF``/``J``/``F`` means and ``JF_std`` (sample standard
    deviation over seeds; 0 for one run) from each run's best validation scores."""
    rows = []
    for name, runs in results.items():
        row = {"name": name, "runs": len(runs)}
        for key in ("JF", "J", "F"):
            values = [r[key] for r in runs]
            mean = sum(values) / len(values)
            row[key] = mean
            if key == "JF":
                row["JF_std"] = (math.sqrt(sum((v - mean) ** 2 for v in values)
                                           / (len(values) - 1)) if len(values) > 1 else 0.0)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """A markdown table of ``summarize``'s rows."""
    lines = ["| model | runs | J&F | J | F |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['runs']} | {r['JF']:.3f} ± {r['JF_std']:.3f} | "
              f"{r['J']:.3f} | {r['F']:.3f} |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """A bar chart of J&F with the standard deviation over seeds as error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2, 3.5))
    ax.bar(range(len(rows)), [r["JF"] for r in rows], yerr=[r["JF_std"] for r in rows],
           capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("validation J&F (best)")
    ax.set_title(f"quickstart scale, {max(r['runs'] for r in rows)} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(entries: list[str], seeds: list[int], out: Path, overrides: list[str],
        train=None, log=print) -> list[dict]:
    """Train every entry for every seed (skipping finished runs) and return
    ``summarize``'s rows; writes ``compare.md``/``.json``/``.png`` under ``out``."""
    if train is None:
        from agame_jax.train.loop import train_and_evaluate as train
    results: dict[str, list[dict]] = {}
    total, done, t0 = len(entries) * len(seeds), 0, time.perf_counter()
    for entry in entries:
        name = entry[len("ablation:"):] if entry.startswith("ablation:") else entry
        for seed in seeds:
            workdir = out / name / f"seed_{seed}"
            best = workdir / "best" / "best.json"
            config = config_for(entry, seed, overrides)
            if not (workdir / "finished").exists():
                log(f"[{done + 1}/{total}] {entry} seed {seed} → {workdir}")
                train(config, workdir)
                (workdir / "finished").write_text("")
            if not best.exists():
                raise RuntimeError(f"{workdir} has no validated model (best/best.json); "
                                   "does the config validate?")
            results.setdefault(name, []).append(json.loads(best.read_text()))
            done += 1
            log(f"    J&F {results[name][-1]['JF']:.4f}  ({done}/{total} runs, "
                f"{(time.perf_counter() - t0) / 60:.1f} min)")
    rows = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table(rows) + "\n")
    (out / "compare.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "compare.png")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["agame", "prototype", "ridge"],
                        help="registered appearance models")
    parser.add_argument("--ablations", nargs="*", default=[],
                        help="Table 1 switches of the stock model (e.g. unimodal_appearance)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a config field of every run (repeatable)")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help="import a module that registers models")
    args = parser.parse_args(argv)
    for module in args.imports:
        importlib.import_module(module)
    entries = list(args.models) + [f"ablation:{s}" for s in args.ablations]
    if not entries:
        parser.error("nothing to compare: give --models and/or --ablations")
    rows = run(entries, args.seeds, args.out, args.set)
    print(table(rows))
    print(f"wrote {args.out / 'compare.md'}, compare.json and compare.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
