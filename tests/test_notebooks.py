"""Every notebook of the manifest executes under papermill on the smoke profile and writes its
figures and metrics; notebooks are committed without outputs and paired with their .py file."""
import json

import jupytext
import pytest

from mixlab import pipeline
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
