"""Gaze transfer accuracy (Table VII): the generated target must show the real source's gaze."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class GazeAccuracy(Metric):
    """Share of images whose predicted gaze class equals the expected one, overall and per class.

    ``update(preds, target)``: ``preds`` are logits / probabilities [N, C] or class indices [N]; ``target``
    the expected classes [N] (the source's gaze). ``compute`` returns ``{"accuracy": [], "per_class": [C]}``
    (per-class accuracy over the images expected to show that class; NaN for a class never expected).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"GazeAccuracy needs num_classes >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.add_state("correct", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        target = torch.as_tensor(target).long().flatten()
        if preds.dim() == 2:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"gaze logits must be [N, {self.num_classes}], got {list(preds.shape)}")
            preds = preds.argmax(1)
        preds = preds.long().flatten()
        if preds.shape != target.shape:
            raise ValueError(
                f"gaze preds and target disagree in length: {preds.shape[0]} vs {target.shape[0]}"
            )
        if target.numel() and (target.min() < 0 or target.max() >= self.num_classes):
            raise ValueError(f"gaze target classes must lie in [0, {self.num_classes - 1}]")
        hit = (preds == target).to(torch.float64)
        self.correct.index_add_(0, target.to(self.correct.device), hit.to(self.correct.device))
        self.total.index_add_(0, target.to(self.total.device), torch.ones_like(hit).to(self.total.device))

    def compute(self) -> dict[str, torch.Tensor]:
        return {"accuracy": self.correct.sum() / self.total.sum(), "per_class": self.correct / self.total}
