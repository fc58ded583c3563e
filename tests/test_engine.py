"""The engine: exact resume after a kill mid-epoch, NaN stops with its step, atomic files, CLI errors."""
import json
import subprocess
import sys

import pytest
import torch

from mixlab import engine, rundir
from mixlab.__main__ import main
from mixlab.config import resolve
from mixlab.utils import precision


class Killed(Exception):
    pass


def _cfg(amp=False, **method):
    return resolve("toy", "smoke", {"method": method, "train": {"snapshot_epochs": [1, -1], "amp": amp}})


def _kill_at(step):
    def hook(global_step):
        if global_step == step:
            raise Killed
    return hook


@pytest.mark.parametrize("amp", [False, pytest.param(True, marks=pytest.mark.skipif(
    not precision.cpu_has_native_bf16(), reason="bf16 autocast on CPU needs avx512_bf16 or AMX"))])
def test_resume_after_kill_matches_uninterrupted(tmp_path, amp):
    ref = engine.train(_cfg(amp), tmp_path / "ref")
    steps_per_epoch = 256 // 32
    with pytest.raises(Killed):   # killed in the middle of epoch 2
        engine.train(_cfg(amp), tmp_path / "run", step_hook=_kill_at(steps_per_epoch + 3))
    assert json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 1
    resumed = engine.train(_cfg(amp), tmp_path / "run", resume=True)
    for key in ("acc", "nmi", "ari", "ami"):
        assert resumed[key] == ref[key]
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    for name, tensor in a["method"].items():
        assert torch.equal(tensor, b["method"][name]), name
    assert (tmp_path / "ref" / "log.jsonl").read_text().count("\n") == 3
    assert [json.loads(line)["loss"] for line in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()] == \
        [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert (tmp_path / "ref" / "snapshots" / "epoch_001.npz").is_file()
    assert (tmp_path / "ref" / "snapshots" / "epoch_003.npz").is_file()


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    with pytest.raises(engine.NonFiniteLoss, match=r"epoch 2 step 3 \(global step 11\)"):
        engine.train(_cfg(blow_up_at_step=11), tmp_path / "r")
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_a_loss_without_gradient_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="loss of Toy stage '.*' carries no gradient"):
        engine.train(_cfg(detach_loss=True), tmp_path / "r")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    engine.train(_cfg(), tmp_path / "r")
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(rundir.CheckpointError, match="unreadable.*delete it"):
        engine.train(_cfg(), tmp_path / "r", resume=True)


def test_existing_run_is_not_overwritten(tmp_path):
    engine.train(_cfg(), tmp_path / "r")
    before = (tmp_path / "r" / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        engine.train(_cfg(), tmp_path / "r")
    assert (tmp_path / "r" / "metrics.json").read_bytes() == before


def test_schedule_warmup_then_step():
    cfg = resolve("toy", "smoke", {"train": {"schedule": "step", "milestones": [2], "warmup_epochs": 1}}).train
    f = engine.lr_multiplier(cfg, steps_per_epoch=4)
    assert [round(f(s), 3) for s in range(12)] == [0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1]


@pytest.mark.parametrize("argv, message", [
    (["train", "--method", "nope", "--out", "{out}"], "unknown method 'nope'"),
    (["train", "--method", "toy", "--profile", "smoke", "--dataset", "nope", "--out", "{out}"], "unknown dataset"),
    (["train", "--method", "toy", "--profile", "smoke", "--set", "lrr=1", "--out", "{out}"], "lrr"),
    (["train", "--method", "toy", "--profile", "smoke", "--set", "n_clusters=x", "--out", "{out}"],
     "method.n_clusters"),
    (["train", "--method", "toy", "--profile", "smoke", "--params", "{bad}", "--out", "{out}"], "not valid YAML"),
])
def test_cli_bad_input_one_line_and_nothing_written(tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [\n")
    out = tmp_path / "out"
    code = main([a.format(out=out, bad=bad) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err and "\n" not in err and err.startswith("mixlab: error:")
    assert not out.exists()


def test_cli_train_and_eval_round_trip(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "toy", "--profile", "smoke", "--seed", "1", "--out", str(out)]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--run", str(out)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["acc"] == trained["acc"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"commit", "device", "torch"} <= set(metrics["provenance"]) and metrics["seed"] == 1


def test_help_documents_commands():
    out = subprocess.run([sys.executable, "-m", "mixlab", "--help"], capture_output=True, text=True).stdout
    for command in ("train", "eval", "reproduce", "config", "list"):
        assert command in out


def test_time_budget_stops_mid_epoch_and_evaluates(tmp_path):
    import time

    cfg = resolve("toy", "smoke", {"train": {"epochs": 3, "time_budget_s": 0.3}})
    out = engine.train(cfg, tmp_path / "r", step_hook=lambda step: time.sleep(0.05))  # 8 steps/epoch
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert out["stopped_by_budget"] and out["epochs"] == 1 and len(log) == 1
    assert 0.3 <= log[0]["train_seconds"] < 0.3 + 0.3 and log[0]["step"] < 8
    assert "acc" in log[0] and out["train_seconds"] == pytest.approx(log[0]["train_seconds"], abs=0.01)
    again = engine.train(cfg, tmp_path / "r", resume=True)  # a spent budget trains no further
    assert again["stopped_by_budget"] and again["epochs"] == 1
    full = engine.train(resolve("toy", "smoke", {"train": {"epochs": 2}}), tmp_path / "full")
    assert not full["stopped_by_budget"] and full["epochs"] == 2


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint", "not a mixlab checkpoint"),
    ("truncated", "truncated"),
    ({"weights": [1, 2]}, "another version"),
])
def test_unreadable_checkpoint_says_what_is_wrong_in_plain_words(tmp_path, content, reason):
    engine.train(_cfg(), tmp_path / "r")
    path = tmp_path / "r" / "checkpoint.pt"
    if content == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_bytes(content)
    with pytest.raises(rundir.CheckpointError) as err:
        engine.train(_cfg(), tmp_path / "r", resume=True)
    message = str(err.value)
    assert reason in message and "delete it" in message and "\n" not in message and "weights_only" not in message


def test_cli_shows_the_traceback_only_when_debugging(tmp_path, capsys, monkeypatch):
    argv = ["train", "--method", "toy", "--profile", "smoke", "--set", "lrr=1", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(Exception, match="lrr"):
        main(["--debug"] + argv)
    monkeypatch.setenv("MIXLAB_DEBUG", "1")
    with pytest.raises(Exception, match="lrr"):
        main(argv)
