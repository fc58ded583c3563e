# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # EM and the ELBO: the mathematics the methods share
#
# A primer in the order a student needs it: EM for a Gaussian mixture (§1), the same EM on the
# sphere with von Mises–Fisher components (§2), MiCE's conditional ELBO and its special cases (§3),
# MMD prototypes (§4), NMM's sigmoid "densities" (§5), TCC's uniform-prior ELBO with Gumbel-softmax (§6).
#
# Every claim is followed by a cell that checks it on random data **with the same `mixlab.mixture`
# functions the methods train with**, prints the gap, and asserts it is below a tolerance (a wrong
# identity fails the notebook). The gaps are written to `results_dir/em_elbo_primer/checks.json`.
# Papers (equation numbers are theirs): MiCE, Tsai, Li & Zhu, "MiCE: Mixture of Contrastive Experts for Unsupervised Image Clustering", ICLR 2021; SiamMM, Wang, Huang & Liang (Meta AI), "SiamMM: A Mixture Model Perspective on Deep Unsupervised Learning", arXiv 2024;
# NMM, Tissera et al., "Neural Mixture Models with Expectation-Maximization for End-to-end Deep Clustering"; TCC, Shen et al., "You Never Cluster Alone", NeurIPS 2021 (supplementary material).

# %% tags=["parameters"]
profile = "smoke"
seeds = [0]
runs_dir = "runs"
results_dir = "results"
figures_dir = "figures"
seed = 0
n_mc = 20_000  # Monte-Carlo sample size of the stochastic checks (Gumbel, NMM integral, vMF normaliser)

# %%
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar

