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
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # EM and the ELBO: the mathematics the methods share
#
# A primer in the order a student needs it: EM for a Gaussian mixture, on a picture (§1), hard EM and
# k-means (§1b), the same EM on the sphere with von Mises–Fisher components (§2), MiCE's conditional
# ELBO and its special cases (§3), MMD prototypes (§4), NMM's sigmoid "densities" (§5), TCC's
# uniform-prior ELBO with Gumbel-softmax (§6), then where deep clustering departs from exact EM (§7),
# its trivial solutions (§8), the ladder MiCE → MoCo → spherical k-means with exercises (§9) and a
# table of every check (§10).
#
# Every claim is followed by a cell that checks it on random data **with the same `mixlab.mixture`
# functions the methods train with** (helpers of the figures: `mixlab/workbook/primer.py`). An identity prints
# its largest gap $|{\rm lhs}-{\rm rhs}|$; an inequality ${\rm lhs}\le{\rm rhs}$ prints its **slack**
# $\min({\rm rhs}-{\rm lhs})$, negative when violated. A failed check stops the notebook. All checks are
# written to `results_dir/em_elbo_primer/checks.json`.
#
# Papers (equation numbers are theirs): **MiCE** — Tsai, Li, Zhu, *MiCE: Mixture of Contrastive Experts
# for Unsupervised Image Clustering*, ICLR 2021; **SiamMM** — Wang, Huang, Liang (Meta AI), *SiamMM:
# A Mixture Model Perspective on Deep Unsupervised Learning*, arXiv 2024; **NMM** — Tissera et al.,
# *Neural Mixture Models with Expectation-Maximization for End-to-end Deep Clustering*; **TCC** — Shen
# et al., *You Never Cluster Alone*, NeurIPS 2021 (supplement). Textbooks: Bishop, *PRML* ch. 9;
# Murphy, *Probabilistic Machine Learning* (PML).
#
# ### Notation across the four papers
#
# | symbol | here | MiCE | SiamMM | NMM | TCC |
# |---|---|---|---|---|---|
# | cluster | $k$ | $z_n=k$ | $k$ | $j$ | $k$ |
# | observation | $x$ (or $y$) | surrogate label $y_n$ given image $x_n$ | embedding $v_i$ | image $x_i$ | instance label $i$ given $x$ |
# | prior | $\pi_k$, $p(k\mid x)$ | gating $\mathrm{softmax}_k(\omega_k^\top g_n/\kappa)$ | $\pi_k$ | $1/K$ | $1/K$ |
# | posterior / E-step | $q_k$ | $q(z_n\mid x_n,y_n)$ (Eq. 8, 10) | soft assignment to the $H$ nearest | $p_{ij}=\mathrm{softmax}_j(a^*_{ij})$ | $q(k\mid x)$, amortised |
# | concentration | $\kappa$ | $\kappa$ **divides** (gating temperature) | $\kappa$ **multiplies** ($e^{\kappa\mu^\top v}$) | — | — |
# | temperatures | — | $\tau$ (experts), $\kappa$ (gating) | $\kappa_k$ per cluster | $\gamma$ (sigmoid) | $\tau$ (InfoNCE), $\lambda$ (Gumbel), $t$ (cluster loss) |
#
# A temperature $t$ in $\exp(s/t)$ is an inverse concentration: $\exp(\mu^\top v/\tau)$ is a vMF kernel with
# $\kappa=1/\tau$. So MiCE's gating with $\kappa=0.5$ is a vMF posterior with concentration 2, and
# "$\kappa\to\infty$" in MiCE's A3 means a *flat* gating — the opposite of a large vMF $\kappa$.

# %% tags=["parameters"]
profile = "smoke"
seeds = [0]
publish = False # True only under `make reproduce`: write the tracked results/ and figures/
seed = 0
n_mc = 20_000  # Monte-Carlo sample size of the stochastic checks (Gumbel, NMM integral, vMF normaliser)

# %%
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse
from scipy.optimize import minimize_scalar

from mixlab.utils import io, paths
from mixlab.workbook import primer, viz
from mixlab.data.synthetic import blobs2d
from mixlab.mixture import (
    banerjee_kappa,
    elbo,
    gmm,
    kl_categorical,
    log_marginal,
    mmd_centers,
    pca_components,
    pca_kappa,
    posterior_and_elbo,
    spherical_kmeans,
    vmf_log_density,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
    vmf_mle,
    vmf_sample,
)
from mixlab.utils.provenance import provenance

runs_dir, results_dir, figures_dir = paths.outputs(profile, publish)  # runs/<profile>/ unless publishing

torch.set_num_threads(1)  # the checks are tiny: one thread avoids contention on a shared 2-core machine
t_start = time.time()
f64 = torch.float64
out_dir = Path(results_dir) / "em_elbo_primer"
cert = primer.Certificates(out_dir / "checks.json")


def rng_for(tag: str) -> tuple[np.random.Generator, torch.Generator]:
    """Independent, reproducible streams per section (numpy and torch) from `seed`."""
    s = (seed * 1_000_003 + sum(map(ord, tag))) % 2**31
    return np.random.default_rng(s), torch.Generator().manual_seed(s)


print("profile", profile, "| seed", seed, "| n_mc", n_mc)

# %% [markdown]
# ## 1. EM for a Gaussian mixture
#
# Data $x$, latent cluster $k\in\{1..K\}$, joint $p(x,k)=\pi_k\,\mathcal N(x\mid m_k,S_k)$.
# For **any** distribution $q(k)$ (with the convention $0\log0=0$, so $q$ may vanish anywhere), Jensen's
# inequality for the concave $\log$ over the support of $q$ gives
#
# $$\log p(x)\;\ge\;\log\sum_{k:\,q_k>0} q_k\frac{p(x,k)}{q_k}\;\ge\;\sum_k q_k\log\frac{p(x,k)}{q_k}=:\mathrm{ELBO}(q).$$
#
# The gap is exactly a KL divergence: since $p(x,k)=p(x)\,p(k\mid x)$,
#
# $$\mathrm{ELBO}(q)=\log p(x)-\mathrm{KL}\big(q\,\|\,p(k\mid x)\big).$$
#
# Equality needs $\mathrm{KL}=0$, i.e. $q=p(k\mid x)$: only *there* must $q_k>0$ wherever $p(x,k)>0$.
# These are MiCE Eq. (7) / App. A.1 and TCC supplement Eq. (1) with other names. Check on random
# log-priors, log-likelihoods and a $q$ with zeros (`elbo`, `log_marginal`, `kl_categorical`,
# `posterior_and_elbo` from `mixlab/mixture/em.py`); the reference $\log p(x)$ is summed directly,
# $\log\sum_k e^{\log\pi_k+\log p(x\mid k)}$ without the max-shift of `logsumexp`.

# %%
rng, gen = rng_for("elbo")
B, K = 512, 6
log_prior = torch.log_softmax(3 * torch.randn(B, K, generator=gen, dtype=f64), -1)
log_lik = 10 * torch.randn(B, K, generator=gen, dtype=f64)  # any real scores (|.| < 700: direct sum is safe)
log_q = torch.log_softmax(4 * torch.randn(B, K, generator=gen, dtype=f64), -1)
log_q[:8, 0] = -math.inf  # q may put zero mass on a cluster
log_q = torch.log_softmax(log_q, -1)

lp_direct = torch.log((log_prior + log_lik).exp().sum(-1))  # reference: no logsumexp
lp = log_marginal(log_prior, log_lik)
L = elbo(log_q, log_prior, log_lik)
log_post, elbo_at_post = posterior_and_elbo(log_prior, log_lik)
cert.equal("1.log_marginal = direct log sum exp", lp - lp_direct, 1e-12)
cert.at_most("1.jensen: ELBO(q) <= log p(x) (q with zeros)", L, lp_direct)
cert.equal("1.gap: log p - ELBO = KL(q || posterior)", lp_direct - L - kl_categorical(log_q, log_post), 1e-10)
cert.equal("1.estep: ELBO(posterior) = log p(x)", elbo(log_post, log_prior, log_lik) - lp_direct, 1e-10)
cert.equal("1.estep: Bayes: q_k p(x) = p(x, k) (relative)",
           ((log_post + lp_direct[:, None]).exp() - (log_prior + log_lik).exp()) / lp_direct.exp()[:, None], 1e-12)

# %% [markdown]
# **EM** maximises $\ell(\theta)=\sum_n\log p(x_n\mid\theta)$ by coordinate ascent on $\mathrm{ELBO}(q,\theta)$:
#
# * E-step: $q^{t}=p(k\mid x,\theta^t)$ (Bayes' rule). The gap closes: $\mathrm{ELBO}(q^t,\theta^t)=\ell(\theta^t)$.
# * M-step: $\theta^{t+1}=\arg\max_\theta Q(\theta\mid\theta^t)$, $Q=\sum_n\sum_k q^t_{nk}\log p(x_n,k\mid\theta)$ (NMM Eq. 1–2),
#   which differs from $\mathrm{ELBO}(q^t,\theta)$ by the entropy of $q^t$ (constant in $\theta$). For the
#   Gaussian mixture it is closed form: $\pi_k=N_k/N$, $m_k=\sum_n q_{nk}x_n/N_k$, $S_k=\sum_n q_{nk}(x_n-m_k)(x_n-m_k)^\top/N_k$.
#
# Hence $\ell(\theta^{t+1})\ \ge\ \mathrm{ELBO}(q^t,\theta^{t+1})\ \ge\ \mathrm{ELBO}(q^t,\theta^t)=\ell(\theta^t)$:
# **the log-likelihood never decreases**. `primer.em_trace` runs `gmm.gmm_e_step`/`gmm.gmm_m_step` and records
# each term; we certify both inequalities and the equality at every iteration, in 1-D and 2-D.

