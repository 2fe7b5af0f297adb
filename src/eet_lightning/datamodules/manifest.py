"""`ManifestDataModule`: the shared base of every real-data DataModule, reading a folder written by
`eet-prepare` (manifest.csv + summary.json + crops)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from eet_lightning.aus import DISFA_AUS, validate_aus
from eet_lightning.data.manifest import (
    EMOTIONS,
    MANIFEST_NAME,
    MAX_INTENSITY,
    FaceTable,
    FixedPairs,
    ManifestError,
    SplitLabels,
    TrainPairs,
    read_manifest,
    read_summary,
)
from eet_lightning.datamodules.base import DataInfo, EETDataModule
from eet_lightning.losses import au_occurrence_threshold, au_occurrence_weights
from eet_lightning.pixels import check_image_size


def build_augmentation(mirror: bool, color_jitter: float):
    """albumentations pipeline of the training images: the paper's random horizontal mirror (p = 0.5)
    and, optionally, brightness / contrast / saturation jitter of the given strength. The Compose records
    what it applied, so that left/right labels (pose, gaze) follow a mirror."""
    import os

    # albumentations asks PyPI for a newer version on import unless told not to; nothing reaches the network
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    steps = []
    if mirror:
        steps.append(A.HorizontalFlip(p=0.5))
    if color_jitter > 0:
        steps.append(A.ColorJitter(color_jitter, color_jitter, color_jitter, 0.0, p=1.0))
    if not steps:
        return None
    return A.Compose(steps, save_applied_params=True)


class ManifestDataModule(EETDataModule):
    """Faces prepared by `eet-prepare`: training pairs from different training subjects (unpaired),
    validation / test pairs from the test subjects, fixed by ``seed``.

    ``info`` (AU list, n training identities, v poses, the eq. 5 AU weights from the training split's
    occurrence rates) is read from the manifest in ``__init__``, so eet-fit sizes the model from it.
    """

    dataset_name: str | None = None  # the eet-prepare dataset this class reads (None: any)

    def __init__(
        self,
        root: str | None = None,  # folder written by eet-prepare
        image_size: int = 256,  # 64, 128 or 256; crops of another size are resized on load
        aus: Sequence[int] | None = None,  # AU order of the labels (default DISFA's 12); manifest columns
        batch_size: int = 8,  # pairs per device per step
        num_workers: int = 4,  # DataLoader workers
        mirror: bool = True,  # the paper's random horizontal mirror (pose and gaze follow)
        color_jitter: float = 0.0,  # brightness / contrast / saturation jitter strength (0: off)
        val_pairs: int = 64,  # fixed held-out pairs for validation (0: every test image once)
        seed: int = 0,  # the held-out pairs follow from it
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if root is None or str(root).strip() in ("", "None"):
            raise ValueError(
                "data.root must be set to a folder written by eet-prepare (e.g. --data.root PATH)"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise ManifestError(f"data.root {self.root} is not a folder (expected the output of eet-prepare)")
        check_image_size(image_size, "data.image_size")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if color_jitter < 0:
            raise ValueError(f"data.color_jitter must be >= 0, got {color_jitter}")
        self.aus = validate_aus(DISFA_AUS if aus is None else aus, where="data.aus")
        summary = read_summary(self.root)
        if self.dataset_name is not None and summary.get("dataset") != self.dataset_name:
            raise ManifestError(
                f"data.root {self.root} holds a {summary.get('dataset')!r} preparation, but "
                f"{type(self).__name__} reads {self.dataset_name!r} (use the matching DataModule, or "
                f"FolderDataModule for any)"
            )
        self.summary = summary
        self.manifest = read_manifest(self.root / MANIFEST_NAME, self.aus)
        train = self.manifest.rows("train")
        test = self.manifest.rows("test")
        if len(train) == 0 or len(test) == 0:
            raise ManifestError(
                f"{self.manifest.path}: needs train and test rows, has {len(train)} train and {len(test)} test"
            )
        train_subjects = sorted({self.manifest.subjects[r] for r in train})
        other = sorted({self.manifest.subjects[r] for r in test} - set(train_subjects))
        # training identities are 0..n-1 (the classes of C and Dd); held-out people come after them
        self.identities = {s: k for k, s in enumerate([*train_subjects, *other])}
        self.pose_values = sorted({int(self.manifest.poses[r]) for r in train})
        if mirror:
            lonely = [p for p in self.pose_values if 180 - p not in self.pose_values]
            if lonely:
                raise ValueError(
                    f"data.mirror turns yaw p into 180 - p, but the training split has poses "
                    f"{self.pose_values} (no mirror image of {lonely}); set data.mirror false"
                )
        try:
            weights = au_occurrence_weights(
                torch.from_numpy(self.manifest.aus[train]), int(MAX_INTENSITY), eps=None
            ).tolist()
        except ValueError:
            # an AU that never occurs in training: a large but finite weight instead of a division by 0
            weights = au_occurrence_weights(
                torch.from_numpy(self.manifest.aus[train]), int(MAX_INTENSITY), eps=1.0 / max(len(train), 1)
            ).tolist()
        self._info = DataInfo(
            aus=list(self.aus),
            num_identities=len(train_subjects),
            num_poses=len(self.pose_values),
            au_weights=weights,
            max_intensity=int(MAX_INTENSITY),
            # every row labelled: the samples carry ``emotion`` (see ManifestFaceSet)
            num_emotions=len(EMOTIONS) if all(self.manifest.emotion[r] for r in [*train, *test]) else 0,
        )
        if self._info.num_identities < 2:
            raise ManifestError(f"{self.manifest.path}: the training split needs at least two subjects")
        self._train_rows, self._test_rows = train, test
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._test_table: FaceTable | None = None

    def table(self, split: str, augment: bool) -> FaceTable:
        """The rows of one split as a `FaceTable` (labels mapped to the training classes)."""
        rows = self._train_rows if split == "train" else self._test_rows
        transform = build_augmentation(self.hparams.mirror, self.hparams.color_jitter) if augment else None
        return FaceTable(self.manifest, rows, self.identities, self.pose_values, transform, self.image_size)

    def labels(self, split: str) -> SplitLabels:
        """Identity, subject, pose, gaze, emotion, AUs and path of every row of a split, read from the
        manifest without decoding an image (row k is image k of ``table(split, augment=False)``)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return self.table(split, augment=False).labels()

    def test_labels(self) -> SplitLabels:
        """`labels` of the test split: what eet-evaluate's protocols draw their pairs from."""
        return self.labels("test")

    def load_test_images(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Un-augmented test images by row of `test_labels`: [n, 3, H, W] in [-1, 1]."""
        if self._test_table is None:
            self._test_table = self.table("test", augment=False)
        return self._test_table.images(indices)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = TrainPairs(self.table("train", augment=True))
        if self.val_set is None:
            self.val_set = FixedPairs(
                self.table("test", augment=False), self.hparams.val_pairs, self.hparams.seed
            )

    def occurrence_rates(self) -> np.ndarray:
        """Share of training faces with each AU above (l - 1) / 2 (the occurrences behind eq. 5)."""
        return (self.manifest.aus[self._train_rows] > au_occurrence_threshold(MAX_INTENSITY)).mean(0)
