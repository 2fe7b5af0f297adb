"""The networks of Table I: E, C, Ef, Er, G, Du/Dd, Dsc/Dg."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eet_lightning.nets.blocks import ConvBlock, UpResBlock, check_shape, conv, deconv
from eet_lightning.nets.config import ArchConfig
from eet_lightning.nets.kernels.prelu import PReLU
from eet_lightning.nets.kernels.stacking import stacked_layer

# Table I at 256 px: output channels of the four stride-2 levels shared by C, Ef and Er
ENCODER_LEVELS = (128, 256, 512, 1024)
# Table I: the six UpRes levels of G (8 -> 256 px)
GENERATOR_LEVELS = (1024, 512, 256, 128, 64, 32)
# Table I: the six stride-2 levels of Dsc / Dg (256 -> 4 px)
IMAGE_DISCRIMINATOR_LEVELS = (32, 64, 128, 256, 512, 1024)
# Table I: Du / Dd, all stride 1 on the 4x4 features
FEATURE_DISCRIMINATOR_LEVELS = (128, 256, 512, 1024)


def _downsampling_stack(arch: ArchConfig, norm: str, sn: bool, last_plain: bool = False) -> nn.Sequential:
    """The stride-2 conv levels of C / Ef / Er reading E's features, lowest resolutions kept."""
    levels = ENCODER_LEVELS[arch.dropped_levels :]
    layers, in_ch = [], arch.feature_channels
    for i, out in enumerate(levels):
        plain = last_plain and i == len(levels) - 1
        layers.append(
            ConvBlock(in_ch, arch.ch(out), 3, 2, 1, "none" if plain else norm, activation=not plain, sn=sn)
        )
        in_ch = arch.ch(out)
    return nn.Sequential(*layers)


class FeatureEncoder(nn.Module):
    """E: image [B, 3, S, S] -> facial feature f [B, 64w, S/4, S/4] (BN, PReLU, two 2x2 poolings)."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch
        c32, c64 = arch.encoder_ch(32), arch.encoder_ch(64)
        self.layers = nn.Sequential(
            ConvBlock(3, c32, 3, 1, 1, "bn"),
            ConvBlock(c32, c32, 3, 1, 1, "bn"),
            nn.AvgPool2d(2, 2, 0),
            ConvBlock(c32, c64, 3, 1, 1, "bn"),
            ConvBlock(c64, c64, 3, 1, 1, "bn"),
            nn.AvgPool2d(2, 2, 0),
        )
        self.out_channels = c64

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        check_shape(image, 3, self.arch.image_size, "FeatureEncoder (E)")
        return self.layers(image)


class AttributeClassifier(nn.Module):
    """C: facial feature -> (identity logits [B, n], pose logits [B, v]) for the attribute loss (eq. 7)."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.layers = _downsampling_stack(arch, "bn", sn=False, last_plain=True)
        feat = arch.ch(ENCODER_LEVELS[-1])
        self.identity_head = nn.Linear(feat, arch.num_identities)
        self.pose_head = nn.Linear(feat, arch.num_poses)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.layers(feature).mean(dim=(2, 3))
        return self.identity_head(pooled), self.pose_head(pooled)


