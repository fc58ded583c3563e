"""Committed notebooks in the form the pinned JupyterLab + jupytext save them, without outputs.

Each notebook is a pair: ``notebooks/<name>.py`` (jupytext ``py:percent``, the source to edit and
review) and ``notebooks/<name>.ipynb`` (what JupyterLab opens and papermill runs), committed
without outputs. :func:`normalize` opens and saves every pair through jupytext's contents manager
(the code the lab saves with), with the kernel metadata the lab would set (the ``python3``
kernelspec and its ``language_info``) and the outputs dropped. A notebook so written opens clean
in the lab; after a session there ``python -m mixlab notebooks`` strips the outputs again, and
``tests/test_notebooks.py`` fails on a committed notebook with outputs or a stale header.
"""
from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from mixlab.paths import REPO

KERNEL = "python3"


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


def save_as_lab(folder: Path, name: str, metadata: dict) -> None:
    """Open ``folder/name.ipynb`` (with its paired ``.py``) and save it as the lab does, with
    ``metadata`` set and no outputs; rewrites both files."""
    from jupytext.async_contentsmanager import AsyncTextFileContentsManager

    async def roundtrip():
        manager = AsyncTextFileContentsManager(root_dir=str(folder))
        model = await manager.get(f"{name}.ipynb")
        notebook = model["content"]
        notebook["metadata"].update(metadata)
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        await manager.save(model, f"{name}.ipynb")

    asyncio.run(roundtrip())


def paired_names(root: Path = REPO) -> list[str]:
    """Every notebook of ``root/notebooks`` that has both its ``.ipynb`` and its ``.py``."""
    folder = root / "notebooks"
    return sorted(p.stem for p in folder.glob("*.ipynb") if p.with_suffix(".py").is_file())


def normalize(root: Path = REPO, metadata: dict | None = None) -> list[str]:
    """Rewrite every pair under ``root/notebooks`` as :func:`save_as_lab` does; returns the names."""
    metadata = metadata or kernel_metadata()
    names = paired_names(root)
    for name in names:
        save_as_lab(root / "notebooks", name, metadata)
    return names


def as_lab_would_save(root: Path, name: str, metadata: dict) -> tuple[str, str]:
    """The ``.py`` and ``.ipynb`` texts the lab would write for ``name``, computed on a copy."""
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in (".py", ".ipynb"):
            shutil.copyfile(root / "notebooks" / f"{name}{suffix}", Path(tmp) / f"{name}{suffix}")
        save_as_lab(Path(tmp), name, metadata)
        return (Path(tmp) / f"{name}.py").read_text(), (Path(tmp) / f"{name}.ipynb").read_text()
