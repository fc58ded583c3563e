"""Behavioural tests of mixlab.mixture: identities from MiCE and SiamMM, checked numerically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import quad
from scipy.special import gammaln, iv

from mixlab.metrics import cluster_acc
from mixlab.mixture import (
    assign_nearest,
    elbo,
    kl_categorical,
    log_marginal,
    merge_clusters,
    mmd_algorithm2,
    mmd_centers,
    pca_kappa,
    posterior_and_elbo,
    spherical_kmeans,
    vmf_log_density,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
    vmf_mle,
    vmf_sample,
)
from mixlab.mixture.contrastive import info_nce


# --------------------------------------------------------------------------------------
# ELBO / posterior (MiCE Eq. 7-11)
# --------------------------------------------------------------------------------------
def _random_problem(B=64, K=7, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    log_prior = torch.log_softmax(torch.randn(B, K, generator=g, dtype=torch.float64) * 2, dim=-1)
    log_lik = torch.randn(B, K, generator=g, dtype=torch.float64) * scale - 5.0  # unnormalised scores
    log_q = torch.log_softmax(torch.randn(B, K, generator=g, dtype=torch.float64) * 2, dim=-1)
    return log_prior, log_lik, log_q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elbo_bounds_log_likelihood_with_kl_gap(seed):
    log_prior, log_lik, log_q = _random_problem(seed=seed)
    log_post, elbo_post = posterior_and_elbo(log_prior, log_lik)
    ll = log_marginal(log_prior, log_lik)
    # the exact posterior attains the log-likelihood (MiCE Eq. 8: KL gap is zero)
    torch.testing.assert_close(elbo_post, ll)
    torch.testing.assert_close(elbo(log_post, log_prior, log_lik), ll)
    torch.testing.assert_close(log_post.exp().sum(-1), torch.ones(len(ll), dtype=torch.float64))
    torch.testing.assert_close(log_post, torch.log_softmax(log_prior + log_lik, -1))
    # any other q: ELBO <= log-likelihood, gap == KL(q || posterior)
    e = elbo(log_q, log_prior, log_lik)
    assert torch.all(e <= ll + 1e-12)
    assert torch.all(ll - e > 1e-6)
    torch.testing.assert_close(ll - e, kl_categorical(log_q, log_post))
    # MiCE Eq. 7 form: E_q[log p(y|x,k)] - KL(q || p(k|x))
    torch.testing.assert_close(e, (log_q.exp() * log_lik).sum(-1) - kl_categorical(log_q, log_prior))


def test_elbo_degenerate_q_and_extreme_scores():
    log_prior, log_lik, _ = _random_problem(B=8, K=5, scale=1e4)  # would overflow outside log space
    log_post, elbo_post = posterior_and_elbo(log_prior, log_lik)
    assert torch.isfinite(elbo_post).all() and torch.isfinite(log_post.logsumexp(-1)).all()
    onehot = torch.full_like(log_prior, -math.inf)
    onehot[:, 0] = 0.0
    onehot.requires_grad_(True)
    e = elbo(onehot, log_prior, log_lik)
    torch.testing.assert_close(e, (log_prior + log_lik)[:, 0].detach())  # 0 log 0 = 0
    e.sum().backward()
    assert torch.isfinite(onehot.grad).all()
    assert torch.all(e <= elbo_post + 1e-9)
    assert torch.all(kl_categorical(log_post, log_post).abs() < 1e-9)


def test_elbo_numpy_in_numpy_out():
    log_prior, log_lik, log_q = (t.numpy() for t in _random_problem(B=4, K=3))
    log_post, e = posterior_and_elbo(log_prior, log_lik)
    assert isinstance(log_post, np.ndarray) and isinstance(e, np.ndarray) and e.shape == (4,)
    assert np.all(elbo(log_q, log_prior, log_lik) <= e + 1e-12)


# --------------------------------------------------------------------------------------
# MMD centers (MiCE Algorithm 2)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,d", [(2, 1), (3, 2), (4, 3), (10, 9), (10, 128), (20, 64), (65, 64), (100, 128)])
def test_mmd_centers_regular_simplex(K, d):
    w = mmd_centers(K, d).double()
    assert w.shape == (K, d) and mmd_centers(K, d).dtype == torch.float32
    torch.testing.assert_close(w.norm(dim=1), torch.ones(K, dtype=torch.float64), atol=1e-6, rtol=0)
    gram = w @ w.T
    off = gram[~torch.eye(K, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1.0 / (K - 1)), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-5, rtol=0)
    w64 = mmd_centers(K, d, dtype=torch.float64)  # in float64 the simplex is exact: sum 0 to rounding
    assert float(w64.sum(0).norm()) < 1e-12


def test_mmd_centers_seeded_and_algorithm2_layout():
    assert torch.equal(mmd_centers(6, 10, seed=3), mmd_centers(6, 10, seed=3))
    assert not torch.allclose(mmd_centers(6, 10, seed=3), mmd_centers(6, 10, seed=4))
    w = mmd_algorithm2(5, 7)
    assert np.allclose(w[0], np.eye(7)[0])  # omega_1 = e_1
    assert np.allclose(np.triu(w, k=1), 0.0)  # lower-triangular construction
    # a rotation of the same simplex: identical Gram matrices
    a = mmd_centers(5, 7, seed=None).double()
    b = mmd_centers(5, 7, seed=11).double()
    torch.testing.assert_close(a @ a.T, b @ b.T, atol=1e-6, rtol=0)
    # the simplex beats random unit vectors on the min-max objective
    r = torch.nn.functional.normalize(torch.randn(5, 7, generator=torch.Generator().manual_seed(0)), dim=1)
    off = lambda m: (m @ m.T)[~torch.eye(5, dtype=torch.bool)].max()  # noqa: E731
    assert off(a) < off(r.double())


def test_mmd_centers_too_many_raises():
    with pytest.raises(ValueError, match=r"K=10 MMD prototypes need K <= d\+1 \(d=8\)"):
        mmd_centers(10, 8)
    assert mmd_centers(1, 4).norm().item() == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------
# vMF normaliser, density, sampler, MLE (SiamMM Eq. 3-7, 16)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa", [1e-3, 0.1, 2.0, 20.0, 200.0])
def test_vmf_log_normalizer_circle_numerical(kappa):
    # d = 2: 1/c_2 = int_0^{2pi} exp(kappa cos t) dt (scaled by exp(-kappa) for stability)
    integral = quad(lambda t: math.exp(kappa * (math.cos(t) - 1.0)), 0.0, 2 * math.pi, limit=200)[0]
    assert vmf_log_normalizer(2, kappa) == pytest.approx(-(math.log(integral) + kappa), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("kappa", [1e-4, 0.5, 5.0, 50.0, 700.0, 1e4])
def test_vmf_log_normalizer_sphere_closed_form(kappa):
    # d = 3: c_3 = kappa / (4 pi sinh kappa); log sinh k = k + log1p(-exp(-2k)) - log 2
    expected = math.log(kappa) - math.log(4 * math.pi) - (kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2))
    assert vmf_log_normalizer(3, kappa) == pytest.approx(expected, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("d", [4, 10, 64])
@pytest.mark.parametrize("kappa", [0.5, 20.0, 300.0])
def test_vmf_density_integrates_to_one(d, kappa):
    # int_{S^{d-1}} f = |S^{d-2}| int_{-1}^{1} c_d e^{kappa t} (1 - t^2)^{(d-3)/2} dt = 1
    log_area = math.log(2) + (d - 1) / 2 * math.log(math.pi) - gammaln((d - 1) / 2)
    logc = vmf_log_normalizer(d, kappa)
    f = lambda t: math.exp(logc + log_area + kappa * t + (d - 3) / 2 * math.log1p(-t * t))  # noqa: E731
    # the mass sits near t = A_d(kappa); give quad the breakpoint
    total = quad(f, -1, 1, points=[vmf_mean_resultant_length(d, kappa)], limit=500)[0]
    assert total == pytest.approx(1.0, rel=1e-6)


def test_vmf_log_normalizer_stable_and_consistent():
    assert math.isfinite(vmf_log_normalizer(128, 1e4))
    k = np.array([0.0, 1e-12, 1e-3, 1.0, 100.0, 1e4, 1e7])
    for d in (128, 1024, 8192):
        v = vmf_log_normalizer(d, k)
        assert isinstance(v, np.ndarray) and np.all(np.isfinite(v))
        assert np.all(np.diff(v) <= 1e-9)  # d/dkappa log c_d = -A_d(kappa) <= 0
    # kappa -> 0 is continuous with the uniform density 1/|S^{d-1}|
    for d in (2, 3, 128, 1024):
        u = math.lgamma(d / 2) - math.log(2) - d / 2 * math.log(math.pi)
        assert vmf_log_normalizer(d, 0.0) == pytest.approx(u, rel=1e-12)
        assert vmf_log_normalizer(d, 1e-6) == pytest.approx(u, rel=1e-9)
    # agrees with the direct formula where scipy's unscaled iv is representable
    for d, kap in [(10, 3.0), (64, 30.0), (128, 100.0)]:
        direct = (d / 2 - 1) * math.log(kap) - d / 2 * math.log(2 * math.pi) - math.log(iv(d / 2 - 1, kap))
        assert vmf_log_normalizer(d, kap) == pytest.approx(direct, rel=1e-10)


def test_vmf_log_normalizer_torch_gradient():
    kappa = torch.tensor([0.5, 5.0, 50.0, 5000.0], dtype=torch.float64, requires_grad=True)
    out = vmf_log_normalizer(128, kappa)
    assert out.dtype == torch.float64
    out.sum().backward()
    eps = 1e-4
    k = kappa.detach().numpy()
    fd = (vmf_log_normalizer(128, k + eps) - vmf_log_normalizer(128, k - eps)) / (2 * eps)
    np.testing.assert_allclose(kappa.grad.numpy(), fd, rtol=1e-5)


def test_vmf_log_density_shapes_and_kinds():
    mu = np.eye(3)[:2]
    x = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    out = vmf_log_density(x, mu, np.array([1.0, 10.0]))
    assert out.shape == (3, 2)
    assert out[0, 0] == pytest.approx(vmf_log_normalizer(3, 1.0) + 1.0)
    assert out[2, 1] == pytest.approx(vmf_log_normalizer(3, 10.0))
    t = vmf_log_density(torch.tensor(x), torch.tensor(mu[0]), 2.0)
    assert isinstance(t, torch.Tensor) and t.shape == (3,)


@pytest.mark.parametrize("d,kappa", [(2, 1.0), (3, 10.0), (16, 50.0), (64, 200.0), (128, 1000.0)])
def test_vmf_sample_and_mle_recover_parameters(d, kappa):
    rng = np.random.default_rng(d)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    x = vmf_sample(mu, kappa, 20000, seed=1)
    assert x.shape == (20000, d)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    # E[mu^T x] = A_d(kappa) (sampler correctness, independent of the estimator)
    assert (x @ mu).mean() == pytest.approx(vmf_mean_resultant_length(d, kappa), abs=4e-3)
    mu_hat, kappa_hat = vmf_mle(x)
    assert mu_hat.shape == (d,) and float(mu_hat @ mu) > 0.995
    assert float(kappa_hat) == pytest.approx(kappa, rel=0.05)
    # numpy in -> numpy out; torch in -> torch out with the same dtype
    mu_t, kappa_t = vmf_mle(torch.tensor(x, dtype=torch.float32))
    assert isinstance(mu_t, torch.Tensor) and mu_t.dtype == torch.float32 and kappa_t.shape == ()
    assert float(kappa_t) == pytest.approx(float(kappa_hat), rel=1e-4)


def test_vmf_sample_deterministic_and_uniform_at_zero():
    mu = torch.tensor([0.0, 0.0, 1.0])
    a, b = vmf_sample(mu, 5.0, 100, seed=7), vmf_sample(mu, 5.0, 100, seed=7)
    assert isinstance(a, torch.Tensor) and torch.equal(a, b)
    u = vmf_sample(np.array([0.0, 0.0, 1.0]), 0.0, 20000, seed=0)
    assert np.abs(u.mean(0)).max() < 0.03  # uniform on S^2


def test_vmf_mle_soft_weights_and_labels():
    d, K = 8, 3
    mus = mmd_centers(K, d).double().numpy()
    kappas = [20.0, 60.0, 150.0]
    xs = [vmf_sample(mus[k], kappas[k], 4000, seed=10 + k) for k in range(K)]
    x = np.concatenate(xs)
    y = np.repeat(np.arange(K), 4000)
    resp = np.eye(K)[y]
    mu_w, kap_w = vmf_mle(x, resp)
    mu_l, kap_l = vmf_mle(x, labels=y)
    assert mu_w.shape == (K, d) and kap_w.shape == (K,)
    np.testing.assert_allclose(mu_w, mu_l)
    np.testing.assert_allclose(kap_w, kap_l)
    assert np.all(np.sum(mu_w * mus, axis=1) > 0.99)
    np.testing.assert_allclose(kap_w, kappas, rtol=0.06)
    # [N] weights: uniform == no weights; zero weights drop points
    _, k_all = vmf_mle(x)
    _, k_uni = vmf_mle(x, np.full(len(x), 0.3))
    assert float(k_uni) == pytest.approx(float(k_all))
    _, k0 = vmf_mle(x, (y == 0).astype(float))
    assert float(k0) == pytest.approx(kap_w[0])
    # soft responsibilities: a split of one cluster's weight leaves its estimate unchanged
    soft = np.concatenate([resp, 0.5 * resp[:, :1]], axis=1)
    mu_s, kap_s = vmf_mle(torch.tensor(x), torch.tensor(soft))
    assert isinstance(kap_s, torch.Tensor) and kap_s.shape == (K + 1,)
    assert float(kap_s[3]) == pytest.approx(kap_w[0])
    # an empty component is uniform (mu = 0, kappa = 0) rather than NaN
    mu_e, kap_e = vmf_mle(x, labels=y, K=K + 1)
    assert np.all(mu_e[K] == 0) and kap_e[K] == 0 and np.all(np.isfinite(kap_e))


def test_pca_kappa_recovers_effective_dimension():
    # vMF in a 4-dim subspace of R^64: plain Eq. 7 uses d = 64 and overestimates kappa;
    # Eq. 16 with d^PCA = 4 components recovers the true concentration.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((64, 4)))
    mu4 = np.array([1.0, 0, 0, 0])
    kappa = 20.0
    x = vmf_sample(mu4, kappa, 20000, seed=2) @ q.T
    _, k_full = vmf_mle(x)
    k_pca = pca_kappa(x, n_components=4)
    assert float(k_full) > 5 * kappa
    assert float(k_pca) == pytest.approx(kappa, rel=0.05)
    # with all components, Eq. 16 is Eq. 7; fewer components never increase ||r||, so kappa drops
    y = (x @ q[:, 1] > 0).astype(int)
    np.testing.assert_allclose(pca_kappa(x, labels=y, n_components=64), vmf_mle(x, labels=y)[1], rtol=1e-10)
    k_t = pca_kappa(torch.tensor(x), labels=torch.tensor(y), n_components=10)
    assert isinstance(k_t, torch.Tensor) and np.all(k_t.numpy() < vmf_mle(x, labels=y)[1])


def test_pca_kappa_keeps_the_shared_direction_of_a_tight_cluster():
    # Nearly parallel embeddings (an untrained network): the mean direction carries most of
    # ||r||, so Eq. 16 must project the uncentred r onto uncentred principal directions.
    # Centring first removed that direction and gave kappa ~ 1 instead of ~ 1000.
    rng = np.random.default_rng(0)
    x = vmf_sample(rng.standard_normal(128), 2000.0, 5000, seed=1)
    _, k_mle = vmf_mle(x)
    k_pca = pca_kappa(x, n_components=64)
    assert k_mle / 4 < k_pca <= k_mle


# --------------------------------------------------------------------------------------
# spherical k-means (faiss)
# --------------------------------------------------------------------------------------
def _vmf_mixture(K=5, d=16, n=300, kappa=50.0, seed=0):
    mus = mmd_centers(K, d, seed=seed).double().numpy()
    x = np.concatenate([vmf_sample(mus[k], kappa, n, seed=seed * 100 + k) for k in range(K)])
    return x, np.repeat(np.arange(K), n), mus


def test_spherical_kmeans_recovers_vmf_clusters():
    pytest.importorskip("faiss")
    x, y, mus = _vmf_mixture()
    c, lab = spherical_kmeans(x * 3.0, 5, iters=20, seed=0)  # unnormalised input is normalised
    assert isinstance(c, np.ndarray) and c.shape == (5, 16) and lab.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    assert cluster_acc(y, lab) == 1.0
    assert np.all((c @ mus.T).max(axis=0) > 0.99)
    c2, lab2 = spherical_kmeans(x, 5, iters=20, seed=0)
    assert np.array_equal(lab, lab2)  # deterministic in seed


def test_spherical_kmeans_uses_all_points():
    pytest.importorskip("faiss")
    # 2 broad clusters, 4000 points: faiss' default would subsample 2 x 256 points, so the
    # centroids would differ from the (normalised) means of all members at the ~1e-2 level
    x = np.concatenate(
        [vmf_sample(np.array([0, 0, 1.0]), 3.0, 2000, seed=0), vmf_sample(np.array([0, 0, -1.0]), 3.0, 2000, seed=1)]
    )
    c, lab = spherical_kmeans(x, 2, iters=50, seed=0)
    for k in range(2):
        m = x[lab == k].mean(0)
        np.testing.assert_allclose(c[k], m / np.linalg.norm(m), atol=2e-4)


def test_spherical_kmeans_warm_start_torch():
    pytest.importorskip("faiss")
    x, y, mus = _vmf_mixture(seed=1)
    xt = torch.tensor(x, dtype=torch.float32)
    c, lab = spherical_kmeans(xt, 5, iters=5, seed=3, init=torch.tensor(mus))
    assert isinstance(c, torch.Tensor) and isinstance(lab, torch.Tensor) and lab.dtype == torch.int64
    # warm start keeps the init's order (SiamMM consistent centroids): labels == truth
    assert torch.equal(lab, torch.tensor(y))
    assert torch.all((c.double() * torch.tensor(mus)).sum(1) > 0.99)
    with pytest.raises(ValueError, match="init must have shape"):
        spherical_kmeans(xt, 4, init=torch.tensor(mus))


def test_spherical_kmeans_rejects_too_many_clusters():
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="K=11 clusters need at least K points; got N=10"):
        spherical_kmeans(np.random.default_rng(0).standard_normal((10, 4)), 11)


def test_assign_nearest_topH():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8))
    c = rng.standard_normal((6, 8))
    sims, idx = assign_nearest(x, c, H=3)
    assert sims.shape == (50, 3) and idx.dtype == np.int64
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx[:, 0], cos.argmax(1))
    np.testing.assert_allclose(sims, np.sort(cos, axis=1)[:, ::-1][:, :3], atol=1e-5)
    st, it = assign_nearest(torch.tensor(x), torch.tensor(c))
    assert isinstance(it, torch.Tensor) and it.shape == (50, 1)
    with pytest.raises(ValueError):
        assign_nearest(x, c, H=7)


# --------------------------------------------------------------------------------------
# cluster merging (SiamMM Eq. 11)
# --------------------------------------------------------------------------------------
def test_merge_clusters_merges_near_duplicates_only():
    rng = np.random.default_rng(0)
    base = mmd_centers(8, 16).double().numpy()
    dup = base[[1, 4]] + 0.01 * rng.standard_normal((2, 16))
    dup /= np.linalg.norm(dup, axis=1, keepdims=True)
    C = np.concatenate([base, dup])  # clusters 8, 9 duplicate 1, 4
    sizes = np.array([5, 10, 5, 5, 30, 5, 5, 5, 30, 10], dtype=float)
    new, old_to_new = merge_clusters(C, -1.5, sizes=sizes)
    assert old_to_new.dtype == np.int64
    np.testing.assert_array_equal(old_to_new, [0, 1, 2, 3, 4, 5, 6, 7, 1, 4])
    assert new.shape == (8, 16)
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0)
    # untouched clusters are unchanged; merged ones are the size-weighted mean, renormalised
    keep = [0, 2, 3, 5, 6, 7]
    np.testing.assert_allclose(new[keep], C[keep])
    m1 = (10 * C[1] + 30 * C[8]) / 40
    np.testing.assert_allclose(new[1], m1 / np.linalg.norm(m1))
    # a very negative zeta merges nothing; equidistant centroids (SE = 0) never merge
    new2, o2 = merge_clusters(C, -10.0)
    np.testing.assert_array_equal(o2, np.arange(10))
    _, o3 = merge_clusters(mmd_centers(8, 16), 0.5)
    assert torch.equal(o3, torch.arange(8))
    _, o4 = merge_clusters(C[:2], 5.0)
    np.testing.assert_array_equal(o4, [0, 1])


def test_merge_clusters_raw_resultants_and_modes():
    # Merging the r_k of Eq. 5 with cluster sizes (normalize=False) gives the r of the union
    x, y, _ = _vmf_mixture(K=3, d=8, n=200, kappa=30.0)
    y = np.where(np.arange(len(y)) % 2 == 0, y, y + 3)  # split each true cluster in two
    r = np.stack([x[y == k].mean(0) for k in range(6)])
    sizes = np.bincount(y)
    new, o = merge_clusters(r, -1.0, sizes=sizes, normalize=False)
    np.testing.assert_array_equal(o, [0, 1, 2, 0, 1, 2])
    for k in range(3):
        np.testing.assert_allclose(new[k], x[o[y] == k].mean(0), atol=1e-12)
    # torch in -> torch out; "pairs" halves K at most, "components" chains transitively
    pts = torch.nn.functional.normalize(torch.randn(40, 2, generator=torch.Generator().manual_seed(0)), dim=1)
    cp, op = merge_clusters(pts, 0.0)
    assert isinstance(cp, torch.Tensor) and op.dtype == torch.int64
    assert cp.shape[0] >= 20 and set(op.tolist()) == set(range(cp.shape[0]))
    cc, oc = merge_clusters(pts, 0.0, mode="components")
    assert cc.shape[0] < cp.shape[0]


def test_merge_clusters_large_k_path_matches_dense():
    rng = np.random.default_rng(1)
    C = rng.standard_normal((300, 8))
    dense = merge_clusters(C, -1.2)
    sparse = merge_clusters(C, -1.2, max_dense=10, knn=299, n_sample_pairs=2_000_000)
    np.testing.assert_array_equal(dense[1], sparse[1])


def test_info_nce_with_a_queue_or_the_batch_is_cross_entropy_on_the_positive():
    g = torch.Generator().manual_seed(0)
    q, k, queue = (F.normalize(torch.randn(n, 8, generator=g), dim=1) for n in (6, 6, 20))
    with_queue = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], 1) / 0.2
    torch.testing.assert_close(info_nce(q, k, queue, 0.2), -F.cross_entropy(with_queue, torch.zeros(6, dtype=torch.long),
                                                                            reduction="none"))
    in_batch = -F.cross_entropy(q @ k.T / 0.2, torch.arange(6), reduction="none")  # the other keys as negatives
    torch.testing.assert_close(info_nce(q, k, None, 0.2), in_batch)
    torch.testing.assert_close(info_nce(q, k, queue[:0], 0.2), in_batch)           # an empty queue: the batch
    torch.testing.assert_close(info_nce(3 * q, 2 * k, 5 * queue, 0.2), info_nce(q, k, queue, 0.2))  # normalized here
    assert not torch.allclose(info_nce(3 * q, 2 * k, queue, 0.2, normalize=False), info_nce(q, k, queue, 0.2))


# --------------------------------------------------------------------------------------
# Memory: chunked sufficient statistics and blocked pair distances equal the dense computation
# (SiamMM with K0 in the thousands on N = 70,000 must not hold [N, K] or [K^2, d] arrays)
# --------------------------------------------------------------------------------------
def _clustered_sphere(N=2000, K=300, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(K, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, K, (N,), generator=g)
    x = F.normalize(centers[labels] + 0.3 * torch.randn(N, d, generator=g, dtype=torch.float64), dim=1)
    return x, labels


@pytest.mark.parametrize("chunk", [1, 7, 256, 5000])
def test_sparse_and_hard_resultants_equal_the_dense_weight_matrix(chunk):
    N, K, H = 2000, 300, 5
    x, labels = _clustered_sphere(N, K)
    g = torch.Generator().manual_seed(1)
    idx = torch.stack([torch.randperm(K, generator=g)[:H] for _ in range(N)])  # distinct per row
    w = torch.softmax(torch.randn(N, H, generator=g, dtype=torch.float64) * 3, dim=1)
    dense = torch.zeros(N, K, dtype=torch.float64).scatter_(1, idx, w)         # the [N, K] reference
    onehot = F.one_hot(labels, K).double()
    for got, ref in (
        (vmf_mle(x, w, index=idx, K=K, chunk_size=chunk), vmf_mle(x, dense)),
        (vmf_mle(x, labels=labels, K=K), vmf_mle(x, onehot)),
    ):
        torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[1], ref[1], rtol=1e-9, atol=1e-9)
    for kwargs, ref_w in (({"weights": w, "index": idx, "chunk_size": chunk}, dense), ({"labels": labels}, onehot)):
        got = pca_kappa(x, K=K, n_components=6, **kwargs)
        torch.testing.assert_close(got, pca_kappa(x, ref_w, n_components=6), rtol=1e-9, atol=1e-9)
    # an empty component (no weight anywhere) gets mu = 0 and kappa = 0, as with the dense matrix
    mu, kappa = vmf_mle(x, w, index=idx.clamp(max=K - 2), K=K, chunk_size=chunk)
    assert float(mu[K - 1].abs().sum()) == 0.0 and float(kappa[K - 1]) == 0.0
    with pytest.raises(ValueError, match="index"):
        vmf_mle(x, w, index=idx[:, :2], K=K)


def _dense_pairs(C):
    """The O(K^2 d) reference: every pair's distance by einsum over gathered rows."""
    mu = C / np.linalg.norm(C, axis=1, keepdims=True)
    i, j = np.triu_indices(len(mu), k=1)
    return i, j, np.sqrt(np.clip(2.0 - 2.0 * np.einsum("pd,pd->p", mu[i], mu[j]), 0.0, None))


