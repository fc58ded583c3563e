"""How many epochs a method's main runs get: a label-free rule measured once, on seed 0.

The rule, fixed before any probe ran:

1. **Probe.** Seed 0 trains at the profile's settings with the learning rate held at its initial
   value (``schedule: constant``, no decay) for :data:`PROBE_EPOCHS` epochs, evaluation only at the
   end (its score is never read by the rule).
2. **Levelled off.** With ``L_e`` the epoch-mean training objective (:func:`objective`), the
   objective has levelled off at the first epoch ``E1 >= 1 + WINDOW`` where the last ``WINDOW``
   epochs bring at most ``FRACTION`` of the decrease made since epoch 1:
   ``L_{E1-WINDOW} - L_{E1} <= FRACTION * (L_1 - L_{E1})`` (:func:`levelled_epoch`). A probe that
   never levels off gives ``E1 = PROBE_EPOCHS`` and says so.
3. **Schedule.** The learning-rate decay starts once the objective has levelled off, at the paper's
   own fraction of the run: step schedules decay first at 48 % (MiCE App. D: 480 of 1000 epochs), so
   ``E = ceil(E1 / 0.48)`` with steps at ``round(0.48 E), round(0.64 E), round(0.8 E)``; a cosine
   schedule is above half its peak for the first half, so ``E = 2 E1``; a constant schedule (NMM
   §8.2) stops at ``E = E1``.
4. **Cap.** One run may take at most :data:`MAX_RUN_SECONDS` of one core:
   ``E <= floor(MAX_RUN_SECONDS / seconds per epoch of the probe)`` (the median over its epochs, so
   other jobs that shared the machine for a while do not shorten the run), so three seeds of every
   main run fit the pipeline's 12 core-hours. A capped E is marked as such.

``python -m mixlab.workbook.budget`` runs the probes (or reuses them) and writes
``results/budget/budget.md``; the profiles (``mixlab/profiles/*.yaml``) carry the epochs it gives.
"""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import asdict, dataclass

from mixlab import config as config_mod
from mixlab import rundir
from mixlab.utils import io, paths
from mixlab.workbook import experiments, report

PROBE_EPOCHS = 20
WINDOW, FRACTION = 3, 0.05
MAX_RUN_SECONDS = 900
DECAY_START = {"step": 0.48, "cosine": 0.5, "constant": 1.0}
STEP_FRACTIONS = (0.48, 0.64, 0.8)
PROBED = ("mice", "siammm", "nmm", "tcc")  # MoCo takes MiCE's epochs (MiCE App. D: same settings)
EXPERIMENT = "budget"


def probe_overrides() -> dict:
    """The probe's departures from the profile: initial lr throughout, :data:`PROBE_EPOCHS` epochs."""
    return {"train": {"schedule": "constant", "milestones": [], "epochs": PROBE_EPOCHS, "eval_every": 0}}


def objective(row: dict) -> float:
    """The training objective of one log row: ``loss``, or the sum of a multi-stage method's
    ``<stage>/loss`` terms (NMM's two-fold). SiamMM's instance term ``loss_inst`` (Eq. 12) stands for
    its objective: the cluster term's scale moves with kappa and K as clusters merge."""
    if "loss_inst" in row:
        return float(row["loss_inst"])
    if "loss" in row:
        return float(row["loss"])
    return float(sum(v for k, v in row.items() if k.endswith("/loss")))


def levelled_epoch(losses: list[float], window: int = WINDOW, fraction: float = FRACTION) -> int | None:
    """The first epoch e (1-based) with ``L[e-window] - L[e] <= fraction * (L[1] - L[e])``, or None."""
    for e in range(1 + window, len(losses) + 1):
        gained = losses[0] - losses[e - 1]
        if gained > 0 and losses[e - 1 - window] - losses[e - 1] <= fraction * gained:
            return e
    return None


@dataclass
class Budget:
    """One method's epochs by the rule, with what it was measured from."""

    method: str
    levelled: int | None      # E1 (None: the probe never levelled off)
    seconds_per_epoch: float  # median over the probe's epochs of its training steps, one core
    schedule: str
    by_rule: int              # E from E1 and the schedule
    cap: int                  # MAX_RUN_SECONDS / seconds_per_epoch
    epochs: int               # min(by_rule, cap)
    milestones: list[int]     # the step schedule's decay epochs (empty otherwise)


