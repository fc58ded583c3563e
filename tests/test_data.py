"""The dataset registry: real Fashion-MNIST, fixture files in each true format, errors."""
import shutil
from pathlib import Path

import fixtures
import numpy as np
import pytest
import torch

from mixlab.data import DATASETS, dataset_names, load

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian dataset-fashion-mnist not installed (sudo apt-get install -y dataset-fashion-mnist)")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty $MIXLAB_DATA and workbook root ($MIXLAB_ROOT), no downloads."""
    monkeypatch.setenv("MIXLAB_DATA", str(tmp_path / "store"))
    monkeypatch.setenv("MIXLAB_OFFLINE", "1")
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    return tmp_path


def assert_matches(ds, expected):
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous()
    assert ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.images.numpy(), expected["images"])
    np.testing.assert_array_equal(ds.labels.numpy(), expected["labels"])
    np.testing.assert_array_equal(ds.train_mask.numpy(), expected["train_mask"])


@needs_fashion
def test_fashion_mnist_real():
    ds = load("fashion-mnist")
    assert ds.images.shape == (70_000, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and len(ds.classes) == 10
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 7000))
    assert ds.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published first labels
    assert ds.train_mask.sum() == 60_000 and ds.train_mask[:60_000].all()
    ds.images[0] = 0  # a caller's copy: the cache is untouched
    assert load("fashion-mnist").images[0].any()


@needs_fashion
def test_subset_seeded():
    a, b = load("fashion-mnist", subset=500, seed=1), load("fashion-mnist", subset=500, seed=1)
    c = load("fashion-mnist", subset=500, seed=2)
    assert a.images.shape == (500, 1, 28, 28)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    full = load("fashion-mnist")
    index = torch.randperm(70_000, generator=torch.Generator().manual_seed(1))[:500].sort().values
    assert torch.equal(a.images, full.images[index]) and torch.equal(a.train_mask, full.train_mask[index])
    with pytest.raises(ValueError, match="subset"):
        load("fashion-mnist", subset=70_001)


@needs_fashion
def test_corrupted_gz_rejected(tmp_path):
    for f in FASHION.glob("*.gz"):
        shutil.copy(f, tmp_path)
    assert len(load("fashion-mnist", root=tmp_path)) == 70_000
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: MD5 mismatch") as err:
        load("fashion-mnist", root=tmp_path)
    assert "\n" not in str(err.value)


def test_fixture_idx_needs_verify_off(tmp_path):
    fixtures.write_idx(tmp_path)
    with pytest.raises(ValueError, match="MD5 mismatch"):
        load("mnist", root=tmp_path)


def test_missing_data_lists_places(offline):
    with pytest.raises(FileNotFoundError) as err:
        load("cifar10")
    msg = str(err.value)
    assert "\n" not in msg and "CIFAR10" in msg
    for place in (offline / "store" / "cifar10", offline / "store", offline / "data" / "cifar10"):
        assert str(place) in msg
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
        load("fashion-mnist", root=offline / "empty")
    assert str(offline / "empty") in str(err.value)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown dataset 'x'; choose one of: .*cifar100-20"):
        load("x")
    assert set(dataset_names()) == set(DATASETS) >= {"fashion-mnist", "stl10", "imagenet-dog"}


def test_mnist_fixture_via_env(offline):
    expected = fixtures.write_idx(offline / "store" / "mnist", n_train=4, n_test=2)
    ds = load("mnist", verify=False)
    assert_matches(ds, expected)
    assert ds.source == str(offline / "store" / "mnist")


def test_cifar10_fixture(tmp_path):
    expected = fixtures.write_cifar10(tmp_path)
    ds = load("cifar10", root=tmp_path, verify=False)
    assert ds.images.shape == (18, 3, 32, 32) and ds.train_mask.sum() == 15
    assert_matches(ds, expected)
    with pytest.raises(ValueError, match="10000"):  # official sizes are checked by default
        load("cifar10", root=tmp_path)


def test_cifar100_20_fixture(tmp_path):
    expected = fixtures.write_cifar100(tmp_path)
    ds = load("cifar100-20", root=tmp_path, verify=False)
    assert ds.images.shape == (10, 3, 32, 32) and len(ds.classes) == 20
    assert_matches(ds, expected)


def test_stl10_fixture_column_major(tmp_path):
    expected = fixtures.write_stl10(tmp_path)
    ds = load("stl10", root=tmp_path, verify=False)
    assert ds.images.shape == (5, 3, 96, 96) and ds.labels.max() <= 9
    assert_matches(ds, expected)
    raw = np.fromfile(tmp_path / "stl10_binary" / "train_X.bin", np.uint8)
    assert ds.images[0, 1, 2, 5] == raw[96 * 96 + 5 * 96 + 2]  # channel 1, row 2, column 5


def test_imagenet_dog_fixture(tmp_path):
    expected = fixtures.write_imagenet_dog(tmp_path)
    ds = load("imagenet-dog", root=tmp_path, verify=False)
    assert ds.images.shape == (30, 3, 96, 96) and ds.images.dtype == torch.uint8
    assert ds.train_mask is None and len(ds.classes) == 15
    np.testing.assert_array_equal(ds.labels.numpy(), expected["labels"])
    mean_rgb = ds.images.float().mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(mean_rgb, expected["colors"], atol=3)


def test_builtin_datasets():
    digits = load("digits", subset=100, seed=3)
    assert digits.images.shape == (100, 1, 8, 8) and digits.images.max() == 255
    blobs = load("blobs2d")
    assert blobs.images.dtype == torch.float32 and blobs.images.shape == (3000, 2)
    means = torch.stack([blobs.images[blobs.labels == k].mean(0) for k in range(10)])
    assert torch.allclose(means, blobs.centers, atol=0.25)


def test_noise_cifar_has_cifar_shapes_and_is_seeded():
    noise = load("noise-cifar", subset=64, seed=0)
    assert noise.images.shape == (64, 3, 32, 32) and noise.images.dtype == torch.uint8
    assert torch.equal(noise.images, load("noise-cifar", subset=64, seed=0).images)