# %%
rng, gen = rng_for("gmm")
x1 = torch.as_tensor(np.concatenate([rng.normal(-2, 0.6, 150), rng.normal(0.5, 1.0, 200), rng.normal(3, 0.5, 100)]))
x2 = blobs2d(n=600, k=3, std=1.0, radius=2.0, seed=seed)["images"].double()
em_iters, restarts = 300, 5
traces1 = [primer.em_trace(x1, 3, em_iters, seed=seed + r) for r in range(restarts)]
trace2 = primer.em_trace(x2, 3, 60, seed=seed)
for tag, tr in [("1-D", traces1[0]), ("2-D", trace2)]:
    cert.equal(f"1.em {tag}: ELBO(q^t, theta^t) = l(theta^t)", tr.elbo_here - tr.loglik[:-1], 1e-10)
    cert.at_most(f"1.em {tag}: M-step: ELBO(q^t, theta^t) <= ELBO(q^t, theta^t+1)", tr.elbo_here, tr.elbo_next, 1e-12)
    cert.at_most(f"1.em {tag}: ELBO(q^t, theta^t+1) <= l(theta^t+1)", tr.elbo_next, tr.loglik[1:], 1e-12)
    cert.at_most(f"1.em {tag}: l never decreases", tr.loglik[:-1], tr.loglik[1:], 1e-12)

# %% [markdown]
# **EM on a picture (Bishop Fig. 9.8).** The 2-D mixture: points coloured by their responsibilities (RGB = $q_{n1..3}$),
# the 2-σ ellipse of each $S_k$, at a few iterations.

# %%
show = [0, 1, 4, 15, 60]
fig, axes = plt.subplots(1, len(show), figsize=(2.6 * len(show), 2.8), sharex=True, sharey=True)
X2 = x2.numpy()
for ax, t in zip(axes, show):
    p_t = trace2.params[t]
    q_t = gmm.gmm_e_step(x2, p_t)[0].exp().numpy()
    ax.scatter(X2[:, 0], X2[:, 1], c=q_t[:, [0, 1, 2]], s=4)
    for k in range(3):
        w, h, ang = primer.ellipse(p_t.covs[k].numpy())
        ax.add_patch(Ellipse(p_t.means[k].numpy(), w, h, angle=ang, fill=False, color="k", lw=1.2))
    ax.set(title=f"t = {t}, l/N = {trace2.loglik[t]:.3f}", aspect="equal")
    ax.tick_params(labelsize=6)
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_gmm_2d_iterations", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# **The bound touches $\ell$ at every E-step (Bishop Fig. 9.14)**, and **$\log p=\mathrm{ELBO}+\mathrm{KL}$ per iteration
# (Bishop Figs. 9.11–9.13).** Left: in 1-D, vary the mean $m_1$ of one component with the rest of $\theta^t$ fixed;
# $\mathrm{ELBO}(q^t,\cdot)/N$ lies below $\ell/N$, touches it at $m_1^t$, and its maximiser (the M-step) is where the next
# bound touches. Right: after each M-step $\ell(\theta^{t+1})$ splits into $\mathrm{ELBO}(q^t,\theta^{t+1})$ (grey, measured
# from $\ell(\theta^0)$) and $\mathrm{KL}(q^t\,\|\,p(k\mid x,\theta^{t+1}))$ (red), which the next E-step sets to zero.

# %%
tr = traces1[0]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
m_grid = torch.linspace(-4.0, 1.5, 89, dtype=f64)
for t, col in [(0, "C0"), (1, "C1")]:
    p_t = tr.params[t]
    curve_l, curve_b = [], []
    for m in m_grid:
        means = p_t.means.clone()
        means[0, 0] = m
        p_m = gmm.GMMParams(p_t.log_pi, means, p_t.covs)
        curve_l.append(float(gmm.gmm_e_step(x1, p_m)[1].mean()))
        curve_b.append(float(elbo(tr.log_q[t], *gmm.gmm_log_joint(x1, p_m)).mean()))
    curve_l, curve_b = np.array(curve_l), np.array(curve_b)
    cert.at_most(f"1.bound: ELBO(q^{t}, m) <= l(m) on the grid", curve_b, curve_l, 1e-12)
    step_m = float(m_grid[1] - m_grid[0])
    cert.equal(f"1.bound: argmax_m ELBO(q^{t}, m) = the M-step's m_1^{t + 1} (grid step {step_m:.2f})",
               float(m_grid[curve_b.argmax()]) - float(tr.params[t + 1].means[0, 0]), step_m)
    axes[0].plot(m_grid, curve_l, "k", lw=2 - t, label=fr"$\ell(m_1)/N$, rest of $\theta^{t}$")
    axes[0].plot(m_grid, curve_b, col, label=fr"ELBO$(q^{t},m_1)/N$")
    axes[0].axvline(float(p_t.means[0, 0]), color=col, ls=":", lw=1)
axes[0].set(xlabel=r"mean $m_1$ of component 1", ylim=(tr.loglik[0] - 0.6, tr.loglik[-1] + 0.05), title="the bound touches at the E-step")
axes[0].legend(fontsize=8)
T = 8
base = tr.loglik[0]
it = np.arange(1, T + 1)
axes[1].bar(it, tr.elbo_next[:T] - base, color="0.6", label=r"ELBO$(q^t,\theta^{t+1})-\ell(\theta^0)$")
axes[1].bar(it, tr.kl_next[:T], bottom=tr.elbo_next[:T] - base, color="C3", label=r"KL$(q^t\|p(k|x,\theta^{t+1}))$")
axes[1].plot(it, tr.loglik[1 : T + 1] - base, "k.", label=r"$\ell(\theta^{t+1})-\ell(\theta^0)$")
axes[1].set(xlabel="iteration t + 1", ylabel="per point (nats)", title=r"$\log p$ = ELBO + KL after each M-step")
axes[1].legend(fontsize=7)
kl_direct = [float(kl_categorical(tr.log_q[t], gmm.gmm_e_step(x1, tr.params[t + 1])[0]).mean()) for t in range(T)]
cert.equal("1.decomposition: l - ELBO = KL (kl_categorical), first 8 iterations", tr.kl_next[:T] - np.array(kl_direct), 1e-10)
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_bound_and_decomposition", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# **Convergence, plateaus, restarts, stopping.** Plotted on a log scale, $\ell^*-\ell_t$ (per point) shows what a linear
# plot hides: restart 0 sits for over a hundred iterations on a **plateau** near $-2.008$ with two components on top of
# each other, then escapes to the value every restart reaches. A stopping rule "stop when an iteration gains less
# than tol" fires on that plateau for a loose tol (marked ×): EM's monotonicity says nothing about how close it is.
# EM converges *linearly*, at a rate set by the fraction of missing information (Dempster, Laird, Rubin 1977), which is
# near 1 where components overlap. Right: the fit at 40 iterations (the old figure's stopping point) against the converged one.

