"""The notebooks: tracked as jupytext ``py:percent`` files, built, parameterized and executed.

Each notebook is ``notebooks/<name>.py`` (the source to edit, review and commit), paired by its
jupytext header (``formats: ipynb,py:percent``) with ``notebooks/<name>.ipynb``, which git ignores:
``make lab`` opens the ``.py`` as a notebook, and JupyterLab's autosave writes the outputs into
the ignored ``.ipynb`` and only the inputs into the ``.py``, so running a notebook in the lab
leaves ``git status`` clean. The pipeline executes a notebook built from its ``.py``
(:func:`build`), never a possibly stale ``.ipynb``.

:func:`normalize` opens and saves every ``.py`` through jupytext's contents manager (the code the
lab saves with) with the kernel metadata the lab would set, so a committed notebook is exactly
what the lab would save; ``tests/test_notebooks.py`` fails otherwise.

A notebook's parameters on a profile are ``notebooks/params/<profile>/<name>.yaml`` plus
``publish=True`` (:func:`parameters`: what ``make reproduce`` runs it with); :func:`execute` runs
it with papermill, :func:`run_cells` in this process (up to a tagged cell, e.g. its ``grid``).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from mixlab.config import ConfigError, load_yaml
from mixlab.utils import io
from mixlab.utils.paths import REPO

KERNEL = "python3"
PAIRING = "formats: ipynb,py:percent"


def kernel_metadata(language_info: dict | None = None) -> dict:
    """``kernelspec`` of the installed ``python3`` kernel and ``language_info`` (asked of a
    started kernel unless given), as JupyterLab writes them into a notebook it runs."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(KERNEL)
    if language_info is None:
        from jupyter_client.manager import start_new_kernel

        manager, client = start_new_kernel(kernel_name=KERNEL)
        try:
            language_info = client.kernel_info(reply=True, timeout=60)["content"]["language_info"]
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    return {"kernelspec": {"display_name": spec.display_name, "language": spec.language, "name": KERNEL},
            "language_info": language_info}


def names(root: Path = REPO) -> list[str]:
    """Every jupytext notebook of ``root/notebooks`` (a ``.py`` with the pairing header)."""
    return sorted(p.stem for p in (root / "notebooks").glob("*.py") if PAIRING in p.read_text()[:400])


def build(name: str, out: Path, root: Path = REPO) -> Path:
    """Write the ``.ipynb`` of ``notebooks/<name>.py`` (inputs only) to ``out``; returns ``out``."""
    import jupytext

    notebook = jupytext.read(root / "notebooks" / f"{name}.py")
    out.parent.mkdir(parents=True, exist_ok=True)
    jupytext.write(notebook, out, fmt="ipynb")
    return out


def save_as_lab(folder: Path, name: str, metadata: dict) -> None:
    """Open ``folder/name.py`` as a notebook and save it as the lab does, with ``metadata`` set
    and no outputs; rewrites the ``.py`` and its paired ``.ipynb``."""
    from jupytext.async_contentsmanager import AsyncTextFileContentsManager

    async def roundtrip():
        manager = AsyncTextFileContentsManager(root_dir=str(folder))
        model = await manager.get(f"{name}.py")
        notebook = model["content"]
        notebook["metadata"].update(metadata)
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        await manager.save(model, f"{name}.py")

    asyncio.run(roundtrip())


def normalize(root: Path = REPO, metadata: dict | None = None) -> list[str]:
    """Rewrite every notebook under ``root/notebooks`` as :func:`save_as_lab` does; returns the names."""
    metadata = metadata or kernel_metadata()
    found = names(root)
    for name in found:
        save_as_lab(root / "notebooks", name, metadata)
    return found


