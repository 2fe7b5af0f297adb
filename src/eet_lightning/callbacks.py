"""Lightning callbacks: image grids and per-AU intensity charts of fixed validation pairs, written to disk and
to the logger."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image, ImageDraw

from eet_lightning.pixels import to_uint8


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


def au_chart(
    true: torch.Tensor | np.ndarray,
    predicted: torch.Tensor | np.ndarray,
    aus: Sequence[int],
    max_intensity: float = 5.0,
    title: str = "",
) -> np.ndarray:
    """One scatter panel per AU, true intensity (x) against predicted (y) with the identity line and the
    AU's MSE in the panel title; ``true`` and ``predicted`` are [N, m] in [0, max_intensity]. Returns the
    chart as uint8 RGB [H, W, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    true = np.asarray(true.detach().cpu() if isinstance(true, torch.Tensor) else true, dtype=np.float64)
    predicted = np.asarray(
        predicted.detach().cpu() if isinstance(predicted, torch.Tensor) else predicted, dtype=np.float64
    )
    if true.ndim != 2 or true.shape != predicted.shape or true.shape[1] != len(aus):
        raise ValueError(
            f"true and predicted must both be [N, {len(aus)}], got {list(true.shape)} and {list(predicted.shape)}"
        )
    cols = min(6, len(aus))
    rows = -(-len(aus) // cols)
    fig = Figure(figsize=(1.9 * cols, 1.9 * rows + (0.35 if title else 0)), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    top = max_intensity * 1.05
    for i, ax in enumerate(axes.flat):
        if i >= len(aus):
            ax.axis("off")
            continue
        ax.plot([0, max_intensity], [0, max_intensity], color="0.6", lw=0.8)
        ax.scatter(true[:, i], predicted[:, i], s=10, color="tab:blue")
        mse = float(((true[:, i] - predicted[:, i]) ** 2).mean())
        ax.set_title(f"AU{aus[i]}  MSE {mse:.2f}", fontsize=8)
        ax.set_xlim(-0.05 * max_intensity, top)
        ax.set_ylim(-0.05 * max_intensity, top)
        ax.tick_params(labelsize=6)
        if i % cols == 0:
            ax.set_ylabel("predicted", fontsize=7)
        if i // cols == rows - 1:
            ax.set_xlabel("true", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


class ImageGridCallback(pl.Callback):
    """Every validation epoch, render (Ia, Ib, swapped, self-reconstructed, cross-cycle[, truth]) for a
    fixed set of validation pairs through the module's ``log_images`` and write it as a PNG under
    ``out_dir`` and to the logger (W&B or TensorBoard) when there is one. Beside it goes a chart of the
    per-AU intensities Er predicts for the same images against their true ones (``au_chart``).

    The pairs are read again every epoch (reading a DataLoader draws a seed from torch's global generator,
    and a fixed-order loader gives the same pairs each time), so a run draws the same numbers whether it
    was resumed or not: a batch kept from the first epoch would be read once in an uninterrupted run but
    once more after every resume."""

    def __init__(self, out_dir: str | Path, num_pairs: int = 6, prefix: str = "stage2") -> None:
        self.out_dir = Path(out_dir)
        self.num_pairs = num_pairs
        self.prefix = prefix

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not hasattr(pl_module, "log_images"):
            return
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        batch = pl_module.transfer_batch_to_device(first_pairs(loader, self.num_pairs), pl_module.device, 0)
        was_training = pl_module.training
        pl_module.eval()
        grid = pair_grid(pl_module.log_images(batch))
        chart = self._au_chart(pl_module, batch, trainer.current_epoch)
        pl_module.train(was_training)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        epoch = f"epoch{trainer.current_epoch:03d}"
        Image.fromarray(grid).save(self.out_dir / f"{self.prefix}-{epoch}.png")
        self._to_logger(trainer, "grid", grid)
        if chart is not None:
            Image.fromarray(chart).save(self.out_dir / f"{self.prefix}-aus-{epoch}.png")
            self._to_logger(trainer, "aus", chart)

    @torch.no_grad()
    def _au_chart(self, pl_module: pl.LightningModule, batch: dict, epoch: int) -> np.ndarray | None:
        """Er's predicted AU intensities of the fixed images against their labels, or None when the module
        has no Er or the data no AU labels."""
        if (
            not all(hasattr(pl_module, k) for k in ("encoder", "au_related_encoder"))
            or "aus" not in batch["a"]
        ):
            return None
        images = torch.cat([batch["a"]["image"], batch["b"]["image"]])
        true = torch.cat([batch["a"]["aus"], batch["b"]["aus"]])
        _, predicted = pl_module.au_related_encoder(pl_module.encoder(images))
        max_intensity = float(pl_module.arch.max_intensity)
        aus = [int(a) for a in getattr(pl_module, "aus", range(1, true.shape[1] + 1))]
        return au_chart(true, predicted * max_intensity, aus, max_intensity, f"{self.prefix} epoch {epoch}")

    def _to_logger(self, trainer: pl.Trainer, key: str, image: np.ndarray) -> None:
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(key=f"{self.prefix}/{key}", images=[image], step=trainer.global_step)
            elif name == "TensorBoardLogger":
                logger.experiment.add_image(
                    f"{self.prefix}/{key}", image, trainer.global_step, dataformats="HWC"
                )
