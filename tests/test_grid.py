"""Grids of runs on Dask (mixlab.workbook.grid): a real scheduler and two worker processes on 127.0.0.1 share a
notebook's runs, and a run whose worker is killed mid-run resumes on the other one, ending exactly as
an uninterrupted run; the run folder's reuse/resume/restart rule; the cluster routes."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from mixlab.config import ConfigError
from mixlab.workbook import claims, experiments, grid

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def dask_cluster(tmp_path, workers, *, nanny=True):
    """``dask scheduler`` and one ``dask worker`` process per name of ``workers`` on 127.0.0.1;
    yields (scheduler address, {name: worker process}); every process is ended on the way out."""
    logs = tmp_path / "dask-logs"
    logs.mkdir(exist_ok=True)
    procs = []

    def start(args, log):
        proc = subprocess.Popen([str(BIN / "dask"), *args], stdout=open(logs / log, "w"), stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
        procs.append(proc)
        return proc

    scheduler_file = tmp_path / "scheduler.json"
    try:
        start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
               "--scheduler-file", str(scheduler_file)], "scheduler.log")
        deadline = time.time() + 60
        while not scheduler_file.is_file() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        started = {name: start(["worker", address, "--nthreads", "1", "--nworkers", "1", "--name", name,
                                "--no-dashboard", *([] if nanny else ["--no-nanny"])], f"{name}.log")
                   for name in workers}
        from distributed import Client
        with Client(address, timeout=60) as client:
            client.wait_for_workers(len(workers), timeout=90)
        yield address, started
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_reproduce_spreads_a_notebooks_runs_over_both_workers(tmp_path):
    """`python -m mixlab reproduce --scheduler ADDRESS`: the mice notebook's smoke grid (MiCE, MoCo,
    the schedule check) runs on the given cluster, and the runs' provenance names both workers."""
    with dask_cluster(tmp_path, ["w1", "w2"]) as (address, _):
        env = {**os.environ, "MIXLAB_ROOT": str(tmp_path)}
        env.pop("MIXLAB_SCHEDULER", None)
        done = subprocess.run([sys.executable, "-m", "mixlab", "reproduce", "--profile", "smoke", "--only", "mice",
                               "--scheduler", address], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = tmp_path / "runs" / "smoke"  # MiCE's and MoCo's main runs, and the notebook's own check
    metrics = [json.loads(p.read_text()) for folder in ("main", "mice") for p in (runs / folder).rglob("metrics.json")]
    assert len(metrics) == 3
    workers = {m["provenance"]["worker"]["name"] for m in metrics}
    assert workers == {"w1", "w2"}, workers
    assert all(m["provenance"]["worker"]["address"].startswith("tcp://127.0.0.1:") for m in metrics)
    assert f"scheduler {address} (2 workers)" in done.stdout


KILLED = grid.Run("kill", "MiCE", "mice", 0, {"train": {"subset": 2048, "epochs": 8}})


def test_a_run_whose_worker_is_killed_resumes_on_the_other_and_ends_as_if_uninterrupted(tmp_path, monkeypatch):
    """SIGKILL the worker training a run once its checkpoint exists: Dask gives the run to the other
    worker, which resumes it from that checkpoint (not from scratch), and its metrics, log and final
    weights equal those of the same run trained without interruption."""
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    with dask_cluster(tmp_path, ["w1", "w2"], nanny=False) as (address, workers):
        monkeypatch.setenv("MIXLAB_SCHEDULER", address)
        client = grid.client()
        try:
            victim = experiments.plan(KILLED.experiment, KILLED.name, KILLED.method, profile="smoke", seed=0,
                                      overrides=KILLED.overrides, runs_dir=tmp_path / "killed").out
            result = {}
            thread = threading.Thread(target=lambda: result.update(rows=grid.submit(
                [KILLED], profile="smoke", runs_dir=tmp_path / "killed", results_dir=tmp_path / "results")))
            thread.start()
            deadline = time.time() + 60
            while not (victim / "log.jsonl").is_file() and time.time() < deadline:  # epoch 1 saved
                time.sleep(0.02)
            busy = [w for w, keys in client.processing().items() if keys]
            assert len(busy) == 1, client.processing()
            name = client.scheduler_info()["workers"][busy[0]]["name"]
            os.kill(workers[name].pid, signal.SIGKILL)
            epochs_before_kill = len((victim / "log.jsonl").read_text().splitlines())
            assert not (victim / "metrics.json").exists(), "the run finished before its worker was killed"
            thread.join(timeout=90)
            assert not thread.is_alive()
            (killed,) = result["rows"]
            (reference,) = grid.submit([KILLED], profile="smoke", runs_dir=tmp_path / "uninterrupted",
                                       results_dir=tmp_path / "results-uninterrupted")
        finally:
            if address in grid._clients:
                grid._clients.pop(address).close()
    survivor = ({"w1", "w2"} - {name}).pop()
    assert killed["provenance"]["worker"]["name"] == survivor == reference["provenance"]["worker"]["name"]
    assert 1 <= epochs_before_kill < 8 and killed["epochs"] == 8
    assert "resuming from its checkpoint" in (tmp_path / "dask-logs" / f"{survivor}.log").read_text()
    for key in ("acc", "nmi", "ari", "ami"):
        assert killed[key] == reference[key], key
    assert [r["loss"] for r in experiments_log(killed)] == [r["loss"] for r in experiments_log(reference)]
    a = torch.load(Path(killed["run_dir"]) / "checkpoint.pt", weights_only=True)["method"]
    b = torch.load(Path(reference["run_dir"]) / "checkpoint.pt", weights_only=True)["method"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def experiments_log(row):
    return [json.loads(line) for line in (Path(row["run_dir"]) / "log.jsonl").read_text().splitlines()]


class Killed(Exception):
    pass


def test_run_resumes_an_interrupted_folder_of_its_config_and_restarts_a_changed_one(tmp_path, monkeypatch,
                                                                                    one_thread):
    from mixlab import engine

    kw = {"profile": "smoke", "seed": 0, "runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results"}
    planned = experiments.plan("e", "toy", "toy", overrides={"train": {"epochs": 3}}, **kw)

    def killed_in_epoch_2(step):
        if step == 256 // 32 + 3:  # the toy's smoke data: 256 images, batch 32
            raise Killed

    with pytest.raises(Killed):
        engine.train(planned.cfg, planned.out, step_hook=killed_in_epoch_2)
    assert (planned.out / "checkpoint.pt").is_file() and not planned.finished()
    trained = []
    real_train = engine.train
    monkeypatch.setattr(engine, "train", lambda cfg, out, **k: trained.append(k) or real_train(cfg, out, **k))
    resumed = experiments.run("e", "toy", "toy", overrides={"train": {"epochs": 3}}, **kw)
    assert trained == [{"resume": True}] and resumed["epochs"] == 3
    reference = experiments.run("e", "toy", "toy", overrides={"train": {"epochs": 3}},  # trained, not restored
                                **{**kw, "runs_dir": tmp_path / "ref", "results_dir": tmp_path / "ref-results"})
    assert resumed["acc"] == reference["acc"] and resumed["nmi"] == reference["nmi"]
    experiments.run("e", "toy", "toy", overrides={"train": {"epochs": 3}}, **kw)  # finished: reused
    assert trained == [{"resume": True}, {}]  # the reference only
    (planned.out / "metrics.json").unlink()  # an unfinished folder of another config starts over
    changed = experiments.run("e", "toy", "toy", overrides={"train": {"epochs": 2}}, **kw)
    assert trained[-1] == {} and changed["epochs"] == 2


class FakeFuture:
    def __init__(self, fn, args, key):
        self.key, self._fn, self._args = key, fn, args

    def result(self):
        return self._fn(*self._args)


class FakeClient:
    """Records what grid.submit sends; each task runs here when its result is asked for."""

    def __init__(self):
        self.sent = []

    def submit(self, fn, *args, key, priority):
        self.sent.append((args[0], priority))
        return FakeFuture(fn, args, key)

    def scheduler_info(self, **_):
        return {"workers": {"a": {}}}

    class scheduler:
        address = "fake://"


def test_priority_is_seed_major_then_longest_first():
    assert grid.priority(0, 5) > grid.priority(1, 10 ** 6) > grid.priority(1, 5)  # all of seed 0 first
    assert grid.priority(2, None) > grid.priority(2, 10 ** 5)                     # never timed: may be longest


def test_submit_reuses_finished_runs_here_and_sends_the_rest_longest_first(tmp_path, monkeypatch, one_thread):
    import distributed

    fake = FakeClient()
    monkeypatch.setattr(grid, "client", lambda: fake)
    monkeypatch.setattr(distributed, "as_completed", lambda futures: list(reversed(futures)))
    monkeypatch.delenv("MIXLAB_SCHEDULER", raising=False)
    kw = {"profile": "smoke", "runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results"}
    runs = [grid.Run("e", f"r{i}", "toy", 0, {"train": {"epochs": 1}}) for i in range(4)]
    experiments.run("e", "r1", "toy", seed=0, overrides={"train": {"epochs": 1}}, **kw)  # r1: finished earlier
    for name, seconds in (("r0", 5.0), ("r3", 50.0)):  # r2: never timed
        published = experiments.plan("e", name, "toy", seed=0, **kw).published
        published.mkdir(parents=True)
        (published / "metrics.json").write_text(json.dumps({"wall_time_s": seconds}))
    rows = grid.submit(runs, **kw)
    assert [r["name"] for r in rows] == ["r0", "r1", "r2", "r3"]
    assert [(run.name, priority) for run, priority in fake.sent] == [
        ("r2", grid.priority(0, None)), ("r3", grid.priority(0, 50)), ("r0", grid.priority(0, 5))]
    assert all(r["provenance"]["worker"] is None for r in rows)  # not on a Dask worker
    fake.sent.clear()
    assert [r["acc"] for r in grid.submit(runs, **kw)] == [r["acc"] for r in rows] and fake.sent == []


def test_without_dask_the_runs_train_here_one_after_another(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("MIXLAB_SCHEDULER", "none")
    monkeypatch.setattr(grid, "client", lambda: pytest.fail("no Dask client with MIXLAB_SCHEDULER=none"))
    rows = grid.submit([grid.Run("e", "a", "toy", 1, {"train": {"epochs": 1}})], profile="smoke",
                       runs_dir=tmp_path / "runs", results_dir=tmp_path / "results")
    assert rows[0]["name"] == "a" and rows[0]["seed"] == 1
    assert (tmp_path / "results" / "e" / "a-seed1" / "metrics.json").is_file()


def test_reproduce_gives_every_notebook_kernel_the_one_cluster(monkeypatch):
    """The pipeline starts (or joins) one cluster and hands its address to the kernels it starts."""
    from mixlab.workbook import notebooks, pipeline

    class Client:
        class scheduler:
            address = "tcp://127.0.0.1:1234"

    asked = []
    monkeypatch.setattr(grid, "client", lambda: asked.append(os.environ.get("MIXLAB_SCHEDULER")) or Client())
    monkeypatch.delenv("MIXLAB_SCHEDULER", raising=False)
    with pipeline.shared_cluster():  # none given: grid.client() starts a local one
        assert os.environ["MIXLAB_SCHEDULER"] == "tcp://127.0.0.1:1234"
    with pipeline.shared_cluster("tcp://10.0.0.1:8786"):
        pass
    assert asked == [None, "tcp://10.0.0.1:8786"] and "MIXLAB_SCHEDULER" not in os.environ
    assert notebooks.has_grid("mice") and notebooks.has_grid("your_images") and not notebooks.has_grid("em_elbo_primer")


def test_on_a_cuda_machine_each_local_worker_sees_only_its_own_gpu(monkeypatch):
    """One single-threaded worker per GPU, its CUDA_VISIBLE_DEVICES set to that GPU alone (here two
    pretended GPUs of a machine whose CUDA_VISIBLE_DEVICES is "2,3": the workers see 2 and 3)."""
    from distributed import Client

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert grid._gpus() == ["2", "3"]
    monkeypatch.setattr(grid, "_gpus", lambda: ["2", "3"])  # the workers must not think they have CUDA
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with grid.local_cluster() as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        seen = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
        names = {w["name"]: w["nthreads"] for w in client.scheduler_info()["workers"].values()}
    assert sorted(seen.values()) == ["2", "3"] and names == {"gpu2": 1, "gpu3": 1}


@pytest.mark.parametrize("kind, cls", [("slurm", "SLURMCluster"), ("pbs", "PBSCluster"), ("sge", "SGECluster")])
def test_jobqueue_route_builds_the_kinds_cluster_from_dasks_config_and_scales_it(monkeypatch, kind, cls):
    import dask_jobqueue

    made = []

    class Fake:
        def __init__(self, **kwargs):
            self.kwargs, self.scaled = kwargs, None
            made.append(self)

        def scale(self, n):
            self.scaled = n

    monkeypatch.setattr(dask_jobqueue, cls, Fake)
    monkeypatch.setenv("MIXLAB_CLUSTER", kind.upper())
    monkeypatch.setenv("MIXLAB_WORKERS", "12")
    cluster = grid.cluster()
    assert made == [cluster] and cluster.kwargs == {} and cluster.scaled == 12
    monkeypatch.delenv("MIXLAB_WORKERS")
    with pytest.raises(ConfigError, match="set MIXLAB_WORKERS"):
        grid.cluster()


def test_cluster_routes_reject_unknown_settings(monkeypatch):
    monkeypatch.setenv("MIXLAB_CLUSTER", "kubernetes")
    with pytest.raises(ConfigError, match="'kubernetes' is not known; choose local or one of slurm"):
        grid.cluster()
    monkeypatch.setenv("MIXLAB_CLUSTER", "local")
    monkeypatch.setenv("MIXLAB_WORKERS", "0")
    with pytest.raises(ConfigError, match="MIXLAB_WORKERS must be a whole number >= 1"):
        grid.cluster()


def _scaling(repo):
    import importlib.util

    spec = importlib.util.spec_from_file_location("scaling", repo / "benchmarks" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_projection_starts_the_longest_first_on_the_first_free_worker(repo, tmp_path):
    scaling = _scaling(repo)
    seconds = {"x/a-seed0": 10.0, "x/b-seed0": 7.0, "y/c-seed0": 5.0, "y/d-seed0": 4.0, "y/e-seed0": 3.0}
    # 2 workers: a | b, then c after b (7), d after a (10), e after c (12): the last ends at 15
    assert scaling.project(seconds, 2) == 15.0 and scaling.project(seconds, 8) == 10.0
    assert scaling.project(seconds, 1) == 29.0
    assert scaling.by_notebook(seconds) == {"x": 17.0, "y": 12.0}
    two, many = scaling.projection(seconds, workers=(2, 8))
    assert two == {"workers": 2, "runs_s": 15.0, "notebooks_s": 17.0, "ideal_s": 14.5, "longest_run_s": 10.0,
                   "efficiency": round(14.5 / 15, 3)}
    assert many["runs_s"] == 10.0 and many["notebooks_s"] == 17.0
    for profile, path in (("cpu", "x/a-seed0"), ("smoke", "x/b-seed0"), ("cpu", "y/c-seed1")):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "metrics.json").write_text(json.dumps({"profile": profile, "wall_time_s": 2.5}))
    assert scaling.recorded_runs(tmp_path) == {"x/a-seed0": 2.5, "y/c-seed1": 2.5}


def test_draw_only_returns_the_recorded_runs_and_trains_nothing(tmp_path, monkeypatch, one_thread):
    monkeypatch.setattr(grid, "client", lambda: pytest.fail("draw-only must not reach a cluster"))
    monkeypatch.setenv("MIXLAB_DRAW_ONLY", "1")
    kw = {"profile": "smoke", "runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results"}
    experiments.run("e", "r1", "toy", seed=0, overrides={"train": {"epochs": 1}}, **kw)
    runs = [grid.Run("e", f"r{i}", "toy", 0, {"train": {"epochs": 1}}) for i in range(3)]
    rows = grid.submit(runs, **kw)
    assert [r["name"] for r in rows] == ["r1"]
    assert not (tmp_path / "runs" / "e" / "r0").exists()
    # the notebook draws what is there: its table names what is missing, a claim on a missing arm is undecided
    table = experiments.write_table(experiments.summarize(rows), tmp_path / "results", "e", profile="smoke")
    assert "not recorded yet: e/r0 seed 0, e/r2 seed 0." in table.read_text()
    verdict = claims.judge_rows(claims.Claim("r0 > r1", "test", a="r0", b="r1"), rows)
    assert verdict.verdict == "undecided" and verdict.seeds == []
    monkeypatch.delenv("MIXLAB_DRAW_ONLY")
    with pytest.raises(ValueError, match="no runs named 'r0'"):  # outside draw-only a missing arm is a mistake
        claims.judge_rows(claims.Claim("r0 > r1", "test", a="r0", b="r1"), rows)
    grid.submit(runs[1:2], **kw)
    assert experiments.left_out_note() == ""
