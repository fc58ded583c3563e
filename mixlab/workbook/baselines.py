"""First-try baselines a deep-clustering result is read against, on exactly the images of a run.

- **k-means on raw pixels**: Euclidean k-means (faiss, Lloyd) on the flattened images scaled to
  [0, 1], ``nredo`` restarts, the lowest objective Σ_i ||x_i - c_{z_i}||² kept (faiss does this;
  the choice looks at no label).
- **PCA + k-means**: the same k-means on the first ``pca_dim`` principal components
  (scikit-learn PCA, not whitened).
- **UMAP + k-means**: the same k-means on a ``K``-dimensional UMAP embedding (umap-learn,
  ``n_neighbors`` 15 = its default, ``min_dist`` 0 as N2D (McConville et al., ICPR 2020) uses
  for clustering).

The images are the run's own (same dataset, subset and ``data_seed``) at the dataset's native
resolution, whatever ``image_size`` the network sees. K is the dataset's class count. Each
(baseline, seed) result is cached as JSON under ``runs_dir/baselines/``, keyed by the images and
the settings, so a pipeline computes each once and every notebook reuses it.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mixlab.metrics import cluster_sizes, evaluate
from mixlab.utils import cache, io, paths

NAMES = ("k-means (pixels)", "PCA + k-means", "UMAP + k-means")


@dataclass(frozen=True)
class Settings:
    """Everything a baseline result depends on besides its seed."""

    dataset: str
    subset: int | None = None
    data_seed: int = 0
    nredo: int = 10            # k-means restarts, best objective kept
    iters: int = 50            # Lloyd iterations per restart
    pca_dim: int = 50
    umap_neighbors: int = 15
    umap_min_dist: float = 0.0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def pixels(settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """The run's images as float32 rows in [0, 1] (point sets as they are), and their labels."""
    from mixlab.data import load

    data = load(settings.dataset, subset=settings.subset, seed=settings.data_seed)
    x = data.images.reshape(len(data.images), -1).numpy()
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if data.labels is None:
        raise ValueError(f"dataset {settings.dataset!r} has no labels; baselines are scored against labels")
    return np.ascontiguousarray(x), data.labels.numpy()


def kmeans(x: np.ndarray, K: int, *, seed: int, nredo: int, iters: int) -> np.ndarray:
    """Euclidean k-means labels (faiss), best objective of ``nredo`` restarts, all points used."""
    import faiss

    if not 1 <= K <= len(x):
        raise ValueError(f"K={K} clusters need 1 <= K <= N={len(x)} points")
    km = faiss.Kmeans(x.shape[1], int(K), niter=iters, nredo=nredo, seed=int(seed),
                      max_points_per_centroid=len(x) + 1, min_points_per_centroid=1)
    km.train(x)
    return km.index.search(x, 1)[1][:, 0].astype(np.int64)


def features(name: str, x: np.ndarray, K: int, settings: Settings, seed: int) -> np.ndarray:
    """The representation baseline ``name`` clusters: pixels, PCA components or UMAP coordinates."""
    if name == NAMES[0]:
        return x
    if name == NAMES[1]:
        from sklearn.decomposition import PCA

        dim = min(settings.pca_dim, x.shape[1], len(x))
        return np.ascontiguousarray(PCA(dim, random_state=seed).fit_transform(x), dtype=np.float32)
    if name == NAMES[2]:
        import umap

        reducer = umap.UMAP(n_components=K, n_neighbors=min(settings.umap_neighbors, len(x) - 1),
                            min_dist=settings.umap_min_dist, random_state=seed, n_jobs=1)
        return np.ascontiguousarray(reducer.fit_transform(x), dtype=np.float32)
    raise ValueError(f"baseline {name!r} is not known; choose one of: {', '.join(NAMES)}")


def compute(name: str, x: np.ndarray, y: np.ndarray, settings: Settings, seed: int) -> dict:
    """One baseline on one seed: ACC/NMI/ARI/AMI, final K (non-empty clusters) and seconds."""
    K = int(len(np.unique(y)))
    start = time.perf_counter()
    pred = kmeans(features(name, x, K, settings, seed), K, seed=seed, nredo=settings.nredo, iters=settings.iters)
    seconds = time.perf_counter() - start
    return {**evaluate(y, pred), "n_nonempty": int((cluster_sizes(pred, K) > 0).sum()),
            "name": name, "seed": int(seed), "wall_time_s": round(seconds, 2), "baseline": True}


def rows(settings: Settings, seeds=(0,), *, runs_dir: str | Path = "runs", names=NAMES) -> list[dict]:
    """Every baseline on every seed, each computed once and then read from its cache file. Notebooks
    side by side split the work: each first computes the entries no other process is computing
    (a lock file beside each), then waits for and reads the others'."""
    folder = paths.resolve(runs_dir) / "baselines" / f"{settings.dataset.replace(':', '_').replace('/', '_')}-{settings.key()}"
    key = asdict(settings)
    todo = {(name, seed): folder / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}-seed{seed}.json"
            for name in names for seed in seeds}
    found, data = {}, None
    for wait in (False, True):
        for (name, seed), path in todo.items():
            if (name, seed) in found:
                continue
            with cache.exclusive(path.with_name(path.name + ".lock"), wait=wait) as held:
                if not held:
                    continue
                if not cache.is_current(path, key, field="settings"):
                    if data is None:
                        data = pixels(settings)
                    io.write_json(path, {"settings": key, "result": compute(name, *data, settings, seed)})
                found[name, seed] = json.loads(path.read_text())["result"]
    return [found[item] for item in todo]


def settings_of(train_cfg) -> Settings:
    """The baseline settings for the images a run trains on (its ``TrainConfig``)."""
    return Settings(dataset=train_cfg.dataset, subset=train_cfg.subset, data_seed=train_cfg.data_seed)


def beside(table, train_cfg, seeds=(0,), *, runs_dir: str | Path = "runs", names=NAMES):
    """``table`` (from :func:`mixlab.workbook.experiments.summarize`) with the baselines' rows appended,
    on the same images as ``train_cfg``; metrics the baselines lack are NaN (shown as "–"), other
    columns they lack are empty."""
    import pandas as pd

    from mixlab.workbook.experiments import summarize

    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    base = summarize(rows(settings_of(train_cfg), seeds, runs_dir=runs_dir, names=names), metrics=metrics)
    merged = pd.concat([table, base])
    extra = [c for c in table.columns if c not in base.columns and not c.endswith(("_mean", "_std"))]
    merged[extra] = merged[extra].astype(object).where(merged[extra].notna(), "")
    return merged