def budget(method: str, log: list[dict], schedule: str) -> Budget:
    """Apply the rule to a probe's log (rows of :func:`mixlab.rundir.log`)."""
    losses = [objective(row) for row in log]
    e1 = levelled_epoch(losses)
    by_rule = math.ceil((e1 or len(losses)) / DECAY_START[schedule])
    seconds = statistics.median(row["seconds"] - row.get("eval_seconds", 0.0) for row in log)
    cap = max(1, math.floor(MAX_RUN_SECONDS / seconds))
    epochs = min(by_rule, cap)
    milestones = [round(f * epochs) for f in STEP_FRACTIONS] if schedule == "step" else []
    return Budget(method, e1, round(seconds, 1), schedule, by_rule, cap, epochs, milestones)


def probe(method: str, profile: str = "cpu", *, force: bool = False) -> Budget:
    """Run (or reuse) ``method``'s probe on seed 0 of ``profile`` and apply the rule to it."""
    outputs = paths.outputs(profile, publish=True)
    row = experiments.run(EXPERIMENT, f"{method}-probe", method, profile=profile, seed=0,
                          overrides=probe_overrides(), runs_dir=outputs.runs_dir, results_dir=outputs.results_dir,
                          force=force)
    schedule = config_mod.resolve(method, profile).train.schedule
    return budget(method, rundir.log(row["run_dir"]), schedule)


def plot(budgets: list[Budget], logs: dict[str, list[dict]], profile: str) -> None:
    """``figures/budget_probes.png``: each probe's objective per epoch, E1 and E marked."""
    import matplotlib.pyplot as plt

    from mixlab.workbook import viz

    fig, axes = plt.subplots(1, len(budgets), figsize=(4 * len(budgets), 3.2), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        epochs = [row["epoch"] for row in logs[b.method]]
        ax.plot(epochs, [objective(row) for row in logs[b.method]], marker=".")
        if b.levelled:
            ax.axvline(b.levelled, color="tab:green", ls="--", lw=1, label=f"levelled off: E1 = {b.levelled}")
        ax.set(xlabel="epoch", ylabel="training objective", title=f"{b.method}: E = {b.epochs}"
               + (" (capped)" if b.epochs < b.by_rule else ""))
        ax.legend(fontsize=8)
    fig.tight_layout()
    viz.savefig(fig, "budget_probes", paths.outputs(profile, publish=True).figures_dir, profile=profile,
                experiment=EXPERIMENT, probe_epochs=PROBE_EPOCHS, window=WINDOW, fraction=FRACTION)
    plt.close(fig)


def write(budgets: list[Budget], profile: str) -> None:
    """``results/budget/budget.md``: each method's probe and the epochs it gives."""
    columns = ["method", "levelled off at E1", "s/epoch (1 core)", "schedule", "E by rule", "cap", "E", "steps at"]
    rows = [[b.method, b.levelled if b.levelled else f"not by {PROBE_EPOCHS}", b.seconds_per_epoch, b.schedule,
             b.by_rule, b.cap, f"{b.epochs}" + (" (capped)" if b.epochs < b.by_rule else ""),
             ", ".join(map(str, b.milestones)) or "–"] for b in budgets]
    note = (f"Rule (mixlab.workbook.budget): seed 0 at the initial lr for {PROBE_EPOCHS} epochs; E1 = first epoch"
            f" whose last {WINDOW} epochs bring <= {FRACTION:.0%} of the decrease since epoch 1; E = E1 / (the"
            f" schedule's decay start), at most {MAX_RUN_SECONDS} s of one core per run. MoCo takes MiCE's E.")
    root = paths.resolve(paths.outputs(profile, publish=True).results_dir) / EXPERIMENT
    report.write(root / "budget.md", report.table(columns, rows), writer="mixlab.workbook.budget", profile=profile,
                 note=note)
    io.write_json(root / "budget.json", [asdict(b) for b in budgets])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mixlab.workbook.budget", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=config_mod.PROFILES)
    parser.add_argument("--method", action="append", choices=PROBED, help="probe only these (default: all)")
    parser.add_argument("--force", action="store_true", help="train the probes again")
    args = parser.parse_args(argv)
    budgets = [probe(m, args.profile, force=args.force) for m in (args.method or PROBED)]
    write(budgets, args.profile)
    outputs = paths.outputs(args.profile, publish=True)
    plot(budgets, {b.method: rundir.log(experiments.run_dir(EXPERIMENT, f"{b.method}-probe", 0, outputs.runs_dir))
                   for b in budgets}, args.profile)
    for b in budgets:
        print(b)


if __name__ == "__main__":
    main()
