"""How the runs of a grid scale over Dask workers (mixlab.workbook.grid), measured here and projected.

1. **Measured**: one fixed grid of short real runs (by default 8 MiCE runs on the ``cpu`` profile,
   4,096 images, 8 epochs: ~15 s each on one core), trained from scratch through
   :func:`mixlab.workbook.grid.submit` on a local cluster of 1 worker, then of 2 workers (one thread each):
   wall times, speed-up and efficiency (speed-up / workers). Cluster start-up is not timed; the
   workers' first imports are (a pipeline pays them once).
2. **Projected**: the ``cpu`` pipeline's wall time on 2, 8, 32 and 128 workers, from the run times
   recorded in the committed ``results/*/*-seed*/metrics.json`` (``wall_time_s``), each run started
   longest first on the first free worker (:func:`mixlab.workbook.grid.expected_wall_seconds`), beside the
   same projection with whole notebooks as the unit (what ``make reproduce --jobs N`` did before
   the runs went to Dask).

Writes ``results/benchmarks/scaling.md`` and ``scaling.json`` (provenance: commit, device, date;
load average at start and end). Run it on a quiet machine (about 5 minutes on 2 cores):

    python benchmarks/scaling.py
    python benchmarks/scaling.py --quick --out /tmp/scaling.md   # 2 tiny runs: checks that it works
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from mixlab.utils import io  # noqa: E402
from mixlab.utils.provenance import provenance  # noqa: E402
from mixlab.workbook import grid, report

PROJECTED_WORKERS = (2, 8, 32, 128)


def measure(runs: list[grid.Run], profile: str, workers: int, root: Path) -> dict:
    """Train ``runs`` from scratch on a new local cluster of ``workers`` single-threaded workers;
    wall seconds from submitting to the last result, and the runs' own training seconds."""
    from distributed import Client

    with grid.local_cluster(workers) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        os.environ["MIXLAB_SCHEDULER"] = cluster.scheduler_address
        try:
            start = time.perf_counter()
            rows = grid.submit(runs, profile=profile, runs_dir=root / f"runs-{workers}",
                               results_dir=root / f"results-{workers}")
            wall = time.perf_counter() - start
        finally:
            grid._clients.pop(cluster.scheduler_address).close()
            del os.environ["MIXLAB_SCHEDULER"]
    return {"workers": workers, "wall_s": round(wall, 2), "run_s": [r["wall_time_s"] for r in rows],
            "by_worker": sorted({r["provenance"]["worker"]["name"] for r in rows})}


def recorded_runs(results: Path, profile: str = "cpu") -> dict[str, float]:
    """``{"<notebook>/<run>-seed<s>": wall_time_s}`` of every committed run of ``profile``."""
    times = {}
    for path in sorted(results.glob("*/*-seed*/metrics.json")):
        metrics = json.loads(path.read_text())
        if metrics.get("profile") == profile and metrics.get("wall_time_s") is not None:
            times[f"{path.parent.parent.name}/{path.parent.name}"] = float(metrics["wall_time_s"])
    return times


def project(seconds: dict[str, float], workers: int) -> float:
    """Wall seconds of running every task of ``seconds`` on ``workers``, longest first, each next
    one on the first free worker."""
    return grid.expected_wall_seconds(grid.longest_first(list(seconds), seconds), seconds, workers)


def by_notebook(seconds: dict[str, float]) -> dict[str, float]:
    """The runs' seconds added up per notebook (the unit of scheduling before Dask)."""
    total: dict[str, float] = {}
    for key, s in seconds.items():
        total[key.split("/")[0]] = total.get(key.split("/")[0], 0.0) + s
    return total


def projection(seconds: dict[str, float], workers=PROJECTED_WORKERS) -> list[dict]:
    notebooks = by_notebook(seconds)
    total = sum(seconds.values())
    return [{"workers": w, "runs_s": round(project(seconds, w), 1), "notebooks_s": round(project(notebooks, w), 1),
             "ideal_s": round(total / w, 1), "longest_run_s": round(max(seconds.values(), default=0.0), 1),
             "efficiency": round(total / w / project(seconds, w), 3) if seconds else None} for w in workers]


