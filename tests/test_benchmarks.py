"""The benchmark scripts run in their --quick mode and write complete, consistent tables."""
import importlib.util
import json

import pytest

from mixlab.utils import precision


def _script(repo, name):
    spec = importlib.util.spec_from_file_location(name, repo / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_quick_reports_both_paths_flops_and_peaks(repo, tmp_path, one_thread):
    out = tmp_path / "throughput.md"
    _script(repo, "throughput").main(["--quick", "--methods", "mice", "nmm", "--profile", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["quick"] and [r["method"] for r in data["methods"]] == ["mice", "nmm"]
    peaks = data["matmul_peak_flop_s"]["1"]
    assert peaks["fp32"] > 1e8 and peaks["bf16"] > 1e8
    for row in data["methods"]:
        assert row["img_s"]["fp32"] > 0 and row["img_s"]["default"] > 0
        assert row["ratio"] == pytest.approx(row["img_s"]["default"] / row["img_s"]["fp32"])
        assert row["gflop_per_step"] > 0.1     # the small CNN's convolutions at batch 64, forward and backward
        assert row["gflop_s"]["fp32"] == pytest.approx(row["gflop_per_step"] * row["img_s"]["fp32"] / row["batch"])
        assert row["default_dtype"] == ("bf16" if precision.cpu_has_native_bf16() else "fp32")
        assert any("convolution" in line for line in row["profile"])
    text = out.read_text()
    assert "QUICK MODE" in text and "| mice | small-cnn | 1 |" in text and "load_average_start" in text


def test_throughput_rejects_bad_arguments_in_one_line(repo, capsys):
    with pytest.raises(SystemExit):
        _script(repo, "throughput").main(["--steps", "0"])
    assert "--steps must be >= 1 (got 0)" in capsys.readouterr().err


def test_amp_numerics_quick_pairs_the_paths_by_seed_and_reuses_finished_runs(repo, tmp_path, one_thread):
    out, runs = tmp_path / "numerics.md", tmp_path / "runs"
    script = _script(repo, "amp_numerics")
    script.main(["--quick", "--methods", "moco", "--runs", str(runs), "--out", str(out)])
    row = json.loads(out.with_suffix(".json").read_text())["methods"][0]
    assert row["seeds"] == [0, 1] and row["amp_default"] is True
    first = {p: (runs / "moco" / p / "seed1" / "metrics.json").stat().st_mtime_ns for p in ("fp32", "default")}
    diff = [a - b for a, b in zip(row["scores"]["default"]["acc"], row["scores"]["fp32"]["acc"])]
    assert row["paired_t"]["acc"]["mean_diff"] == pytest.approx(sum(diff) / 2)
    assert "| moco | fp32 |" in out.read_text() and "| moco | default |" in out.read_text()
    script.main(["--quick", "--methods", "moco", "--runs", str(runs), "--out", str(out)])   # resumes: no retraining
    assert first == {p: (runs / "moco" / p / "seed1" / "metrics.json").stat().st_mtime_ns for p in ("fp32", "default")}


def test_amp_numerics_rejects_repeated_seeds(repo, capsys):
    with pytest.raises(SystemExit):
        _script(repo, "amp_numerics").main(["--seeds", "0", "0"])
    assert "--seeds must be distinct" in capsys.readouterr().err


def test_side_by_side_times_one_thread_two_threads_and_two_runs(repo, tmp_path):
    out = tmp_path / "side.md"
    _script(repo, "side_by_side").main(["--methods", "nmm", "--dataset", "digits", "--steps", "1", "--subset", "512",
                                        "--out", str(out)])
    row, = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["method"] == "nmm" and row["one_thread"] > 0 and row["two_threads"] > 0
    assert len(row["two_runs"]) == 2 and all(r > 0 for r in row["two_runs"])
    assert f"| nmm | {row['one_thread']:,.0f} | {row['two_threads']:,.0f} |" in out.read_text()


def test_side_by_side_rejects_bad_arguments_in_one_line(repo, capsys):
    with pytest.raises(SystemExit):
        _script(repo, "side_by_side").main(["--steps", "0"])
    assert "--steps and --subset must be >= 1 (got 0 and 8192)" in capsys.readouterr().err
