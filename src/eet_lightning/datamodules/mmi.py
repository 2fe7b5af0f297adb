"""`MMIDataModule`: MMI prepared by ``eet-prepare mmi`` (video frames and stills, AUs from OpenFace)."""

from __future__ import annotations

from eet_lightning.datamodules.base import EvaluationSettings
from eet_lightning.datamodules.manifest import ManifestDataModule


class MMIDataModule(ManifestDataModule):
    """MMI sessions; test subjects are held out (see ``eet_lightning.data.prepare.mmi``)."""

    dataset_name = "mmi"
    evaluation_settings = EvaluationSettings(expression_partners=1, identity_pairs=5000, gaze_partners=0)
