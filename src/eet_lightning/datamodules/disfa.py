"""`DISFADataModule`: DISFA prepared by ``eet-prepare disfa`` (12 AUs from its own labels or OpenFace;
18 training and 9 test subjects; one frontal pose)."""

from __future__ import annotations

from eet_lightning.datamodules.base import EvaluationSettings
from eet_lightning.datamodules.manifest import ManifestDataModule


class DISFADataModule(ManifestDataModule):
    """DISFA's left-camera frames. n = the training subjects (18 with the default split), v = 1."""

    dataset_name = "disfa"
    evaluation_settings = EvaluationSettings(expression_partners=1, identity_pairs=20000, gaze_partners=0)