def as_lab_would_save(root: Path, name: str, metadata: dict) -> str:
    """The ``.py`` text the lab would write for ``name``, computed on a copy."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(root / "notebooks" / f"{name}.py", Path(tmp) / f"{name}.py")
        save_as_lab(Path(tmp), name, metadata)
        return (Path(tmp) / f"{name}.py").read_text()


class NotebookFailed(RuntimeError):
    """A notebook raised while papermill executed it."""


def manifest(root: Path = REPO) -> list[str]:
    path = root / "notebooks" / "manifest.yaml"
    entries = load_yaml(path.read_text())["notebooks"]
    return [str(e) for e in entries]


def parameters(name: str, profile: str, root: Path = REPO) -> dict:
    path = root / "notebooks" / "params" / profile / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no parameter file {path} for notebook {name!r} on profile {profile!r}")
    try:
        params = load_yaml(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"parameter file {path} is not valid YAML; fix its syntax") from None
    if not isinstance(params, dict):
        raise ConfigError(f"parameter file {path} must be a mapping of notebook parameters")
    return {**params, "profile": profile, "publish": True}


def fingerprint(name: str, params: dict, root: Path = REPO) -> str:
    """Hash of the notebook source, its parameters and every file of the mixlab package (code and profiles)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    package = [p for p in sorted((root / "mixlab").rglob("*")) if p.suffix in (".py", ".yaml")]
    for path in [root / "notebooks" / f"{name}.py", *package]:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def execute(name: str, params: dict, out_dir: Path, root: Path = REPO) -> Path:
    """Execute ``notebooks/<name>.py`` with papermill into ``out_dir/<name>.ipynb`` (built from the
    ``.py``, :func:`mixlab.workbook.notebooks.build`); raise NotebookFailed."""
    import tempfile

    import papermill

    out = out_dir / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    source = build(name, Path(tempfile.mkdtemp(dir=out_dir)) / f"{name}.ipynb", root)
    try:
        papermill.execute_notebook(str(source), str(out), parameters=params,
                                   cwd=str(root / "notebooks"), kernel_name="python3", progress_bar=False)
    except Exception as exc:  # noqa: BLE001 - papermill wraps the notebook's own error
        first = str(exc).strip().splitlines()
        raise NotebookFailed(f"notebook {name} failed ({first[-1] if first else type(exc).__name__});"
                             f" its executed copy is {out}") from None
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
    return out


def render(executed: Path, out_dir: Path) -> list[Path]:
    """Render an executed notebook as standalone HTML in ``out_dir`` (figures inlined as base64;
    equations typeset by MathJax when the page is opened). Only the page is kept there: notebooks
    with outputs stay in the ignored ``runs/``."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    html = Path(out_dir) / f"{Path(executed).stem}.html"
    io.write_text(html, body)
    return [html]


def run_cells(name: str, params: dict, root: Path = REPO, *, until_tag: str | None = None) -> dict:
    """Execute ``notebooks/<name>.py`` cell by cell in this process, without Jupyter, injecting
    ``params`` right after the cell tagged ``parameters`` (what papermill does), with the working
    directory in ``notebooks/`` (as in the lab); stop after the first cell tagged ``until_tag``
    (``"grid"``: just declare the notebook's runs). Returns the notebook's namespace."""
    import os

    source = (root / "notebooks" / f"{name}.py").read_text()
    cells, current = [], []
    for line in source.splitlines(keepends=True):
        if line.startswith("# %%"):
            cells.append(current)
            current = [line]
        else:
            current.append(line)
    cells.append(current)
    namespace: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    os.chdir(root / "notebooks")
    try:
        for i, cell in enumerate(cells):
            if not cell or cell[0].startswith("# %% [markdown]"):
                continue
            exec(compile("".join(cell), f"{name}.py:cell{i}", "exec"), namespace)  # noqa: S102
            if "parameters" in cell[0]:
                namespace.update(params)
            if until_tag and f'"{until_tag}"' in cell[0]:
                break
    finally:
        os.chdir(cwd)
    return namespace


def execute_script(name: str, params: dict, out_dir: Path, root: Path = REPO) -> Path:
    """:func:`run_cells` on the whole notebook, its output in a log. For machines without
    papermill (the lent GPU); figures and results are the same, only the executed ``.ipynb``
    copy is replaced by the log."""
    import contextlib

    out = out_dir / f"{name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            run_cells(name, params, root)
        except Exception as exc:  # noqa: BLE001 - report which notebook failed, keep its log
            raise NotebookFailed(f"notebook {name} failed ({type(exc).__name__}: {exc}); its log is {out}") from None
    return out


def default_runner() -> str:
    """papermill where it is installed, else the script runner."""
    import importlib.util
    return "papermill" if importlib.util.find_spec("papermill") else "script"


GRID_CELL = re.compile(r'^# %%.*\btags=\[[^\]]*"grid"', re.M)


def has_grid(name: str, root: Path = REPO) -> bool:
    """The notebook declares a grid of runs (a cell tagged ``grid``): :func:`mixlab.workbook.grid.submit` sends them to Dask."""
    return bool(GRID_CELL.search((root / "notebooks" / f"{name}.py").read_text()))