@pytest.mark.parametrize("block", [64, 4096, 1 << 20])
def test_blocked_pair_distances_and_merging_equal_the_dense_computation(monkeypatch, block):
    from mixlab.mixture import merge

    monkeypatch.setattr(merge, "_BLOCK_ELEMENTS", block)  # 64: ~hundreds of blocks of < 1 row each
    rng = np.random.default_rng(0)
    C = rng.standard_normal((300, 16))
    C[:100] += 3 * rng.standard_normal(16)                 # a crowded region: uneven distances
    i, j, dist = _dense_pairs(C)
    gi, gj, gz, gd = merge.pairwise_zscores(C)
    np.testing.assert_array_equal(gi, i)
    np.testing.assert_array_equal(gj, j)
    np.testing.assert_allclose(gd, dist, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gz, (dist - dist.mean()) / dist.std(), rtol=0, atol=1e-9)
    assert merge.distance_threshold(C, -1.2) == pytest.approx(dist.mean() - 1.2 * dist.std(), abs=1e-12)
    # merging: the same pairs pass, so the same mapping and centroids as Eq. 11 on the dense array
    thr = dist.mean() - 1.2 * dist.std()
    keep = dist < thr
    parent, used = np.arange(len(C)), np.zeros(len(C), bool)
    for p in np.argsort(dist[keep], kind="stable"):
        a, b = i[keep][p], j[keep][p]
        if not used[a] and not used[b]:
            used[a] = used[b] = True
            parent[b] = a
    _, first, inv = np.unique(parent, return_index=True, return_inverse=True)
    ref = np.argsort(np.argsort(first))[inv]
    sizes = rng.random(len(C))
    new, old_to_new = merge.merge_clusters(C, -1.2, sizes=sizes)
    np.testing.assert_array_equal(old_to_new, ref)
    assert len(new) == len(C) - used.sum() // 2 < len(C)
    np.testing.assert_array_equal(merge.merge_clusters(C, -1.2, sizes=sizes, mode="components")[1],
                                  merge.merge_clusters(C, -1.2, sizes=sizes, mode="components", max_dense=10**6)[1])


def test_merging_holds_no_pairs_by_dimension_array():
    """K = 1500 centroids in d = 128: the dense pairs x dimension arrays of the old code took
    2 x K^2/2 x d x 8 bytes = 2.1 GiB; the blocked computation stays below 64 MiB of numpy memory."""
    import tracemalloc

    from mixlab.mixture import merge

    C = np.random.default_rng(0).standard_normal((1500, 128))
    tracemalloc.start()
    try:
        merge.distance_threshold(C, -1.2)
        merge.merge_clusters(C, -1.2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
