"""`CFDDataModule`: the Chicago Face Database prepared by ``eet-prepare cfd`` (one pose, so the pose
term of L_c is dropped; AUs from OpenFace)."""

from __future__ import annotations

from eet_lightning.datamodules.base import EvaluationSettings
from eet_lightning.datamodules.manifest import ManifestDataModule


class CFDDataModule(ManifestDataModule):
    """CFD: 1,081 training and 126 test images with the paper's split; v = 1."""

    dataset_name = "cfd"
    evaluation_settings = EvaluationSettings(expression_partners=5, identity_pairs=5000, gaze_partners=0)
