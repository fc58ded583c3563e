"""The one reuse rule: same key stored beside the result, and the result's files exist."""
import json

from mixlab.utils import cache


def test_a_result_is_current_only_with_its_key_and_outputs(tmp_path):
    config, done = tmp_path / "config.json", tmp_path / "metrics.json"
    config.write_text(json.dumps({"train": {"lr": 0.1}}))
    assert not cache.is_current(config, {"train": {"lr": 0.1}}, outputs=[done])   # not finished
    done.write_text("{}")
    assert cache.is_current(config, {"train": {"lr": 0.1}}, outputs=[done])
    assert not cache.is_current(config, {"train": {"lr": 0.2}}, outputs=[done])   # config changed
    stamp = tmp_path / "stamp.json"
    assert not cache.is_current(stamp, "abc", field="key")                        # never made
    stamp.write_text(json.dumps({"key": "abc", "seconds": 3.0}))
    assert cache.is_current(stamp, "abc", field="key") and not cache.is_current(stamp, "abd", field="key")


def test_experiments_reuse_a_finished_run_of_the_same_config(tmp_path, monkeypatch):
    from mixlab import engine
    from mixlab.workbook import experiments

    trained, real_train = [], engine.train

    def counting_train(cfg, out, **kwargs):
        trained.append(out)
        return real_train(cfg, out, **kwargs)

    monkeypatch.setattr(engine, "train", counting_train)
    dirs = {"runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results"}
    first = experiments.run("exp", "toy", "toy", profile="smoke", seed=0, **dirs)
    again = experiments.run("exp", "toy", "toy", profile="smoke", seed=0, **dirs)
    assert len(trained) == 1 and again == first                                   # reused
    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, overrides={"train": {"epochs": 2}}, **dirs)
    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, overrides={"train": {"epochs": 2}}, force=True, **dirs)
    assert len(trained) == 3                                                       # new config, then forced


def test_a_committed_record_is_reused_where_runs_is_empty(tmp_path, monkeypatch):
    """A pass spans sittings: a run's record (results/, committed) restores it in a clone whose runs/
    is empty, without training: the same metrics and cluster assignments, and with ``keep`` its
    float16 weights rebuild the trained model. A changed config or ``force`` trains again."""
    import shutil

    import numpy as np
    import torch

    from mixlab import engine, rundir
    from mixlab.workbook import experiments

    trained, real_train = [], engine.train
    monkeypatch.setattr(engine, "train", lambda cfg, out, **kw: trained.append(out) or real_train(cfg, out, **kw))
    dirs = {"runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results"}
    first = experiments.run("exp", "toy", "toy", profile="smoke", seed=0, keep=True, **dirs)
    clusters, weights = rundir.clusters(first["run_dir"]), rundir.weights(first["run_dir"])
    record = tmp_path / "results" / "exp" / "toy-seed0"
    assert rundir.has_record(record, keep=True) and not (record / rundir.CHECKPOINT).exists()

    shutil.rmtree(tmp_path / "runs")  # a fresh clone: only what was committed
    again = experiments.run("exp", "toy", "toy", profile="smoke", seed=0, keep=True, **dirs)
    assert len(trained) == 1 and again == first
    np.testing.assert_array_equal(rundir.clusters(again["run_dir"])["cluster"], clusters["cluster"])
    restored = rundir.load(again["run_dir"]).method.state_dict()
    for name, value in weights.items():
        torch.testing.assert_close(restored[name], value.half().to(value.dtype) if value.is_floating_point() else value)

    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, overrides={"train": {"epochs": 2}}, **dirs)
    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, force=True, **dirs)
    assert len(trained) == 3  # another config, then forced


def test_a_compact_state_loads_back_exactly_into_its_own_dtypes():
    """model.pt keeps floats in float16 and integer buffers (SiamMM's [N, H] cluster indices) in the
    narrowest integer type that holds them; load_state_dict casts both back to the module's dtypes."""
    import torch

    from mixlab import rundir

    module = torch.nn.Linear(3, 2)
    module.register_buffer("assign", torch.randint(0, 5469, (1000, 5)))
    module.register_buffer("offset", torch.tensor([-2 ** 40, 7]))
    module.register_buffer("flag", torch.ones((), dtype=torch.bool))
    compact = rundir.compact(module.state_dict())
    assert (compact["weight"].dtype, compact["assign"].dtype, compact["offset"].dtype, compact["flag"].dtype) == (
        torch.float16, torch.int16, torch.int64, torch.bool)
    fresh = torch.nn.Linear(3, 2)
    fresh.register_buffer("assign", torch.zeros(1000, 5, dtype=torch.long))
    fresh.register_buffer("offset", torch.zeros(2, dtype=torch.long))
    fresh.register_buffer("flag", torch.zeros((), dtype=torch.bool))
    fresh.load_state_dict(compact)
    assert fresh.assign.dtype == torch.long and torch.equal(fresh.assign, module.assign)
    assert torch.equal(fresh.offset, module.offset) and bool(fresh.flag)
    torch.testing.assert_close(fresh.weight, module.weight.half().float())


def test_a_record_without_weights_is_not_reused_where_weights_are_asked(tmp_path, monkeypatch):
    from mixlab import engine
    from mixlab.workbook import experiments

    trained, real_train = [], engine.train
    monkeypatch.setattr(engine, "train", lambda cfg, out, **kw: trained.append(out) or real_train(cfg, out, **kw))
    dirs = {"runs_dir": tmp_path / "runs", "results_dir": tmp_path / "results"}
    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, **dirs)
    import shutil
    shutil.rmtree(tmp_path / "runs")
    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, **dirs)             # tables only: restored
    experiments.run("exp", "toy", "toy", profile="smoke", seed=0, keep=True, **dirs)  # figures need weights
    assert len(trained) == 2
