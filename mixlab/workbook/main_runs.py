"""The main runs: each method once per seed at its profile's budget, shared by every notebook.

The leaderboard, a method's own notebook and its ablation notebook's reference row all draw the
same run (``runs_dir/main/<name>/seed<seed>``, published to ``results_dir/main/<name>-seed<seed>``),
so a configuration is trained once. The methods' settings are their profiles'
(``mixlab/profiles/<method>.yaml``, epochs by :mod:`mixlab.workbook.budget`); the overrides here add
only what the notebooks draw: embedding snapshots at the first, middle and last epoch, and an
evaluation every tenth of the run for the training curves.
"""
from __future__ import annotations

from mixlab import config
from mixlab.workbook import grid

EXPERIMENT = "main"
MAIN = {  # run name -> (method, method overrides)
    "MiCE": ("mice", {}),
    "MoCo+skm": ("moco", {}),
    "SiamMM": ("siammm", {}),
    "NMM": ("nmm", {}),  # two-fold, the profile's objective (§8.2)
    "TCC": ("tcc", {}),  # Eq. (2)'s per-image KL, the reference
    "TCC, batch-marginal KL": ("tcc", {"kl": "marginal"}),  # the departure it is tested against
}
LEADERBOARD = ("MiCE", "MoCo+skm", "SiamMM", "NMM", "TCC")


def train_overrides(method: str, profile: str) -> dict:
    """Snapshots at epochs 1, E/2 and E, and an evaluation every max(1, round(E / 10)) epochs."""
    epochs = config.resolve(method, profile).train.epochs
    return {"snapshot_epochs": sorted({1, max(1, epochs // 2), epochs}), "eval_every": max(1, round(epochs / 10))}


def run(name: str, seed: int, profile: str, keep: bool = False) -> grid.Run:
    """The main run ``name`` (a key of :data:`MAIN`) of ``seed``; ``keep``: its record keeps the
    snapshots and weights a notebook's figures read."""
    if name not in MAIN:
        raise ValueError(f"{name!r} is not a main run; choose from {', '.join(MAIN)}")
    method, method_overrides = MAIN[name]
    return grid.Run(EXPERIMENT, name, method, seed,
                    {"train": train_overrides(method, profile), "method": dict(method_overrides)}, keep)


def runs(names, seeds, profile: str, keep_first: bool = False) -> list[grid.Run]:
    """:func:`run` for every name of ``names`` and seed of ``seeds``, seed-major; ``keep_first``:
    the first seed's records keep snapshots and weights (the seed a notebook's figures show)."""
    return [run(name, seed, profile, keep=keep_first and seed == seeds[0]) for seed in seeds for name in names]
