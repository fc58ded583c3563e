"""Mixture-model math as small pure functions (no training state), in log space.

- :mod:`.em`: exact E-step posterior and ELBO (MiCE Eq. 7-11).
- :mod:`.contrastive`: InfoNCE with an optional queue (MoCo / MiCE Eq. 2, TCC supplement Eq. 2).
- :mod:`.mmd`: Max-Mahalanobis (maximal mutual distance) centers (MiCE Algorithm 2).
- :mod:`.kmeans`: spherical k-means and nearest-centroid search (faiss).
- :mod:`.vmf`: von Mises-Fisher normaliser, density, MLE, PCA-kappa, sampler (SiamMM Eq. 3-7, 16).
- :mod:`.merge`: cluster merging by standardised centroid distance (SiamMM Eq. 11).
"""

from .em import elbo, kl_categorical, log_marginal, posterior_and_elbo
from .kmeans import assign_nearest, spherical_kmeans
from .merge import merge_clusters, pairwise_zscores
from .mmd import mmd_algorithm2, mmd_centers
from .vmf import (
    banerjee_kappa,
    log_bessel_iv,
    pca_components,
    pca_kappa,
    vmf_log_density,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
    vmf_mle,
    vmf_sample,
)

__all__ = [
    "posterior_and_elbo",
    "elbo",
    "kl_categorical",
    "log_marginal",
    "mmd_centers",
    "mmd_algorithm2",
    "spherical_kmeans",
    "assign_nearest",
    "vmf_log_normalizer",
    "vmf_log_density",
    "vmf_mle",
    "pca_kappa",
    "pca_components",
    "vmf_sample",
    "vmf_mean_resultant_length",
    "banerjee_kappa",
    "log_bessel_iv",
    "merge_clusters",
    "pairwise_zscores",
]
