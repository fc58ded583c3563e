"""``make reproduce``: execute every notebook of the manifest (:mod:`mixlab.workbook.notebooks`),
then summarize.

Each entry of ``notebooks/manifest.yaml`` is a notebook; its parameters come from
``notebooks/params/<profile>/<notebook>.yaml``, plus ``publish=True``: a pass writes the profile's
published folders (:func:`mixlab.utils.paths.outputs`: ``results/`` and ``figures/`` on cpu, nothing
tracked on smoke). Executed copies go to ``runs/<profile>/notebooks/`` (git-ignored), all under the
workbook root (:mod:`mixlab.utils.paths`); the claims every notebook wrote (``results/<experiment>/claims.json``) are
gathered into ``results/claims.md``. Each notebook runs with its working directory in
``notebooks/``, as in JupyterLab. A notebook whose source, parameters and library code are
unchanged since its last successful execution is skipped unless forced. A failure stops the
pipeline with the notebook's name and the path of its executed copy; everything finished before it
stays as it is. On the cpu profile (papermill runner) every executed notebook is also rendered to
HTML under ``docs/notebooks/`` (:data:`RENDERED`, committed), so that it can be read without running. The runs
of all notebooks go to one Dask cluster, started here or joined (:func:`shared_cluster`), so that
they spread over every worker instead of running one notebook's after another.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from mixlab import config, rundir
from mixlab.config import PROFILES, ConfigError
from mixlab.utils import cache, io, paths
from mixlab.utils.provenance import REPO, provenance
from mixlab.workbook import claims, notebooks, report
from mixlab.workbook.experiments import mean_std
from mixlab.workbook.grid import expected_wall_seconds, longest_first

RENDERED = Path("docs") / "notebooks"  # executed notebooks as HTML (outputs and figures inlined), cpu profile


def run_all(run_one, todo: list[tuple], jobs: int) -> dict:
    """``run_one(*task)`` for every task, ``jobs`` at a time, keyed by the task's first item (its
    name). After a failure nothing new starts; the tasks already running finish, then the first
    failure is raised."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()

    def guarded(task: tuple):
        if stop.is_set():
            return None
        try:
            return run_one(*task)
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(task[0], pool.submit(guarded, task)) for task in todo]
    done, failures = {}, []
    for name, future in futures:
        if future.exception() is not None:
            failures.append(future.exception())
        elif future.result() is not None:
            done[name] = future.result()
    if failures:
        raise failures[0]
    return done


def reused_run_seconds(notebook: str, profile: str, since: float) -> float:
    """Training seconds of the runs a notebook's pass reused instead of training them: each run it
    published during the pass (``results_dir/<notebook>/<run>-seed<s>/metrics.json`` written at or
    after ``since``, a ``time.time()``) whose own ``runs_dir/<notebook>/<run>/seed<s>/metrics.json``
    is older, i.e. was trained by an earlier pass; each counts the ``wall_time_s`` it recorded.
    The pass's seconds plus these estimate the notebook's time from an empty runs/ (baselines,
    shared by the notebooks and computed once per pass by whichever needs them first, are left out)."""
    dirs = paths.outputs(profile, publish=True)
    runs = paths.resolve(dirs.runs_dir) / notebook
    total = 0.0
    for published in (paths.resolve(dirs.results_dir) / notebook).glob(f"*-seed*/{rundir.METRICS}"):
        run, seed = published.parent.name.rsplit("-seed", 1)
        trained = runs / run / f"seed{seed}" / rundir.METRICS
        if published.stat().st_mtime >= since and trained.is_file() and trained.stat().st_mtime < since:
            total += json.loads(trained.read_text()).get("wall_time_s", 0.0)
    return round(total, 1)


def from_empty_seconds(row: dict) -> float | None:
    """A timing row's pass seconds plus the training seconds of the runs that pass reused."""
    return None if row.get("seconds") is None else round(row["seconds"] + row.get("reused_seconds", 0.0), 1)


