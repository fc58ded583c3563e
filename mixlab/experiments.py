"""Run grids of experiments with caching, and collect their metrics into tables.

A run lives in ``runs_dir/<experiment>/<name>/seed<seed>/`` (checkpoints, logs, snapshots: git-ignored);
its small files (metrics, config, log) are copied to ``results_dir/<experiment>/<name>-seed<seed>/``
(committed); relative folders are taken from the workbook root (:mod:`mixlab.paths`). A run whose config is unchanged
and finished is not trained again unless ``force`` (:mod:`mixlab.cache`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from mixlab import config as config_mod
from mixlab import cache, engine, io, paths
from mixlab.provenance import provenance

METRICS = ("acc", "nmi", "ari", "ami")


def run_dir(experiment: str, name: str, seed: int, runs_dir="runs") -> Path:
    return paths.resolve(runs_dir) / experiment / name / f"seed{seed}"


def run(experiment: str, name: str, method: str, *, profile: str, seed: int, overrides: dict | None = None,
        runs_dir: str | Path = "runs", results_dir: str | Path = "results", force: bool = False) -> dict:
    """Train (or reuse) one run and publish its metrics; returns the metrics with ``run_dir``."""
    overrides = {s: dict(v) for s, v in (overrides or {}).items()}
    overrides.setdefault("train", {})["seed"] = seed
    cfg = config_mod.resolve(method, profile, overrides)
    out = run_dir(experiment, name, seed, runs_dir)
    done = out / "metrics.json"
    if force or not cache.is_current(out / "config.json", cfg.to_dict(), outputs=[done]):
        if out.exists():
            shutil.rmtree(out)
        engine.train(cfg, out)
    published = paths.resolve(results_dir) / experiment / f"{name}-seed{seed}"
    published.mkdir(parents=True, exist_ok=True)
    for f in ("metrics.json", "config.json", "log.jsonl"):
        shutil.copyfile(out / f, published / f)
    metrics = json.loads(done.read_text())
    return {**metrics, "name": name, "run_dir": str(out)}


def summarize(rows: list[dict], by: str = "name", metrics=METRICS):
    """Mean and standard deviation (over seeds) of each metric, one row per ``by`` value."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    metrics = [m for m in metrics if m in frame]
    agg = frame.groupby(by, sort=False)[list(metrics)].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["seeds"] = frame.groupby(by, sort=False).size()
    agg["wall_time_s"] = frame.groupby(by, sort=False)["wall_time_s"].mean().round(1)
    return agg.fillna(0.0)


def mean_std(row, metric: str) -> str:
    """``mean ± std`` in percent; the mean alone when ``row`` has one seed (no spread to show);
    "–" where the row has no value (a baseline without a probe)."""
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if mean != mean:  # NaN != NaN
        return "–"
    return f"{100 * mean:.1f}" if int(row["seeds"]) <= 1 else f"{100 * mean:.1f} ± {100 * std:.1f}"


def seeds_label(seeds) -> str:
    """``"1 seed"`` or ``"3 seeds, mean ± std"`` for a title, from a seed list or a count."""
    n = seeds if isinstance(seeds, int) else len(seeds)
    return "1 seed" if n == 1 else f"{n} seeds, mean ± std"


def format_table(table, metrics=("acc", "nmi", "ari"), extra: tuple[str, ...] = ()) -> str:
    """Markdown table with ``mean ± std`` cells (percent; see :func:`mean_std`), then any ``extra``
    columns as they are."""
    head = "| run | " + " | ".join(m.upper() for m in metrics) + " | seeds | s/run |" + "".join(f" {e} |" for e in extra)
    lines = [head, "|" + "---|" * (len(metrics) + 3 + len(extra))]
    for name, row in table.iterrows():
        cells = [mean_std(row, m) for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {int(row['seeds'])} | {row['wall_time_s']} |"
                     + "".join(f" {row[e]} |" for e in extra))
    return "\n".join(lines) + "\n"


def show_table(table, profile: str, metrics=("acc", "nmi", "ari"), extra: tuple[str, ...] = ()) -> None:
    """Show :func:`format_table` rendered in Jupyter (``IPython.display.Markdown``; plain text
    elsewhere), under the profile's :func:`~mixlab.config.caveat`."""
    caveat = config_mod.caveat(profile)
    show_markdown((f"**{caveat}.**\n\n" if caveat else "") + format_table(table, metrics, extra))


def show_markdown(text: str) -> None:
    """Render Markdown ``text`` in Jupyter (``IPython.display.Markdown``); print it elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:  # a bare library install without Jupyter
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Markdown(text))


def write_table(table, results_dir: str | Path, experiment: str, *, profile: str, note: str = "",
                extra: tuple[str, ...] = (), metrics=("acc", "nmi", "ari")) -> Path:
    """Write ``table.md`` and ``table.csv`` under ``results_dir/experiment`` with provenance; on
    ``smoke`` the note starts with :data:`~mixlab.config.SMOKE_NOTE`."""
    root = paths.resolve(results_dir) / experiment
    meta = provenance(profile=profile)
    caveat = config_mod.caveat(profile)
    note = f"{caveat}. {note}".strip() if caveat else note
    md = (f"<!-- generated by mixlab.experiments.write_table; profile={profile} commit={meta['commit']} "
          f"device={meta['device']} date={meta['date']} -->\n" + format_table(table, metrics, extra=extra) + (f"\n{note}\n" if note else ""))
    io.write_text(root / "table.md", md)
    io.write_text(root / "table.csv", table.to_csv())
    io.write_json(root / "table.json", {"profile": profile, "provenance": meta})
    return root / "table.md"
