"""StarGAN's networks and `StarGANModel`, a trained StarGAN as users meet it (no Lightning here).

StarGAN (Choi et al., CVPR 2018) translates an image into a target domain c: G(x, c), c a one-hot vector
over the domains replicated over the image and stacked onto it. Here the domains are the emotion classes
of `eet_lightning.data.synthetic.EMOTIONS` (RaFD's eight expressions), so "A with B's expression" is A
translated into B's emotion class: G(A, c_B), with c_B the softmax of D's domain classifier on B (or the
one-hot vector of B's emotion label when it is given).

The networks are the paper's (its appendix; github.com/yunjey/stargan): G is `ConditionalTrunk` (a 7x7
convolution, two down-sampling convolutions, six residual blocks, two up-sampling convolutions, instance
norm and ReLU throughout) with a 7x7 convolution to RGB and tanh; D is `PatchCritic` (4x4 stride-2
convolutions with leaky ReLU 0.01, a 3x3 convolution scoring patches, D_src, and a convolution over the
whole last map giving the domain logits, D_cls).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from eet_lightning.data.synthetic import EMOTIONS
from eet_lightning.methods.gan_parts import ConditionalTrunk, PatchCritic
from eet_lightning.methods.inference import ImageInput, Labels, TransferModel, _is_single

# The hyper-parameters that size the networks (the training module's ``__init__`` arguments of these names)
ARCH_KEYS = ("image_size", "num_emotions", "width", "residual_blocks", "critic_width", "critic_layers")
PARTS = ("generator", "discriminator")

__all__ = ["ARCH_KEYS", "StarGANDiscriminator", "StarGANGenerator", "StarGANModel", "one_hot_domains"]


class StarGANGenerator(nn.Module):
    """G(x, c): an image [B, 3, H, W] in [-1, 1] and a domain vector c [B, num_domains] (one-hot when
    trained) -> the image translated into domain c, [B, 3, H, W] in [-1, 1]."""

    def __init__(self, num_domains: int, width: int = 64, residual_blocks: int = 6) -> None:
        super().__init__()
        self.num_domains = num_domains
        self.trunk = ConditionalTrunk(num_domains, width, residual_blocks)
        self.head = nn.Conv2d(self.trunk.out_channels, 3, 7, 1, 3, bias=False)

    def forward(self, image: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.trunk(image, domain)))


class StarGANDiscriminator(PatchCritic):
    """D(x) -> (D_src: WGAN patch scores [B, 1, h, w], D_cls: domain logits [B, num_domains])."""

    def __init__(self, image_size: int, num_domains: int, width: int = 64, layers: int | None = None) -> None:
        super().__init__(image_size, num_domains, width, layers)
        self.num_domains = num_domains


def build_networks(
    image_size: int,
    num_emotions: int,
    width: int = 64,
    residual_blocks: int = 6,
    critic_width: int = 64,
    critic_layers: int | None = None,
) -> tuple[StarGANGenerator, StarGANDiscriminator]:
    """(G, D) as the training module and `StarGANModel` both build them (so that their weights match)."""
    return (
        StarGANGenerator(num_emotions, width, residual_blocks),
        StarGANDiscriminator(image_size, num_emotions, critic_width, critic_layers),
    )


def one_hot_domains(labels: torch.Tensor, num_domains: int) -> torch.Tensor:
    """Class indices [B] -> one-hot domain vectors [B, num_domains] (float32)."""
    return nn.functional.one_hot(labels.long(), num_domains).float()


class StarGANModel(TransferModel):
    """G and D of a trained StarGAN (D reads each image's domain, its emotion class, when no label is given).

    >>> model = load_transfer_model("runs/stargan_synthetic/stage1/last.ckpt")        # doctest: +SKIP
    >>> a_with_b, b_with_a = model.transfer(image_a, image_b)                         # doctest: +SKIP
    >>> a_happy, _ = model.transfer(image_a, image_b, labels_b={"emotion": torch.tensor([1])})  # doctest: +SKIP
    >>> probabilities = model.predict_emotion(image_a)                                # doctest: +SKIP
    """

    method = "stargan"
    final_stage = 1
    parts = PARTS
    condition_labels = ("emotion",)
    selective = False

    def __init__(
        self,
        image_size: int = 128,
        num_emotions: int = len(EMOTIONS),
        width: int = 64,
        residual_blocks: int = 6,
        critic_width: int = 64,
        critic_layers: int | None = None,
    ) -> None:
        super().__init__()
        self.image_size = int(image_size)
        self.num_emotions = int(num_emotions)
        self.aus = []  # StarGAN reads no AUs
        self.generator, self.discriminator = build_networks(
            self.image_size, self.num_emotions, width, residual_blocks, critic_width, critic_layers
        )

    @property
    def emotions(self) -> tuple[str, ...]:
        """The names of the domains, in the order of D's classifier."""
        if self.num_emotions == len(EMOTIONS):
            return EMOTIONS
        return tuple(f"domain {k}" for k in range(self.num_emotions))

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], map_location: str | torch.device | None = None, **options: Any
    ) -> StarGANModel:
        """Build from a StarGAN checkpoint dict (its ``hyper_parameters`` size the networks). ``fuse`` is
        accepted for symmetry with EET and changes nothing (there is no norm to fold into a convolution:
        instance norm depends on each image); ``compile=True`` is not available."""
        hp = cls.checked_hparams(ckpt, options, ("image_size", "num_emotions"))
        model = cls(**{k: hp[k] for k in ARCH_KEYS if k in hp})
        model._load_parts(ckpt, map_location)
        return model

    def check_aus(self, aus: Any) -> list[int]:
        """StarGAN has no AUs to select (the base would answer "AU 12 is not one of this model's AUs []")."""
        raise ValueError(
            f"selective transfer (aus={aus!r}) is not available for {type(self).__name__} (method "
            f"{self.method!r}): it moves whole emotion classes, not AUs; transfer all AUs (aus=None) and use "
            "strength instead"
        )

    # ------------------------------------------------------------------ domains

    def _label_domains(self, labels: torch.Tensor, name: str) -> torch.Tensor:
        """Emotion class indices [B] (integers, or floats holding integers) -> one-hot domains [B, K]."""
        t = torch.as_tensor(labels, device=self.device)
        k = self.num_emotions
        if t.dim() != 1 or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(
                f"{name}: emotion labels must be class indices [B], got {t.dtype} {list(t.shape)}"
            )
        if t.is_floating_point() and not bool((t == t.round()).all()):
            raise ValueError(f"{name}: emotion labels must be whole class indices, got {t.tolist()}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise ValueError(
                f"{name}: emotion labels must be class indices in [0, {k}) ({', '.join(self.emotions)}), "
                f"got {t.tolist()}"
            )
        return one_hot_domains(t, k)

    def read_domains(self, x: torch.Tensor) -> torch.Tensor:
        """D's domain classifier's softmax on prepared images [B, 3, S, S]: [B, K] probabilities."""
        return self.discriminator(x)[1].softmax(dim=1)

    @torch.no_grad()
    def predict_emotion(self, images: ImageInput) -> torch.Tensor:
        """The probabilities of each emotion class (`emotions`) as D's classifier reads them: [B, K] ([K] for
        one image). On the input tensor's device; on the CPU for PIL images, arrays and paths."""
        x, _ = self._prepare(images, "images")
        p = self.read_domains(x)
        device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        return (p[0] if _is_single(images) else p).to(device)

    @torch.no_grad()
    def translate(self, images: ImageInput, emotion: int | str | Sequence[int | str]) -> Any:
        """StarGAN's own use: each image translated into the emotion class ``emotion`` (an index or a name
        of `emotions`, or one per image), of the kind the images were given as."""
        x, restore = self._prepare(images, "images")
        items = [emotion] if isinstance(emotion, (int, str)) else list(emotion)
        index = []
        for e in items:
            if isinstance(e, str):
                if e not in self.emotions:
                    raise ValueError(f"emotion {e!r} is not one of {list(self.emotions)}")
                e = self.emotions.index(e)
            index.append(e)
        if len(index) == 1:
            index *= x.shape[0]
        if len(index) != x.shape[0]:
            raise ValueError(f"translate: {len(index)} emotions for {x.shape[0]} images")
        return restore(self.generator(x, self._label_domains(torch.tensor(index), "emotion")))

    # ------------------------------------------------------------------ the contract

    def _transfer_tensors(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        aus: list[int] | None,
        strength: float,
        labels_a: Labels | None,
        labels_b: Labels | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(A, c_A + s (c_B - c_A)), G(B, c_B + s (c_A - c_B))): c_X is the one-hot vector of side X's
        emotion label when given, else D's classifier's softmax on X; s = 0 keeps each image's own domain,
        1 is the swap."""
        x = torch.cat([a, b])
        n = a.shape[0]
        read = self.read_domains(x) if labels_a is None or labels_b is None else None
        c_a = read[:n] if labels_a is None else self._label_domains(labels_a["emotion"], "labels_a")
        c_b = read[n:] if labels_b is None else self._label_domains(labels_b["emotion"], "labels_b")
        target = torch.cat([c_a + strength * (c_b - c_a), c_b + strength * (c_a - c_b)])
        return self.generator(x, target).chunk(2)

    def _reconstruct_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """G(x, x's own domain as D reads it)."""
        return self.generator(x, self.read_domains(x))
