"""The dataset registry: where each dataset's files are looked for, and `load`."""
from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import torch

from mixlab.utils import paths

from . import cifar, folder, idx, imagenet_dog, stl10, synthetic


@dataclass(frozen=True)
class Dataset:
    """A whole dataset in memory.

    `images`: uint8 N×C×H×W, contiguous (for `blobs2d`, float32 N×2: 2-D point sets carry
    features, not images). `labels`: int64 N, for evaluation only, None for unlabeled data (a
    flat `folder:`). `train_mask`: bool N, True for the official train split, None when the
    dataset has none. `centers`: the true component means of `blobs2d`, else None. `source`:
    the folder or module the data came from. `index`: int64 N, each row's index in the whole
    dataset (before `subset`). `paths`: for `folder:` datasets, each row's file relative to the
    folder, else None.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    source: str
    train_mask: torch.Tensor | None = None
    centers: torch.Tensor | None = None
    index: torch.Tensor | None = None
    paths: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, images={tuple(self.images.shape)} {self.images.dtype}, "
                f"classes={len(self.classes)}, source={self.source!r})")

    def select(self, index: torch.Tensor) -> Dataset:
        """A copy holding the rows `index` (shares no memory with `self`)."""
        mask = None if self.train_mask is None else self.train_mask[index]
        labels = None if self.labels is None else self.labels[index]
        centers = None if self.centers is None else self.centers.clone()
        images = self.images.index_select(0, index).contiguous()
        rows = torch.arange(len(self)) if self.index is None else self.index
        paths = None if self.paths is None else tuple(self.paths[i] for i in index.tolist())
        return replace(self, images=images, labels=labels, train_mask=mask, centers=centers,
                       classes=list(self.classes), index=rows[index].clone(), paths=paths)


@dataclass(frozen=True)
class Loader:
    """How to find one dataset's files and read them.

    `read(folder, verify)` returns the Dataset fields for files that all exist under `folder`;
    built-ins (`files=()`) take `read()`. `verify=False` skips the checks that official files
    pass and test fixtures cannot (checksums, official sizes); only tests use it.
    """

    name: str
    classes: tuple[str, ...]
    read: Callable[..., dict]
    files: tuple[str, ...] = ()
    need: str = ""  # the files, in words, for error messages
    fix: str = ""  # the command or step that provides them
    subdirs: tuple[str, ...] = ()  # tried under each base folder before the base itself
    system: tuple[str, ...] = ()  # folders installed by distribution packages
    download: str | None = None  # torchvision.datasets class fetched into data/ when missing
    cache: bool = True

    def __call__(self, root: str | os.PathLike | None = None, *, verify: bool = True) -> Dataset:
        """Find and read the whole dataset, uncached."""
        return self.read_from(self.locate(root), verify)

    def read_from(self, folder: Path | None, verify: bool) -> Dataset:
        """Read the dataset from `folder` (None for built-ins)."""
        parts = self.read(folder, verify) if self.files else self.read()
        source = str(folder) if folder else f"{self.read.__module__}.{self.read.__name__}"
        return Dataset(name=self.name, classes=list(self.classes), source=source, **parts)

    def candidates(self, root: str | os.PathLike | None) -> list[Path]:
        """Folders searched, in order: `root` alone if given, else $MIXLAB_DATA, the workbook's data/
        (:func:`mixlab.utils.paths.resolve`, not the working directory), system."""
        env = os.environ.get("MIXLAB_DATA")
        if root is not None:
            bases = [Path(root)]
        else:
            bases = ([Path(env)] if env else []) + [paths.resolve("data")]
        dirs = []
        for base in map(Path.absolute, bases):
            dirs += [base / s for s in self.subdirs] + [base]
            dirs += [base / self.download / "raw"] if self.download else []  # torchvision layout
        return dirs + ([Path(s) for s in self.system] if root is None else [])

    def locate(self, root: str | os.PathLike | None) -> Path | None:
        """The first candidate folder holding every file; FileNotFoundError (one line) if none."""
        if not self.files:
            return None
        dirs = self.candidates(root)
        found = self._first(dirs)
        note = ""
        if found is None and root is None and self.download and not os.environ.get("MIXLAB_OFFLINE"):
            note = _download(self.download, paths.resolve("data"))
            found = self._first(dirs)
        if found is None:
            raise FileNotFoundError(f"{self.name}: {self.need} not found in any of: "
                                    f"{', '.join(map(str, dirs))}{note}; fix: {self.fix}")
        return found

    def _first(self, dirs: list[Path]) -> Path | None:
        return next((d for d in dirs if all((d / f).exists() for f in self.files)), None)

    def stamp(self, folder: Path | None) -> tuple:
        """Size and mtime of every file, so the in-process cache notices replaced files."""
        if folder is None:
            return ()
        return tuple((f, s.st_size, s.st_mtime_ns) for f in self.files for s in [(folder / f).stat()])


@functools.cache  # one attempt per process: a failed lookup can take seconds
def _download(cls_name: str, base: Path) -> str:
    """Fetch through torchvision when its first mirror answers within 3 s; '' or why it failed."""
    try:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        url = urlparse(cls.mirrors[0])
        socket.create_connection((url.hostname, url.port or {"https": 443}.get(url.scheme, 80)),
                                 timeout=3).close()
        cls(root=str(base), download=True)
        return ""
    except Exception as err:  # noqa: BLE001 - any failure just means "not downloaded"
        why = str(err).splitlines()[0] if str(err) else ""
        return f" (torchvision download failed: {type(err).__name__}: {why})"


def _tv(cls_name: str) -> str:
    """The shell command that downloads a dataset into the workbook's data/ through torchvision."""
    return f"python -c \"import torchvision; torchvision.datasets.{cls_name}('{paths.resolve('data')}', download=True)\""


