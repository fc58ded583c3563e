"""Every method honours the base contract: ``embed`` and ``features`` exist and give one row per image."""
import pytest

from mixlab import engine
from mixlab.config import PROFILES, resolve
from mixlab.evaluation import extract
from mixlab.methods import method_names


@pytest.mark.parametrize("name", method_names())
@pytest.mark.parametrize("fn", ["features", "embed"])
def test_every_method_has_features_and_embed(name, fn):
    setup = engine.build(resolve(name, "smoke"))
    out = extract(setup.method, setup.images[:6], setup.augmenter, fn=fn, device=setup.device)
    assert out.ndim == 2 and out.shape[0] == 6 and out.shape[1] > 1


@pytest.mark.parametrize("name", method_names())
def test_every_profile_file_resolves(name):
    for profile in PROFILES:
        cfg = resolve(name, profile)
        assert cfg.profile == profile and cfg.method == name
