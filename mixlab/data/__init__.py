"""Datasets as uint8 tensors with labels: `load(name)`, `DATASETS`, `dataset_names()`."""
from . import bottleneck  # noqa: F401  (registers 'fashion-bottleneck2d', built lazily on first load)
from .datasets import DATASETS, Dataset, Loader, dataset_names, folder_subset, load

__all__ = ["DATASETS", "Dataset", "Loader", "dataset_names", "folder_subset", "load"]
