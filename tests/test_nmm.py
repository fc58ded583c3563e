"""NMM (neural-mixture-em.md): the paper's identities checked numerically, the two-fold optimization,
and the §8.1 2-D study on blobs2d (normalization prevents the collapse)."""
import json
import math

import pytest
import torch

from mixlab import engine
from mixlab.config import ConfigError, resolve
from mixlab.methods.base import DataSpec
from mixlab.methods.nmm import NMM, NMMConfig, RelevanceNorm
from mixlab.mixture import nmm as M
from mixlab.workbook.nmm_figures import points_overrides, topk_images


def _scores(n=128, k=10, seed=0):
    """Relevance scores with very different means, scales and skew per cluster."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, k, generator=g)
    skewed = torch.empty(n, k).exponential_(generator=g)
    return torch.linspace(-4, 6, k) + torch.linspace(0.1, 5, k) * torch.where(torch.arange(k) % 2 == 0, base, skewed)


def _points_model(**kw):
    return NMM(NMMConfig(**kw), DataSpec(in_channels=2, image_size=0, n_samples=100, backbone="mlp"))


# ---- §5: normalization, density, Eq. 3 ------------------------------------------------------------
def test_normalized_sigmoid_averages_half_unnormalized_need_not():
    a = _scores()
    a_star, mu, var = M.normalize_relevance(a)
    torch.testing.assert_close(a_star.mean(0), torch.zeros(10), atol=1e-5, rtol=0)
    torch.testing.assert_close(a_star.var(0, unbiased=False), torch.ones(10), atol=1e-3, rtol=0)
    mean_h = M.batch_mean_density(M.density(a_star, gamma=5.0))                 # Eq. 3
    assert (mean_h - 0.5).abs().max() < 0.01
    raw = M.batch_mean_density(M.density(a, gamma=5.0))                         # Table 1, un-normalized
    assert (raw - 0.5).abs().max() > 0.2
    # the same through the model in train mode (batch statistics)
    model = _points_model().train()
    h = model.density(torch.randn(128, 2) * 3 + 1)
    assert (h.mean(0) - 0.5).abs().max() < 0.01


def test_score_bound_and_gamma():
    n = 128
    a = torch.zeros(n, 1)
    a[0] = 1.0                                                  # one outlier attains the bound
    a_star, _, _ = M.normalize_relevance(a, eps=0.0)
    assert math.isclose(float(a_star.max()), M.score_bound(n), rel_tol=1e-5)
    assert math.isclose(M.score_bound(128, biased=False), 11.225, abs_tol=1e-3)  # §5: [-11.23, 11.23]
    assert M.gamma_for_batch(128) == pytest.approx(5.0)
    assert M.score_bound(512) / M.gamma_for_batch(512) == pytest.approx(M.score_bound(128) / 5.0)
    b = M.normalize_relevance(_scores(), eps=0.0)[0].abs().max()
    assert b <= M.score_bound(n) + 1e-4


def test_running_statistics_in_eval_mode_at_batch_size_one():
    norm = RelevanceNorm(3, momentum=0.1)
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([2.0, -1.0, 5.0]), torch.tensor([0.5, 3.0, 1.0])
    for _ in range(200):
        norm(mean + std * torch.randn(64, 3, generator=g))
    torch.testing.assert_close(norm.running_mean, mean, atol=0.3, rtol=0)
    torch.testing.assert_close(norm.running_var.sqrt(), std, atol=0.3, rtol=0.1)
    norm.eval()
    x = torch.tensor([[2.5, 2.0, 4.0]])
    expect = (x - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    torch.testing.assert_close(norm(x), expect)
    with pytest.raises(ValueError):
        norm.train()(x)                                         # batch statistics need >= 2 samples
    # the whole model: eval-mode predictions do not depend on the batch they are computed in
    model = _points_model()
    model.train()
    for _ in range(20):
        model.scores(torch.randn(128, 2) * 2)
    model.eval()
    x = torch.randn(7, 2)
    torch.testing.assert_close(model.predict(x[:1]), model.predict(x)[:1])
    torch.testing.assert_close(model.predict(x).sum(1), torch.ones(7))


def test_running_stats_option_and_checkpointed_buffers():
    model = _points_model(norm_stats="running")
    out = model.train().scores(torch.randn(64, 2))
    assert out.shape == (64, 10)
    keys = model.state_dict().keys()
    assert {"norm.running_mean", "norm.running_var", "gamma_train"} <= set(keys)


# ---- §6, Eq. 6/7/8 -------------------------------------------------------------------------------
@pytest.mark.parametrize("eq7", [False, True])
def test_no_gradient_through_the_posterior(eq7):
    a = _scores()
    a_post = a.clone().requires_grad_(True)          # the posterior path p = softmax(a*)
    a_dens = a.clone().requires_grad_(True)          # the density path log sigmoid(a*/gamma)
    a_tr = (a + 0.1).requires_grad_(True)
    log_p = M.log_posterior(a_post)
    loss = M.em_loss(log_p, M.log_density(a_dens, 5.0), M.log_density(a_tr, 5.0) if eq7 else None)
    loss.backward()
    assert a_post.grad is None                       # p held constant (Eq. 6, "keeping p_ij constant")
    p = torch.softmax(a, 1)
    expect = -p * (1 - torch.sigmoid(a / 5.0)) / 5.0 / a.shape[0]
    torch.testing.assert_close(a_dens.grad, expect)  # d/da of -(1/n) sum p log sigmoid(a/gamma)
    if eq7:
        torch.testing.assert_close(a_tr.grad, -p * (1 - torch.sigmoid((a + 0.1) / 5.0)) / 5.0 / a.shape[0])
    # value: Eq. 6 by hand
    by_hand = -(p * torch.log(torch.sigmoid(a / 5.0))).sum(1).mean()
    if not eq7:
        torch.testing.assert_close(loss.detach(), by_hand)


def test_consistency_kl_nonnegative_zero_for_identical_views_and_p_constant():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        lp = torch.log_softmax(3 * torch.randn(64, 10, generator=g), 1).requires_grad_(True)
        lq = torch.log_softmax(3 * torch.randn(64, 10, generator=g), 1).requires_grad_(True)
        kl = M.consistency_loss(lp, lq)
        assert kl >= 0
        kl.backward()
        assert lp.grad is None and lq.grad is not None
    same = torch.log_softmax(torch.randn(64, 10, generator=g), 1)
    assert float(M.consistency_loss(same, same)) == pytest.approx(0.0, abs=1e-6)
    # the model's consistency stage on identical views (train mode, batch statistics): exactly 0
    model = _points_model()
    x = torch.randn(32, 2)
    out = model.train().training_step([x, x.clone()], torch.arange(32), "consistency")
    assert float(out["loss"].detach()) == pytest.approx(0.0, abs=1e-6)


def test_density_ratio_posterior_is_the_normalized_density():
    a = _scores()
    log_p = M.log_posterior(a, 5.0, kind="density_ratio")
    h = M.density(a, 5.0)
    torch.testing.assert_close(log_p.exp(), h / h.sum(1, keepdim=True))


# ---- Algorithm 1: two stages, two optimizers --------------------------------------------------------
def test_twofold_uses_two_adams_with_their_learning_rates():
    cfg = resolve("nmm", "smoke", {"method": {"lr_em": 3e-4, "lr_consistency": 7e-4}})
    model = NMM(cfg.params, DataSpec(2, 28, 100, "small-cnn"))
    assert model.stages == ("em", "consistency") and model.n_views == 2
    opts = model.configure_optimizers(cfg.train)
    assert set(opts) == {"em", "consistency"} and opts["em"] is not opts["consistency"]
    assert all(isinstance(o, torch.optim.Adam) for o in opts.values())
    assert opts["em"].param_groups[0]["lr"] == 3e-4
    assert opts["consistency"].param_groups[0]["lr"] == 7e-4
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert all(len(o.param_groups[0]["params"]) == n_params for o in opts.values())
    # one engine step: each stage steps only its own optimizer
    x = torch.rand(16, 2, 28, 28)
    for stage in model.stages:
        opt = opts[stage]
        opt.zero_grad()
        model.training_step([x, x.flip(-1)], torch.arange(16), stage)["loss"].backward()
        opt.step()
    assert all(len(opts[s].state) == n_params for s in opts)
    for objective, stage in (("em", "em"), ("consistency", "consistency")):
        single = NMM(NMMConfig(objective=objective), DataSpec(2, 28, 100, "small-cnn"))
        assert single.stages == (stage,) and set(single.configure_optimizers(cfg.train)) == {stage}
    assert _points_model(objective="em", em_loss="eq6").n_views == 1


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="method.objective"):
        resolve("nmm", "smoke", {"method": {"objective": "iic"}})
    with pytest.raises(ConfigError, match="method.norm_stats"):
        resolve("nmm", "smoke", {"method": {"norm_stats": "ema"}})
    for profile in ("smoke", "cpu", "gpu", "paper"):
        resolve("nmm", profile)
    paper = resolve("nmm", "paper")
    assert (paper.params.lr_em, paper.params.lr_consistency, paper.params.density_gamma) == (5e-5, 1e-4, 5.0)
    assert (paper.train.batch_size, paper.train.epochs, paper.train.backbone) == (128, 250, "nmm-mnist")


# ---- Fig. 8 helpers -------------------------------------------------------------------------------
def test_topk_and_synthesis():
    scores = torch.tensor([[0.0, 5.0], [3.0, 1.0], [2.0, 4.0]])
    assert M.topk_by_relevance(scores, 2).tolist() == [[1, 2], [0, 2]]
    model = _points_model().eval()
    idx = topk_images(model, torch.randn(50, 2), k=3)
    assert idx.shape == (10, 3)
    img, trace = M.synthesize_input(lambda x: (x * torch.linspace(-1, 1, 16).view(1, 1, 4, 4)).sum(),
                                    (1, 4, 4), steps=50, lr=0.1)
    assert trace[-1] > trace[0] and 0 <= float(img.min()) and float(img.max()) <= 1


# ---- end to end: the §8.1 2-D study on blobs2d -------------------------------------------------------
@pytest.fixture(scope="module")
def blobs_runs(tmp_path_factory):
    out = {}
    for norm in (True, False):
        ov = points_overrides("blobs2d", normalize=norm, epochs=4)
        ov["train"].update(progress=False, eval_every=0)
        path = tmp_path_factory.mktemp("nmm") / ("norm" if norm else "raw")
        metrics = engine.train(resolve("nmm", "smoke", ov), path)
        log = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]
        out[norm] = (metrics, log)
    return out


def test_smoke_run_lowers_the_em_loss(blobs_runs):
    _, log = blobs_runs[True]
    assert log[-1]["loss"] < log[0]["loss"]
    assert abs(log[-1]["mean_h_min"] - 0.5) < 0.02 and abs(log[-1]["mean_h_max"] - 0.5) < 0.02


def test_2d_normalization_uses_more_clusters(blobs_runs):
    norm, raw = blobs_runs[True][0], blobs_runs[False][0]
    assert norm["n_nonempty"] > raw["n_nonempty"]
    assert norm["n_nonempty"] >= 8 and norm["acc"] > 0.8
    assert raw["max_cluster_frac"] > 0.5                            # the un-normalized model collapses


def _running(model):
    return {n: b.clone() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))}


def test_no_grad_clean_pass_leaves_the_running_statistics_alone():
    # the consistency step's no-grad pass re-computes p on the original; only its gradient pass on
    # the transformed view may move the BatchNorm / RelevanceNorm running statistics
    torch.manual_seed(0)
    model = NMM(resolve("nmm", "smoke").params, DataSpec(2, 28, 100, "small-cnn")).train()
    x, x_tr = torch.rand(16, 2, 28, 28), torch.rand(16, 2, 28, 28) * 0.5
    start = {n: b.clone() for n, b in model.state_dict().items()}
    model.training_step([x, x_tr], torch.arange(16), "consistency")
    after_step = _running(model)
    model.load_state_dict(start)
    model.scores(x_tr)  # the transformed view alone
    expected = _running(model)
    assert any("norm" in n for n in expected) and any("backbone" in n for n in expected)
    for name, value in expected.items():
        torch.testing.assert_close(after_step[name], value, msg=name)
    # the helper restores exactly, and train-mode outputs inside it still use batch statistics
    model.load_state_dict(start)
    from mixlab.nets import running_stats_frozen
    with torch.no_grad(), running_stats_frozen(model):
        inside = model.scores(x)
    torch.testing.assert_close(_running(model), {n: start[n] for n in expected})
    torch.testing.assert_close(inside, model.scores(x))
