"""`folder:PATH` datasets end to end: loading, cache, training through the CLI with and without
labels, assignments.csv, `predict`, and every bad input as a one-line error."""
import json
import os

import numpy as np
import pandas as pd
import pytest
from fixtures import gray_folder
from PIL import Image

from mixlab.__main__ import main
from mixlab.data import folder, load
from mixlab.data.example_images import write_shapes

N_PER_SHAPE = 8  # 4 shapes -> 32 images per folder
SMALL = ["--profile", "smoke", "--set", "batch_size=8", "--set", "max_steps_per_epoch=2", "--set", "epochs=1"]
QUEUE = {"moco": ["--set", "queue_size=16"], "mice": ["--set", "queue_size=16", "--set", "n_clusters=4"],
         "siammm": ["--set", "n_clusters=6"]}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def labelled(tmp_path):
    """Class subfolders (some files nested one level deeper), mixed sizes, gray PNG + RGB JPEG."""
    write_shapes(tmp_path / "labelled", N_PER_SHAPE, layout="classes")
    return tmp_path / "labelled"


@pytest.fixture
def flat(tmp_path):
    write_shapes(tmp_path / "flat", N_PER_SHAPE, layout="flat", seed=1)
    return tmp_path / "flat"


def run_cli(argv, capsys):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def test_layouts_labels_and_channels(labelled, flat, tmp_path):
    d = load(f"folder:{labelled}")
    assert d.classes == ["cross", "disc", "square", "triangle"]
    assert len(d) == 4 * N_PER_SHAPE and d.images.shape[1:] == (3, 32, 32)  # RGB present -> 3 channels
    assert any(p.count("/") == 2 for p in d.paths), "nested files inside a class folder are found"
    assert [d.classes[y] for y in d.labels] == [p.split("/")[0] for p in d.paths]
    f = load(f"folder:{flat}", image_size=20, channels=1)
    assert f.labels is None and f.images.shape[1:] == (1, 20, 20)
    g = load(f"folder:{gray_folder(tmp_path / 'gray')}")
    assert g.images.shape[1] == 1, "a folder of grayscale images is loaded with one channel"
    assert load(f"folder:{tmp_path / 'gray'}", channels=3).images.shape[1] == 3


def test_cache_reused_and_invalidated(flat, cache, monkeypatch):
    calls = []
    decode = folder.decode_all
    monkeypatch.setattr(folder, "decode_all", lambda *a, **k: calls.append(1) or decode(*a, **k))
    first = load(f"folder:{flat}")
    second = load(f"folder:{flat}")
    assert len(calls) == 1 and len(list(cache.glob("*.pt"))) == 1
    assert (first.images == second.images).all()
    victim = sorted(flat.glob("*.png"))[0]
    Image.new("L", (30, 30), 255).save(victim)
    os.utime(victim, ns=(1, 1))
    changed = load(f"folder:{flat}")
    assert len(calls) == 2, "a changed file invalidates the cache"
    row = changed.paths.index(victim.name)
    assert (changed.images[row] == 255).all() and not (first.images[row] == 255).all()


@pytest.mark.parametrize("method", ["moco", "mice", "siammm"])
@pytest.mark.parametrize("layout", ["labelled", "flat"])
def test_train_predict_through_cli(method, layout, request, tmp_path, capsys, one_thread):
    images = request.getfixturevalue(layout)
    out = tmp_path / "run"
    rc, err = run_cli(["train", "--method", method, "--dataset", f"folder:{images}", "--out", out, *SMALL,
                       *QUEUE[method]], capsys)
    assert rc == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    rows = pd.read_csv(out / "assignments.csv")
    files = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.*"))
    assert sorted(rows["path"]) == files, "one row per image, paths relative to the folder"
    assert rows["probability"].between(0, 1).all() and rows["probability"].gt(0).all()
    assert sum(metrics["cluster_sizes"]) == len(files)
    assert metrics["max_cluster_frac"] == max(metrics["cluster_sizes"]) / len(files)
    assert np.isfinite(metrics["objective"]["loss"])
    if layout == "flat":
        assert not {"acc", "nmi", "ari", "ami"} & set(metrics) and metrics["labelled"] is False
    else:
        assert 0 < metrics["acc"] and metrics["labelled"] is True
    rc, err = run_cli(["predict", "--run", out, "--dataset", f"folder:{images}", "--out", tmp_path / "p.csv"], capsys)
    assert rc == 0, err
    again = pd.read_csv(tmp_path / "p.csv")
    pd.testing.assert_frame_equal(again, rows)


