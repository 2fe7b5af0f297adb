"""Building blocks of Table I: conv-norm-PReLU, the up-sampling residual block, spectral norm."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

Norm = Literal["bn", "in", "none"]


def maybe_sn(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a conv/deconv in spectral normalization when ``enabled`` (Miyato et al., the paper's [36])."""
    return _spectral_norm(layer) if enabled else layer


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        # Affine IN: the paper does not say; affine keeps per-channel scale learnable as BN does.
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Conv(out, k, s, p) -> norm -> PReLU, the row type of Table I."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # Conv(k1, ...): output channels
        kernel_size: int,  # k2
        stride: int,  # k3
        padding: int,  # k4
        norm: Norm,  # BN in E and C, IN elsewhere, none on the last layers of some heads
        activation: bool = True,  # PReLU after the norm
        sn: bool = False,  # spectral norm on the conv
    ) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=norm != "bn")
        layers: list[nn.Module] = [maybe_sn(conv, sn), norm_layer(norm, out_channels)]
        if activation:
            layers.append(nn.PReLU())
        super().__init__(*layers)


class UpResBlock(nn.Module):
    """UpRes(x) of Table I: sum of DeConv(x,3,1,1,0)-IN-PReLU-DeConv(x,3,2,1,1) and DeConv(x,3,2,1,1),
    followed by IN and PReLU (the G column lists ``UpRes(x), IN, PReLU``). Doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int, sn: bool) -> None:
        super().__init__()
        self.main = nn.Sequential(
            maybe_sn(nn.ConvTranspose2d(in_channels, out_channels, 3, 1, 1, 0), sn),
            nn.InstanceNorm2d(out_channels, affine=True),
            nn.PReLU(),
            maybe_sn(nn.ConvTranspose2d(out_channels, out_channels, 3, 2, 1, 1), sn),
        )
        self.shortcut = maybe_sn(nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, 1), sn)
        self.post = nn.Sequential(nn.InstanceNorm2d(out_channels, affine=True), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.main(x) + self.shortcut(x))


def check_shape(x: torch.Tensor, channels: int, size: int | None, what: str) -> None:
    """Fail early with the module's name when a tensor of the wrong shape is fed in."""
    if x.dim() != 4 or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != (size, size)):
        want = f"[B, {channels}, {size}, {size}]" if size is not None else f"[B, {channels}, H, W]"
        raise ValueError(f"{what} expects a tensor of shape {want}, got {list(x.shape)}")
