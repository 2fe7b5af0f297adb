"""What every EET DataModule tells the model: the AU list, n, v and the AU weights of eq. 5."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass
class DataInfo:
    """Facts about a dataset's training split that size the model; eet-fit copies them into the model
    config so that nobody types them by hand."""

    aus: list[int]  # AU order of every label vector
    num_identities: int  # n: identity classes of the training split
    num_poses: int  # v: pose classes
    au_weights: list[float] = field(default_factory=list)  # w_i of eq. 5, from training occurrence rates
    max_intensity: int = 5  # l
    # emotion classes (EMOTIONS of eet_lightning.data.synthetic) when every sample has an ``emotion`` label
    # (StarGAN's domains), else 0
    num_emotions: int = 0


@dataclass(frozen=True)
class EvaluationSettings:
    """Sizes of the paper's evaluation protocols on one dataset (section IV-C2), read by eet-evaluate."""

    expression_partners: int = 1  # random images of other subjects per test image (expression, Tables II-IV)
    identity_pairs: int = 5000  # same-subject pairs, and as many different-subject ones (Tables V, VI)
    gaze_partners: int = 0  # images of other subjects with another gaze per test image (Table VII)


class EETDataModule(pl.LightningDataModule):
    """Base class: subclasses set ``_info`` in __init__ (so `info` is cheap and available at once), keep
    ``image_size``, ``batch_size`` and ``num_workers`` in ``hparams`` and set the datasets in ``setup``.

    Batches are ``{"a": sample, "b": sample}`` where the two sides come from different subjects and
    each sample is a dict with ``image`` [B, 3, H, W] in [-1, 1], ``aus`` [B, m] in [0, l],
    ``identity`` [B], ``pose`` [B] and, where known, ``gaze`` and ``emotion``.
    """

    _info: DataInfo  # set by the subclass's __init__, from its training split
    # the protocol sizes eet-evaluate uses on this dataset; each DataModule declares its own
    evaluation_settings: ClassVar[EvaluationSettings] = EvaluationSettings()
    # the dataset's name (eet-prepare's name for the manifest ones; eet-evaluate's results use it); None for
    # a DataModule that reads any manifest (the user's own faces)
    dataset_name: ClassVar[str | None] = None

    @property
    def info(self) -> DataInfo:
        return self._info

    @property
    def image_size(self) -> int:
        return int(self.hparams.image_size)

    # The subclasses keep ``batch_size`` and ``num_workers`` in ``hparams`` and set ``train_set`` and
    # ``val_set`` in ``setup``; the loaders below are then shared.
    train_set: Dataset
    val_set: Dataset

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            # a training set smaller than one batch still gives one (short) batch
            drop_last=shuffle and len(dataset) >= self.hparams.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