# %%
ell_star = max(t.loglik[-1] for t in traces1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for r, t in enumerate(traces1):
    gap = np.maximum(ell_star - t.loglik, 1e-16)
    axes[0].semilogy(gap, lw=1.2, color=f"C{r}", label=f"restart {r}")
    for tol, mk in [(1e-5, "x"), (1e-8, "o")]:
        stop = primer.stopping_iteration(t.loglik, tol)
        axes[0].plot(stop, gap[stop], mk, color=f"C{r}", ms=6, mfc="none")
axes[0].set(xlabel="iteration", ylabel=r"$(\ell^*-\ell_t)/N$", title="x: stop at gain < 1e-5, o: gain < 1e-8")
axes[0].legend(fontsize=6)
stop0 = primer.stopping_iteration(traces1[0].loglik, 1e-5)
print(f"   restart 0: l/N at 40 iterations {traces1[0].loglik[40]:.4f}; the gain < 1e-5 rule stops at t = {stop0} "
      f"with {traces1[0].loglik[stop0]:.4f}; after {em_iters}: {traces1[0].loglik[-1]:.4f}; l*/N = {ell_star:.4f}")
print("   final l/N of the restarts:", np.round([t.loglik[-1] for t in traces1], 6))
cert.at_most("1.restarts: every restart reaches l* (within 1e-6 per point)", ell_star - 1e-6, np.array([t.loglik[-1] for t in traces1]))
ref = traces1[0].params[-1]  # label switching: equally good solutions differ by a permutation of the components
worst_perm, perms = 0.0, []
for t in traces1[1:]:
    p_r = t.params[-1]
    perm = primer.match_components(ref.means.numpy(), p_r.means.numpy())
    perms.append(perm.tolist())
    worst_perm = max(worst_perm, float((p_r.means[perm] - ref.means).abs().max()), float((p_r.log_pi[perm] - ref.log_pi).abs().max()))
print("   label switching: the permutation matching each restart to restart 0:", perms)
cert.equal("1.label switching: restarts equal up to a permutation", worst_perm, 1e-4)
grid = torch.linspace(-5, 6, 400, dtype=f64)
axes[1].hist(x1.numpy(), bins=40, density=True, color="0.8")
axes[1].plot(grid, log_marginal(*gmm.gmm_log_joint(grid, ref)).exp(), "k", label=f"after {em_iters} iterations")
axes[1].plot(grid, log_marginal(*gmm.gmm_log_joint(grid, traces1[0].params[40])).exp(), "r--", label="at 40 (on the plateau)")
for k in range(3):
    lk = ref.log_pi[k] + gmm.gaussian_log_density(grid, ref.means[k : k + 1], ref.covs[k : k + 1])[:, 0]
    axes[1].plot(grid, lk.exp(), ":", lw=1)
axes[1].set(title="fitted 1-D mixture, restart 0", xlabel="x")
axes[1].legend(fontsize=7)
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_gmm_loglik", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# **The singularity that zero regularisation allows** (Bishop §9.2.1). Put one component on a single point $x_0$ with
# standard deviation $\sigma$: its density there is $1/(\sqrt{2\pi}\sigma)$, so $\ell\to+\infty$ as $\sigma\to0$ — the
# likelihood has no global maximum. Left: $\ell(\sigma)/N$ with an outlier at 8 and a fourth component on it. Right: EM
# from $\sigma=1$ drives that variance to exactly 0 within two iterations with `reg=0` (the next E-step would fail: $S_k$
# is singular); a floor `reg` on the variance (`gmm_m_step`'s default is $10^{-6}$, here $10^{-3}$) prevents it.

# %%
xo = torch.cat([x1, torch.tensor([8.0], dtype=f64)])
with_outlier = gmm.GMMParams(torch.log_softmax(torch.cat([ref.log_pi, torch.tensor([-5.0], dtype=f64)]), 0),
                             torch.cat([ref.means, torch.tensor([[8.0]], dtype=f64)]),
                             torch.cat([ref.covs, torch.ones(1, 1, 1, dtype=f64)]))
sigmas = np.logspace(-12, 0, 49)
ell_sigma = []
for s_ in sigmas:
    covs = with_outlier.covs.clone()
    covs[3] = s_**2
    ell_sigma.append(float(gmm.gmm_e_step(xo, gmm.GMMParams(with_outlier.log_pi, with_outlier.means, covs))[1].mean()))
ell_sigma = np.array(ell_sigma)
variances = {}
for reg in (0.0, 1e-3):
    p_r, variances[reg] = with_outlier, []
    for _ in range(10):
        log_q_r, _ = gmm.gmm_e_step(xo, p_r)
        p_r = gmm.gmm_m_step(xo, log_q_r.exp(), reg=reg)
        variances[reg].append(float(p_r.covs[3, 0, 0]))
        if variances[reg][-1] <= 0.0:
            break
print("   variance of the outlier's component, reg=0:", variances[0.0], "| reg=1e-3, after 10:", variances[1e-3][-1])
cert.at_most("1.singularity: l(sigma=1e-12) > l(sigma=1e-6) + 1/N (unbounded)", ell_sigma[24] + 1 / len(xo), ell_sigma[0])
cert.equal("1.singularity: reg=0 collapses the variance to 0", variances[0.0][-1], 0.0)
cert.at_most("1.singularity: reg=1e-3 floors it", 1e-3, min(variances[1e-3]), 1e-15)
fig, axes = plt.subplots(1, 2, figsize=(9, 3))
axes[0].semilogx(sigmas, ell_sigma)
axes[0].set(xlabel=r"$\sigma$ of the component on $x_0$", ylabel=r"$\ell/N$", title=r"no maximum: $\ell$ grows like $-\log\sigma$")
axes[1].semilogy(np.maximum(variances[0.0], 1e-300), "o-", label="reg = 0 (reaches 0, drawn at 1e-300)")
axes[1].semilogy(variances[1e-3], "s-", label="reg = 1e-3")
axes[1].set(xlabel="EM iteration", ylabel="variance", title="collapse onto the outlier")
axes[1].legend(fontsize=7)
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_singularity", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# ## 1b. Hard EM and k-means: the small-variance limit (PRML §9.3.2)
#
# Fix equal weights and a shared covariance $\sigma^2I$. The posterior is $q_{nk}=\mathrm{softmax}_k(-\|x_n-m_k\|^2/2\sigma^2)$;
# as $\sigma\to0$ it becomes the one-hot indicator of the nearest mean and the M-step mean is the mean of its members —
# one Lloyd iteration of k-means, and $\sigma^2\ell\to-\frac12\sum_n\min_k\|x_n-m_k\|^2$ (the k-means distortion). This is
# **hard (classification) EM**: it maximises the *classification* likelihood $\sum_n\max_k\log p(x_n,k)$, a different
# objective from $\ell$, so its fixed points are not EM's. Check against scikit-learn's `KMeans` (one iteration from
# the same means).

# %%
from sklearn.cluster import KMeans  # noqa: E402

m0 = trace2.params[1].means
km = KMeans(n_clusters=3, init=m0.numpy(), n_init=1, max_iter=1, algorithm="lloyd").fit(X2)
for sigma in (1.0, 0.3, 0.05, 0.01):
    p_s = gmm.GMMParams(torch.full((3,), -math.log(3), dtype=f64), m0, (sigma**2 * torch.eye(2, dtype=f64)).expand(3, 2, 2))
    q_s = gmm.gmm_e_step(x2, p_s)[0].exp()
    step = gmm.gmm_m_step(x2, q_s, reg=0.0).means
    print(f"   sigma={sigma:4g}: mean |q - onehot(nearest)|_1 = {float((q_s - torch.eye(3, dtype=f64)[q_s.argmax(1)]).abs().sum(1).mean()):.1e}, "
          f"max |M-step mean - k-means centre| = {float((step - torch.as_tensor(km.cluster_centers_)).abs().max()):.1e}")
cert.equal("1b.hard EM (sigma=0.01) = one k-means step (sklearn)", step - torch.as_tensor(km.cluster_centers_), 1e-8)

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
cert.equal("2.vmf d=2: density integrates to 1", worst, 1e-10)

ks = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
closed = np.log(ks) - np.log(2 * np.pi) - ks - np.log1p(-np.exp(-2 * ks))  # log(kappa / (4 pi sinh kappa))
cert.equal("2.vmf d=3: log c_3 = log(kappa / (4 pi sinh kappa))", vmf_log_normalizer(3, ks) - closed, 1e-10)

import mpmath  # noqa: E402  (arbitrary precision reference; a dependency of torch's sympy)

mpmath.mp.dps = 50
worst = 0.0
for d, kap in [(128, 1e4), (512, 1.0), (64, 50.0)]:
    nu = d / 2 - 1
    ref_c = nu * mpmath.log(kap) - d / 2 * mpmath.log(2 * mpmath.pi) - mpmath.log(mpmath.besseli(nu, kap))
    worst = max(worst, abs(vmf_log_normalizer(d, kap) - float(ref_c)) / abs(float(ref_c)))
cert.equal("2.vmf large d, kappa: log c_d vs 50-digit reference (rel)", worst, 1e-8)

d, kap = 10, 5.0
u = rng.standard_normal((n_mc, d))
u /= np.linalg.norm(u, axis=1, keepdims=True)
area = 2 * np.pi ** (d / 2) / math.gamma(d / 2)
vals = area * np.exp(vmf_log_density(u, np.eye(d)[0], kap))
se = vals.std() / np.sqrt(n_mc)
print(f"   d=10 Monte-Carlo integral = {vals.mean():.4f} +- {se:.4f}")
cert.equal("2.vmf d=10: MC integral = 1 (in standard errors)", (vals.mean() - 1) / se, 4.0)

# %% [markdown]
# **Maximum likelihood** (Banerjee et al. 2005; SiamMM Eq. 5–7). With weights $w_i=p(k\mid v_i)$ the
# weighted log-likelihood is $\sum_i w_i\big[\log c_d(\kappa)+\kappa\mu^\top v_i\big]$. Maximise over $\mu$ on the
# sphere with a Lagrange multiplier (the same computation as MiCE Eq. 14–16, §3): $\mu\propto\sum_i w_iv_i$.
# With the mean resultant $r=\sum_i w_iv_i/\sum_iw_i$,
#
# $$\hat\mu=\frac{r}{\|r\|}\ (6),\qquad \frac{\partial}{\partial\kappa}:\ -\frac{c_d'(\kappa)}{c_d(\kappa)}=A_d(\kappa):=\frac{I_{d/2}(\kappa)}{I_{d/2-1}(\kappa)}=\|r\|,
# \qquad \hat\kappa\approx\frac{\|r\|d-\|r\|^3}{1-\|r\|^2}\ (7).$$
#
# Eq. (7) is Banerjee's closed-form approximation to the root of $A_d(\kappa)=\|r\|$. Checks: `vmf_mean_resultant_length`
# equals the Bessel ratio in 50-digit arithmetic; it is $-\frac{d}{d\kappa}\log c_d$ by finite differences of
# `vmf_log_normalizer`; the maximiser of $\log c_d(\kappa)+\kappa\|r\|$ is the root. **How good is Eq. (7)?** On a dense
# grid of $R\in(0,1)$ its worst relative error is about 5 % for $d=3$, **1.05 % for $d=16$** (at $R\approx0.67$; "within 1 %"
# is false there) and 0.13 % for $d=128$: it shrinks roughly like $1/d$ and vanishes at both ends of $R$.

# %%
worst_bessel = 0.0
for d_, k_ in [(3, 0.5), (16, 3.0), (16, 40.0), (128, 900.0)]:
    ratio = mpmath.besseli(d_ / 2, k_) / mpmath.besseli(d_ / 2 - 1, k_)
    worst_bessel = max(worst_bessel, abs(float(vmf_mean_resultant_length(d_, k_)) - float(ratio)) / float(ratio))
cert.equal("2.mle: A_d(kappa) = I_{d/2} / I_{d/2-1} (50 digits, rel)", worst_bessel, 1e-10)
kt = np.array([0.5, 3.0, 40.0, 900.0])
h = 1e-5
fd = (vmf_log_normalizer(16, kt + h) - vmf_log_normalizer(16, kt - h)) / (2 * h)
cert.equal("2.mle: -d/dkappa log c_d = A_d (central differences, O(h^2))", fd + vmf_mean_resultant_length(16, kt), 1e-7)

worst_root = 0.0
for d in (3, 16, 128):
    for R in (0.2, 0.5, 0.8, 0.95):
        root = primer.exact_kappa(d, R)
        best = minimize_scalar(lambda k: -(vmf_log_normalizer(d, k) + k * R), bounds=(1e-6, 2 * root + 10), method="bounded",
                               options={"xatol": 1e-10}).x
        worst_root = max(worst_root, abs(best - root) / root)
cert.equal("2.mle: argmax_kappa = root of A_d(kappa) = ||r|| (rel)", worst_root, 1e-5)

R_grid = np.linspace(0.002, 0.998, 499)
stated = {3: 0.050, 16: 0.0106, 128: 0.0014}  # the bounds the text states
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for d, bound in stated.items():
    err = primer.banerjee_relative_error(d, R_grid)
    ax.plot(R_grid, 100 * err, label=f"d = {d}: max {100 * err.max():.3f} % at R = {R_grid[err.argmax()]:.3f}")
    cert.at_most(f"2.mle: Banerjee Eq. 7 rel. error <= {100 * bound:.2f} % (d={d}, dense R grid)", err, bound)
ax.axhline(1.0, color="k", ls=":", lw=0.8)
ax.set(xlabel=r"$R=\|r\|$", ylabel="relative error of Eq. 7 (%)", yscale="log", ylim=(1e-4, 10), title="Banerjee's approximation vs the exact root")
ax.legend(fontsize=7)
viz.savefig(fig, "em_elbo_primer_banerjee_error", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# **Recovering known parameters.** `vmf_mle` on $n$ draws of `vmf_sample`. The tolerances are sampling errors, not
# guesses: the tangential part of the mean has variance $A_d(\kappa)/(n\kappa)$ per direction, so
# $\mathbb E[1-\cos(\hat\mu,\mu)]\approx\frac{d-1}{2n\kappa A_d(\kappa)}$; $\mathrm{Var}\,\bar R\approx A_d'(\kappa)/n$ with
# $A_d'=1-A_d^2-\frac{d-1}{\kappa}A_d$, so $\mathrm{sd}(\hat\kappa)\approx\sqrt{A_d'/n}/A_d'$ for the exact root. Eq. 7 adds its
# own (deterministic) bias, certified above; `vmf_mle` must be exactly Eq. 7 at the sample's $\bar R$.

# %%
d, kap_true, n = 5, 20.0, 4000
mu_true = rng.standard_normal(d)
mu_true /= np.linalg.norm(mu_true)
v = vmf_sample(mu_true, kap_true, n, seed=seed)
mu_hat, kap_hat = vmf_mle(v)
A = float(vmf_mean_resultant_length(d, kap_true))
A_prime = 1 - A**2 - (d - 1) / kap_true * A
R_bar = float(np.linalg.norm(v.mean(0)))
kap_root = primer.exact_kappa(d, R_bar)
sd_kappa = math.sqrt(A_prime / n) / A_prime
mean_1mcos = (d - 1) / (2 * n * kap_true * A)
print(f"   kappa: true {kap_true}, exact root {kap_root:.2f} (sd {sd_kappa:.2f}), Eq. 7 {float(kap_hat):.2f}; "
      f"1 - cos = {1 - float(mu_hat @ mu_true):.2e} (expected {mean_1mcos:.1e})")
cert.at_most("2.mle: 1 - cos(mu_hat, mu) <= 5 x its expectation", 1 - float(mu_hat @ mu_true), 5 * mean_1mcos)
cert.equal("2.mle: exact-root kappa - true (in sd)", (kap_root - kap_true) / sd_kappa, 4.0)
cert.equal("2.mle: vmf_mle kappa = Eq. 7 at the sample R (rel)", (float(kap_hat) - float(banerjee_kappa(R_bar, d))) / kap_root, 1e-9)

# %% [markdown]
# **PCA-κ (SiamMM App. C.1, Eq. 16).** Eq. (7) needs the dimension $d$, but embedding coordinates are
# correlated: if the data live near a $d'$-dimensional subspace, the nominal $d$ inflates $\hat\kappa$ by roughly
# $d/d'$. SiamMM re-measures $\|r\|$ after projecting onto $d^{PCA}$ principal components:
#
# $$\hat\kappa_k^{PCA}=\frac{\|r_k^{PCA}\|d^{PCA}-\|r_k^{PCA}\|^3}{1-\|r_k^{PCA}\|^2}.\tag{16}$$
#
# As SiamMM uses it: a mixture of $K=4$ vMF clusters ($\kappa=30$) in a $d'=8$-dimensional subspace of $\mathbb R^{64}$ **plus
# isotropic noise**, renormalised; the principal directions are those of *all* embeddings (mixlab's default: eigenvectors
# of the second moment $x^\top x/N$), so they are not aligned with any one cluster's $r_k$ and the projection **shrinks**
# $r_k$ ($\|Pr_k\|\le\|r_k\|$; SiamMM reports keeping >80 % of the norm with 150 of 256 components). Choose $d^{PCA}$ as
# the smallest number of components that captures 99 % of the second moment (our rule; the paper fixes 150). Checks:
# `pca_kappa` against a projection computed independently (numpy SVD), and that Eq. 16 at the chosen $d^{PCA}$ is closer
# to the true $\kappa$ than Eq. 7 with the nominal $d$ for every cluster.

# %%
d_eff, d_big, kap_true, Kp = 8, 64, 30.0, 4
centres8 = rng.standard_normal((Kp, d_eff))
centres8 /= np.linalg.norm(centres8, axis=1, keepdims=True)
v8 = np.concatenate([vmf_sample(centres8[k], kap_true, 800, seed=seed + 30 + k) for k in range(Kp)])
lab_p = np.repeat(np.arange(Kp), 800)
Qrot = np.linalg.qr(rng.standard_normal((d_big, d_eff)))[0]  # orthonormal columns
v64 = v8 @ Qrot.T + 0.01 * rng.standard_normal((len(v8), d_big))
v64 /= np.linalg.norm(v64, axis=1, keepdims=True)
r_k = np.stack([v64[lab_p == k].mean(0) for k in range(Kp)])
k_nominal = vmf_mle(v64, labels=lab_p, K=Kp)[1]
_, sv, Vt = np.linalg.svd(v64, full_matrices=False)  # independent: right singular vectors = eigenvectors of x^T x
energy = np.cumsum(sv**2) / np.sum(sv**2)
d_chosen = int(np.argmax(energy >= 0.99) + 1)
for d_pca in (2, 4, 8, 16, 64):
    kp = pca_kappa(v64, labels=lab_p, K=Kp, n_components=d_pca)
    keep = np.linalg.norm(r_k @ pca_components(v64, d_pca).T, axis=1) / np.linalg.norm(r_k, axis=1)
    print(f"   d_PCA={d_pca:3d}: second moment captured {energy[d_pca - 1]:.4f}; ||r_k^PCA|| / ||r_k|| = {np.round(keep, 3)}; "
          f"kappa^PCA = {np.round(kp, 1)}")
k_pca = pca_kappa(v64, labels=lab_p, K=Kp, n_components=d_chosen)
k_ref = banerjee_kappa(np.linalg.norm(r_k @ Vt[:d_chosen].T, axis=1), d_chosen)
keep_chosen = np.linalg.norm(r_k @ Vt[:d_chosen].T, axis=1) / np.linalg.norm(r_k, axis=1)
print(f"   chosen d_PCA = {d_chosen}; kappa: true {kap_true} | Eq. 7 nominal d=64: {np.round(k_nominal, 1)} | Eq. 16: {np.round(k_pca, 2)}")
cert.at_most("2.pca: projection shrinks r_k (d_PCA = 2): ||r_PCA|| <= ||r||",
             np.linalg.norm(r_k @ Vt[:2].T, axis=1), np.linalg.norm(r_k, axis=1))
cert.at_most("2.pca: ... and keeps > 80 % of it at the chosen d_PCA", 0.8, keep_chosen)
cert.equal("2.pca: pca_kappa = Eq. 16 with a numpy-SVD projection (rel)", (k_pca - k_ref) / k_ref, 1e-8)
cert.at_most("2.pca: |Eq. 16 - kappa| < |Eq. 7 nominal - kappa|, every cluster", np.abs(k_pca - kap_true), np.abs(k_nominal - kap_true))

# %% [markdown]
# **Spherical k-means is hard EM for the vMF mixture.** A vMF mixture with equal weights and a shared $\kappa$ has
# posterior $p(k\mid v)=\mathrm{softmax}_k(\kappa\mu_k^\top v)$ (the $c_d(\kappa)$ cancel). Its argmax is the nearest centroid by cosine
# for every $\kappa$ (softmax is monotone), and as $\kappa\to\infty$ it becomes that one-hot vector, at rate
# $1-q_{\rm top}\le(K-1)e^{-\kappa m}$ with $m$ the cosine margin to the second-nearest centroid; the M-step (6) with
# one-hot weights is the normalised mean of the members. So `spherical_kmeans` (faiss) is **classification (hard) EM**
# — it maximises $\sum_n\max_k\kappa\mu_k^\top v_n$ — not EM on the mixture likelihood; its output is a fixed point of
# hard EM, which soft EM at finite $\kappa$ moves away from.

# %%
K, d = 3, 3
means = mmd_centers(K, d, seed=seed, dtype=f64).numpy()
v = np.concatenate([vmf_sample(means[k], 12.0, 200, seed=seed + 10 + k) for k in range(K)])
C, labels = spherical_kmeans(v, K, iters=50, seed=seed)
C = C.astype(np.float64)
mu_hard = vmf_mle(v, labels=labels, K=K)[0]
cert.equal("2.skm: k-means centroids = Eq. 6 on their labels (fixed point)", mu_hard - C, 1e-5)
cert.equal("2.skm: k-means labels = nearest centroid (fixed point)", float(((v @ C.T).argmax(1) != labels).mean()), 0.0)
onehot = np.eye(K)[labels]
cos_sorted = np.sort(v @ C.T, 1)
margin = cos_sorted[:, -1] - cos_sorted[:, -2]
gaps, rate_lhs, rate_rhs = [], [], []
for kap in (1.0, 10.0, 100.0, 1000.0):
    q_v = np.exp(posterior_and_elbo(np.full((len(v), K), -np.log(K)), vmf_log_density(v, C, kap))[0])
    gaps.append(np.abs(q_v - onehot).sum(1).mean())
    rate_lhs.append(1 - q_v.max(1))
    rate_rhs.append((K - 1) * np.exp(-kap * margin))
    print(f"   kappa={kap:6g}: mean |q - onehot|_1 = {gaps[-1]:.2e}, max|mu_soft - mu_hard| = {np.abs(vmf_mle(v, weights=q_v)[0] - mu_hard).max():.2e}")
cert.at_most("2.skm: 1 - q(top) <= (K-1) exp(-kappa * margin), all kappa", np.concatenate(rate_lhs), np.concatenate(rate_rhs), 1e-12)
cert.at_most("2.skm: posterior -> one-hot monotonically in kappa", np.array(gaps[1:]), np.array(gaps[:-1]))

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
from mixlab.mixture import contrastive, mice  # noqa: E402

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
cert.at_most("3.mice Eq.7: ELBO <= log p(y|x)", L7, log_py)
cert.equal("3.mice Eq.7: gap = KL(q || p(z|x,y)) (App. A.1)", log_py - L7 - kl_categorical(log_q, log_post), 1e-10)

# %% [markdown]
# **The queue estimator.** $Z$ is intractable for real $N$, so MiCE keeps a queue $\mathbf q\in\mathbb R^{\nu\times K\times d}$ of past
# teacher embeddings and uses
#
# $$\hat Z(x_n,k)=\Phi(x_n,y_n,k)+\sum_{i=1}^{\nu}\exp\big(\mathbf q_{i,k}^\top(f_{n,k}+\mu_k)/\tau\big),\tag{9}$$
#
# the approximate posterior $q\propto p(k\mid x_n)\,\Phi/\hat Z$ (10) and the approximate ELBO $\tilde{\mathcal L}$ (11), i.e. §1's
# exact E-step applied to $\log\Phi-\log\hat Z$ (`mice.mice_objective` calls `posterior_and_elbo`). **Eq. (10) as printed has $Z$
# in the numerator and $\hat Z$ in the denominator**, which is not a distribution; we (and `mice.py`) use $\hat Z$ in both, the
# only reading under which (11) is §1's ELBO at its own posterior. For any $q$,
# $\tilde{\mathcal L}=\mathcal L+\mathbb E_q[\log Z/\hat Z]$ (App. A.4). All vectors are unit, so every exponent lies in
# $[-2/\tau,2/\tau]$: $Z\le Ne^{2/\tau}$, $\hat Z\ge\nu e^{-2/\tau}$, hence the bound inside **Theorem 1**'s proof
#
# $$\log\frac{Z}{\hat Z}\le\log N-\log\nu+\frac4\tau,\qquad \tilde{\mathcal L}\le\log p(y_n\mid x_n)+\log N-\log\nu+\frac4\tau .$$
#
# ($\hat Z$ of Eq. 9 has $\nu+1$ terms; App. A.4 writes $\nu$; the bound holds either way.) We check this bound, **not**
# Theorem 1's convergence claim: that needs $\tilde{\mathcal L}$ to rise at every step, which neither a single gradient
# step of the M-step nor a queue that changes between steps (so $\hat Z$ is a different function at every step) guarantees.
# The bound is loose; the measured $\mathbb E_q[\log Z/\hat Z]$ against $\nu$ is the interpretable slack (figure in §7).

# %%
zhat_slack = {}
worst_dec, ratio_lhs, ratio_rhs, elbo_lhs, elbo_rhs = 0.0, [], [], [], []
for nu in (16, 64, 256, 1024):
    for t in (0.2, 0.5, 1.0):
        queue = unit(torch.randn(nu, K, d, generator=gen, dtype=f64))
        out = mice.mice_objective(f, v, g, mu, omega, queue, tau=t, kappa=kap_gate)  # Eq. 9-11
        ll_t, logZ_t = exact_expert_loglik(f, v, mu, t)
        logZhat = torch.logsumexp(mice.expert_logits(f, v, mu, queue, t), -1)
        L_exact = elbo(out["log_q"], out["log_prior"], ll_t)  # Eq. 7 at the same q
        ratio = (out["log_q"].exp() * (logZ_t - logZhat)).sum(1)
        bound = math.log(N) - math.log(nu) + 4 / t
        worst_dec = max(worst_dec, float((out["elbo"] - L_exact - ratio).abs().max()))
        ratio_lhs.append(logZ_t - logZhat)
        ratio_rhs.append(torch.full_like(logZ_t, bound))
        elbo_lhs.append(out["elbo"])
        elbo_rhs.append(log_marginal(out["log_prior"], ll_t) + bound)
        zhat_slack[(nu, t)] = (float(ratio.mean()), float(ratio.std()))
cert.equal("3.mice Th.1: L~ = L + E_q[log Z/Zhat]", worst_dec, 1e-10)
cert.at_most("3.mice Th.1: log Z/Zhat <= log N - log nu + 4/tau", torch.cat([r.flatten() for r in ratio_lhs]), torch.cat([r.flatten() for r in ratio_rhs]))
cert.at_most("3.mice Th.1: L~ <= log p(y|x) + log N - log nu + 4/tau", torch.cat(elbo_lhs), torch.cat(elbo_rhs))

# %% [markdown]
# **The analytical μ update (Eq. 13, App. A.2).** Under A1 (hard $\hat q$) and A2 ($Z\equiv c$, self-normalised), only
# $\sum_n\hat q(z_n{=}k)\,v_{y_n,k}^\top\mu_k/\tau$ depends on $\mu_k$. Maximise it on $\|\mu_k\|=1$ with a Lagrange multiplier:
#
# $$\nabla_{\mu_k}\Big[\lambda(1-\mu_k^\top\mu_k)+\sum_n\hat q_{nk}v_{y_n,k}^\top\mu_k/\tau\Big]=-2\lambda\mu_k+\hat\mu_k/\tau=0\ (14\text{–}15),\quad
# \mu_k^\top\mu_k=1\ (16)\ \Rightarrow\ \lambda=\pm\frac{\|\hat\mu_k\|}{2\tau},\ \ \mu_k=\pm\frac{\hat\mu_k}{\|\hat\mu_k\|},$$
#
# $\hat\mu_k=\sum_{n:\hat z_n=k}v_{y_n,k}$. Stationarity has **two** solutions, the maximum and the minimum on the sphere.
# Cauchy–Schwarz picks one: $\hat\mu_k^\top\mu_k\le\|\hat\mu_k\|$ with equality iff $\mu_k=+\hat\mu_k/\|\hat\mu_k\|$, the root with
# $\lambda>0$ — Eq. (13). It needs $\hat\mu_k\neq0$: for an **empty cluster** (or members that cancel) the objective is constant
# in $\mu_k$ and there is no maximiser; `mice.analytical_mu` then sets $\mu_k=0$ and flags the cluster (as the authors'
# code does: the class term $v^\top\mu_k$ becomes neutral, so points can return and the next Eq. 13 re-estimates it;
# `empty_mu="keep"` keeps the stale prototype instead).
# Checks: Eq. 13 equals a numerical maximiser (L-BFGS) of the objective built from `mice.expert_log_likelihood`
# (A2: `queue=None`), the tangential gradient vanishes there, $-\hat\mu/\|\hat\mu\|$ is the minimum, the empty-cluster rule,
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
cert.equal("3.mice Eq.13: analytical mu = numerical argmax (1 - cos)", 1 - (mu13 * mu_num).sum(1), 1e-10)
m = mu13.clone().requires_grad_(True)
(grad,) = torch.autograd.grad((q_hard * mice.expert_logits(f, v, m, None, tau)[..., 0]).sum(), m)
# expert_logits normalises mu, so grad is the tangential part of mu_hat/tau: zero at the maximiser (Eq. 14-15)
cert.equal("3.mice Eq.14-16: tangential gradient vanishes at mu_k = mu_hat/||mu_hat||", grad, 1e-10)
cert.at_most("3.mice Eq.13: the lambda < 0 root -mu_hat/||mu_hat|| is the minimum", mu_objective(-mu13), mu_objective(mu13))
counts_e = counts.clone()
counts_e[0] = 0  # an empty cluster
sums_e = sums.clone()
sums_e[0] = 0.0
mu_e, empty_e = mice.analytical_mu(sums_e, counts_e, mu)
cert.equal("3.mice Eq.13: an empty cluster gets mu_k = 0 (default, neutral class term)", mu_e[0].abs().max() + (~empty_e[0]).double(), 1e-12)
mu_keep, _ = mice.analytical_mu(sums_e, counts_e, mu, empty_mu="keep")
cert.equal("3.mice Eq.13: empty_mu='keep' keeps the previous prototype", (mu_keep[0] - unit(mu[0])).abs().max(), 1e-12)
mu_num_q = numerical_argmax(queue=unit(torch.randn(64, K, d, generator=gen, dtype=f64)))
print(f"   with a queue (A2 dropped) the argmax moves away from Eq. 13: 1 - cos = {float((1 - (mu13 * mu_num_q).sum(1)).max()):.2e}")

# %% [markdown]
# **Theorems 2–3: MoCo is MiCE under A4–A6.** A4: one embedding shared by all experts ($f_{n,k}=f_n$, $v_{y_n,k}=v_{y_n}$);
# A5: no class-level term ($\mu$ dropped from $\Phi$). Then every expert is the same softmax classifier $p(y_n\mid x_n)$,
# so $p(y_n\mid x_n)=\sum_k p(k\mid x_n)\,p(y_n\mid x_n)$ is MoCo's $\exp(v_{y_n}^\top f_n/\tau)/\sum_i\exp(v_i^\top f_n/\tau)$ (Theorem 2, Eq. 1)
# **for any gating**, and the posterior equals the gating prior (Bayes with a likelihood that does not depend on $k$);
# with A6 ($q$ = posterior) the approximate ELBO (11) *is* the InfoNCE term (2) of MoCo (Theorem 3): the KL term is 0 and
# $\mathbb E_q$ of a constant is the constant. **A3** ($\kappa\to\infty$, prior $1/K$) is *not* needed for Theorems 2–3; it only makes
# the posterior of Lemma 1 uniform. Checks with a non-uniform gating (A3 dropped) and with A3.

# %%
f1, v1 = f[:, 0], v[:, 0]  # shared embeddings (A4)
fK, vK = f1[:, None].expand(N, K, d), v1[:, None].expand(N, K, d)
ll_A45, _ = exact_expert_loglik(fK, vK, mu, tau, class_level=False)
eq1 = torch.diagonal(torch.log_softmax(unit(f1) @ unit(v1).T / tau, -1))  # Eq. 1: log softmax over the N labels
queue = unit(torch.randn(128, K, d, generator=gen, dtype=f64))
queue = queue[:, :1].expand(-1, K, -1).clone()  # A4 for the queue as well
lp_gate = mice.gating_log_prior(g, omega, kap_gate)
print(f"   the non-uniform gating: mean max_k p(k|x) = {float(lp_gate.exp().max(1).values.mean()):.3f} (uniform: {1 / K})")
for a3 in (False, True):
    lp_ = mice.gating_log_prior(g, omega, kap_gate, uniform=a3)
    tag = "with A3" if a3 else "A3 dropped"
    cert.equal(f"3.mice Th.2 ({tag}): MiCE's p(y|x) = MoCo's softmax classifier", log_marginal(lp_, ll_A45) - eq1, 1e-12)
    out = mice.mice_objective(fK, vK, g, mu, omega, queue, tau=tau, kappa=kap_gate, uniform_prior=a3, class_level=False)
    cert.equal(f"3.mice Th.3 ({tag}): L~ = InfoNCE (Eq. 2)", out["elbo"] - contrastive.info_nce(f1, v1, queue[:, 0], tau), 1e-12)
    cert.equal(f"3.mice ({tag}): posterior = gating prior", out["log_q"] - lp_, 1e-12)
cert.equal("3.mice Lemma 1 (A3): posterior is uniform", out["log_q"] + math.log(K), 1e-12)

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
cert.equal("3.mice Th.4: hard q = nearest prototype by cosine", float((z_mice != z_cos).double().mean()), 0.0)
mu_mice, _ = mice.analytical_mu(*mice.assignment_sums(vt, z_mice, K), mu0)
C1, _ = spherical_kmeans(vt.numpy(), K, iters=1, init=mu0.numpy())
cert.equal("3.mice Th.4: Eq. 13 = one spherical k-means step (faiss)", mu_mice.numpy() - C1, 1e-5)

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
# Algorithm 2 builds it row by row. Checks: `mmd_centers` has unit rows, off-diagonal Gram
# $=-1/(K-1)$, zero sum; it attains the bound, and random small moves of its centres only raise the largest
# inner product (a local test of optimality that a wrong configuration fails).

# %%
rng, gen = rng_for("mmd")
worst = 0.0
for K, d in [(2, 1), (4, 3), (10, 9), (10, 128), (20, 128)]:
    W = mmd_centers(K, d, seed=seed, dtype=f64)
    G = W @ W.T
    target = torch.full((K, K), -1.0 / (K - 1), dtype=f64).fill_diagonal_(1.0)
    worst = max(worst, float((G - target).abs().max()), float(W.sum(0).norm()))
cert.equal("4.mmd: Gram = simplex (-1/(K-1)), sum = 0", worst, 1e-12)


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


def max_inner(W):
    """max_{i != j} <w_i, w_j> of the rows of W (normalised)."""
    U = torch.nn.functional.normalize(W, dim=-1)
    return (U @ U.transpose(-1, -2) - 3 * torch.eye(W.shape[-2], dtype=W.dtype)).amax((-1, -2))


for K, d in [(4, 3), (6, 5), (10, 128)]:
    W = mmd_centers(K, d, seed=seed, dtype=f64)
    moved = W + 1e-3 * torch.randn(200, K, d, generator=gen, dtype=f64)
    cert.equal(f"4.mmd: MMD attains the bound -1/(K-1) (K={K}, d={d})", float(max_inner(W)) + 1 / (K - 1), 1e-12)
    cert.at_most(f"4.mmd: 200 random moves only raise the max (K={K}, d={d})", max_inner(W), max_inner(moved))

# %% [markdown]
# **What breaks when $K>d+1$.** The simplex Gram matrix has rank $K-1>d$, so no $K$ unit vectors in
# $\mathbb R^d$ reach $-1/(K-1)$; `mmd_centers` refuses. The best achievable maximum is strictly larger
# (e.g. $K=6$ on the circle: the hexagon, $\cos 60^\circ=0.5$, versus $-0.2$), so raise $d$ to at least $K-1$.

# %%
K = 6
G = torch.full((K, K), -1.0 / (K - 1), dtype=f64).fill_diagonal_(1.0)
eig = torch.linalg.eigvalsh(G)
print("   eigenvalues of the K=6 simplex Gram matrix:", np.round(eig.numpy(), 6))
cert.equal("4.mmd: simplex Gram has rank K-1", int((eig > 1e-9).sum()) - (K - 1), 0)
try:
    mmd_centers(K, 2)
    raised = False
except ValueError as e:
    raised = True
    print("   mmd_centers(6, 2) ->", e)
cert.equal("4.mmd: K > d+1 is refused", 0.0 if raised else 1.0, 0.0)
found = minimax_inner_product(6, 2)
print(f"   K=6, d=2: numerical minimax {found:.4f} (hexagon 0.5) vs the unreachable -0.2")
cert.equal("4.mmd: K=6 in R^2: a numerical minimax finds the hexagon's 0.5", found - 0.5, 1e-4)

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
cert.equal("5.nmm: batch mean of a* is 0", worst_mean, 1e-6)
cert.equal("5.nmm: batch (biased) variance of a* is 1 (up to eps)", worst_var, 1e-6)
cert.at_most("5.nmm Eq.3: |mean h - 1/2| <= mean |a*/gamma|^3 / 48", worst_eq3, 0.0, 1e-6)
a = torch.zeros(n, 1)
a[0] = 10.0  # one outlier: the extreme case
a_max = float(nmm.normalize_relevance(a)[0].abs().max())
print(f"   largest |a*| for n={n}: {a_max:.4f}; sqrt(n-1) = {math.sqrt(n - 1):.4f}; nmm.score_bound(n) = {nmm.score_bound(n):.4f}")
cert.equal("5.nmm: max |a*| = sqrt(n-1) with the biased sigma", a_max - math.sqrt(n - 1), 1e-3)

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
    se_batch = h_norm(ubatch).std(0) / math.sqrt(len(ubatch))  # Eq. 4 is a 128-point Monte-Carlo estimate
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
print("   standard error of the 128-point batch estimate:", np.round(se_batch.numpy(), 4))
cert.equal("5.nmm Eq.4-5: every I_j / V = 0.5 (in s.e. of the 128-point batch)", (I_norm - 0.5) / se_batch, 4.0)
cert.equal("5.nmm: without normalisation the largest integral wins most points",
           float(int(I_raw.argmax()) != int(sizes_raw.argmax())), 0.0)
h_ratio = nmm.density(a_star, gam).double()
cert.equal("5.nmm: density_ratio posterior = h_j / sum_k h_k (probability space)",
           nmm.log_posterior(a_star, gam, kind="density_ratio").exp() - h_ratio / h_ratio.sum(1, keepdim=True), 1e-6)
max_exact, max_paper = float(post_exact.exp().max(1).values.mean()), float(post_paper.exp().max(1).values.mean())
print(f"   mean max-posterior: exact h-ratio {max_exact:.3f}, paper's softmax(a*) {max_paper:.3f}")
cert.at_most("5.nmm: softmax(a*) is sharper than the h-mixture's own posterior", max_exact, max_paper)

# %%
gx, gy = torch.meshgrid(torch.linspace(-3, 3, 80), torch.linspace(-3, 3, 80), indexing="xy")
grid_pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
with torch.no_grad():
    maps = {"sigmoid(a) (no normalisation)": h_raw(grid_pts), r"sigmoid(a*/$\gamma$)": h_norm(grid_pts)}
fig, axes = plt.subplots(2, 3, figsize=(9, 5.6), sharex=True, sharey=True)
for r, (name, hmap) in enumerate(maps.items()):
    for j in range(3):
        cs = axes[r, j].contourf(gx, gy, hmap[:, j].reshape(80, 80), levels=np.linspace(0, 1, 11), cmap="viridis")
        axes[r, j].set_title(f"j={j}, I/V = {float((I_raw if r == 0 else I_norm)[j]):.2f}", fontsize=8)
    axes[r, 0].set_ylabel(name, fontsize=8)
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
# Checks with `mixlab/mixture/tcc.py` (query, KL), `contrastive.py` (the InfoNCE $\log p(i\mid x,c)$) and `em.py`:
# the KL formula; Eq. (1) lies below $\log p(i\mid x)$ and is tight at the posterior; the Gumbel-max trick samples $q$
# exactly, so `tcc.instance_elbo` at hard Gumbel samples is an unbiased estimate of Eq. (1). **Eq. (2) with $\lambda>0$ is
# not a lower bound**: it replaces $\mathbb E_q[f(e_k)]$ by $\mathbb E_\epsilon[f(c_\lambda)]$, which can be larger.

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
    return contrastive.info_nce(tcc.instance_query(c, protos, h, alpha), keys, negs, tau, normalize=False)


eye = torch.eye(K, dtype=f64)
loglik_k = torch.stack([loglik_of(eye[k].expand(B, K)) for k in range(K)], 1)  # [B, K]: log p(i|x,k)
log_unif = torch.full((B, K), -math.log(K), dtype=f64)
H = -(log_q.exp() * log_q).sum(1)
cert.equal("6.tcc: KL(q || 1/K) = log K - H(q)", tcc.kl_to_uniform(log_q) - (math.log(K) - H), 1e-12)
eq1 = elbo(log_q, log_unif, loglik_k)  # Eq. 1
log_pi = log_marginal(log_unif, loglik_k)  # log p(i | x)
cert.at_most("6.tcc: Eq. 1 <= log p(i|x)", eq1, log_pi)
log_post, tight = posterior_and_elbo(log_unif, loglik_k)
cert.equal("6.tcc: Eq. 1 tight at q = posterior", tcc.instance_elbo((log_post.exp() * loglik_k).sum(1), log_post) - log_pi, 1e-12)
print(f"   mean slack log p(i|x) - Eq.1 at TCC's q: {float((log_pi - eq1).mean()):.3f} nats")

row = log_q[:1].expand(n_mc, K)
noise = tcc.sample_gumbel((n_mc, K), generator=gen, dtype=f64)
hard = tcc.gumbel_softmax(row, 1.0, noise=noise, hard=True).detach()
freq, p = hard.mean(0), log_q[0].exp()
se = (p * (1 - p) / n_mc).sqrt()
cert.equal("6.tcc: Gumbel-max argmax ~ q (max z-score)", (freq - p) / se, 4.5)
M_img = max(n_mc // B, 50)
hard_all = tcc.gumbel_softmax(log_q.expand(M_img, B, K), 1.0, noise=tcc.sample_gumbel((M_img, B, K), generator=gen, dtype=f64), hard=True).detach()


def loglik_batch(c):
    """log p(i | x_i, c) for assignment vectors c [M, B, K] of every image."""
    M_ = c.shape[0]
    z = tcc.instance_query(c.reshape(-1, K), protos, h.repeat(M_, 1), alpha)
    return contrastive.info_nce(z, keys.repeat(M_, 1), negs, tau, normalize=False).reshape(M_, B)


est = tcc.instance_elbo(loglik_batch(hard_all), log_q.expand(M_img, B, K))  # one-sample Eq. 1 estimates, [M, B]
cert.equal("6.tcc: mean instance_elbo at Gumbel-max samples = Eq. 1 (in s.e.)",
           (est.mean(0) - eq1) / (est.std(0) / math.sqrt(M_img)).clamp_min(1e-12), 4.5)

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
    return contrastive.info_nce(z, keys[i].expand(c.shape[0], d), negs, tau, normalize=False)


hard = tcc.gumbel_softmax(log_q[i0].expand(n_mc, K), 1.0, noise=eps_noise, hard=True).detach()
f_hard = f_single(hard, protos)  # f at the Gumbel-max samples e_argmax ~ q
se = float(f_hard.std() / math.sqrt(n_mc))
cert.equal("6.tcc: mean f(Gumbel-max sample) = E_q[f] (in s.e.)", (float(f_hard.mean()) - exact_k5) / se, 4.0)
obj_gap = []
for lam in lams[:6]:
    c = tcc.gumbel_softmax(log_q[i0].expand(n_mc, K), lam, noise=eps_noise)
    obj_gap.append(float((f_single(c, protos) - f_hard).mean()))  # same noise: no MC error in the limit
print("   K=5, E[f(c_lambda)] - E[f(e_argmax)]:", {lam: round(gp, 4) for lam, gp in zip(lams, obj_gap)})
cert.at_most("6.tcc: relaxed objective gap shrinks for lambda <= 0.5", np.abs(obj_gap[3:]), np.abs(obj_gap[2:-1]))
cert.equal("6.tcc: ... like O(lambda): gap(0.05)/gap(0.1) - 1/2", obj_gap[-1] / obj_gap[-2] - 0.5, 0.1)

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
cert.at_most("6.tcc: gradient bias decreases monotonically for lambda <= 0.2", np.array(small[1:]), np.array(small[:-1]))
cert.at_most("6.tcc: bias(0.01) / bias(0.2) <= 0.15 (O(lambda) predicts 0.05)", bias[-1] / bias[lams.index(0.2)], 0.15)

# %% [markdown]
# **Eq. (2) is not a lower bound, and what λ trades.** For every image, estimate the relaxed objective
# $\mathbb E_\epsilon[\log p(i\mid x,c_\lambda)]-\mathrm{KL}(q\|\tfrac1K)$ (`primer.relaxed_instance_bound`) and compare it with
# $\log p(i\mid x)$: for $\lambda>0$ it **exceeds** $\log p(i\mid x)$ for a fraction of images (beyond 3 standard errors), because
# $f(c_\lambda)$ at a soft, averaged query can beat every $f(e_k)$. Its bias against Eq. 1 shrinks as $\lambda\to0$ while the
# variance of the one-sample estimate (what training uses) grows towards that of the hard sample.

# %%
lam_grid = [2.0, 1.0, 0.5, 0.3, 0.1, 0.03]
noise_all = tcc.sample_gumbel((M_img, B, K), generator=gen, dtype=f64)
exceed, exceed_3se, obj_bias, obj_var = [], [], [], []
for lam in lam_grid:
    mean_l, se_l = primer.relaxed_instance_bound(log_q, loglik_batch, lam, noise_all)
    exceed.append(float((mean_l > log_pi).double().mean()))
    exceed_3se.append(float((mean_l - 3 * se_l > log_pi).double().mean()))
    obj_bias.append(float((mean_l - eq1).mean()))
    obj_var.append(float((se_l**2 * M_img).mean()))
    if lam == 1.0:
        cert.at_most("6.tcc: relaxed Eq. 2 (lambda=1) exceeds log p(i|x) for some image (by > 3 s.e.)",
                     float((log_pi + 3 * se_l - mean_l).min()), 0.0)
var_hard = float(est.var(0).mean())
for lam, e, e3, b_, v_ in zip(lam_grid, exceed, exceed_3se, obj_bias, obj_var):
    print(f"   lambda={lam:5g}: relaxed Eq. 2 > log p(i|x) for {100 * e:5.1f} % of images ({100 * e3:4.1f} % beyond 3 s.e.);"
          f" mean bias vs Eq. 1 {b_:+.4f}, per-sample variance {v_:.4f}")
print(f"   hard Gumbel-max sample (lambda -> 0): variance {var_hard:.4f}")
fig, axes = plt.subplots(1, 3, figsize=(12, 3.1))
axes[0].semilogx(lam_grid, 100 * np.array(exceed), "o-", label="point estimate")
axes[0].semilogx(lam_grid, 100 * np.array(exceed_3se), "s--", label="beyond 3 s.e.")
axes[0].set(xlabel=r"$\lambda$", ylabel="% of images", title=r"relaxed Eq. 2 $>\log p(i|x)$")
axes[0].legend(fontsize=7)
axes[1].loglog(lam_grid, np.abs(obj_bias), "o-", label="objective |bias| (K=5, mean over images)")
axes[1].loglog(lams, bias, "s-", label="gradient rel. bias (K=2, exact)")
axes[1].set(xlabel=r"$\lambda$", title="bias vanishes as lambda -> 0")
axes[1].legend(fontsize=7)
axes[2].semilogx(lam_grid, obj_var, "o-")
axes[2].axhline(var_hard, color="k", ls=":", label="hard sample")
axes[2].set(xlabel=r"$\lambda$", title="per-sample variance of the objective")
axes[2].legend(fontsize=7)
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_tcc_relaxation", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

# %% [markdown]
# ## 7. Where deep clustering departs from exact EM
#
# | method | E-step | M-step | must the log-likelihood rise? | live experiment |
# |---|---|---|---|---|
# | EM, Gaussian mixture (§1) | exact posterior | closed-form argmax of $Q$ | **yes** (certified in §1) | §1 |
# | generalised EM (NMM's and MiCE's network parameters) | exact posterior | one gradient step on $Q$ | yes, *if* the step raises $Q$; not for too large a step | below: partial M-step of step $\eta$ |
# | MiCE | posterior under $\hat Z$ (Eq. 10) | SGD on $\tilde{\mathcal L}$ + Eq. 13 for $\mu$ | **no**: $\tilde{\mathcal L}=\mathcal L+\mathbb E_q\log Z/\hat Z$, and $\hat Z$ changes with the queue | below: $\mathbb E_q\log Z/\hat Z$ against $\nu$ |
# | NMM | $\mathrm{softmax}(a^*)$, not the model's posterior $h_j/\sum_kh_k$ | one SGD step | **no**: the E-step does not close the gap | §5: mean max-posterior, see the check there |
# | TCC | amortised $q(k\mid x)$, Gumbel-relaxed | SGD jointly on $q$ and the encoder | **no**: Eq. 2 with $\lambda>0$ is not even a bound | §6: exceedance against $\lambda$ |
# | SiamMM | soft over the $H$ nearest centroids | vMF MLE per epoch + SGD on the network | no: the features move between E-steps | — |
#
# **Generalised EM.** Replace the M-step for the means by one step $m_k\leftarrow m_k+\eta(\bar m_k-m_k)$ toward the weighted mean
# (a preconditioned gradient step on $Q$, weights and covariances fixed). $Q$ is a concave quadratic in $m_k$, so the step
# raises $Q$ — and hence $\ell$ — iff $0\le\eta\le2$; $\eta=2.5$ overshoots and $\ell$ can fall.
#
# **MiCE's $\hat Z$.** With a queue drawn like the data, $\hat Z\approx\frac{\nu+1}{N}Z$, so the measured slack
# $\mathbb E_q\log Z/\hat Z$ (right panel) is close to $\log N-\log(\nu+1)$: positive for short queues, zero near $\nu=N$,
# negative beyond — $\tilde{\mathcal L}$ is a shifted objective, not a bound in either direction, far inside Theorem 1's $\log N-\log\nu+4/\tau$.
#
# **The Fisher identity.** $\nabla_\theta\log p(y\mid\theta)=\mathbb E_{p(k\mid y,\theta)}[\nabla_\theta\log p(y,k\mid\theta)]$: the gradient of the ELBO
# at the exact posterior with $q$ **detached** equals the gradient of $\log p$, and so does the gradient with $q$ attached
# (the ELBO is stationary in $q$ there). That is why MiCE may back-propagate through its posterior or not, with the same
# result; NMM's $q=\mathrm{softmax}(a^*)$ is not the posterior, so detaching it changes the gradient — and neither choice is
# $\nabla\log p$.

# %%
rng, gen = rng_for("depart")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
gem = {}
for eta in (0.5, 1.0, 1.9, 2.5):
    gem[eta] = primer.em_trace(x1, 3, 30, seed=seed + 3, mean_step=eta).loglik
    axes[0].plot(gem[eta], label=fr"$\eta={eta}$")
for eta in (0.5, 1.0, 1.9):
    cert.at_most(f"7.GEM: eta={eta}: l never decreases", gem[eta][:-1], gem[eta][1:], 1e-12)
first_drop = int(np.flatnonzero(np.diff(gem[2.5]) < 0)[0]) + 1
print(f"   eta=2.5: l/N first falls at iteration {first_drop}, by {float(gem[2.5][first_drop - 1] - gem[2.5][first_drop]):.3g}")
cert.at_most("7.GEM: eta=2.5 (> 2) lowers l at some step", gem[2.5][first_drop], gem[2.5][first_drop - 1])
axes[0].set(xlabel="iteration", ylabel=r"$\ell/N$", ylim=(gem[1.0][0] - 0.3, gem[1.0][-1] + 0.1), title="GEM: one step on the means")
axes[0].legend(fontsize=7)
for t in (0.2, 0.5, 1.0):
    nus = sorted({nu for nu, tt in zhat_slack if tt == t})
    axes[1].errorbar(nus, [zhat_slack[(nu, t)][0] for nu in nus], [zhat_slack[(nu, t)][1] for nu in nus], marker="o", capsize=2, label=fr"$\tau={t}$")
axes[1].axhline(0, color="k", lw=0.5)
axes[1].set(xscale="log", xlabel=r"queue length $\nu$ (N = 256)", ylabel=r"$\mathbb{E}_q\log Z/\hat Z$", title=r"MiCE: $\tilde{\mathcal{L}}-\mathcal{L}$ per image")
axes[1].legend(fontsize=7)
fig.tight_layout()
viz.savefig(fig, "em_elbo_primer_departures", figures_dir=figures_dir, profile=profile, seed=seed)
plt.show()

s_gate = torch.randn(64, 4, generator=gen, dtype=f64, requires_grad=True)  # theta: gating logits ...
scores = (3 * torch.randn(64, 4, generator=gen, dtype=f64)).requires_grad_(True)  # ... and expert log-likelihoods
lp_f, ll_f = torch.log_softmax(s_gate, -1), scores
g_logp = torch.autograd.grad(log_marginal(lp_f, ll_f).sum(), (s_gate, scores), retain_graph=True)
post_f = posterior_and_elbo(lp_f, ll_f)[0]
g_det = torch.autograd.grad(elbo(post_f.detach(), lp_f, ll_f).sum(), (s_gate, scores), retain_graph=True)
g_att = torch.autograd.grad(elbo(post_f, lp_f, ll_f).sum(), (s_gate, scores), retain_graph=True)
cert.equal("7.Fisher: grad ELBO(posterior, detached) = grad log p", torch.cat([(a - b).flatten() for a, b in zip(g_det, g_logp)]), 1e-12)
cert.equal("7.Fisher: attaching the posterior changes nothing", torch.cat([(a - b).flatten() for a, b in zip(g_att, g_logp)]), 1e-12)
q_nmm = torch.log_softmax(scores / 2, -1)  # an E-step that is not the posterior (it depends on theta)
g_det = torch.autograd.grad(elbo(q_nmm.detach(), lp_f, ll_f).sum(), (s_gate, scores), retain_graph=True)
g_att = torch.autograd.grad(elbo(q_nmm, lp_f, ll_f).sum(), (s_gate, scores))
diff_nmm = float(torch.cat([(a - b).flatten() for a, b in zip(g_det, g_att)]).norm())
print(f"   q != posterior: |grad(detached) - grad(attached)| = {diff_nmm:.3f}")
cert.at_most("7.Fisher: with q != posterior, detaching changes the gradient (> 1e-3)", 1e-3, diff_nmm)

# %% [markdown]
# ## 8. Trivial solutions in one place
#
# * **Lemma 1 (MiCE): identical experts give the gating no gradient.** Under A4–A5 every expert is the same classifier, so
#   $\log p(y\mid x)=\log p(y\mid x)\sum_kp(k\mid x)$ does not depend on the gating: the gating network receives a zero gradient
#   and clusters nothing. Distinct experts (the real MiCE) give it a non-zero gradient.
# * **NMM: unequal integrals are a hidden prior.** Without the batch normalisation, $h_j/\sum_k h_k$ with $\int h_j=I_j$ is the
#   posterior of a mixture with prior $\propto I_j$: the cluster with the largest integral takes most points (§5's check).
# * **A per-sample KL to the uniform prior flattens $q$.** With $x$ uniform over the batch and $\bar q=\mathbb E_x q(\cdot\mid x)$,
#   $$\mathbb E_x\,\mathrm{KL}(q(\cdot\mid x)\,\|\,U)=I(x;k)+\mathrm{KL}(\bar q\,\|\,U):$$
#   it penalises the imbalance of the marginal (wanted) **and** the mutual information between image and cluster (unwanted:
#   zero only for $q$ independent of $x$). TCC's Eq. 1 carries exactly this term.
# * **The MMD symmetry.** MiCE's gating prototypes form a regular simplex: permuting them permutes the prior, and for
#   gating embeddings uniform on the sphere the expected prior is exactly uniform — no cluster is favoured a priori,
#   so nothing but the data breaks the symmetry.

# %%
K, d = omega.shape  # back to MiCE's sizes of §3
gg = g.clone().requires_grad_(True)
out_same = mice.mice_objective(fK, vK, gg, mu, omega, queue, tau=tau, kappa=kap_gate, class_level=False)
(grad_same,) = torch.autograd.grad(out_same["elbo"].sum(), gg)
gg = g.clone().requires_grad_(True)
q_full = unit(torch.randn(128, K, d, generator=gen, dtype=f64))
out_diff = mice.mice_objective(f, v, gg, mu, omega, q_full, tau=tau, kappa=kap_gate)
(grad_diff,) = torch.autograd.grad(out_diff["elbo"].sum(), gg)
cert.equal("8.Lemma 1: identical experts: gating gradient = 0", grad_same, 1e-12)
cert.at_most("8.Lemma 1: distinct experts: gating gradient norm > 1e-3", 1e-3, float(grad_diff.norm()))

dec = primer.kl_to_uniform_decomposition(log_q)  # TCC's q of §6
print(f"   TCC's q: E_x KL(q||U) = {dec['mean_kl']:.4f} = I(x;k) {dec['mutual_info']:.4f} + KL(qbar||U) {dec['marginal_kl']:.4f}")
cert.equal("8.KL split: E KL(q||U) = I(x;k) + KL(qbar||U)", dec["mean_kl"] - dec["mutual_info"] - dec["marginal_kl"], 1e-12)
cert.equal("8.KL split: KL(qbar||U) = log K - tcc.marginal_entropy", dec["marginal_kl"] - (math.log(log_q.shape[1]) - float(tcc.marginal_entropy(log_q))), 1e-12)

perm = torch.randperm(K, generator=gen)
cert.equal("8.MMD symmetry: permuted prototypes permute the prior",
           mice.gating_log_prior(g, omega[perm], kap_gate) - mice.gating_log_prior(g, omega, kap_gate)[:, perm], 1e-12)
g_unif = unit(torch.randn(n_mc, d, generator=gen, dtype=f64))
prior_u = mice.gating_log_prior(g_unif, omega, kap_gate).exp()
cert.equal("8.MMD symmetry: E_g p(k|g) = 1/K for uniform g (in s.e.)", (prior_u.mean(0) - 1 / K) / (prior_u.std(0) / math.sqrt(n_mc)), 4.5)

# %% [markdown]
# ## 9. The ladder MiCE → MoCo → spherical k-means, and exercises
#
# $$\underbrace{\text{MiCE}}_{\text{gating + }K\text{ experts, }\hat Z}\ \xrightarrow{\ \text{A4 (shared embeddings), A5 (no }\mu)\ }\ \underbrace{\text{MoCo}}_{\text{InfoNCE, Th. 2–3}}
# \qquad \text{MiCE}\ \xrightarrow{\ \text{A1 (hard }q),\ \text{A2 (no }Z),\ \text{A3 (flat gating), A4}\ }\ \underbrace{\text{spherical k-means}}_{\text{Eq. 13 = centroid step, Th. 4}}$$
#
# Each arrow deletes a part of the model; §3 certifies both. A3 is needed for the second arrow only.
#
# **Exercise 1.** Two vMF clusters with equal weights and shared $\kappa$; a point whose cosines to the two means differ by
# $m=0.1$. For which $\kappa$ is its posterior 0.99? *Answer:* $q_{\rm top}=1/(1+e^{-\kappa m})$, so $\kappa=\log(99)/m\approx45.95$.
#
# **Exercise 2.** What angle separates MiCE's $K=3$ gating prototypes in $d=2$? *Answer:* $\arccos(-1/2)=120^\circ$.
#
# **Exercise 3.** For $N=256$ and $\tau=0.5$, how long must the queue be for Theorem 1's bound $\log N-\log\nu+4/\tau$ to certify
# $\tilde{\mathcal L}\le\log p(y\mid x)$? *Answer:* $\nu\ge Ne^{4/\tau}\approx7.6\times10^5>N$: never, with a queue drawn from the
# data — the bound is a convergence device, not a measure of the gap (§7 measures the gap).

# %%
m_ex = 0.1
kap_ex = math.log(99) / m_ex
mus_ex = np.array([[1.0, 0.0], [math.cos(0.7), math.sin(0.7)]])
ang = brentq_angle = None
from scipy.optimize import brentq  # noqa: E402

ang = brentq(lambda a: (mus_ex[0] - mus_ex[1]) @ np.array([math.cos(a), math.sin(a)]) - m_ex, -0.3, 0.35)  # a point at margin m
pt = np.array([[math.cos(ang), math.sin(ang)]])
q_ex = np.exp(posterior_and_elbo(np.log([[0.5, 0.5]]), vmf_log_density(pt, mus_ex, kap_ex))[0])
cert.equal("9.exercise 1: kappa = log(99)/m gives posterior 0.99", q_ex.max() - 0.99, 1e-12)
W3 = mmd_centers(3, 2, seed=seed, dtype=f64).numpy()
cert.equal("9.exercise 2: K=3, d=2 prototypes are 120 degrees apart",
           np.degrees(np.arccos(np.clip((W3 @ W3.T)[~np.eye(3, dtype=bool)], -1, 1))) - 120.0, 1e-6)
nu_needed = 256 * math.exp(4 / 0.5)
cert.equal("9.exercise 3: the bound vanishes at nu = N e^{4/tau}", math.log(256) - math.log(nu_needed) + 4 / 0.5, 1e-12)
print(f"   exercise 1: kappa = {kap_ex:.2f}; exercise 3: nu >= {nu_needed:.3g}")

# %% [markdown]
# ## 10. Summary: every check and its slack
#
# `value` is the largest gap of an identity (`equal`, pass if $\le$ tol) or the smallest slack ${\rm rhs}-{\rm lhs}$ of an
# inequality (`at_most`, pass if $\ge-$tol). Slacks read as nats, probabilities or relative errors — whatever the row's
# inequality compares; a loose bound (Theorem 1) shows as a large slack, a sharp one (Banerjee's curve) as a small one.

# %%
table = cert.table()
io.write_text(out_dir / "checks.csv", table.to_csv(index=False))
io.write_json(out_dir / "provenance.json", {"notebook": "em_elbo_primer", "profile": profile, "seed": seed,
                                            "n_mc": n_mc, "provenance": provenance()})
n_fail = int((~table["passed"]).sum())
print(f"{len(table)} checks, {n_fail} failed; {time.time() - t_start:.1f} s")
with __import__("pandas").option_context("display.max_rows", 200, "display.width", 160, "display.max_colwidth", 80):
    print(table[["check", "kind", "value", "tol"]].to_string(index=False, float_format=lambda x: f"{x:.2e}"))
assert n_fail == 0