@contextlib.contextmanager
def shared_cluster(scheduler: str | None = None):
    """Join the Dask scheduler at ``scheduler`` (else ``$MIXLAB_SCHEDULER``), or start one local
    cluster sized to the local machine (:func:`mixlab.workbook.grid.client`), and give its address to every
    notebook kernel started in the block (``$MIXLAB_SCHEDULER``): the runs of all notebooks share
    its workers. ``none`` is handed on as it is: every kernel trains its runs itself."""
    from mixlab.workbook import grid

    before = os.environ.get("MIXLAB_SCHEDULER")
    if scheduler:
        os.environ["MIXLAB_SCHEDULER"] = scheduler
    try:
        if os.environ.get("MIXLAB_SCHEDULER") == "none":
            yield None
            return
        try:
            client = grid.client()
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {os.environ['MIXLAB_SCHEDULER']}: {exc}") from None
        os.environ["MIXLAB_SCHEDULER"] = client.scheduler.address
        yield client
    finally:
        os.environ.pop("MIXLAB_SCHEDULER", None)
        if before is not None:
            os.environ["MIXLAB_SCHEDULER"] = before


def reproduce(profile: str = "cpu", *, only: list[str] | None = None, force: bool = False,
              runner: str | None = None, jobs: int | None = None, scheduler: str | None = None,
              root: Path = REPO) -> list[dict]:
    """Run the manifest for ``profile``, ``jobs`` notebooks at a time (papermill runs each in its own
    kernel; the script runner runs in this process, so one at a time; with ``jobs`` > 1 the longest
    start first, by their last times in ``results/timings.json``); returns one record per
    notebook (skipped or run, seconds). On a failure no further notebook starts, the running ones
    finish and keep their results, and the first failure is raised.

    The runs of the notebooks' grids (:mod:`mixlab.workbook.grid`) all go to one Dask cluster: the scheduler
    ``scheduler`` (else ``$MIXLAB_SCHEDULER``), or a local cluster sized to the local machine started
    here; ``jobs`` left out is then every notebook at once (they wait for their runs side by side),
    else 1."""
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r} is not valid; choose one of: {', '.join(PROFILES)}")
    if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"jobs must be a whole number >= 1 (notebooks run at once), got {jobs!r}")
    names = notebooks.manifest(root)
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ConfigError(f"notebook {unknown[0]!r} is not in notebooks/manifest.yaml; known: {', '.join(names)}")
    state_dir = paths.resolve("runs") / profile / ".pipeline"
    runner = runner or notebooks.default_runner()
    done, todo = {}, []
    for name in names:
        if only and name not in only:
            continue
        params = notebooks.parameters(name, profile, root)
        key = notebooks.fingerprint(name, params, root)
        if not force and cache.is_current(state_dir / f"{name}.json", key, field="key"):
            print(f"[reproduce] {name}: unchanged, skipped (force with --force)", flush=True)
            done[name] = {"notebook": name, "status": "skipped"}
        else:
            todo.append((name, params, key))

    def run_one(name: str, params: dict, key: str) -> dict:
        print(f"[reproduce] {name}: running on profile {profile} ...", flush=True)
        start, started_at = time.perf_counter(), time.time()
        run_notebook = notebooks.execute if runner == "papermill" else notebooks.execute_script
        out = run_notebook(name, params, paths.resolve("runs") / profile / "notebooks", root)
        seconds = round(time.perf_counter() - start, 1)
        reused = reused_run_seconds(name, profile, started_at)
        made_by = provenance()
        record = {"notebook": name, "status": "ran", "seconds": seconds, "reused_seconds": reused,
                  "executed": str(out), "commit": made_by.get("commit", "?")}
        if profile == "cpu" and out.suffix == ".ipynb":
            rendered = notebooks.render(out, root / RENDERED)
            record["rendered"] = [str(p.relative_to(root)) for p in rendered]
            print(f"[reproduce] {name}: rendered copy {record['rendered'][-1]}", flush=True)
        if os.environ.get("MIXLAB_DRAW_ONLY") != "1":  # drawn from a partial pass: not done, run it again next time
            io.write_json(state_dir / f"{name}.json", {"key": key, **record, "provenance": made_by})
        print(f"[reproduce] {name}: done in {seconds} s" + (
            f"; it reused runs trained earlier ({reused} s of training), so from an empty runs/ about"
            f" {from_empty_seconds(record)} s" if reused else ""), flush=True)
        return record

    results_dir = paths.resolve(paths.outputs(profile, publish=True).results_dir)
    timings = results_dir / TIMINGS
    committed = json.loads(timings.read_text()) if timings.is_file() else None
    if (jobs or 1) > 1 and runner != "papermill" and len(todo) > 1:
        print("[reproduce] the script runner executes notebooks in this process: one at a time", flush=True)
    with_grid = any(notebooks.has_grid(t[0], root) for t in todo)
    on_dask = (scheduler or os.environ.get("MIXLAB_SCHEDULER")) != "none" and with_grid
    jobs = (jobs or (len(todo) if on_dask else 1)) if runner == "papermill" else 1
    if jobs > 1 and len(todo) > 1:
        expected = {name: from_empty_seconds(row) for name, row in (committed or {}).items()}
        order = longest_first([task[0] for task in todo], expected)
        todo.sort(key=lambda task: order.index(task[0]))
        print(f"[reproduce] {jobs} at a time, longest first by their last times ({TIMINGS}): {', '.join(order)};"
              + (" their runs share one Dask cluster, the longest runs first" if on_dask else
                 f" about {expected_wall_seconds(order, expected, jobs) / 60:.0f} min if each takes its last time"
                 " from an empty runs/ (side by side they share the cores: expect more)"), flush=True)
    with shared_cluster(scheduler) if with_grid else contextlib.nullcontext():
        done.update(run_all(run_one, todo, jobs))
    records = [done[name] for name in names if name in done]
    rows = with_earlier_runs(records, names, state_dir, committed)
    io.write_json(timings, {r["notebook"]: {"seconds": r["seconds"], "commit": r["commit"],
                                            **({"reused_seconds": r["reused_seconds"]} if r.get("reused_seconds") else {})}
                            for r in rows if r.get("seconds") is not None and r.get("commit")})
    write_summary(results_dir, profile, rows, root)
    claims.write_table(results_dir, profile)
    if profile == "cpu":
        for page in FILLED_PAGES:
            fill_readme(root / page, paths.root())
    return records


