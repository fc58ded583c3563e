"""Mixed precision: bf16 autocast on CPU only with native bf16 (else float32 and one warning), and
float32 math inside `full_precision` under autocast."""
import warnings

import pytest
import torch

from mixlab import engine
from mixlab.config import resolve
from mixlab.utils import precision

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not precision.cpu_has_native_bf16(),
                                reason="bf16 autocast on CPU needs avx512_bf16 or AMX")


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    precision._warn_no_bf16.cache_clear()
    yield
    precision._warn_no_bf16.cache_clear()


def test_amp_off_is_float32_everywhere():
    assert precision.amp_dtype(CPU, False) is None
    assert precision.amp_dtype(torch.device("cuda"), False) is None
    assert precision.amp_dtype(torch.device("cuda"), True) is torch.bfloat16


def test_cpu_without_native_bf16_falls_back_to_float32_and_warns_once(no_native_bf16):
    with pytest.warns(RuntimeWarning, match="no native bf16.*amp=false"):
        assert precision.amp_dtype(CPU, True) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.amp_dtype(CPU, True) is None   # said once, not at every trainer


def test_native_bf16_detection_follows_torch(monkeypatch):
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.cpu_has_native_bf16()
    precision.cpu_has_native_bf16.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not precision.cpu_has_native_bf16()
    precision.cpu_has_native_bf16.cache_clear()


@needs_bf16
def test_autocast_runs_matmuls_in_bf16_and_full_precision_in_float32():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with precision.autocast(CPU, precision.amp_dtype(CPU, True)):
        assert (a @ b).dtype == torch.bfloat16
        with precision.full_precision(a):
            exact = a @ b
        assert exact.dtype == torch.float32
    assert torch.equal(exact, a @ b)


@needs_bf16
def test_engine_steps_in_bf16_on_cpu_when_asked():
    """The engine's autocast reaches the network on CPU: conv/linear outputs are bf16 with amp on."""
    dtypes = {}
    for amp in (False, True):
        trainer = engine.Trainer(engine.build(resolve("toy", "smoke", {"train": {"amp": amp}})), "/tmp/unused")
        x = torch.zeros(2, *trainer.s.images.shape[1:])
        with trainer.autocast():
            dtypes[amp] = trainer.s.method.head(x).dtype
    assert dtypes == {False: torch.float32, True: torch.bfloat16}


def test_cpu_profile_trains_in_bf16_smoke_in_float32():
    assert resolve("mice", "cpu").train.amp and not resolve("mice", "smoke").train.amp


@needs_bf16
@pytest.mark.parametrize("method", ["mice", "moco", "siammm", "nmm", "tcc"])
def test_bf16_step_loss_is_float32_and_close_to_the_float32_loss(method, one_thread):
    """Same weights, same views: under bf16 autocast the loss comes out of the float32 math
    (posterior/ELBO, InfoNCE, vMF logits) and differs from the float32 loss by bf16 rounding only."""
    losses = {}
    for amp in (False, True):
        trainer = engine.Trainer(engine.build(resolve(method, "smoke", {"train": {"amp": amp}})), "/tmp/unused")
        torch.manual_seed(0)
        idx = trainer.batches()[0]
        x = trainer.s.images[idx]
        views = [trainer.s.augmenter(x, torch.Generator().manual_seed(v)) for v in range(trainer.s.method.n_views)]
        stage = trainer.s.method.stages[0]
        with trainer.autocast():
            losses[amp] = trainer.model(views, idx, stage)["loss"]
    assert losses[True].dtype == torch.float32
    assert abs(losses[True].item() - losses[False].item()) < 0.02 * abs(losses[False].item()) + 1e-3, losses


@needs_bf16
def test_compiled_step_traces_under_cpu_autocast_and_matches_eager(tmp_path, monkeypatch):
    """train.compile=true goes through torch.compile with the engine's CPU autocast; the tracing
    backend ("eager": dynamo's graphs, no C++ build, which takes minutes on 2 cores) must give
    the eager run's result."""
    compiled, compile_ = [], torch.compile

    def trace(model, **kw):
        compiled.append(model)
        return compile_(model, backend="eager", **kw)

    cfg = {"train": {"amp": True, "epochs": 1}}
    ref = engine.train(resolve("toy", "smoke", cfg), tmp_path / "eager")
    monkeypatch.setattr(engine.torch, "compile", trace)
    run = engine.train(resolve("toy", "smoke", {"train": {**cfg["train"], "compile": True}}), tmp_path / "compiled")
    assert compiled and all(run[k] == ref[k] for k in ("acc", "nmi", "ari"))
