"""Small and odd folders just work: batch and queue fitted to the data with one warning line, a
warning when one cluster takes (almost) everything, a row in assignments.csv for every image even
when training used a subset, `predict` reading files as `train` does, every unreadable file named,
"did you mean" for a misspelt field, and output files that honour the umask."""
import json
import os
import shutil
from contextlib import contextmanager

import pandas as pd
import pytest
from fixtures import gray_folder
from test_folder import cache, one_line_error, run_cli  # noqa: F401  (cache: autouse fixture, MIXLAB_CACHE)

from mixlab import engine
from mixlab.config import resolve
from mixlab.utils import io


@contextmanager
def umask(mask):
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def warnings_in(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("mixlab: warning:")]


def test_default_profile_on_60_images(tmp_path, capsys, one_thread):
    """The cpu profile (batch 256, queue 2048 for MiCE) on 60 images: lowered to 60 and 60, said once,
    recorded in config.json; resume, predict and the files' modes follow."""
    images = gray_folder(tmp_path / "flat", 60)
    out = tmp_path / "run"
    argv = ["train", "--method", "mice", "--dataset", f"folder:{images}", "--out", out, "--set", "epochs=1"]
    with umask(0o022):
        rc, err = run_cli(argv, capsys)
    assert rc == 0, err
    capped = [w for w in warnings_in(err) if "batch_size" in w]
    assert len(capped) == 1 and "60 training images" in capped[0], err
    asked = resolve("mice", "cpu", {"train": {"dataset": f"folder:{images}", "epochs": 1}})
    assert asked.train.batch_size > 60 and asked.params.queue_size > 60, "the profile's settings exceed the data"
    assert f"batch_size {asked.train.batch_size} -> 60, queue_size {asked.params.queue_size} -> 60" in capped[0]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["batch_size"] == 60 and cfg["method_params"]["queue_size"] == 60
    assert engine.asked_config(cfg) == asked.to_dict(), "what was asked stays readable, e.g. for a cache"
    rows = pd.read_csv(out / "assignments.csv")
    assert sorted(rows["path"]) == sorted(p.name for p in images.iterdir()) and len(rows) == 60
    metrics = json.loads((out / "metrics.json").read_text())
    collapsed = [w for w in warnings_in(err) if "holds" in w]
    assert len(collapsed) == (metrics["max_cluster_frac"] > 0.9), err
    for name in ("config.json", "metrics.json", "assignments.csv", "log.jsonl", "checkpoint.pt"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name

    rc, err = run_cli([*argv, "--resume"], capsys)  # the fitted config matches its checkpoint
    assert rc == 0, err

    odd = tmp_path / "odd"
    shutil.copytree(images, odd)
    for name in ("a.png", "b.jpg", "c.gif", "d.png", "e.png", "f.bmp", "g.png"):
        (odd / name).write_bytes(b"not an image")
    predict = ["predict", "--run", out, "--dataset", f"folder:{odd}", "--out", tmp_path / "p.csv"]
    one_line_error(predict, capsys, "7 unreadable image files: a.png, b.jpg, c.gif, d.png, e.png and 2 more",
                   "--set skip_unreadable=true")
    with umask(0o022), pytest.warns(UserWarning, match="skipped 7 unreadable"):
        rc, err = run_cli([*predict, "--set", "skip_unreadable=true"], capsys)
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "p.csv"), rows)
    assert (tmp_path / "p.csv").stat().st_mode & 0o777 == 0o644
    one_line_error([*predict, "--set", "lr=0.1"], capsys, "predict takes only", "skip_unreadable")


def test_smoke_subset_still_assigns_every_image(tmp_path, capsys, one_thread):
    """smoke trains on a subset of 512; all 539 images of the folder get a row."""
    images = gray_folder(tmp_path / "many", 539)
    out = tmp_path / "run"
    rc, err = run_cli(["train", "--method", "moco", "--profile", "smoke", "--dataset", f"folder:{images}",
                       "--out", out, "--set", "epochs=1"], capsys)
    assert rc == 0, err
    assert not [w for w in warnings_in(err) if "batch_size" in w], "512 images fit the smoke profile"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input"]["n_samples"] == 512 == sum(metrics["cluster_sizes"])
    rows = pd.read_csv(out / "assignments.csv")
    assert len(rows) == 539 and sorted(rows["path"]) == sorted(p.name for p in images.iterdir())


def test_fit_to_data_lowers_batch_then_queue():
    cfg = resolve("mice", "cpu", {"train": {"batch_size": 256}, "method": {"queue_size": 2048}})
    same, note = engine.fit_to_data(cfg, 70_000)
    assert same is cfg and note == ""
    fitted, note = engine.fit_to_data(cfg, 300)  # batch 256 fits; queue 2048 -> the largest multiple of 256
    assert (fitted.train.batch_size, fitted.params.queue_size) == (256, 256) and "queue_size 2048 -> 256" in note
    fitted, note = engine.fit_to_data(cfg, 100, world_size=2)  # 50 per process, global batch 100
    assert (fitted.train.batch_size, fitted.params.queue_size) == (50, 100) and "(50 per process)" in note
    assert cfg.train.batch_size == 256, "the given config is left as it was"
    nmm, note = engine.fit_to_data(resolve("nmm", "cpu", {"train": {"batch_size": 128}}), 60)  # no queue
    assert nmm.train.batch_size == 60 and "queue" not in note


def test_collapse_warning_names_cluster_share_and_remedy():
    line = engine.collapse_warning([1, 0, 0, 58], epochs=1)
    assert line.startswith("cluster 3 holds 98% of the 59 images") and "--set epochs=" in line
    assert "n_clusters" in line and "\n" not in line
    assert engine.collapse_warning([9, 1], epochs=5) == ""  # exactly 90 %: no warning
    assert engine.collapse_warning([60], epochs=5) == ""


@pytest.mark.parametrize("key, hint", [("n_cluster", "did you mean n_clusters?"),
                                       ("method.n_cluster", "did you mean n_clusters?"),
                                       ("batchsize", "did you mean batch_size?"),
                                       ("zzzz", "mixlab config --method")])
def test_unknown_field_says_what_was_meant(tmp_path, capsys, key, hint):
    err = one_line_error(["train", "--method", "mice", "--out", tmp_path / "r", "--set", f"{key}=10"], capsys,
                         hint)
    assert "known fields" not in err and len(err) < 200


def test_unreadable_files_named_at_once(tmp_path, capsys):
    images = gray_folder(tmp_path / "flat", 4)
    for name in ("x.png", "y.jpg"):
        (images / name).write_bytes(b"\x89PNG broken")
    one_line_error(["train", "--method", "moco", "--profile", "smoke", "--dataset", f"folder:{images}",
                    "--out", tmp_path / "r"], capsys, "2 unreadable image files: x.png, y.jpg;",
                   "skip_unreadable=true")
    assert not (tmp_path / "r").exists()


def test_atomic_writes_honour_the_umask(tmp_path):
    with umask(0o027):
        io.write_text(tmp_path / "a.txt", "x")
        io.write_json(tmp_path / "b.json", {})
    with umask(0o002):
        io.torch_save(tmp_path / "c.pt", {})
    assert [(tmp_path / f).stat().st_mode & 0o777 for f in ("a.txt", "b.json", "c.pt")] == [0o640, 0o640, 0o664]
