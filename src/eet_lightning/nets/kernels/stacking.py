"""K parallel layers of one kind (one per branch) run side by side as one call."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eet_lightning.nets.kernels.layout import same_layout
from eet_lightning.nets.kernels.prelu import PReLU, prelu
from eet_lightning.nets.kernels.spectral_norm import SpectralNormMixin


def stacked_layer(layers: list[nn.Module], x: torch.Tensor, groups: int, first: bool) -> torch.Tensor:
    """Apply K parallel layers of one kind (one per branch) to ``x`` holding their inputs side by side.

    ``first``: ``layers`` are convolutions, run as one call (``groups`` 1 when every branch reads the same
    ``x``, K when each reads its own channels). Otherwise they are per-channel layers (batch or instance
    norm, PReLU, identity) over the K branches' concatenated channels. Parameters and running statistics
    stay in the per-branch layers; batch norm's running statistics are updated there as each layer's own
    forward would.
    """
    head = layers[0]
    if first:
        weight = torch.cat(
            [m.normalized_weight() if isinstance(m, SpectralNormMixin) else m.weight for m in layers]
        )
        bias = torch.cat([m.bias for m in layers]) if head.bias is not None else None
        return F.conv2d(x, weight, bias, head.stride, head.padding, head.dilation, groups)
    if isinstance(head, nn.Identity):
        return x
    channels = x.shape[1] // len(layers)
    if isinstance(head, nn.PReLU):
        weight = torch.cat([m.weight.expand(channels) for m in layers])
        # our PReLU's backward; torch's own layer keeps aten's
        return prelu(x, weight) if isinstance(head, PReLU) else F.prelu(x, weight)
    affine = [torch.cat([getattr(m, n) for m in layers]) if head.affine else None for n in ("weight", "bias")]
    if isinstance(head, nn.InstanceNorm2d) and not head.track_running_stats:
        return same_layout(F.instance_norm(x, weight=affine[0], bias=affine[1], eps=head.eps), x)
    if isinstance(head, nn.BatchNorm2d) and head.track_running_stats and head.momentum is not None:
        mean = torch.cat([m.running_mean for m in layers])
        var = torch.cat([m.running_var for m in layers])
        out = F.batch_norm(x, mean, var, *affine, head.training, head.momentum, head.eps)
        if head.training:  # F.batch_norm updated the concatenated copies: hand them back
            with torch.no_grad():
                for i, m in enumerate(layers):
                    m.running_mean.copy_(mean[i * channels : (i + 1) * channels])
                    m.running_var.copy_(var[i * channels : (i + 1) * channels])
                    m.num_batches_tracked.add_(1)
        return out
    raise TypeError(f"no side-by-side form for {type(head).__name__} layers")
