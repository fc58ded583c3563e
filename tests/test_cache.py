"""The one reuse rule: same key stored beside the result, and the result's files exist."""
import json

from mixlab import cache


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
