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
# # SiamMM: a von Mises–Fisher mixture on a Siamese network
#
# **SiamMM** (Wang, Huang & Liang (Meta AI), "SiamMM: A Mixture Model Perspective on Deep Unsupervised Learning", arXiv 2024) reads clustering-based
# self-supervised learning as a mixture model. Embeddings are L2-normalised, so each cluster is a
# von Mises–Fisher component f_k(v) = c_d(κ_k) exp(κ_k μ_kᵀ v) (Eq. 3–4). Training alternates
#
# * **E-step** (once per epoch): cluster the embeddings of the whole dataset with spherical k-means,
#   *warm-started from the previous epoch's centroids* ("consistent centroids", §4.3); each image gets
#   its H nearest centroids;
# * **M-step**: mean direction μ̂_k (Eq. 6) and concentration κ̂_k (Eq. 7; here the PCA version,
#   Eq. 16) of every cluster;
# * **LARS** (§5.1) on L_final = L^H + L_inst (Eq. 13, the two terms unweighted): L_inst is BYOL's loss between the online
#   prediction of one view and the momentum encoder's embedding of the other (Eq. 12, no negatives);
#   L^H = −log Σ_{k∈M} π_k exp(κ̂_k μ̂_kᵀ v) pulls v towards its H nearest centroids with weights
#   π_k ∝ α_k exp(μ_kᵀ v / τ) (Eq. 9–10) — again without negatives;
# * **merging** after every epoch: clusters whose standardised centroid distance is below ζ are merged
#   (Eq. 11), so K starts large and shrinks. K0 keeps §5.1's images per initial cluster (1.28 M
#   ImageNet images over 100k clusters: 12.8), i.e. K0 = 5469 for all 70,000 Fashion-MNIST images. The paper
#   does not say when merging stops: Eq. 11 re-standardised every epoch always finds pairs below ζ and
#   merges down to any floor, so mixlab keeps the distance threshold E{Z} + ζ·SE{Z} of the *first*
#   merge (`merge_threshold="first"`; `"each"` is the literal per-epoch rule). The final K is
#   whatever that leaves — the class count is never used — and ACC is Hungarian at that K.
#
# The E-step clusters v = E(x), the online encoder's projection (§3.2; `cluster_features`). Per epoch
# the log keeps K, the effective dimension of the clustered embeddings (participation ratio) and the
# largest cluster's share: label-free signs of a collapse, shown beside the merging curves.
#
# `mixlab/methods/siammm.py` walks through Algorithm 1 (App. A) step by step; every choice the paper
# leaves open is a config field. A cluster prediction is the argmax of the mixture posterior
# p(k | z) ∝ π_k c_d(κ_k) exp(κ_k μ_kᵀ z) over the *current* K.

# %% tags=["parameters"]
profile = "smoke"
seeds = [0]
publish = False                                                     # True only under `make reproduce`: write the tracked results/ and figures/
baselines = ["k-means (pixels)", "PCA + k-means", "UMAP + k-means"]  # first-try baselines, same images
merge_k0 = [30, 300]         # extra initial K for the merging curves (seed 0 only)
grid_clusters = 6            # clusters shown in the image grid (the largest ones)
grid_per_cluster = 12        # images per cluster
probe_full_dataset = False   # linear probe / k-NN on all rows of the dataset instead of the run's subset

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from mixlab.workbook import baselines as first_try
from mixlab import config, evaluation, metrics, rundir
from mixlab.workbook import experiments, grid, main_runs, viz
from mixlab.utils import io, paths
from mixlab.data import load as load_dataset

runs_dir, results_dir, figures_dir = paths.outputs(profile, publish)  # runs/<profile>/ unless publishing

torch.set_num_threads(2)
t0 = time.time()
EXP = "siammm"
cfg = config.resolve("siammm", profile)
print(f"{cfg.train.dataset} subset={cfg.train.subset} backbone={cfg.train.backbone} epochs={cfg.train.epochs} "
      f"K0={cfg.params.n_clusters} zeta={cfg.params.zeta} H={cfg.params.n_nearest} tau={cfg.params.tau} "
      f"kappa={cfg.params.kappa_mode}")

# %% [markdown]
# ## Train over the seeds; clustering metrics at the final K, majority accuracy, linear probe, k-NN
#
# ACC (Hungarian, one cluster per class) penalises a final K ≠ 10; **majority accuracy** labels every
# cluster with its most frequent class (SiamMM Table 3, after Tian et al. 2021) and does not.
# The **linear probe** (logistic regression) and **k-NN** (k = 20, cosine, votes weighted by
# exp(cos/0.07)) use the frozen backbone features, fitted on Fashion-MNIST's own training rows and
# scored on its test rows (`mixlab/evaluation.py`). Raw pixels are the reference a representation
# has to beat.

