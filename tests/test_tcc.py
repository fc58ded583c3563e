"""TCC (supplement of "You Never Cluster Alone"): the identities of Eq. (1)-(2) and (6), the
Gumbel-softmax relaxation, gradient paths, and a short run on 2-D blobs."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixlab import engine
from mixlab.config import ConfigError, resolve
from mixlab.methods.base import DataSpec, EpochContext
from mixlab.methods.tcc import TCC
from mixlab.metrics import assignment_confidence, cluster_acc
from mixlab.mixture.contrastive import info_nce
from mixlab.mixture.em import elbo, log_marginal
from mixlab.mixture.tcc import (
    assignment_kl,
    assignment_log_probs,
    cluster_contrastive_loss,
    cluster_representations,
    gumbel_softmax,
    instance_elbo,
    instance_query,
    kl_to_uniform,
    marginal_entropy,
    sample_gumbel,
)
from mixlab.workbook import stats

torch.set_num_threads(1)


def _batch(B=16, K=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(torch.randn(B, K, generator=g) * 2, dim=1)
    f = F.normalize(torch.randn(B, d, generator=g), dim=1)
    return pi, f


# ---- cluster representations (supplement Eq. 6, §B.2.2) ------------------------------------------
def test_tcc_cluster_representation_is_invariant_to_batch_order():
    pi, f = _batch()
    perm = torch.randperm(len(pi), generator=torch.Generator().manual_seed(1))
    r = cluster_representations(pi, f, "tcc")
    assert r.shape == (5, 8)
    torch.testing.assert_close(cluster_representations(pi[perm], f[perm], "tcc"), r)
    torch.testing.assert_close(r.norm(dim=1), torch.ones(5))


def test_cc_cluster_representation_follows_batch_order():
    """CC's r_k = [pi_1(k), ..., pi_B(k)] is indexed by batch position: reordering the batch gives a
    different vector (its coordinates permuted). What stays equal are inner products between two
    views reordered *the same way*, so the CC loss is invariant to a joint permutation, but not to
    reordering one view only; TCC's r_k is a set function, unchanged either way."""
    pi1, f1 = _batch(seed=0)
    pi2 = torch.softmax(torch.log(pi1) + 0.3 * torch.randn(pi1.shape, generator=torch.Generator().manual_seed(5)), 1)
    f2 = F.normalize(f1 + 0.1 * torch.randn(f1.shape, generator=torch.Generator().manual_seed(6)), dim=1)
    perm = torch.randperm(len(pi1), generator=torch.Generator().manual_seed(2))
    r = cluster_representations(pi1, kind="cc")
    r_perm = cluster_representations(pi1[perm], kind="cc")
    assert r.shape == (5, 16)
    assert not torch.allclose(r_perm, r)
    torch.testing.assert_close(r_perm, r[:, perm])  # same numbers, other coordinates
    loss = lambda a, b, kind, fa=f1, fb=f2: cluster_contrastive_loss(  # noqa: E731
        cluster_representations(a, fa, kind), cluster_representations(b, fb, kind), 0.5)
    # joint reordering of both views: both losses unchanged
    for kind in ("tcc", "cc"):
        torch.testing.assert_close(loss(pi1[perm], pi2[perm], kind, f1[perm], f2[perm]), loss(pi1, pi2, kind))
    # reordering only view 2 (e.g. another batch order): TCC unchanged, CC changes
    torch.testing.assert_close(loss(pi1, pi2[perm], "tcc", f1, f2[perm]), loss(pi1, pi2, "tcc"))
    assert not torch.allclose(loss(pi1, pi2[perm], "cc"), loss(pi1, pi2, "cc"))


def test_cluster_loss_is_low_for_matching_views_and_uses_other_clusters_as_negatives():
    r = F.normalize(torch.eye(4, 8), dim=1)
    good = cluster_contrastive_loss(r, r, 0.1)
    swapped = cluster_contrastive_loss(r, r[[1, 0, 2, 3]], 0.1)
    assert good < 0.01 < swapped
    # 2K - 1 candidates per anchor: identical clusters everywhere give log(2K - 1)
    same = F.normalize(torch.ones(4, 8), dim=1)
    torch.testing.assert_close(cluster_contrastive_loss(same, same, 1.0), torch.tensor(math.log(7.0)))


