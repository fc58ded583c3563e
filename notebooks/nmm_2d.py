# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Neural mixture EM in 2-D: why the relevance scores are normalized (NMM §5, §8.1)
#
# The NMM paper (Tissera et al., "Neural Mixture Models with Expectation-Maximization for End-to-end Deep Clustering") lets a network's last layer *be* a
# mixture: K relevance scores a_ij, normalized over the batch per cluster (a*_ij, §5), give the
# cluster densities h_j(x) = sigmoid(a*_ij / γ) and the posterior p_ij = softmax(a*_i) (§6). One
# forward pass is the E-step, one gradient step on the EM loss (Eq. 6, p held constant) the M-step.
#
# The batch normalization forces the batch mean of every h_j to ≈ 0.5 (Eq. 3): every cluster
# density gets the same "mass", so no cluster can swallow the others. Here we check this where
# it can be seen, in 2-D (§8.1, Fig. 4–5, Table 1):
#
# * **`fashion-bottleneck2d`**: like the paper's 2-D MNIST set, the 2-unit bottleneck of a CNN
#   trained *with labels* on Fashion-MNIST (`mixlab/data/bottleneck.py`). The labels only make this
#   2-D data set; the clustering never sees them.
# * **`blobs2d`**: ten Gaussian blobs on a circle, where the right answer is obvious.
#
# Both are clustered by the §8.1 network, an MLP 2–32–32–K with K = 10, batch 128, γ = 5, Adam
# 1e-3, EM loss Eq. 6 only, once **with** and once **without** the normalization.

# %% tags=["parameters"]
profile = "smoke"
seeds = [0]
publish = False # True only under `make reproduce`: write the tracked results/ and figures/
datasets = ["fashion-bottleneck2d", "blobs2d"]
epochs = 10          # §8.1: "the algorithm converges within ten epochs"
shown_clusters = [3, 5, 9]  # the paper's 4th, 6th and 10th final-layer nodes (Fig. 5, Table 1)
grid = 120           # contour-plot resolution
n_batch = 128        # Table 1's batch

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from mixlab.workbook import experiments, viz
from mixlab.utils import io, paths
from mixlab import rundir
from mixlab.data import load
from mixlab.workbook.grid import Run, submit  # not `from mixlab import grid`: `grid` is a parameter here
from mixlab.workbook.nmm_figures import points_overrides
from mixlab.mixture import nmm as M

runs_dir, results_dir, figures_dir = paths.outputs(profile, publish)  # runs/<profile>/ unless publishing

torch.set_num_threads(1)
t0 = time.time()
EXP = "nmm_2d"

# %% tags=["grid"]
LABELS = {(name, normalize): f"{name}-{'normalized' if normalize else 'unnormalized'}"
          for name in datasets for normalize in (True, False)}
GRID = [Run(EXP, label, "nmm", seed, points_overrides(name, normalize=normalize, epochs=epochs))
        for (name, normalize), label in LABELS.items() for seed in seeds]

# %% [markdown]
# ## The two 2-D data sets (Fig. 4a)

# %%
data = {name: load(name) for name in datasets}
fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 4.2))
for ax, name in zip(np.atleast_1d(axes), datasets):
    d = data[name]
    viz.scatter_2d(ax, d.images.numpy(), d.labels.numpy(), title=f"{name}: true classes ({len(d)} points)")
viz.savefig(fig, "nmm_2d_data", figures_dir, profile=profile, experiment=EXP, datasets=datasets)

# %% [markdown]
# ## Train: with and without the relevance normalization

# %%
rows = [{**r, "clusters_used": r["n_nonempty"]}
        for r in submit(GRID, profile=profile, runs_dir=runs_dir, results_dir=results_dir)]
run_dirs = {key: next(r["run_dir"] for r in rows if r["name"] == label) for key, label in LABELS.items()}  # first seed
table = experiments.summarize(rows, metrics=("acc", "nmi", "ari", "clusters_used", "max_cluster_frac"))
experiments.write_table(table, results_dir, EXP, profile=profile,
                        note="NMM §8.1: MLP 2-32-32-10, Eq. 6, batch 128, gamma 5, Adam 1e-3. "
                             "clusters_used = non-empty predicted clusters (of 10).")
table

# %% [markdown]
# Did the un-normalized model collapse? (The paper's Fig. 5a: one cluster takes every point.)

# %%
for name in datasets:
    used = {n: table.loc[f"{name}-{n}", "clusters_used_mean"] for n in ("normalized", "unnormalized")}
    print(f"{name}: clusters used, normalized {used['normalized']:.1f} / 10, "
          f"un-normalized {used['unnormalized']:.1f} / 10"
          + ("  -> the un-normalized model collapsed" if used["unnormalized"] <= 2 else ""))

# %% [markdown]
# ## The claim (NMM §5, §8.1): the normalization prevents the collapse
#
# Per data set, normalized vs un-normalized, paired over seeds: more clusters used and a higher
# ACC. The paired t-test over seeds decides at α = 0.05 (`mixlab.workbook.claims`); the verdicts go to
# `results/claims.md`.

# %%
from mixlab.workbook import claims