# %% tags=["grid"]
GRID = main_runs.runs(["SiamMM"], seeds, profile, keep_first=True)  # the main runs, shared with the leaderboard
for run in GRID:
    run.representation = True  # the linear probe / k-NN scores below, kept in each run's record
K0S = [k for k in merge_k0 if k != cfg.params.n_clusters]  # merging curves below; the profile's K0 is the runs above
GRID += [grid.Run(EXP, f"SiamMM-K0={k0}", "siammm", seeds[0],
                  {"method": {"n_clusters": k0}, "train": main_runs.train_overrides("siammm", profile)}) for k0 in K0S]

# %%
done = grid.submit(GRID, profile=profile, runs_dir=runs_dir, results_dir=results_dir)
rows = []
for r in (r for r in done if r["name"] == "SiamMM"):  # the main runs; done[...] also holds the K0 curves
    log = rundir.log(r["run_dir"])
    p = rundir.clusters(r["run_dir"])
    pred, labels = p["cluster"], p["labels"]
    rep = evaluation.representation_eval(r["run_dir"], full_dataset=probe_full_dataset)
    rows.append({**r, "K_final": log[-1]["K"], "majority_acc": metrics.majority_acc(labels, pred), **rep})
table = experiments.summarize(rows, metrics=("acc", "nmi", "ari", "ami", "majority_acc", "linear_probe_acc",
                                             "knn_acc", "K_final"))
table = first_try.beside(table, cfg.train, seeds, runs_dir=runs_dir, names=baselines)
experiments.write_table(table, results_dir, EXP, profile=profile,
                        note=f"{cfg.train.dataset} (subset {cfg.train.subset}), {cfg.train.backbone}, "
                             f"{cfg.train.augment}, {cfg.train.epochs} epochs, K0={cfg.params.n_clusters}, "
                             f"zeta={cfg.params.zeta}, H={cfg.params.n_nearest}; {experiments.seeds_label(seeds)}. "
                             "table.csv also holds AMI, majority ACC, linear-probe and k-NN accuracy "
                             "and the final K.")
experiments.show_table(table, profile, metrics=("acc", "nmi", "ari", "ami", "majority_acc", "linear_probe_acc",
                                               "knn_acc"))
print("final K per seed:", [r["K_final"] for r in rows])

# %%
data = load_dataset(cfg.train.dataset, subset=None if probe_full_dataset else cfg.train.subset,
                    seed=cfg.train.data_seed)
mask = data.train_mask.numpy().astype(bool)
pix = data.images.flatten(1).float().numpy() / 255.0
y = data.labels.numpy()
pixel_ref = {"linear_probe_acc": evaluation.linear_probe_acc(pix[mask], y[mask], pix[~mask], y[~mask]),
             "knn_acc": evaluation.knn_acc(pix[mask], y[mask], pix[~mask], y[~mask])}
io.write_json(f"{results_dir}/{EXP}/pixel_reference.json", {**pixel_ref, "n_train": int(mask.sum()),
                                                            "n_test": int((~mask).sum())})
print("raw pixels:", {k: round(v, 4) for k, v in pixel_ref.items()})

# %% [markdown]
# ## Merging curves: K per epoch from several initial K (SiamMM Fig. 2)
#
# The first centroids come from k-means at the end of epoch 1; merging (Eq. 11) runs after every epoch
# that trained with the cluster loss, with ζ = −1.2 (§5, "the 10th percentile"). Eq. 11 standardises the
# pairwise centroid distances, so re-standardised every epoch some pair is always "close" relative to the
# others; here the threshold distance is fixed at the first merge, so K levels off where no two
# centroids are closer than the first epoch's 10th percentile. The dotted line marks the 10 classes,
# which the method never sees.

# %%
curve_runs = {f"K0={cfg.params.n_clusters}, seed {r['seed']}": r["run_dir"] for r in rows}
for r in done:
    if r["name"].startswith("SiamMM-K0="):
        curve_runs[f"{r['name'].removeprefix('SiamMM-')}, seed {r['seed']}"] = r["run_dir"]
curves = {label: rundir.log(path) for label, path in curve_runs.items()}
fig, axes = plt.subplots(1, 4, figsize=(20, 3.8))
for label, log in curves.items():
    epochs = [x["epoch"] for x in log]
    axes[0].plot(epochs, [x["K"] for x in log], marker=".", label=label)
    axes[1].plot(epochs, [x.get("effective_dim", np.nan) for x in log], marker=".", label=label)
    axes[2].plot(epochs, [x["em_max_cluster_frac"] for x in log], marker=".", label=label)
    pts = [(x["K"], x["acc"]) for x in log if "acc" in x]
    axes[3].plot(*zip(*pts), marker="o", label=label)
