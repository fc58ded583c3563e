"""mixlab.mixture.gmm: the Gaussian-mixture EM of the primer (§1) — identities, not existence."""
import numpy as np
import torch
from scipy.stats import multivariate_normal

from mixlab.mixture import elbo, gmm, log_marginal


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return torch.as_tensor(np.concatenate([rng.normal([0, 0], 1.0, (120, 2)), rng.normal([3, 1], 0.5, (80, 2))]))


def test_gaussian_log_density_matches_scipy():
    x = _data()
    rng = np.random.default_rng(1)
    A = rng.standard_normal((2, 2, 2))
    covs = torch.as_tensor(A @ A.transpose(0, 2, 1) + 0.5 * np.eye(2))
    means = torch.as_tensor(rng.standard_normal((2, 2)))
    ref = np.stack([multivariate_normal(means[k].numpy(), covs[k].numpy()).logpdf(x.numpy()) for k in range(2)], 1)
    assert np.abs(gmm.gaussian_log_density(x, means, covs).numpy() - ref).max() < 1e-10


def test_e_step_is_exact_posterior_and_loglik():
    x = _data()
    params = gmm.gmm_init(x, 3, seed=0)
    log_q, ll = gmm.gmm_e_step(x, params)
    log_prior, log_lik = gmm.gmm_log_joint(x, params)
    assert torch.allclose(ll, log_marginal(log_prior, log_lik), atol=1e-12)
    assert torch.allclose(elbo(log_q, log_prior, log_lik), ll, atol=1e-10)
    assert torch.allclose(log_q.exp().sum(1), torch.ones(len(x), dtype=torch.float64))


def test_m_step_maximises_q_and_em_is_monotone():
    x = _data()
    params = gmm.gmm_init(x, 2, seed=0)
    log_q, _ = gmm.gmm_e_step(x, params)
    new = gmm.gmm_m_step(x, log_q.exp(), reg=0.0)
    best = elbo(log_q, *gmm.gmm_log_joint(x, new)).sum()
    for scale in (0.9, 1.1):  # perturbing the closed-form argmax lowers the ELBO at fixed q
        moved = gmm.GMMParams(new.log_pi, new.means * scale, new.covs * scale)
        assert elbo(log_q, *gmm.gmm_log_joint(x, moved)).sum() < best
    _, hist = gmm.gmm_fit(x, 2, iters=30, seed=0, reg=0.0)
    assert len(hist) == 31 and np.diff(hist).min() > -1e-10
    fitted, _ = gmm.gmm_fit(x, 2, iters=100, seed=0, reg=0.0)
    order = torch.argsort(fitted.means[:, 0])
    assert torch.allclose(fitted.means[order], torch.tensor([[0.0, 0.0], [3.0, 1.0]], dtype=torch.float64), atol=0.35)


def test_one_dimensional_input_and_numpy():
    x = np.random.default_rng(0).normal(size=60)
    params, hist = gmm.gmm_fit(x, 2, iters=5)
    assert params.means.shape == (2, 1) and params.covs.shape == (2, 1, 1)
    assert np.isfinite(hist).all()
