"""Every notebook of the manifest executes under papermill on the smoke profile and writes its
figures and metrics; notebooks are committed without outputs and paired with their .py file."""
import json
import shutil
import subprocess

import jupytext
import pytest

from mixlab.utils.provenance import REPO
from mixlab.workbook import notebooks

pytestmark = pytest.mark.slow  # notebooks run end to end: `pytest -m "not slow"` skips them

NAMES = notebooks.manifest(REPO)


def test_notebooks_are_tracked_as_py_only():
    """Only the jupytext .py files are tracked; their .ipynb twins are git-ignored, so the lab's
    autosave (outputs into the .ipynb) never changes a tracked file."""
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO, capture_output=True, text=True, check=True)
    assert tracked.stdout.split() == [], f"tracked notebooks: {tracked.stdout.split()}; git rm --cached them"
    for name in NAMES:
        assert (REPO / "notebooks" / f"{name}.py").is_file(), f"{name}.py is missing"
        ignored = subprocess.run(["git", "check-ignore", "-q", f"notebooks/{name}.ipynb"], cwd=REPO)
        assert ignored.returncode == 0, f"notebooks/{name}.ipynb is not git-ignored"
    assert set(NAMES) <= set(notebooks.names(REPO))


@pytest.mark.parametrize("name", NAMES)
def test_built_notebook_has_a_parameters_cell(name, tmp_path):
    nb = json.loads(notebooks.build(name, tmp_path / f"{name}.ipynb").read_text())
    assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"])
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


LANGUAGE_INFO = {"name": "python"}  # not written into a .py; any value gives the same text


@pytest.mark.parametrize("name", notebooks.names(REPO))
def test_committed_as_the_pinned_lab_saves_it(name):
    """Opening and saving the .py with the pinned jupytext, as JupyterLab does, must change
    nothing (the installed kernel's kernelspec, the pinned jupytext's header): the lab's autosave
    leaves git status clean. Fix with `python -m mixlab notebooks`."""
    metadata = notebooks.kernel_metadata(language_info=LANGUAGE_INFO)
    py = notebooks.as_lab_would_save(REPO, name, metadata)
    assert py == (REPO / "notebooks" / f"{name}.py").read_text(), f"{name}.py: run python -m mixlab notebooks"


def test_lab_opens_py_as_notebook():
    """make lab installs the override that opens a .py as a notebook on a double-click."""
    overrides = json.loads((REPO / ".jupyter" / "overrides.json").read_text())
    viewers = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook"


@pytest.mark.parametrize("name", NAMES)
def test_executes_on_smoke(name, tmp_path, monkeypatch):
    """Under the pipeline's parameters (publish=True) a smoke pass still writes only under
    runs/smoke/ of the workbook root, here MIXLAB_ROOT."""
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    notebooks.execute(name, notebooks.parameters(name, "smoke"), tmp_path / "executed")
    out = tmp_path / "runs" / "smoke"
    figures = list((out / "figures").rglob("*.png"))
    assert figures, f"{name} wrote no figure"
    for fig in figures:
        assert fig.with_suffix(".json").is_file(), f"{fig.name} has no provenance sidecar"
    assert list((out / "results").rglob("*.json")) or list((out / "results").rglob("*.csv")), \
        f"{name} wrote no metrics"
    assert not (tmp_path / "results").exists() and not (tmp_path / "figures").exists()


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
    folder = REPO / "notebooks"
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    params = yaml.safe_load((folder / "params" / "smoke" / "mice.yaml").read_text())
    source = notebooks.build("mice", tmp_path / "mice.ipynb")
    papermill.execute_notebook(str(source), str(tmp_path / "executed.ipynb"), parameters=params,
                               cwd=str(folder), kernel_name="python3", progress_bar=False)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    out = tmp_path / "runs" / "smoke"
    assert list((out / "figures").glob("mice_*.png")) and (out / "results" / "mice" / "table.csv").is_file()
    metrics = json.loads(next((out / "mice").rglob("metrics.json")).read_text())
    assert metrics["provenance"]["data_source"] == str(data)


def workbook_copy(dest):
    """A git checkout of the working tree as it is (tracked and new files, nothing ignored): what a
    clone of it would hold."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest


@pytest.mark.parametrize("name", ["em_elbo_primer", "mice"])
def test_default_parameters_leave_a_clone_clean(name, tmp_path, monkeypatch):
    """Run All on a notebook as committed (its parameters cell, as in the lab: kernel in
    notebooks/, the clone's own mixlab) writes nothing tracked and nothing untracked."""
    import papermill

    clone = workbook_copy(tmp_path / "clone")
    monkeypatch.setenv("PYTHONPATH", str(clone))
    monkeypatch.delenv("MIXLAB_ROOT", raising=False)
    source = notebooks.build(name, clone / "notebooks" / f"{name}.ipynb", clone)  # as the lab pairs it
    papermill.execute_notebook(str(source), str(source), cwd=str(clone / "notebooks"), kernel_name="python3",
                               progress_bar=False)
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"{name} on its default parameters changed the checkout:\n{status.stdout}"
    assert list((clone / "runs" / "smoke" / "figures").glob(f"{name}_*.png")), "its figures went elsewhere"
