"""Inference forms of the trained networks: the same function with fewer operations.

Two rewrites, each exact up to float rounding for a module in eval mode (tests check 1e-5):

- spectral norm folded into plain weights: ``W / sigma(W)`` with the stored power-iteration vectors
  (eval mode never updates them, so sigma is a constant);
- batch norm in eval mode folded into the convolution before it (``bn(conv(x)) = conv'(x)``), including
  the post-sum BN of G's UpRes blocks, which folds into both summed deconvolutions.

Then every convolution is marked ``prepacked``: on CPU, no-gradient fp32 calls use a copy of its weight in
oneDNN's own layout, made once (see `PrepackedWeight`), instead of reordering the weight at every call.

(Er's branches run side by side, one convolution per level, in training and inference alike: see
`AURelatedEncoder`.) The checkpoint is never touched: `EETModel` builds these forms from the
parametrized weights it loads, and ``fuse=False`` keeps the training form.
"""

from __future__ import annotations

import torch
from torch import nn

from eet_lightning.nets.blocks import UpResBlock
from eet_lightning.nets.kernels.prepack import Conv2d, ConvTranspose2d, PrepackedWeight
from eet_lightning.nets.kernels.spectral_norm import SNConv2d, SNConvTranspose2d

_Conv = nn.Conv2d | nn.ConvTranspose2d


@torch.no_grad()
def _plain_copy(layer: _Conv, weight: torch.Tensor, bias: torch.Tensor | None) -> _Conv:
    """A plain Conv2d/ConvTranspose2d with ``layer``'s geometry and the given weight and bias."""
    kind = ConvTranspose2d if isinstance(layer, nn.ConvTranspose2d) else Conv2d
    extra = {"output_padding": layer.output_padding} if kind is ConvTranspose2d else {}
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


@torch.no_grad()
def fuse_for_inference(module: nn.Module) -> nn.Module:
    """Both folds above on an eval-mode module holding EET's networks (in place). Returns ``module``."""
    if module.training:
        raise ValueError("fuse_for_inference needs a module in eval mode")
    fold_spectral_norm(module)
    fold_batch_norm(module)
    for layer in module.modules():
        if isinstance(layer, PrepackedWeight):
            layer.prepacked = True
    return module.eval()  # the new plain layers too
