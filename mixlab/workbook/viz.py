"""Figures: one ``savefig`` (PNG + PDF + provenance sidecar) and the figure kinds the notebooks draw."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from mixlab import rundir
from mixlab.config import caveat
from mixlab.utils import io, paths
from mixlab.utils.provenance import provenance


def savefig(fig, name: str, figures_dir: str | Path | None = None, *, profile: str = "smoke", **meta) -> None:
    """Write ``figures_dir/name.png`` and ``.pdf`` and a ``name.json`` sidecar of provenance
    (a relative ``figures_dir`` is taken from the workbook root; none: the profile's unpublished
    figures folder, :func:`mixlab.utils.paths.outputs`).

    Before saving, every axis labelled "epoch" gets integer ticks, and on the ``smoke`` profile the
    figure is stamped with :data:`~mixlab.config.SMOKE_NOTE`. Returns nothing, so a notebook cell
    ending in ``savefig`` echoes no path."""
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if caveat(profile):
        fig.text(0.5, 1.0, caveat(profile), ha="center", va="bottom", color="tab:red", fontsize=10)
    path = paths.resolve(figures_dir or paths.outputs(profile).figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    fig.savefig(path.with_suffix(".pdf"), bbox_inches="tight")
    io.write_json(path.with_suffix(".json"), {"figure": name, "profile": profile, **meta, "provenance": provenance()})


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
    import seaborn as sns

    sns.histplot(np.asarray(posterior).max(1), bins=bins, binrange=(0, 1), color="tab:blue", ax=ax)
    ax.set_xlabel("max posterior probability")
    ax.set_ylabel("samples")
    ax.set_title(title)


def cluster_size_hist(ax, posterior: np.ndarray, title: str = "") -> None:
    """Bar chart of predicted-cluster sizes (MiCE Fig. 3c)."""
    import seaborn as sns

    posterior = np.asarray(posterior)
    sizes = np.bincount(posterior.argmax(1), minlength=posterior.shape[1])
    sns.barplot(x=np.arange(len(sizes)), y=sizes, color="tab:orange", ax=ax)
    ax.set_xlabel("cluster")
    ax.set_ylabel("size")
    ax.set_title(title)


def runs_frame(rows: list[dict], keys=("acc", "nmi", "ari")):
    """Tidy per-run table for seaborn: one row per (run name, seed, metric) from the rows
    :func:`mixlab.workbook.experiments.run` (or a baseline) returns; values in percent."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    keys = [k for k in keys if k in frame]
    tidy = frame.melt(id_vars=["name", "seed"], value_vars=keys, var_name="metric", value_name="value").dropna()
    tidy["metric"] = tidy["metric"].str.upper()
    tidy["value"] *= 100
    return tidy


def logs_frame(rows: list[dict]):
    """Tidy per-epoch table for seaborn: every row of every run's ``log.jsonl``, with its run
    ``name`` and ``seed`` (``rows`` as :func:`mixlab.workbook.experiments.run` returns them)."""
    import pandas as pd

    return pd.DataFrame([{**line, "name": r["name"], "seed": r["seed"]}
                         for r in rows for line in rundir.log(r["run_dir"])])


def training_curves(axes, rows: list[dict], keys: list[str], x: str = "epoch") -> None:
    """One axis per log column in ``keys`` against ``x`` (``epoch``, ``train_seconds``): one line
    per run name, the mean over seeds with a band of ± one standard deviation (seaborn)."""
    import seaborn as sns

    frame = logs_frame(rows)
    for i, (ax, key) in enumerate(zip(np.atleast_1d(axes), keys)):
        if key in frame:
            sns.lineplot(frame, x=x, y=key, hue="name", errorbar="sd", marker=".", ax=ax, legend=i == 0)
        ax.set_xlabel(x)
        ax.set_ylabel(key)
    legend = np.atleast_1d(axes)[0].get_legend()
    if legend is not None:
        legend.set_title(None)


def bars(ax, rows: list[dict], metrics=("acc", "nmi", "ari")) -> None:
    """Bars of the mean over seeds per run name and metric (percent), with each seed's value as a
    point on its bar (seaborn); ``rows`` are per-run results (runs and baselines)."""
    import seaborn as sns

    frame = runs_frame(rows, metrics)
    sns.barplot(frame, x="metric", y="value", hue="name", errorbar=None, alpha=0.8, ax=ax)
    sns.stripplot(frame, x="metric", y="value", hue="name", dodge=True, palette=dict.fromkeys(frame["name"].unique(), "black"),
                  size=3, legend=False, ax=ax)
    ax.set_ylim(0, 100)
    ax.set_xlabel("")
    ax.set_ylabel("% (bar: mean; points: seeds)")
    ax.legend(fontsize=8, title=None)


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
