"""One LightningDataModule per dataset."""

from eet_lightning.datamodules.base import DataInfo, EETDataModule, EvaluationSettings
from eet_lightning.datamodules.cfd import CFDDataModule
from eet_lightning.datamodules.disfa import DISFADataModule
from eet_lightning.datamodules.folder import FolderDataModule
from eet_lightning.datamodules.manifest import ManifestDataModule
from eet_lightning.datamodules.mmi import MMIDataModule
from eet_lightning.datamodules.rafd import RaFDDataModule
from eet_lightning.datamodules.synthetic import SyntheticDataModule

__all__ = [
    "CFDDataModule",
    "DISFADataModule",
    "DataInfo",
    "EETDataModule",
    "EvaluationSettings",
    "FolderDataModule",
    "MMIDataModule",
    "ManifestDataModule",
    "RaFDDataModule",
    "SyntheticDataModule",
]
