"""AU-intensity agreement: ICC(3,1) and MSE per AU, between real source images and generated targets."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def _as_ratings(tensors: tuple[torch.Tensor, ...], num_aus: int) -> torch.Tensor:
    """k tensors [N, m] (or [N] when m = 1) -> float64 [N, k, m]."""
    if len(tensors) < 2:
        raise ValueError(f"ICC needs the ratings of at least 2 raters, got {len(tensors)}")
    shaped = []
    for j, t in enumerate(tensors):
        t = torch.as_tensor(t)
        if t.dim() == 1 and num_aus == 1:
            t = t[:, None]
        if t.dim() != 2 or t.shape[1] != num_aus or t.shape[0] != tensors[0].shape[0]:
            raise ValueError(
                f"rater {j}: expected [N, {num_aus}] AU intensities with the same N for every rater, "
                f"got {list(t.shape)}"
            )
        shaped.append(t.detach().to(torch.float64))
    return torch.stack(shaped, dim=1)


def _icc31_from_sums(
    n: torch.Tensor, rater_sums: torch.Tensor, sum_sq: torch.Tensor, row_sum_sq: torch.Tensor
) -> torch.Tensor:
    """ICC(3,1) of Shrout & Fleiss (1979) from sufficient statistics of an n x k table per AU.

    rater_sums [k, m] = sum_i Y_ij; sum_sq [m] = sum_ij Y_ij^2; row_sum_sq [m] = sum_i (sum_j Y_ij)^2.
    ICC(3,1) = (BMS - EMS) / (BMS + (k - 1) EMS), BMS the between-targets and EMS the residual mean square
    of the two-way ANOVA. NaN where it is undefined (fewer than 2 targets, or no variance at all).
    """
    k = rater_sums.shape[0]
    grand = rater_sums.sum(0)
    correction = grand**2 / (n * k)
    ss_total = sum_sq - correction
    ss_rows = row_sum_sq / k - correction
    ss_cols = (rater_sums**2).sum(0) / n - correction
    ss_err = ss_total - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    return (bms - ems) / (bms + (k - 1) * ems)


def icc31(*ratings: torch.Tensor) -> torch.Tensor:
    """ICC(3,1) per AU of k raters' [N, m] intensities (functional form of `ICC31`); returns [m]."""
    first = torch.as_tensor(ratings[0]) if ratings else torch.empty(0)
    y = _as_ratings(ratings, 1 if first.dim() == 1 else first.shape[-1])
    n = torch.tensor(float(y.shape[0]), dtype=torch.float64)
    return _icc31_from_sums(n, y.sum(0), y.pow(2).sum((0, 1)), y.sum(1).pow(2).sum(0))


class ICC31(Metric):
    """ICC(3,1) (Shrout & Fleiss: two-way mixed, consistency, single rater) per AU and averaged.

    ``update(source_aus, generated_aus)``: AU intensities of the real source images and of the generated
    target images as read by one AU scorer, each [N, m]. More than two raters may be given
    (``num_raters``). The states are float64 sums, so the cross-rank reduction is exact and ``compute``
    equals the single-process value on the concatenated data. ``compute`` returns ``{"per_au": [m],
    "mean": []}``; the mean is over the AUs whose ICC is defined (an AU that never varies has none).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_aus: int, num_raters: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_aus < 1 or num_raters < 2:
            raise ValueError(f"ICC31 needs num_aus >= 1 and num_raters >= 2, got {num_aus}, {num_raters}")
        self.num_aus, self.num_raters = num_aus, num_raters
        f64 = torch.float64
        self.add_state("n", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("rater_sums", torch.zeros(num_raters, num_aus, dtype=f64), dist_reduce_fx="sum")
        self.add_state("sum_sq", torch.zeros(num_aus, dtype=f64), dist_reduce_fx="sum")
        self.add_state("row_sum_sq", torch.zeros(num_aus, dtype=f64), dist_reduce_fx="sum")

    def update(self, *ratings: torch.Tensor) -> None:
        if len(ratings) != self.num_raters:
            raise ValueError(f"ICC31 was built for {self.num_raters} raters, update got {len(ratings)}")
        y = _as_ratings(ratings, self.num_aus).to(self.rater_sums.device)
        self.n += y.shape[0]
        self.rater_sums += y.sum(0)
        self.sum_sq += y.pow(2).sum((0, 1))
        self.row_sum_sq += y.sum(1).pow(2).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        per_au = _icc31_from_sums(self.n, self.rater_sums, self.sum_sq, self.row_sum_sq)
        return {"per_au": per_au, "mean": per_au.nanmean()}


class AUIntensityMSE(Metric):
    """Mean squared error of AU intensities per AU and averaged over AUs (float64 sums).

    ``update(generated_aus, source_aus)``, each [N, m]; ``compute`` returns ``{"per_au": [m], "mean": []}``.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, num_aus: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_aus < 1:
            raise ValueError(f"AUIntensityMSE needs num_aus >= 1, got {num_aus}")
        self.num_aus = num_aus
        self.add_state("n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_sq_err", torch.zeros(num_aus, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        y = _as_ratings((preds, target), self.num_aus).to(self.sum_sq_err.device)
        self.n += y.shape[0]
        self.sum_sq_err += (y[:, 0] - y[:, 1]).pow(2).sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        per_au = self.sum_sq_err / self.n
        return {"per_au": per_au, "mean": per_au.mean()}
