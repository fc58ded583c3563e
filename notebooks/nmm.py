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
# # Neural mixture EM on images: EM, consistency, and the two-fold optimization (NMM §7–8)
#
# The NMM paper (Tissera et al., "Neural Mixture Models with Expectation-Maximization for End-to-end Deep Clustering") clusters images with a CNN whose K
# output neurons are the mixture (see `nmm_2d` for the 2-D picture). For images it adds a
# transformed view x^tr of every image and two objectives:
#
# * **EM** (Eq. 7): −(1/n) Σ_i Σ_j p_ij [log h_j(x_i) + log h_j(x_i^tr)], with h_j = sigmoid(a*_j/γ),
#   p_i = softmax(a*_i) of the original image, held constant;
# * **consistency** (Eq. 8): KL(p_i ‖ q_i), q_i the posterior of the transformed image, p constant;
# * **two-fold** (Algorithm 1): per batch, one Adam step on Eq. 7, then a *fresh* forward and one
#   step of a second Adam on Eq. 8.
#
# We compare the three on Fashion-MNIST (grayscale + Sobel input, §8.2), as Table 3 does for
# "EM Optimization (Eq. 7)", "Two-Fold Optimization" and "IIC in our setting" (consistency only),
# then look inside the trained network (Fig. 6–8). On the `cpu` profile the network is mixlab's
# small CNN and training is short (see `mixlab/profiles/nmm.yaml`); `gpu`/`paper` use the
# Table 2 MNIST network.

# %% tags=["parameters"]
profile = "smoke"
seeds = [0]
publish = False                                                     # True only under `make reproduce`: write the tracked results/ and figures/
baselines = ["k-means (pixels)", "PCA + k-means", "UMAP + k-means"]  # first-try baselines, same images
n_tsne = 1000          # images embedded by t-SNE (Fig. 7)
n_show = 5             # clusters shown in Fig. 8
synth_steps = 200      # gradient-ascent steps per synthesized input (Fig. 8)
variant_seeds = [0]    # seeds of EM-only and consistency-only (NMM is the main run, on `seeds`)
unnormalized_seeds = [0]  # seeds of two-fold without the relevance normalization (Fig. 7b)

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from mixlab.workbook import baselines as first_try
from mixlab import config, engine, rundir
from mixlab.workbook import experiments, grid, main_runs, viz
from mixlab.utils import paths
from mixlab.data import load
from mixlab.evaluation import extract
from mixlab.workbook.nmm_figures import synthesize_cluster_input, topk_images

runs_dir, results_dir, figures_dir = paths.outputs(profile, publish)  # runs/<profile>/ unless publishing

torch.set_num_threads(2)
device = "cuda" if torch.cuda.is_available() else "cpu"  # for the analysis of trained networks
t0 = time.time()
EXP = "nmm"
VARIANTS = {  # name -> method overrides; "NMM" is the main run (two-fold, mixlab.workbook.main_runs)
    "NMM": {"objective": "twofold"},
    "em-only": {"objective": "em"},
    "consistency-only": {"objective": "consistency"},
}
TRAIN = main_runs.train_overrides("nmm", profile)  # the main run's snapshots and evaluations

# %% [markdown]
# ## Train the three objectives (Table 3 in miniature)

# %% tags=["grid"]
GRID = main_runs.runs(["NMM"], seeds, profile, keep_first=True)  # seeds[0]'s network: Fig. 7-8
GRID += [grid.Run(EXP, name, "nmm", seed, {"method": method_over, "train": TRAIN})
         for name, method_over in VARIANTS.items() if name != "NMM" for seed in variant_seeds]
GRID += [grid.Run(EXP, "two-fold-unnormalized", "nmm", seed,  # Fig. 7 and the normalization claim
                  {"method": {"objective": "twofold", "normalize": False}, "train": TRAIN},
                  keep=seed == unnormalized_seeds[0]) for seed in unnormalized_seeds]

# %%
done = grid.submit(GRID, profile=profile, runs_dir=runs_dir, results_dir=results_dir)
rows = [r for r in done if r["name"] in VARIANTS]
raws = [r for r in done if r["name"] == "two-fold-unnormalized"]
raw = raws[0] if raws else None  # None: drawn (MIXLAB_DRAW_ONLY=1) before it was recorded
table = experiments.summarize(rows)
cfg0 = config.resolve("nmm", profile)
table = first_try.beside(table, cfg0.train, seeds, runs_dir=runs_dir, names=baselines)
experiments.write_table(table, results_dir, EXP, profile=profile,
                        note=f"NMM on {cfg0.train.dataset} (subset {cfg0.train.subset}), backbone "
                             f"{cfg0.train.backbone}, Sobel input, {cfg0.train.epochs} epochs, batch "
                             f"{cfg0.train.batch_size}; {experiments.seeds_label(seeds)}.")
experiments.show_table(table, profile)

# %% [markdown]
# ## Training curves (Fig. 6)
#
# Accuracy per epoch of the two-fold optimization vs consistency alone (the paper's "IIC in our
# setting") and EM alone (mean over seeds, ± one std band), plus each stage's loss on seed 0.

