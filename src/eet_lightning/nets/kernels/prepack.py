"""CPU inference on weights kept in oneDNN's blocked layout (`PrepackedWeight`), and the plain
(de)convolution layers that use it."""

from __future__ import annotations

import torch
from torch import nn

from eet_lightning.nets.kernels.layout import conv2d, output_numel, whole_kernel

_PREPACK_OPS: bool | None = None


def _prepack_ops() -> bool:
    """Whether this torch build has oneDNN's convolution ops on prepacked weights."""
    global _PREPACK_OPS
    if _PREPACK_OPS is None:
        try:
            ops = torch.ops.mkldnn
            _PREPACK_OPS = torch.backends.mkldnn.is_available() and all(
                hasattr(ops, name)
                for name in (
                    "_reorder_convolution_weight",
                    "_convolution_pointwise",
                    "_reorder_convolution_transpose_weight",
                    "_convolution_transpose_pointwise",
                )
            )
        except (AttributeError, RuntimeError):
            _PREPACK_OPS = False
    return _PREPACK_OPS


class PrepackedWeight:
    """Inference on CPU with the weight kept in oneDNN's own blocked layout.

    torch's CPU convolution reorders a plain weight into oneDNN's layout at every call: for the deep
    levels of Table I at one pair (4 x 4 or 8 x 8 maps, weights of 20-75 MB) that reorder reads and
    writes the whole weight, and the layer is bound by memory traffic, not arithmetic (a 2048 -> 1024 3x3
    deconvolution at 4 x 4: 16.5 ms plain, 8.1 ms prepacked). With ``prepacked`` (set by
    `fuse_for_inference`), a no-gradient fp32 CPU call whose output is no larger than the weight uses a
    reordered copy made once per weight version and input shape (one pair at 256 px: 0.35 -> 0.30 s).
    The parameter, the state dict and every other path are unchanged; the copy (as large as the weight)
    is not part of the state and is rebuilt after ``.to()``, a weight update or a new input shape.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    padding_mode: str
    prepacked = False

    def _use_prepacked(self, x: torch.Tensor) -> bool:
        params = [self.weight] + ([self.bias] if self.bias is not None else [])
        return (
            self.prepacked
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype == self.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)))
            and not torch.is_autocast_enabled("cpu")
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and _prepack_ops()
            # where the weight outweighs the output (the deep levels, small batches); layers bound by
            # arithmetic ran slower prepacked: 16 pairs at 256 px took ~4.9 s with every layer prepacked
            # and ~4.5 s with none
            and self.weight.numel() >= output_numel(self, x)
        )

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, tuple(x.shape))
        cached = self.__dict__.get("_packed_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self._pack(self.weight.detach(), list(x.shape)))
            self.__dict__["_packed_cache"] = cached
        return cached[1]

    def __getstate__(self) -> dict:  # copies and pickles leave the oneDNN copy behind
        state = dict(super().__getstate__())  # type: ignore[misc]
        state.pop("_packed_cache", None)
        return state


class Conv2d(PrepackedWeight, nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) with `conv2d`'s whole-kernel shortcut and, for
    inference, `PrepackedWeight`."""

    def _pack(self, weight: torch.Tensor, input_size: list[int]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, self.padding, self.stride, self.dilation, self.groups, input_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not whole_kernel(self, x) and self._use_prepacked(x):
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
                "none", [], "",
            )  # fmt: skip
        return conv2d(self, x, self.weight, self.bias)


class ConvTranspose2d(PrepackedWeight, nn.ConvTranspose2d):
    """nn.ConvTranspose2d (same parameters and state dict) with, for inference, `PrepackedWeight`."""

    def _pack(self, weight: torch.Tensor, input_size: list[int]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_transpose_weight(
            weight, self.padding, self.output_padding, self.stride, self.dilation, self.groups, input_size
        )

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and self._use_prepacked(x):
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, self._packed(x), self.bias, self.padding, self.output_padding, self.stride,
                self.dilation, self.groups, "none", [], "",
            )  # fmt: skip
        return super().forward(x, output_size)
