"""A notebook's grid of runs, declared up front and trained on Dask workers.

    GRID = [grid.Run(EXP, name, method, seed) for name, method in RUNS.items() for seed in seeds]
    rows = grid.submit(GRID, profile=profile, runs_dir=runs_dir, results_dir=results_dir)

:func:`submit` reuses each run already finished, or committed, with the same config (the rule of
:func:`mixlab.workbook.experiments.run`) without sending it anywhere, sends the others to the cluster of
:func:`client` seed by seed (a pass cut short leaves whole seeds), longest first within a seed by
their last recorded times (a run never timed first), and returns every run's row (what
:func:`mixlab.workbook.experiments.run` returns) in the declared order once all are in. A worker that dies mid-run costs its current epoch only: Dask gives the run to another worker,
which resumes it from its checkpoint. Each run's ``metrics.json`` names the worker that trained it
(``provenance.worker``).

The cluster (:func:`client`, one per process):

* ``$MIXLAB_SCHEDULER``: a running scheduler, ``tcp://HOST:PORT`` or a scheduler file ``*.json``
  (``make reproduce`` sets it for every notebook it runs: they all share its cluster);
  ``none`` trains the runs in this process, one after another, without Dask (for a debugger);
* else ``$MIXLAB_CLUSTER`` = ``slurm``, ``pbs``, ``sge``, ``lsf`` or ``htcondor``: dask-jobqueue's
  cluster of that kind, as dask's own configuration describes it (``~/.config/dask/jobqueue.yaml``:
  queue, cores, memory, walltime, job_extra_directives ...), scaled to ``$MIXLAB_WORKERS`` workers;
* else a local cluster sized to the local machine: one single-threaded worker process per core, or one
  per GPU, each seeing only its own (``CUDA_VISIBLE_DEVICES``); ``$MIXLAB_WORKERS`` sets the count.

Workers import mixlab from their own install, train with one torch thread on a CPU (unless the
run's ``train.num_threads`` says otherwise), and read and write the absolute folders the submitting
process names, with its ``MIXLAB_*`` environment: on several machines these folders must be on a
shared file system.
"""
from __future__ import annotations

import contextlib
import heapq
import importlib.util
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mixlab import rundir
from mixlab.config import ConfigError
from mixlab.utils import paths
from mixlab.workbook import experiments

JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
            "htcondor": "HTCondorCluster"}
UNTIMED = 10 ** 9  # expected seconds of a run never timed: it may be the longest


@dataclass
class Run:
    """One run of a grid: the arguments of :func:`mixlab.workbook.experiments.run` besides profile and folders."""

    experiment: str
    name: str
    method: str
    seed: int
    overrides: dict = field(default_factory=dict)
    keep: bool = False  # its record keeps snapshots and weights: a notebook's figures read them
    representation: bool = False  # its record keeps the linear-probe / k-NN scores (SiamMM's yardstick)

    def __post_init__(self):
        self.overrides = self.overrides or {}

    def __str__(self) -> str:
        return f"{self.experiment}/{self.name} seed {self.seed}"


def longest_first(names: list[str], expected: dict[str, float]) -> list[str]:
    """``names`` by decreasing expected seconds, one without a time first (it may be the longest),
    ties in the given order. Started in this order on N workers the wall time is at most 4/3 of the
    best order's (Graham's longest-processing-time rule)."""
    return sorted(names, key=lambda name: -expected.get(name, math.inf))


def priority(seed: int, expected: float | None) -> int:
    """Dask priority (higher first) of a run: seed-major, so a pass cut short leaves whole seeds
    (every run of seed 0 before any of seed 1), then longest first within a seed."""
    return (10 ** 4 - seed) * 10 ** 10 + round(min(UNTIMED, UNTIMED if expected is None else expected))


def expected_wall_seconds(names: list[str], expected: dict[str, float], jobs: int) -> float:
    """Wall time of running ``names`` in this order, ``jobs`` at a time, if each took its expected
    seconds (each next one starts on the first free worker); runs side by side also share the
    cores, so a real run takes longer (benchmarks/side_by_side.py measures by how much)."""
    free = [0.0] * jobs
    for name in names:
        heapq.heapreplace(free, free[0] + expected.get(name, 0.0))
    return max(free)


