"""The one owner of a run folder: its file names, its (atomic) writes, its reads, and :func:`load`.

A run folder ``out/`` holds::

    config.json       the RunConfig as run (fitted to the data; ``fitted_to_data`` records changes)
    log.jsonl         one JSON line per epoch
    metrics.json      final metrics, the input it was trained on, provenance
    checkpoint.pt     the whole training state (exact resume)
    predictions.npz   final posterior, embedding and labels of the training images
    assignments.csv   one row per image: id, cluster = argmax_k q(k|x), probability = max_k q(k|x)
    snapshots/epoch_NNN.npz   posterior and embedding at chosen epochs (for figures)
    representation.json       linear-probe / k-NN accuracy, once computed (evaluation.representation_eval)

Its **record** (:func:`write_record`, committed under ``results/``) is what a notebook draws from,
without the checkpoint: config, log, metrics, ``clusters.npz`` (argmax cluster and label of every
image), the representation scores once computed, and for the runs a notebook's figures read
(``keep``) the snapshots and ``model.pt`` (the trained state, :func:`compact`). :func:`restore` rebuilds a
run folder from it, so a notebook reuses a committed run instead of training it again.

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
CLUSTERS, MODEL, REPRESENTATION = "clusters.npz", "model.pt", "representation.json"
RECORD = (METRICS, CONFIG, LOG, CLUSTERS)  # every committed record holds these
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


def weights(run) -> dict[str, torch.Tensor]:
    """The trained method's state dict: from the checkpoint, else from a record's ``model.pt``."""
    if (folder(run) / CHECKPOINT).is_file():
        return read_checkpoint(folder(run) / CHECKPOINT)["method"]
    if (folder(run) / MODEL).is_file():
        return torch.load(folder(run) / MODEL, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder(run)} holds no weights ({CHECKPOINT} or {MODEL}); train the run first")


def clusters(run) -> dict[str, np.ndarray]:
    """``cluster`` (argmax_k q(k|x), per training image) and ``labels`` (when the data has them):
    from the record's ``clusters.npz``, else from ``predictions.npz``."""
    if (folder(run) / CLUSTERS).is_file():
        with np.load(folder(run) / CLUSTERS) as data:
            return {k: data[k] for k in data.files}
    found = predictions(run)
    return {"cluster": found["posterior"].astype(np.float32).argmax(1),
            **({"labels": found["labels"]} if "labels" in found else {})}


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


# ---- the committed record of a run ----

def write_record(run, record, *, keep: bool = False) -> None:
    """Write the record of the finished run ``run`` into the folder ``record`` (see the module
    docstring); ``keep`` adds its snapshots and its weights (``model.pt``) for the figures."""
    run, record = folder(run), folder(record)
    record.mkdir(parents=True, exist_ok=True)
    for name in (METRICS, CONFIG, LOG, REPRESENTATION):
        if (run / name).is_file():
            io.copy(run / name, record / name)
    found = clusters(run)
    write_arrays(record / CLUSTERS, {"cluster": found["cluster"].astype(np.uint16),
                                     **({"labels": found["labels"].astype(np.uint8)} if "labels" in found else {})})
    if not keep:
        return
    for path in sorted((run / SNAPSHOTS).glob("epoch_*.npz")):
        io.copy(path, record / SNAPSHOTS / path.name)
    if (run / CHECKPOINT).is_file():
        state = read_checkpoint(run / CHECKPOINT)["method"]
        io.torch_save(record / MODEL, compact(state))
    elif (run / MODEL).is_file():
        io.copy(run / MODEL, record / MODEL)


def compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict small enough to commit: floating tensors in float16, integer tensors (e.g. SiamMM's
    [N, H] cluster indices) in the narrowest integer type that holds their values, exactly.
    ``load_state_dict`` casts every entry back to the dtype of the module's own tensor."""
    def narrow(v: torch.Tensor) -> torch.Tensor:
        if v.is_floating_point():
            return v.half()
        if v.dtype in (torch.int16, torch.int32, torch.int64) and v.numel():
            lo, hi = int(v.min()), int(v.max())
            for dtype in (torch.int8, torch.int16, torch.int32):
                if torch.iinfo(dtype).min <= lo and hi <= torch.iinfo(dtype).max:
                    return v.to(dtype)
        return v
    return {k: narrow(v) for k, v in state.items()}


def has_record(record, *, keep: bool = False, representation: bool = False) -> bool:
    """``record`` holds a whole record (with snapshots and weights when ``keep``, with the
    representation scores when ``representation``)."""
    record = folder(record)
    if not all((record / name).is_file() for name in RECORD + ((REPRESENTATION,) if representation else ())):
        return False
    snapshots_asked = bool(config(record)["train"].get("snapshot_epochs"))
    return not keep or ((record / MODEL).is_file() and (bool(snapshot_epochs(record)) or not snapshots_asked))


def restore(record, run) -> None:
    """Rebuild the run folder ``run`` from the committed ``record`` (no checkpoint: it cannot resume
    or re-evaluate, but every notebook reads it; :func:`load` takes ``model.pt``)."""
    record, run = folder(record), folder(run)
    for path in sorted(record.rglob("*")):
        if path.is_file() and path.name != METRICS:
            io.copy(path, run / path.relative_to(record))
    io.copy(record / METRICS, run / METRICS)  # last: it marks the run finished


class Loaded(NamedTuple):
    """A finished run rebuilt without its training data."""

    cfg: object        # the RunConfig it ran with
    spec: dict         # what it was trained on (metrics.json's "input": channels, sizes, n_samples)
    augmenter: object  # its clean (evaluation) preprocessing
    method: torch.nn.Module  # the trained method, in eval mode


def load(run, device: str = "cpu") -> Loaded:
    """Rebuild a finished run from config.json, metrics.json and checkpoint.pt (or a record's
    model.pt) on ``device``."""
    from mixlab import config as config_mod
    from mixlab.methods import build

    run = folder(run)
    has_weights = (run / CHECKPOINT).is_file() or (run / MODEL).is_file()
    missing = [f for f in (CONFIG, METRICS) if not (run / f).is_file()] + ([] if has_weights else [CHECKPOINT])
    if missing:
        raise FileNotFoundError(f"{run} is not a finished run (missing {', '.join(missing)}); train it first")
    record = config(run)
    record["train"]["device"] = device
    cfg = config_mod.from_dict(record)
    spec = metrics(run).get("input")
    if spec is None:
        raise ValueError(f"{run}/{METRICS} has no 'input' record (written by an older mixlab); retrain the run")
    augmenter, method = build(cfg, spec["channels"], spec["image_size"], spec["n_samples"], torch.device(device))
    method.load_state_dict(weights(run))  # a record's compact state is cast to each tensor's dtype
    method.eval()
    return Loaded(cfg, spec, augmenter, method)