verdicts = [claims.judge_rows(claims.Claim(f"normalized > un-normalized ({name})", "NMM §8.1, Fig. 5",
                                           a=f"{name}-normalized", b=f"{name}-unnormalized", metric=metric), rows)
            for name in datasets for metric in ("clusters_used", "acc")]
claims.write(results_dir, EXP, verdicts, profile=profile)
experiments.show_markdown(claims.format_table(verdicts))

# %% [markdown]
# ## The clustered space (Fig. 4b)

# %%
models = {key: rundir.load(path) for key, path in run_dirs.items()}
fig, axes = plt.subplots(len(datasets), 2, figsize=(9, 4.2 * len(datasets)), squeeze=False)
for i, name in enumerate(datasets):
    pts = data[name].images
    for j, normalize in enumerate((True, False)):
        method = models[(name, normalize)].method
        with torch.no_grad():
            pred = method.predict(pts).argmax(1).numpy()
        viz.scatter_2d(axes[i, j], pts.numpy(), pred,
                       title=f"{name}\n{'normalized' if normalize else 'un-normalized'}: "
                             f"{len(np.unique(pred))} clusters used")
viz.savefig(fig, "nmm_2d_clusters", figures_dir, profile=profile, experiment=EXP, runs={f"{k[0]}-{k[1]}": v for k, v in run_dirs.items()})

# %% [markdown]
# ## The cluster densities h_j(x) (Fig. 5)
#
# h_j(x) = sigmoid(a*_j(x)/γ) on a grid around the data, for three final-layer nodes. At inference
# the normalization uses the running mean/std kept during training, so h can be evaluated at any
# point (§8.1). Without normalization h_j = sigmoid(a_j/γ). Each panel has its own colour scale:
# with γ = 5 the normalized h stays within the sigmoid's linear region, roughly 0.3–0.7.

# %%
def density_grid(method, pts, n=grid, pad=0.5):
    lo, hi = pts.min(0).values - pad, pts.max(0).values + pad
    xs, ys = torch.linspace(lo[0], hi[0], n), torch.linspace(lo[1], hi[1], n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        h = method.density(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
    return gx.numpy(), gy.numpy(), h.reshape(n, n, -1).numpy()


for name in datasets:
    pts = data[name].images
    fig, axes = plt.subplots(2, len(shown_clusters), figsize=(4 * len(shown_clusters), 7.5), squeeze=False)
    for i, normalize in enumerate((False, True)):
        gx, gy, h = density_grid(models[(name, normalize)].method, pts)
        for j, c in enumerate(shown_clusters):
            ax = axes[i, j]
            cs = ax.contourf(gx, gy, h[..., c], levels=12, cmap="viridis")
            ax.scatter(pts[::4, 0], pts[::4, 1], s=0.4, c="k", alpha=0.3, linewidths=0)
            ax.set_title(f"{'normalized' if normalize else 'un-normalized'}: h of node {c + 1}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(cs, ax=ax, shrink=0.8, format="%.3g")
    viz.savefig(fig, f"nmm_2d_densities_{name}", figures_dir, profile=profile, experiment=EXP, clusters=shown_clusters,
                runs={str(n): run_dirs[(name, n)] for n in (True, False)})

# %% [markdown]
# ## Table 1: batch averages of h per cluster
#
# For one batch of 128 points: with the normalization computed on the batch itself (§5, what
# training does) the averages are 0.5 by construction (Eq. 3); with the running statistics
# (inference) they are close to it; without normalization they go anywhere.
#
# A caution the paper glosses over: Eq. 4 turns the batch average into an *integral* only if the
# batch is drawn **uniformly** over the space. A data batch is not, so Eq. 3 equalizes the
# data-weighted mass of the clusters. The last column estimates the integral itself by Monte Carlo
# over the bounding box (Eq. 4, divided by the box volume V), with the running statistics.

# %%
g = torch.Generator().manual_seed(0)
table1 = []
for name in datasets:
    pts = data[name].images
    batch = pts[torch.randperm(len(pts), generator=g)[:n_batch]]
    for normalize in (False, True):
        method = models[(name, normalize)].method
        gamma = float(method.gamma_train)
        with torch.no_grad():
            a = method.relevance(batch)
            if normalize:
                h_batch = M.density(M.normalize_relevance(a)[0], gamma)
                h_running = method.density(batch)
            else:
                h_batch = h_running = M.density(a, gamma)
            lo, hi = pts.min(0).values, pts.max(0).values
            integral = M.monte_carlo_integral(method.density, lo, hi, n=8192, generator=g) / torch.prod(hi - lo)
        for c in shown_clusters:
            table1.append({"dataset": name, "normalized": normalize, "node": c + 1,
                           "mean h (batch stats)": float(M.batch_mean_density(h_batch)[c]),
                           "mean h (running stats)": float(M.batch_mean_density(h_running)[c]),
                           "box integral / V": float(integral[c])})
table1 = pd.DataFrame(table1)
io.write_text(Path(results_dir) / EXP / "table1_mean_density.csv", table1.to_csv(index=False))
table1.round(4)

# %% [markdown]
# With normalization every node's batch average sits at 0.5 (the "common integral" of Eq. 5);
# without it the averages drift apart, and the node whose h is near 1 everywhere takes the posterior
# of every point — the collapse the table above counts.

# %%
print(f"nmm_2d done in {time.time() - t0:.0f} s")
