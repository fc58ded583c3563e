"""Relative defaults mean the same folders from any working directory (JupyterLab's kernel runs in
notebooks/): the workbook root, $MIXLAB_ROOT or the repository."""
from mixlab.data import bottleneck
from mixlab.data.datasets import DATASETS
from mixlab.utils import io, paths


def test_relative_paths_resolve_against_the_root_not_the_cwd(tmp_path, monkeypatch, repo):
    monkeypatch.delenv("MIXLAB_ROOT", raising=False)
    monkeypatch.chdir(repo / "notebooks")
    assert paths.root() == repo and paths.resolve("results") == repo / "results"
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    assert paths.resolve("figures/x.png") == tmp_path / "figures" / "x.png"
    assert paths.resolve(tmp_path / "abs") == tmp_path / "abs"
    io.write_json("results/r.json", {"a": 1})
    assert (tmp_path / "results" / "r.json").is_file() and not (repo / "notebooks" / "results").exists()


def test_data_search_and_caches_use_the_root(tmp_path, monkeypatch, repo):
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("MIXLAB_DATA", raising=False)
    monkeypatch.chdir(repo / "notebooks")
    assert DATASETS["fashion-mnist"].candidates(None)[0] == tmp_path / "data" / "fashion-mnist"
    assert bottleneck.cache_file().parent == tmp_path / "data" / bottleneck.NAME


def test_cli_paths_are_taken_from_the_shell_working_directory(tmp_path, monkeypatch, capsys):
    from mixlab.__main__ import main

    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--method", "toy", "--profile", "smoke", "--out", "here"]) == 0
    assert (tmp_path / "here" / "metrics.json").is_file() and not (tmp_path / "root" / "here").exists()