class AUFreeEncoder(nn.Module):
    """Ef: facial feature f -> AU-free feature f_f [B, 1024w, 4, 4]."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.layers = _downsampling_stack(arch, arch.translation_norm, sn=arch.spectral_norm)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.layers(feature)


class AURelatedEncoder(nn.Module):
    """Er: facial feature f -> (AU-related feature f_r [B, 1024w, 4, 4], normalized AUs [B, m] in [0, 1]).

    Multi-branch (EET): one independent branch per AU, each conv levels -> f_{r_i}, then GAP -> FC(1)
    -> sigmoid gives u_i; f_r is the mean of the m branch features (eq. 6). Single-branch (EET-Single):
    one branch gives f_r directly, then GAP -> FC(m) -> sigmoid.

    The parameters are stored per branch (``branches.i...``, ``heads.i...``). With ``grouped`` (default:
    ``arch.grouped_au_encoder``) the branches are computed side by side, one convolution per level (the
    first reads the shared feature with every branch's filters stacked, later ones are grouped
    convolutions with m groups), from the same parameters; otherwise one after the other. Both give the
    same outputs, gradients and batch-norm statistics (tests check 1e-5), and either form loads the other's
    state dict.
    """

    def __init__(self, arch: ArchConfig, grouped: bool | None = None) -> None:
        super().__init__()
        self.multi_branch = arch.multi_branch
        self.num_aus = arch.num_aus
        self.grouped = arch.grouped_au_encoder if grouped is None else grouped
        sn = arch.spectral_norm and arch.au_encoder_spectral_norm
        feat = arch.ch(ENCODER_LEVELS[-1])
        n_branches = arch.num_aus if arch.multi_branch else 1
        self.branches = nn.ModuleList(
            _downsampling_stack(arch, arch.translation_norm, sn=sn) for _ in range(n_branches)
        )
        self.heads = nn.ModuleList(
            nn.Linear(feat, 1 if arch.multi_branch else arch.num_aus) for _ in range(n_branches)
        )

    def forward_branches(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-branch features [B, K, C, 4, 4] (K = m, or 1 for EET-Single) and normalized AUs [B, m]."""
        if self.grouped and len(self.branches) > 1:
            return self._side_by_side(feature)
        feats, aus = [], []
        for branch, head in zip(self.branches, self.heads):
            f = branch(feature)
            feats.append(f)
            aus.append(torch.sigmoid(head(f.mean(dim=(2, 3)))))
        return torch.stack(feats, dim=1), torch.cat(aus, dim=1)

    def _side_by_side(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, x = len(self.branches), feature
        for depth, level in enumerate(zip(*self.branches)):  # the same level of every branch
            for pos, layers in enumerate(zip(*level)):  # conv, norm, activation
                x = stacked_layer(list(layers), x, groups=1 if depth == 0 else k, first=pos == 0)
        feats = x.unflatten(1, (k, -1))  # [B, m, C, 4, 4]
        weight = torch.cat([h.weight for h in self.heads])  # [m, C]
        bias = torch.cat([h.bias for h in self.heads])
        aus = torch.sigmoid((feats.mean(dim=(3, 4)) * weight).sum(dim=2) + bias)
        return feats, aus

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        branch_feats, aus = self.forward_branches(feature)
        return branch_feats.mean(dim=1), aus


# G's flow (``warp`` outputs) is FLOW_RANGE * tanh(.) in grid_sample's coordinates, where [-1, 1] spans the
# image: at most an eighth of the image (8 px at 64 px) in each direction
FLOW_RANGE = 0.25


class Generator(nn.Module):
    """G: concat(f_r, f_f) [B, 2048w, 4, 4] -> image [B, 3, S, S] in [-1, 1] (UpRes levels, 1x1 deconv).

    ``arch.generator_output`` says what G gives (see `ArchConfig`):

    - ``image`` (Table I): the colour image through tanh, drawn from the two features alone;
    - ``composite``: colour and a mask, ``mask * colour + (1 - mask) * base``;
    - ``warp``: a flow field that moves the base's pixels, ``warp(base, flow)``;
    - ``warp_composite``: both, ``mask * colour + (1 - mask) * moved``, where ``moved`` is
      ``warp(base, flow)``, or with ``arch.generator_warp_gate`` ``base + gate * (warp(base, flow) - base)``.

    The flow is computed at S / ``arch.generator_flow_scale`` from G's activations there and bilinearly
    upsampled. With ``arch.generator_skip`` E's feature of the base image [B, C_E, S/4, S/4] joins G's
    activations at S/4.
    """

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch
        self.feat_channels = arch.ch(ENCODER_LEVELS[-1])
        mode = arch.generator_output
        self.paints = mode in ("composite", "warp_composite")  # colour + mask
        self.warps = mode in ("warp", "warp_composite")  # flow
        self.gated = mode == "warp_composite" and arch.generator_warp_gate
        levels = GENERATOR_LEVELS[: len(GENERATOR_LEVELS) - arch.dropped_levels]
        sn = arch.spectral_norm and arch.generator_spectral_norm

        def level_at(scale: int) -> int:  # the UpRes level whose output is at S / scale (G starts at 4x4)
            return len(levels) - 1 - int(math.log2(scale))

        self.skip_after = level_at(4) if arch.generator_skip else None
        self.flow_after = level_at(arch.generator_flow_scale) if self.warps else None
        # a G that only warps needs no level above its flow's resolution
        depth = self.flow_after + 1 if mode == "warp" else len(levels)
        if self.skip_after is not None and self.skip_after >= depth:
            raise ValueError(
                "arch.generator_skip joins E's feature at S/4, but with generator_output 'warp' and "
                f"generator_flow_scale {arch.generator_flow_scale} G stops below that; use a flow scale <= 4"
            )
        blocks, in_ch = [], 2 * self.feat_channels
        for i, out in enumerate(levels[:depth]):
            blocks.append(UpResBlock(in_ch, arch.ch(out), sn=sn, norm=arch.translation_norm))
            in_ch = arch.ch(out) + (arch.feature_channels if i == self.skip_after else 0)
            if i == self.flow_after:
                # no spectral norm on this head: it would fix the weight's scale, and G starts from
                # (almost) the unmoved base with a small one
                self.to_flow = deconv(in_ch, 2, 1, 1, 0, 0, sn=False)
                with torch.no_grad():
                    self.to_flow.bias.zero_()
                    self.to_flow.weight.mul_(0.01)
        self.blocks = nn.Sequential(*blocks)
        if mode != "warp":  # colour, then the mask and the gate where G has them
            self.to_rgb = deconv(in_ch, 3 + int(self.paints) + int(self.gated), 1, 1, 0, 0, sn)

    def forward(
        self,
        au_related: torch.Tensor,
        au_free: torch.Tensor,
        base: torch.Tensor | None = None,
        base_feature: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The generated image; ``base`` (the image G edits) and ``base_feature`` (E(base)) are needed
        when ``arch.generator_output`` is not "image" and when ``arch.generator_skip`` is set."""
        return self.forward_with_maps(au_related, au_free, base, base_feature)[0]

    def forward_with_maps(
        self,
        au_related: torch.Tensor,
        au_free: torch.Tensor,
        base: torch.Tensor | None = None,
        base_feature: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(image [B, 3, S, S], maps): ``mask`` [B, 1, S, S] in [0, 1] (1: G's colour) when G paints,
        ``flow`` [B, 2, S, S] (x, y displacements in grid_sample's [-1, 1] units) when it warps, ``gate``
        [B, 1, S, S] in [0, 1] (1: the warped base) when the warp is gated."""
        check_shape(au_related, self.feat_channels, 4, "Generator (G) AU-related input f_r")
        check_shape(au_free, self.feat_channels, 4, "Generator (G) AU-free input f_f")
        s = self.arch.image_size
        if self.paints or self.warps:
            if base is None:
                raise ValueError(
                    f"Generator (G) with arch.generator_output {self.arch.generator_output!r} needs the base image"
                )
            check_shape(base, 3, s, "G's base image")
        if self.skip_after is not None:
            if base_feature is None:
                raise ValueError("Generator (G) with arch.generator_skip needs E's feature of the base image")
            check_shape(base_feature, self.arch.feature_channels, self.arch.feature_size, "G's base feature")
        x = torch.cat([au_related, au_free], dim=1)
        maps: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.skip_after:
                x = torch.cat([x, base_feature.to(x.dtype)], dim=1)
            if i == self.flow_after:
                flow = FLOW_RANGE * torch.tanh(self.to_flow(x))
                maps["flow"] = F.interpolate(flow, size=(s, s), mode="bilinear", align_corners=False)
        if not self.paints:
            return (warp(base, maps["flow"]) if self.warps else torch.tanh(self.to_rgb(x))), maps
        out = self.to_rgb(x)
        if self.warps:
            moved = warp(base, maps["flow"])
            if self.gated:
                maps["gate"] = torch.sigmoid(out[:, 4:5])
                moved = base + maps["gate"] * (moved - base)
            base = moved
        colour, mask = torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:4])
        maps["mask"] = mask
        return base + mask * (colour - base), maps


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` [B, C, H, W] sampled bilinearly at each pixel's position moved by ``flow`` [B, 2, H, W]
    (x, y in grid_sample's [-1, 1] units); a zero flow returns the image (up to float rounding)."""
    theta = torch.eye(2, 3, dtype=image.dtype, device=image.device).expand(image.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    grid = grid + flow.to(image.dtype).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FeatureDiscriminator(nn.Module):
    """Du / Dd: a 4x4 feature -> scores. Du reads f_f and outputs m(l+1); Dd reads f_r and outputs n."""

    def __init__(self, arch: ArchConfig, out_features: int) -> None:
        super().__init__()
        sn = arch.spectral_norm
        layers, in_ch = [], arch.ch(ENCODER_LEVELS[-1])
        for i, out in enumerate(FEATURE_DISCRIMINATOR_LEVELS):
            last = i == len(FEATURE_DISCRIMINATOR_LEVELS) - 1
            layers.append(
                ConvBlock(in_ch, arch.ch(out), 3, 1, 1, "none" if last else "in", activation=not last, sn=sn)
            )
            in_ch = arch.ch(out)
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, out_features)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(feature).mean(dim=(2, 3)))

    def _leaves(self) -> list[nn.Module]:
        return [leaf for block in self.layers for leaf in block]

    @staticmethod
    def side_by_side(
        discriminators: list[FeatureDiscriminator], features: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """``[d(f) for d, f in zip(discriminators, features)]`` with their conv layers run side by side
        (one grouped convolution per level over the concatenated features, as Er's branches run): Du and
        Dd are four small layers on 4x4 maps each, so their time is per-call overhead, and this halves the
        calls. The same parameters, spectral-norm power iterations and outputs."""
        x = torch.cat(features, dim=1)
        for layers in zip(*(d._leaves() for d in discriminators)):
            first = isinstance(layers[0], nn.Conv2d)
            x = stacked_layer(list(layers), x, groups=len(discriminators), first=first)
        pooled = x.mean(dim=(2, 3)).chunk(len(discriminators), dim=1)
        return [d.head(p) for d, p in zip(discriminators, pooled)]


class ImageDiscriminator(nn.Module):
    """Dsc / Dg: image [B, 3, S, S] -> one LSGAN score per image [B]."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        sn = arch.spectral_norm
        layers, in_ch = [], 3
        for out in IMAGE_DISCRIMINATOR_LEVELS[arch.dropped_levels :]:
            layers.append(ConvBlock(in_ch, arch.ch(out), 4, 2, 1, "in", sn=sn))
            in_ch = arch.ch(out)
        layers += [
            conv(in_ch, arch.ch(2048), 4, 2, 0, sn),  # 4x4 -> 1x1
            PReLU(),
            conv(arch.ch(2048), 1, 1, 1, 0, sn),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image).flatten(1).squeeze(1)


def count_parameters(module: nn.Module) -> int:
    """Parameter count (spectral norm adds buffers, not parameters)."""
    return sum(p.numel() for p in module.parameters())
