"""Configs are typed and validated; bad names and values give one-line errors naming the field."""
import pytest

from mixlab.config import ConfigError, load_param_file, parse_set, resolve
from toy_method import Toy


def test_profile_and_overrides_apply():
    cfg = resolve("toy", "smoke", {"train": {"lr": 0.5}, "method": {"n_clusters": 7}})
    assert cfg.train.dataset == "digits" and cfg.train.lr == 0.5 and cfg.params.n_clusters == 7


@pytest.mark.parametrize("over, field", [
    ({"train": {"lrr": 1}}, "train.lrr"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"epochs": 0}}, "train.epochs"),
    ({"train": {"optimizer": "lbfgs"}}, "train.optimizer"),
    ({"method": {"n_clusterz": 3}}, "method.n_clusterz"),
    ({"train": {"amp": "yes"}}, "train.amp"),
])
def test_bad_fields_name_the_field(over, field):
    with pytest.raises(ConfigError) as err:
        resolve("toy", "smoke", over)
    assert field in str(err.value) and "\n" not in str(err.value)


def test_unknown_method_and_profile():
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        resolve("nope", "cpu")
    with pytest.raises(ConfigError, match="profile"):
        resolve("toy", "laptop")


def test_parse_set():
    out = parse_set(["lr=0.1", "method.n_clusters=3", "milestones=[2, 4]"], Toy)
    assert out == {"train": {"lr": 0.1, "milestones": [2, 4]}, "method": {"n_clusters": 3}}
    with pytest.raises(ConfigError, match="field=value"):
        parse_set(["lr"], Toy)
    with pytest.raises(ConfigError, match="unknown field"):
        parse_set(["tau=1"], Toy)


def test_malformed_param_file(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("train: {lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_param_file(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_param_file(bad)
