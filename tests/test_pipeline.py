"""make reproduce: skip unchanged notebooks, stop on a failure naming it, keep earlier results."""
import json
import os
import subprocess
import sys
import time

import pytest

from mixlab.config import ConfigError
from mixlab.workbook import notebooks, pipeline

NOTEBOOK = '''# %% tags=["parameters"]
profile = "smoke"
publish = False
fail = False

# %%
import json, pathlib
from mixlab.utils import paths
results_dir = paths.outputs(profile, publish).results_dir
assert not fail, "asked to fail"
out = paths.resolve(results_dir) / "{name}"
out.mkdir(parents=True, exist_ok=True)
(out / "table.csv").write_text("name,acc_mean,acc_std,nmi_mean,nmi_std,ari_mean,ari_std,seeds,wall_time_s\\nx,0.5,0.0,0.4,0.0,0.3,0.0,1,1.0\\n")
from mixlab.workbook import claims
v = claims.judge(claims.Claim("{name} > other", "Paper Tab. 1", a="{name}", b="other"), [0.6, 0.7, 0.65], [0.5, 0.58, 0.56])
claims.write(results_dir, "{name}", [v], profile=profile)
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    (tmp_path / "notebooks" / "params" / "smoke").mkdir(parents=True)
    (tmp_path / "mixlab").mkdir()
    names = ["first", "second", "third"]
    (tmp_path / "notebooks" / "manifest.yaml").write_text("notebooks: [first, second, third]\n")
    for name in names:
        (tmp_path / "notebooks" / f"{name}.py").write_text(NOTEBOOK.replace("{name}", name))
        (tmp_path / "notebooks" / "params" / "smoke" / f"{name}.yaml").write_text("fail: false\n")
    return tmp_path


def executed_copy(out_dir, name):
    """What a fake ``notebooks.execute`` leaves: an (empty) executed notebook, whose path it returns."""
    out = out_dir / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("{}")
    return out


def test_script_runner_runs_skips_and_summarizes(project):
    first = pipeline.reproduce("smoke", runner="script", root=project)
    assert [r["status"] for r in first] == ["ran"] * 3
    summary = project / "runs" / "smoke" / "results" / "summary.md"
    assert "| first | x | 50.0 | 40.0 | 30.0 | 1 |" in summary.read_text()  # one seed: no ± 0.0
    table = (project / "runs" / "smoke" / "results" / "claims.md").read_text()
    assert all(f"| Paper Tab. 1 | {n} > other | ACC | +10.3 ± 1.5 | 3 |" in table for n in ("first", "second", "third"))
    assert "3 held, 0 reversed, 0 undecided of 3 claims." in table
    again = pipeline.reproduce("smoke", runner="script", root=project)
    assert [r["status"] for r in again] == ["skipped"] * 3
    (project / "notebooks" / "params" / "smoke" / "second.yaml").write_text("fail: false\nextra: 1\n")
    third = pipeline.reproduce("smoke", runner="script", root=project)
    assert [r["status"] for r in third] == ["skipped", "ran", "skipped"]


def test_failure_names_notebook_and_keeps_earlier_results(project):
    (project / "notebooks" / "params" / "smoke" / "second.yaml").write_text("fail: true\n")
    with pytest.raises(notebooks.NotebookFailed, match=r"notebook second failed .*second\.log"):
        pipeline.reproduce("smoke", runner="script", root=project)
    assert (project / "runs" / "smoke" / "results" / "first" / "table.csv").is_file()
    assert json.loads((project / "runs" / "smoke" / ".pipeline" / "first.json").read_text())["status"] == "ran"
    assert not (project / "runs" / "smoke" / "results" / "third").exists()


def test_papermill_failure_names_notebook(project):
    """papermill runs a notebook built from its .py (no .ipynb in notebooks/)."""
    (project / "notebooks" / "params" / "smoke" / "first.yaml").write_text("fail: true\n")
    with pytest.raises(notebooks.NotebookFailed, match=r"notebook first failed .*first\.ipynb"):
        pipeline.reproduce("smoke", runner="papermill", root=project, only=["first"])


def test_bad_inputs(project):
    with pytest.raises(ConfigError, match="not in notebooks/manifest.yaml"):
        pipeline.reproduce("smoke", only=["nope"], root=project)
    (project / "notebooks" / "params" / "smoke" / "first.yaml").write_text("a: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        pipeline.reproduce("smoke", runner="script", root=project)


def test_render_writes_the_html_page_with_figures(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Title\n$x^2$"),
                nbformat.v4.new_code_cell("print(1)", outputs=[
                    nbformat.v4.new_output("stream", name="stdout", text="ok   1.check  |gap| = 1e-16\n"),
                    nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})])]
    executed = tmp_path / "runs" / "primer.ipynb"
    executed.parent.mkdir()
    nbformat.write(nb, executed)
    (html,) = notebooks.render(executed, tmp_path / "docs" / "primer")
    assert not list((tmp_path / "docs").rglob("*.ipynb")), "no notebook with outputs outside runs/"
    page = html.read_text()
    assert "data:image/png;base64,iVBORw0KGgo=" in page and "1.check" in page and "Title" in page
    assert not str(pipeline.RENDERED).startswith("notebooks")


def test_readme_blocks_are_filled_from_result_files(tmp_path):
    (tmp_path / "results" / "exp").mkdir(parents=True)
    (tmp_path / "results" / "exp" / "table.md").write_text("| run | ACC |\n|---|---|\n| x | 50.0 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("# r\n<!-- begin results/exp/table.md (written by make reproduce) -->\n_not yet run_\n"
                      "<!-- end results/exp/table.md -->\ntext\n<!-- begin results/claims.md -->\n_not yet run_\n"
                      "<!-- end results/claims.md -->\n")
    assert pipeline.fill_readme(readme, tmp_path) == 1
    text = readme.read_text()
    assert "| x | 50.0 |\n<!-- end results/exp/table.md -->\ntext\n" in text and f"{pipeline.NOT_PRODUCED}\n<!-- end results/claims.md" in text
    (tmp_path / "results" / "exp" / "table.md").write_text("| run | ACC |\n|---|---|\n| x | 61.0 |\n")
    assert pipeline.fill_readme(readme, tmp_path) == 1  # refilled, not appended
    assert "61.0" in readme.read_text() and "50.0" not in readme.read_text()
    (tmp_path / "results" / "exp" / "table.md").unlink()  # results deleted: the stale table goes too
    pipeline.fill_readme(readme, tmp_path)
    assert "61.0" not in readme.read_text() and pipeline.NOT_PRODUCED in readme.read_text()


def test_summary_without_tables_lists_the_timings(tmp_path):
    summary = pipeline.write_summary(tmp_path / "results", "smoke", [{"notebook": "em_elbo_primer", "status": "skipped"}])
    text = summary.read_text()
    assert "No results table" in text and "| em_elbo_primer | skipped |" in text
    assert "plumbing check" in text
    assert not (tmp_path / "results" / "summary.csv").exists()


@pytest.mark.slow
def test_only_the_primer_exits_0_and_writes_its_outputs(repo, tmp_path):
    """`reproduce --only em_elbo_primer`: no results table exists, which must not fail the run;
    the skipped re-run must not either. MIXLAB_ROOT keeps every output under tmp_path."""
    env = {**os.environ, "MIXLAB_ROOT": str(tmp_path), "PYTHONPATH": str(repo)}
    cmd = [sys.executable, "-m", "mixlab", "reproduce", "--profile", "smoke", "--only", "em_elbo_primer"]
    first = subprocess.run(cmd, cwd=repo / "notebooks", env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    smoke = tmp_path / "runs" / "smoke"
    assert json.loads((smoke / "results" / "em_elbo_primer" / "checks.json").read_text())
    assert list((smoke / "figures").glob("em_elbo_primer_*.png"))
    assert (smoke / "notebooks" / "em_elbo_primer.ipynb").is_file()
    assert "| em_elbo_primer | ran |" in (smoke / "results" / "summary.md").read_text()
    again = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "unchanged, skipped" in again.stdout
    assert "| em_elbo_primer | skipped (ran at commit " in (smoke / "results" / "summary.md").read_text()


def test_summary_timings_keep_the_notebooks_this_call_did_not_run(tmp_path):
    """`reproduce --only mice` must not erase the primer's time from summary.md: it comes from the stamp."""
    state = tmp_path / ".pipeline"
    state.mkdir()
    (state / "em_elbo_primer.json").write_text(json.dumps({"seconds": 41.5, "provenance": {"commit": "abc1234"}}))
    rows = pipeline.with_earlier_runs([{"notebook": "mice", "status": "ran", "seconds": 600.0}],
                                      ["em_elbo_primer", "mice", "tcc"], state)
    assert [(r["notebook"], r["status"], r.get("seconds")) for r in rows] == [
        ("em_elbo_primer", "earlier run (ran at commit abc1234)", 41.5), ("mice", "ran", 600.0), ("tcc", "not run", None)]
    drawn = pipeline.with_earlier_runs([{"notebook": "em_elbo_primer", "status": "ran", "seconds": 9.0,
                                         "commit": "def5678"}], ["em_elbo_primer"], state)
    assert drawn[0]["commit"] == "def5678"  # a notebook that ran now carries this commit, not its last stamp's
    skipped = pipeline.with_earlier_runs([{"notebook": "em_elbo_primer", "status": "skipped"}], ["em_elbo_primer"], state)
    assert skipped == [{"notebook": "em_elbo_primer", "status": "skipped (ran at commit abc1234)", "seconds": 41.5,
                        "reused_seconds": 0.0, "commit": "abc1234"}]


def test_summary_timings_survive_a_fresh_checkout(tmp_path):
    """With no stamps under runs/ (a fresh clone), a notebook's time comes from the committed timings."""
    committed = {"mice": {"seconds": 3883.6, "commit": "1cf70e5"}}
    rows = pipeline.with_earlier_runs([], ["mice", "tcc"], tmp_path / "no-stamps", committed)
    assert [(r["notebook"], r["status"], r.get("seconds")) for r in rows] == [
        ("mice", "earlier run (ran at commit 1cf70e5)", 3883.6), ("tcc", "not run", None)]


def test_jobs_run_notebooks_side_by_side_in_manifest_order(project, monkeypatch):
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def fake_execute(name, params, out_dir, root):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return executed_copy(out_dir, name)

    monkeypatch.setattr(notebooks, "execute", fake_execute)
    records = pipeline.reproduce("smoke", runner="papermill", jobs=2, root=project)
    assert [r["notebook"] for r in records] == ["first", "second", "third"]
    assert [r["status"] for r in records] == ["ran"] * 3
    assert peak[0] == 2


def test_a_failure_with_jobs_lets_the_running_notebook_finish_and_starts_no_other(project, monkeypatch):
    import threading
    import time

    started, second_started = [], threading.Event()

    def fake_execute(name, params, out_dir, root):
        started.append(name)
        if name == "second":
            second_started.set()
        if name == "first":
            second_started.wait(10)  # fail only once second runs beside it
            raise notebooks.NotebookFailed("notebook first failed (asked to fail); its executed copy is x")
        time.sleep(0.3)
        return executed_copy(out_dir, name)

    monkeypatch.setattr(notebooks, "execute", fake_execute)
    with pytest.raises(notebooks.NotebookFailed, match="notebook first failed"):
        pipeline.reproduce("smoke", runner="papermill", jobs=2, root=project)
    assert sorted(started) == ["first", "second"]  # both started, in either order; third never
    assert json.loads((project / "runs" / "smoke" / ".pipeline" / "second.json").read_text())["status"] == "ran"
    assert not (project / "runs" / "smoke" / ".pipeline" / "third.json").exists()


def test_jobs_start_the_longest_notebooks_first_by_their_last_times(project, monkeypatch, capsys):
    import threading

    started, lock = [], threading.Lock()

    def fake_execute(name, params, out_dir, root):
        with lock:
            started.append(name)
        return executed_copy(out_dir, name)

    results = project / "runs" / "smoke" / "results"
    results.mkdir(parents=True)
    (results / "timings.json").write_text(json.dumps({"first": {"seconds": 60, "commit": "a"},
                                                      "second": {"seconds": 300, "commit": "a"},
                                                      "third": {"seconds": 180, "commit": "a"}}))
    monkeypatch.setattr(notebooks, "execute", fake_execute)
    records = pipeline.reproduce("smoke", runner="papermill", jobs=2, root=project)
    assert sorted(started[:2]) == ["second", "third"] and started[2] == "first"
    assert [r["notebook"] for r in records] == ["first", "second", "third"]  # reported in manifest order
    assert "longest first by their last times (timings.json): second, third, first; about 5 min" in capsys.readouterr().out


def test_longest_first_and_its_expected_wall_time():
    expected = {"a": 10.0, "b": 50.0, "c": 30.0, "d": 30.0}
    assert pipeline.longest_first(["a", "b", "c", "d", "new"], expected) == ["new", "b", "c", "d", "a"]
    order = pipeline.longest_first(list(expected), expected)
    assert pipeline.expected_wall_seconds(order, expected, jobs=2) == 60.0  # b + a | c + d
    assert pipeline.expected_wall_seconds(order, expected, jobs=1) == 120.0
    assert pipeline.expected_wall_seconds(["a", "b", "c", "d"], expected, jobs=2) == 70.0  # a + c + d | b


def test_jobs_must_be_a_whole_number(project):
    with pytest.raises(ConfigError, match="jobs must be a whole number >= 1"):
        pipeline.reproduce("smoke", jobs=0, root=project)


def test_cli_jobs_must_be_a_whole_number(capsys):
    from mixlab.__main__ import main
    with pytest.raises(SystemExit):
        main(["reproduce", "--jobs", "two"])
    assert "--jobs: must be a whole number >= 1, got 'two'" in capsys.readouterr().err


def test_runs_reused_from_an_earlier_pass_count_toward_the_time_from_an_empty_runs_dir(project, monkeypatch):
    """A pass that reuses a trained run records that run's training seconds beside its own, in the stamp,
    timings.json and summary.md; a run trained in the pass, or published by an earlier pass only, adds nothing."""
    runs, results = project / "runs" / "smoke", project / "runs" / "smoke" / "results"

    def publish(run, wall, trained_before, published_before=False):
        trained = runs / "first" / run / "seed0" / "metrics.json"
        published = results / "first" / f"{run}-seed0" / "metrics.json"
        for path in (trained, published):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"wall_time_s": wall}))
        earlier = time.time() - 3600
        if trained_before:
            os.utime(trained, (earlier, earlier))
        if published_before:
            os.utime(published, (earlier, earlier))

    publish("stale", 999.0, trained_before=True, published_before=True)  # not used by this pass

    def fake_execute(name, params, out_dir, root):
        if name == "first":
            publish("reused", 120.0, trained_before=True)
            publish("trained now", 50.0, trained_before=False)
        return executed_copy(out_dir, name)

    monkeypatch.setattr(notebooks, "execute", fake_execute)
    records = pipeline.reproduce("smoke", runner="papermill", root=project)
    assert [r["reused_seconds"] for r in records] == [120.0, 0.0, 0.0]
    assert json.loads((runs / ".pipeline" / "first.json").read_text())["reused_seconds"] == 120.0
    timings = json.loads((results / "timings.json").read_text())
    assert timings["first"]["reused_seconds"] == 120.0 and "reused_seconds" not in timings["second"]
    first = records[0]["seconds"]
    assert f"| first | ran | {first} | 120.0 | {round(first + 120.0, 1)} |" in (results / "summary.md").read_text()
    assert pipeline.REUSE_NOTE in (results / "summary.md").read_text()


def test_longest_first_counts_the_runs_a_notebooks_last_pass_reused(project, monkeypatch, capsys):
    results = project / "runs" / "smoke" / "results"
    results.mkdir(parents=True)
    (results / "timings.json").write_text(json.dumps({"first": {"seconds": 60, "reused_seconds": 400, "commit": "a"},
                                                      "second": {"seconds": 300, "commit": "a"},
                                                      "third": {"seconds": 180, "commit": "a"}}))
    monkeypatch.setattr(notebooks, "execute", lambda name, params, out_dir, root: executed_copy(out_dir, name))
    pipeline.reproduce("smoke", runner="papermill", jobs=2, root=project)
    # 460 | 300 + 180 on two workers: 480 s
    assert "(timings.json): first, second, third; about 8 min" in capsys.readouterr().out


def test_the_notebooks_share_each_main_run_and_declare_it_once():
    # the leaderboard and the mice notebook both declare MiCE's main runs: `make train` sends each
    # run folder once, kept (snapshots and weights) because the mice notebook draws figures from it
    folders, runs = pipeline.declared_runs("smoke", only=["leaderboard", "mice"])
    keys = [(r.experiment, r.name, r.seed) for r in runs]
    assert len(keys) == len(set(keys)) and folders["results_dir"] == "runs/smoke/results"
    assert {"MiCE", "MoCo+skm", "SiamMM", "NMM", "TCC"} <= {r.name for r in runs if r.experiment == "main"}
    mice = next(r for r in runs if r.name == "MiCE" and r.seed == 0)
    assert mice.experiment == "main" and mice.keep
    assert not next(r for r in runs if r.name == "NMM").keep  # only the leaderboard, which draws no figure from it
