"""Pixels in and out of the model: uint8 RGB images <-> float tensors in [-1, 1] (G ends in tanh), and the
image sizes the networks support.

The one place these live: the datasets, `EETModel`, the evaluation and the image grids all call it, so
that the same pixels give the same tensor whichever way they came in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SUPPORTED_IMAGE_SIZES: tuple[int, ...] = (64, 128, 256)  # the 4x4 bottleneck after 4, 5 or 6 stride-2 levels


def check_image_size(size: Any, name: str) -> int:
    """``size`` as an int when it is one of `SUPPORTED_IMAGE_SIZES` (an int, numpy's included, not a bool),
    else a ValueError naming ``name`` (e.g. ``data.image_size``) and what was expected."""
    if (
        isinstance(size, bool)
        or not isinstance(size, (int, np.integer))
        or int(size) not in SUPPORTED_IMAGE_SIZES
    ):
        raise ValueError(f"{name} must be one of {SUPPORTED_IMAGE_SIZES}, got {size!r}")
    return int(size)


def to_model_range(
    images: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 RGB, channels last, one image ``[H, W, 3]`` or a batch ``[N, H, W, 3]`` (numpy array or tensor)
    -> float32 ``[3, H, W]`` or ``[N, 3, H, W]`` in [-1, 1] (``v / 127.5 - 1``).

    The result is contiguous: a permuted (channels-last) batch takes other convolution kernels, so the same
    pixels would give results a few ulp apart depending on where they came from. With ``device`` the uint8
    images move there first (a quarter of the bytes) and are converted there. The input is never written
    to and may be read-only."""
    if isinstance(images, torch.Tensor):
        x = images
    else:
        array = np.asarray(images)
        if array.dtype == np.uint8 and (not array.flags.writeable or min(array.strides, default=0) < 0):
            array = np.array(array)  # torch shares only writable memory with positive strides
        x = torch.from_numpy(array) if array.dtype == np.uint8 else None
    if x is None or x.dtype != torch.uint8 or x.dim() not in (3, 4) or x.shape[-1] != 3:
        kind = f"{images.dtype} {list(images.shape)}" if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be uint8 [H, W, 3] or [N, H, W, 3], got {kind}")
    if device is not None:
        x = x.to(device)
    return x.movedim(-1, -3).contiguous().float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float ``[N, 3, H, W]`` in [-1, 1] (values outside are clamped) -> uint8 ``[N, H, W, 3]`` numpy, rounded
    to the nearest level (half to even), on the CPU."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()
