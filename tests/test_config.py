"""Configs are typed and validated; bad names and values give one-line errors naming the field."""
import pytest
from toy_method import Toy

from mixlab.config import ConfigError, load_param_file, parse_set, resolve


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


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5e-4", 5e-4), ("1.0e12", 1.0e12), ("2E+1", 20.0),
                                          (".5", 0.5), ("3", 3)])
def test_python_notation_numbers_in_set_and_param_files(tmp_path, text, value):
    assert parse_set([f"lr={text}"], Toy)["train"]["lr"] == value
    params = tmp_path / "p.yaml"
    params.write_text(f"train:\n  lr: {text}\n")
    assert resolve("toy", "smoke", load_param_file(params)).train.lr == value


def test_strings_stay_strings_in_set():
    assert parse_set(["dataset=1e-3x", "augment=none"], Toy)["train"] == {"dataset": "1e-3x", "augment": "none"}


def test_no_method_field_shares_a_name_with_a_training_field_and_names_keep_one_type():
    import dataclasses
    import typing

    from mixlab.config import TrainConfig
    from mixlab.methods import get_method, method_names

    train = {f.name for f in dataclasses.fields(TrainConfig)}
    types: dict = {}
    for name in method_names():
        for field, tp in typing.get_type_hints(get_method(name).Config).items():
            assert field not in train, f"{name}.Config.{field} collides with train.{field}"
            types.setdefault(field, set()).add(tp)
    assert {n: t for n, t in types.items() if len(t) > 1} == {}


@pytest.mark.parametrize("method, assignment, section", [("tcc", "teacher_momentum=0.9", "method"),
                                                          ("nmm", "density_gamma=4", "method"),
                                                          ("nmm", "gamma=0.5", "train"),
                                                          ("tcc", "momentum=0.8", "train")])
def test_bare_names_resolve_for_every_method(method, assignment, section):
    from mixlab.methods import get_method

    key, _, _ = assignment.partition("=")
    assert key in parse_set([assignment], get_method(method))[section]


def test_override_layers_apply_in_order_profile_files_params_file_set(tmp_path, capsys):
    import json

    from mixlab.__main__ import main

    params = tmp_path / "p.yaml"
    params.write_text("train:\n  lr: 0.5\n  epochs: 5\n")
    assert main(["config", "--method", "toy", "--profile", "smoke", "--params", str(params), "--set", "lr=1e-3"]) == 0
    train = json.loads(capsys.readouterr().out)["train"]
    assert train["lr"] == 1e-3 and train["epochs"] == 5          # --set over the params file over the profile
    assert train["batch_size"] == 32 and train["eval_batch_size"] == 512  # toy_profiles.yaml, common.yaml


def test_a_bad_profile_file_is_a_one_line_error(tmp_path, monkeypatch):
    from mixlab import methods

    bad = tmp_path / "toy.yaml"
    bad.write_text("laptop:\n  train: {lr: 0.1}\n")
    monkeypatch.setitem(methods._PROFILE_FILES, "toy", bad)
    with pytest.raises(ConfigError, match="unknown profile 'laptop'"):
        resolve("toy", "smoke")


@pytest.mark.parametrize("method", ["mice", "moco", "siammm", "nmm", "tcc"])
def test_cpu_and_gpu_profiles_train_on_all_70000_images(method):
    for profile in ("cpu", "gpu"):
        train = resolve(method, profile).train
        assert train.dataset == "fashion-mnist" and train.subset is None, (method, profile)


# ---- every default is the paper's, or derived from it by a stated rule ----------
@pytest.mark.parametrize("method", ["mice", "moco", "tcc"])
@pytest.mark.parametrize("profile", ["cpu", "gpu", "paper"])
def test_mice_family_settings_follow_app_d_rules(method, profile):
    """MiCE App. D (and MoCo, TCC, which follow it): lr 1.0 at batch 256 scaled linearly, steps at
    48/64/80 % of the epochs, EMA window of 5.1 epochs (m = 1 - 195 / (1000 S)), tau = 1."""
    cfg = resolve(method, profile)
    t, p = cfg.train, cfg.params
    assert t.lr == pytest.approx(t.batch_size / 256, rel=0.01)
    assert t.schedule == "step" and t.milestones == [round(f * t.epochs) for f in (0.48, 0.64, 0.8)]
    n = 50_000 if t.dataset == "cifar10" else 70_000
    assert p.teacher_momentum == pytest.approx(1 - 195 / (1000 * (n // t.batch_size)), abs=1.5e-4)
    assert (p.instance_temperature if method == "tcc" else p.tau) == 1.0
    assert t.weight_decay == 1e-4 and t.momentum == 0.9 and t.warmup_epochs == 0


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_nmm_uses_the_papers_learning_rates(profile):
    p = resolve("nmm", profile).params  # §8.2: Adam 5e-5 (EM) / 1e-4 (consistency), batch 128
    assert (p.lr_em, p.lr_consistency, p.density_gamma) == (5e-5, 1e-4, 5.0)
