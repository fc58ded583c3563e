"""The kind rule of mixlab.mixture: torch in -> torch out, numpy in -> numpy out, the same values.

Every public function of the math modules is called here (a new one without a case fails), on tiny
inputs made by ``k``: ``torch.as_tensor`` for the torch call, ``np.asarray`` for the numpy call.
"""
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from mixlab.mixture import contrastive, em, gmm, kmeans, merge, mice, mmd, nmm, queue_lse, siammm, tcc, vmf

MODULES = (contrastive, em, gmm, kmeans, merge, mice, mmd, nmm, queue_lse, siammm, tcc, vmf)
NO_ARRAY_IN = {  # made from sizes, shapes or callables, or scalar helpers: no kind to keep
    "mmd.mmd_centers", "mmd.mmd_algorithm2", "merge.distance_threshold", "nmm.score_bound",
    "nmm.gamma_for_batch", "nmm.synthesize_input", "tcc.sample_gumbel", "tcc.simplex_assign_temperature",
    "tcc.concrete_temperature", "tcc.cluster_contrast_temperature",
}
TORCH_ONLY = {"contrastive", "mice", "nmm", "queue_lse", "siammm", "tcc"}

rng = np.random.default_rng(0)
B, K, D, H, NU = 6, 3, 4, 2, 5


def _unit(a):
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _log_softmax(a):
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


X, C, C6 = _unit(rng.standard_normal((12, D))), _unit(rng.standard_normal((K, D))), _unit(rng.standard_normal((6, D)))
LP, LL, LQ = _log_softmax(rng.standard_normal((B, K))), rng.standard_normal((B, K)), _log_softmax(rng.standard_normal((B, K)))
V, F3, MU3 = _unit(rng.standard_normal((B, D))), rng.standard_normal((B, K, D)), _unit(rng.standard_normal((B, H, D)))
KAP, LAB, W, X2 = np.array([1.0, 5.0, 50.0]), rng.integers(0, K, 12), rng.random((12, K)), rng.standard_normal((20, 2))
POS = LAB[:B]