from mixlab import io, viz
from mixlab.data.synthetic import blobs2d
from mixlab.mixture import (
    elbo,
    kl_categorical,
    log_marginal,
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
from mixlab.mixture import gmm
from mixlab.provenance import provenance

torch.set_num_threads(1)  # the checks are tiny: one thread avoids contention on a shared 2-core machine
t_start = time.time()
f64 = torch.float64
out_dir = Path(results_dir) / "em_elbo_primer"
CHECKS: dict[str, dict] = {}


def check(name: str, gap: float, tol: float) -> None:
    """Record a numerical gap, print it, write checks.json, and fail loudly if gap > tol."""
    gap = float(gap)
    passed = bool(np.isfinite(gap) and gap <= tol)
    CHECKS[name] = {"gap": gap, "tol": tol, "passed": passed}
    io.write_json(out_dir / "checks.json", CHECKS)
    print(f"{'ok  ' if passed else 'FAIL'} {name:<48s} gap = {gap:.2e}   (tol {tol:.0e})")
    assert passed, f"{name}: gap {gap:.3e} exceeds tolerance {tol:.0e}"


def rng_for(tag: str) -> tuple[np.random.Generator, torch.Generator]:
    """Independent, reproducible streams per section (numpy and torch) from `seed`."""
    s = (seed * 1_000_003 + sum(map(ord, tag))) % 2**31
    return np.random.default_rng(s), torch.Generator().manual_seed(s)


print("profile", profile, "| seed", seed, "| n_mc", n_mc)

# %% [markdown]
# ## 1. EM for a Gaussian mixture
#
# Data $x$, latent cluster $k\in\{1..K\}$, joint $p(x,k)=\pi_k\,\mathcal N(x\mid m_k,S_k)$.
# For **any** distribution $q(k)$ with $q_k>0$ where the joint is, Jensen's inequality for the concave $\log$ gives
#
# $$\log p(x)=\log\sum_k q_k\frac{p(x,k)}{q_k}\;\ge\;\sum_k q_k\log\frac{p(x,k)}{q_k}=:\mathrm{ELBO}(q).$$
#
# The gap is exactly a KL divergence: since $p(x,k)=p(x)\,p(k\mid x)$,
#
# $$\mathrm{ELBO}(q)=\log p(x)-\mathrm{KL}\big(q\,\|\,p(k\mid x)\big).$$
#
# These are MiCE Eq. (7) / App. A.1 and TCC supplement Eq. (1) with other names. Check on random
# log-priors, log-likelihoods and $q$ (`elbo`, `log_marginal`, `kl_categorical`, `posterior_and_elbo`
# from `mixlab/mixture/em.py`):

# %%
rng, gen = rng_for("elbo")
B, K = 512, 6
log_prior = torch.log_softmax(3 * torch.randn(B, K, generator=gen, dtype=f64), -1)
log_lik = 10 * torch.randn(B, K, generator=gen, dtype=f64)  # any real scores
log_q = torch.log_softmax(4 * torch.randn(B, K, generator=gen, dtype=f64), -1)
log_q[:8, 0] = -math.inf  # q may put zero mass on a cluster
log_q = torch.log_softmax(log_q, -1)

lp = log_marginal(log_prior, log_lik)
L = elbo(log_q, log_prior, log_lik)
log_post, elbo_at_post = posterior_and_elbo(log_prior, log_lik)
print("smallest gap log p(x) - ELBO(q):", float((lp - L).min()))
check("1.jensen: ELBO(q) <= log p(x)", (L - lp).max().clamp_min(0), 1e-12)
check("1.gap: log p - ELBO = KL(q || posterior)", (lp - L - kl_categorical(log_q, log_post)).abs().max(), 1e-10)
check("1.estep: ELBO(posterior) = log p(x)", (elbo(log_post, log_prior, log_lik) - lp).abs().max(), 1e-10)
check("1.estep: posterior_and_elbo returns log p(x)", (elbo_at_post - lp).abs().max(), 1e-12)

# %% [markdown]
# **EM** maximises $\ell(\theta)=\sum_n\log p(x_n\mid\theta)$ by coordinate ascent on $\mathrm{ELBO}(q,\theta)$:
#
# * E-step: $q^{t}=p(k\mid x,\theta^t)$ (Bayes' rule). The gap closes: $\mathrm{ELBO}(q^t,\theta^t)=\ell(\theta^t)$.
# * M-step: $\theta^{t+1}=\arg\max_\theta Q(\theta\mid\theta^t)$, $Q=\sum_n\sum_k q^t_{nk}\log p(x_n,k\mid\theta)$ (NMM Eq. 1–2),
#   which differs from $\mathrm{ELBO}(q^t,\theta)$ by the entropy of $q^t$ (constant in $\theta$). For the
#   Gaussian mixture it is closed form: $\pi_k=N_k/N$, $m_k=\sum_n q_{nk}x_n/N_k$, $S_k=\sum_n q_{nk}(x_n-m_k)(x_n-m_k)^\top/N_k$.
#
# Hence $\ell(\theta^{t+1})\ \ge\ \mathrm{ELBO}(q^t,\theta^{t+1})\ \ge\ \mathrm{ELBO}(q^t,\theta^t)=\ell(\theta^t)$:
# **the log-likelihood never decreases**. We check both inequalities at every iteration on a 1-D and a 2-D
# mixture (`mixlab/mixture/gmm.py`, whose E-step is `posterior_and_elbo`).

# %%
rng, gen = rng_for("gmm")
x1 = torch.as_tensor(np.concatenate([rng.normal(-2, 0.6, 150), rng.normal(0.5, 1.0, 200), rng.normal(3, 0.5, 100)]))
x2 = blobs2d(n=600, k=3, std=1.0, radius=2.0, seed=seed)["images"].double()
em_iters = 40


def em_with_certificates(x, K, iters):
    """Run EM, returning per-iteration mean log-likelihood and the two gaps of the chain above."""
    params = gmm.gmm_init(x, K, seed=seed)
    ll, worst_m, worst_e = [], 0.0, 0.0
    for _ in range(iters):
        log_q, ll_n = gmm.gmm_e_step(x, params)  # E-step: exact posterior, ELBO = log-likelihood
        new = gmm.gmm_m_step(x, log_q.exp(), reg=0.0)  # M-step: exact argmax of Q
        elbo_old = elbo(log_q, *gmm.gmm_log_joint(x, params)).mean()
        elbo_new = elbo(log_q, *gmm.gmm_log_joint(x, new)).mean()
        ll_new = gmm.gmm_e_step(x, new)[1].mean()
        worst_m = max(worst_m, float(elbo_old - elbo_new))  # M-step must not lower the ELBO
        worst_e = max(worst_e, float(elbo_new - ll_new))  # ELBO must stay below the new log-lik
        ll.append(float(ll_n.mean()))
        params = new
    ll.append(float(gmm.gmm_e_step(x, params)[1].mean()))
    return params, np.array(ll), worst_m, worst_e


fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for ax, x, K, title in [(axes[0], x1, 3, "1-D, K=3"), (axes[1], x2, 3, "2-D, K=3")]:
    params, ll, worst_m, worst_e = em_with_certificates(x, K, em_iters)
    ax.plot(ll, ".-")
    ax.set(title=f"EM log-likelihood per point ({title})", xlabel="iteration", ylabel=r"$\ell(\theta^t)/N$")
    tag = title.split(",")[0]
    check(f"1.em {tag}: M-step raises ELBO(q^t, .)", max(worst_m, 0.0), 1e-10)
    check(f"1.em {tag}: ELBO(q^t, theta^t+1) <= l(theta^t+1)", max(worst_e, 0.0), 1e-10)
    check(f"1.em {tag}: log-likelihood never decreases", max(0.0, -np.diff(ll).min()), 1e-10)
    print(f"   {tag}: l/N from {ll[0]:.4f} to {ll[-1]:.4f}")
grid = torch.linspace(-5, 6, 400, dtype=f64)
params1 = em_with_certificates(x1, 3, em_iters)[0]
axes[2].hist(x1.numpy(), bins=40, density=True, color="0.8")
axes[2].plot(grid, log_marginal(*gmm.gmm_log_joint(grid, params1)).exp(), "k", label="mixture")
for k in range(3):
    lk = params1.log_pi[k] + gmm.gaussian_log_density(grid, params1.means[k : k + 1], params1.covs[k : k + 1])[:, 0]
    axes[2].plot(grid, lk.exp(), "--", lw=1)
axes[2].set(title="fitted 1-D mixture", xlabel="x")
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_gmm_loglik", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# ## 2. von Mises–Fisher mixtures on the sphere
#
# Embeddings are $\ell_2$-normalised, so the mixtures live on $S^{d-1}$. The vMF density (SiamMM Eq. 3–4) is
#
# $$f(v\mid\mu,\kappa)=c_d(\kappa)\,e^{\kappa\mu^\top v},\qquad c_d(\kappa)=\frac{\kappa^{d/2-1}}{(2\pi)^{d/2}I_{d/2-1}(\kappa)},\tag{3–4}$$
#
# $I_\nu$ the modified Bessel function. $\kappa=0$ is uniform; large $\kappa$ concentrates around $\mu$.
# Checks: it integrates to 1 (quadrature on the circle, Monte Carlo in $d=10$); $d=3$ has the closed
# form $c_3=\kappa/(4\pi\sinh\kappa)$; `vmf_log_normalizer` agrees with 50-digit arithmetic for large $d$ and $\kappa$
# ($d=128,\kappa=10^4$; $d=64,\kappa=50$; $d=512,\kappa=1$, where `scipy.special.ive` underflows and an asymptotic series takes over).

# %%
rng, gen = rng_for("vmf")
theta = np.linspace(0, 2 * np.pi, 2048, endpoint=False)
circle = np.stack([np.cos(theta), np.sin(theta)], 1)
mu0 = np.array([1.0, 0.0])
kappas = [0.0, 1.0, 4.0, 16.0]
fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
worst = 0.0
for kap in kappas:
    dens = np.exp(vmf_log_density(circle, mu0, kap))
    worst = max(worst, abs(dens.sum() * (2 * np.pi / len(theta)) - 1.0))
    ax[0].plot(theta, dens, label=fr"$\kappa={kap:g}$")
    r = 1 + dens
    ax[1].plot(r * circle[:, 0], r * circle[:, 1])
ax[0].set(xlabel=r"angle to $\mu$", ylabel="density", title="vMF on the circle (d = 2)")
ax[0].legend()
ax[1].plot(circle[:, 0], circle[:, 1], "k", lw=0.5)
ax[1].set(aspect="equal", title=r"$(1+f)\,v$ around $S^1$")
ax[1].axis("off")
viz.savefig(fig, "em_elbo_primer_vmf_circle", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()
check("2.vmf d=2: density integrates to 1", worst, 1e-10)

ks = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
closed = np.log(ks) - np.log(2 * np.pi) - ks - np.log1p(-np.exp(-2 * ks))  # log(kappa / (4 pi sinh kappa))
check("2.vmf d=3: log c_3 = log(kappa / (4 pi sinh kappa))", np.abs(vmf_log_normalizer(3, ks) - closed).max(), 1e-10)

import mpmath  # noqa: E402  (arbitrary precision reference; a dependency of torch's sympy)

mpmath.mp.dps = 50
worst = 0.0
for d, kap in [(128, 1e4), (512, 1.0), (64, 50.0)]:
    nu = d / 2 - 1
    ref = nu * mpmath.log(kap) - d / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(nu, kap))
    worst = max(worst, abs(vmf_log_normalizer(d, kap) - float(ref)) / abs(float(ref)))
check("2.vmf large d, kappa: log c_d vs 50-digit reference (rel)", worst, 1e-8)

d, kap = 10, 5.0
u = rng.standard_normal((n_mc, d))
u /= np.linalg.norm(u, axis=1, keepdims=True)
mu10 = np.eye(d)[0]
area = 2 * np.pi ** (d / 2) / math.gamma(d / 2)
vals = area * np.exp(vmf_log_density(u, mu10, kap))
se = vals.std() / np.sqrt(n_mc)
print(f"   d=10 Monte-Carlo integral = {vals.mean():.4f} +- {se:.4f}")
check("2.vmf d=10: MC integral = 1 (in standard errors)", abs(vals.mean() - 1) / se, 4.0)

# %% [markdown]
# **Maximum likelihood** (Banerjee et al. 2005; SiamMM Eq. 5–7). With weights $w_i=p(k\mid v_i)$ the
# weighted log-likelihood is $\sum_i w_i\big[\log c_d(\kappa)+\kappa\mu^\top v_i\big]$. Maximise over $\mu$ on the
# sphere with a Lagrange multiplier (the same computation as MiCE Eq. 14–16, §3): $\mu\propto\sum_i w_iv_i$.
# With the mean resultant $r=\sum_i w_iv_i/\sum_iw_i$,
#
# $$\hat\mu=\frac{r}{\|r\|}\ (6),\qquad \frac{\partial}{\partial\kappa}:\ -\frac{c_d'(\kappa)}{c_d(\kappa)}=A_d(\kappa):=\frac{I_{d/2}(\kappa)}{I_{d/2-1}(\kappa)}=\|r\|,
# \qquad \hat\kappa\approx\frac{\|r\|d-\|r\|^3}{1-\|r\|^2}\ (7).$$
#
# Eq. (7) is Banerjee's closed-form approximation to the root of $A_d(\kappa)=\|r\|$. Checks: the autograd
# derivative of `vmf_log_normalizer` is $-A_d$; the maximiser of $\log c_d(\kappa)+\kappa\|r\|$ is the root;
# Eq. (7) is within 5% of it for $d=3$ and 1% for $d\ge16$; `vmf_mle` recovers known $(\mu,\kappa)$ from `vmf_sample` draws.

# %%
kt = torch.tensor([0.5, 3.0, 40.0, 900.0], dtype=f64, requires_grad=True)
(g,) = torch.autograd.grad(vmf_log_normalizer(16, kt).sum(), kt)
check("2.mle: d/dkappa log c_d = -A_d(kappa)", (g + vmf_mean_resultant_length(16, kt.detach())).abs().max(), 1e-10)
h = 1e-5
fd = (vmf_log_normalizer(16, kt.detach() + h) - vmf_log_normalizer(16, kt.detach() - h)) / (2 * h)
check("2.mle: A_d matches finite differences", (fd + vmf_mean_resultant_length(16, kt.detach())).abs().max(), 1e-6)

worst_root, worst_banerjee = 0.0, {3: 0.0, 16: 0.0, 128: 0.0}
for d in (3, 16, 128):
    for R in (0.2, 0.5, 0.8, 0.95):
        root = brentq(lambda k: vmf_mean_resultant_length(d, k) - R, 1e-6, 1e6, xtol=1e-12)
        best = minimize_scalar(lambda k: -(vmf_log_normalizer(d, k) + k * R), bounds=(1e-6, 2 * root + 10), method="bounded",
                               options={"xatol": 1e-10}).x
        banerjee = (R * d - R**3) / (1 - R**2)
        worst_root = max(worst_root, abs(best - root) / root)
        worst_banerjee[d] = max(worst_banerjee[d], abs(banerjee - root) / root)
check("2.mle: argmax_kappa = root of A_d(kappa) = ||r|| (rel)", worst_root, 1e-5)
print("   worst relative error of Eq. 7 per d:", {d: round(e, 4) for d, e in worst_banerjee.items()})
check("2.mle: Banerjee Eq. 7 vs exact root, d=3 (rel)", worst_banerjee[3], 0.06)
check("2.mle: Banerjee Eq. 7 vs exact root, d>=16 (rel)", max(worst_banerjee[16], worst_banerjee[128]), 0.01)

d, kap_true, n = 5, 20.0, 4000
mu_true = rng.standard_normal(d)
mu_true /= np.linalg.norm(mu_true)
v = vmf_sample(mu_true, kap_true, n, seed=seed)
mu_hat, kap_hat = vmf_mle(v)
print(f"   kappa: true {kap_true}, Eq. 7 estimate {float(kap_hat):.2f}")
check("2.mle: recovered mean direction (1 - cos)", 1 - float(mu_hat @ mu_true), 1e-3)
check("2.mle: recovered kappa (rel)", abs(float(kap_hat) - kap_true) / kap_true, 0.1)

# %% [markdown]
# **PCA-κ (SiamMM App. C.1, Eq. 16).** Eq. (7) needs the dimension $d$, but embedding coordinates are
# correlated: if the data live in a $d'$-dimensional subspace, using the nominal $d$ inflates $\hat\kappa$ by
# roughly $d/d'$. SiamMM re-measures $\|r\|$ after projecting onto $d^{PCA}$ principal components:
#
# $$\hat\kappa_k^{PCA}=\frac{\|r_k^{PCA}\|d^{PCA}-\|r_k^{PCA}\|^3}{1-\|r_k^{PCA}\|^2}.\tag{16}$$
#
# Check: vMF samples in $d'=8$ rotated into $\mathbb R^{64}$. The nominal Eq. 7 is far off; `pca_kappa` with
# $d^{PCA}=8$ equals Eq. 7 computed in the intrinsic space (the projection keeps all of $r$).

# %%
d_eff, d_big, kap_true = 8, 64, 30.0
v8 = vmf_sample(np.eye(d_eff)[0], kap_true, 3000, seed=seed + 1)
Q = np.linalg.qr(rng.standard_normal((d_big, d_eff)))[0]  # orthonormal columns
v64 = v8 @ Q.T
k_intrinsic = float(vmf_mle(v8)[1])
k_nominal = float(vmf_mle(v64)[1])
k_pca = float(pca_kappa(v64, n_components=d_eff))
print(f"   kappa: true {kap_true} | Eq. 7 in R^8 {k_intrinsic:.2f} | Eq. 7 with nominal d=64 {k_nominal:.1f} | Eq. 16 {k_pca:.2f}")
check("2.pca: Eq. 16 (d_PCA = 8) = Eq. 7 in the intrinsic space", abs(k_pca - k_intrinsic) / k_intrinsic, 1e-6)
check("2.pca: Eq. 16 with d_PCA = d is Eq. 7", abs(float(pca_kappa(v64, n_components=d_big)) - k_nominal) / k_nominal, 1e-6)

# %% [markdown]
# **Spherical k-means is the hard-assignment limit.** A vMF mixture with equal weights and a shared
# $\kappa$ has posterior $p(k\mid v)=\mathrm{softmax}_k(\kappa\mu_k^\top v)$ (the $c_d(\kappa)$ cancel). Its argmax is the
# nearest centroid by cosine for every $\kappa$, and as $\kappa\to\infty$ the posterior becomes that one-hot
# vector, at rate $1-q_{\rm top}\le(K-1)e^{-\kappa m}$ with $m$ the cosine margin to the second-nearest centroid;
# the M-step (6) with one-hot weights is the normalised mean of the members. So
# `spherical_kmeans` (faiss) is EM in this limit, and its output is a fixed point of that hard EM.

# %%
K, d = 3, 3
means = mmd_centers(K, d, seed=seed, dtype=f64).numpy()
v = np.concatenate([vmf_sample(means[k], 12.0, 200, seed=seed + 10 + k) for k in range(K)])
C, labels = spherical_kmeans(v, K, iters=50, seed=seed)
mu_hard = vmf_mle(v, labels=labels, K=K)[0]
check("2.skm: centroids = Eq. 6 on k-means labels", np.abs(mu_hard - C).max(), 1e-5)
onehot = np.eye(K)[labels]
cos_sorted = np.sort(v @ C.T.astype(np.float64), 1)
margin = cos_sorted[:, -1] - cos_sorted[:, -2]  # cosine gap between the nearest and second-nearest centroid
gaps, worst_rate = [], -math.inf
for kap in (1.0, 10.0, 100.0, 1000.0):
    log_q_v, _ = posterior_and_elbo(np.full((len(v), K), -np.log(K)), vmf_log_density(v, C.astype(np.float64), kap))
    q_v = np.exp(log_q_v)
    mism = float((q_v.argmax(1) != labels).mean())
    mu_soft = vmf_mle(v, weights=q_v)[0]
    gaps.append(np.abs(q_v - onehot).sum(1).mean())
    # 1 - q(top) = sum_{k != top} e^{kappa (c_k - c_top)} / (1 + ...) <= (K - 1) e^{-kappa * margin}
    worst_rate = max(worst_rate, float((1 - q_v.max(1) - (K - 1) * np.exp(-kap * margin)).max()))
    print(f"   kappa={kap:6g}: mean |q - onehot|_1 = {gaps[-1]:.2e}, argmax mismatch {mism:.3f}, "
          f"max|mu_soft - mu_hard| = {np.abs(mu_soft - mu_hard).max():.2e}")
    check(f"2.skm: argmax posterior = k-means label (kappa={kap:g})", mism, 0.0)
check("2.skm: 1 - q(top) <= (K-1) exp(-kappa * margin), all kappa", max(worst_rate, 0.0), 1e-12)
check("2.skm: posterior -> one-hot monotonically in kappa", max(0.0, float(np.diff(gaps).max())), 0.0)

# %% [markdown]
# ## 3. MiCE: a mixture of contrastive experts
#
# Each image $x_n$ has a surrogate label $y_n$ (its index). Gating $p(z_n{=}k\mid x_n)=\mathrm{softmax}_k(\omega_k^\top g_n/\kappa)$ (4);
# expert $p(y_n\mid x_n,k)=\Phi(x_n,y_n,k)/Z(x_n,k)$ (5) with $\Phi=\exp\big(v_{y_n,k}^\top(f_{n,k}+\mu_k)/\tau\big)$ (6) and
# $Z(x_n,k)=\sum_{i=1}^N\Phi(x_n,y_i,k)$, a sum over the whole dataset. The **conditional ELBO** (7) is §1's
# bound with $y_n$ as the observation and the gating network as the prior (App. A.1):
#
# $$\log p(y_n\mid x_n)\ \ge\ \mathbb E_{q}[\log p(y_n\mid x_n,z_n)]-\mathrm{KL}\big(q(z_n\mid x_n,y_n)\,\|\,p(z_n\mid x_n)\big).\tag{7}$$
#
# On a small random "dataset" ($N=256$) $Z$ is tractable (Assumption A6), so we can check (7) exactly with
# `mixlab/mixture/mice.py`: `expert_logits` with the whole dataset as the queue gives every term of $Z$.

# %%
from mixlab.mixture import mice  # noqa: E402

rng, gen = rng_for("mice")
unit = lambda a: torch.nn.functional.normalize(a, dim=-1)  # noqa: E731
N, K, d, tau, kap_gate = 256, 4, 8, 0.5, 0.5
v = unit(torch.randn(N, K, d, generator=gen, dtype=f64))  # teacher embeddings v_{y_n,k}
f = unit(v + 0.5 * torch.randn(N, K, d, generator=gen, dtype=f64))  # student embeddings f_{n,k}
g = unit(torch.randn(N, d, generator=gen, dtype=f64))  # gating embeddings g_n
omega = mmd_centers(K, d, seed=seed, dtype=f64)  # fixed gating prototypes (§4)
mu = unit(torch.randn(K, d, generator=gen, dtype=f64))  # expert prototypes


def exact_expert_loglik(f, v, mu, tau, **kw):
    """log p(y_n | x_n, k) = log Phi - log Z with the exact Z (queue = all N teacher embeddings)."""
    lg = mice.expert_logits(f, v, mu, v, tau, **kw)  # [N, K, 1 + N]; column 1 + i is log Phi(x_n, y_i, k)
    return lg[..., 0] - torch.logsumexp(lg[..., 1:], -1), torch.logsumexp(lg[..., 1:], -1)


log_prior = mice.gating_log_prior(g, omega, kap_gate)
ll_exact, log_Z = exact_expert_loglik(f, v, mu, tau)
log_py = log_marginal(log_prior, ll_exact)  # log p(y_n | x_n)
log_post, _ = posterior_and_elbo(log_prior, ll_exact)  # Eq. 8
log_q = torch.log_softmax(torch.randn(N, K, generator=gen, dtype=f64), -1)  # an arbitrary q
L7 = elbo(log_q, log_prior, ll_exact)
check("3.mice Eq.7: ELBO <= log p(y|x)", (L7 - log_py).max().clamp_min(0), 1e-12)
check("3.mice Eq.7: gap = KL(q || p(z|x,y)) (App. A.1)", (log_py - L7 - kl_categorical(log_q, log_post)).abs().max(), 1e-10)

# %% [markdown]
# **The queue estimator.** $Z$ is intractable for real $N$, so MiCE keeps a queue $\mathbf q\in\mathbb R^{\nu\times K\times d}$ of past
# teacher embeddings and uses
#
# $$\hat Z(x_n,k)=\Phi(x_n,y_n,k)+\sum_{i=1}^{\nu}\exp\big(\mathbf q_{i,k}^\top(f_{n,k}+\mu_k)/\tau\big),\tag{9}$$
#
# the approximate posterior $q\propto p(k\mid x_n)\,\Phi/\hat Z$ (10) and the approximate ELBO $\tilde{\mathcal L}$ (11), i.e. §1's
# exact E-step applied to $\log\Phi-\log\hat Z$ (`mice.mice_objective` calls `posterior_and_elbo`). For any $q$,
# $\tilde{\mathcal L}=\mathcal L+\mathbb E_q[\log Z/\hat Z]$ (App. A.4). All vectors are unit, so every exponent lies in
# $[-2/\tau,2/\tau]$: $Z\le Ne^{2/\tau}$, $\hat Z\ge\nu e^{-2/\tau}$, hence **Theorem 1**'s bound
#
# $$\log\frac{Z}{\hat Z}\le\log N-\log\nu+\frac4\tau,\qquad \tilde{\mathcal L}\le\log p(y_n\mid x_n)+\log N-\log\nu+\frac4\tau .$$
#
# ($\hat Z$ of Eq. 9 has $\nu+1$ terms; App. A.4 writes $\nu$; the bound holds either way.) Checked for several $\nu,\tau$:

# %%
worst_dec, worst_ratio, worst_elbo, slack = 0.0, -math.inf, -math.inf, math.inf
for nu in (16, 64, 256):
    for t in (0.2, 0.5, 1.0):
        queue = unit(torch.randn(nu, K, d, generator=gen, dtype=f64))
        out = mice.mice_objective(f, v, g, mu, omega, queue, tau=t, kappa=kap_gate)  # Eq. 9-11
        ll_t, logZ_t = exact_expert_loglik(f, v, mu, t)
        logZhat = torch.logsumexp(mice.expert_logits(f, v, mu, queue, t), -1)
        q_t = out["log_q"].exp()
        L_exact = elbo(out["log_q"], out["log_prior"], ll_t)  # Eq. 7 at the same q
        ratio = (q_t * (logZ_t - logZhat)).sum(1)
        bound = math.log(N) - math.log(nu) + 4 / t
        worst_dec = max(worst_dec, float((out["elbo"] - L_exact - ratio).abs().max()))
        worst_ratio = max(worst_ratio, float((logZ_t - logZhat).max() - bound))
        worst_elbo = max(worst_elbo, float((out["elbo"] - log_marginal(out["log_prior"], ll_t)).max() - bound))
        slack = min(slack, float(bound - (logZ_t - logZhat).max()))
print(f"   smallest slack of the log Z/Zhat bound: {slack:.2f} nats (the bound is loose but uniform)")
check("3.mice Th.1: L~ = L + E_q[log Z/Zhat]", worst_dec, 1e-10)
check("3.mice Th.1: log Z/Zhat <= log N - log nu + 4/tau", max(worst_ratio, 0.0), 1e-12)
check("3.mice Th.1: L~ <= log p(y|x) + log N - log nu + 4/tau", max(worst_elbo, 0.0), 1e-12)

# %% [markdown]
# **The analytical μ update (Eq. 13, App. A.2).** Under A1 (hard $\hat q$) and A2 ($Z\equiv c$, self-normalised), only
# $\sum_n\hat q(z_n{=}k)\,v_{y_n,k}^\top\mu_k/\tau$ depends on $\mu_k$. Maximise it on $\|\mu_k\|=1$ with a Lagrange multiplier:
#
# $$\nabla_{\mu_k}\Big[\lambda(1-\mu_k^\top\mu_k)+\sum_n\hat q_{nk}v_{y_n,k}^\top\mu_k/\tau\Big]=-2\lambda\mu_k+\hat\mu_k/\tau=0\ (14\text{–}15),\quad
# \mu_k^\top\mu_k=1\ (16)\ \Rightarrow\ \lambda=\frac{\|\hat\mu_k\|}{2\tau},\ \ \mu_k=\frac{\hat\mu_k}{\|\hat\mu_k\|},\tag{13}$$
#
# $\hat\mu_k=\sum_{n:\hat z_n=k}v_{y_n,k}$. Check: `mice.analytical_mu` equals a numerical maximiser (L-BFGS) of the
# same objective built from `mice.expert_log_likelihood` (A2: `queue=None`), the Lagrange condition holds there,
# and with the queue (A2 dropped) Eq. 13 is *not* the maximiser any more.

# %%
z_hat = mice.hard_assignments(mice.mice_objective(f, v, g, mu, omega, None, tau=tau, kappa=kap_gate)["log_q"])  # A1
q_hard = torch.nn.functional.one_hot(z_hat, K).to(f64)
sums, counts = mice.assignment_sums(v, z_hat, K)
mu13, empty = mice.analytical_mu(sums, counts, mu)


def mu_objective(m, queue=None):
    """sum_n qhat_nk log p(y_n | x_n, k; mu): the part of the ELBO that depends on mu under A1."""
    return (q_hard * mice.expert_log_likelihood(f, v, m, queue, tau)).sum()


def numerical_argmax(queue=None):
    m = mu.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([m], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -mu_objective(m, queue)
        loss.backward()
        return loss

    opt.step(closure)
    return unit(m.detach())


mu_num = numerical_argmax()
check("3.mice Eq.13: analytical mu = numerical argmax (1 - cos)", float((1 - (mu13 * mu_num).sum(1)).max()), 1e-10)
m = mu13.clone().requires_grad_(True)
(grad,) = torch.autograd.grad((q_hard * mice.expert_logits(f, v, m, None, tau)[..., 0]).sum(), m)
# expert_logits normalises mu, so grad is the tangential part of mu_hat/tau: zero at the maximiser (Eq. 14-15)
check("3.mice Eq.14-16: tangential gradient vanishes at mu_k = mu_hat/||mu_hat||", float(grad.abs().max()), 1e-10)
lam = sums.norm(dim=1) / (2 * tau)
check("3.mice Eq.15: mu_hat / tau = 2 lambda mu_k with lambda = ||mu_hat||/(2 tau)", float((sums / tau - 2 * lam[:, None] * mu13).abs().max()), 1e-12)
mu_num_q = numerical_argmax(queue=unit(torch.randn(64, K, d, generator=gen, dtype=f64)))
print(f"   with a queue (A2 dropped) the argmax moves away from Eq. 13: 1 - cos = {float((1 - (mu13 * mu_num_q).sum(1)).max()):.2e}")

# %% [markdown]
# **Theorems 2–3: MoCo is MiCE under A3–A6.** A3: $\kappa\to\infty$, the prior is $1/K$; A4: one embedding shared by all
# experts ($f_{n,k}=f_n$, $v_{y_n,k}=v_{y_n}$); A5: no class-level term ($\mu$ dropped from $\Phi$). Then every expert is the
# same softmax classifier, so $p(y_n\mid x_n)=\exp(v_{y_n}^\top f_n/\tau)/\sum_i\exp(v_i^\top f_n/\tau)$ (Theorem 2, Eq. 1), the posterior is uniform
# (Lemma 1), and with A6 ($q$ = posterior) the approximate ELBO (11) *is* the InfoNCE term (2) of MoCo (Theorem 3).

# %%
f1, v1 = f[:, 0], v[:, 0]  # shared embeddings (A4)
fK, vK = f1[:, None].expand(N, K, d), v1[:, None].expand(N, K, d)
lp_A3 = mice.gating_log_prior(g, omega, kap_gate, uniform=True)
ll_A45, _ = exact_expert_loglik(fK, vK, mu, tau, class_level=False)
eq1 = torch.diagonal(torch.log_softmax(unit(f1) @ unit(v1).T / tau, -1))  # Eq. 1: log softmax over the N labels
check("3.mice Th.2: MiCE's p(y|x) = MoCo's softmax classifier (Eq. 1)", (log_marginal(lp_A3, ll_A45) - eq1).abs().max(), 1e-12)
queue = unit(torch.randn(128, K, d, generator=gen, dtype=f64))
queue = queue[:, :1].expand(-1, K, -1).clone()  # A4 for the queue as well
out = mice.mice_objective(fK, vK, g, mu, omega, queue, tau=tau, kappa=kap_gate, uniform_prior=True, class_level=False)
check("3.mice Lemma 1: posterior is uniform", (out["log_q"] + math.log(K)).abs().max(), 1e-12)
check("3.mice Th.3: L~ = InfoNCE (Eq. 2)", (out["elbo"] - mice.info_nce(f1, v1, queue[:, 0], tau)).abs().max(), 1e-12)

# %% [markdown]
# **Theorem 4: spherical k-means is MiCE under A1–A4.** With A2 (no $Z$), A3 (uniform prior) and A4 (shared
# embeddings, class-level term kept), $q(k\mid x_n,y_n)\propto\exp(v_{y_n}^\top\mu_k/\tau)$ — the $v^\top f$ term is common to all $k$ — so
# the hard assignment (A1) is the nearest prototype by cosine and Eq. 13 is the centroid step: one iteration of
# spherical k-means on the teacher embeddings. Check against faiss (`spherical_kmeans(..., iters=1, init=mu)`).

# %%
centers = mmd_centers(K, d, seed=seed + 1, dtype=f64).numpy()
vt = torch.as_tensor(np.concatenate([vmf_sample(centers[k], 8.0, 64, seed=seed + 20 + k) for k in range(K)]))
ft = unit(vt + 0.3 * torch.randn(vt.shape, generator=gen, dtype=f64))
mu0 = unit(torch.as_tensor(centers) + 0.6 * torch.randn(K, d, generator=gen, dtype=f64))  # prototypes to update
n_t = vt.shape[0]
out = mice.mice_objective(ft[:, None].expand(n_t, K, d), vt[:, None].expand(n_t, K, d), unit(torch.randn(n_t, d, generator=gen, dtype=f64)),
                          mu0, omega, None, tau=tau, kappa=kap_gate, uniform_prior=True)
z_mice = mice.hard_assignments(out["log_q"])
z_cos = (vt @ mu0.T).argmax(1)
check("3.mice Th.4: hard q = nearest prototype by cosine", float((z_mice != z_cos).double().mean()), 0.0)
mu_mice, _ = mice.analytical_mu(*mice.assignment_sums(vt, z_mice, K), mu0)
C1, _ = spherical_kmeans(vt.numpy(), K, iters=1, init=mu0.numpy())
check("3.mice Th.4: Eq. 13 = one spherical k-means step (faiss)", float(np.abs(mu_mice.numpy() - C1).max()), 1e-5)

# %% [markdown]
# ## 4. MMD prototypes (MiCE Algorithm 2)
#
# MiCE fixes the $K$ gating prototypes $\omega_k\in S^{d-1}$ to the centres of a Max-Mahalanobis
# distribution: the configuration that makes the **largest** pairwise inner product as small as possible.
# Why the optimum is $-1/(K-1)$: for unit vectors
#
# $$0\le\Big\|\sum_k\omega_k\Big\|^2=K+\sum_{i\ne j}\omega_i^\top\omega_j
# \ \Rightarrow\ \max_{i\ne j}\omega_i^\top\omega_j\ \ge\ \frac{1}{K(K-1)}\sum_{i\ne j}\omega_i^\top\omega_j\ \ge\ -\frac{1}{K-1},$$
#
# with equality iff $\sum_k\omega_k=0$ and all pairs are equal: the regular simplex. Its Gram matrix
# $G=\frac{K}{K-1}I-\frac{1}{K-1}\mathbf 1\mathbf 1^\top$ has rank $K-1$, so it exists in $\mathbb R^d$ iff $K\le d+1$.
# Algorithm 2 builds it column by column. Checks: `mmd_centers` has unit rows, off-diagonal Gram
# $=-1/(K-1)$, zero sum; a direct numerical minimax never beats the bound.

# %%
rng, gen = rng_for("mmd")
worst = 0.0
for K, d in [(2, 1), (4, 3), (10, 9), (10, 128), (20, 128)]:
    W = mmd_centers(K, d, seed=seed, dtype=f64)
    G = W @ W.T
    target = torch.full((K, K), -1.0 / (K - 1), dtype=f64).fill_diagonal_(1.0)
    worst = max(worst, float((G - target).abs().max()), float(W.sum(0).norm()))
check("4.mmd: Gram = simplex (-1/(K-1)), sum = 0", worst, 1e-12)


def minimax_inner_product(K, d, steps=300, restarts=2):
    """Numerically minimise max_{i!=j} <w_i, w_j> over unit vectors: a smooth max (temperature
    annealed 0.1 -> 0.001) minimised by Adam from random starts; returns the best max found."""
    best, mask = math.inf, ~torch.eye(K, dtype=torch.bool)
    for _ in range(restarts):
        w = torch.randn(K, d, generator=gen, dtype=f64, requires_grad=True)
        opt = torch.optim.Adam([w], lr=0.05)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for t in range(steps):
            u = torch.nn.functional.normalize(w, dim=1)
            temp = 0.1 * 0.01 ** (t / steps)
            loss = temp * torch.logsumexp((u @ u.T)[mask] / temp, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        u = torch.nn.functional.normalize(w.detach(), dim=1)
        best = min(best, float((u @ u.T)[mask].max()))
    return best


for K, d in [(4, 3), (6, 5)]:
    found = minimax_inner_product(K, d)
    W = mmd_centers(K, d, seed=seed, dtype=f64)
    mmd_max = float((W @ W.T).fill_diagonal_(-math.inf).max())
    print(f"   K={K}, d={d}: numerical minimax {found:.5f}, MMD {mmd_max:.5f}, bound {-1 / (K - 1):.5f}")
    check(f"4.mmd: minimax cannot beat -1/(K-1) (K={K})", max(0.0, -1 / (K - 1) - found), 1e-9)
    check(f"4.mmd: MMD attains the bound (K={K})", abs(mmd_max + 1 / (K - 1)), 1e-12)

# %% [markdown]
# **What breaks when $K>d+1$.** The simplex Gram matrix has rank $K-1>d$, so no $K$ unit vectors in
# $\mathbb R^d$ reach $-1/(K-1)$; `mmd_centers` refuses. The best achievable maximum is strictly larger
# (e.g. $K=6$ on the circle: the hexagon, $\cos 60^\circ=0.5$, versus $-0.2$), so raise $d$ to at least $K-1$.

# %%
K = 6
G = torch.full((K, K), -1.0 / (K - 1), dtype=f64).fill_diagonal_(1.0)
eig = torch.linalg.eigvalsh(G)
print("   eigenvalues of the K=6 simplex Gram matrix:", np.round(eig.numpy(), 6))
check("4.mmd: simplex Gram has rank K-1", abs(int((eig > 1e-9).sum()) - (K - 1)), 0)
try:
    mmd_centers(K, 2)
    raised = False
except ValueError as e:
    raised = True
    print("   mmd_centers(6, 2) ->", e)
check("4.mmd: K > d+1 is refused", 0.0 if raised else 1.0, 0.0)
found = minimax_inner_product(6, 2)
print(f"   K=6, d=2: numerical minimax {found:.4f} (hexagon 0.5) vs the unreachable -0.2")
check("4.mmd: K=6 in R^2 reaches only cos(60 deg) = 0.5", abs(found - 0.5), 1e-4)

# %%
W = mmd_centers(4, 3, seed=seed, dtype=f64).numpy()
fig = plt.figure(figsize=(4.2, 4.2))
ax = fig.add_subplot(projection="3d")
uu, vv = np.meshgrid(np.linspace(0, 2 * np.pi, 30), np.linspace(0, np.pi, 15))
ax.plot_wireframe(np.cos(uu) * np.sin(vv), np.sin(uu) * np.sin(vv), np.cos(vv), color="0.85", lw=0.5)
for i in range(4):
    ax.quiver(0, 0, 0, *W[i], color=f"C{i}", arrow_length_ratio=0.1)
    for j in range(i + 1, 4):
        ax.plot(*np.stack([W[i], W[j]]).T, "k-", lw=0.8)
ax.set_title(r"MMD prototypes, K=4, d=3: $\omega_i^\top\omega_j=-1/3$")
ax.set_box_aspect((1, 1, 1))
ax.set_axis_off()
viz.savefig(fig, "em_elbo_primer_mmd_sphere", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# ## 5. NMM: the last layer as the mixture
#
# The network's $K$ relevance scores $a_{ij}$ are normalised over the batch, without affine parameters (§5),
# $a^*_{ij}=(a_{ij}-\mu_j)/\sigma_j$ with $\sigma_j^2=\frac1n\sum_i(a_{ij}-\mu_j)^2$, and the cluster "density" is $h_j(x_i)=\mathrm{sigmoid}(a^*_{ij}/\gamma)$.
# Why it acts as a density with a **common integral**: $\sum_ia^*_{ij}=0$, and $\mathrm{sigmoid}(t)-\tfrac12$ is odd with
# $|\mathrm{sigmoid}(t)-\tfrac12-\tfrac t4|\le|t|^3/48$, so with $t=a^*/\gamma$
#
# $$\Big|\frac1n\sum_ih_j(x_i)-\frac12\Big|\le\frac{1}{48\,n}\sum_i\Big|\frac{a^*_{ij}}{\gamma}\Big|^3\quad(\text{Eq. 3 with its error term}),$$
#
# small once $\gamma$ keeps $|t|$ in the near-linear region. If the batch is uniform on a box $\mathcal D$ of volume $V$,
# Monte Carlo gives $I_j=\int_{\mathcal D}h_j\approx V\frac1n\sum_ih_j(x_i)$ (4), so $I_j\approx0.5V$ for **every** $j$ (5).
# Checks with `mixlab/mixture/nmm.py`. Note: with the biased $\sigma_j$ that §5 defines, the largest possible $|a^*|$
# is $\sqrt{n-1}$ (one outlier); the paper's $(n-1)/\sqrt n$ (11.23 for $n=128$) is Shiffler's bound for the
# *unbiased* standard deviation.

# %%
from mixlab.mixture import nmm  # noqa: E402

rng, gen = rng_for("nmm")
n, Kn = 128, 6
worst_mean, worst_var, worst_eq3 = 0.0, 0.0, -math.inf
for a in (torch.randn(n, Kn, generator=gen), -torch.log(torch.rand(n, Kn, generator=gen)),
          torch.exp(1.5 * torch.randn(n, Kn, generator=gen))):  # normal, exponential, log-normal relevances
    a_star, _, var = nmm.normalize_relevance(a)
    worst_mean = max(worst_mean, float(a_star.mean(0).abs().max()))
    worst_var = max(worst_var, float((a_star.var(0, unbiased=False) - var / (var + 1e-5)).abs().max()))
    for gam in (1.0, 5.0):
        t = a_star.double() / gam
        dev = (nmm.batch_mean_density(nmm.density(a_star, gam)).double() - 0.5).abs()
        worst_eq3 = max(worst_eq3, float((dev - (t.abs() ** 3).mean(0) / 48).max()))
        print(f"   gamma={gam}: max |mean_i h_j - 0.5| = {float(dev.max()):.1e}")
check("5.nmm: batch mean of a* is 0", worst_mean, 1e-6)
check("5.nmm: batch (biased) variance of a* is 1 (up to eps)", worst_var, 1e-6)
check("5.nmm Eq.3: |mean h - 1/2| <= mean |a*/gamma|^3 / 48", max(worst_eq3, 0.0), 1e-6)
a = torch.zeros(n, 1)
a[0] = 10.0  # one outlier: the extreme case
a_max = float(nmm.normalize_relevance(a)[0].abs().max())
print(f"   largest |a*| for n={n}: {a_max:.4f}; sqrt(n-1) = {math.sqrt(n - 1):.4f}; nmm.score_bound(n) = {nmm.score_bound(n):.4f}")
check("5.nmm: max |a*| = sqrt(n-1) with the biased sigma", abs(a_max - math.sqrt(n - 1)), 1e-3)

# %% [markdown]
# **Monte-Carlo check of Eq. 4–5, and what happens without the normalisation.** A random MLP $g:\mathbb R^2\to\mathbb R^3$
# on $\mathcal D=[-3,3]^2$, with output biases $(-2,0,3)$. Freeze $\mu_j,\sigma_j$ from one uniform batch of 128 points and
# integrate $h_j$ with fresh uniform samples (`nmm.monte_carlo_integral`): every $I_j/V\approx0.5$. Without the
# normalisation, $\mathrm{sigmoid}(a_{ij})$ integrates to very different values and the largest one wins every point:
# the trivial solution of the paper's Fig. 5a / Table 1. (Eq. 4 needs the batch to be *uniform* on $\mathcal D$; with the
# statistics of a data batch, 0.5 is the data-average of $h_j$, not $\int h_j/V$.)

# %%
torch.manual_seed(seed)
net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
low, high = torch.tensor([-3.0, -3.0]), torch.tensor([3.0, 3.0])
V, gam = 36.0, 5.0
with torch.no_grad():
    net[-1].bias.copy_(torch.tensor([-2.0, 0.0, 3.0]))
    ubatch = low + (high - low) * torch.rand(128, 2, generator=gen)
    _, m_j, var_j = nmm.normalize_relevance(net(ubatch))

    def h_norm(x):
        return nmm.density((net(x) - m_j) / torch.sqrt(var_j + 1e-5), gam)

    def h_raw(x):
        return torch.sigmoid(net(x))

    I_norm = nmm.monte_carlo_integral(h_norm, low, high, n=n_mc, generator=gen) / V
    I_raw = nmm.monte_carlo_integral(h_raw, low, high, n=n_mc, generator=gen) / V
    xs = low + (high - low) * torch.rand(4000, 2, generator=gen)
    a_s = net(xs)
    a_star = nmm.normalize_relevance(a_s)[0]
    sizes_norm = torch.bincount(nmm.log_posterior(a_star).argmax(1), minlength=3)
    raw_lh = torch.nn.functional.logsigmoid(a_s)
    sizes_raw = torch.bincount((raw_lh - torch.logsumexp(raw_lh, 1, keepdim=True)).argmax(1), minlength=3)
    # the E-step: the exact posterior of the h-mixture under the uniform prior is posterior_and_elbo's
    log_unif3 = torch.full((len(xs), 3), -math.log(3))
    post_exact = posterior_and_elbo(log_unif3, nmm.log_density(a_star, gam))[0]
    post_paper = nmm.log_posterior(a_star)
print("   I_j / V with normalisation:   ", np.round(I_norm.numpy(), 4), " cluster sizes", sizes_norm.tolist())
print("   I_j / V without normalisation:", np.round(I_raw.numpy(), 4), " cluster sizes", sizes_raw.tolist())
check("5.nmm Eq.4-5: every I_j / V = 0.5 (MC, frozen batch stats)", float((I_norm - 0.5).abs().max()), 0.02)
check("5.nmm: no normalisation: integrals spread > 0.5 (shortfall)", max(0.0, 0.5 - float(I_raw.max() - I_raw.min())), 0.0)
check("5.nmm: density_ratio posterior = posterior_and_elbo(uniform, log h)",
      float((nmm.log_posterior(a_star, gam, kind="density_ratio") - post_exact).abs().max()), 1e-5)
print(f"   mean max-posterior: exact h-ratio {float(post_exact.exp().max(1).values.mean()):.3f}, "
      f"paper's softmax(a*) {float(post_paper.exp().max(1).values.mean()):.3f} (a much sharper E-step than the h-mixture's own posterior)")

# %%
gx, gy = torch.meshgrid(torch.linspace(-3, 3, 80), torch.linspace(-3, 3, 80), indexing="xy")
grid_pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
with torch.no_grad():
    maps = {"sigmoid(a) (no normalisation)": h_raw(grid_pts), r"sigmoid(a*/$\gamma$)": h_norm(grid_pts)}
fig, axes = plt.subplots(2, 3, figsize=(9, 5.6), sharex=True, sharey=True)
for r, (name, hmap) in enumerate(maps.items()):
    for j in range(3):
        cs = axes[r, j].contourf(gx, gy, hmap[:, j].reshape(80, 80), levels=np.linspace(0, 1, 11), cmap="viridis")
        axes[r, j].set_title(f"{name}, j={j}\nI/V = {float((I_raw if r == 0 else I_norm)[j]):.2f}", fontsize=8)
fig.colorbar(cs, ax=axes, shrink=0.8)
viz.savefig(fig, "em_elbo_primer_nmm_densities", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# ## 6. TCC: an instance-level ELBO with a uniform prior and Gumbel-softmax
#
# TCC's supplement Eq. (1) is §1's bound with the instance label $i$ as the observation and a
# **uniform** prior $p(k)=1/K$ in place of the gating network:
#
# $$\log p(i\mid x)=\log\sum_k\tfrac1K\,p(i\mid x,k)\ \ge\ \mathbb E_{q(k|x)}[\log p(i\mid x,k)]-\mathrm{KL}\big(q(k\mid x)\,\|\,\tfrac1K\big),\tag{1}$$
#
# with $\mathrm{KL}(q\|\tfrac1K)=\log K-H(q)$. Eq. (2) replaces $\mathbb E_q$ by the Gumbel-softmax
# reparametrisation $c=\mathrm{softmax}((\log q+\epsilon)/\lambda)$, $\epsilon$ i.i.d. Gumbel:
#
# $$\mathbb E_\epsilon[\log p(i\mid x,c)]-\mathrm{KL}(q(k\mid x)\,\|\,p(k)).\tag{2}$$
#
# Checks with `mixlab/mixture/tcc.py` (its contrastive $\log p(i\mid x,c)$, query, KL) and `em.py`:
# the KL formula; Eq. (1) equals `elbo` with a uniform log-prior, lies below $\log p(i\mid x)$, and is
# tight at the posterior; the Gumbel-max trick samples $q$ exactly.

# %%
from mixlab.mixture import tcc  # noqa: E402

rng, gen = rng_for("tcc")
B, K, d, n_neg, tau, alpha = 64, 5, 16, 128, 0.5, 1.0
unit = lambda a: torch.nn.functional.normalize(a, dim=-1)  # noqa: E731
protos = unit(torch.randn(K, d, generator=gen, dtype=f64))
h = unit(torch.randn(B, d, generator=gen, dtype=f64))
keys = unit(h + 0.3 * torch.randn(B, d, generator=gen, dtype=f64))
negs = unit(torch.randn(n_neg, d, generator=gen, dtype=f64))
log_q = tcc.assignment_log_probs(h, protos, temperature=0.2)


def loglik_of(c):
    """log p(i | x, c) of TCC's contrastive instance likelihood for assignment vectors c [B, K]."""
    return tcc.instance_log_likelihood(tcc.instance_query(c, protos, h, alpha), keys, negs, tau)


eye = torch.eye(K, dtype=f64)
loglik_k = torch.stack([loglik_of(eye[k].expand(B, K)) for k in range(K)], 1)  # [B, K]: log p(i|x,k)
log_unif = torch.full((B, K), -math.log(K), dtype=f64)
H = -(log_q.exp() * log_q).sum(1)
check("6.tcc: KL(q || 1/K) = log K - H(q)", (tcc.kl_to_uniform(log_q) - (math.log(K) - H)).abs().max(), 1e-12)
eq1 = (log_q.exp() * loglik_k).sum(1) - tcc.kl_to_uniform(log_q)
check("6.tcc: Eq. 1 = elbo() with uniform prior", (eq1 - elbo(log_q, log_unif, loglik_k)).abs().max(), 1e-12)
check("6.tcc: Eq. 1 <= log p(i|x)", (eq1 - log_marginal(log_unif, loglik_k)).max().clamp_min(0), 1e-12)
log_post, tight = posterior_and_elbo(log_unif, loglik_k)
check("6.tcc: Eq. 1 tight at q = posterior", (tcc.instance_elbo((log_post.exp() * loglik_k).sum(1), log_post)
                                               - log_marginal(log_unif, loglik_k)).abs().max(), 1e-12)
print(f"   mean slack log p(i|x) - Eq.1 at TCC's q: {float((log_marginal(log_unif, loglik_k) - eq1).mean()):.3f} nats")

row = log_q[:1].expand(n_mc, K)
noise = tcc.sample_gumbel((n_mc, K), generator=gen, dtype=f64)
hard = tcc.gumbel_softmax(row, 1.0, noise=noise, hard=True).detach()
freq, p = hard.mean(0), log_q[0].exp()
se = (p * (1 - p) / n_mc).sqrt()
check("6.tcc: Gumbel-max argmax ~ q (max z-score)", float(((freq - p).abs() / se).max()), 4.5)

# %% [markdown]
# **The relaxed gradient is unbiased in the limit $\lambda\to0$.** For $\lambda>0$ the pathwise (reparametrised) gradient
# $\nabla_s f(c_\lambda)$, $\log q=\log\mathrm{softmax}(s)$, is unbiased for the gradient of the *relaxed* objective
# $\mathbb E_\epsilon[f(c_\lambda)]$, which differs from the true $\nabla_s\mathbb E_q[f(e_k)]=\nabla_s\sum_kq_kf(e_k)$. As $\lambda\to0$,
# $c_\lambda\to e_{\arg\max(\log q+\epsilon)}\sim q$ and both the objective gap and the gradient bias vanish (typically like $O(\lambda)$), while
# the variance grows. With $f=\log p(i\mid x,c)$ of TCC: (a) Monte Carlo, $K=5$, the same noise for every $\lambda$: $f(c_\lambda)\to f(e_{\arg\max})$, whose mean is $\mathbb E_q[f(e_k)]$;
# (b) $K=2$, where $\epsilon_1-\epsilon_2$ is logistic and the expectation of the pathwise gradient is a 1-D integral
# (midpoint rule over the logistic quantiles, passed as `noise` to `tcc.gumbel_softmax`): the bias itself, exactly.

# %%
i0, lams = 0, [2.0, 1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01]
eps_noise = tcc.sample_gumbel((n_mc, K), generator=gen, dtype=f64)
exact_k5 = float((log_q[i0].exp() * loglik_k[i0]).sum())


def f_single(c, protos_, i=i0):
    """f(c) = log p(i | x_i, c) for a batch of assignment vectors c of one image."""
    z = tcc.instance_query(c, protos_, h[i].expand(c.shape[0], d), alpha)
    return tcc.instance_log_likelihood(z, keys[i].expand(c.shape[0], d), negs, tau)


hard = tcc.gumbel_softmax(log_q[i0].expand(n_mc, K), 1.0, noise=eps_noise, hard=True).detach()
f_hard = f_single(hard, protos)  # f at the Gumbel-max samples e_argmax ~ q
se = float(f_hard.std() / math.sqrt(n_mc))
check("6.tcc: mean f(Gumbel-max sample) = E_q[f] (in s.e.)", abs(float(f_hard.mean()) - exact_k5) / se, 4.0)
obj_gap = []
for lam in lams[:6]:
    c = tcc.gumbel_softmax(log_q[i0].expand(n_mc, K), lam, noise=eps_noise)
    obj_gap.append(float((f_single(c, protos) - f_hard).mean()))  # same noise: no MC error in the limit
print("   K=5, E[f(c_lambda)] - E[f(e_argmax)]:", {lam: round(gp, 4) for lam, gp in zip(lams, obj_gap)})
check("6.tcc: relaxed objective gap shrinks for lambda <= 0.5", max(0.0, float(np.diff(np.abs(obj_gap[2:])).max())), 0.0)
check("6.tcc: ... like O(lambda): gap(0.05)/gap(0.1) - 1/2", abs(obj_gap[-1] / obj_gap[-2] - 0.5), 0.1)

protos2 = protos[:2]
s0 = tcc.assignment_log_probs(h[i0 : i0 + 1], protos2, temperature=0.2)[0]
f_k = f_single(torch.eye(2, dtype=f64), protos2)  # f(e_1), f(e_2)
s = s0.clone().requires_grad_(True)
(g_exact,) = torch.autograd.grad((torch.softmax(s, 0) * f_k).sum(), s)
M = 20_000
uq = (torch.arange(M, dtype=f64) + 0.5) / M
logistic = torch.stack([torch.log(uq) - torch.log1p(-uq), torch.zeros(M, dtype=f64)], 1)  # (eps1 - eps2, 0)
bias = []
for lam in lams:
    S = s0.expand(M, 2).clone().requires_grad_(True)
    c = tcc.gumbel_softmax(torch.log_softmax(S, -1), lam, noise=logistic)
    (G,) = torch.autograd.grad(f_single(c, protos2).sum(), S)  # row m: pathwise gradient at quantile m
    bias.append(float((G.mean(0) - g_exact).norm() / g_exact.norm()))
print("   K=2, relative bias of E[pathwise gradient]:", {lam: f"{b:.4f}" for lam, b in zip(lams, bias)})
small = [b for lam, b in zip(lams, bias) if lam <= 0.2]
check("6.tcc: gradient bias decreases monotonically for lambda <= 0.2", max(0.0, float(np.diff(small).max())), 0.0)
check("6.tcc: bias(0.01) / bias(0.2) (O(lambda) predicts 0.05)", bias[-1] / bias[lams.index(0.2)], 0.15)

# %% [markdown]
# ## Summary

# %%
io.write_json(out_dir / "provenance.json", {"notebook": "em_elbo_primer", "profile": profile, "seed": seed,
                                            "n_mc": n_mc, "provenance": provenance()})
n_fail = sum(not c["passed"] for c in CHECKS.values())
print(f"{len(CHECKS)} checks, {n_fail} failed, largest gap/tol = "
      f"{max(c['gap'] / c['tol'] if c['tol'] else c['gap'] for c in CHECKS.values()):.3f}; "
      f"{time.time() - t_start:.1f} s")
assert n_fail == 0
