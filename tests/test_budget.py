"""The label-free budget rule: where a probe's objective levels off, and the epochs it gives."""
import pytest

from mixlab.workbook import budget


def test_levelled_epoch_is_where_three_epochs_bring_under_five_percent_of_the_decrease():
    # decrease since epoch 1 at epoch e: 1 - 2^-(e-1); over the last 3 epochs: 2^-(e-4) - 2^-(e-1)
    losses = [1 + 2.0 ** -(e - 1) for e in range(1, 21)]
    e1 = budget.levelled_epoch(losses)
    gained = lambda e: losses[0] - losses[e - 1]  # noqa: E731
    assert losses[e1 - 4] - losses[e1 - 1] <= 0.05 * gained(e1)
    assert losses[e1 - 5] - losses[e1 - 2] > 0.05 * gained(e1 - 1)  # not one epoch earlier
    assert budget.levelled_epoch([3.0, 2.0, 1.0, 0.0, -1.0]) is None  # still falling steadily
    assert budget.levelled_epoch([1.0, 1.2, 1.3, 1.4]) is None        # never decreased


def test_budget_applies_the_schedule_fraction_and_the_cap():
    log = [{"loss": 1 + 2.0 ** -(e - 1), "seconds": 31.0, "eval_seconds": 1.0} for e in range(1, 21)]
    e1 = budget.levelled_epoch([r["loss"] for r in log])
    step = budget.budget("mice", log, "step")
    assert step.levelled == e1 and step.seconds_per_epoch == 30.0 and step.cap == 30
    assert step.by_rule == -(-e1 // 0.48) and step.epochs == min(step.by_rule, 30)
    assert step.milestones == [round(f * step.epochs) for f in (0.48, 0.64, 0.8)]
    assert budget.budget("siammm", log, "cosine").by_rule == 2 * e1
    assert budget.budget("nmm", log, "constant").epochs == e1
    slow = [{**r, "seconds": 301.0} for r in log]
    assert budget.budget("tcc", slow, "step").epochs == 3  # 900 s of one core: capped
    shared = [{**r, "seconds": 301.0 if e < 5 else r["seconds"]} for e, r in enumerate(log)]
    assert budget.budget("tcc", shared, "step").cap == 30  # a few epochs beside other jobs: the median


def test_objective_of_a_multi_stage_and_a_siammm_row():
    assert budget.objective({"em/loss": 1.0, "consistency/loss": 0.25, "lr": 5e-5}) == pytest.approx(1.25)
    assert budget.objective({"loss": -7000.0, "loss_inst": 0.6, "K": 50}) == 0.6
