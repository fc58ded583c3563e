"""MiCE: the paper's identities (ELBO bound, Theorems 2-4 of App. C, Eq. 13), shapes, a smoke run,
and checkpoint/resume of the queue."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from training import train_steps

from mixlab import engine
from mixlab.config import ConfigError, resolve
from mixlab.methods.base import DataSpec, EpochContext
from mixlab.methods.mice import MiCE
from mixlab.mixture import queue_lse
from mixlab.mixture.contrastive import info_nce
from mixlab.mixture.em import elbo, kl_categorical, log_marginal
from mixlab.mixture.kmeans import spherical_kmeans
from mixlab.mixture.mice import (
    analytical_mu,
    assignment_sums,
    expert_log_likelihood,
    expert_logits,
    gating_log_prior,
    hard_assignments,
    mice_objective,
)

pytestmark = pytest.mark.usefixtures("one_thread")

B, K, D, NU = 12, 5, 8, 40


def _unit(*shape, gen):
    return F.normalize(torch.randn(*shape, generator=gen, dtype=torch.float64), dim=-1)


def _random(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return dict(f=_unit(B, K, D, gen=gen), v=_unit(B, K, D, gen=gen), g=_unit(B, D, gen=gen),
                mu=_unit(K, D, gen=gen), omega=_unit(K, D, gen=gen), queue=_unit(NU, K, D, gen=gen))


def _shared(x, reps=K):
    """Assumption A4: one embedding used by every expert (copied along the expert axis)."""
    return x.unsqueeze(-2).expand(*x.shape[:-1], reps, x.shape[-1]).clone()


def test_elbo_bounds_log_likelihood_with_equality_at_posterior():
    t = _random()
    out = mice_objective(**t, tau=0.5, kappa=0.7)
    lml = log_marginal(out["log_prior"], out["log_lik"])
    torch.testing.assert_close(out["elbo"], lml)                      # Eq. 10 attains the bound
    torch.testing.assert_close(out["log_q"].exp().sum(-1), torch.ones(B, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):                                                  # any other q is below it
        log_q = torch.log_softmax(3 * torch.randn(B, K, generator=gen, dtype=torch.float64), -1)
        bound = elbo(log_q, out["log_prior"], out["log_lik"])
        assert (bound <= lml + 1e-12).all()
        torch.testing.assert_close(lml - bound, kl_categorical(log_q, out["log_q"]))  # gap = KL


def test_elbo_gradient_equals_algorithm1_with_q_held_fixed():
    """Back-propagating logsumexp (ELBO at the posterior) = Algorithm 1's Σ q (log p + log lik - log q)."""
    grads = []
    for fixed_q in (False, True):
        t = {k: v.clone().requires_grad_(k in ("f", "g", "mu")) for k, v in _random(3).items()}
        out = mice_objective(**t, tau=1.0, kappa=1.0)
        value = elbo(out["log_q"].detach(), out["log_prior"], out["log_lik"]) if fixed_q else out["elbo"]
        value.sum().backward()
        grads.append([t[k].grad for k in ("f", "g", "mu")])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_log_space_is_stable_for_extreme_temperatures():
    t = _random(4)
    out = mice_objective(**t, tau=1e-3, kappa=1e-3)
    assert all(torch.isfinite(out[k]).all() for k in ("log_q", "elbo", "log_lik"))
    torch.testing.assert_close(out["log_q"].exp().sum(-1), torch.ones(B, dtype=torch.float64))


def test_reduces_to_infonce_under_a3_a4_a5():
    """Theorems 2-3 and Lemma 1: with a uniform prior (A3), one output layer shared by the experts
    (A4, so the queue holds the same key for every expert) and no class-level term (A5), every
    expert is MoCo's InfoNCE (Eq. 2), the posterior is uniform and the ELBO equals InfoNCE."""
    gen = torch.Generator().manual_seed(5)
    f, v, q = _unit(B, D, gen=gen), _unit(B, D, gen=gen), _unit(NU, D, gen=gen)
    t = dict(f=_shared(f), v=_shared(v), queue=_shared(q), g=_unit(B, D, gen=gen),
             mu=_unit(K, D, gen=gen), omega=_unit(K, D, gen=gen))
    nce = info_nce(f, v, q, tau=0.3)
    out = mice_objective(**t, tau=0.3, kappa=0.5, uniform_prior=True, class_level=False)
    torch.testing.assert_close(out["log_lik"], nce[:, None].expand(B, K))          # Theorem 2
    torch.testing.assert_close(out["log_q"], torch.full((B, K), -math.log(K), dtype=torch.float64))  # Lemma 1
    torch.testing.assert_close(out["elbo"], nce)                                   # Theorem 3

    # A3 only matters for Lemma 1: with A4 + A5 the experts agree, so the ELBO is still InfoNCE
    # for *any* gating prior, and the posterior equals that prior.
    out = mice_objective(**t, tau=0.3, kappa=0.5, uniform_prior=False, class_level=False)
    torch.testing.assert_close(out["elbo"], nce)
    torch.testing.assert_close(out["log_q"], out["log_prior"])

    # Dropping A5 (class-level term on) or A4 (separate expert embeddings) breaks the reduction.
    out = mice_objective(**t, tau=0.3, kappa=0.5, uniform_prior=True, class_level=True)
    assert not torch.allclose(out["elbo"], nce, atol=1e-3)
    r = _random(6)
    out = mice_objective(**r, tau=0.3, kappa=0.5, uniform_prior=True, class_level=False)
    assert not torch.allclose(out["elbo"], info_nce(r["f"][:, 0], r["v"][:, 0], r["queue"][:, 0], 0.3), atol=1e-3)


def test_method_loss_equals_infonce_under_a3_a4_a5():
    """The same through the method: MiCE's training loss with A3-A5 is -mean InfoNCE of its expert 0."""
    torch.manual_seed(0)
    cfg = resolve("mice", "smoke", {"method": {"uniform_prior": True, "shared_expert_layer": True,
                                               "class_level": False, "queue_size": 64}}).params
    m = MiCE(cfg, DataSpec(in_channels=1, image_size=28, n_samples=256, backbone="small-cnn"))
    x = [torch.rand(8, 1, 28, 28) for _ in range(3)]
    queue = m.queue()  # the queue the step reads (it pushes its keys before returning)
    out = m.training_step(x, torch.arange(8), "main")
    f, v = m.student(x[0])[:, 0], m.teacher(x[1])[:, 0]
    expected = -info_nce(f, v, queue[:, 0], cfg.tau).mean()
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-5)


def test_eq13_is_one_spherical_kmeans_step_under_a1_a4():
    """Theorem 4: with a self-normalized model (A2), uniform prior (A3) and shared embeddings (A4),
    the hard posterior (A1) is the nearest prototype by cosine and Eq. 13 is the M-step of
    spherical k-means: the normalized mean of the assigned teacher embeddings."""
    gen = torch.Generator().manual_seed(7)
    centers = _unit(K, D, gen=gen)
    noise = lambda n, s: s * torch.randn(n, D, generator=gen, dtype=torch.float64)  # noqa: E731
    v = F.normalize(centers.repeat(20, 1) + noise(20 * K, 0.3), dim=-1)
    f, mu = _unit(len(v), D, gen=gen), F.normalize(centers + noise(K, 0.2), dim=-1)
    out = mice_objective(_shared(f), _shared(v), _unit(len(v), D, gen=gen), mu, _unit(K, D, gen=gen), None,
                         tau=0.5, kappa=1.0, uniform_prior=True, class_level=True)
    z = hard_assignments(out["log_q"])
    assert torch.equal(z, (v @ mu.T).argmax(1))                       # E-step: nearest prototype
    sums, counts = assignment_sums(_shared(v), z, K)
    new, empty = analytical_mu(sums, counts, mu)
    assert not empty.any()
    manual = torch.stack([F.normalize(v[z == k].mean(0), dim=0) for k in range(K)])
    torch.testing.assert_close(new, manual)                           # M-step of spherical k-means
    # and the same as one Lloyd iteration of faiss' spherical k-means started from mu
    c, _ = spherical_kmeans(v.float(), K, iters=1, init=mu.float())
    torch.testing.assert_close(new.float(), c, atol=1e-5, rtol=1e-5)


def test_empty_cluster_gets_a_neutral_mu_by_default():
    # the authors' code zeroes the prototype of a cluster that received no point: its class-level
    # term v.mu_k is then 0 (neutral) instead of a stale prototype that keeps the cluster empty
    gen = torch.Generator().manual_seed(8)
    v, prev = _unit(6, K, D, gen=gen), _unit(K, D, gen=gen)
    z = torch.tensor([0, 0, 1, 1, 3, 3])                               # clusters 2 and 4 get nothing
    new, empty = analytical_mu(*assignment_sums(v, z, K), prev)
    assert empty.tolist() == [False, False, True, False, True]
    assert torch.all(new[empty] == 0)
    torch.testing.assert_close(new[0], F.normalize(v[0, 0] + v[1, 0], dim=0))
    torch.testing.assert_close(new[~empty].norm(dim=-1), torch.ones(3, dtype=torch.float64))
    kept, _ = analytical_mu(*assignment_sums(v, z, K), prev, "keep")
    torch.testing.assert_close(kept[empty], prev[empty])
    torch.testing.assert_close(kept[~empty], new[~empty])
    assert resolve("mice", "smoke").params.empty_mu == "zero"


def test_gating_prior_shapes_and_uniform():
    gen = torch.Generator().manual_seed(9)
    g, omega = _unit(B, D, gen=gen), _unit(K, D, gen=gen)
    lp = gating_log_prior(g, omega, kappa=0.5)
    torch.testing.assert_close(lp, torch.log_softmax(g @ omega.T / 0.5, -1))
    torch.testing.assert_close(gating_log_prior(g, omega, 0.5, uniform=True).exp(),
                               torch.full((B, K), 1 / K, dtype=torch.float64))
    t = _random(10)
    assert expert_log_likelihood(t["f"], t["v"], t["mu"], t["queue"], 1.0).shape == (B, K)
    assert (expert_log_likelihood(t["f"], t["v"], t["mu"], t["queue"], 1.0) < 0).all()


def _spec(n=512):
    return DataSpec(in_channels=1, image_size=28, n_samples=n, backbone="small-cnn")


def test_method_shapes_and_config_errors():
    torch.manual_seed(0)
    cfg = resolve("mice", "smoke").params
    m = MiCE(cfg, _spec())
    assert m.n_views == 3
    assert m.queue.data.shape == (cfg.queue_size, cfg.n_clusters, cfg.embed_dim)
    omega = m.omega / m.omega.norm(dim=-1, keepdim=True)                 # MMD centers: -1/(K-1)
    gram = omega @ omega.T
    off = gram[~torch.eye(cfg.n_clusters, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1 / (cfg.n_clusters - 1)), atol=1e-5, rtol=0)
    assert "omega" in dict(m.named_buffers()) and not any(p.requires_grad for p in m.teacher.parameters())
    x = [torch.rand(16, 1, 28, 28) for _ in range(3)]
    out = m.training_step(x, torch.arange(16), "main")
    assert out["loss"].shape == () and out["loss"].requires_grad
    m.eval()
    post = m.predict(x[0])
    assert post.shape == (16, cfg.n_clusters)
    torch.testing.assert_close(post.sum(1), torch.ones(16))
    assert m.embed(x[0]).shape == (16, cfg.embed_dim)
    learned = MiCE(resolve("mice", "smoke", {"method": {"omega_learned": True, "mu_gradient": False}}).params, _spec())
    assert learned.omega.requires_grad and not learned.mu.requires_grad
    with pytest.raises(ConfigError, match="method.mu_update"):
        resolve("mice", "smoke", {"method": {"mu_update": "sometimes"}})
    with pytest.raises(ConfigError, match="method.embed_dim"):
        resolve("mice", "smoke", {"method": {"embed_dim": 4, "n_clusters": 10}})
    with pytest.raises(ConfigError, match="method.queue_size"):
        MiCE(cfg, _spec(n=100))


def test_end_epoch_applies_eq13_and_logs_empty_clusters():
    torch.manual_seed(0)
    m = MiCE(resolve("mice", "smoke").params, _spec())
    m.start_epoch(1)
    x = [torch.rand(32, 1, 28, 28) for _ in range(3)]
    m.training_step(x, torch.arange(32), "main")
    expected, empty = analytical_mu(m.mu_sum.clone(), m.mu_count.clone(), m.mu.detach())
    assert int(m.mu_count.sum()) == 32
    messages = []
    ctx = EpochContext(epoch=1, map_dataset=None, all_reduce=lambda t: t, log=messages.append)
    m.end_epoch(ctx)
    torch.testing.assert_close(m.mu.detach(), expected)
    assert bool(empty.any()) == bool(messages) and all("μ = 0" in s for s in messages)


def test_training_lowers_the_loss_on_fashion_mnist():
    losses = train_steps("mice", {"method": {"queue_size": 128}})
    assert all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < np.mean(losses[:6]) - 0.05, losses


def test_smoke_run_predicts_posteriors_and_resume_restores_queue(tmp_path):
    """An engine run killed in epoch 2 resumes from the epoch-1 checkpoint with the queue and its
    write pointer restored (320 slots, 4 steps of 128: the pointer is at 512 mod 320 = 192)."""
    cfg = resolve("mice", "smoke", {"train": {"num_threads": 1}, "method": {"queue_size": 320}})
    steps = 512 // cfg.train.batch_size

    class Killed(Exception):
        pass

    def kill(step):
        if step == steps + 1:
            raise Killed

    with pytest.raises(Killed):
        engine.train(cfg, tmp_path / "run", step_hook=kill)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert int(state["method"]["queue.ptr"]) == (steps * cfg.train.batch_size) % cfg.params.queue_size == 192
    trainer = engine.Trainer(engine.build(cfg), tmp_path / "run")
    trainer.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    method = trainer.s.method
    assert torch.equal(method.queue.ptr, state["method"]["queue.ptr"])
    for name in ("queue.data", "mu", "omega"):
        assert torch.equal(method.state_dict()[name], state["method"][name]), name

    engine.train(cfg, tmp_path / "run", resume=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
    post = np.load(tmp_path / "run" / "predictions.npz")["posterior"].astype(np.float64)
    assert post.shape == (512, cfg.params.n_clusters)
    np.testing.assert_allclose(post.sum(1), 1.0, atol=1e-2)   # stored as float16


def test_mu_update_none_and_app_e_sgd_end_of_epoch():
    """mu_update='none' leaves μ alone (Tab. 3 row (a)); App. E's end-of-epoch SGD on μ alone, with the
    networks frozen, raises the ELBO on the clean data and keeps μ on the sphere."""
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    ctx = EpochContext(epoch=1, map_dataset=torch.no_grad()(lambda fn: torch.cat([fn(x[:32]), fn(x[32:])])),
                       all_reduce=lambda t: t, log=lambda s: None)  # as the engine's: under no_grad
    m = MiCE(resolve("mice", "smoke", {"method": {"mu_update": "none"}}).params, _spec())
    before = m.mu.detach().clone()
    m.end_epoch(ctx)
    assert torch.equal(m.mu.detach(), before)

    m = MiCE(resolve("mice", "smoke", {"method": {"mu_update": "sgd_end_of_epoch", "mu_sgd_lr": 0.5,
                                                  "mu_sgd_batch_size": 16}}).params, _spec()).eval()
    start = m.posterior(x)["elbo"].mean()
    logs = m.end_epoch(ctx)
    assert 1 <= logs["mu_sgd_passes"] <= 20
    torch.testing.assert_close(m.mu.detach().norm(dim=-1), torch.ones(m.cfg.n_clusters))
    assert m.posterior(x)["elbo"].mean() > start


def test_queue_logsumexp_equals_the_formed_logits_in_value_and_gradient(monkeypatch):
    """The streamed denominator equals logsumexp over the formed [B, K, ν] (or [B, ν]) products,
    its gradients w.r.t. query and queue equal autograd's through them, across several chunks, for
    logits far beyond exp's float32 range, and it stays float32 under bf16 autocast."""
    monkeypatch.setattr(queue_lse, "CHUNK_ELEMENTS", 64 * 4 * 3)  # 64-column chunks: 50 -> 1, 300 -> 5
    g = torch.Generator().manual_seed(0)
    for q_shape, n_shape, formed in (((4, 3, 8), (300, 3, 8), lambda q, n: torch.einsum("ikd,bkd->bki", n, q)),
                                     ((4, 8), (50, 8), lambda q, n: q @ n.T)):
        for scale in (1.0, 1e3):
            q = (torch.randn(q_shape, generator=g) * scale).requires_grad_()
            n = torch.randn(n_shape, generator=g).requires_grad_()
            w = torch.randn(q_shape[:-1], generator=g)
            got = queue_lse.queue_logsumexp(q, n)
            want = torch.logsumexp(formed(q, n), -1)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 * scale)
            for a, b in zip(torch.autograd.grad((w * got).sum(), (q, n)), torch.autograd.grad((w * want).sum(), (q, n))):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert queue_lse.queue_logsumexp(torch.randn(4, 8).bfloat16(), torch.randn(50, 8)).dtype == torch.float32
    q64, n64 = torch.randn(4, 3, 8, dtype=torch.float64), torch.randn(300, 3, 8, dtype=torch.float64)
    torch.testing.assert_close(queue_lse.queue_logsumexp(q64, n64),  # float64 stays exact (the primer's checks)
                               torch.logsumexp(torch.einsum("ikd,bkd->bki", n64, q64), -1), rtol=1e-12, atol=1e-12)


def test_expert_log_likelihood_is_the_first_column_of_log_softmax_of_expert_logits():
    """Eq. (5): log Φ - log Ẑ, the streamed form against the formed logits of expert_logits."""
    g = torch.Generator().manual_seed(1)
    f, v, queue = torch.randn(5, 3, 8, generator=g), torch.randn(5, 3, 8, generator=g), torch.randn(40, 3, 8, generator=g)
    mu = torch.randn(3, 8, generator=g)
    for class_level in (True, False):
        expected = torch.log_softmax(expert_logits(f, v, mu, queue, 0.1, class_level), -1)[..., 0]
        torch.testing.assert_close(expert_log_likelihood(f, v, mu, queue, 0.1, class_level), expected)
