# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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
# Papers: `../shared/papers/` (equation numbers are theirs).

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

torch.set_num_threads(2)
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
# form $c_3=\kappa/(4\pi\sinh\kappa)$; `vmf_log_normalizer` agrees with 50-digit arithmetic where
# `scipy`'s Bessel function under/overflows ($d=128,\kappa=10^4$; $d=512,\kappa=1$).

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
# vector; the M-step (6) with one-hot weights is the normalised mean of the members. So
# `spherical_kmeans` (faiss) is EM in this limit, and its output is a fixed point of that hard EM.

# %%
K, d = 3, 3
means = mmd_centers(K, d, seed=seed, dtype=f64).numpy()
v = np.concatenate([vmf_sample(means[k], 12.0, 200, seed=seed + 10 + k) for k in range(K)])
C, labels = spherical_kmeans(v, K, iters=50, seed=seed)
mu_hard = vmf_mle(v, labels=labels, K=K)[0]
check("2.skm: centroids = Eq. 6 on k-means labels", np.abs(mu_hard - C).max(), 1e-5)
onehot = np.eye(K)[labels]
gaps = []
for kap in (1.0, 10.0, 100.0, 1000.0):
    log_q_v, _ = posterior_and_elbo(np.full((len(v), K), -np.log(K)), vmf_log_density(v, C.astype(np.float64), kap))
    q_v = np.exp(log_q_v)
    mism = float((q_v.argmax(1) != labels).mean())
    mu_soft = vmf_mle(v, weights=q_v)[0]
    gaps.append(np.abs(q_v - onehot).max())
    print(f"   kappa={kap:6g}: max|q - onehot| = {gaps[-1]:.2e}, argmax mismatch {mism:.3f}, "
          f"max|mu_soft - mu_hard| = {np.abs(mu_soft - mu_hard).max():.2e}")
    check(f"2.skm: argmax posterior = k-means label (kappa={kap:g})", mism, 0.0)
check("2.skm: posterior -> one-hot as kappa -> inf (kappa=1000)", gaps[-1], 1e-8)

# %% [markdown]
# ## 3. MiCE
#
# (MiCE's functions — `mixlab/mixture/mice.py` — are checked here once they exist.)

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
# ## 5. NMM
#
# (NMM's functions — `mixlab/mixture/nmm.py` — are checked here once they exist.)

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
# **The relaxed gradient is unbiased in the limit $\lambda\to0$.** For $\lambda>0$ the pathwise
# (reparametrised) gradient $\nabla_s\,\mathbb E_\epsilon[f(c_\lambda)]$, $\log q=\log\mathrm{softmax}(s)$, is an unbiased
# estimate of the gradient of the *relaxed* objective, which differs from the true
# $\nabla_s\mathbb E_q[f(e_k)]=\nabla_s\sum_kq_kf(e_k)$. As $\lambda\to0$, $c_\lambda\to e_{\arg\max(\log q+\epsilon)}\sim q$ and the bias
# vanishes, while the variance grows (like $1/\lambda$). Check on one image with $f=\log p(i\mid x,c)$:
# Monte-Carlo mean of per-sample pathwise gradients versus the exact gradient, for decreasing $\lambda$.

# %%
i0 = 0
s0 = (log_q[i0] * 1.0).clone()


def f_single(c):
    z = tcc.instance_query(c, protos, h[i0].expand(c.shape[0], d), alpha)
    return tcc.instance_log_likelihood(z, keys[i0].expand(c.shape[0], d), negs, tau)


s = s0.clone().requires_grad_(True)
exact_obj = (torch.softmax(s, 0) * loglik_k[i0]).sum()  # E_q[log p(i|x,k)]
(g_exact,) = torch.autograd.grad(exact_obj, s)
lams = [2.0, 1.0, 0.5, 0.2, 0.1, 0.05]
bias, sems, relaxed_gap = [], [], []
eps_noise = tcc.sample_gumbel((n_mc, K), generator=gen, dtype=f64)  # common random numbers
for lam in lams:
    S = s0.expand(n_mc, K).clone().requires_grad_(True)
    c = tcc.gumbel_softmax(torch.log_softmax(S, -1), lam, noise=eps_noise)
    vals = f_single(c)
    (G,) = torch.autograd.grad(vals.sum(), S)  # row n = pathwise gradient of sample n
    bias.append(float((G.mean(0) - g_exact).norm() / g_exact.norm()))
    sems.append(float((G.std(0) / math.sqrt(n_mc)).norm() / g_exact.norm()))
    relaxed_gap.append(float(vals.detach().mean() - exact_obj.detach()))
    print(f"   lambda={lam:5.2f}: relative bias {bias[-1]:.3f} +- {sems[-1]:.3f} (MC s.e.), "
          f"E[f(c)] - E_q[f] = {relaxed_gap[-1]:+.4f}")
check("6.tcc: gradient bias shrinks as lambda -> 0", max(0.0, bias[-1] - bias[0]), 0.0)
check("6.tcc: relative gradient bias at lambda=0.05", max(0.0, bias[-1] - 3 * sems[-1]), 0.05)
check("6.tcc: relaxed objective -> E_q[log p(i|x,k)] (lambda=0.05)", abs(relaxed_gap[-1]), 0.02)

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
