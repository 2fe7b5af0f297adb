"""Plain ``nn.Module``s of Table I (no Lightning, no losses, no data)."""

from eet_lightning.nets.config import SUPPORTED_IMAGE_SIZES, ArchConfig
from eet_lightning.nets.modules import (
    AttributeClassifier,
    AUFreeEncoder,
    AURelatedEncoder,
    FeatureDiscriminator,
    FeatureEncoder,
    Generator,
    ImageDiscriminator,
    count_parameters,
)

__all__ = [
    "SUPPORTED_IMAGE_SIZES",
    "ArchConfig",
    "AttributeClassifier",
    "AUFreeEncoder",
    "AURelatedEncoder",
    "FeatureDiscriminator",
    "FeatureEncoder",
    "Generator",
    "ImageDiscriminator",
    "count_parameters",
]