def grids(profile: str, only: list[str] | None = None, root: Path = REPO) -> dict[str, tuple[dict, list]]:
    """Each manifest notebook with a grid: ``(folders, runs)`` it declares on ``profile`` (its cells up
    to the one tagged ``grid``, with the parameters of a publishing pass; nothing is trained)."""
    found = {}
    for name in notebooks.manifest(root):
        if (only and name not in only) or not notebooks.has_grid(name, root):
            continue
        namespace = notebooks.run_cells(name, notebooks.parameters(name, profile, root), root, until_tag="grid")
        found[name] = ({"runs_dir": namespace["runs_dir"], "results_dir": namespace["results_dir"]}, namespace["GRID"])
    return found


def declared_runs(profile: str, only: list[str] | None = None, root: Path = REPO) -> tuple[dict, list]:
    """Every run of :func:`grids`, each run folder once, with the union of what the notebooks keep of
    it: ``(folders, runs)``. Two notebooks that name one run folder with different settings are an error."""
    runs: dict[tuple, object] = {}
    folders: dict = {}
    for name, (folders, declared) in grids(profile, only, root).items():
        for run in declared:
            known = runs.setdefault((run.experiment, run.name, run.seed), run)
            if known.overrides != run.overrides or known.method != run.method:
                raise ConfigError(f"run {run} is declared twice with different settings ({name}: {run.overrides};"
                                  f" before: {known.overrides}); give one of them another name")
            known.keep, known.representation = known.keep or run.keep, known.representation or run.representation
    return folders, list(runs.values())