CASES = {  # name -> call(k)
    "em.log_marginal": lambda k: em.log_marginal(k(LP), k(LL)),
    "em.posterior_and_elbo": lambda k: em.posterior_and_elbo(k(LP), k(LL)),
    "em.elbo": lambda k: em.elbo(k(LQ), k(LP), k(LL)),
    "em.kl_categorical": lambda k: em.kl_categorical(k(LQ), k(LP)),
    "kmeans.assign_nearest": lambda k: kmeans.assign_nearest(k(X), k(C), 2),
    "kmeans.spherical_kmeans": lambda k: kmeans.spherical_kmeans(k(X), 2, iters=2),
    "merge.pairwise_zscores": lambda k: merge.pairwise_zscores(k(C6)),
    "merge.merge_clusters": lambda k: merge.merge_clusters(k(C6), -0.5, sizes=k(np.arange(1.0, 7.0))),
    "vmf.log_bessel_iv": lambda k: vmf.log_bessel_iv(1.5, k(KAP)),
    "vmf.vmf_log_normalizer": lambda k: vmf.vmf_log_normalizer(D, k(KAP)),
    "vmf.vmf_mean_resultant_length": lambda k: vmf.vmf_mean_resultant_length(D, k(KAP)),
    "vmf.banerjee_kappa": lambda k: vmf.banerjee_kappa(k(np.array([0.1, 0.5, 0.9])), D),
    "vmf.vmf_log_density": lambda k: vmf.vmf_log_density(k(X), k(C), k(KAP)),
    "vmf.vmf_mle": lambda k: vmf.vmf_mle(k(X), k(W)),
    "vmf.pca_kappa": lambda k: vmf.pca_kappa(k(X), labels=k(LAB), K=K, n_components=2),
    "vmf.pca_components": lambda k: vmf.pca_components(k(X), 2),
    "vmf.vmf_sample": lambda k: vmf.vmf_sample(k(C[0]), 5.0, 4),
    "gmm.gaussian_log_density": lambda k: gmm.gaussian_log_density(k(X2), k(X2[:2]), k(np.stack([np.eye(2)] * 2))),
    "gmm.gmm_log_joint": lambda k: gmm.gmm_log_joint(k(X2), gmm.gmm_init(k(X2), 2)),
    "gmm.gmm_e_step": lambda k: gmm.gmm_e_step(k(X2), gmm.gmm_init(k(X2), 2)),
    "gmm.gmm_m_step": lambda k: gmm.gmm_m_step(k(X2), k(W[:, :2].repeat(2, 0)[:20])),
    "gmm.gmm_em_step": lambda k: gmm.gmm_em_step(k(X2), gmm.gmm_init(k(X2), 2)),
    "gmm.gmm_init": lambda k: gmm.gmm_init(k(X2), 2),
    "gmm.gmm_fit": lambda k: gmm.gmm_fit(k(X2), 2, iters=2)[0],
    "contrastive.info_nce": lambda k: contrastive.info_nce(k(V), k(V[::-1].copy()), k(X), 0.2),
    "queue_lse.queue_logsumexp": lambda k: queue_lse.queue_logsumexp(k(F3), k(F3[::-1].copy())),
    "siammm.instance_distance": lambda k: siammm.instance_distance(k(V), k(X[:B]), "infonce"),
    "siammm.symmetric_instance_loss": lambda k: siammm.symmetric_instance_loss(k(V), k(V), k(X[:B]), k(X[B:])),
    "siammm.log_assignment_weights": lambda k: siammm.log_assignment_weights(k(V), k(MU3), k(LL[:, :H]), 0.1),
    "siammm.cluster_loss": lambda k: siammm.cluster_loss(k(V), k(MU3), k(np.ones((B, H))), k(LQ[:, :H])),
    "siammm.nce1_loss": lambda k: siammm.nce1_loss(k(V), k(C), k(KAP), k(POS)),
    "siammm.nce2_loss": lambda k: siammm.nce2_loss(k(V), k(C), k(KAP), k(POS)),
    "siammm.vmf_mixture_log_posterior": lambda k: siammm.vmf_mixture_log_posterior(k(V), k(C), k(KAP), k(LP[0])),
    "siammm.vmf_mixture_em_step": lambda k: siammm.vmf_mixture_em_step(k(X), k(C), n_nearest=2, pca_dim=2),
    "mice.gating_log_prior": lambda k: mice.gating_log_prior(k(V), k(C), 0.5),
    "mice.expert_logits": lambda k: mice.expert_logits(k(F3), k(F3), k(C), k(F3[:NU]), 0.5),
    "mice.expert_log_likelihood": lambda k: mice.expert_log_likelihood(k(F3), k(F3), k(C), k(F3[:NU]), 0.5),
    "mice.mice_objective": lambda k: mice.mice_objective(k(F3), k(F3), k(V), k(C), k(C), None, tau=0.5, kappa=0.5),
    "mice.hard_assignments": lambda k: mice.hard_assignments(k(LQ)),
    "mice.assignment_sums": lambda k: mice.assignment_sums(k(F3), k(POS), K),
    "mice.analytical_mu": lambda k: mice.analytical_mu(k(C), k(KAP), k(C)),
    "nmm.normalize_relevance": lambda k: nmm.normalize_relevance(k(LL)),
    "nmm.log_density": lambda k: nmm.log_density(k(LL), 5.0),
    "nmm.density": lambda k: nmm.density(k(LL), 5.0),
    "nmm.log_posterior": lambda k: nmm.log_posterior(k(LL), 5.0, "density_ratio"),
    "nmm.em_loss": lambda k: nmm.em_loss(k(LQ), k(LP), k(LP)),
    "nmm.consistency_loss": lambda k: nmm.consistency_loss(k(LQ), k(LP)),
    "nmm.batch_mean_density": lambda k: nmm.batch_mean_density(k(LL)),
    "nmm.monte_carlo_integral": lambda k: nmm.monte_carlo_integral(torch.sigmoid, k(np.zeros(2)), k(np.ones(2)), 8),
    "nmm.topk_by_relevance": lambda k: nmm.topk_by_relevance(k(LL), 2),
    "tcc.gumbel_softmax": lambda k: tcc.gumbel_softmax(k(LQ), 0.5, noise=k(LL), hard=True),
    "tcc.kl_to_uniform": lambda k: tcc.kl_to_uniform(k(LQ)),
    "tcc.assignment_kl": lambda k: tcc.assignment_kl(k(LQ)),
    "tcc.assignment_log_probs": lambda k: tcc.assignment_log_probs(k(V), k(C), 0.5),
    "tcc.instance_query": lambda k: tcc.instance_query(k(np.exp(LQ)), k(C), k(V), 1.0),
    "tcc.instance_elbo": lambda k: tcc.instance_elbo(k(LL[:, 0]), k(LQ)),
    "tcc.cluster_representations": lambda k: tcc.cluster_representations(k(np.exp(LQ)), k(V)),
    "tcc.cluster_contrastive_loss": lambda k: tcc.cluster_contrastive_loss(k(C), k(C6[:K]), 0.5),
    "tcc.marginal_entropy": lambda k: tcc.marginal_entropy(k(LQ)),
}


def _public(module):
    name = module.__name__.rsplit(".", 1)[1]
    return [f"{name}.{f}" for f in module.__all__ if inspect.isfunction(getattr(module, f))]


def _leaves(out):
    """The arrays of a result: tuple and dict entries and dataclass fields, flattened."""
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in _leaves(o)]
    if isinstance(out, dict):
        return _leaves(list(out.values()))
    if dataclasses.is_dataclass(out):
        return _leaves([getattr(out, f.name) for f in dataclasses.fields(out)])
    return [out]


@pytest.mark.parametrize("name", sorted(n for m in MODULES for n in _public(m) if n not in NO_ARRAY_IN))
def test_torch_in_torch_out_numpy_in_numpy_out(name):
    if name.startswith("kmeans.") or name == "siammm.vmf_mixture_em_step":
        pytest.importorskip("faiss")
    call = CASES[name]
    torch.manual_seed(0)
    out_t = _leaves(call(torch.as_tensor))
    assert all(isinstance(o, torch.Tensor) for o in out_t), [type(o) for o in out_t]
    if name in TORCH_ONLY or name.split(".")[0] in TORCH_ONLY:
        return
    out_n = _leaves(call(np.asarray))
    assert all(isinstance(o, np.ndarray) for o in out_n), [type(o) for o in out_n]
    assert len(out_n) == len(out_t)
    for t, n in zip(out_t, out_n):
        np.testing.assert_allclose(t.detach().numpy(), n, rtol=1e-9, atol=1e-12)
