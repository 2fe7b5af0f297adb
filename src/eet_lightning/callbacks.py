"""Lightning callbacks: image grids of fixed validation pairs, written to disk and to the logger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def pair_grid(rows: dict[str, torch.Tensor], label_width: int = 84) -> np.ndarray:
    """One labelled row per entry of ``rows`` (each [2N, 3, H, W], A-side first then B-side), laid out so
    that column k shows pair k's A then B: Ia Ib | İa İb | ... as in Fig. 3 of the paper."""
    first = next(iter(rows.values()))
    n2, _, h, w = first.shape
    n = n2 // 2
    grid = np.full((len(rows) * h, label_width + n * (2 * w + 4), 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows.values()):
        tiles = to_uint8(images)
        for k in range(n):
            x0 = label_width + k * (2 * w + 4)
            grid[r * h : (r + 1) * h, x0 : x0 + w] = tiles[k]
            grid[r * h : (r + 1) * h, x0 + w : x0 + 2 * w] = tiles[n + k]
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(rows):
        draw.text((4, r * h + h // 2 - 6), name, fill=(0, 0, 0))
    return np.asarray(canvas)


def first_pairs(loader: torch.utils.data.DataLoader, count: int) -> dict[str, dict[str, torch.Tensor]]:
    """The first ``count`` pairs of a (fixed-order) validation loader, as one batch."""
    collected: list[dict] = []
    for batch in loader:
        collected.append(batch)
        if sum(b["a"]["image"].shape[0] for b in collected) >= count:
            break
    return {
        side: {k: torch.cat([b[side][k] for b in collected])[:count] for k in collected[0][side]}
        for side in ("a", "b")
    }


class ImageGridCallback(pl.Callback):
    """Every validation epoch, render (Ia, Ib, swapped, self-reconstructed, cross-cycle[, truth]) for a
    fixed set of validation pairs through the module's ``log_images`` and write it as a PNG under
    ``out_dir`` and to the logger (W&B or TensorBoard) when there is one."""

    def __init__(self, out_dir: str | Path, num_pairs: int = 6, prefix: str = "stage2") -> None:
        self.out_dir = Path(out_dir)
        self.num_pairs = num_pairs
        self.prefix = prefix
        self._batch: dict | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not hasattr(pl_module, "log_images"):
            return
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            self._batch = first_pairs(loader, self.num_pairs)
        batch = pl_module.transfer_batch_to_device(self._batch, pl_module.device, 0)
        was_training = pl_module.training
        pl_module.eval()
        grid = pair_grid(pl_module.log_images(batch))
        pl_module.train(was_training)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.prefix}-epoch{trainer.current_epoch:03d}.png"
        Image.fromarray(grid).save(path)
        self._to_logger(trainer, grid)

    def _to_logger(self, trainer: pl.Trainer, grid: np.ndarray) -> None:
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(key=f"{self.prefix}/grid", images=[grid], step=trainer.global_step)
            elif name == "TensorBoardLogger":
                logger.experiment.add_image(
                    f"{self.prefix}/grid", grid, trainer.global_step, dataformats="HWC"
                )
