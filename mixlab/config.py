"""Typed, validated run configuration.

A run is a :class:`RunConfig`: the method-independent :class:`TrainConfig` plus the method's own
dataclass (``Method.Config``). Every field is checked on construction; a wrong name, type or value
raises :class:`ConfigError` with one line that names the field.

One override path, later layers winning: the field defaults, then the profile (``smoke``, ``cpu``,
``gpu``, ``paper``) from the data files ``mixlab/profiles/common.yaml`` and
``mixlab/profiles/<method>.yaml``, then a YAML parameter file (``--params``), then
``--set field=value`` from the command line. Each layer is ``{"train": {...}, "method": {...}}``.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mixlab.methods import PROFILE_DIR, get_method, profile_file
from mixlab.utils.checks import ConfigError, check_choice, check_positive

__all__ = ["PROFILES", "DATA_FIELDS", "ConfigError", "check_choice", "check_positive", "TrainConfig", "RunConfig",
           "build", "did_you_mean", "load_yaml", "load_param_file", "parse_set", "parse_data_set", "profile_layer",
           "resolve", "from_dict"]

PROFILES = ("smoke", "cpu", "gpu", "paper")
SMOKE_NOTE = "smoke profile: a plumbing check on tiny data and budgets, not a result"


def caveat(profile: str) -> str:
    """What a number from ``profile`` is not: :data:`SMOKE_NOTE` on ``smoke``, else empty."""
    return SMOKE_NOTE if profile == "smoke" else ""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but numbers in Python notation (``1e-3``, ``5e-4``, ``1.0e12``, ``.5``) are
    floats: YAML 1.1, which PyYAML implements, reads an exponent without a dot as a string."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def load_yaml(text: str):
    """Parse YAML text with :class:`YamlLoader` (raises ``yaml.YAMLError`` on bad syntax)."""
    return yaml.load(text, Loader=YamlLoader)


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, bool, str, list[...], X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(where, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1]
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and item is not str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if tp is dict or typing.get_origin(tp) is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    raise TypeError(f"unsupported config annotation {tp!r} for {where}")


def did_you_mean(name: str, known) -> str:
    """``"; did you mean X?"`` for the name of ``known`` closest to ``name`` (difflib), else ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def build(cls, values: dict | None, where: str):
    """Construct dataclass ``cls`` from a mapping, naming the field on any error."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        hint = did_you_mean(unknown[0], names) or f"; known fields: {', '.join(sorted(names))}"
        raise ConfigError(f"unknown field {where}.{unknown[0]}{hint}")
    kwargs = {k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in values.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj


@dataclass
class TrainConfig:
    """Method-independent settings: data, network body, optimizer, schedule, evaluation, device."""

    dataset: str = "fashion-mnist"
    subset: int | None = None          # seeded random subset of the dataset (None = all)
    data_seed: int = 0                 # seed of the subset selection (fixed across training seeds)
    seed: int = 0
    epochs: int = 10
    batch_size: int = 256
    backbone: str = "small-cnn"
    augment: str = "moco-gray"         # augmentation recipe, see mixlab.data.augment.RECIPES
    sobel: bool = False                # grayscale + Sobel input (NMM §8.2)
    image_size: int | None = None      # None = the dataset's own size (folder: datasets: 32)
    channels: int | None = None        # folder: datasets: 1 or 3; None = 1 if every image is grayscale
    skip_unreadable: bool = False      # folder: datasets: skip unreadable image files (with a warning)
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)  # epochs of x gamma for schedule=step
    gamma: float = 0.1
    warmup_epochs: int = 0
    eval_every: int = 1                # evaluate every n epochs (and always at the end); 0 = end only
    eval_batch_size: int = 1024
    snapshot_epochs: list[int] = field(default_factory=list)  # save embeddings/posteriors; -1 = last
    snapshot_size: int = 2000
    device: str = "auto"
    amp: bool = True                   # bf16 autocast on CUDA and on CPUs with native bf16 (else float32)
    channels_last: bool = False
    compile: bool = False
    num_threads: int = 0               # torch CPU threads; 0 = torch's default
    max_steps_per_epoch: int = 0       # cap on steps per epoch; 0 = a full pass
    time_budget_s: float = 0.0         # stop after this many seconds of training (steps + end-of-epoch
                                       # M-steps, not the evaluation), evaluate, finish; 0 = no limit
    progress: bool = True

    def validate(self) -> None:
        check_choice("train.optimizer", self.optimizer, ("sgd", "adam"))
        check_choice("train.schedule", self.schedule, ("constant", "step", "cosine"))
        check_choice("train.device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        if self.channels is not None:
            check_choice("train.channels", self.channels, (1, 3))
        for name in ("epochs", "batch_size", "lr", "eval_batch_size", "snapshot_size"):
            check_positive(f"train.{name}", getattr(self, name))
        for name in ("subset", "warmup_epochs", "eval_every", "num_threads", "max_steps_per_epoch",
                     "weight_decay", "momentum", "time_budget_s"):
            check_positive(f"train.{name}", getattr(self, name), allow_zero=True)
        if self.warmup_epochs >= self.epochs and self.warmup_epochs:
            raise ConfigError(f"train.warmup_epochs={self.warmup_epochs} must be < train.epochs={self.epochs}")


@dataclass
class RunConfig:
    """One run: which method, its profile, the common settings and the method's own."""

    method: str
    profile: str
    train: TrainConfig
    params: Any  # the method's Config dataclass

    def to_dict(self) -> dict:
        return {"method": self.method, "profile": self.profile,
                "train": dataclasses.asdict(self.train), "method_params": dataclasses.asdict(self.params)}