# ---- Gumbel-softmax ------------------------------------------------------------------------------
def test_gumbel_samples_are_one_hot_as_temperature_goes_to_zero():
    log_q = torch.log_softmax(torch.randn(64, 6, generator=torch.Generator().manual_seed(0)), 1)
    noise = sample_gumbel(log_q.shape, generator=torch.Generator().manual_seed(1))
    gaps = []
    for lam in (1.0, 1e-1, 1e-2, 1e-3, 1e-6):
        c = gumbel_softmax(log_q, lam, noise=noise)
        torch.testing.assert_close(c.sum(1), torch.ones(64))
        gaps.append(float((1 - c.max(1).values).mean()))
    assert all(a >= b for a, b in zip(gaps, gaps[1:])) and gaps[0] > gaps[2] > gaps[-1] and gaps[-1] < 1e-6
    assert (c.max(1).values > 1 - 1e-4).all()
    # the limit is the Gumbel-max sample argmax(log q + eps)
    assert torch.equal(gumbel_softmax(log_q, 1e-3, noise=noise).argmax(1), (log_q + noise).argmax(1))
    # larger temperature: flatter
    assert gumbel_softmax(log_q, 5.0, noise=noise).max(1).values.mean() < 0.5


def test_gumbel_sample_average_approaches_q():
    q = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    log_q = q.log().expand(200_000, -1)
    noise = sample_gumbel(log_q.shape, generator=torch.Generator().manual_seed(0))
    hard_mean = gumbel_softmax(log_q, 1e-3, noise=noise).mean(0)
    torch.testing.assert_close(hard_mean, q, atol=4e-3, rtol=0)  # Gumbel-max: exact law q
    errs = [(gumbel_softmax(log_q[:n], 1e-3, noise=noise[:n]).mean(0) - q).abs().max() for n in (100, 200_000)]
    assert errs[1] < errs[0]


def test_straight_through_is_one_hot_forward_with_soft_gradient():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    noise = sample_gumbel((8, 4), generator=torch.Generator().manual_seed(1))
    w = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    hard = gumbel_softmax(logits, 0.5, noise=noise, hard=True)
    one_hot = F.one_hot((logits + noise).argmax(1), 4).float()
    torch.testing.assert_close(hard.detach(), one_hot)  # exact up to float rounding of c + (1 - c)
    (g_hard,) = torch.autograd.grad((hard * w).sum(), logits)
    (g_soft,) = torch.autograd.grad((gumbel_softmax(logits, 0.5, noise=noise) * w).sum(), logits)
    torch.testing.assert_close(g_hard, g_soft)


def test_deterministic_variant_has_no_noise():
    log_q = torch.log_softmax(torch.randn(4, 3), 1)
    torch.testing.assert_close(gumbel_softmax(log_q, 1.0), log_q.exp())


# ---- instance-level ELBO (supplement Eq. 1-2) ----------------------------------------------------
def test_kl_to_uniform_prior_is_log_k_minus_entropy():
    log_q = torch.log_softmax(3 * torch.randn(32, 7, generator=torch.Generator().manual_seed(0)), 1)
    entropy = -(log_q.exp() * log_q).sum(1)
    torch.testing.assert_close(kl_to_uniform(log_q), math.log(7) - entropy)
    torch.testing.assert_close(kl_to_uniform(torch.full((2, 7), -math.log(7))), torch.zeros(2))
    one_hot = torch.log(torch.tensor([[1.0, 0, 0, 0]]))  # q_k = 0 terms contribute 0
    torch.testing.assert_close(kl_to_uniform(one_hot), torch.tensor([math.log(4)]))
    # marginal entropy of the batch: log K for balanced one-hot assignments
    balanced = torch.log(torch.eye(7).repeat(3, 1).clamp_min(1e-30))
    torch.testing.assert_close(marginal_entropy(balanced), torch.tensor(math.log(7)), atol=1e-5, rtol=0)


