"""Run grids of experiments with caching, and collect their metrics into tables.

A run lives in ``runs_dir/<experiment>/<name>/seed<seed>/`` (checkpoints, logs, snapshots: git-ignored);
its record (:func:`mixlab.rundir.write_record`: metrics, config, log, cluster assignments) goes to
``results_dir/<experiment>/<name>-seed<seed>/`` (committed); relative folders are taken from the
workbook root (:mod:`mixlab.utils.paths`). A run whose config is unchanged and finished is not trained
again unless ``force`` (:mod:`mixlab.utils.cache`), nor one whose committed record has the same config
(a pass can span several sittings); one interrupted is resumed from its checkpoint. A notebook's grid of runs goes to Dask workers through :mod:`mixlab.workbook.grid`.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple

from mixlab import config as config_mod
from mixlab import engine, rundir
from mixlab.utils import cache, io, paths
from mixlab.utils.provenance import provenance
from mixlab.workbook import report

METRICS = ("acc", "nmi", "ari", "ami")
LEFT_OUT: list = []  # the runs the last draw-only grid.submit left out (MIXLAB_DRAW_ONLY=1): write_table names them


def left_out_note() -> str:
    """One sentence naming the declared runs not recorded yet (:data:`LEFT_OUT`), seeds grouped by run
    name; empty when there are none."""
    seeds: dict[str, list[int]] = {}
    for run in LEFT_OUT:
        seeds.setdefault(f"{run.experiment}/{run.name}", []).append(run.seed)
    if not seeds:
        return ""
    return ("drawn before every declared run was recorded (MIXLAB_DRAW_ONLY=1); not recorded yet: "
            + ", ".join(f"{name} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))}"
                        for name, s in seeds.items()))


def run_dir(experiment: str, name: str, seed: int, runs_dir="runs") -> Path:
    return paths.resolve(runs_dir) / experiment / name / f"seed{seed}"


class Planned(NamedTuple):
    """One run resolved, before anything is written: its config, run folder and record folders."""

    cfg: config_mod.RunConfig
    out: Path        # runs_dir/<experiment>/<name>/seed<seed>
    published: Path  # results_dir/<experiment>/<name>-seed<seed>
    committed: Path  # the same under the profile's committed results (paths.outputs(profile, publish=True))

    def same_config(self, folder: Path | None = None) -> bool:
        """``folder`` (default: the run folder) holds a run of this config, as asked (a batch or
        queue fitted to a small data set is undone first, :func:`mixlab.engine.asked_config`)."""
        folder = self.out if folder is None else folder
        return ((folder / rundir.CONFIG).is_file()
                and engine.asked_config(rundir.config(folder)) == self.cfg.to_dict())

    def finished(self, keep: bool = False, representation: bool = False) -> bool:
        """Trained to the end with this config, with what is asked (``keep``: weights and snapshots;
        ``representation``: weights or the scores), so reused, not trained again. A folder restored
        from a record without them is not."""
        if not (rundir.is_finished(self.out) and self.same_config()):
            return False
        weights = any((self.out / f).is_file() for f in (rundir.CHECKPOINT, rundir.MODEL))
        snapshots = bool(rundir.snapshot_epochs(self.out)) or not self.cfg.train.snapshot_epochs
        scored = weights or (self.out / rundir.REPRESENTATION).is_file()
        return (not keep or (weights and snapshots)) and (not representation or scored)

    def record(self, keep: bool = False, representation: bool = False) -> Path | None:
        """A record of this config to restore instead of training (:func:`mixlab.rundir.restore`):
        in this pass's results folder, else in the profile's committed results; None if neither."""
        for folder in dict.fromkeys((self.published, self.committed)):
            if rundir.has_record(folder, keep=keep, representation=representation) and self.same_config(folder):
                return folder
        return None


def plan(experiment: str, name: str, method: str, *, profile: str, seed: int, overrides: dict | None = None,
         runs_dir: str | Path | None = None, results_dir: str | Path | None = None) -> Planned:
    """Resolve one run of :func:`run` (its config errors are raised here) without training it."""
    drafts = paths.outputs(profile)
    overrides = {s: dict(v) for s, v in (overrides or {}).items()}
    overrides.setdefault("train", {})["seed"] = seed
    cfg = config_mod.resolve(method, profile, overrides)
    leaf = Path(experiment) / f"{name}-seed{seed}"
    published = paths.resolve(results_dir or drafts.results_dir) / leaf
    committed = (paths.resolve(paths.outputs(profile, publish=True).results_dir) / leaf
                 if profile in paths.PUBLISHED_PROFILES else published)  # smoke: nothing is committed
    return Planned(cfg, run_dir(experiment, name, seed, runs_dir or drafts.runs_dir), published, committed)


def run(experiment: str, name: str, method: str, *, profile: str, seed: int, overrides: dict | None = None,
        runs_dir: str | Path | None = None, results_dir: str | Path | None = None, force: bool = False,
        keep: bool = False, representation: bool = False) -> dict:
    """Train (or reuse) one run and write its record (:func:`mixlab.rundir.write_record`; ``keep``:
    with snapshots and weights, for figures; ``representation``: with the linear-probe / k-NN scores
    of :func:`mixlab.evaluation.representation_eval`); returns the metrics with ``run_dir``. Folders left
    out are the profile's unpublished ones (:func:`mixlab.utils.paths.outputs`).

    Reuse, in this order: a finished run folder of the same config; else a committed record of it
    (this pass's results, then the profile's committed ``results/``), restored into the run folder;
    else a run folder that an interrupted run of the same config left (a killed process or Dask
    worker) resumes from its checkpoint; else it trains. ``force`` trains from scratch. One process
    at a time trains a run folder (a lock beside it): a second caller waits, then reuses the run."""
    p = plan(experiment, name, method, profile=profile, seed=seed, overrides=overrides, runs_dir=runs_dir,
             results_dir=results_dir)
    if force or not p.finished(keep, representation):
        with cache.exclusive(p.out.parent / f".{p.out.name}.lock", wait=True):
            if force or not p.finished(keep, representation):
                record = None if force else p.record(keep, representation)
                if record is not None:
                    print(f"[experiments] {name} seed {seed}: reusing the committed run {record}", flush=True)
                    if p.out.exists():
                        shutil.rmtree(p.out)
                    rundir.restore(record, p.out)
                else:
                    _train(p, fresh=force)
    if representation:
        from mixlab.evaluation import representation_eval

        representation_eval(p.out)  # computed once, then kept in the run folder and its record
    rundir.write_record(p.out, p.published, keep=keep)
    return {**rundir.metrics(p.out), "name": name, "run_dir": str(p.out)}


def _train(p: Planned, *, fresh: bool) -> dict:
    """Resume ``p.out`` from its checkpoint when it holds one of ``p.cfg`` (unless ``fresh``), else
    train ``p.cfg`` into it from scratch."""
    cfg, out = p.cfg, p.out
    if not fresh and (out / rundir.CHECKPOINT).is_file() and p.same_config():
        print(f"[experiments] {out}: resuming from its checkpoint", flush=True)
        try:
            return engine.train(cfg, out, resume=True)
        except rundir.CheckpointError as exc:  # raised before any training: start over instead
            engine.warn(f"{exc}; training {out} from scratch")
    if out.exists():
        shutil.rmtree(out)
    return engine.train(cfg, out)


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
    columns = ["run", *(m.upper() for m in metrics), "seeds", "s/run", *extra]
    return report.table(columns, [[name, *(mean_std(row, m) for m in metrics), int(row["seeds"]), row["wall_time_s"],
                                   *(row[e] for e in extra)] for name, row in table.iterrows()])


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
    """Write ``table.md`` (:func:`mixlab.workbook.report.write`) and ``table.csv`` under
    ``results_dir/experiment``, and ``table.json`` with the provenance. A table drawn before all its
    runs were recorded says which are missing (:func:`left_out_note`)."""
    root = paths.resolve(results_dir) / experiment
    missing = left_out_note()
    if missing:
        note = "; ".join(part for part in (note.rstrip("."), missing) if part) + "."
    report.write(root / "table.md", format_table(table, metrics, extra=extra), writer="mixlab.workbook.experiments.write_table",
                 profile=profile, note=note)
    io.write_text(root / "table.csv", table.to_csv())
    io.write_json(root / "table.json", {"profile": profile, "provenance": provenance(profile=profile)})
    return root / "table.md"