def _merge(base: dict, over: dict | None) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in (over or {}).items():
        if section not in ("train", "method"):
            raise ConfigError(f"unknown section {section!r} in parameters; use 'train:' and 'method:'")
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} must be a mapping of field: value")
        out.setdefault(section, {}).update(values)
    return out


def _split_set(item: str) -> tuple[str, Any]:
    """``'lr=0.1'`` -> ``('lr', 0.1)``: the value read as YAML (a string if it is not valid YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r} must look like field=value (e.g. --set lr=0.1)")
    try:
        value = load_yaml(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key, value


def parse_set(assignments: list[str], method_cls) -> dict:
    """Turn ``['lr=0.1', 'method.tau=0.5']`` into ``{'train': {...}, 'method': {...}}``."""
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    method_names = {f.name for f in dataclasses.fields(method_cls.Config)}
    out: dict = {"train": {}, "method": {}}
    for item in assignments:
        key, value = _split_set(item)
        section, _, name = key.rpartition(".")
        if section and section not in ("train", "method"):
            raise ConfigError(f"--set {key}: prefix must be 'train.' or 'method.'")
        if not section:
            in_train, in_method = name in train_names, name in method_names
            if in_train and in_method:
                raise ConfigError(f"--set {name} is ambiguous; write train.{name} or method.{name}")
            if not (in_train or in_method):
                hint = did_you_mean(name, train_names | method_names) or \
                    "; `python -m mixlab config --method <method>` prints every field"
                raise ConfigError(f"--set {name}: unknown field{hint}")
            section = "train" if in_train else "method"
        out[section][name] = value
    return out


# train.* fields that say how a dataset's files are read; `predict` takes these (the rest comes from the run)
DATA_FIELDS = ("channels", "skip_unreadable")


def parse_data_set(assignments: list[str]) -> dict:
    """``--set`` of ``python -m mixlab predict``: ``{field: value}`` for the fields of
    :data:`DATA_FIELDS` (bare or ``train.``), type-checked; any other field is a ConfigError."""
    out: dict = {}
    for item in assignments:
        key, value = _split_set(item)
        section, _, name = key.rpartition(".")
        if section not in ("", "train") or name not in DATA_FIELDS:
            raise ConfigError(f"--set {key}: predict takes only the data fields {', '.join(DATA_FIELDS)} (the"
                              f" other settings come from the run){did_you_mean(name, DATA_FIELDS)}")
        out[name] = value
    build(TrainConfig, out, "train")  # types and values, e.g. channels in (1, 3)
    return out


def load_param_file(path: str | Path) -> dict:
    """Read a YAML parameter file with optional ``train:`` and ``method:`` sections."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"parameter file {path} is not valid YAML{at}; fix its syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"parameter file {path} must be a mapping with 'train:' and/or 'method:' sections")
    return data


def _read_profiles(path: Path) -> dict:
    """One profile file: ``{profile: {"train": {...}, "method": {...}}}`` for some of PROFILES."""
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError:
        raise ConfigError(f"profile file {path} is not valid YAML; fix its syntax") from None
    unknown = sorted(set(data) - set(PROFILES)) if isinstance(data, dict) else ["(not a mapping)"]
    if unknown:
        raise ConfigError(f"profile file {path}: unknown profile {unknown[0]!r}; use {', '.join(PROFILES)}")
    return data


def profile_layer(method: str, profile: str) -> dict:
    """The profile's overrides for ``method``: ``profiles/common.yaml``, refined by the method's file."""
    check_choice("profile", profile, PROFILES)
    common = _read_profiles(PROFILE_DIR / "common.yaml")
    path = profile_file(method)
    own = _read_profiles(path) if path.is_file() else {}
    return _merge(_merge({"train": {}, "method": {}}, common.get(profile)), own.get(profile))


def resolve(method: str, profile: str = "cpu", *overrides: dict | None) -> RunConfig:
    """Build the RunConfig for ``method`` under ``profile``, then apply each layer of ``overrides`` in
    order (e.g. a parameter file, then ``--set`` assignments)."""
    cls = get_method(method)
    merged = profile_layer(method, profile)
    for layer in overrides:
        merged = _merge(merged, layer)
    train = build(TrainConfig, merged["train"], "train")
    params = build(cls.Config, merged["method"], "method")
    return RunConfig(method=method, profile=profile, train=train, params=params)


def from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig from ``RunConfig.to_dict()`` output (a run's config.json)."""
    cls = get_method(data["method"])
    return RunConfig(method=data["method"], profile=data["profile"],
                     train=build(TrainConfig, data["train"], "train"),
                     params=build(cls.Config, data["method_params"], "method"))
