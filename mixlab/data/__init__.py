"""Datasets as uint8 tensors with labels: `load(name)`, `DATASETS`, `dataset_names()`."""
from .datasets import DATASETS, Dataset, Loader, dataset_names, load

__all__ = ["DATASETS", "Dataset", "Loader", "dataset_names", "load"]
