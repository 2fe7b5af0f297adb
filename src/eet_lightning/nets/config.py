"""`ArchConfig`: the one object that sizes every network of Table I."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from eet_lightning.pixels import SUPPORTED_IMAGE_SIZES as SUPPORTED_IMAGE_SIZES  # re-exported
from eet_lightning.pixels import check_image_size


@dataclass
class ArchConfig:
    """Sizes of the EET networks (Table I of the paper at ``image_size=256, width=1``).

    Smaller images keep the 4x4 bottleneck by dropping the highest-resolution stride-2 levels of the
    encoders, the generator and the image discriminators; every level that stays keeps the channel
    count Table I gives it at the same resolution.
    """

    image_size: int = 256  # input/output side in pixels: 64, 128 or 256
    width: float = 1.0  # multiplier on every channel count of Table I
    # Multiplier for E alone (None: ``width``). E is frozen after stage 1, so its output is all G ever
    # sees of the image; a narrow E loses the appearance G must redraw (see configs/synthetic.yaml).
    encoder_width: float | None = None
    num_aus: int = 12  # m, AUs predicted by Er and discriminated by Du
    max_intensity: int = 5  # l, AU intensities live in [0, l]
    num_identities: int = 67  # n, identity classes of C and Dd (filled from the data by eet-fit)
    num_poses: int = 5  # v, pose classes of C (filled from the data by eet-fit)
    multi_branch: bool = True  # one Er branch per AU (EET); False gives EET-Single
    # Normalization in Ef, Er and G (Table I: IN). IN removes each sample's channel means, so at the
    # 4x4 bottleneck absolute colours (skin, background) can only pass as spatial contrast; "bn" keeps them.
    translation_norm: Literal["in", "bn"] = "in"
    spectral_norm: bool = True  # spectral norm on every conv/deconv of Ef, Er, G, Du, Dd, Dsc, Dg
    au_encoder_spectral_norm: bool = True  # may switch it off for Er alone (see configs/synthetic.yaml)
    generator_spectral_norm: bool = True  # may switch it off for G alone (see configs/synthetic.yaml)
    min_channels: int = 8  # floor for scaled channel counts
    # Run Er's m branches side by side, one convolution per level, instead of one after the other: the
    # same parameters and results, faster where the branches' convolutions are small (quick start on a
    # 2-core CPU: stage-1 step 1.74x, stage-2 step 1.15x with channels-last), slower at 256 px width 1 there.
    grouped_au_encoder: bool = False
    # What G's last layer gives. "image" (Table I): 3 colour channels through tanh, the whole face redrawn
    # from the 4x4 features. "composite" (GANimation's attention, not in the paper): 3 colour channels and
    # 1 mask channel; the output is ``mask * colour + (1 - mask) * base``, base being the image G edits
    # (the target for swaps and self-reconstructions, the swapped image for the cross-cycle), so pixels
    # the expression does not touch keep the base's exactly (see configs/synthetic.yaml).
    # "warp": G gives a flow field (at S / generator_flow_scale, upsampled) that moves the base's pixels,
    # so the change is geometry (a brow that rises, lips that part) with the base's own sharpness;
    # "warp_composite": both, ``mask * colour + (1 - mask) * warp(base)``.
    generator_output: Literal["image", "composite", "warp", "warp_composite"] = "image"
    # E's feature of the base image joins G at E's resolution (concatenated before the next UpRes level):
    # the AU-free path at S/4 instead of 4x4 alone, so G knows where the base's mouth, eyes and brows
    # are. Needs a base image, like "composite". Not in the paper (see configs/synthetic.yaml).
    generator_skip: bool = False
    # With "warp_composite": a second mask (the gate) limits the warp too, ``base + gate * (warp(base) -
    # base)``, regularized like the mask, so that the image stays in place where the expression does not
    # move it (a flow of a tenth of a pixel already resamples, and so blurs, fine texture).
    generator_warp_gate: bool = False
    # With "warp" / "warp_composite": the flow is computed at S / generator_flow_scale and upsampled.
    generator_flow_scale: int = 4

    def __post_init__(self) -> None:
        check_image_size(self.image_size, "arch.image_size")
        if not (isinstance(self.width, (int, float)) and 0 < self.width <= 4):
            raise ValueError(f"arch.width must be a number in (0, 4], got {self.width!r}")
        if self.encoder_width is not None and not (
            isinstance(self.encoder_width, (int, float)) and 0 < self.encoder_width <= 4
        ):
            raise ValueError(
                f"arch.encoder_width must be a number in (0, 4] or null, got {self.encoder_width!r}"
            )
        if self.translation_norm not in ("in", "bn"):
            raise ValueError(f"arch.translation_norm must be 'in' or 'bn', got {self.translation_norm!r}")
        outputs = ("image", "composite", "warp", "warp_composite")
        if self.generator_output not in outputs:
            raise ValueError(f"arch.generator_output must be one of {outputs}, got {self.generator_output!r}")
        if self.generator_flow_scale not in (1, 2, 4, 8):
            raise ValueError(
                f"arch.generator_flow_scale must be 1, 2, 4 or 8, got {self.generator_flow_scale!r}"
            )
        if not isinstance(self.generator_warp_gate, bool):
            raise ValueError(
                f"arch.generator_warp_gate must be true or false, got {self.generator_warp_gate!r}"
            )
        if not isinstance(self.generator_skip, bool):
            raise ValueError(f"arch.generator_skip must be true or false, got {self.generator_skip!r}")
        for name in ("num_aus", "max_intensity", "num_identities", "num_poses", "min_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"arch.{name} must be a positive integer, got {value!r}")

    @property
    def dropped_levels(self) -> int:
        """Stride-2 levels removed relative to the 256 px network."""
        return int(math.log2(256 // self.image_size))

    def ch(self, channels: int) -> int:
        """Channel count of Table I scaled by the width multiplier."""
        return max(self.min_channels, int(round(channels * self.width)))

    def encoder_ch(self, channels: int) -> int:
        """Channel count of E's layers (``encoder_width`` when set)."""
        w = self.width if self.encoder_width is None else self.encoder_width
        return max(self.min_channels, int(round(channels * w)))

    @property
    def feature_channels(self) -> int:
        """Channels of E's output f, read by C, Ef and Er."""
        return self.encoder_ch(64)

    @property
    def feature_size(self) -> int:
        """Spatial side of E's output (two 2x2 average poolings)."""
        return self.image_size // 4

    @property
    def generator_needs_base(self) -> bool:
        """Whether G edits a base image (composition or E's skip feature) rather than drawing from f_r, f_f alone."""
        return self.generator_output != "image" or self.generator_skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def coerce(cls, value: ArchConfig | dict[str, Any] | None) -> ArchConfig:
        """Accept an ArchConfig, a plain dict (YAML, old checkpoints) or None (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValueError(f"unknown arch option(s): {sorted(unknown)}")
            return cls(**value)
        raise TypeError(f"arch must be an ArchConfig or a dict, got {type(value).__name__}")