_IDX_NEED = "the 4 IDX .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, " \
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
_LOADERS = (
    Loader("fashion-mnist", idx.FASHION_MNIST_CLASSES,
           functools.partial(idx.read, md5=idx.FASHION_MNIST_MD5,
                             fix="sudo apt-get install --reinstall dataset-fashion-mnist"),
           files=idx.FILES, need=_IDX_NEED, subdirs=("fashion-mnist",),
           system=("/usr/share/datasets/fashion-mnist",), download="FashionMNIST",
           fix="sudo apt-get install -y dataset-fashion-mnist, "
               "or put the 4 IDX .gz files in $MIXLAB_DATA"),
    Loader("mnist", idx.MNIST_CLASSES,
           functools.partial(idx.read, md5=idx.MNIST_MD5, fix=_tv("MNIST")),
           files=idx.FILES, need=_IDX_NEED, subdirs=("mnist",),
           system=("/usr/share/datasets/mnist",), download="MNIST",
           fix=f"put the 4 MNIST IDX .gz files in $MIXLAB_DATA/mnist, or {_tv('MNIST')}"),
    Loader("cifar10", cifar.CIFAR10_CLASSES, cifar.read_cifar10, files=cifar.CIFAR10_FILES,
           need="cifar-10-batches-py/{data_batch_1..5,test_batch}", subdirs=("cifar10",),
           fix=f"extract cifar-10-python.tar.gz into $MIXLAB_DATA, or {_tv('CIFAR10')}"),
    Loader("cifar100-20", cifar.CIFAR100_COARSE_CLASSES, cifar.read_cifar100_20,
           files=cifar.CIFAR100_FILES, need="cifar-100-python/{train,test}",
           subdirs=("cifar100-20", "cifar100"),
           fix=f"extract cifar-100-python.tar.gz into $MIXLAB_DATA, or {_tv('CIFAR100')}"),
    Loader("stl10", stl10.CLASSES, stl10.read, files=stl10.FILES,
           need="stl10_binary/{train,test}_{X,y}.bin", subdirs=("stl10",),
           fix=f"extract stl10_binary.tar.gz into $MIXLAB_DATA, or {_tv('STL10')}"),
    Loader("imagenet-dog", imagenet_dog.CLASSES, imagenet_dog.read, files=imagenet_dog.FILES,
           need="train/<wnid>/ folders of the 15 dog WNIDs", subdirs=("imagenet-dog", "imagenet"),
           fix="set root or $MIXLAB_DATA/imagenet to an ILSVRC2012 folder with train/<wnid>/*.JPEG",
           cache=False),
    Loader("digits", tuple(str(d) for d in range(10)), synthetic.digits),
    Loader("blobs2d", tuple(f"component {i}" for i in range(10)), synthetic.blobs2d),
    Loader("noise-cifar", tuple(f"random {i}" for i in range(10)), synthetic.noise_cifar),
)
DATASETS: dict[str, Loader] = {loader.name: loader for loader in _LOADERS}


