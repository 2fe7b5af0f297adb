"""Inference forms of the trained networks: the same function with fewer, larger operations.

Three rewrites, each exact up to float rounding for a module in eval mode (tests check 1e-5):

- spectral norm folded into plain weights: ``W / sigma(W)`` with the stored power-iteration vectors
  (eval mode never updates them, so sigma is a constant);
- batch norm in eval mode folded into the convolution before it (``bn(conv(x)) = conv'(x)``), including
  the post-sum BN of G's UpRes blocks, which folds into both summed deconvolutions;
- Er's m independent branches computed as one convolution per level (the first level reads the shared
  feature with all branches' filters stacked; later levels are grouped convolutions with m groups), the
  same parameters laid out side by side.

The checkpoint is never touched: `EETModel` builds these forms from the per-branch, parametrized weights
it loads, and ``fuse=False`` keeps the training form.
"""

from __future__ import annotations

import torch
from torch import nn

from eet_lightning.nets.blocks import SNConv2d, SNConvTranspose2d, UpResBlock
from eet_lightning.nets.modules import AURelatedEncoder

_Conv = nn.Conv2d | nn.ConvTranspose2d


@torch.no_grad()
def _plain_copy(layer: _Conv, weight: torch.Tensor, bias: torch.Tensor | None) -> _Conv:
    """A plain Conv2d/ConvTranspose2d with ``layer``'s geometry and the given weight and bias."""
    kind = nn.ConvTranspose2d if isinstance(layer, nn.ConvTranspose2d) else nn.Conv2d
    extra = {"output_padding": layer.output_padding} if kind is nn.ConvTranspose2d else {}
    out = kind(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        dilation=layer.dilation,
        groups=layer.groups,
        bias=bias is not None,
        **extra,
    ).to(device=weight.device, dtype=weight.dtype)
    out.weight.copy_(weight)
    if bias is not None:
        out.bias.copy_(bias)
    return out


@torch.no_grad()
def fold_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace every spectrally normalized conv/deconv under ``module`` by a plain one holding
    ``W / sigma`` (sigma from the stored vectors, as eval mode computes it). Returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, (SNConv2d, SNConvTranspose2d)):
            was_training = child.training
            child.eval()  # no power iteration: the buffers are what eval-mode forward uses
            weight = child.normalized_weight()
            child.train(was_training)
            setattr(module, name, _plain_copy(child, weight, child.bias))
        else:
            fold_spectral_norm(child)
    return module


def _out_channel_shape(layer: _Conv) -> tuple[int, ...]:
    """View that broadcasts a per-output-channel vector over the layer's weight."""
    if isinstance(layer, nn.ConvTranspose2d):  # weight [in, out / groups, k, k]
        if layer.groups != 1:
            raise ValueError("batch-norm folding into grouped transposed convolutions is not supported")
        return (1, -1, 1, 1)
    return (-1, 1, 1, 1)


@torch.no_grad()
def _scaled(layer: _Conv, scale: torch.Tensor, shift: torch.Tensor | None) -> _Conv:
    """``layer`` followed by ``y * scale + shift`` per output channel, as one layer."""
    weight = layer.weight * scale.view(_out_channel_shape(layer))
    bias = layer.bias * scale if layer.bias is not None else torch.zeros_like(scale)
    if shift is not None:
        bias = bias + shift
    return _plain_copy(layer, weight, bias)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    if bn.training or bn.running_mean is None or bn.running_var is None:
        raise ValueError("only batch norm in eval mode with running statistics can be folded")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


