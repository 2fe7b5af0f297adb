"""Action-unit lists shared by the models, the data and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

# The 12 AUs annotated in DISFA, the paper's default (m = 12).
DISFA_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)
# Every AU OpenFace 2.0 estimates intensities for (the paper's section IV-D uses all 17 on RaFD).
OPENFACE_AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
KNOWN_AUS: frozenset[int] = frozenset(DISFA_AUS) | frozenset(OPENFACE_AUS)


def validate_aus(aus: Sequence[int], supported: Sequence[int] | None = None, where: str = "aus") -> list[int]:
    """Return ``aus`` as a list of ints, or raise one ValueError naming the unknown or repeated AUs."""
    try:
        out = [int(a) for a in aus]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must be a list of AU numbers, got {aus!r}") from err
    allowed = frozenset(supported) if supported is not None else KNOWN_AUS
    unknown = [a for a in out if a not in allowed]
    if unknown:
        raise ValueError(f"unknown AU(s) {unknown} in {where}; supported AUs are {sorted(allowed)}")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{where} must be a non-empty list without repeats, got {out}")
    return out
