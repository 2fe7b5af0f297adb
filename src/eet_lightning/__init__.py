"""eet-lightning: Explicit Facial Expression Transfer (Shao et al., IEEE TIP 2021) in PyTorch Lightning.

The names below are imported when first used (PEP 562), so that ``from eet_lightning import EETModel``
loads the inference side only: no Lightning, no training module. Importing the package changes no
process-wide setting; programs call `configure_process` (see `eet_lightning.runtime`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eet_lightning.aus import DISFA_AUS, OPENFACE_AUS
    from eet_lightning.base import LossWeights
    from eet_lightning.model import EETModel
    from eet_lightning.nets import ArchConfig
    from eet_lightning.runtime import configure_process, tune_cpu_allocator
    from eet_lightning.stage1 import Stage1Module
    from eet_lightning.stage2 import Stage2Module

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "DISFA_AUS": "eet_lightning.aus",
    "OPENFACE_AUS": "eet_lightning.aus",
    "ArchConfig": "eet_lightning.nets",
    "EETModel": "eet_lightning.model",
    "LossWeights": "eet_lightning.base",
    "Stage1Module": "eet_lightning.stage1",
    "Stage2Module": "eet_lightning.stage2",
    "configure_process": "eet_lightning.runtime",
    "tune_cpu_allocator": "eet_lightning.runtime",
}
__all__ = [
    "DISFA_AUS",
    "OPENFACE_AUS",
    "ArchConfig",
    "EETModel",
    "LossWeights",
    "Stage1Module",
    "Stage2Module",
    "configure_process",
    "tune_cpu_allocator",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
