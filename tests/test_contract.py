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


def test_momentum_teacher_follows_the_engine_step():
    from mixlab.config import ConfigError
    from mixlab.methods.base import StepProgress
    from mixlab.methods.momentum import MomentumTeacher

    constant, cosine = MomentumTeacher(0.99), MomentumTeacher(0.99, 1.0)
    assert [constant.momentum(StepProgress(s, 10)) for s in (0, 5, 10)] == [0.99, 0.99, 0.99]
    assert [round(cosine.momentum(StepProgress(s, 10)), 6) for s in (0, 5, 10, 12)] == [0.99, 0.995, 1.0, 1.0]
    with pytest.raises(ConfigError, match="teacher_momentum_final"):
        resolve("siammm", "smoke", {"method": {"teacher_momentum_final": 0.5}})
