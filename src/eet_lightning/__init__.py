"""eet-lightning: Explicit Facial Expression Transfer (Shao et al., IEEE TIP 2021) in PyTorch Lightning."""

import os

# albumentations checks PyPI for updates on import; nothing may reach the network at run time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

# Tiny gradients become denormal floats, which x86 CPUs process up to 40x slower (a stage-1 step measured
# 7.4 s instead of 0.18 s). Flushing them to zero must happen before torch starts its worker threads,
# because each thread keeps the setting it was created with; hence here, at import.
torch.set_flush_denormal(True)

from eet_lightning.aus import DISFA_AUS, OPENFACE_AUS  # noqa: E402
from eet_lightning.base import LossWeights  # noqa: E402
from eet_lightning.model import EETModel  # noqa: E402
from eet_lightning.nets import ArchConfig  # noqa: E402
from eet_lightning.runtime import tune_cpu_allocator  # noqa: E402
from eet_lightning.stage1 import Stage1Module  # noqa: E402
from eet_lightning.stage2 import Stage2Module  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "DISFA_AUS",
    "OPENFACE_AUS",
    "ArchConfig",
    "EETModel",
    "LossWeights",
    "Stage1Module",
    "Stage2Module",
    "tune_cpu_allocator",
]