axes[0].axhline(len(data.classes), ls=":", c="gray")
axes[0].set(xlabel="epoch", ylabel="K (after merging)", yscale="log", title="merging curves")
axes[1].set(xlabel="epoch", ylabel="participation ratio", title="effective dimension of E(x) (label-free)")
axes[2].set(xlabel="epoch", ylabel="largest cluster's share", title="cluster sizes (label-free)")
axes[3].set(xlabel="K", ylabel="ACC (Hungarian)", xscale="log", title="accuracy vs K (read right to left)")
axes[0].legend(fontsize=8)
viz.savefig(fig, "siammm_merging_curves", figures_dir, experiment=EXP, profile=profile,
            runs=curve_runs, zeta=cfg.params.zeta)

# %% [markdown]
# ## Training curves
#
# L_inst (Eq. 12) is BYOL's 2 − 2 cos summed over both directions (0 = perfect agreement). The cluster
# term starts at epoch 2; it is −log Σ π exp(κ μᵀv) as in Eq. 9, so it scales with κ̂ (≈ −κ̂ × the
# mean cosine to the nearest centroids). κ̂ is the PCA estimate of Eq. 16 on *uncentred* embeddings:
# an untrained network's embeddings are nearly parallel and genuinely concentrated, so the first κ̂ is
# large; LARS (§5.1) bounds each layer's step whatever the loss scale. Dividing L^H by the mean κ̂
# (`kappa_normalize`) is kept only as a named ablation.

# %%
fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
viz.training_curves(axes, rows, ["loss_inst", "loss_cluster", "kappa_mean", "nmi"])
viz.savefig(fig, "siammm_training_curves", figures_dir, experiment=EXP, profile=profile,
            runs=[r["run_dir"] for r in rows])

# %% [markdown]
# ## Per-cluster concentration (§4.4) and what the clusters contain
#
# κ̂_k (Eq. 16) measures how tight cluster k is. Left: κ̂_k against the cluster's purity (fraction of
# its most frequent class). Right: the learned clusters (largest first), each row a cluster, with the
# true class of every image shown — SiamMM Fig. 3 in miniature.

# %%
run0 = rows[0]["run_dir"]
kappa = rundir.weights(run0)["kappa"].float().numpy()
p = rundir.clusters(run0)
pred, labels = p["cluster"], p["labels"]
train_data = load_dataset(cfg.train.dataset, subset=cfg.train.subset, seed=cfg.train.data_seed)
K = len(kappa)
sizes = np.bincount(pred, minlength=K)
cont = np.zeros((K, len(train_data.classes)), dtype=int)
np.add.at(cont, (pred, labels), 1)
purity = cont.max(1) / np.maximum(cont.sum(1), 1)
fig, ax = plt.subplots(figsize=(4.5, 3.6))
sc = ax.scatter(kappa, purity, s=10 + 200 * sizes / sizes.max(), c="tab:blue", alpha=0.7)
ax.set(xlabel="κ̂_k (Eq. 16)", ylabel="cluster purity", title=f"K={K} clusters (size ∝ marker)")
viz.savefig(fig, "siammm_kappa_vs_purity", figures_dir, experiment=EXP, profile=profile, run=run0)
print("corr(kappa, purity) =", round(float(np.corrcoef(kappa[sizes > 0], purity[sizes > 0])[0, 1]), 3))

# %%
order = np.argsort(-sizes)[:grid_clusters]
g = torch.Generator().manual_seed(0)
fig, axes = plt.subplots(len(order), 1, figsize=(1.0 * grid_per_cluster, 1.35 * len(order)))
for ax, k in zip(np.atleast_1d(axes), order):
    members = np.flatnonzero(pred == k)
    pick = members[torch.randperm(len(members), generator=g)[:grid_per_cluster].numpy()]
    names = [train_data.classes[c][:7] for c in labels[pick]]
    top = train_data.classes[cont[k].argmax()]
    viz.image_grid(ax, train_data.images[pick].numpy(), nrow=1,
                   title=f"cluster {k}: n={sizes[k]}, κ̂={kappa[k]:.0f}, {100 * purity[k]:.0f}% {top} | "
                         + " · ".join(names))
    ax.title.set_fontsize(7)
viz.savefig(fig, "siammm_cluster_grid", figures_dir, experiment=EXP, profile=profile, run=run0)

# %%
print(f"siammm notebook done in {time.time() - t0:.0f} s")
