"""Notebooks are tracked as jupytext ``py:percent`` files only; their ``.ipynb`` twins are built.

Each notebook is ``notebooks/<name>.py`` (the source to edit, review and commit), paired by its
jupytext header (``formats: ipynb,py:percent``) with ``notebooks/<name>.ipynb``, which git ignores:
``make lab`` opens the ``.py`` as a notebook, and JupyterLab's autosave writes the outputs into
the ignored ``.ipynb`` and only the inputs into the ``.py``, so running a notebook in the lab
leaves ``git status`` clean. The pipeline executes a notebook built from its ``.py``
(:func:`build`), never a possibly stale ``.ipynb``.

:func:`normalize` opens and saves every ``.py`` through jupytext's contents manager (the code the
lab saves with) with the kernel metadata the lab would set, so a committed notebook is exactly
what the lab would save; ``tests/test_notebooks.py`` fails otherwise.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

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
