"""One LightningDataModule per dataset."""

from eet_lightning.datamodules.base import DataInfo, EETDataModule
from eet_lightning.datamodules.synthetic import SyntheticDataModule

__all__ = ["DataInfo", "EETDataModule", "SyntheticDataModule"]
