"""Scoring a transfer against the exact ground truth of the synthetic faces.

For a pair (target A, source B) of held-out identities the true swap is A rendered with B's AUs and
gaze. We compare, over the whole image and over the AU region (the pixels where A rendered with its
own AUs and with B's differ), the mean L1 distance to the truth of:

- ``swapped``: G(f_r^b, f_f^a), the transfer;
- ``target_self``: G(f_r^a, f_f^a), the target's self-reconstruction (right identity, wrong expression);
- ``source_self``: G(f_r^b, f_f^b), the source's self-reconstruction (right expression, wrong identity);
- ``target``, ``source``: the unchanged input images.

A transfer that works beats ``target_self`` in the AU region (it moved the expression) and beats
``source_self`` on the whole image (it kept the identity).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from eet_lightning.model import EETModel

CANDIDATES = ("swapped", "target_self", "source_self", "target", "source")


def _to_model(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)


@torch.no_grad()
def score_transfer(
    model: EETModel, target: np.ndarray, source: np.ndarray, truth: np.ndarray, batch_size: int = 50
) -> dict[str, Any]:
    """Per-pair and mean L1 (in [0, 1] pixel units) of every candidate against ``truth``.

    ``target``, ``source`` and ``truth`` are uint8 [N, H, W, 3]; ``truth`` is the target rendered with the
    source's AUs and gaze.
    """
    if not (target.shape == source.shape == truth.shape) or target.ndim != 4:
        raise ValueError(
            f"target, source and truth must share one [N, H, W, 3] shape, got "
            f"{target.shape}, {source.shape}, {truth.shape}"
        )
    region = np.any(target != truth, axis=-1)  # [N, H, W]
    whole_l1 = {c: [] for c in CANDIDATES}
    region_l1 = {c: [] for c in CANDIDATES}
    device = model.device
    for start in range(0, len(target), batch_size):
        sl = slice(start, start + batch_size)
        a, b = _to_model(target[sl], device), _to_model(source[sl], device)
        fr, ff = model.encode(torch.cat([a, b]))
        fr_a, fr_b = fr.chunk(2)
        ff_a, ff_b = ff.chunk(2)
        n = a.shape[0]
        generated = model.decode(torch.cat([fr_b, fr_a, fr_b]), torch.cat([ff_a, ff_a, ff_b]))
        images = {
            "swapped": generated[:n],
            "target_self": generated[n : 2 * n],
            "source_self": generated[2 * n :],
            "target": a,
            "source": b,
        }
        t = _to_model(truth[sl], device)
        mask = torch.from_numpy(region[sl]).to(device)
        for name, img in images.items():
            err = (img.clamp(-1, 1) - t).abs().mean(1) / 2  # [n, H, W], [0, 1] units
            whole_l1[name].append(err.mean((1, 2)).cpu())
            masked = (err * mask).sum((1, 2)) / mask.sum((1, 2)).clamp(min=1)
            region_l1[name].append(masked.cpu())
    whole = {c: torch.cat(v).numpy() for c, v in whole_l1.items()}
    reg = {c: torch.cat(v).numpy() for c, v in region_l1.items()}
    has_region = region.reshape(len(region), -1).any(1)
    region_gap = reg["swapped"][has_region] - reg["target_self"][has_region]
    whole_gap = whole["swapped"] - whole["source_self"]
    return {
        "pairs": int(len(target)),
        "pairs_with_au_region": int(has_region.sum()),
        "au_region_fraction": float(region.mean()),
        "whole_l1": {c: float(v.mean()) for c, v in whole.items()},
        "au_region_l1": {c: float(v[has_region].mean()) for c, v in reg.items()},
        "au_region_swapped_minus_target_self": float(region_gap.mean()),
        "au_region_swapped_beats_target_self_rate": float((region_gap < 0).mean()),
        "whole_swapped_minus_source_self": float(whole_gap.mean()),
        "whole_swapped_beats_source_self_rate": float((whole_gap < 0).mean()),
        "passes": bool(region_gap.mean() < 0 and (region_gap < 0).mean() >= 0.6 and whole_gap.mean() < 0),
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['pairs']} held-out pairs; AU region = {100 * result['au_region_fraction']:.1f}% of pixels",
        f"{'candidate':<14}{'whole L1':>10}{'AU-region L1':>14}",
    ]
    for c in CANDIDATES:
        lines.append(f"{c:<14}{result['whole_l1'][c]:>10.4f}{result['au_region_l1'][c]:>14.4f}")
    lines += [
        f"AU region: swapped - target_self = {result['au_region_swapped_minus_target_self']:+.4f} "
        f"(swapped wins on {100 * result['au_region_swapped_beats_target_self_rate']:.1f}% of pairs; need < 0 and >= 60%)",
        f"whole image: swapped - source_self = {result['whole_swapped_minus_source_self']:+.4f} "
        f"(swapped wins on {100 * result['whole_swapped_beats_source_self_rate']:.1f}% of pairs; need < 0)",
        f"transfer criteria: {'PASS' if result['passes'] else 'FAIL'}",
    ]
    return "\n".join(lines)