# %%
runs0 = {r["name"]: r["run_dir"] for r in rows if r["seed"] == seeds[0]}
logs = {name: rundir.log(path) for name, path in runs0.items()}
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
viz.training_curves(axes[:2], rows, ["acc", "nmi"])  # mean over seeds, ± std band
for name, rows_ in logs.items():
    for key in ("em/loss", "consistency/loss", "loss"):
        pts = [(r["epoch"], r[key]) for r in rows_ if key in r]
        if pts:
            stage = key.split("/")[0] if "/" in key else VARIANTS[name]["objective"]
            axes[2].plot(*zip(*pts), marker=".", label=f"{name}: {stage}")
axes[2].set_xlabel("epoch")
axes[2].set_ylabel("stage loss (Eq. 7 / Eq. 8)")
axes[2].legend(fontsize=7)
viz.savefig(fig, "nmm_training_curves", figures_dir, profile=profile, experiment=EXP, runs=runs0)

# %% [markdown]
# ## What the final layer learned (Fig. 7)
#
# t-SNE of the final-layer response a* (before the softmax) for the same images: a randomly
# initialized network, a network trained two-fold **without** the relevance normalization, and the
# normalized two-fold network. Colours are the true classes; the titles give how many clusters the
# network actually uses.

# %%
trained = rundir.load(runs0["NMM"], device=device)
random_cfg = config.resolve("nmm", profile, {"train": {"device": device, "seed": seeds[0]}})
random_net = engine.build(random_cfg)
random_net.method.eval()

data = load(cfg0.train.dataset, subset=cfg0.train.subset, seed=cfg0.train.data_seed)
g = torch.Generator().manual_seed(0)
pick = torch.randperm(len(data), generator=g)[:n_tsne].sort().values
images, labels = data.images[pick], data.labels[pick].numpy()

panels = [("random network", random_net)]
panels += [("trained, un-normalized", rundir.load(raw["run_dir"], device=device))] if raw else []
panels += [("trained, normalized", trained)]
fig, axes = plt.subplots(1, len(panels), figsize=(14 * len(panels) / 3, 4.5))
for ax, (title, setup) in zip(axes, panels):
    emb = extract(setup.method, images, setup.augmenter, fn="embed")
    used = len(np.unique(emb.argmax(1)))
    viz.scatter_2d(ax, viz.embed_2d(emb, "tsne", seed=0), labels, title=f"{title}\n({used} clusters used)")
viz.savefig(fig, "nmm_tsne_final_layer", figures_dir, profile=profile, experiment=EXP, n=n_tsne,
            runs={"normalized": runs0["NMM"], "unnormalized": raw and raw["run_dir"]})
if raw:
    print(f"un-normalized two-fold run: acc {raw['acc']:.3f}, non-empty clusters {raw['n_nonempty']}")

# %% [markdown]
# ## Cluster prototypes (Fig. 8)
#
# For the `n_show` largest clusters of the normalized two-fold network: the ten images with the
# highest relevance a_ij, then an input synthesized by gradient ascent on that neuron before its
# activation (Simonyan et al.), from random noise, through the same Sobel preprocessing.

# %%
method, aug = trained.method, trained.augmenter
x_all = torch.cat([aug.clean(data.images[i:i + 2048].to(device)) for i in range(0, len(data), 2048)])
with torch.no_grad():
    sizes = torch.bincount(method.predict(x_all).argmax(1), minlength=method.n_clusters).cpu()
clusters = sizes.argsort(descending=True)[:n_show].tolist()
top = topk_images(method, x_all, k=10).cpu()
fig, axes = plt.subplots(n_show, 11, figsize=(11 * 1.1, n_show * 1.2))
for r, c in enumerate(clusters):
    for k in range(10):
        axes[r, k].imshow(data.images[top[c, k], 0].numpy(), cmap="gray")
    synth, trace = synthesize_cluster_input(method, c, aug.clean, (1, 28, 28), steps=synth_steps, seed=c)
    axes[r, 10].imshow(synth[0, 0].cpu().numpy(), cmap="magma")
    axes[r, 0].set_ylabel(f"cluster {c}\n(n={int(sizes[c])})", fontsize=8)
    print(f"cluster {c}: relevance of the synthesized input {trace[0]:.2f} -> {trace[-1]:.2f}; "
          f"top-10 classes {[data.classes[int(data.labels[i])][:7] for i in top[c]]}")
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 10].set_title("synthesized", fontsize=8)
viz.savefig(fig, "nmm_cluster_prototypes", figures_dir, profile=profile, experiment=EXP, clusters=clusters, run=runs0["NMM"])

# %% [markdown]
# ## The claims: NMM Tab. 3's ordering, and the relevance normalization (Fig. 7)
#
# Paired over seeds; the paired t-test over seeds decides at α = 0.05 (`mixlab.workbook.claims`); the
# verdicts go to `results/claims.md`. A row on one seed is an illustration and stays undecided.

# %%
from mixlab.workbook import claims

verdicts = [claims.judge_rows(claims.Claim("two-fold > EM-only", "NMM Tab. 3", a="NMM", b="em-only"), rows),
            claims.judge_rows(claims.Claim("EM-only > consistency-only", "NMM Tab. 3", a="em-only",
                                           b="consistency-only"), rows),
            claims.judge_rows(claims.Claim("normalized relevances > un-normalized (two-fold)", "NMM Fig. 7",
                                           a="NMM", b="two-fold-unnormalized"), rows + raws)]
claims.write(results_dir, EXP, verdicts, profile=profile)
experiments.show_markdown(claims.format_table(verdicts))

# %%
print(f"nmm done in {time.time() - t0:.0f} s")