def test_eq1_elbo_lower_bounds_the_instance_log_likelihood():
    """Eq. (1): log p(i|x) = log sum_k p(i|x,k) p(k) >= E_q[log p(i|x,k)] - KL(q || p(k)), with
    equality at the posterior; the uniform prior p(k) = 1/K of Eq. (2)."""
    g = torch.Generator().manual_seed(0)
    B, K = 16, 6
    log_lik = torch.log_softmax(torch.randn(B, 50, generator=g), 1)[:, :K]  # log p(i|x,k) <= 0
    log_prior = torch.full((B, K), -math.log(K))
    log_q = torch.log_softmax(torch.randn(B, K, generator=g), 1)
    bound = (log_q.exp() * log_lik).sum(1) - kl_to_uniform(log_q)
    torch.testing.assert_close(bound, elbo(log_q, log_prior, log_lik))
    assert (bound <= log_marginal(log_prior, log_lik) + 1e-6).all()
    posterior = torch.log_softmax(log_prior + log_lik, 1)
    torch.testing.assert_close(instance_elbo((posterior.exp() * log_lik).sum(1), posterior),
                               log_marginal(log_prior, log_lik))


def test_instance_likelihood_is_infonce_and_depends_on_x_and_c():
    g = torch.Generator().manual_seed(0)
    B, K, d, N = 8, 4, 16, 32
    mu = F.normalize(torch.randn(K, d, generator=g), dim=1)
    v = F.normalize(torch.randn(B, d, generator=g), dim=1)
    c = torch.softmax(torch.randn(B, K, generator=g), 1)
    z = instance_query(c, mu, v, alpha=1.0)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(B))
    torch.testing.assert_close(z, F.normalize(c @ mu + v, dim=1))
    assert not torch.allclose(instance_query(c.flip(1), mu, v, 1.0), z)  # depends on c
    assert not torch.allclose(instance_query(c, mu, v.flip(0), 1.0), z)  # depends on x
    keys, negs = F.normalize(torch.randn(B, d, generator=g), dim=1), F.normalize(torch.randn(N, d, generator=g), 1)
    ll = info_nce(z, keys, negs, 0.5, normalize=False)
    expected = -F.cross_entropy(torch.cat([(z * keys).sum(1, keepdim=True), z @ negs.t()], 1) / 0.5,
                                torch.zeros(B, dtype=torch.long), reduction="none")
    torch.testing.assert_close(ll, expected)
    assert (ll <= 0).all()


# ---- gradients reach q(k|x) through both tracks --------------------------------------------------
@pytest.mark.parametrize("kind", ["tcc", "cc"])
def test_gradients_reach_assignments_through_both_tracks(kind):
    g = torch.Generator().manual_seed(0)
    B, K, d = 12, 4, 8
    h = F.normalize(torch.randn(B, d, generator=g), dim=1)
    mu = F.normalize(torch.randn(K, d, generator=g), dim=1)
    keys = F.normalize(torch.randn(B, d, generator=g), dim=1)
    logits = torch.randn(B, K, generator=g, requires_grad=True)
    noise = sample_gumbel((B, K), generator=g)
    c = gumbel_softmax(torch.log_softmax(logits, 1), 0.5, noise=noise)
    # instance track: only through c (mu, v, keys fixed), kl term excluded
    inst = -info_nce(instance_query(c, mu, h, 1.0), keys, None, 0.5, normalize=False).mean()
    (g_inst,) = torch.autograd.grad(inst, logits, retain_graph=True)
    # cluster track: only through pi = c
    c2 = gumbel_softmax(torch.log_softmax(logits, 1), 0.5, noise=sample_gumbel((B, K), generator=g))
    clu = cluster_contrastive_loss(cluster_representations(c, h, kind), cluster_representations(c2, h, kind), 0.5)
    (g_clu,) = torch.autograd.grad(clu, logits)
    assert g_inst.abs().sum() > 1e-6 and g_clu.abs().sum() > 1e-6


