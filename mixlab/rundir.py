"""The one owner of a run folder: its file names, its (atomic) writes, its reads, and :func:`load`.

A run folder ``out/`` holds::

    config.json       the RunConfig as run (fitted to the data; ``fitted_to_data`` records changes)
    log.jsonl         one JSON line per epoch
    metrics.json      final metrics, the input it was trained on, provenance
    checkpoint.pt     the whole training state (exact resume)
    predictions.npz   final posterior, embedding and labels of the training images
    assignments.csv   one row per image: id, cluster = argmax_k q(k|x), probability = max_k q(k|x)
    snapshots/epoch_NNN.npz   posterior and embedding at chosen epochs (for figures)

Everything that reads or writes these files goes through this module; a relative folder is taken
from the workbook root (:mod:`mixlab.utils.paths`)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from mixlab.utils import io, paths

CONFIG, LOG, METRICS, CHECKPOINT = "config.json", "log.jsonl", "metrics.json", "checkpoint.pt"
PREDICTIONS, ASSIGNMENTS, SNAPSHOTS = "predictions.npz", "assignments.csv", "snapshots"
PUBLISHED = (METRICS, CONFIG, LOG)  # the small files a notebook copies into results/
CHECKPOINT_KEYS = ("epoch", "global_step", "wall", "config", "history", "method", "optimizers", "schedulers")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or belongs to another configuration."""


def folder(run: str | Path) -> Path:
    return paths.resolve(run)


# ---- writing (atomic: a reader or a killed run never sees half a file) ----

def write_config(run, record: dict) -> None:
    io.write_json(folder(run) / CONFIG, record)


def write_log(run, rows: list[dict]) -> None:
    io.write_text(folder(run) / LOG, "".join(json.dumps(row) + "\n" for row in rows))


def write_metrics(run, metrics: dict) -> None:
    io.write_json(folder(run) / METRICS, metrics)


def write_checkpoint(run, state: dict) -> None:
    io.torch_save(folder(run) / CHECKPOINT, state)


def write_arrays(path: Path, arrays: dict) -> None:
    io.atomic(path, lambda fh: np.savez_compressed(fh, **arrays))


def write_predictions(run, arrays: dict) -> None:
    write_arrays(folder(run) / PREDICTIONS, arrays)


def write_snapshot(run, epoch: int, arrays: dict) -> None:
    write_arrays(folder(run) / SNAPSHOTS / f"epoch_{epoch:03d}.npz", arrays)


def write_assignments(path: str | Path, ids: tuple[str, list], post=None, *, cluster=None, probability=None) -> Path:
    """Write ``id, cluster, probability`` rows to the CSV file ``path`` (a run's :data:`ASSIGNMENTS`,
    or ``predict``'s output): ``ids`` = (column name, values), then either ``post`` (the ``[N, K]``
    posterior: argmax and max) or ``cluster`` and ``probability``."""
    path = paths.resolve(path)
    column, values = ids
    if post is not None:
        prob, top = torch.as_tensor(post).float().max(1)
        cluster, probability = top.numpy(), prob.numpy()
    frame = pd.DataFrame({column: values, "cluster": np.asarray(cluster),
                          "probability": np.asarray(probability, dtype=np.float64).round(6)})
    io.write_text(path, frame.to_csv(index=False))
    return path


def ids_of(data) -> tuple[str, list]:
    """("path", files relative to the folder) for folder: datasets, else ("index", dataset rows)."""
    return ("path", list(data.paths)) if data.paths is not None else ("index", data.index.tolist())


# ---- reading ----

def config(run) -> dict:
    return json.loads((folder(run) / CONFIG).read_text())


def log(run) -> list[dict]:
    """The per-epoch rows of ``log.jsonl`` (none yet: [])."""
    return io.read_jsonl(folder(run) / LOG)


def metrics(run) -> dict:
    return json.loads((folder(run) / METRICS).read_text())


def predictions(run) -> dict[str, np.ndarray]:
    with np.load(folder(run) / PREDICTIONS) as data:
        return {k: data[k] for k in data.files}


def snapshot(run, epoch: int) -> dict[str, np.ndarray]:
    """A saved snapshot (index, embedding, posterior, labels) of a run at ``epoch``."""
    with np.load(folder(run) / SNAPSHOTS / f"epoch_{epoch:03d}.npz") as data:
        return {k: data[k] for k in data.files}


def snapshot_epochs(run) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in (folder(run) / SNAPSHOTS).glob("epoch_*.npz"))


def assignments(run) -> pd.DataFrame:
    return pd.read_csv(folder(run) / ASSIGNMENTS)


def is_finished(run) -> bool:
    return (folder(run) / METRICS).is_file()


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """``torch.load`` the checkpoint file ``path``; if it cannot be used, raise
    :class:`CheckpointError` saying in plain words why (not a checkpoint, truncated, written by
    another version) and what to do."""
    path = paths.resolve(path)
    todo = "; delete it to start over (or train into a new --out)"
    with open(path, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    if not is_zip:
        raise CheckpointError(f"checkpoint {path} is unreadable: it is not a mixlab checkpoint{todo}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"checkpoint {path} is unreadable: it holds objects that this version cannot"
                              f" load safely (written by another version of mixlab or torch){todo}") from None
    except Exception:  # noqa: BLE001 - the zip reader's errors: missing central directory, bad CRC, short read
        raise CheckpointError(f"checkpoint {path} is unreadable: the file is truncated or damaged (an interrupted"
                              f" copy or a full disk){todo}") from None
    missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise CheckpointError(f"checkpoint {path} is unreadable: it was written by another version of mixlab or"
                              f" another program (no {missing[0]!r} entry){todo}")
    return state


class Loaded(NamedTuple):
    """A finished run rebuilt without its training data."""

    cfg: object        # the RunConfig it ran with
    spec: dict         # what it was trained on (metrics.json's "input": channels, sizes, n_samples)
    augmenter: object  # its clean (evaluation) preprocessing
    method: torch.nn.Module  # the trained method, in eval mode


def load(run, device: str = "cpu") -> Loaded:
    """Rebuild a finished run from config.json, metrics.json and checkpoint.pt on ``device``."""
    from mixlab import config as config_mod
    from mixlab.methods import build

    run = folder(run)
    missing = [f for f in (CONFIG, METRICS, CHECKPOINT) if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{run} is not a finished run (missing {', '.join(missing)}); train it first")
    record = config(run)
    record["train"]["device"] = device
    cfg = config_mod.from_dict(record)
    spec = metrics(run).get("input")
    if spec is None:
        raise ValueError(f"{run}/{METRICS} has no 'input' record (written by an older mixlab); retrain the run")
    augmenter, method = build(cfg, spec["channels"], spec["image_size"], spec["n_samples"], torch.device(device))
    method.load_state_dict(read_checkpoint(run / CHECKPOINT, device)["method"])
    method.eval()
    return Loaded(cfg, spec, augmenter, method)
