"""Every run that any notebook declares on any profile (smoke, cpu, gpu, paper) is a valid
configuration, and each distinct network / image size / batch takes one training step on CPU, on a
few synthetic images of its dataset's shape: a user with a GPU or the paper's datasets never meets
a configuration error first. The grids come from the notebooks themselves: their cells up to the
one tagged ``grid`` run with each profile's parameters (nothing is trained there)."""
import dataclasses
import json

import pytest
import torch

from mixlab import engine
from mixlab.config import PROFILES
from mixlab.data import datasets
from mixlab.workbook import experiments, notebooks

pytestmark = pytest.mark.slow

# the stored shape (channels, side) of each registered dataset a profile may name
SHAPES = {"fashion-mnist": (1, 28), "mnist": (1, 28), "cifar10": (3, 32), "cifar100-20": (3, 32), "stl10": (3, 96),
          "imagenet-dog": (3, 96), "noise-cifar": (3, 32)}
N_IMAGES = 16  # "a few": batch and queue are fitted to them, as for any small data set


class OneStep(Exception):
    """Raised by the step hook after the first optimizer step."""


def declared_runs(profile: str) -> list[tuple[str, object]]:
    """(notebook, grid.Run) for every run declared by a notebook of the manifest on ``profile``."""
    runs = []
    for name in filter(notebooks.has_grid, notebooks.manifest()):
        namespace = notebooks.run_cells(name, notebooks.parameters(name, profile), until_tag="grid")
        runs += [(name, run) for run in namespace["GRID"]]
    return runs


def fake_load(real_load):
    """``mixlab.data.load`` with the registered image datasets replaced by N_IMAGES random images of
    their shape (folders and point sets load as they are)."""
    def load(name, **kwargs):
        if name not in SHAPES:
            return real_load(name, **kwargs)
        channels, side = SHAPES[name]
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (N_IMAGES, channels, side, side), dtype=torch.uint8, generator=g)
        return datasets.Dataset(name=name, images=images, labels=torch.arange(N_IMAGES) % 10,
                                classes=[str(i) for i in range(10)], source="fixture",
                                index=torch.arange(N_IMAGES), train_mask=torch.arange(N_IMAGES) < N_IMAGES // 2)
    return load


def step_key(cfg) -> str:
    """What one step exercises: the method and its settings, the network, image size and batch
    (the seed, the length of training and evaluation settings do not change a step)."""
    record = cfg.to_dict()
    train = {k: v for k, v in record["train"].items() if k not in ("seed", "epochs", "eval_every", "snapshot_epochs",
                                                                   "time_budget_s", "progress", "device")}
    return json.dumps({**record, "train": train}, sort_keys=True, default=str)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_declared_run_builds_and_steps(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("MIXLAB_ROOT", str(tmp_path))  # the notebooks' own cells write nothing tracked
    runs = declared_runs(profile)
    assert runs, f"no notebook declares a grid on {profile}"
    monkeypatch.setattr(engine, "load_dataset", fake_load(engine.load_dataset))
    stepped = {}

    def stop(step):
        raise OneStep

    for notebook, run in runs:
        cfg = experiments.plan(run.experiment, run.name, run.method, profile=profile, seed=run.seed,
                               overrides=run.overrides).cfg  # config errors are raised here
        key = step_key(cfg)
        if key in stepped:
            continue
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu", progress=False))
        out = tmp_path / "steps" / str(len(stepped))
        try:
            engine.train(cfg, out, step_hook=stop)
        except OneStep:
            pass
        except Exception as exc:  # noqa: BLE001 - name the run that a user would meet it on
            raise AssertionError(f"{profile}/{notebook}: {run} fails its first step: {type(exc).__name__}: {exc}") from exc
        stepped[key] = str(run)
    print(f"{profile}: {len(runs)} runs declared, {len(stepped)} distinct configurations stepped")
