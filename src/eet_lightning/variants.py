"""The Table II variants: which components each ablation of EET keeps.

Lightning-free on purpose: the inference side (`eet_lightning.model.EETModel`) reads a checkpoint's
variant without importing any training module.
"""

from __future__ import annotations

from typing import Literal

Variant = Literal["eet", "eet_single", "bs_net", "b_net"]
VARIANTS: tuple[str, ...] = ("eet", "eet_single", "bs_net", "b_net")


def variant_flags(variant: str) -> dict[str, bool]:
    """Table II: which components each ablation keeps."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return {
        "multi_branch": variant != "eet_single",
        # multi-class adversarial training: Du, Dd with L_u^(D), L_d^(D), L_u^(E), L_d^(E)
        "adversarial": variant in ("eet", "eet_single"),
        "swap_consistency": variant != "b_net",
    }