def _spec():
    return DataSpec(in_channels=2, image_size=0, n_samples=64, backbone="mlp")


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0)])
def test_method_gradients_reach_prototypes_and_body_through_each_track(weights):
    torch.manual_seed(0)
    cfg = resolve("tcc", "smoke", {"method": {"instance_weight": weights[0], "cluster_weight": weights[1],
                                              "kl_weight": 0.0}}).params
    m = TCC(cfg, _spec())
    x = torch.randn(32, 2) * 5
    out = m.training_step([x, x], torch.arange(32), "main")
    out["loss"].backward()
    assert m.student.prototypes.grad.abs().sum() > 0
    assert m.student.backbone.body[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())


# ---- method --------------------------------------------------------------------------------------
def test_method_shapes_config_errors_and_checkpoint_state():
    torch.manual_seed(0)
    cfg = resolve("tcc", "smoke").params
    m = TCC(cfg, _spec())
    x = torch.randn(20, 2)
    post = m.eval().predict(x)
    assert post.shape == (20, cfg.n_clusters)
    torch.testing.assert_close(post.sum(1), torch.ones(20))
    emb = m.embed(x)
    assert emb.shape == (20, cfg.embed_dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(20))
    state = m.state_dict()
    assert {"queue.data", "queue.ptr", "student.prototypes", "teacher.prototypes"} <= set(state)
    for bad, field in (({"cluster_repr": "mean"}, "cluster_repr"), ({"gumbel_temperature": 0}, "gumbel_temperature"),
                       ({"embed_dim": 4, "n_clusters": 10}, "embed_dim"), ({"teacher_momentum": 1.0}, "teacher_momentum"),
                       ({"instance_weight": 0, "cluster_weight": 0}, "instance_weight")):
        with pytest.raises(ConfigError, match=field):
            resolve("tcc", "smoke", {"method": bad})
    for profile in ("smoke", "cpu", "gpu", "paper"):
        resolve("tcc", profile)


def test_default_noise_is_independent_per_encoding():
    # sharing one eps between query and key adds the same sum_k c_k mu_k to both: a match that
    # says nothing about the image. The default draws fresh noise for every encoding.
    torch.manual_seed(0)
    cfg = resolve("tcc", "smoke", {"method": {"gumbel_temperature": 1e-3, "point_jitter": 0.0}}).params
    assert cfg.share_noise is False
    m = TCC(cfg, _spec())
    x = torch.randn(64, 2)
    noise = sample_gumbel((64, cfg.n_clusters))
    c1, c2 = (m._encode(m.student, x, noise)[2] for _ in range(2))
    assert (c1.argmax(1) != c2.argmax(1)).any()


def test_per_image_kl_charges_confident_assignments_marginal_only_imbalance():
    # E_x KL(q(k|x) || U) = I(x; k) + KL(q_bar || U): the per-image form of Eq. (2) (the default, as
    # written) charges log K for one-hot assignments even when the clusters are perfectly balanced; the
    # batch-marginal form (the departure tested against it) charges only the imbalance.
    K = 5
    confident = torch.log_softmax(torch.eye(K).repeat(4, 1) * 30.0, dim=1)  # one-hot, balanced
    assert float(assignment_kl(confident, "sample").mean()) == pytest.approx(math.log(K), abs=1e-3)
    assert float(assignment_kl(confident, "marginal").mean()) == pytest.approx(0.0, abs=1e-6)
    lopsided = torch.log_softmax(torch.tensor([[30.0, 0, 0, 0, 0]]).repeat(20, 1), dim=1)
    assert float(assignment_kl(lopsided, "marginal").mean()) == pytest.approx(math.log(K), abs=1e-3)
    cfg = resolve("tcc", "smoke").params
    assert cfg.kl == "sample" and cfg.kl_weight == 1.0


def test_cluster_contrast_temperature_lets_the_positive_reach_the_confidence():
    # tau_c by t's rule: two views' r_k on a regular simplex, each anchor's positive among 2K - 2
    # negatives reaches exactly 0.99 in the NT-Xent softmax at tau_c, less at CC's 1.0.
    from mixlab.mixture.tcc import cluster_contrast_temperature, cluster_contrastive_loss

    K = 10
    simplex = torch.eye(K, dtype=torch.float64) - 1.0 / K
    simplex = simplex / simplex.norm(dim=1, keepdim=True)  # cosine -1/(K-1) between rows
    tau = cluster_contrast_temperature(K)
    assert tau == pytest.approx(0.148, abs=1e-3)
    assert math.exp(-float(cluster_contrastive_loss(simplex, simplex, tau))) == pytest.approx(0.99, abs=1e-9)
    assert math.exp(-float(cluster_contrastive_loss(simplex, simplex, 1.0))) < 0.2
    assert resolve("tcc", "cpu").params.cluster_temperature is None


def test_default_temperatures_let_q_be_confident():
    # the assignment head can reach q >= 0.99 on a prototype (it could not at t = 0.2 with K = 10)
    torch.manual_seed(0)
    for K in (10, 20):
        m = TCC(resolve("tcc", "smoke", {"method": {"n_clusters": K}}).params, _spec())
        mu = F.normalize(m.student.prototypes.detach(), dim=1)  # MMD init: a regular simplex
        q = assignment_log_probs(mu, mu, m.assign_temperature).exp()
        assert float(q.diagonal().min()) == pytest.approx(0.99, abs=1e-3)
        assert m.gumbel_temperature == pytest.approx(1 / (K - 1))
    assert math.isclose(TCC(resolve("tcc", "smoke", {"method": {"assign_temperature": 0.5}}).params,
                            _spec()).assign_temperature, 0.5)


def test_flat_posteriors_are_reported_as_collapsed():
    flat = np.full((100, 10), 0.1)
    flat[np.arange(100), np.arange(100) % 10] += 1e-3  # an argmax exists, but it is a tie-break
    out = assignment_confidence(flat)
    assert out["collapsed"] and out["mean_max_q"] < 0.11
    sharp = np.eye(10)[np.arange(100) % 10] * 0.9 + 0.01
    out = assignment_confidence(sharp)
    assert not out["collapsed"] and out["mean_max_q"] == pytest.approx(0.91)


def test_shared_noise_option_uses_one_sample_for_the_views():
    torch.manual_seed(0)
    cfg = resolve("tcc", "smoke", {"method": {"gumbel_temperature": 1e-3, "point_jitter": 0.0,
                                              "share_noise": True}}).params
    m = TCC(cfg, _spec())
    x = torch.randn(16, 2)
    torch.manual_seed(1)
    log_q = m._encode(m.student, x, None)[1]
    noise = sample_gumbel(log_q.shape)
    c1, c2 = (m._encode(m.student, x, noise)[2] for _ in range(2))
    torch.testing.assert_close(c1, c2)  # same image, same eps -> same sample
    torch.testing.assert_close(c1.argmax(1), (log_q + noise).argmax(1))


@pytest.mark.parametrize("kl", ["sample", "marginal"])
def test_smoke_run_on_blobs_lowers_loss_without_collapse(tmp_path, kl):
    """Point data: backbone "mlp", augment "none" (identical views), so the method jitters each view
    with N(0, point_jitter^2) (mixlab's choice). Both KL forms of the named pair."""
    cfg = resolve("tcc", "smoke", {"train": {"dataset": "blobs2d", "backbone": "mlp", "augment": "none",
                                             "subset": None, "epochs": 5, "batch_size": 256, "num_threads": 1},
                                   "method": {"kl": kl}})
    result = engine.train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert rows[-1]["loss_cluster"] < rows[0]["loss_cluster"]
    assert result["n_nonempty"] >= 6 and result["max_cluster_frac"] < 0.4
    assert rows[-1]["size_entropy"] > 0.6 * rows[-1]["size_entropy_max"]  # a 2-cluster collapse: 0.30
    assert result["acc"] > 0.3  # 10 blobs: chance is 0.1
    K = cfg.params.n_clusters
    for r in rows:  # label-free diagnostics every epoch; the flag is their stated rule
        assert 0.0 <= r["train_q_entropy"] <= math.log(K) and 1.0 / K <= r["train_q_max"] <= 1.0
        assert 0.0 <= r["train_q_max_below_half"] <= 1.0 and r["dup_prototype_pairs"] >= 0
        flat = math.log(K) - r["train_q_entropy"] < 0.01 * math.log(K)
        assert r["collapsed"] == (r["dup_prototype_pairs"] > 0 or flat)

    # a run killed mid-epoch 3 resumes from its epoch-2 checkpoint (queue, pointer, teacher) identically
    class Killed(Exception):
        pass

    steps = 3000 // 256

    def kill(step):
        if step == 2 * steps + 3:
            raise Killed

    with pytest.raises(Killed):
        engine.train(cfg, tmp_path / "killed", step_hook=kill)
    resumed = engine.train(cfg, tmp_path / "killed", resume=True)
    assert resumed["acc"] == result["acc"]
    a = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["method"]
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["method"]
    for name in ("queue.ptr", "queue.data", "student.prototypes", "teacher.prototypes"):
        assert torch.equal(a[name], b[name]), name


# ---- paired significance test (supplement Table 3 style) -----------------------------------------
def test_mcnemar_matches_acc_and_detects_a_better_method():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 2000)
    noisy = lambda p: np.where(rng.random(y.size) < p, rng.integers(0, 5, y.size), y)  # noqa: E731
    good, bad = (noisy(0.2) * 3 + 1) % 5, noisy(0.6)
    assert stats.matched_correct(y, good).mean() == pytest.approx(cluster_acc(y, good))
    assert stats.paired_test(y, [good], [bad])["p_value"] < 1e-6
    same = stats.paired_test(y, [good, good], [good, good])
    assert same["p_value"] == 1.0 and same["b"] == same["c"] == 0
    small = stats.mcnemar(np.array([1, 1, 1, 0], bool), np.array([0, 0, 0, 0], bool))
    assert small["test"] == "exact binomial" and small["p_value"] == pytest.approx(0.25)
    table = stats.pairwise_pvalues(y, {"good": [good], "bad": [bad], "good2": [good]})
    assert np.isnan(table.loc["good", "good"]) and table.loc["good", "bad"] == table.loc["bad", "good"]


def test_pvalue_report_reads_the_runs_predictions(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 1000)
    rows = []
    for name, p in (("tcc", 0.1), ("worse", 0.7)):
        for seed in (0, 1):
            pred = np.where(rng.random(y.size) < p, rng.integers(0, 5, y.size), y)
            run = tmp_path / name / str(seed)
            run.mkdir(parents=True)
            np.savez(run / "predictions.npz", labels=y, posterior=np.eye(5, dtype=np.float16)[pred])
            rows.append({"name": name, "seed": seed, "acc": cluster_acc(y, pred), "run_dir": str(run)})
    md, table = stats.pvalue_report(rows, "tcc", profile="smoke")
    assert table.loc["tcc", "worse"] < 1e-6 and np.isnan(table.loc["tcc", "tcc"])
    assert md.startswith("McNemar p-values (pooled over seeds [0, 1], profile smoke)")
    assert "- tcc vs worse: McNemar b=" in md and "paired t on ACC: mean diff +" in md
    with pytest.raises(ValueError, match="reference 'moco' has no runs"):
        stats.pvalue_report(rows, "moco", profile="smoke")


# ---- label-free diagnostics: duplicate prototypes, H(q|x), mean max q, `collapsed` -----------------
def test_duplicate_pairs_and_posterior_entropy_on_known_inputs():
    from mixlab.metrics import duplicate_pairs, posterior_entropy

    e = np.eye(4)
    protos = np.stack([e[0], 3 * e[0], e[1], e[1] + 0.1 * e[2], e[2], -e[0]])
    # cos: (0, 1) = 1; (2, 3) = 1/sqrt(1.01) = 0.995; (3, 4) = 0.0995; (0, 5) = -1
    assert duplicate_pairs(protos) == 2
    assert duplicate_pairs(protos, threshold=0.999) == 1
    assert duplicate_pairs(torch.as_tensor(protos), threshold=-1.5) == 15  # all 6 * 5 / 2 pairs
    assert duplicate_pairs(np.eye(10)) == 0
    q = np.array([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    ent = posterior_entropy(q)
    np.testing.assert_allclose(ent, [math.log(4), 0.0, math.log(2)], atol=1e-12)   # 0 log 0 = 0, no nan
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(posterior_entropy(np.log(q), log=True), ent, atol=1e-12)
    t = posterior_entropy(torch.log(torch.as_tensor(q, dtype=torch.float32)), log=True)
    assert isinstance(t, torch.Tensor) and t.shape == (3,)
    torch.testing.assert_close(t, torch.as_tensor(ent, dtype=torch.float32))


def _epoch(m, x, steps=2):
    m.start_epoch(1)
    for _ in range(steps):
        m.training_step([x, x], torch.arange(len(x)), "main")
    ctx = EpochContext(epoch=1, map_dataset=None, all_reduce=lambda t: t, log=lambda s: None)
    return m.end_epoch(ctx)


def test_epoch_log_flags_duplicate_prototypes_and_flat_posteriors():
    K = 10
    torch.manual_seed(0)
    x = torch.randn(64, 2) * 5
    # identical prototypes: every q(k|x) is exactly uniform and all K(K-1)/2 pairs are duplicates
    m = TCC(resolve("tcc", "smoke").params, _spec())
    with torch.no_grad():
        m.student.prototypes.copy_(m.student.prototypes[0].expand(K, -1))
    logs = _epoch(m, x)
    assert logs["dup_prototype_pairs"] == K * (K - 1) // 2 and logs["collapsed"] is True
    assert logs["train_q_entropy"] == pytest.approx(math.log(K), abs=1e-5)
    assert logs["train_q_max"] == pytest.approx(1 / K, abs=1e-6) and logs["train_q_max_below_half"] == 1.0
    # distinct (MMD simplex) prototypes and a tiny temperature: q is one-hot, nothing is flagged
    m = TCC(resolve("tcc", "smoke", {"method": {"assign_temperature": 1e-4}}).params, _spec())
    logs = _epoch(m, x)
    assert logs["dup_prototype_pairs"] == 0 and logs["collapsed"] is False
    assert logs["train_q_entropy"] < 0.05 and logs["train_q_max"] > 0.98 and logs["train_q_max_below_half"] < 0.05
    # one duplicated pair is enough for the flag, even with sharp q
    with torch.no_grad():
        m.student.prototypes[1] = m.student.prototypes[0] * 2.0
    logs = _epoch(m, x)
    assert logs["dup_prototype_pairs"] == 1 and logs["collapsed"] is True


def test_epoch_diagnostics_consume_no_random_numbers_and_change_no_state():
    torch.manual_seed(0)
    m = TCC(resolve("tcc", "smoke").params, _spec())
    x = torch.randn(32, 2) * 5
    m.training_step([x, x], torch.arange(32), "main")
    state = {k: v.clone() for k, v in m.state_dict().items()}
    rng = torch.get_rng_state()
    ctx = EpochContext(epoch=1, map_dataset=None, all_reduce=lambda t: t, log=lambda s: None)
    first = m.end_epoch(ctx)
    assert first == m.end_epoch(ctx)          # reading the diagnostics twice gives the same row
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    keys = {"dup_prototype_pairs", "train_q_entropy", "train_q_max", "train_q_max_below_half", "collapsed"}
    assert keys <= set(first)
