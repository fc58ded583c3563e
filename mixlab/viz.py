"""Figures: one ``savefig`` (PNG + PDF + provenance sidecar) and the figure kinds the notebooks draw."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from mixlab import io, paths
from mixlab.config import caveat
from mixlab.provenance import provenance


def savefig(fig, name: str, figures_dir: str | Path = "figures", *, profile: str | None = None, **meta) -> None:
    """Write ``figures_dir/name.png`` and ``.pdf`` and a ``name.json`` sidecar of provenance
    (a relative ``figures_dir`` is taken from the workbook root).

    Before saving, every axis labelled "epoch" gets integer ticks, and on the ``smoke`` profile the
    figure is stamped with :data:`~mixlab.config.SMOKE_NOTE`. Returns nothing, so a notebook cell
    ending in ``savefig`` echoes no path."""
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if caveat(profile):
        fig.text(0.5, 1.0, caveat(profile), ha="center", va="bottom", color="tab:red", fontsize=10)
    path = paths.resolve(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    io.write_json(path.with_suffix(".json"), {"figure": name, "profile": profile, **meta, "provenance": provenance()})


def read_log(run_dir: str | Path) -> list[dict]:
    """The per-epoch rows of a run's ``log.jsonl``."""
    return io.read_jsonl(paths.resolve(run_dir) / "log.jsonl")


def load_snapshot(run_dir: str | Path, epoch: int) -> dict:
    """A saved snapshot (index, embedding, posterior, labels) of a run at ``epoch``."""
    with np.load(paths.resolve(run_dir) / "snapshots" / f"epoch_{epoch:03d}.npz") as data:
        return {k: data[k] for k in data.files}


def snapshot_epochs(run_dir: str | Path) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (paths.resolve(run_dir) / "snapshots").glob("epoch_*.npz"))


def embed_2d(x: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """2-D map of embeddings by t-SNE (scikit-learn) or UMAP (umap-learn)."""
    x = np.asarray(x, dtype=np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(x) // 4)).fit_transform(x)
    if method == "umap":
        import umap
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ValueError(f"unknown 2-D embedding method {method!r}; choose 'tsne' or 'umap'")


def scatter_2d(ax, xy: np.ndarray, labels: np.ndarray, title: str = "", s: float = 3,
               names: list[str] | None = None) -> None:
    """Points coloured by a categorical label (ground truth or predicted cluster), with a colour
    legend beside the axis naming each label (``names[label]`` when given, else the number)."""
    labels = np.asarray(labels)
    cmap = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
    for value in np.unique(labels):
        pick = labels == value
        ax.scatter(xy[pick, 0], xy[pick, 1], color=cmap(value % cmap.N), s=s, linewidths=0,
                   label=names[value] if names is not None else str(value))
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=6, markerscale=3, frameon=False,
              handletextpad=0.1, borderaxespad=0.2, ncol=1 if len(np.unique(labels)) <= 12 else 2)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def posterior_hist(ax, posterior: np.ndarray, bins: int = 10, title: str = "") -> None:
    """Histogram of the maximum posterior probability per sample (MiCE Fig. 3)."""
    ax.hist(np.asarray(posterior).max(1), bins=bins, range=(0, 1), color="tab:blue", edgecolor="white")
    ax.set_xlabel("max posterior probability")
    ax.set_ylabel("samples")
    ax.set_title(title)


def cluster_size_hist(ax, posterior: np.ndarray, title: str = "") -> None:
    """Bar chart of predicted-cluster sizes (MiCE Fig. 3c)."""
    posterior = np.asarray(posterior)
    sizes = np.bincount(posterior.argmax(1), minlength=posterior.shape[1])
    ax.bar(np.arange(len(sizes)), sizes, color="tab:orange")
    ax.set_xlabel("cluster")
    ax.set_ylabel("size")
    ax.set_title(title)


def training_curves(axes, logs: dict[str, list[dict]], keys: list[str], x: str = "epoch") -> None:
    """One axis per key, one line per run against ``x`` (a log column: ``epoch``,
    ``train_seconds``): ``logs`` maps a run label to its log rows."""
    for ax, key in zip(np.atleast_1d(axes), keys):
        for label, rows in logs.items():
            pts = [(r[x], r[key]) for r in rows if key in r and x in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
        ax.set_xlabel(x)
        ax.set_ylabel(key)
    np.atleast_1d(axes)[0].legend(fontsize=8)


def bar_with_errors(ax, table, metrics=("acc", "nmi", "ari")) -> None:
    """Grouped bars of mean ± std per row of a summary table (columns ``<m>_mean``, ``<m>_std``,
    ``seeds``); a row from one seed gets no error bar."""
    width = 0.8 / len(table)
    x = np.arange(len(metrics))
    for i, (name, row) in enumerate(table.iterrows()):
        spread = [row[f"{m}_std"] for m in metrics] if int(row.get("seeds", 1)) > 1 else None
        ax.bar(x + i * width, [row[f"{m}_mean"] for m in metrics], width, yerr=spread, label=str(name), capsize=3)
    ax.set_xticks(x + 0.4 - width / 2, metrics)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)


def image_grid(ax, images: np.ndarray, nrow: int, title: str = "") -> None:
    """Tile uint8 images ``[N, C, H, W]`` into one picture."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    ncol = int(np.ceil(n / nrow))
    canvas = np.ones((nrow * h, ncol * w, c), dtype=images.dtype) * images.max()
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i].transpose(1, 2, 0)
    ax.imshow(canvas.squeeze(-1) if c == 1 else canvas, cmap="gray" if c == 1 else None)
    ax.set_title(title)
    ax.axis("off")
