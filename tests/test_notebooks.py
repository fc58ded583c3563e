"""Every notebook of the manifest executes under papermill on the smoke profile and writes its
figures and metrics; notebooks are committed without outputs and paired with their .py file."""
import json
import subprocess

import jupytext
import pytest

from mixlab import notebook_files, pipeline
from mixlab.provenance import REPO

pytestmark = pytest.mark.slow  # notebooks run end to end: `pytest -m "not slow"` skips them

NAMES = pipeline.manifest(REPO)


@pytest.mark.parametrize("name", NAMES)
def test_paired_and_without_outputs(name):
    ipynb = REPO / "notebooks" / f"{name}.ipynb"
    py = REPO / "notebooks" / f"{name}.py"
    assert ipynb.is_file() and py.is_file(), f"{name}: both .ipynb and .py must be committed"
    nb = json.loads(ipynb.read_text())
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), f"{name} has outputs"
    paired = jupytext.read(py)
    def code(cells):
        return ["".join(c["source"]).strip() for c in cells if c["cell_type"] == "code"]

    assert code(paired.cells) == code(nb["cells"]), f"{name}.ipynb is out of sync: run jupytext --sync"
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])


@pytest.mark.parametrize("name", notebook_files.paired_names(REPO))
def test_committed_as_the_pinned_lab_saves_it(name):
    """Opening and saving with the pinned jupytext, as JupyterLab does, must change nothing: no
    outputs, the installed kernel's kernelspec, the pinned jupytext's header. Fix with
    `python -m mixlab notebooks`."""
    nb = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb["cells"]
               if c["cell_type"] == "code"), f"{name}.ipynb holds outputs; run python -m mixlab notebooks"
    assert nb["metadata"]["language_info"]["name"] == "python"
    metadata = notebook_files.kernel_metadata(language_info=nb["metadata"]["language_info"])
    py, ipynb = notebook_files.as_lab_would_save(REPO, name, metadata)
    assert py == (REPO / "notebooks" / f"{name}.py").read_text(), f"{name}.py: run python -m mixlab notebooks"
    assert ipynb == (REPO / "notebooks" / f"{name}.ipynb").read_text(), f"{name}.ipynb: run python -m mixlab notebooks"


def test_no_tracked_notebook_holds_outputs():
    """Anywhere in the repository (docs/ included): executed copies belong in the ignored runs/."""
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True)
    with_outputs = [path for path in tracked.stdout.split() if any(
        c.get("outputs") for c in json.loads((REPO / path).read_text())["cells"] if c["cell_type"] == "code")]
    assert not with_outputs, f"notebooks with outputs: {with_outputs}; strip them with python -m mixlab notebooks"


@pytest.mark.parametrize("name", NAMES)
def test_executes_on_smoke(name, tmp_path):
    params = pipeline.parameters(name, "smoke")
    params.update(runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"),
                  figures_dir=str(tmp_path / "figures"))
    pipeline.execute(name, params, tmp_path / "executed")
    figures = list((tmp_path / "figures").rglob("*.png"))
    assert figures, f"{name} wrote no figure"
    for fig in figures:
        assert fig.with_suffix(".json").is_file(), f"{fig.name} has no provenance sidecar"
    assert list((tmp_path / "results").rglob("*.json")) or list((tmp_path / "results").rglob("*.csv")), \
        f"{name} wrote no metrics"


def test_lab_working_directory_writes_nothing_under_notebooks(tmp_path, monkeypatch):
    """In JupyterLab the kernel runs in notebooks/ with the parameter cell's relative defaults
    (results, figures, runs, data/): they must land under the workbook root, here MIXLAB_ROOT,
    and the IDX files put in <root>/data/fashion-mnist (as the README says) must be found."""
    import papermill
    import yaml

    from mixlab.data.datasets import DATASETS

    data = tmp_path / "data" / "fashion-mnist"
    data.mkdir(parents=True)
    system = DATASETS["fashion-mnist"].system[0]
    for f in DATASETS["fashion-mnist"].files:
        (data / f).symlink_to(f"{system}/{f}")
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("MIXLAB_DATA", raising=False)
    notebooks = REPO / "notebooks"
    before = sorted(p.relative_to(notebooks) for p in notebooks.rglob("*"))
    params = yaml.safe_load((notebooks / "params" / "smoke" / "mice.yaml").read_text())
    papermill.execute_notebook(str(notebooks / "mice.ipynb"), str(tmp_path / "executed.ipynb"), parameters=params,
                               cwd=str(notebooks), kernel_name="python3", progress_bar=False)
    assert sorted(p.relative_to(notebooks) for p in notebooks.rglob("*")) == before
    assert list((tmp_path / "figures").glob("mice_*.png")) and (tmp_path / "results" / "mice" / "table.csv").is_file()
    metrics = json.loads(next((tmp_path / "runs" / "mice").rglob("metrics.json")).read_text())
    assert metrics["provenance"]["data_source"] == str(data)
