"""The place-batched recipe's losses (`--loss`), each with its in-batch miner, from
pytorch-metric-learning as the GSV-Cities / MixVPR authors use them (their `utils/losses.py`):

- multi-similarity: MultiSimilarityLoss(alpha, beta, base) on dot-product similarity, mined by
  MultiSimilarityMiner(epsilon) on cosine similarity (the field's default);
- triplet-margin: TripletMarginLoss(margin), mined by TripletMarginMiner(margin, type);
- contrastive: ContrastiveLoss(pos_margin, neg_margin), mined by PairMarginMiner on dot-product
  similarity.

The triplet recipe's loss (hard negatives from a descriptor cache) is `triplets.triplet_loss`.
"""
from __future__ import annotations

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity, DotProductSimilarity


def _multi_similarity(config):
    return (losses.MultiSimilarityLoss(alpha=config.ms_alpha, beta=config.ms_beta,
                                       base=config.ms_base, distance=DotProductSimilarity()),
            miners.MultiSimilarityMiner(epsilon=config.ms_epsilon, distance=CosineSimilarity()))


def _triplet_margin(config):
    return (losses.TripletMarginLoss(margin=config.tm_margin, swap=False, smooth_loss=False,
                                     triplets_per_anchor="all"),
            miners.TripletMarginMiner(margin=config.tm_miner_margin,
                                      type_of_triplets=config.tm_triplets))


def _contrastive(config):
    return (losses.ContrastiveLoss(pos_margin=config.contrastive_pos_margin,
                                   neg_margin=config.contrastive_neg_margin),
            miners.PairMarginMiner(pos_margin=config.pair_pos_margin,
                                   neg_margin=config.pair_neg_margin,
                                   distance=DotProductSimilarity()))


BUILDERS = {"multi-similarity": _multi_similarity, "triplet-margin": _triplet_margin,
            "contrastive": _contrastive}


class PlaceLoss:
    """`--loss`'s loss over a batch's descriptors [B, D] and place labels [B], on the pairs
    (or triplets) its miner keeps."""

    def __init__(self, config):
        self.name = config.loss
        self.loss, self.miner = BUILDERS[config.loss](config)

    def __call__(self, descriptors: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, int, int]:
        """(loss as a device scalar, tuples the miner kept, tuples it chose from)."""
        descriptors = descriptors.float()
        mined = self.miner(descriptors, labels)
        loss = self.loss(descriptors, labels, mined)
        return loss, _kept(mined), candidates(labels, len(mined))


def _kept(mined: tuple) -> int:
    """Pairs (anchor-positive plus anchor-negative) or triplets the miner returned."""
    if len(mined) == 3:
        return len(mined[0])
    return len(mined[0]) + len(mined[2])


def candidates(labels: torch.Tensor, tuple_size: int) -> int:
    """How many ordered pairs (`tuple_size` 4: a pair miner's positive and negative pairs) or
    triplets (3) a batch with place `labels` [B] has."""
    counts = torch.unique(labels, return_counts=True)[1].to(torch.int64)
    batch = int(counts.sum())
    if tuple_size == 3:
        return int((counts * (counts - 1) * (batch - counts)).sum())
    return int((counts * (counts - 1)).sum()) + batch * batch - int((counts * counts).sum())
