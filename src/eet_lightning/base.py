"""What both training stages share: hyper-parameters, the Table II variants, the networks they build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from eet_lightning.aus import DISFA_AUS, validate_aus
from eet_lightning.methods.training import TransferMethod, half_constant_then_linear  # noqa: F401
from eet_lightning.nets import (
    ArchConfig,
    AttributeClassifier,
    AUFreeEncoder,
    AURelatedEncoder,
    FeatureDiscriminator,
    FeatureEncoder,
)
from eet_lightning.runtime import configure_process
from eet_lightning.variants import Variant, variant_flags


@dataclass
class LossWeights:
    """The trade-off weights of eq. 11 and eq. 12 (defaults: the paper's section IV-A2)."""

    lambda_c: float = 2.0  # attribute constraint L_c
    lambda_p: float = 1.0  # pose term inside L_c; forced to 0 when the data has a single pose
    lambda_adu: float = 40.0  # AU discrimination L_u^(D) (stage 1) / confusion L_u^(E) (stage 2)
    lambda_add: float = 40.0  # identity discrimination L_d^(D) / confusion L_d^(E)
    lambda_sc: float = 0.15  # swap consistency L_sc
    lambda_adg: float = 1.2  # image adversarial L_adg
    lambda_r: float = 40.0  # reconstruction L_r
    # Weight of L_u on the swapped images relative to L_u on the real ones. The paper does not give it
    # separately, so 1 is the paper reading; see configs/synthetic.yaml for why the small setting uses more.
    lambda_u_swap: float = 1.0
    # With ``arch.generator_output: composite`` (not in the paper; GANimation's weights): the mean of G's
    # masks and their mean squared total variation, on every generated image. Unused otherwise.
    lambda_mask: float = 0.1
    lambda_mask_tv: float = 1.0
    # With a warping G (``warp``, ``warp_composite``): the mean length of its flow, on every generated image.
    lambda_flow: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ValueError(f"loss_weights.{name} must be a non-negative number, got {value!r}")

    @classmethod
    def coerce(cls, value: LossWeights | dict[str, Any] | None) -> LossWeights:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown loss weight(s): {sorted(unknown)}")
        return cls(**value)


class EETBase(TransferMethod):
    """Common part of `Stage1Module` and `Stage2Module`: E, C, Ef, Er (and Du, Dd when the variant uses
    multi-class adversarial training), the AU list and the AU weights of eq. 5."""

    method = "eet"
    # set once in a config's model: section for both stages
    shared_hparams = ("arch", "variant", "loss_weights", "channels_last")
    data_hparams = ("aus", "au_weights")
    required_labels = ("aus", "identity", "pose")

    @classmethod
    def complete_init_args(cls, init_args: dict[str, Any], data: Any) -> dict[str, Any]:
        """The AU list and eq. 5's AU weights from the data, and Table I's sizes that depend on it (image
        size, m, n, v) into ``arch``."""
        out = super().complete_init_args(init_args, data)
        info = data.info
        out["arch"] = replace(
            ArchConfig.coerce(init_args.get("arch")),
            image_size=data.image_size,
            num_aus=len(info.aus),
            num_identities=info.num_identities,
            num_poses=info.num_poses,
        )
        return out

    @classmethod
    def from_data(cls, data: Any) -> dict[str, Any]:
        info = data.info
        return {"aus": list(info.aus), "au_weights": list(info.au_weights) or None}

    @classmethod
    def check_init_args(cls, init_args: dict[str, Any], name: str) -> None:
        super().check_init_args(init_args, name)
        if "loss_weights" in init_args:
            LossWeights.coerce(init_args["loss_weights"])
        if init_args.get("arch") is not None:
            ArchConfig.coerce(init_args["arch"])

    def __init__(
        self,
        arch: ArchConfig | dict[str, Any] | None = None,
        aus: Sequence[int] = DISFA_AUS,
        au_weights: Sequence[float] | None = None,
        variant: Variant = "eet",
        loss_weights: LossWeights | dict[str, Any] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # denormals flushed before the networks are built, i.e. before torch starts its threads in a
        # notebook (see `configure_process` for why here and in `setup`)
        configure_process()
        # channels-last weights make oneDNN's CPU convolutions (and CUDA's with AMP) faster; the numbers
        # computed are the same up to float rounding. Applied when fitting starts (see `setup`).
        self.channels_last = channels_last
        self.aus = validate_aus(aus)
        self.flags = variant_flags(variant)
        arch = ArchConfig.coerce(arch)
        if arch.num_aus != len(self.aus):
            arch = replace(arch, num_aus=len(self.aus))
        self.arch = replace(arch, multi_branch=self.flags["multi_branch"])
        self.weights = LossWeights.coerce(loss_weights)
        if self.arch.num_poses == 1:  # the paper: lambda_p = 0 when the training set has one pose
            self.weights = replace(self.weights, lambda_p=0.0)
        m = len(self.aus)
        if au_weights is None:
            w = torch.full((m,), 1.0 / m)
        else:
            w = torch.as_tensor(list(au_weights), dtype=torch.float32)
            if w.shape != (m,) or not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError(
                    f"au_weights must be {m} finite non-negative numbers (one per AU), got {list(au_weights)}"
                )
        self.register_buffer("au_weights", w, persistent=True)

        self.encoder = FeatureEncoder(self.arch)  # E
        self.attribute_classifier = AttributeClassifier(self.arch)  # C
        self.au_free_encoder = AUFreeEncoder(self.arch)  # Ef
        self.au_related_encoder = AURelatedEncoder(self.arch)  # Er
        if self.flags["adversarial"]:
            a = self.arch
            self.au_discriminator = FeatureDiscriminator(a, a.num_aus * (a.max_intensity + 1))  # Du
            self.identity_discriminator = FeatureDiscriminator(a, a.num_identities)  # Dd

    def setup(self, stage: str) -> None:
        configure_process()  # a process that DDP started with spawn never ran __init__
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def store_plain_hparams(self) -> None:
        """Keep the effective arch and loss weights as plain dicts in the checkpoint, so that it loads
        with ``torch.load(weights_only=True)`` (Lightning's default when resuming) and reads as YAML."""
        self.hparams["arch"] = self.arch.to_dict()
        self.hparams["loss_weights"] = asdict(self.weights)
        self.hparams["aus"] = list(self.aus)

    def feature_discriminators(
        self, au_free: torch.Tensor, au_related: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Du(f_f), Dd(f_r)), side by side: one grouped convolution per level for both."""
        du, dd = self.au_discriminator, self.identity_discriminator
        du_scores, dd_scores = FeatureDiscriminator.side_by_side([du, dd], [au_free, au_related])
        return du_scores, dd_scores

    @property
    def max_intensity(self) -> int:
        return self.arch.max_intensity