def dataset_names() -> list[str]:
    """The registered dataset names."""
    return list(DATASETS)


def load(name: str, *, subset: int | None = None, seed: int = 0,
         root: str | os.PathLike | None = None, verify: bool = True, image_size: int | None = None,
         channels: int | None = None, skip_unreadable: bool = False) -> Dataset:
    """Load dataset `name` (see `dataset_names()`), optionally a seeded subset of `subset` rows.

    `name` may be `folder:PATH`, a directory of your own images (see :mod:`mixlab.data.folder`):
    decoded at `image_size` (default 32) with `channels` (1, 3, None = automatic), unreadable files
    an error unless `skip_unreadable`; there `subset` only caps the number of images.

    Files are searched in `root` alone when given, else in $MIXLAB_DATA, the workbook's data/ (``mixlab.utils.paths``), then the
    distribution package's folder; (Fashion-)MNIST is then fetched through torchvision unless
    $MIXLAB_OFFLINE is set. The whole dataset is cached in-process; each call returns a copy.
    `subset=n` keeps n indices drawn by a torch.Generator seeded with `seed`, sorted.
    `verify=False` is for test fixtures only (skips checksums and official sizes).
    """
    if name.startswith(folder.PREFIX):
        parts = folder.read(name, size=image_size or folder.DEFAULT_SIZE, channels=channels,
                            skip_unreadable=skip_unreadable)
        full = Dataset(name=name, images=parts["images"], labels=parts["labels"], classes=parts["classes"],
                       source=parts["source"], paths=parts["paths"])
        return folder_subset(full, subset, seed)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)},"
                         " or folder:PATH for a directory of your own images")
    loader = DATASETS[name]
    where = loader.locate(root)
    full = (_cached(name, where, loader.stamp(where), verify) if loader.cache
            else loader.read_from(where, verify))
    return _subset(full, subset, seed, name)


def folder_subset(full: Dataset, subset: int | None, seed: int = 0) -> Dataset:
    """The rows ``load("folder:PATH", subset=subset, seed=seed)`` keeps, drawn from ``full``, the whole
    folder as ``load`` returns it without ``subset``: all of them when ``subset`` is None or not smaller."""
    return _subset(full, None if subset is None or subset >= len(full) else subset, seed, full.name)


def _subset(full: Dataset, subset: int | None, seed: int, name: str) -> Dataset:
    """A copy of all of `full`, or of `subset` rows drawn by a generator seeded with `seed`, sorted."""
    if subset is None:
        return full.select(torch.arange(len(full)))
    if not 0 < subset <= len(full):
        raise ValueError(f"subset={subset} must be between 1 and the {len(full)} images of {name}")
    g = torch.Generator().manual_seed(seed)
    return full.select(torch.randperm(len(full), generator=g)[:subset].sort().values)


@functools.lru_cache(maxsize=8)
def _cached(name: str, folder: Path | None, stamp: tuple, verify: bool) -> Dataset:
    """The whole dataset; `stamp` is only part of the cache key."""
    return DATASETS[name].read_from(folder, verify)
