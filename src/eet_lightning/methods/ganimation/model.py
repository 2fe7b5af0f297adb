"""GANimation's networks and `GANimationModel`, the trained model as users meet it (plain PyTorch, no Lightning).

The generator is StarGAN's image-to-image body (`ConditionalTrunk`) conditioned on the target AU
intensities normalized to [0, 1] (intensity / l, as the authors' data loader divides by 5), with two heads
(their ``networks/generator_wasserstein_gan.py``): a colour map C (7x7 convolution, tanh, 3 channels) and an
attention mask A (7x7 convolution, sigmoid, 1 channel). The image is ``A * input + (1 - A) * C``: where A is
1 the input is kept, where it is 0 G's colour replaces it. The critic is the PatchGAN of
`PatchCritic` with an AU-regression head of m outputs and, as in their
``networks/discriminator_wasserstein_gan.py``, no sigmoid on it: it regresses the normalized intensities
directly (trained with a mean squared error).

Both networks start from their weight initialization: every convolution's weights drawn from N(0, 0.02),
biases 0 (``NetworkBase.init_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from eet_lightning.aus import DISFA_AUS
from eet_lightning.methods.gan_parts import ConditionalTrunk, PatchCritic
from eet_lightning.methods.inference import Labels, TransferModel

INFERENCE_PARTS = ("generator", "critic")
__all__ = ["INFERENCE_PARTS", "GANimationCritic", "GANimationGenerator", "GANimationModel", "init_weights"]


def init_weights(module: nn.Module) -> nn.Module:
    """The authors' initialization: the weights of every convolution (and transposed convolution) from
    N(0, 0.02), their biases 0; normalization layers keep PyTorch's (weight 1, bias 0). Returns ``module``."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class GANimationGenerator(nn.Module):
    """G(image, condition) -> (image with the condition's expression, attention mask).

    ``condition``: [B, m] target AU intensities normalized to [0, 1]. Output: ``mask * image + (1 - mask) *
    colour`` [B, 3, H, W] and the mask [B, 1, H, W] in [0, 1] (1: the input pixel kept)."""

    def __init__(self, num_aus: int, width: int = 64, residual_blocks: int = 6) -> None:
        super().__init__()
        self.num_aus = num_aus
        self.trunk = ConditionalTrunk(num_aus, width, residual_blocks)
        c = self.trunk.out_channels
        # their img_reg and attetion_reg: 7x7 convolutions without bias
        self.colour = nn.Sequential(nn.Conv2d(c, 3, 7, 1, 3, bias=False), nn.Tanh())
        self.attention = nn.Sequential(nn.Conv2d(c, 1, 7, 1, 3, bias=False), nn.Sigmoid())
        init_weights(self)

    def forward_with_colour(
        self, image: torch.Tensor, condition: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(composed image, mask, colour map C)."""
        features = self.trunk(image, condition)
        colour = self.colour(features)
        mask = self.attention(features)
        return mask * image + (1 - mask) * colour, mask, colour

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, mask, _ = self.forward_with_colour(image, condition)
        return out, mask


class GANimationCritic(PatchCritic):
    """The WGAN-GP PatchGAN critic: image -> (patch scores [B, 1, h, w], normalized AU intensities [B, m],
    regressed without a sigmoid as in the authors' code)."""

    def __init__(self, image_size: int, num_aus: int, width: int = 64, layers: int | None = None) -> None:
        super().__init__(image_size, num_aus, width, layers)
        init_weights(self)


def critic_layers_for(image_size: int, layers: int | None) -> int:
    """The critic's number of halvings: ``layers``, or as many as leave 2 x 2 (6 at 128 px, their setting)."""
    return max(1, image_size.bit_length() - 2) if layers is None else int(layers)


def read_aus(critic: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The critic's AU reading of ``images`` as a condition: normalized intensities clamped to [0, 1]."""
    return critic(images)[1].clamp(0.0, 1.0)


class GANimationModel(TransferModel):
    """G and the critic of a trained GANimation.

    GANimation is conditioned on AU intensities, so a transfer reads the source's AUs with the critic's AU
    head (or takes them from ``labels_b={"aus": ...}``, intensities in [0, l]) and asks G to paint them on the
    target:

    >>> model = load_transfer_model("runs/ganimation_synthetic/stage1/last.ckpt")     # doctest: +SKIP
    >>> a_with_b, b_with_a = model.transfer(image_a, image_b)                          # doctest: +SKIP
    >>> mouth_only, _ = model.transfer(image_a, image_b, aus=[12, 25, 26])             # doctest: +SKIP
    >>> smiling = model.animate(image_a, {12: 4.0, 6: 3.0})                            # doctest: +SKIP

    Selective transfer moves only the chosen AUs to the source's value and keeps the target's own (read, or
    from ``labels_a``) for the others; ``strength`` s gives ``own + s * (source - own)`` on the moved AUs.
    """

    method: ClassVar[str] = "ganimation"
    final_stage: ClassVar[int] = 1
    parts: ClassVar[tuple[str, ...]] = INFERENCE_PARTS
    condition_labels: ClassVar[tuple[str, ...]] = ("aus",)
    selective: ClassVar[bool] = True

    def __init__(
        self,
        image_size: int = 128,
        aus: Sequence[int] = DISFA_AUS,
        width: int = 64,
        residual_blocks: int = 6,
        critic_width: int = 64,
        critic_layers: int | None = None,
        max_intensity: int = 5,
    ) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.aus = [int(a) for a in aus]
        self.max_intensity = int(max_intensity)
        m = len(self.aus)
        self.generator = GANimationGenerator(m, width, residual_blocks)
        self.critic = GANimationCritic(
            self.image_size, m, critic_width, critic_layers_for(image_size, critic_layers)
        )

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], map_location: str | torch.device | None = None, **options: Any
    ) -> GANimationModel:
        """Build from a GANimation checkpoint dict (``hyper_parameters``: plain values; ``state_dict``).
        ``fuse`` is accepted for symmetry with EET and changes nothing (instance norm depends on each image,
        so there is no norm to fold into a convolution); ``compile=True`` is not available."""
        hp = cls.checked_hparams(ckpt, options, ("image_size", "aus"))
        model = cls(
            image_size=int(hp["image_size"]),
            aus=hp["aus"],
            width=int(hp.get("width", 64)),
            residual_blocks=int(hp.get("residual_blocks", 6)),
            critic_width=int(hp.get("critic_width", 64)),
            critic_layers=hp.get("critic_layers"),
            max_intensity=int(hp.get("max_intensity", 5)),
        )
        model._load_parts(ckpt, map_location)
        return model

    # ------------------------------------------------------------------ conditions

    def _own_condition(self, x: torch.Tensor, labels: Labels | None, name: str) -> torch.Tensor:
        """Normalized AU intensities [B, m] of ``x``: from ``labels["aus"]`` (in [0, l]) when given, else
        read by the critic."""
        if labels is not None and "aus" in labels:
            aus = labels["aus"].to(self.device, torch.float32)
            m, lmax = len(self.aus), self.max_intensity
            if aus.dim() != 2 or aus.shape[1] != m:
                raise ValueError(
                    f"{name}['aus'] must be [B, {m}] AU intensities, got shape {list(aus.shape)}"
                )
            if float(aus.min()) < 0 or float(aus.max()) > lmax:
                raise ValueError(
                    f"{name}['aus'] must hold intensities in [0, {lmax}], got values in "
                    f"[{float(aus.min()):.3g}, {float(aus.max()):.3g}]"
                )
            return aus / lmax
        return read_aus(self.critic, x)

    def au_weights(self, aus: list[int] | None, strength: float) -> torch.Tensor:
        """How far each AU moves from the target's own intensity to the source's: [m], ``strength`` on the
        AUs of ``aus`` (all when None), 0 on the others."""
        selected = set(self.aus) if aus is None else set(aus)
        return torch.tensor([float(strength) if a in selected else 0.0 for a in self.aus], device=self.device)

    @staticmethod
    def mix_conditions(own: torch.Tensor, source: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """own + w * (source - own), per AU: weight 0 keeps the own value exactly, 1 takes the source's."""
        return own + weights.to(own.dtype) * (source - own)

    # ------------------------------------------------------------------ the tensor forms

    def _predict_aus_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """AU intensities in [0, l] read by the critic's AU head."""
        return read_aus(self.critic, x) * self.max_intensity

    def _reconstruct_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """G(x, x's own AUs as the critic reads them)."""
        return self.generator(x, read_aus(self.critic, x))[0]

    def _transfer_tensors(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        aus: list[int] | None,
        strength: float,
        labels_a: Labels | None,
        labels_b: Labels | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(A, A's AUs moved towards B's), G(B, B's AUs moved towards A's)) in one generator call."""
        own_a = self._own_condition(a, labels_a, "labels_a")
        own_b = self._own_condition(b, labels_b, "labels_b")
        w = self.au_weights(aus, strength)
        target = torch.cat([self.mix_conditions(own_a, own_b, w), self.mix_conditions(own_b, own_a, w)])
        out, _ = self.generator(torch.cat([a, b]), target)
        return out.chunk(2)

    # ------------------------------------------------------------------ GANimation's own use

    @torch.no_grad()
    def animate(self, images: Any, aus: torch.Tensor | dict[int, float]) -> Any:
        """The images with the given AU intensities (in [0, l]), of the kind they were given as: ``aus`` is a
        tensor [m] or [B, m] in the order of ``self.aus``, or a dict {AU number: intensity} that sets those
        AUs and keeps each image's own (as read) for the others."""
        x, restore = self._prepare(images, "images")
        own = read_aus(self.critic, x)
        if isinstance(aus, dict):
            chosen = self.check_aus(list(aus))
            target = own.clone()
            for au in chosen:
                value = float(aus[au])
                if not 0 <= value <= self.max_intensity:
                    raise ValueError(f"AU {au}: intensity must be in [0, {self.max_intensity}], got {value}")
                target[:, self.aus.index(au)] = value / self.max_intensity
        else:
            t = torch.as_tensor(aus, dtype=torch.float32, device=self.device)
            t = t.expand(x.shape[0], -1) if t.dim() == 1 else t
            target = self._own_condition(x, {"aus": t}, "aus")
        return restore(self.generator(x, target)[0])
