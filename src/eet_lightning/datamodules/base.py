"""What every EET DataModule tells the model: the AU list, n, v and the AU weights of eq. 5."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytorch_lightning as pl


@dataclass
class DataInfo:
    """Facts about a dataset's training split that size the model; eet-fit copies them into the model
    config so that nobody types them by hand."""

    aus: list[int]  # AU order of every label vector
    num_identities: int  # n: identity classes of the training split
    num_poses: int  # v: pose classes
    au_weights: list[float] = field(default_factory=list)  # w_i of eq. 5, from training occurrence rates
    max_intensity: int = 5  # l


class EETDataModule(pl.LightningDataModule):
    """Base class: subclasses implement `info` (cheap, available right after __init__) and the loaders.

    Batches are ``{"a": sample, "b": sample}`` where the two sides come from different subjects and
    each sample is a dict with ``image`` [B, 3, H, W] in [-1, 1], ``aus`` [B, m] in [0, l],
    ``identity`` [B], ``pose`` [B] and, where known, ``gaze`` and ``emotion``.
    """

    @property
    def info(self) -> DataInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def image_size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError
