"""SiamMM: the paper's identities (Eq. 8-10, 14, 15), the E/M-steps, merging, and a smoke run with resume."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixlab import engine
from mixlab.config import ConfigError, resolve
from mixlab.evaluation import knn_acc, linear_probe_acc
from mixlab.methods import siammm as siammm_mod
from mixlab.methods.base import DataSpec, EpochContext
from mixlab.methods.siammm import SiamMM
from mixlab.mixture.siammm import (
    cluster_loss,
    log_assignment_weights,
    nce1_loss,
    nce2_loss,
    symmetric_instance_loss,
    vmf_mixture_log_posterior,
)
from mixlab.mixture.vmf import vmf_log_normalizer, vmf_sample


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


# ---- Eq. 8-10, 12 ---------------------------------------------------------------------------------
def test_cluster_loss_with_one_centroid_is_the_hard_assignment_loss():
    v, mu = _unit(6, 5, seed=1), _unit(6, 1, 5, seed=2)
    kappa = torch.rand(6, 1) * 50 + 1
    log_pi = log_assignment_weights(v, mu, torch.zeros(6, 1), tau=0.02)
    assert torch.allclose(log_pi, torch.zeros(6, 1))  # H = 1: pi = 1 (Eq. 8)
    hard = -(kappa[:, 0] * (mu[:, 0] * v).sum(1))
    assert torch.allclose(cluster_loss(v, mu, kappa, log_pi), hard, atol=1e-5)


def test_assignment_weights_follow_eq10_and_sum_to_one():
    v, mu = _unit(4, 8, seed=3), _unit(4, 5, 8, seed=4)
    alpha = torch.rand(4, 5) + 0.1
    tau = 0.3
    pi = log_assignment_weights(v, mu, alpha.log(), tau).exp()
    num = alpha * torch.exp(torch.einsum("bhd,bd->bh", mu, v) / tau)
    assert torch.allclose(pi, num / num.sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(pi.sum(1), torch.ones(4), atol=1e-6)
    # large tau -> even weights; small tau -> all weight on the closest centroid
    flat = log_assignment_weights(v, mu, torch.zeros(4, 5), 1e4).exp()
    assert torch.allclose(flat, torch.full((4, 5), 0.2), atol=1e-3)
    sharp = log_assignment_weights(v, mu, torch.zeros(4, 5), 1e-4).exp()
    closest = torch.einsum("bhd,bd->bh", mu, v).argmax(1)
    assert torch.allclose(sharp, F.one_hot(closest, 5).float(), atol=1e-4)
    # with H centroids and tiny tau, L^H tends to the hard loss on the nearest centroid
    kappa = torch.rand(4, 5) * 20
    soft = cluster_loss(v, mu, kappa, sharp.clamp_min(1e-30).log())
    k_near = kappa.gather(1, closest[:, None])[:, 0]
    mu_near = mu[torch.arange(4), closest]
    assert torch.allclose(soft, -k_near * (mu_near * v).sum(1), atol=1e-3)


def test_cluster_loss_is_the_weighted_negative_log_likelihood():
    v, mu = _unit(3, 4, seed=5), _unit(3, 2, 4, seed=6)
    kappa = torch.tensor([[2.0, 5.0], [1.0, 1.0], [10.0, 0.5]])
    pi = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
    want = -torch.log((pi * torch.exp(kappa * torch.einsum("bhd,bd->bh", mu, v))).sum(1))
    assert torch.allclose(cluster_loss(v, mu, kappa, pi.log()), want, atol=1e-5)
    # gradient flows to v only (kappa, mu are fixed estimators, Eq. 9)
    vv, mm, kk = v.clone().requires_grad_(), mu.clone().requires_grad_(), kappa.clone().requires_grad_()
    cluster_loss(vv, mm, kk, pi.log()).sum().backward()
    assert vv.grad is not None and mm.grad is None and kk.grad is None


def test_symmetric_instance_loss_is_zero_for_aligned_views_and_stops_gradient():
    v1, v2 = _unit(5, 6, seed=7), _unit(5, 6, seed=8)
    # L(v1, v2^m) + L(v2, v1^m): zero when v1 is aligned with v2^m and v2 with v1^m (any scale)
    assert torch.allclose(symmetric_instance_loss(v1, v2, 2 * v2, 3 * v1), torch.zeros(5), atol=1e-6)
    want = 2 * (2 - 2 * (v1 * v2).sum(1))   # BYOL's 2 - 2 cos, both directions
    assert torch.allclose(symmetric_instance_loss(v1, v2, v1, v2), want, atol=1e-6)
    t1, t2 = v1.clone().requires_grad_(), v2.clone().requires_grad_()
    assert not symmetric_instance_loss(v1, v2, t1, t2).sum().requires_grad  # stop-gradient (Eq. 1)


# ---- Eq. 14, 15 on a hand-checked case -------------------------------------------------------------
def test_nce_variants_by_hand():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    kappa = torch.tensor([2.0, 3.0, 1.0])
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = torch.tensor([0, 1])
    # Eq. 14, all other centroids negative: logits k mu^T v
    l = nce1_loss(v, mu, kappa, pos)
    want0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-1)))
    want1 = -math.log(math.exp(3) / (math.exp(0) + math.exp(3) + math.exp(0)))
    assert l.shape == (2,) and torch.allclose(l, torch.tensor([want0, want1]), atol=1e-5)
    # explicit negatives (a positive listed among them is ignored)
    l = nce1_loss(v, mu, kappa, pos, neg=torch.tensor([[2, 0], [0, 0]]))
    assert torch.allclose(l, torch.tensor([-math.log(math.exp(2) / (math.exp(2) + math.exp(-1))),
                                           -math.log(math.exp(3) / (math.exp(3) + 2 * math.exp(0)))]), atol=1e-5)
    # Eq. 15: in-batch negatives from other clusters, scored by the positive's kappa_A mu_A
    v3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    a3 = torch.tensor([0, 1, 0])
    l = nce2_loss(v3, mu, kappa, a3)
    # sample 0 (cluster 0): negatives = sample 1 only (sample 2 is in its own cluster)
    w0 = -math.log(math.exp(2 * 1.0) / (math.exp(2 * 1.0) + math.exp(2 * 0.0)))
    # sample 1 (cluster 1): negatives = samples 0 and 2
    w1 = -math.log(math.exp(3 * 1.0) / (math.exp(3.0) + math.exp(0.0) + math.exp(3 * 0.8)))
    w2 = -math.log(math.exp(2 * 0.6) / (math.exp(2 * 0.6) + math.exp(0.0)))
    assert l.shape == (3,) and torch.allclose(l, torch.tensor([w0, w1, w2]), atol=1e-5)
    # no valid negative -> loss 0
    assert torch.allclose(nce2_loss(v3, mu, kappa, torch.zeros(3, dtype=torch.long)), torch.zeros(3), atol=1e-6)


def test_mixture_posterior_is_bayes_rule():
    z, mu = _unit(7, 3, seed=9), _unit(4, 3, seed=10)
    kappa = torch.tensor([1.0, 5.0, 20.0, 50.0])
    logw = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    logc = torch.as_tensor(vmf_log_normalizer(3, kappa.double().numpy())).float()
    joint = logw + logc + kappa * (z @ mu.T)
    got = vmf_mixture_log_posterior(z, mu, kappa, logw)
    assert torch.allclose(got, joint - joint.logsumexp(1, keepdim=True), atol=1e-5)


# ---- the method's E/M steps and merging, on constructed embeddings --------------------------------
def _method(n, d=16, **cfg):
    cfg = resolve("siammm", "smoke", {"method": {"proj_dim": d, "pca_dim": d, **cfg}}).params
    return SiamMM(cfg, DataSpec(in_channels=1, image_size=28, n_samples=n, backbone="small-cnn"))


def _ctx(z, epoch):
    return EpochContext(epoch=epoch, map_dataset=lambda fn: z, all_reduce=lambda t: t, log=lambda m: None)


def _blobs(centers, kappas, n_each, seed=0):
    pts = [torch.as_tensor(vmf_sample(c, k, n_each, seed=seed + i)).float()
           for i, (c, k) in enumerate(zip(centers, kappas))]
    return torch.cat(pts), torch.arange(len(centers)).repeat_interleave(n_each)


def test_kappa_is_larger_for_tighter_clusters():
    d = 16
    centers = np.eye(d)[:3]
    z, _ = _blobs(centers, [30.0, 150.0, 600.0], 200)
    for kind in ("mle", "pca"):
        m = _method(len(z), d, kappa_mode=kind, pca_dim=8 if kind == "pca" else d)
        m._estep_mstep(z, torch.as_tensor(centers).float())
        order = m.mu @ torch.as_tensor(centers).float().T  # which estimated cluster is which blob
        k = m.kappa[order.argmax(0)]
        assert k[0] < k[1] < k[2], (kind, k)
    m = _method(len(z), d, kappa_mode="constant", kappa_const=7.0)
    m._estep_mstep(z, torch.as_tensor(centers).float())
    assert torch.all(m.kappa == 7.0)
    m = _method(len(z), d, kappa_mode="shared", pca_dim=8)
    m._estep_mstep(z, torch.as_tensor(centers).float())
    assert torch.allclose(m.kappa, m.kappa.mean().expand(3))


def test_estep_uses_the_previous_epochs_centroids(monkeypatch):
    d = 16
    centers = np.eye(d)[:4]
    z, y = _blobs(centers, [80.0] * 4, 100)
    m = _method(len(z), d, merge=False, n_nearest=2)
    m.start_epoch(1)
    m.end_epoch(_ctx(z, 1))                      # "Initial": k-means
    previous = m.mu.clone()
    seen = {}
    real = siammm_mod.spherical_kmeans

    def spy(x, K, **kw):
        seen["init"] = kw.get("init")
        return real(x, K, **kw)

    monkeypatch.setattr(siammm_mod, "spherical_kmeans", spy)
    m.start_epoch(2)
    m.end_epoch(_ctx(z, 2))
    assert seen["init"] is not None and torch.allclose(torch.as_tensor(seen["init"]).float(), previous)
    # kmeans_iters = 0: A(x) is exactly the nearest previous centroid
    m.cfg.kmeans_iters = 0
    prev = m.mu.clone()
    shifted = F.normalize(z + 0.3 * _unit(len(z), d, seed=11), dim=1)
    m.end_epoch(_ctx(shifted, 3))
    assert torch.equal(m.assign[:, 0], (shifted @ prev.T).argmax(1))
    assert m.assign.shape == (len(z), 2) and torch.all(m.assign[:, 0] != m.assign[:, 1])
    # "reinit": no warm start
    m.cfg.kmeans_iters, m.cfg.centroid_update = 5, "reinit"
    m.end_epoch(_ctx(z, 4))
    assert seen["init"] is None


def test_merging_reduces_k_and_keeps_assignments_consistent():
    d = 16
    # 3 true groups, each split into 2 nearly identical centroids -> 6 clusters that should merge to 3
    base = torch.eye(d)[:3]
    z, y = _blobs(base.numpy(), [200.0] * 3, 150)
    m = _method(len(z), d, n_clusters=6, zeta=-1.0, n_nearest=1, cluster_start_epoch=2)
    split = F.normalize(torch.cat([base + 0.05 * _unit(3, d, seed=12), base - 0.05 * _unit(3, d, seed=12)]), dim=1)
    m._estep_mstep(z, split)
    assert m.n_clusters == 6
    logs = m.end_epoch(_ctx(z, 2))               # epoch 2 trained with the clusters -> merge
    assert logs["merged"] == 3 and logs["K"] == 3 == m.n_clusters
    assert m.mu.shape == (3, d) and m.kappa.shape == (3,) and m.log_frac.shape == (3,)
    assert int(m.assign.max()) < 3
    # consistent mapping: each true group is exactly one cluster
    a = m.assign[:, 0]
    for g in range(3):
        assert len(torch.unique(a[y == g])) == 1
    assert len(torch.unique(a)) == 3


def _random_blobs(n_blobs, d, kappa, n_each, seed):
    g = np.random.default_rng(seed)
    centers = g.standard_normal((n_blobs, d))
    return _blobs(centers / np.linalg.norm(centers, axis=1, keepdims=True), [kappa] * n_blobs, n_each, seed)


@pytest.mark.parametrize("rule", ["first", "each"])
def test_merging_stops_by_itself_without_the_class_count(rule):
    # 8 well-separated groups over-seeded with K0 = 32: Eq. 11 re-standardised every epoch keeps
    # finding "close" pairs and merges down to min_clusters; the distance fixed at the first merge
    # stops once the duplicates of each group are gone.
    d, n_groups = 16, 8
    z, y = _random_blobs(n_groups, d, 400.0, 100, seed=3)
    m = _method(len(z), d, n_clusters=32, n_nearest=1, merge_threshold=rule, min_clusters=2,
                kmeans_iters=10)
    assert m.cfg.zeta == -1.2
    ks = []
    for epoch in range(1, 12):
        m.start_epoch(epoch)
        ks.append(m.end_epoch(_ctx(z, epoch))["K"])
    if rule == "first":
        assert ks[-1] == ks[-4] == n_groups, ks
        a = m.assign[:, 0]
        assert all(len(torch.unique(a[y == g])) == 1 for g in range(n_groups))
    else:
        assert ks[-1] < n_groups, ks


def test_merge_distance_survives_a_resume():
    d = 16
    z, _ = _random_blobs(6, d, 400.0, 60, seed=4)
    a = _method(len(z), d, n_clusters=24, n_nearest=1)
    for epoch in (1, 2):
        a.start_epoch(epoch)
        a.end_epoch(_ctx(z, epoch))
    assert math.isfinite(float(a.merge_dist))
    b = _method(len(z), d, n_clusters=24, n_nearest=1)
    b.load_state_dict(a.state_dict())
    assert float(b.merge_dist) == float(a.merge_dist)


def test_predict_uses_the_dimension_kappa_was_estimated_in():
    # kappa from Eq. 16 belongs to a d^PCA-dimensional vMF: its c_d must use d^PCA, not d.
    d, d_pca = 32, 8
    z, _ = _random_blobs(4, d, 60.0, 80, seed=5)
    m = _method(len(z), d, kappa_mode="pca", pca_dim=d_pca, n_nearest=1)
    m._estep_mstep(z, m.mu.new_tensor(np.asarray(z[::80])))
    assert m.kappa_dim == d_pca
    m.embed = lambda x: F.normalize(x, dim=1)
    logc = torch.as_tensor(vmf_log_normalizer(d_pca, m.kappa.double().numpy())).float()
    joint = m.log_frac + logc + m.kappa * (z @ m.mu.T)
    assert torch.allclose(m.predict(z).log(), joint.log_softmax(1), atol=1e-4)
    assert _method(len(z), d, kappa_mode="mle").kappa_dim == d


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_profiles_follow_eq13_and_the_papers_merging(profile):
    # Eq. 13 adds L^H and L_inst unweighted; zeta = -1.2 (§5); dividing by kappa is an ablation only
    p = resolve("siammm", profile).params
    assert not p.kappa_normalize and p.cluster_weight == 1.0 and p.zeta == -1.2
    assert p.lars and p.tau == 0.02 and p.n_nearest == 5  # §5.1: LARS; Eq. 10: H = 5, tau = 0.02
    t = resolve("siammm", profile).train
    assert t.lr == pytest.approx(0.6 * t.batch_size / 256) and t.weight_decay == 1e-6
    if profile in ("cpu", "gpu"):
        assert p.n_clusters >= 100  # K0 well above any plausible K on Fashion-MNIST


def test_fixed_k_without_merge_and_min_clusters():
    d = 16
    base = torch.eye(d)[:3]
    z, _ = _blobs(base.numpy(), [200.0] * 3, 100)
    split = F.normalize(torch.cat([base + 0.05 * _unit(3, d, seed=12), base - 0.05 * _unit(3, d, seed=12)]), dim=1)
    m = _method(len(z), d, merge=False, n_nearest=1)
    m._estep_mstep(z, split)
    assert m.end_epoch(_ctx(z, 2))["K"] == 6
    m = _method(len(z), d, zeta=-1.0, n_nearest=1, min_clusters=4)
    m._estep_mstep(z, split)
    assert m.end_epoch(_ctx(z, 2))["K"] == 6     # the merge would go below min_clusters: skipped


def test_load_state_dict_resizes_k_dependent_buffers():
    d = 16
    z, _ = _blobs(np.eye(d)[:3], [100.0] * 3, 50)
    a = _method(len(z), d)
    a._estep_mstep(z, torch.eye(d)[:3])
    b = _method(len(z), d)
    assert not b.initialized
    b.load_state_dict(a.state_dict())
    assert b.n_clusters == 3 and torch.equal(b.mu, a.mu) and torch.equal(b.assign, a.assign)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="method.cluster_start_epoch"):
        resolve("siammm", "smoke", {"method": {"cluster_start_epoch": 1}})
    with pytest.raises(ConfigError, match="method.kappa_mode"):
        resolve("siammm", "smoke", {"method": {"kappa_mode": "bessel"}})
    for prof in ("smoke", "cpu", "gpu", "paper"):
        resolve("siammm", prof)


# ---- evaluation helpers ----------------------------------------------------------------------------
def test_linear_probe_and_knn_on_separable_data():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 5
    y = torch.arange(3).repeat(40)
    x = centers[y] + 0.3 * torch.randn(120, 8, generator=g)
    tr = torch.arange(120) < 90
    assert linear_probe_acc(x[tr], y[tr], x[~tr], y[~tr]) == 1.0
    assert knn_acc(x[tr], y[tr], x[~tr], y[~tr], k=5) == 1.0
    # weighted vs majority: one very close neighbour of class 1 against two far ones of class 0
    xtr = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ytr = torch.tensor([1, 0, 0])
    xte, yte = torch.tensor([[1.0, 0.05]]), torch.tensor([1])
    assert knn_acc(xtr, ytr, xte, yte, k=3, weighting="weighted") == 1.0
    assert knn_acc(xtr, ytr, xte, yte, k=3, weighting="majority") == 0.0


# ---- a smoke run: the loss goes down, K is logged per epoch, resume after K changed ---------------
class Killed(Exception):
    pass


def test_smoke_run_logs_k_and_resumes_after_merging(tmp_path):
    cfg = resolve("siammm", "smoke", {"train": {"num_threads": 1}})
    ref = engine.train(cfg, tmp_path / "ref")
    rows = [json.loads(line) for line in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    ks = [r["K"] for r in rows]
    assert ks[0] == cfg.params.n_clusters and ks[-1] < ks[0]           # merged after epoch 2
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert "loss_cluster" in rows[1] and "loss_cluster" not in rows[0]
    # label-free diagnostics every epoch: the effective dimension and (K <= 64) the cluster sizes
    for r in rows:
        assert 1.0 <= r["effective_dim"] <= cfg.params.proj_dim
        assert r["em_cluster_sizes"] == sorted(r["em_cluster_sizes"], reverse=True)
        assert len(r["em_cluster_sizes"]) == r["K"] and sum(r["em_cluster_sizes"]) == cfg.train.subset

    steps = (cfg.train.subset // cfg.train.batch_size)

    def hook(step):
        if step == 2 * steps + 2:   # in epoch 3, after K changed at the end of epoch 2
            raise Killed

    with pytest.raises(Killed):
        engine.train(cfg, tmp_path / "run", step_hook=hook)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["method"]["mu"].shape[0] == ks[1] != cfg.params.n_clusters
    resumed = engine.train(cfg, tmp_path / "run", resume=True)
    for key in ("acc", "nmi", "ari", "ami"):
        assert resumed[key] == pytest.approx(ref[key])
    a = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["method"]
    b = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["method"]
    assert a["mu"].shape == b["mu"].shape
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name


def test_vmf_mixture_em_step_is_a_pure_function_dropping_empty_components():
    """The E/M step on its own: two tight clusters on the sphere and a third centroid no point is
    nearest to; the empty component is dropped, mu lands on the cluster means, kappa follows the mode."""
    from mixlab.mixture.siammm import vmf_mixture_em_step

    g = torch.Generator().manual_seed(0)
    means = torch.eye(8)[:2]
    z = F.normalize(torch.cat([means[0] + 0.05 * torch.randn(50, 8, generator=g),
                               means[1] + 0.05 * torch.randn(50, 8, generator=g)]), dim=1)
    centroids = torch.stack([means[0], means[1], -means[0] - means[1]])
    fit = vmf_mixture_em_step(z, centroids, n_nearest=2, kappa_mode="mle")
    assert fit["mu"].shape == (2, 8) and fit["assign"].shape == (100, 2)
    assert torch.allclose(fit["mu"], means, atol=0.05)
    torch.testing.assert_close(fit["log_frac"].exp(), torch.tensor([0.5, 0.5]))
    capped = vmf_mixture_em_step(z, centroids, kappa_mode="mle", kappa_max=3.0)["kappa"]
    assert capped.max() == 3.0 and fit["kappa"].min() > 3.0
    assert torch.equal(vmf_mixture_em_step(z, centroids, kappa_mode="constant", kappa_const=7.0)["kappa"],
                       torch.full((2,), 7.0))


# ---- memory: E/M steps in O(N d + K d), a K0 that cannot fit fails before training ----------------
def _dense_em_step(z, centroids, n_nearest, mstep, alpha_mode, tau, kappa_mode, pca_dim):
    """The E/M step as it was, with an [N, K] responsibility matrix: the reference for the chunked one."""
    from mixlab.mixture.kmeans import assign_nearest
    from mixlab.mixture.vmf import pca_kappa, vmf_mle

    centroids = F.normalize(centroids.float(), dim=1)
    counts = torch.bincount(assign_nearest(z, centroids, 1)[1][:, 0], minlength=len(centroids))
    centroids = centroids[counts > 0]
    K = len(centroids)
    sims, idx = assign_nearest(z, centroids, min(n_nearest, K))
    if mstep == "soft":
        log_alpha = torch.zeros_like(sims)
        if alpha_mode == "size":
            log_alpha = (torch.bincount(idx[:, 0], minlength=K).double() / len(z)).log()[idx].float()
        pi = torch.softmax(log_alpha + sims / tau, dim=1)
        weights = torch.zeros(len(z), K, dtype=torch.float64).scatter_(1, idx, pi.double())
    else:
        weights = F.one_hot(idx[:, 0], K).double()
    mu, kappa = vmf_mle(z.double(), weights)
    if kappa_mode == "pca":
        kappa = pca_kappa(z.double(), weights, n_components=pca_dim)
    mass = weights.sum(0)
    return {"mu": F.normalize(mu.float(), dim=1), "kappa": kappa.float(),
            "log_frac": (mass / mass.sum()).clamp_min(1e-12).log().float(), "assign": idx}


@pytest.mark.parametrize("mstep,alpha_mode,kappa_mode", [("hard", "uniform", "pca"), ("soft", "uniform", "pca"),
                                                         ("soft", "size", "mle")])
def test_chunked_em_step_equals_the_dense_computation(mstep, alpha_mode, kappa_mode):
    from mixlab.mixture.siammm import vmf_mixture_em_step

    N, K, d = 2000, 300, 16
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(40, d, generator=g), dim=1)
    z = F.normalize(centers[torch.randint(0, 40, (N,), generator=g)] + 0.4 * torch.randn(N, d, generator=g), dim=1)
    centroids = torch.cat([z[:K - 20], z[:20]])  # 20 duplicated centroids: one of each pair is empty, dropped
    kw = dict(n_nearest=5, mstep=mstep, alpha_mode=alpha_mode, tau=0.1, kappa_mode=kappa_mode, pca_dim=8)
    ref = _dense_em_step(z, centroids, **kw)
    assert len(ref["mu"]) == K - 20
    for chunk in (1, 13, 512, 10**6):
        got = vmf_mixture_em_step(z, centroids, chunk_size=chunk, **kw)
        assert torch.equal(got["assign"], ref["assign"])
        torch.testing.assert_close(got["mu"], ref["mu"], rtol=0, atol=1e-6)
        torch.testing.assert_close(got["kappa"], ref["kappa"], rtol=1e-5, atol=0)
        torch.testing.assert_close(got["log_frac"], ref["log_frac"], rtol=0, atol=1e-5)


def test_em_step_memory_does_not_grow_with_n_times_k():
    """N = 40,000, K = 2,000: an [N, K] float64 responsibility matrix is 610 MiB (the old code built
    one for each of mu and kappa); the chunked step's peak RSS grows by a few MiB (measured in a
    fresh process: ru_maxrss only rises)."""
    import subprocess
    import sys

    code = """
import resource, torch, torch.nn.functional as F
torch.set_num_threads(1)
from mixlab.mixture.siammm import vmf_mixture_em_step
g = torch.Generator().manual_seed(0)
z = F.normalize(torch.randn(40000, 16, generator=g), dim=1)
c = z[:2000].clone()
vmf_mixture_em_step(z[:500], c[:50], mstep="soft", pca_dim=8)  # warm-up: imports, faiss, allocator
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for mstep in ("hard", "soft"):
    vmf_mixture_em_step(z, c, mstep=mstep, pca_dim=8)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grew = int(out.stdout.split()[-1])
    assert grew < 150 * 2**20, f"peak RSS grew by {grew / 2**20:.0f} MiB"


def test_a_k0_that_cannot_fit_fails_before_training_naming_the_memory(monkeypatch):
    need = siammm_mod.mixture_memory_bytes
    n, d = 70_000, 128
    # the parts that stay O(N K) / O(K^2): 10 bytes x N x K of evaluation posteriors, 12 K^2 of merge pairs
    assert need(n, d, 5000) - need(n, d, 4999) == pytest.approx(10 * n + 12 * 2 * 4999, rel=0.01)
    assert need(n, d, 5000) < 5 * 2**30 < need(n, d, 70_000)       # fits the 24 GiB machine; K0 = N does not
    assert need(n, d, 10**6) == need(n, d, n)                       # K0 is capped at N
    siammm_mod.check_mixture_memory(n, d, 5000, available=24 * 2**30)  # silent when it fits
    with pytest.raises(ConfigError) as err:
        siammm_mod.check_mixture_memory(n, d, 5000, available=2 * 2**30)
    msg = str(err.value)
    assert "\n" not in msg and "method.n_clusters=5000" in msg and "GiB" in msg and "MemAvailable" in msg
    assert f"{need(n, d, 5000) / 2**30:.1f} GiB" in msg and "2.0 GiB is available" in msg
    k_fit = int(msg.split("at most ")[1].split()[0])
    assert need(n, d, k_fit) <= 2 * 2**30 < need(n, d, k_fit + 1)
    # the method checks before its networks are built (i.e. before any training)
    monkeypatch.setattr(siammm_mod, "available_memory_bytes", lambda: 2 * 2**30)
    with pytest.raises(ConfigError, match="needs about"):
        _method(n, 16, n_clusters=40_000)
    assert _method(n, 16, n_clusters=100).n_clusters == 100
    monkeypatch.setattr(siammm_mod, "available_memory_bytes", lambda: None)  # unknown: no check
    _method(n, 16, n_clusters=40_000)


def test_epoch_log_has_effective_dimension_and_cluster_sizes_without_touching_training():
    from mixlab.metrics import participation_ratio

    d = 16
    z, _ = _blobs(np.eye(d)[:4], [50.0, 50.0, 50.0, 400.0], 100)
    m = _method(len(z), d, merge=False, n_nearest=2)
    m.start_epoch(1)
    logs = m.end_epoch(_ctx(z, 1))
    assert logs["effective_dim"] == pytest.approx(participation_ratio(z))
    assert 2.0 < logs["effective_dim"] < d
    assert logs["em_cluster_sizes"] == sorted(torch.bincount(m.assign[:, 0]).tolist(), reverse=True)
    assert sum(logs["em_cluster_sizes"]) == len(z) and logs["K"] == len(logs["em_cluster_sizes"])
    assert logs["em_max_cluster_frac"] == pytest.approx(logs["em_cluster_sizes"][0] / len(z))
    # reading the diagnostics consumes no random numbers and changes no buffer
    state = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    assert m._stats() == {k: v for k, v in logs.items() if k in m._stats()}
    participation_ratio(z)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, equal_nan=True)
    # above 64 clusters the size list is left out of the log (a row per epoch stays short)
    big = _method(len(z), d, merge=False, n_nearest=1)
    big._estep_mstep(z, z[:80])
    assert "em_cluster_sizes" not in big._stats() and big._stats()["K"] > 64


def test_participation_ratio_on_known_spectra():
    from mixlab.metrics import participation_ratio

    e = np.eye(5)
    # +-s_k e_k for k = 1..3: zero mean, covariance diag(s_k^2 / 3): PR = (sum s^2)^2 / sum s^4
    s = np.array([1.0, 1.0, np.sqrt(2.0)])
    x = np.concatenate([s[:, None] * e[:3], -s[:, None] * e[:3]])
    assert participation_ratio(x) == pytest.approx(16 / 6, abs=1e-12)
    iso = np.concatenate([e, -e])                                   # isotropic in 5 dims
    assert participation_ratio(iso) == pytest.approx(5.0, abs=1e-12)
    assert participation_ratio(torch.as_tensor(iso + 7.0)) == pytest.approx(5.0, abs=1e-9)  # centred
    line = np.outer(np.linspace(-1, 1, 50), np.ones(5))             # all variance along one direction
    assert participation_ratio(line) == pytest.approx(1.0, abs=1e-12)
    assert math.isnan(participation_ratio(np.ones((4, 3))))