@torch.no_grad()
def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a conv/deconv in a Sequential (and the
    post-sum BN of G's UpRes blocks) into that convolution. Returns ``module``."""
    if isinstance(module, UpResBlock) and isinstance(module.post[0], nn.BatchNorm2d):
        # bn(main(x) + shortcut(x)) = (s * main_last(h) + t) + s * shortcut(x)
        scale, shift = _bn_affine(module.post[0])
        module.main[-1] = _scaled(module.main[-1], scale, shift)
        module.shortcut = _scaled(module.shortcut, scale, None)
        module.post[0] = nn.Identity()
    for child in module.children():
        fold_batch_norm(child)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            layer, nxt = module[i], module[i + 1]
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(nxt, nn.BatchNorm2d):
                scale, shift = _bn_affine(nxt)
                module[i] = _scaled(layer, scale, shift)
                module[i + 1] = nn.Identity()
    return module


class GroupedAURelatedEncoder(nn.Module):
    """Er with its m branches side by side: one convolution per level for all branches.

    Built from a trained multi-branch `AURelatedEncoder` (``from_branches``); same outputs as it in eval
    mode, with ``forward`` and ``forward_branches`` of the same signatures.
    """

    def __init__(self, levels: nn.Sequential, head_weight: torch.Tensor, head_bias: torch.Tensor) -> None:
        super().__init__()
        self.multi_branch = True
        self.num_aus = head_weight.shape[0]
        self.levels = levels
        self.register_buffer("head_weight", head_weight)  # [m, C]
        self.register_buffer("head_bias", head_bias)  # [m]

    @classmethod
    @torch.no_grad()
    def from_branches(cls, er: AURelatedEncoder) -> GroupedAURelatedEncoder:
        if not er.multi_branch:
            raise ValueError("only a multi-branch Er (one branch per AU) has branches to group")
        if er.training:
            raise ValueError("group Er's branches in eval mode (batch statistics are per branch)")
        k = len(er.branches)
        levels = []
        for depth, blocks in enumerate(zip(*er.branches)):  # the same level of every branch
            convs = [b[0] for b in blocks]
            if any(isinstance(c, (SNConv2d, SNConvTranspose2d)) for c in convs):
                raise ValueError("fold spectral norm before grouping Er's branches")
            first = convs[0]
            grouped = nn.Conv2d(
                first.in_channels * (1 if depth == 0 else k),
                first.out_channels * k,
                first.kernel_size,
                first.stride,
                first.padding,
                groups=1 if depth == 0 else k,
                bias=first.bias is not None,
            ).to(first.weight)
            grouped.weight.copy_(torch.cat([c.weight for c in convs]))
            if first.bias is not None:
                grouped.bias.copy_(torch.cat([c.bias for c in convs]))
            layers: list[nn.Module] = [grouped]
            for pos in range(1, len(blocks[0])):
                layers.append(_stack_channelwise([b[pos] for b in blocks], first.out_channels, first.weight))
            levels.append(nn.Sequential(*layers))
        head_weight = torch.cat([h.weight for h in er.heads])  # [m, C]
        head_bias = torch.cat([h.bias for h in er.heads])
        return cls(nn.Sequential(*levels), head_weight, head_bias)

    def forward_branches(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.levels(feature)
        b, _, h, w = out.shape
        feats = out.view(b, self.num_aus, -1, h, w)
        pooled = feats.mean(dim=(3, 4))  # [B, m, C]
        aus = torch.sigmoid((pooled * self.head_weight).sum(dim=2) + self.head_bias)
        return feats, aus

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, aus = self.forward_branches(feature)
        return feats.mean(dim=1), aus


@torch.no_grad()
def _stack_channelwise(layers: list[nn.Module], channels: int, like: torch.Tensor) -> nn.Module:
    """One per-channel layer (norm or activation) over the concatenated ``channels`` of every branch."""
    first, total = layers[0], channels * len(layers)
    if isinstance(first, nn.Identity):
        return nn.Identity()
    if isinstance(first, nn.PReLU):  # Table I's PReLU: one slope per branch level, or one per channel
        out = nn.PReLU(total).to(like)
        out.weight.copy_(torch.cat([p.weight.expand(channels) for p in layers]))
        return out
    if isinstance(first, (nn.InstanceNorm2d, nn.BatchNorm2d)):
        kind = type(first)
        out = kind(total, eps=first.eps, affine=first.affine, track_running_stats=first.track_running_stats)
        out = out.to(like).eval()
        names = (["weight", "bias"] if first.affine else []) + (
            ["running_mean", "running_var"] if first.track_running_stats else []
        )
        for name in names:
            getattr(out, name).copy_(torch.cat([getattr(n, name) for n in layers]))
        return out
    raise TypeError(f"cannot group Er's branches: unexpected layer {type(first).__name__}")


@torch.no_grad()
def fuse_for_inference(module: nn.Module, group_branches: bool = True) -> nn.Module:
    """All rewrites above on an eval-mode module holding EET's networks (in place). Returns ``module``."""
    if module.training:
        raise ValueError("fuse_for_inference needs a module in eval mode")
    fold_spectral_norm(module)
    fold_batch_norm(module)
    if group_branches:
        for name, child in list(module.named_children()):
            if isinstance(child, AURelatedEncoder) and child.multi_branch:
                setattr(module, name, GroupedAURelatedEncoder.from_branches(child))
    return module