def test_unlabelled_snapshots_and_resume(flat, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    argv = ["train", "--method", "moco", "--dataset", f"folder:{flat}", "--out", out, *SMALL, *QUEUE["moco"],
            "--set", "snapshot_epochs=[-1]"]
    assert run_cli(argv, capsys)[0] == 0
    with np.load(out / "snapshots" / "epoch_001.npz") as snap:
        assert "labels" not in snap.files and len(snap["index"]) == 4 * N_PER_SHAPE
    first = (out / "assignments.csv").read_text()
    assert run_cli([*argv, "--resume"], capsys)[0] == 0
    assert (out / "assignments.csv").read_text() == first


def test_registered_dataset_assignments_use_the_index(tmp_path, capsys, one_thread):
    out = tmp_path / "digits"
    rc, err = run_cli(["train", "--method", "moco", "--dataset", "digits", "--out", out, *SMALL, "--set",
                       "subset=100", "--set", "queue_size=16"], capsys)
    assert rc == 0, err
    rows = pd.read_csv(out / "assignments.csv")
    assert len(rows) == 100 and rows["index"].is_monotonic_increasing and rows["index"].max() > 100


def one_line_error(argv, capsys, *needles):
    rc, err = run_cli(argv, capsys)
    assert rc != 0 and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_folders(tmp_path, capsys):
    train = ["train", "--method", "moco", "--profile", "smoke", "--out", tmp_path / "run"]
    one_line_error([*train, "--dataset", f"folder:{tmp_path / 'missing'}"], capsys, "does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error([*train, "--dataset", f"folder:{tmp_path / 'empty'}"], capsys, "no image files")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "notes.txt").write_text("not an image")
    one_line_error([*train, "--dataset", f"folder:{tmp_path / 'text'}"], capsys, "no image files")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    one_line_error([*train, "--dataset", f"folder:{tmp_path / 'broken'}"], capsys, "a.png", "skip_unreadable")
    one_line_error([*train, "--dataset", f"folder:{tmp_path / 'broken'}", "--set", "skip_unreadable=true"], capsys,
                   "none of its 1 image files is readable")
    assert not (tmp_path / "run").exists(), "nothing is written on bad input"


def test_corrupt_file_named_or_skipped(labelled, tmp_path, capsys, cache, one_thread):
    good = sorted(labelled.rglob("*.png"))[0]
    truncated = labelled / "disc" / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    out = tmp_path / "run"
    argv = ["train", "--method", "moco", "--dataset", f"folder:{labelled}", "--out", out, *SMALL, *QUEUE["moco"]]
    one_line_error(argv, capsys, "truncated.png", "skip_unreadable=true")
    assert not out.exists() and not list(cache.glob("*.pt")), "nothing half-written"
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert run_cli([*argv, "--set", "skip_unreadable=true"], capsys)[0] == 0
    assert "disc/truncated.png" not in set(pd.read_csv(out / "assignments.csv")["path"])


def test_too_few_images_for_batch_or_queue(flat, tmp_path, capsys, one_thread):
    """Batch and queue larger than the folder are lowered to fit, with one warning line
    (tests/test_small_folders.py has the rest)."""
    base = ["train", "--method", "moco", "--dataset", f"folder:{flat}", "--profile", "smoke", "--set", "epochs=1"]
    rc, err = run_cli([*base, "--out", tmp_path / "r", "--set", "queue_size=16"], capsys)
    assert rc == 0 and "mixlab: warning: 32 training images: batch_size 128 -> 32 (" in err, err
    rc, err = run_cli([*base, "--out", tmp_path / "q", "--set", "batch_size=8"], capsys)
    assert rc == 0 and "mixlab: warning: 32 training images: queue_size 512 -> 32 (" in err, err


def test_predict_with_other_channels_or_size(tmp_path, flat, capsys, one_thread):
    gray = gray_folder(tmp_path / "gray", 32)
    out = tmp_path / "run"
    assert run_cli(["train", "--method", "moco", "--dataset", f"folder:{gray}", "--out", out, *SMALL,
                    *QUEUE["moco"]], capsys)[0] == 0
    predict = ["predict", "--run", out, "--out", tmp_path / "p.csv"]
    one_line_error([*predict, "--dataset", f"folder:{flat}"], capsys, "3-channel", "--channels 1")
    assert not (tmp_path / "p.csv").exists()
    assert run_cli([*predict, "--dataset", f"folder:{flat}", "--channels", "1"], capsys)[0] == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 4 * N_PER_SHAPE
    one_line_error([*predict, "--dataset", "digits"], capsys, "(1, 8, 8)", "1-channel 16x16")
    one_line_error(["predict", "--run", tmp_path / "nothing", "--dataset", f"folder:{flat}", "--out",
                    tmp_path / "q.csv"], capsys, "not a finished run")


def test_predict_reproduces_bf16_runs(flat, tmp_path, capsys, one_thread):
    """With train.amp (bf16 autocast where the CPU has it) predict uses the run's precision too."""
    out = tmp_path / "run"
    assert run_cli(["train", "--method", "mice", "--dataset", f"folder:{flat}", "--out", out, *SMALL,
                    *QUEUE["mice"], "--set", "amp=true"], capsys)[0] == 0
    assert run_cli(["predict", "--run", out, "--dataset", f"folder:{flat}", "--out", tmp_path / "p.csv"],
                   capsys)[0] == 0
    assert (tmp_path / "p.csv").read_text() == (out / "assignments.csv").read_text()
