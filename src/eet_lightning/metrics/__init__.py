"""torchmetrics `Metric`s of the paper's section IV-A3, exact under DDP."""

from eet_lightning.metrics.au import ICC31, AUIntensityMSE, icc31
from eet_lightning.metrics.gaze import GazeAccuracy
from eet_lightning.metrics.verification import FaceVerification, tar_at_far, verification_accuracy

__all__ = [
    "ICC31",
    "AUIntensityMSE",
    "FaceVerification",
    "GazeAccuracy",
    "icc31",
    "tar_at_far",
    "verification_accuracy",
]
