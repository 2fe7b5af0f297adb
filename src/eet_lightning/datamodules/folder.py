"""`FolderDataModule`: the user's own faces prepared by ``eet-prepare folder`` (or any eet-prepare
output)."""

from __future__ import annotations

from eet_lightning.datamodules.base import EvaluationSettings
from eet_lightning.datamodules.manifest import ManifestDataModule


class FolderDataModule(ManifestDataModule):
    """Any folder written by eet-prepare; the labels are whatever the manifest holds."""

    dataset_name = None
    evaluation_settings = EvaluationSettings(expression_partners=1, identity_pairs=5000, gaze_partners=0)
