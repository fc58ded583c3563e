"""What the NMM notebooks set up and inspect (Tissera et al., §8): the 2-D setting of §8.1 and
Fig. 8's most relevant images and synthesized inputs per cluster."""
from __future__ import annotations

import torch
from torch import Tensor

from mixlab.methods.base import evaluating
from mixlab.methods.nmm import NMM
from mixlab.mixture.nmm import synthesize_input, topk_by_relevance

__all__ = ["points_overrides", "topk_images", "synthesize_cluster_input"]


def points_overrides(dataset: str = "blobs2d", *, normalize: bool = True, epochs: int = 10,
                     n_clusters: int = 10) -> dict:
    """§8.1's 2-D setting: MLP 2-32-32-K, EM loss Eq. 6 only, batch 128, gamma 5, Adam 1e-3, no
    augmentation; "the algorithm converges within ten epochs"."""
    return {"train": {"dataset": dataset, "subset": None, "backbone": "mlp", "augment": "none",
                      "sobel": False, "batch_size": 128, "epochs": epochs, "schedule": "constant",
                      "image_size": None, "eval_batch_size": 4096},
            "method": {"objective": "em", "em_loss": "eq6", "normalize": normalize, "density_gamma": 5.0,
                       "lr_em": 1e-3, "n_clusters": n_clusters}}


@torch.no_grad()
def topk_images(method: NMM, inputs: Tensor, k: int = 10, batch_size: int = 1024) -> Tensor:
    """Fig. 8: indices ``[K, k]`` of the k inputs with the highest relevance a_ij per cluster
    (eval mode; ``inputs`` already preprocessed, e.g. ``augmenter.clean(images)``)."""
    with evaluating(method):
        scores = torch.cat([method.relevance(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
    return topk_by_relevance(scores, k)


def synthesize_cluster_input(method: NMM, cluster: int, preprocess, shape, **kw) -> tuple[Tensor, Tensor]:
    """Fig. 8: a [0, 1] image of ``shape`` (e.g. (1, 28, 28)) maximizing relevance neuron ``cluster``
    "before the activation" by gradient ascent (:func:`mixlab.mixture.nmm.synthesize_input`);
    ``preprocess`` maps it to the network input (``augmenter.clean``: Sobel for NMM). Eval mode,
    parameters untouched."""
    req = [p.requires_grad for p in method.parameters()]
    method.requires_grad_(False)
    device = next(method.parameters()).device
    try:
        with evaluating(method):
            return synthesize_input(lambda img: method.relevance(preprocess(img))[:, cluster], shape,
                                    device=device, **kw)
    finally:
        for p, r in zip(method.parameters(), req):
            p.requires_grad_(r)
