"""First-try baselines: they cluster the run's own images, are cached once, and sit beside a table."""
import numpy as np
import pandas as pd
import pytest

from mixlab import config
from mixlab.workbook import baselines, experiments

DIGITS = baselines.Settings("digits", subset=600, data_seed=0)
FAST = baselines.NAMES[:2]


def test_pixel_and_pca_kmeans_cluster_digits_far_above_chance():
    x, y = baselines.pixels(DIGITS)
    assert x.shape == (600, 64) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    for name in FAST:
        r = baselines.compute(name, x, y, DIGITS, seed=0)
        assert r["acc"] > 0.6, (name, r["acc"])  # chance is 0.1; k-means on 8x8 digits reaches ~0.75
        assert r["n_nonempty"] == 10 and r["baseline"]


def test_restarts_keep_the_best_objective():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.05, (50, 2)) for c in ((0, 0), (1, 0), (0, 1), (1, 1))]).astype(np.float32)
    inertia = []
    for nredo in (1, 10):
        labels = baselines.kmeans(x, 4, seed=3, nredo=nredo, iters=20)
        centers = np.stack([x[labels == k].mean(0) for k in np.unique(labels)])
        inertia.append(((x - centers[np.unique(labels, return_inverse=True)[1]]) ** 2).sum())
    assert inertia[1] <= inertia[0] + 1e-6
    assert len(np.unique(baselines.kmeans(x, 4, seed=3, nredo=10, iters=20))) == 4


def test_umap_kmeans_runs_on_the_same_images():
    x, y = baselines.pixels(DIGITS)
    r = baselines.compute("UMAP + k-means", x, y, DIGITS, seed=0)
    assert r["acc"] > 0.6 and r["name"] == "UMAP + k-means"


def test_results_are_cached_per_images_and_settings(tmp_path, monkeypatch):
    first = baselines.rows(DIGITS, seeds=(0, 1), runs_dir=tmp_path, names=FAST)
    assert [(r["name"], r["seed"]) for r in first] == [(n, s) for n in FAST for s in (0, 1)]

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a cached baseline")

    monkeypatch.setattr(baselines, "compute", boom)
    assert baselines.rows(DIGITS, seeds=(0, 1), runs_dir=tmp_path, names=FAST) == first
    with pytest.raises(AssertionError, match="recomputed"):  # other images: a new cache entry
        baselines.rows(baselines.Settings("digits", subset=500), seeds=(0,), runs_dir=tmp_path, names=FAST)


def test_unknown_baseline_is_a_clear_error():
    x, y = baselines.pixels(DIGITS)
    with pytest.raises(ValueError, match="choose one of"):
        baselines.compute("spectral", x, y, DIGITS, seed=0)


def test_beside_appends_the_baselines_to_a_table(tmp_path):
    cfg = config.resolve("mice", "smoke", {"train": {"dataset": "digits", "subset": 600}})
    rows = [{"name": "MiCE", "seed": s, "acc": 0.5, "nmi": 0.4, "ari": 0.3, "ami": 0.4, "n_nonempty": 9,
             "linear_probe_acc": 0.7, "wall_time_s": 1.0} for s in (0, 1)]
    table = experiments.summarize(rows, metrics=experiments.METRICS + ("n_nonempty", "linear_probe_acc"))
    table["note"] = ["reference"]
    out = baselines.beside(table, cfg.train, seeds=(0,), runs_dir=tmp_path, names=FAST)
    assert list(out.index) == ["MiCE", *FAST]
    assert out.loc["MiCE", "note"] == "reference" and out.loc[FAST[0], "note"] == ""
    assert out.loc[FAST[0], "n_nonempty_mean"] == 10 and out.loc[FAST[0], "acc_mean"] > 0.6
    assert isinstance(out, pd.DataFrame)
    text = experiments.format_table(out, ("acc", "linear_probe_acc"))
    assert "| MiCE | 50.0 ± 0.0 | 70.0 ± 0.0 |" in text and f"| {FAST[0]} | " in text and " | – | 1 |" in text


def test_side_by_side_callers_split_the_baselines_instead_of_each_computing_all(tmp_path, monkeypatch):
    """While another process holds an entry's lock (it is computing it), rows() computes the other
    entries first, then waits for that one and reads what the other wrote: nothing is computed twice."""
    import json
    import threading
    import time
    from dataclasses import asdict

    from mixlab.utils import cache, io

    computed = []

    def fake(name, x, y, settings, seed):
        computed.append((name, seed))
        return {"name": name, "seed": seed, "acc": 0.5}

    monkeypatch.setattr(baselines, "compute", fake)
    monkeypatch.setattr(baselines, "pixels", lambda settings: (np.zeros((4, 2), np.float32), np.zeros(4, int)))
    folder = tmp_path / "baselines" / f"digits-{DIGITS.key()}"
    busy = folder / "k-means_pixels-seed0.json"
    out = []
    with cache.exclusive(busy.with_name(busy.name + ".lock"), wait=True) as held:
        assert held
        caller = threading.Thread(target=lambda: out.extend(baselines.rows(DIGITS, seeds=(0, 1), runs_dir=tmp_path,
                                                                           names=FAST)))
        caller.start()
        deadline = time.monotonic() + 30
        while len(computed) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sorted(computed) == sorted([(FAST[0], 1), (FAST[1], 0), (FAST[1], 1)])
        assert caller.is_alive()  # waiting for the busy entry
        io.write_json(busy, {"settings": asdict(DIGITS), "result": {"name": FAST[0], "seed": 0, "acc": 0.9}})
    caller.join(30)
    assert (FAST[0], 0) not in computed
    assert [(r["name"], r["seed"], r["acc"]) for r in out] == [(FAST[0], 0, 0.9), (FAST[0], 1, 0.5),
                                                               (FAST[1], 0, 0.5), (FAST[1], 1, 0.5)]
    assert json.loads(busy.read_text())["result"]["acc"] == 0.9
