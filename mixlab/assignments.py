"""Cluster assignments out: ``assignments.csv`` of a finished run and ``python -m mixlab predict``.

One row per image: its id (``path`` relative to the folder for ``folder:`` datasets, else the
dataset ``index``), ``cluster`` = argmax_k q(k | x) and ``probability`` = max_k q(k | x), the
posterior the method's ``predict`` gives for that cluster (1.0 for the hard assignments of MoCo's
k-means). ``predict`` rebuilds a trained method from ``config.json``, ``metrics.json`` (the input it
was trained on) and ``checkpoint.pt`` and assigns the images of another dataset, decoded exactly as
the training images were (same size, same channel count).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mixlab import io, paths

__all__ = ["write_csv", "ids_of", "input_spec", "apply", "load_trained", "load_matching", "predict"]


def write_csv(path: str | Path, ids: tuple[str, list], post=None, *, cluster=None, probability=None) -> Path:
    """Write ``id, cluster, probability`` rows atomically: ``ids`` = (column name, values), then
    either ``post`` (the ``[N, K]`` posterior: argmax and max) or ``cluster`` and ``probability``."""
    column, values = ids
    if post is not None:
        prob, top = torch.as_tensor(post).float().max(1)
        cluster, probability = top.numpy(), prob.numpy()
    frame = pd.DataFrame({column: values, "cluster": np.asarray(cluster),
                          "probability": np.asarray(probability, dtype=np.float64).round(6)})
    io.write_text(path, frame.to_csv(index=False))
    return paths.resolve(path)


def ids_of(data) -> tuple[str, list]:
    """("path", files relative to the folder) for folder: datasets, else ("index", dataset rows)."""
    return ("path", list(data.paths)) if data.paths is not None else ("index", data.index.tolist())


def input_spec(setup) -> dict:
    """What the method was trained on: channels, side of the stored images, side fed to the
    network, number of training samples (buffer shapes), and the dataset's kind."""
    images = setup.images
    return {"channels": int(images.shape[1]), "stored_size": int(images.shape[-1]) if images.dim() == 4 else 0,
            "image_size": int(setup.augmenter.out_size), "n_samples": int(len(images)),
            "dtype": str(images.dtype).removeprefix("torch.")}


def apply(cfg, augmenter, method, images: torch.Tensor, fn: str = "predict"):
    """``method.<fn>`` on clean batches of ``images`` with the precision and batch size the run
    evaluated with (so ``predict`` reproduces the run's own assignments); float32 numpy."""
    from mixlab import precision
    from mixlab.evaluation import extract

    device = next(method.parameters()).device
    with precision.autocast(device, precision.amp_dtype(device, cfg.train.amp)):
        return extract(method, images, augmenter, fn=fn, batch_size=cfg.train.eval_batch_size)


def load_trained(run: str | Path, device: str = "cpu"):
    """``(cfg, spec, augmenter, method)`` of a finished run, without its training data."""
    from mixlab import config as config_mod
    from mixlab import engine

    run = paths.resolve(run)
    missing = [f for f in ("config.json", "metrics.json", "checkpoint.pt") if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{run} is not a finished run (missing {', '.join(missing)}); train it first")
    data = json.loads((run / "config.json").read_text())
    data["train"]["device"] = device
    cfg = config_mod.from_dict(data)
    spec = json.loads((run / "metrics.json").read_text()).get("input")
    if spec is None:
        raise ValueError(f"{run}/metrics.json has no 'input' record (written by an older mixlab); retrain the run")
    augmenter, method = engine.make_model(cfg, spec["channels"], spec["image_size"], spec["n_samples"],
                                          engine.pick_device(device))
    state = engine.read_checkpoint(run / "checkpoint.pt", device)
    method.load_state_dict(state["method"])
    method.eval()
    return cfg, spec, augmenter, method


def load_matching(name: str, cfg, spec: dict, channels: int | None = None, skip_unreadable: bool | None = None):
    """Dataset ``name`` preprocessed as the run's training data (``channels`` and
    ``skip_unreadable``, when given, replace the run's); ValueError (one line) when its images
    cannot match the run's channel count or image size."""
    from mixlab.data import load
    from mixlab.data.folder import PREFIX

    trained = f"{spec['channels']}-channel {spec['stored_size']}x{spec['stored_size']}"
    if name.startswith(PREFIX):
        skip = cfg.train.skip_unreadable if skip_unreadable is None else skip_unreadable
        data = load(name, image_size=spec["stored_size"], channels=channels or cfg.train.channels,
                    skip_unreadable=skip)
        if data.images.shape[1] != spec["channels"]:
            raise ValueError(f"{name} holds {data.images.shape[1]}-channel images but the run was trained on"
                             f" {trained} images; pass --channels {spec['channels']} to convert them")
        return data
    data = load(name)
    shape = tuple(data.images.shape[1:])
    if data.images.dim() != 4 or shape != (spec["channels"], spec["stored_size"], spec["stored_size"]):
        raise ValueError(f"dataset {name} has images of shape {shape} but the run was trained on {trained}"
                         " images; predict a dataset of that shape or a folder: of images")
    return data


def predict(run: str | Path, dataset: str, out: str | Path, *, channels: int | None = None,
            skip_unreadable: bool | None = None, device: str = "cpu") -> pd.DataFrame:
    """Assign the images of ``dataset`` with the trained ``run``; writes and returns the CSV rows.
    ``channels`` and ``skip_unreadable`` (None: the run's) say how a folder's files are read."""
    cfg, spec, augmenter, method = load_trained(run, device)
    data = load_matching(dataset, cfg, spec, channels, skip_unreadable)
    write_csv(out, ids_of(data), apply(cfg, augmenter, method, data.images, "predict"))
    return pd.read_csv(out)
