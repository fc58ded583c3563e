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
# # Leaderboard: every method on the same images, each at the budget where it converges
#
# Each method trains with its own paper settings (its profile) on the **same images** (dataset,
# subset, data seed) at the **same input size**, for the epochs its profile gives it: the label-free
# rule of `mixlab.workbook.budget` (the training objective has levelled off before the learning rate
# decays; at most 15 minutes of one core per run on `cpu`). These are the **main runs**
# (`mixlab.workbook.main_runs`): the same runs the methods' own notebooks show, trained once. Beside
# them: k-means on raw pixels, PCA + k-means and UMAP + k-means on the same images
# (`mixlab.workbook.baselines`). ACC is Hungarian-matched (K ≠ 10 allowed); "final K" is the number
# of non-empty clusters; "train s" is one run's training time on one core.

# %% tags=["parameters"]
profile = "smoke"
seeds = [0]
publish = False # True only under `make reproduce`: write the tracked results/ and figures/
methods = ["mice", "moco", "siammm", "nmm", "tcc"]
baselines = ["k-means (pixels)", "PCA + k-means", "UMAP + k-means"]

# %%
import matplotlib.pyplot as plt

from mixlab.workbook import baselines as first_try
from mixlab import config
from mixlab.workbook import experiments, grid, main_runs, viz
from mixlab.utils import paths

runs_dir, results_dir, figures_dir = paths.outputs(profile, publish)  # runs/<profile>/ unless publishing

EXP = "leaderboard"
NAMES = {"mice": "MiCE", "moco": "MoCo+skm", "siammm": "SiamMM", "nmm": "NMM", "tcc": "TCC"}

# %% tags=["grid"]
GRID = main_runs.runs([NAMES[method] for method in methods], seeds, profile)

# %%
rows = grid.submit(GRID, profile=profile, runs_dir=runs_dir, results_dir=results_dir)

# %% [markdown]
# ## The table

# %%
METRICS = ("acc", "nmi", "ari", "ami")
table = experiments.summarize(rows, metrics=METRICS + ("n_nonempty", "train_seconds", "epochs"))
table["final K"] = table["n_nonempty_mean"].round(1)
table["train s"] = table["train_seconds_mean"].round(1)
table["epochs"] = table["epochs_mean"].round(1)
train = config.resolve(methods[0], profile).train
sizes = {r["name"]: (r["input"]["image_size"], r["input"]["n_samples"]) for r in rows}
same_images = len(set(sizes.values())) == 1  # the cpu profile: every method at 16 px on all 70,000 images
images_note = ("" if same_images else "; NOT the same input for every method (image size, images): "
               + ", ".join(f"{name} {size}" for name, size in sizes.items()))
table = first_try.beside(table, train, seeds, runs_dir=runs_dir, names=baselines)
table.loc[list(baselines), "final K"] = table.loc[list(baselines), "n_nonempty_mean"]
table.loc[list(baselines), "train s"] = table.loc[list(baselines), "wall_time_s"]
experiments.write_table(table, results_dir, EXP, profile=profile, metrics=METRICS,
                        extra=("final K", "train s", "epochs"),
                        note=f"{train.dataset} (subset {train.subset or 'all'}, data seed {train.data_seed}), "
                             f"image size {train.image_size}; each method's own settings (its profile, epochs by "
                             f"mixlab.workbook.budget); {experiments.seeds_label(seeds)}; the main runs "
                             "(mixlab.workbook.main_runs); baselines: 'train s' is their fitting time"
                             + images_note + ".")
experiments.show_table(table, profile, METRICS, extra=("final K", "train s", "epochs"))

# %% [markdown]
# ## ACC against training time
#
# One line per method (first seed) from its per-epoch log: ACC at each evaluation against the
# training seconds spent so far; the dashed lines are the baselines on the same images.

# %%
first = [r for r in rows if r["seed"] == seeds[0]]
fig, ax = plt.subplots(figsize=(7, 4))
viz.training_curves(ax, first, ["acc"], x="train_seconds")
for i, name in enumerate(baselines):
    ax.axhline(table.loc[name, "acc_mean"], ls="--", lw=1, color=f"C{len(first) + i}", label=name)
ax.set_xlabel("training seconds")
ax.set_ylabel("ACC")
ax.legend(fontsize=8)
ax.set_title(f"ACC vs training time ({profile}, seed {seeds[0]})")
viz.savefig(fig, "leaderboard_acc_vs_time", figures_dir, experiment=EXP, profile=profile, seeds=seeds,
            runs={r["name"]: r["run_dir"] for r in rows if r["seed"] == seeds[0]})
