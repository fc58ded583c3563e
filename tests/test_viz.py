"""What a figure or a table shows a user: integer epoch ticks, a colour legend, no error bar or
± from one seed, and the smoke profile's caveat on figures and in table notes."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mixlab.config import SMOKE_NOTE  # noqa: E402
from mixlab.workbook import experiments, viz  # noqa: E402


def _table(seeds):
    return pd.DataFrame({"acc_mean": [0.182], "acc_std": [0.0], "nmi_mean": [0.3], "nmi_std": [0.0],
                         "ari_mean": [0.1], "ari_std": [0.0], "seeds": [seeds], "wall_time_s": [1.0]},
                        index=pd.Index(["MiCE"], name="name"))


def _runs(tmp_path, losses: dict[int, list[float]]) -> list[dict]:
    """Rows of one run name "MiCE" over seeds, each with a log.jsonl of ``losses[seed]``."""
    rows = []
    for seed, values in losses.items():
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        (run / "log.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "loss": v}) + "\n" for e, v in enumerate(values)))
        rows.append({"name": "MiCE", "seed": seed, "run_dir": str(run), "acc": 0.5 + 0.1 * seed, "nmi": 0.4, "ari": 0.3})
    return rows


def test_training_curves_show_the_seed_mean_with_a_band(tmp_path):
    fig, ax = plt.subplots()
    viz.training_curves(ax, _runs(tmp_path, {0: [2.0, 1.0], 1: [4.0, 3.0]}), ["loss"])
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [3.0, 2.0]  # the mean over the two seeds
    assert ax.collections, "no ± std band"


def test_bars_show_the_mean_and_each_seed(tmp_path):
    fig, ax = plt.subplots()
    viz.bars(ax, _runs(tmp_path, {0: [1.0], 1: [1.0], 2: [1.0]}))
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    assert np.isclose(heights[-1], 60.0)  # ACC bar: the mean of 50, 60, 70 %
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    assert {50.0, 60.0, 70.0} <= set(np.round(points, 6))


def test_savefig_on_smoke_stamps_the_caveat_and_returns_nothing(tmp_path):
    fig, ax = plt.subplots()
    viz.training_curves(ax, _runs(tmp_path, {0: [2.0, 1.0]}), ["loss"])
    assert viz.savefig(fig, "curves", tmp_path, profile="smoke") is None
    assert any(t.get_text() == SMOKE_NOTE for t in fig.texts)
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert json.loads((tmp_path / "curves.json").read_text())["profile"] == "smoke"
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "curves.pdf").is_file()
    fig, _ = plt.subplots()
    viz.savefig(fig, "cpu", tmp_path, profile="cpu")
    assert not fig.texts


def test_scatter_has_a_legend_naming_each_label():
    fig, ax = plt.subplots()
    viz.scatter_2d(ax, np.random.default_rng(0).normal(size=(30, 2)), np.repeat([0, 2, 5], 10),
                   names=[f"class {i}" for i in range(10)])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["class 0", "class 2", "class 5"]


def test_one_seed_has_no_spread():
    assert experiments.format_table(_table(1)).splitlines()[2].startswith("| MiCE | 18.2 | 30.0 | 10.0 | 1 |")
    assert "18.2 ± 0.0" in experiments.format_table(_table(3))
    assert experiments.seeds_label([0]) == "1 seed" and experiments.seeds_label(3) == "3 seeds, mean ± std"


def test_smoke_table_note_says_it_is_not_a_result(tmp_path):
    md = experiments.write_table(_table(1), tmp_path, "exp", profile="smoke", note="3 epochs.").read_text()
    assert f"{SMOKE_NOTE}." in md and md.rstrip().endswith("3 epochs.")
    assert SMOKE_NOTE not in experiments.write_table(_table(1), tmp_path, "cpu", profile="cpu").read_text()


def test_show_table_outside_jupyter_prints_markdown(capsys):
    experiments.show_table(_table(1), "smoke")
    out = capsys.readouterr().out
    assert out.startswith(f"**{SMOKE_NOTE}.**") and "| MiCE | 18.2 |" in out
