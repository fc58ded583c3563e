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
# # Cluster your own images
#
# Point `images` at a folder of pictures (searched recursively; PNG, JPEG, BMP, GIF, WebP, TIFF,
# whatever Pillow reads). If they sit in one subfolder per class (torchvision's ImageFolder layout)
# the subfolder names are used **for evaluation only**; otherwise nothing needs labels. The images
# are decoded once, resized to the profile's image size and cached (`mixlab/data/folder.py`).
#
# With `n_clusters = None` you do not need to know K: training starts from a large K0 and clusters
# are merged by SiamMM's rule (Wang, Huang & Liang, arXiv 2024, Eq. 11): clusters i, j merge when
# their standardised centroid distance (Z_ij − E Z) / SE Z is below ζ. SiamMM merges during
# training, once per epoch; for the other methods the same rule runs after training on the learned
# embeddings (`mixlab/workbook/choose_k.py`). K0 and ζ are SiamMM's own values for the profile,
# K0 at most one initial cluster per ~13 images of the folder (the paper's ratio).
#
# With `images = None` the notebook writes and clusters a generated example folder (`example`:
# drawn shapes, or a Fashion-MNIST subset as PNG files) under `runs_dir`; your own folder is the
# real use. From a terminal the same run is
# `python -m mixlab train --method mice --dataset folder:PATH --out runs/mine`.

# %% tags=["parameters"]
profile = "smoke"
images = None                 # your folder; None = a generated example folder, see example below
example = "shapes"            # "shapes" or "fashion-mnist": what to generate when images is None
example_size = 16             # shapes: images per shape; fashion-mnist: images in all
method = "mice"               # mice, moco, siammm, nmm or tcc
n_clusters = None             # K, or None: start from K0 and merge (SiamMM Eq. 11)
merge_rounds = None           # other methods with n_clusters None: at most this many Eq. 11 rounds; None = until none merges
seed = 0
settings = {}                 # extra overrides, e.g. {"train": {"batch_size": 64}, "method": {"queue_size": 512}}
retrain = False               # train again even if a finished run with the same settings exists
grid_clusters = 6             # clusters shown in the image grid (the largest ones)
grid_per_cluster = 8          # most confident images per cluster
map_method = "tsne"           # 2-D map: "tsne" or "umap"
publish = False      # True only under `make reproduce`: write the tracked results/ and figures/

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from mixlab.workbook import choose_k, grid, viz
from mixlab import evaluation, metrics, rundir
from mixlab.utils import io, paths
from mixlab.data import example_images, folder
from mixlab.utils.provenance import provenance

runs_dir, results_dir, figures_dir = paths.outputs(profile, publish)  # runs/<profile>/ unless publishing

t0 = time.time()
EXP = "your_images"
if images is None:
    images = str(paths.resolve(runs_dir) / f"example-{example}")
    if not Path(images).exists():
        write = {"shapes": example_images.write_shapes, "fashion-mnist": example_images.write_fashion_mnist}[example]
        write(images, example_size)
    print(f"no folder given: clustering the generated example folder {images}")
n_images = len(folder.scan(Path(images).expanduser()).paths)
overrides = choose_k.overrides(method, profile, n_clusters, n_images)
for section, values in settings.items():
    overrides.setdefault(section, {}).update(values)
overrides.setdefault("train", {})["dataset"] = f"folder:{images}"
print(f"method={method} profile={profile} K={'K0 ' if n_clusters is None else ''}{overrides['method']['n_clusters']}")

# %% [markdown]
# ## Train
# A finished run with the same settings is reused (set `retrain = True` after changing the folder).

# %% tags=["grid"]
GRID = [grid.Run(EXP, method, method, seed, overrides)]

# %%
run, = grid.submit(GRID, profile=profile, runs_dir=runs_dir, results_dir=results_dir, force=retrain)
cfg, spec, augmenter, model = rundir.load(run["run_dir"])
data = evaluation.load_matching(cfg.train.dataset, cfg, spec)
posterior = evaluation.apply(cfg, augmenter, model, data.images, "predict")
embedding = evaluation.apply(cfg, augmenter, model, data.images, "embed")
print(f"{len(data)} images, {spec['channels']} channel(s) at {spec['stored_size']} px, "
      f"{'labelled by subfolder' if data.labels is not None else 'unlabeled'}")