def grid_of(args) -> list[grid.Run]:
    over = {"train": {"subset": args.subset, "epochs": args.epochs, "progress": False}}
    return [grid.Run("scaling", method, method, seed, over) for method in args.methods for seed in range(args.seeds)]


def markdown(measured: list[dict], projected: list[dict], n_recorded: int, args) -> str:
    one = measured[0]["wall_s"]
    rows = [[m["workers"], f"{m['wall_s']:.1f}", f"{sum(m['run_s']):.1f}", f"{one / m['wall_s']:.2f}",
             f"{one / m['wall_s'] / m['workers']:.2f}", ", ".join(m["by_worker"])] for m in measured]
    lines = [f"{'QUICK MODE (a check that it works; the numbers mean nothing). ' if args.quick else ''}"
             f"Measured: {len(measured[0]['run_s'])} runs ({', '.join(args.methods)}; {args.seeds} seeds each; profile"
             f" {args.profile}, {args.subset} images, {args.epochs} epochs), trained from scratch through"
             " `mixlab.workbook.grid.submit` on a local Dask cluster of one-thread workers.\n",
             report.table(["workers", "wall (s)", "runs' own seconds, added", "speed-up", "efficiency",
                           "workers that ran runs"], rows),
             f"Projected: the `cpu` pipeline's {n_recorded} runs (their `wall_time_s` in the committed"
             " `results/*/*-seed*/metrics.json`), longest first on the first free worker; beside it the same"
             " with whole notebooks as the unit (each notebook's runs one after another, as `make reproduce"
             " --jobs N` ran them before the runs went to Dask). Each run is assumed to take its recorded time;"
             " the recorded times were measured two runs side by side on 2 cores.\n",
             report.table(["workers", "runs as the unit (min)", "notebooks as the unit (min)", "total / workers (min)",
                           "longest run (min)", "efficiency (runs)"],
                          [[p["workers"], f"{p['runs_s'] / 60:.1f}", f"{p['notebooks_s'] / 60:.1f}",
                            f"{p['ideal_s'] / 60:.1f}", f"{p['longest_run_s'] / 60:.1f}", p["efficiency"]]
                           for p in projected])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["mice"])
    p.add_argument("--seeds", type=int, default=8, help="runs per method")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--subset", type=int, default=4096, help="images per run")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="cluster sizes to measure, in order")
    p.add_argument("--quick", action="store_true", help="2 tiny runs: a check that the script works")
    p.add_argument("--out", default=str(REPO / "results" / "benchmarks" / "scaling.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.subset, args.epochs, args.profile = 2, 512, 1, "smoke"
    if min(args.seeds, args.subset, args.epochs, *args.workers) < 1:
        p.error("--seeds, --subset, --epochs and --workers must be >= 1")
    load_start = [round(x, 2) for x in os.getloadavg()]
    runs = grid_of(args)
    with tempfile.TemporaryDirectory(prefix="mixlab-scaling-") as tmp:
        measured = []
        for n in args.workers:
            measured.append(measure(runs, args.profile, n, Path(tmp)))
            print(f"[scaling] {n} worker(s): {measured[-1]['wall_s']} s", flush=True)
    recorded = recorded_runs(REPO / "results")
    projected = projection(recorded)
    out = Path(args.out)
    report.write(out, markdown(measured, projected, len(recorded), args), writer="benchmarks/scaling.py",
                 profile=args.profile, note=f"load average at start {load_start}, at end {[round(x, 2) for x in os.getloadavg()]}"
                 " (a busy machine lowers the speed-up: run it alone).")
    data = {"quick": args.quick, "grid": [vars(r) for r in runs], "profile": args.profile, "measured": measured,
            "speed_up": {m["workers"]: round(measured[0]["wall_s"] / m["wall_s"], 3) for m in measured},
            "projected_cpu_pipeline": projected, "recorded_runs": len(recorded),
            "load_average_start": load_start, "load_average_end": [round(x, 2) for x in os.getloadavg()], "provenance": provenance()}
    io.write_json(out.with_suffix(".json"), data)
    print(out.read_text())
    return data


if __name__ == "__main__":
    main()
