"""`EETModel`: a trained EET as a user meets it (load a stage-2 checkpoint, swap expressions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eet_lightning.aus import DISFA_AUS
from eet_lightning.base import variant_flags
from eet_lightning.nets import ArchConfig, AUFreeEncoder, AURelatedEncoder, FeatureEncoder, Generator
from eet_lightning.stage2 import read_checkpoint

INFERENCE_PARTS = ("encoder", "au_free_encoder", "au_related_encoder", "generator")


class EETModel(nn.Module):
    """E, Ef, Er and G of a trained EET; nothing of the discriminators or of training.

    >>> model = EETModel.load_from_checkpoint("runs/synthetic/stage2/last.ckpt")   # doctest: +SKIP
    >>> a_with_b, b_with_a = model.transfer(image_a, image_b)                      # doctest: +SKIP
    """

    def __init__(self, arch: ArchConfig | dict[str, Any], aus: Sequence[int] = DISFA_AUS) -> None:
        super().__init__()
        self.arch = ArchConfig.coerce(arch)
        self.aus = [int(a) for a in aus]
        self.encoder = FeatureEncoder(self.arch)
        self.au_free_encoder = AUFreeEncoder(self.arch)
        self.au_related_encoder = AURelatedEncoder(self.arch)
        self.generator = Generator(self.arch)

    @classmethod
    def load_from_checkpoint(
        cls, path: str | Path, map_location: str | torch.device | None = None
    ) -> EETModel:
        """Build from a stage-2 checkpoint alone (it is self-contained) and switch to eval mode."""
        ckpt = read_checkpoint(path, 2, "EETModel.load_from_checkpoint")
        hp = ckpt["hyper_parameters"]
        arch = ArchConfig.coerce(hp["arch"])
        arch.multi_branch = variant_flags(hp.get("variant", "eet"))["multi_branch"]
        model = cls(arch, hp["aus"])
        state = {k: v for k, v in ckpt["state_dict"].items() if k.split(".")[0] in INFERENCE_PARTS}
        model.load_state_dict(state, strict=True)
        if map_location is not None:
            model.to(map_location)
        return model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, images: torch.Tensor, name: str) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        s = self.arch.image_size
        if images.dim() != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(
                f"{name} must be [B, 3, {s}, {s}] or [3, {s}, {s}] in [-1, 1], got {list(images.shape)}"
            )
        return images.to(self.device, torch.float32)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 3, S, S] in [-1, 1] -> (AU-related f_r, AU-free f_f), each [B, C, 4, 4]."""
        feature = self.encoder(self._check(images, "images"))
        au_related, _ = self.au_related_encoder(feature)
        return au_related, self.au_free_encoder(feature)

    @torch.no_grad()
    def decode(self, au_related: torch.Tensor, au_free: torch.Tensor) -> torch.Tensor:
        """G(f_r, f_f): images [B, 3, S, S] in [-1, 1]."""
        return self.generator(au_related.to(self.device), au_free.to(self.device))

    @torch.no_grad()
    def predict_aus(self, images: torch.Tensor) -> torch.Tensor:
        """AU intensities in [0, l] read by Er, [B, m] in the order of ``self.aus``."""
        _, au_pred = self.au_related_encoder(self.encoder(self._check(images, "images")))
        return au_pred * self.arch.max_intensity

    @torch.no_grad()
    def transfer(self, image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A with B's expression, B with A's expression); tensors [B, 3, S, S] (or [3, S, S]) in [-1, 1]."""
        single = image_a.dim() == 3
        a, b = self._check(image_a, "image_a"), self._check(image_b, "image_b")
        if a.shape[0] != b.shape[0]:
            raise ValueError(
                f"image_a and image_b must hold as many images, got {a.shape[0]} and {b.shape[0]}"
            )
        fr, ff = self.encode(torch.cat([a, b]))
        fr_a, fr_b = fr.chunk(2)
        ff_a, ff_b = ff.chunk(2)
        out_a, out_b = self.decode(torch.cat([fr_b, fr_a]), torch.cat([ff_a, ff_b])).chunk(2)
        return (out_a[0], out_b[0]) if single else (out_a, out_b)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Self-reconstruction G(f_r, f_f) of each image."""
        return self.decode(*self.encode(images))
