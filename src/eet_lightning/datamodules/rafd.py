"""`RaFDDataModule`: RaFD prepared by ``eet-prepare rafd`` (45, 90 and 135 degree cameras as the three
poses, gaze labels, AUs from OpenFace; 60 training and 7 test subjects)."""

from __future__ import annotations

from eet_lightning.datamodules.base import EvaluationSettings
from eet_lightning.datamodules.manifest import ManifestDataModule


class RaFDDataModule(ManifestDataModule):
    """RaFD. n = 60 training subjects and v = 3 poses with the paper's split; a mirror swaps the 45 and
    135 degree poses and the left and right gaze. ``aus: [1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23,
    25, 26, 45]`` gives the paper's 17-AU setting (section IV-D) when prepared with ``--aus 17``."""

    dataset_name = "rafd"
    evaluation_settings = EvaluationSettings(expression_partners=5, identity_pairs=5000, gaze_partners=5)
