"""Face verification between real and generated images (Tables V, VI): accuracy and TAR@FAR."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def _check_scores(scores: torch.Tensor, same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores).detach().to(torch.float64).flatten().cpu()
    same = torch.as_tensor(same).detach().flatten().cpu().bool()
    if scores.shape != same.shape:
        raise ValueError(f"scores and labels disagree in length: {scores.numel()} vs {same.numel()}")
    if not torch.isfinite(scores).all():
        raise ValueError("verification scores must be finite")
    return scores, same


def _best_threshold(scores: torch.Tensor, same: torch.Tensor) -> float:
    """The threshold (predict "same" when score >= it) with the highest accuracy on these pairs; the
    middle between two neighbouring distinct scores, the lowest such threshold on ties."""
    s, order = scores.sort(stable=True)
    pos = same[order].to(torch.float64)
    n = s.numel()
    # accuracy when the first i sorted pairs are called "different": negatives below + positives above
    neg_below = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - pos).cumsum(0)])
    pos_above = pos.sum() - torch.cat([torch.zeros(1, dtype=torch.float64), pos.cumsum(0)])
    correct = neg_below + pos_above  # [n + 1]
    valid = torch.ones(n + 1, dtype=torch.bool)
    valid[1:n] = s[1:] > s[:-1]  # a threshold can only fall between distinct scores
    correct[~valid] = -1
    i = int(correct.argmax())
    if i == 0:
        return float(s[0]) - 1.0
    if i == n:
        return float(s[-1]) + 1.0
    return float((s[i - 1] + s[i]) / 2)


def verification_accuracy(
    scores: torch.Tensor, same: torch.Tensor, folds: torch.Tensor | None = None, num_folds: int = 10
) -> tuple[float, float]:
    """Accuracy as in the LFW protocol: for each of ``num_folds`` folds the threshold is chosen on the other
    folds and applied to it; returns (mean, standard deviation) over folds.

    ``folds`` gives each pair's fold; by default pairs are ranked by (score, label) and dealt out round
    robin, which does not depend on the order in which pairs arrived (so DDP gives the same folds).
    """
    scores, same = _check_scores(scores, same)
    if folds is None:
        order = torch.from_numpy(np.lexsort((same.numpy(), scores.numpy())))
        folds = torch.empty(scores.numel(), dtype=torch.long)
        folds[order] = torch.arange(scores.numel()) % num_folds
    folds = torch.as_tensor(folds).long().flatten().cpu() % num_folds
    accs = []
    for f in range(num_folds):
        test = folds == f
        if not test.any() or test.all():
            continue
        thr = _best_threshold(scores[~test], same[~test])
        accs.append(float(((scores[test] >= thr) == same[test]).double().mean()))
    if not accs:
        raise ValueError("verification accuracy needs pairs in at least 2 folds")
    t = torch.tensor(accs, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False))


def tar_at_far(scores: torch.Tensor, same: torch.Tensor, far: float = 0.01) -> float:
    """True accept rate at the loosest threshold whose false accept rate is at most ``far`` (the
    highest ROC point with FPR <= far)."""
    scores, same = _check_scores(scores, same)
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("TAR@FAR needs both same-subject and different-subject pairs")
    s, order = scores.sort(descending=True, stable=True)
    pos = same[order].to(torch.float64)
    tp, fp = pos.cumsum(0), (1 - pos).cumsum(0)
    last_of_run = torch.ones_like(s, dtype=torch.bool)  # one ROC point per distinct threshold
    last_of_run[:-1] = s[1:] < s[:-1]
    tpr, fpr = tp[last_of_run] / n_pos, fp[last_of_run] / n_neg
    ok = fpr <= far + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


class FaceVerification(Metric):
    """Verification between embeddings of (real, generated) image pairs labelled same / different subject.

    ``update(embeddings_a, embeddings_b, same, pair_index=None)``: embeddings [N, D] (cosine similarity is
    the score), ``same`` [N] bool. ``pair_index`` (the row of the pair list) fixes each pair's fold as
    ``index % 10``; without it folds are dealt by score rank (see `verification_accuracy`). ``compute``
    returns ``{"accuracy", "accuracy_std", "tar_at_far"}`` with the threshold chosen by 10-fold
    cross-validation (the LFW protocol) and TAR at FAR = ``far`` (1%).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_folds: int = 10, far: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_folds < 2 or not 0 < far < 1:
            raise ValueError(f"FaceVerification needs num_folds >= 2 and 0 < far < 1, got {num_folds}, {far}")
        self.num_folds, self.far = num_folds, far
        self.add_state("scores", [], dist_reduce_fx="cat")
        self.add_state("same", [], dist_reduce_fx="cat")
        self.add_state("pair_index", [], dist_reduce_fx="cat")

    def update(
        self,
        embeddings_a: torch.Tensor,
        embeddings_b: torch.Tensor,
        same: torch.Tensor,
        pair_index: torch.Tensor | None = None,
    ) -> None:
        if embeddings_a.shape != embeddings_b.shape or embeddings_a.dim() != 2:
            raise ValueError(
                f"embeddings must be two [N, D] tensors of one shape, got {list(embeddings_a.shape)} "
                f"and {list(embeddings_b.shape)}"
            )
        score = F.cosine_similarity(embeddings_a.double(), embeddings_b.double(), dim=1)
        same = torch.as_tensor(same, device=score.device).flatten()
        if same.numel() != score.numel():
            raise ValueError(f"{score.numel()} pairs of embeddings but {same.numel()} same/different labels")
        self.scores.append(score)
        self.same.append(same.long())
        index = torch.full_like(same, -1, dtype=torch.long) if pair_index is None else pair_index
        self.pair_index.append(torch.as_tensor(index, device=score.device).long().flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        scores, same = dim_zero_cat(self.scores), dim_zero_cat(self.same).bool()
        index = dim_zero_cat(self.pair_index)
        folds = None if (index < 0).any() else index % self.num_folds
        acc, std = verification_accuracy(scores, same, folds, self.num_folds)
        tar = tar_at_far(scores, same, self.far)
        f64 = torch.float64
        return {
            "accuracy": torch.tensor(acc, dtype=f64),
            "accuracy_std": torch.tensor(std, dtype=f64),
            "tar_at_far": torch.tensor(tar, dtype=f64),
        }
