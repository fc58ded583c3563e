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