# %% [markdown]
# ## Choose K (when `n_clusters` is None)

# %%
k_rule = choose_k.settings(profile, n_images)
if n_clusters is None and method == "siammm":
    trajectory = choose_k.siammm_trajectory(rundir.log(run["run_dir"]), k_rule["k0"])
    how = "SiamMM, Eq. 11 after every epoch"
elif n_clusters is None:
    old_to_new, merged = choose_k.merge_on_embeddings(embedding, posterior.argmax(1), k_rule["zeta"],
                                                      min_clusters=k_rule["min_clusters"],
                                                      max_rounds=merge_rounds or 100)
    cluster, prob = choose_k.group_assignments(posterior, old_to_new)
    trajectory = [k_rule["k0"]] + merged  # K0, the clusters training left non-empty, then each merge round
    how = f"non-empty after training, then Eq. 11 on the learned embeddings, zeta={k_rule['zeta']}"
else:
    trajectory, how = [n_clusters], "given"
if method == "siammm" or n_clusters is not None:
    cluster, prob = posterior.argmax(1), posterior.max(1)
sizes = metrics.cluster_sizes(cluster)
print(f"K: {' -> '.join(map(str, trajectory))} ({how}); non-empty clusters: {int((sizes > 0).sum())}")
if len(trajectory) > 1:
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(range(len(trajectory)), trajectory, marker="o")
    ax.set(xlabel="epoch" if method == "siammm" else "step (0 = K0, 1 = after training, then merge rounds)", ylabel="K", title=f"K trajectory ({method})")
    viz.savefig(fig, f"{EXP}_{method}_k_trajectory", figures_dir, profile=profile, images=images, rule=how)

# %% [markdown]
# ## The most confident images of the largest clusters, and the cluster sizes

# %%
order = [int(k) for k in np.argsort(-sizes) if sizes[k] > 0][:grid_clusters]
fig, axes = plt.subplots(len(order), 1, figsize=(grid_per_cluster, 1.5 * len(order)), squeeze=False)
for ax, k in zip(axes[:, 0], order):
    members = np.flatnonzero(cluster == k)
    best = members[np.argsort(-prob[members])][:grid_per_cluster]
    viz.image_grid(ax, data.images[best].numpy(), nrow=1, title=f"cluster {k}: {sizes[k]} images")
viz.savefig(fig, f"{EXP}_{method}_grid", figures_dir, profile=profile, images=images)
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(range(int((sizes > 0).sum())), np.sort(sizes[sizes > 0])[::-1])
ax.set(xlabel="cluster (by size)", ylabel="images", title=f"cluster sizes, largest {sizes.max() / len(cluster):.0%}")
viz.savefig(fig, f"{EXP}_{method}_sizes", figures_dir, profile=profile, images=images)

# %% [markdown]
# ## A 2-D map of the learned embeddings

# %%
xy = viz.embed_2d(embedding, map_method, seed=seed)
panels = [("clusters", cluster)] + ([("subfolders (not used for training)", data.labels.numpy())]
                                    if data.labels is not None else [])
fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
for ax, (title, colour) in zip(axes[0], panels):
    viz.scatter_2d(ax, xy, colour, title=f"{map_method}: {title}", s=8)
viz.savefig(fig, f"{EXP}_{method}_map", figures_dir, profile=profile, images=images, map=map_method)

# %% [markdown]
# ## Write the assignments
# One row per image: its path relative to the folder, its cluster and the posterior probability of
# that cluster. With subfolders, ACC/NMI against them are reported for reference only.

# %%
out = Path(results_dir) / EXP
csv = rundir.write_assignments(out / f"{method}_assignments.csv", rundir.ids_of(data), cluster=cluster,
                            probability=prob)
summary = {"images": images, "method": method, "n_images": len(data), "K": int((sizes > 0).sum()),
           "k_trajectory": trajectory, "cluster_sizes": sizes.tolist(),
           "max_cluster_frac": float(sizes.max() / len(cluster)), "objective": run.get("objective"),
           **(metrics.evaluate(data.labels, cluster) if data.labels is not None else {}),
           "provenance": provenance(profile=profile)}
io.write_json(out / f"{method}_summary.json", summary)
print(f"wrote {csv} ({len(data)} rows); {time.time() - t0:.0f} s in all")