def training_time(profile: str, root: Path = REPO) -> dict:
    """The training core-seconds of every run the notebooks declare on ``profile``: measured where the
    profile's published results hold a record of the same config (its ``train_seconds`` times its torch
    threads), else estimated (its epochs times the seconds per epoch of the same method's recorded
    runs, or of its budget probe, ``results/budget/budget.json``; MoCo takes MiCE's probe). Returns
    ``rows`` (``[notebook, runs declared, runs recorded, measured core-s, estimated core-s]``; a run two
    notebooks share counts in both), ``measured`` and ``estimated`` (each distinct run once) and
    ``wall`` (workers -> seconds, the distinct runs longest first on that many one-core workers)."""
    from mixlab.workbook import budget, experiments

    def workload(cfg, method: str | None = None) -> tuple:  # what sets the seconds of an epoch
        t = cfg.train
        return method or cfg.method, t.dataset, t.subset, t.backbone, t.image_size, t.batch_size

    results = paths.resolve(paths.outputs(profile, publish=True).results_dir)
    probes = results / budget.EXPERIMENT / "budget.json"
    per_epoch: dict = {}
    for b in json.loads(probes.read_text()) if probes.is_file() else []:
        for method in (b["method"], "moco") if b["method"] == "mice" else (b["method"],):
            per_epoch[workload(config.resolve(method, profile), method)] = [b["seconds_per_epoch"]]
    plans, measured = {}, {}
    for name, (folders, declared) in grids(profile, root=root).items():
        for run in declared:
            planned = experiments.plan(run.experiment, run.name, run.method, profile=profile, seed=run.seed,
                                       overrides=run.overrides, **folders)
            plans.setdefault(name, []).append(((run.experiment, run.name, run.seed), planned))
            if (planned.committed / rundir.METRICS).is_file() and planned.same_config(planned.committed):
                record = rundir.metrics(planned.committed)
                threads = planned.cfg.train.num_threads or 1
                measured[(run.experiment, run.name, run.seed)] = record["train_seconds"] * threads
                key = ("recorded",) + workload(planned.cfg)
                per_epoch.setdefault(key, []).append(record["train_seconds"] / record["epochs"])
    estimated = {}
    for runs in plans.values():
        for key, planned in runs:
            if key in measured:
                continue
            known = per_epoch.get(("recorded",) + workload(planned.cfg)) or per_epoch.get(workload(planned.cfg))
            if known:  # no record nor probe of this workload (another network or data): no estimate
                estimated[key] = sum(known) / len(known) * planned.cfg.train.epochs * (planned.cfg.train.num_threads or 1)
    rows = [[name, len(runs), sum(key in measured for key, _ in runs), round(sum(measured.get(k, 0) for k, _ in runs)),
             round(sum(estimated.get(k, 0) for k, _ in runs))] for name, runs in plans.items()]
    seconds = {str(k): v for k, v in {**measured, **estimated}.items()}
    order = longest_first(list(seconds), seconds)
    return {"rows": rows, "measured": round(sum(measured.values())), "estimated": round(sum(estimated.values())),
            "wall": {n: round(expected_wall_seconds(order, seconds, n)) for n in (2, 8)}}


def train(profile: str = "cpu", *, only: list[str] | None = None, force: bool = False,
          scheduler: str | None = None, root: Path = REPO) -> list[dict]:
    """Train (or reuse) every run of :func:`declared_runs` without executing the notebooks: one Dask
    cluster (:func:`shared_cluster`), seed by seed, longest first within a seed
    (:mod:`mixlab.workbook.grid`); each run's record lands in the published results as it finishes. A
    pass cut short keeps every finished run, and a later ``reproduce`` or ``train`` (in another
    sitting, from the committed records) reuses them."""
    from mixlab.workbook import grid

    folders, runs = declared_runs(profile, only, root)
    print(f"[train] {len(runs)} runs declared by the notebooks on profile {profile}", flush=True)
    with shared_cluster(scheduler):
        return grid.submit(runs, profile=profile, force=force, **folders)


REUSE_NOTE = ("A pass that found finished runs of an unchanged config under runs/ reused them instead of"
              " training them again; their training seconds (each run's own `wall_time_s`) are added back to"
              " estimate the pass from an empty runs/. Shared baselines reused from an earlier pass are not.")
TIMINGS = "timings.json"  # committed beside summary.md: each notebook's last time, for fresh checkouts


def with_earlier_runs(records: list[dict], names: list[str], state_dir: Path,
                      committed: dict | None = None) -> list[dict]:
    """One timing row per manifest notebook, with the commit it ran at: this call's record where
    it ran, else the last run's stamp under runs/ (so ``--only`` and skipped re-runs keep the other
    notebooks' times), else the committed ``results/timings.json`` (a fresh checkout has no
    stamps), else "not run"."""
    mine = {r["notebook"]: r for r in records}
    rows = []
    for name in names:
        stamp = state_dir / f"{name}.json"
        earlier = json.loads(stamp.read_text()) if stamp.is_file() else None
        commit = (earlier or {}).get("provenance", {}).get("commit", "?")
        if mine.get(name, {}).get("status") == "ran":
            rows.append({"commit": commit, **mine[name]})  # its own commit (a draw-only pass writes no stamp)
        elif earlier is not None:
            status = "skipped" if name in mine else "earlier run"
            rows.append({"notebook": name, "status": f"{status} (ran at commit {commit})",
                         "seconds": earlier.get("seconds"), "reused_seconds": earlier.get("reused_seconds", 0.0),
                         "commit": commit})
        elif name in (committed or {}):
            c = committed[name]
            rows.append({"notebook": name, "status": f"earlier run (ran at commit {c['commit']})",
                         "seconds": c["seconds"], "reused_seconds": c.get("reused_seconds", 0.0),
                         "commit": c["commit"]})
        else:
            rows.append({"notebook": name, "status": "not run"})
    return rows