def last_seconds(run: Run, planned: experiments.Planned, profile: str) -> float | None:
    """The ``wall_time_s`` a run recorded last: in its published folder, its run folder, or the
    profile's committed results; None if it never ran."""
    committed = (paths.resolve(paths.outputs(profile, publish=True).results_dir) / run.experiment
                 / f"{run.name}-seed{run.seed}")
    for folder in (planned.published, planned.out, committed):
        try:
            return float(rundir.metrics(folder)["wall_time_s"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def submit(runs: list[Run], *, profile: str, runs_dir: str | Path | None = None,
           results_dir: str | Path | None = None, force: bool = False) -> list[dict]:
    """Train every run of ``runs`` (or reuse it) on the cluster of :func:`client`; returns their rows
    in the order given, once all are in. ``force`` trains each one again from scratch. A run that
    fails raises its error, naming the run; the others keep what they trained. With
    ``$MIXLAB_DRAW_ONLY=1`` nothing trains: the rows of the finished or recorded runs come back, in
    order, and the others are named and left out (a notebook drawn from a pass still in progress;
    :func:`mixlab.workbook.experiments.write_table` names them under the table)."""
    runs = list(runs)
    drafts = paths.outputs(profile)
    folders = {"runs_dir": str(paths.resolve(runs_dir or drafts.runs_dir)),
               "results_dir": str(paths.resolve(results_dir or drafts.results_dir))}
    plans = [experiments.plan(r.experiment, r.name, r.method, profile=profile, seed=r.seed, overrides=r.overrides,
                              **folders) for r in runs]
    rows: list[dict | None] = [None] * len(runs)
    todo = []
    for i, (run, planned) in enumerate(zip(runs, plans)):
        if force and planned.out.exists():
            shutil.rmtree(planned.out)
        if not force and (planned.finished(run.keep, run.representation)
                          or planned.record(run.keep, run.representation) is not None):
            rows[i] = _run(run, profile, folders)  # reuses and publishes it: no worker needed
        else:
            todo.append(i)
    experiments.LEFT_OUT[:] = [runs[i] for i in todo] if os.environ.get("MIXLAB_DRAW_ONLY") == "1" else []
    if todo and os.environ.get("MIXLAB_DRAW_ONLY") == "1":
        print(f"[grid] MIXLAB_DRAW_ONLY=1: {len(todo)} of {len(runs)} runs are neither finished nor recorded and are"
              f" left out ({', '.join(str(runs[i]) for i in todo)})", flush=True)
        return [row for row in rows if row is not None]
    if not todo:
        return rows
    if os.environ.get("MIXLAB_SCHEDULER") == "none":
        print(f"[grid] {len(todo)} of {len(runs)} runs to train, here, one after another (MIXLAB_SCHEDULER=none)",
              flush=True)
        for i in todo:
            rows[i] = _run(runs[i], profile, folders)
        return rows
    expected = {str(i): s for i in todo if (s := last_seconds(runs[i], plans[i], profile)) is not None}
    order = sorted(todo, key=lambda i: -priority(runs[i].seed, expected.get(str(i))))
    _gather(client(), runs, order, expected, rows, profile, folders)
    return rows


def _gather(dask_client, runs: list[Run], order: list[int], expected: dict, rows: list, profile: str,
            folders: dict) -> None:
    """Submit ``runs[i]`` for every ``i`` of ``order``, with :func:`priority` (so across the notebooks
    that share the cluster: lower seeds first, the longest first within a seed), then wait for them."""
    from dask.base import tokenize
    from distributed import as_completed

    env = {k: v for k, v in os.environ.items() if k.startswith("MIXLAB_")}
    index, futures = {}, []
    for i in order:
        args = (runs[i], profile, folders, env, os.getcwd())
        future = dask_client.submit(_on_worker, *args, key=f"mixlab-run-{tokenize(*args)}",
                                    priority=priority(runs[i].seed, expected.get(str(i))))
        index[future.key] = i
        futures.append(future)
    reused = len(runs) - len(order)
    print(f"[grid] {len(order)} runs to {_describe(dask_client)}, seed by seed, longest first"
          + (f"; {reused} finished earlier, reused" if reused else ""), flush=True)
    for n, future in enumerate(as_completed(futures), 1):
        i = index[future.key]
        try:
            rows[i] = future.result()
        except Exception as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"in run {runs[i]} (mixlab.workbook.grid.submit)")
            raise
        worker = (rows[i].get("provenance") or {}).get("worker") or {}
        print(f"[grid] {runs[i]}: {rows[i].get('wall_time_s', 0):.0f} s on worker {worker.get('name')}"
              f" ({n}/{len(order)})", flush=True)


def _run(run: Run, profile: str, folders: dict) -> dict:
    return experiments.run(run.experiment, run.name, run.method, profile=profile, seed=run.seed,
                           overrides=run.overrides, keep=run.keep, representation=run.representation, **folders)


def _on_worker(run: Run, profile: str, folders: dict, env: dict, cwd: str) -> dict:
    """The task: :func:`mixlab.workbook.experiments.run` as the submitter would run it (its ``MIXLAB_*``
    environment; its working directory, where a relative ``folder:`` dataset is), with one torch
    thread on a CPU worker (``train.num_threads`` still wins). Run again after its worker died, it
    resumes the run from the checkpoint that worker left."""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    with _as_submitted(env, cwd):
        return _run(run, profile, folders)


@contextlib.contextmanager
def _as_submitted(env: dict, cwd: str):
    """This process's ``MIXLAB_*`` variables exactly ``env``, and ``cwd`` the working directory (if
    the local machine has it), for the block."""
    before, here = {k: v for k, v in os.environ.items() if k.startswith("MIXLAB_")}, os.getcwd()
    for k in before:
        del os.environ[k]
    os.environ.update(env)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(here)
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(before)


_clients: dict = {}


def client():
    """The process's shared ``dask.distributed.Client`` (created on first use, see the module
    docstring for which cluster), its dashboard link printed once."""
    from distributed import Client

    address = os.environ.get("MIXLAB_SCHEDULER", "")
    if address == "none":
        raise ConfigError("MIXLAB_SCHEDULER=none trains runs in this process: there is no Dask client")
    known = _clients.get(address)
    if known is not None and known.status == "running":
        return known
    if address.endswith(".json"):
        new = Client(scheduler_file=address)
    else:
        new = Client(address) if address else Client(cluster())
    _clients[address] = new
    print(f"[grid] Dask: {_describe(new)}; {_dashboard(new)}", flush=True)
    return new


def cluster():
    """A new cluster for :func:`client` when no scheduler is given: dask-jobqueue's for
    ``$MIXLAB_CLUSTER``, else :func:`local_cluster`."""
    kind = os.environ.get("MIXLAB_CLUSTER", "local").strip().lower() or "local"
    count = os.environ.get("MIXLAB_WORKERS", "").strip()
    if count and not (count.isdigit() and int(count) >= 1):
        raise ConfigError(f"MIXLAB_WORKERS must be a whole number >= 1, got {count!r}")
    workers = int(count) if count else None
    if kind == "local":
        return local_cluster(workers)
    if kind not in JOBQUEUE:
        raise ConfigError(f"MIXLAB_CLUSTER={kind!r} is not known; choose local or one of {', '.join(JOBQUEUE)}")
    if workers is None:
        raise ConfigError(f"MIXLAB_CLUSTER={kind}: set MIXLAB_WORKERS to the number of workers to ask for")
    import dask_jobqueue

    jobs = getattr(dask_jobqueue, JOBQUEUE[kind])()  # queue, cores, memory ...: dask's jobqueue.yaml
    jobs.scale(n=workers)
    return jobs


def local_cluster(workers: int | None = None):
    """A cluster on the local machine: ``workers`` (default: one per core) single-threaded worker
    processes, or on a CUDA machine one per GPU (default: all), each seeing only its own."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    dashboard = ":8787" if importlib.util.find_spec("bokeh") else ":0"  # :0, any free port
    gpus = _gpus()
    if not gpus:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return LocalCluster(n_workers=workers or cores, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address=dashboard)
    specs = {f"gpu{d}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": d}}}
             for d in gpus[:workers or len(gpus)]}
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {
        "host": "127.0.0.1", "dashboard_address": dashboard}})


def _gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def _describe(dask_client) -> str:
    n = len(dask_client.scheduler_info(n_workers=-1).get("workers", {}))
    return f"scheduler {dask_client.scheduler.address} ({n} worker{'s' if n != 1 else ''})"


def _dashboard(dask_client) -> str:
    if importlib.util.find_spec("bokeh") is None:
        return "no dashboard (it needs bokeh: pip install bokeh)"
    return f"dashboard {dask_client.dashboard_link}"
