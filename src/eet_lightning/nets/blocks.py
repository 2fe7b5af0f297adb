"""Building blocks of Table I: conv-norm-PReLU, the up-sampling residual block.

The layers' speed kernels (spectral norm, oneDNN prepacking, PReLU backward, side-by-side stacking) live in
`eet_lightning.nets.kernels`."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from eet_lightning.nets.kernels.layout import same_layout
from eet_lightning.nets.kernels.prelu import PReLU
from eet_lightning.nets.kernels.prepack import Conv2d, ConvTranspose2d
from eet_lightning.nets.kernels.spectral_norm import SNConv2d, SNConvTranspose2d

Norm = Literal["bn", "in", "none"]


def conv(in_ch: int, out_ch: int, k: int, s: int, p: int, sn: bool, bias: bool = True) -> nn.Conv2d:
    """Conv2d, spectrally normalized when ``sn``."""
    return (SNConv2d if sn else Conv2d)(in_ch, out_ch, k, s, p, bias=bias)


def deconv(in_ch: int, out_ch: int, k: int, s: int, p: int, op: int, sn: bool) -> nn.ConvTranspose2d:
    """ConvTranspose2d (Table I's DeConv), spectrally normalized when ``sn``."""
    return (SNConvTranspose2d if sn else ConvTranspose2d)(in_ch, out_ch, k, s, p, op)


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (same parameters and state dict) that keeps a channels-last input's layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return same_layout(super().forward(x), x)


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        # Affine IN: the paper does not say; affine keeps per-channel scale learnable as BN does.
        return InstanceNorm2d(channels, affine=True)
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
        layers: list[nn.Module] = [
            conv(in_channels, out_channels, kernel_size, stride, padding, sn, bias=norm != "bn"),
            norm_layer(norm, out_channels),
        ]
        if activation:
            layers.append(PReLU())
        super().__init__(*layers)


class UpResBlock(nn.Module):
    """UpRes(x) of Table I: sum of DeConv(x,3,1,1,0)-IN-PReLU-DeConv(x,3,2,1,1) and DeConv(x,3,2,1,1),
    followed by IN and PReLU (the G column lists ``UpRes(x), IN, PReLU``). Doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int, sn: bool, norm: Norm = "in") -> None:
        super().__init__()
        self.main = nn.Sequential(
            deconv(in_channels, out_channels, 3, 1, 1, 0, sn),
            norm_layer(norm, out_channels),
            PReLU(),
            deconv(out_channels, out_channels, 3, 2, 1, 1, sn),
        )
        self.shortcut = deconv(in_channels, out_channels, 3, 2, 1, 1, sn)
        self.post = nn.Sequential(norm_layer(norm, out_channels), PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.main(x) + self.shortcut(x))


def check_shape(x: torch.Tensor, channels: int, size: int | None, what: str) -> None:
    """Fail early with the module's name when a tensor of the wrong shape is fed in."""
    if x.dim() != 4 or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != (size, size)):
        want = f"[B, {channels}, {size}, {size}]" if size is not None else f"[B, {channels}, H, W]"
        raise ValueError(f"{what} expects a tensor of shape {want}, got {list(x.shape)}")
