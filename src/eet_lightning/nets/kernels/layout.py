"""Layout and geometry helpers shared by the kernels: flat views in memory order, a convolution's
output size, the whole-kernel convolution as one matrix product, and keeping a channels-last layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def flat(t: torch.Tensor) -> torch.Tensor | None:
    """A dense tensor as a flat view in memory order (None if it has gaps or overlaps)."""
    mem = t.permute(sorted(range(t.dim()), key=lambda d: (-t.stride(d), d)))
    return mem.view(-1) if mem.is_contiguous() else None


def output_numel(layer: nn.Module, x: torch.Tensor) -> int:
    """Number of elements a (transposed) convolution ``layer`` makes from a 4-d ``x``."""
    k, s, p, d = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if layer.transposed:
        op = layer.output_padding
        size = [(x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in (0, 1)]
    else:
        size = [(x.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in (0, 1)]
    return x.shape[0] * layer.out_channels * size[0] * size[1]


def whole_kernel(layer: nn.Module, x: torch.Tensor) -> bool:
    """A (non-transposed) convolution whose kernel covers its whole unpadded input: one matrix product."""
    return (
        not getattr(layer, "transposed", False)
        and layer.padding == (0, 0)
        and layer.groups == 1
        and layer.dilation == (1, 1)
        and x.dim() == 4
        and tuple(x.shape[2:]) == tuple(layer.kernel_size)
    )


def as_matrices(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Input and weight of a whole-kernel convolution as ``[N, K]`` and ``[out, K]`` matrices, flattened
    in the weight's memory order (channels-last or contiguous) so that neither is copied; and whether
    that order was channels-last."""
    last = (
        weight.dim() == 4
        and not weight.is_contiguous()
        and weight.is_contiguous(memory_format=torch.channels_last)
    )
    if last:
        x, weight = x.permute(0, 2, 3, 1), weight.permute(0, 2, 3, 1)
    return x.reshape(x.shape[0], -1), weight.reshape(weight.shape[0], -1), last


def from_matrix(m: torch.Tensor, like: torch.Tensor, last: bool) -> torch.Tensor:
    """Undo `as_matrices` for a gradient shaped like ``like``."""
    if not last:
        return m.view(like.shape)
    n, c, h, w = like.shape
    return m.view(n, h, w, c).permute(0, 3, 1, 2)


def conv2d(
    layer: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``layer``'s convolution with the given weight. A kernel that covers the whole unpadded input (the
    4x4 -> 1x1 and 1x1 -> 1x1 layers ending Dsc and Dg) is one matrix product: the same sums, without
    the convolution kernels' per-call weight reordering (at Table I's size that layer's weight is 134 MB)."""
    if not whole_kernel(layer, x):
        return layer._conv_forward(x, weight, bias)
    xm, wm, _ = as_matrices(x, weight)
    return F.linear(xm, wm, bias)[:, :, None, None]


def same_layout(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in ``x``'s memory format when ``x`` is channels-last. torch's instance norm returns
    contiguous tensors whatever its input; in a channels-last network every element-wise op after it
    would then mix layouts, and on CPU such ops take a strided path that is 10-35x slower."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out
