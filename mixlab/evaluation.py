"""Representation quality of a trained method on frozen features: linear probe and k-NN accuracy.

SiamMM (§5.2) reports linear evaluation on a frozen backbone and, like most SSL papers, k-NN
accuracy is the cheap proxy. mixlab runs both on a dataset's *own* train/test split
(``Dataset.train_mask``, e.g. Fashion-MNIST's 60k/10k): fit on the train rows, score on the test
rows. Labels are used only here, never in training.

- :func:`linear_probe_acc`: multinomial logistic regression (scikit-learn, L-BFGS) on
  standardised features -- the convex stand-in for the paper's 90-epoch SGD linear classifier.
- :func:`knn_acc`: cosine k-NN through faiss (exact inner-product search on L2-normalised
  features), k = 20, votes weighted by exp(cos / T) with T = 0.07 (Wu et al. 2018, the
  InstDisc / DINO protocol) or unweighted majority (``weighting="majority"``).
- :func:`extract`, :func:`representation_eval`: features of a finished run.
- :func:`predict` (``python -m mixlab predict``): assign the images of a dataset or folder with a
  finished run (:func:`mixlab.rundir.load`), decoded exactly as its training images were; one CSV
  row per image: id, cluster = argmax_k q(k|x), probability = max_k q(k|x).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mixlab import rundir
from mixlab.methods.base import evaluating
from mixlab.utils import io

__all__ = ["linear_probe_acc", "knn_acc", "extract", "representation_eval", "apply", "load_matching", "predict"]


def _np(a, dtype=None) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    return a.astype(dtype) if dtype is not None else a


def linear_probe_acc(features_train, y_train, features_test, y_test, *, C: float = 1.0, max_iter: int = 1000,
                     standardize: bool = True) -> float:
    """Test accuracy (fraction) of a logistic-regression classifier fitted on frozen train features.

    ``C`` is scikit-learn's inverse L2 strength (its default, 1.0); features are standardised with
    the train mean/std when ``standardize`` (the probe is then insensitive to the feature scale).
    BLAS runs single-threaded here: L-BFGS makes hundreds of small matrix products, and on a busy
    2-core machine OpenBLAS's thread hand-offs made them ~50x slower than one thread.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    xtr, xte = _np(features_train, np.float64), _np(features_test, np.float64)
    ytr, yte = _np(y_train, np.int64), _np(y_test, np.int64)
    if standardize:
        scaler = StandardScaler().fit(xtr)
        xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    with threadpool_limits(limits=1, user_api="blas"):
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(xtr, ytr)
        return float((clf.predict(xte) == yte).mean())


def knn_acc(features_train, y_train, features_test, y_test, *, k: int = 20, weighting: str = "weighted",
            temperature: float = 0.07) -> float:
    """Test accuracy (fraction) of cosine k-NN classification (faiss ``IndexFlatIP``, exact).

    ``weighting="weighted"`` (default): each of the k neighbours votes exp(cos / temperature)
    for its class (Wu et al. 2018, T = 0.07); ``"majority"``: one vote each, ties to the
    smallest class index. Features are L2-normalised here.
    """
    import faiss

    if weighting not in ("weighted", "majority"):
        raise ValueError(f"weighting={weighting!r} must be 'weighted' or 'majority'")
    xtr = _np(features_train, np.float32)
    xte = _np(features_test, np.float32)
    ytr, yte = _np(y_train, np.int64), _np(y_test, np.int64)
    xtr = np.ascontiguousarray(xtr / np.maximum(np.linalg.norm(xtr, axis=1, keepdims=True), 1e-12))
    xte = np.ascontiguousarray(xte / np.maximum(np.linalg.norm(xte, axis=1, keepdims=True), 1e-12))
    k = min(int(k), len(xtr))
    index = faiss.IndexFlatIP(xtr.shape[1])
    index.add(xtr)
    sims, idx = index.search(xte, k)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    w = np.exp((sims - 1.0) / temperature) if weighting == "weighted" else np.ones_like(sims)  # shift: no overflow
    votes = np.zeros((len(xte), n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(xte)), k), ytr[idx].reshape(-1)), w.reshape(-1))
    return float((votes.argmax(1) == yte).mean())


@torch.no_grad()
def extract(method, images: torch.Tensor, augmenter, *, fn: str = "features", batch_size: int = 1024,
            device: str | torch.device | None = None) -> np.ndarray:
    """``method.<fn>`` (``"features"``: backbone output; ``"embed"``; ``"predict"``) on clean
    batches of ``images`` in eval mode, as a float32 numpy array."""
    device = torch.device(device) if device is not None else next(method.parameters()).device
    f = getattr(method, fn)
    out = []
    with evaluating(method):
        for i in range(0, len(images), batch_size):
            x = augmenter.clean(images[i:i + batch_size].to(device))
            out.append(f(x).float().cpu())
    return torch.cat(out).numpy()


def representation_eval(run_dir: str | Path, *, k: int = 20, weighting: str = "weighted", fn: str = "features",
                        full_dataset: bool = False, device: str = "cpu") -> dict:
    """Linear-probe and k-NN accuracy of a finished run's frozen ``fn`` features on the dataset's
    own train/test split (``Dataset.train_mask``).

    ``full_dataset=False`` uses the rows the run trained on (its ``subset``); ``True`` extracts
    features for the whole dataset (e.g. all 70k Fashion-MNIST images: 60k train / 10k test).
    Returns ``{"linear_probe_acc", "knn_acc", "n_train", "n_test"}``, computed once per set of
    arguments and kept in the run's ``representation.json`` (part of its committed record).
    """
    from mixlab.data import load as load_dataset

    asked = {"k": k, "weighting": weighting, "fn": fn, "full_dataset": full_dataset}
    cached = rundir.folder(run_dir) / rundir.REPRESENTATION
    if cached.is_file():
        found = json.loads(cached.read_text())
        if found.get("args") == asked:
            return found["scores"]
    run = rundir.load(run_dir, device=device)
    t = run.cfg.train
    data = load_dataset(t.dataset, subset=None if full_dataset else t.subset, seed=t.data_seed)
    if data.train_mask is None:
        raise ValueError(f"dataset {t.dataset!r} has no official train/test split (train_mask is None)")
    feats = extract(run.method, data.images, run.augmenter, fn=fn)
    mask = data.train_mask.numpy().astype(bool)
    y = data.labels.numpy()
    scores = {"linear_probe_acc": linear_probe_acc(feats[mask], y[mask], feats[~mask], y[~mask]),
              "knn_acc": knn_acc(feats[mask], y[mask], feats[~mask], y[~mask], k=k, weighting=weighting),
              "n_train": int(mask.sum()), "n_test": int((~mask).sum())}
    io.write_json(cached, {"args": asked, "scores": scores})
    return scores


def apply(cfg, augmenter, method, images: torch.Tensor, fn: str = "predict"):
    """``method.<fn>`` on clean batches of ``images`` with the precision and batch size the run
    evaluated with (so ``predict`` reproduces the run's own assignments); float32 numpy."""
    from mixlab.utils import precision

    device = next(method.parameters()).device
    with precision.autocast(device, precision.amp_dtype(device, cfg.train.amp)):
        return extract(method, images, augmenter, fn=fn, batch_size=cfg.train.eval_batch_size)


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
    cfg, spec, augmenter, method = rundir.load(run, device)
    data = load_matching(dataset, cfg, spec, channels, skip_unreadable)
    rundir.write_assignments(out, rundir.ids_of(data), apply(cfg, augmenter, method, data.images, "predict"))
    return pd.read_csv(out)