FILLED_PAGES = ("README.md", "docs/results.md")  # pages whose result blocks a cpu pass refills
NOT_PRODUCED = "_not yet produced by `make reproduce` on the current profiles_"
README_BLOCK = re.compile(r"(<!-- begin (?P<path>\S+) .*?-->\n)(?P<body>.*?)(<!-- end (?P=path) -->)", re.S)


def fill_readme(readme: Path, root: Path = REPO) -> int:
    """Replace the body of every ``<!-- begin PATH ... -->`` / ``<!-- end PATH -->`` block of the
    README with the file ``root/PATH`` a notebook or the pipeline wrote; a block whose file does
    not exist (any more) says so, so no table outlives the results it was copied from. Returns the
    number of blocks filled."""
    text, filled = readme.read_text(), 0

    def body(match: re.Match) -> str:
        nonlocal filled
        source = root / match["path"]
        if not source.is_file():
            return match[1] + NOT_PRODUCED + "\n" + match[4]
        filled += 1
        return match[1] + source.read_text().rstrip() + "\n" + match[4]

    io.write_text(readme, README_BLOCK.sub(body, text))
    return filled


def write_summary(results_dir: Path, profile: str, timings: list[dict] | None = None, root: Path = REPO) -> Path:
    """Collect every ``results_dir/*/table.csv`` into ``summary.md`` and ``summary.csv``; with no
    table yet (e.g. only the primer ran) ``summary.md`` holds the timings alone."""
    import pandas as pd

    results_dir = paths.resolve(results_dir)
    tables = []
    for csv in sorted(results_dir.glob("*/table.csv")):
        frame = pd.read_csv(csv)
        frame.insert(0, "experiment", csv.parent.name)
        tables.append(frame)
    summary = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if tables:
        io.write_text(results_dir / "summary.csv", summary.to_csv(index=False))
    parts = [report.table(["experiment", "run", "ACC", "NMI", "ARI", "seeds", "s/run"],
                          [[r["experiment"], r.iloc[1], *(mean_std(r, m) for m in ("acc", "nmi", "ari")), int(r["seeds"]),
                            r["wall_time_s"]] for _, r in summary.iterrows()]) if tables
             else f"No results table under {results_dir} yet: none of the notebooks run so far writes one.\n"]
    if timings:
        total = sum(t.get("seconds") or 0 for t in timings)
        reused = sum(t.get("reused_seconds") or 0 for t in timings)
        rows = [[t["notebook"], t["status"], t.get("seconds", ""), t.get("reused_seconds") or "",
                 from_empty_seconds(t) or ""] for t in timings]
        rows.append(["**total** (the notebooks' own times, added; run with --jobs N they overlap)", "",
                     f"{total:.1f}", f"{reused:.1f}", f"{total + reused:.1f}"])
        parts.append(report.table(["notebook", "status", "seconds", "+ reused runs' training (s)",
                                   "from an empty runs/ (s)"], rows))
    if profile != "smoke":
        spent = training_time(profile, root)
        parts.append(report.table(["notebook", "runs declared", "runs recorded", "measured core-s", "estimated core-s"],
                                  spent["rows"] + [["**all notebooks** (each run once)", "", "", spent["measured"],
                                                   spent["estimated"]]]))
        hours = (spent["measured"] + spent["estimated"]) / 3600
        parts.append(f"Training from an empty runs/: {hours:.1f} core-hours ({spent['measured'] / 3600:.1f} measured "
                     f"from the records under results/, {spent['estimated'] / 3600:.1f} estimated for the runs not "
                     f"recorded yet); run longest first on one-core workers about {spent['wall'][2] / 3600:.1f} h on 2, "
                     f"{spent['wall'][8] / 3600:.1f} h on 8 (`mixlab.workbook.pipeline.training_time`).\n")
    return report.write(results_dir / "summary.md", "\n".join(parts), writer="`python -m mixlab reproduce`",
                        profile=profile, note=REUSE_NOTE if timings and reused else "")
