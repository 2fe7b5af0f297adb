"""Expression-transfer methods as plug-ins: EET, and the GANimation and StarGAN baselines.

A method is a training side (one LightningModule per stage, each a `TransferMethod`, named in a config by
``class_path``) and an inference side (a `TransferModel`, which loads the last stage's checkpoint).
Checkpoints name their method (``eet_method``); `load_transfer_model` finds the inference class for it in
`METHODS`, a fixed table: a checkpoint names a method, never code to import. A new method registers itself
with `register_method`.

Importing this package loads neither Lightning nor a method's networks.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eet_lightning.checkpoint_io import checkpoint_method, read_checkpoint, training_data

if TYPE_CHECKING:
    from eet_lightning.methods.inference import TransferModel

# method name -> "module:InferenceClass"
METHODS: dict[str, str] = {
    "eet": "eet_lightning.model:EETModel",
    "ganimation": "eet_lightning.methods.ganimation.model:GANimationModel",
    "stargan": "eet_lightning.methods.stargan.model:StarGANModel",
}


def register_method(name: str, inference_class: str) -> None:
    """Make checkpoints whose ``eet_method`` is ``name`` load with ``inference_class`` ("module:Class", a
    `TransferModel` subclass)."""
    if ":" not in inference_class:
        raise ValueError(f"inference_class must read 'package.module:ClassName', got {inference_class!r}")
    METHODS[name] = inference_class


def inference_class(method: str) -> type[TransferModel]:
    """The `TransferModel` subclass registered for ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(sorted(METHODS))})")
    module, name = METHODS[method].split(":")
    return getattr(importlib.import_module(module), name)


def load_transfer_model(
    path: str | Path, map_location: Any = None, what: str = "load_transfer_model", **options: Any
) -> TransferModel:
    """The trained model of any method from its final checkpoint (or eet-export's weights), in eval mode on
    ``map_location`` (CPU when None). ``options`` go to the method's ``from_checkpoint`` (EET: ``fuse``,
    ``compile``). The file is read safely (`eet_lightning.checkpoint_io`); ValueError naming ``what`` and the
    file for anything that is not a final checkpoint of a known method."""
    from eet_lightning.checkpoint_io import load_checkpoint

    ckpt = load_checkpoint(path, what)
    method = checkpoint_method(ckpt)
    if method is None:
        raise ValueError(f"{what}: {path} is not an eet-lightning checkpoint")
    if method not in METHODS:
        raise ValueError(
            f"{what}: {path} was written by method {method!r}, which this installation does not know "
            f"(known: {', '.join(sorted(METHODS))})"
        )
    cls = inference_class(method)
    ckpt = read_checkpoint(path, cls.final_stage, what, method=method, loaded=ckpt)
    model = cls.from_checkpoint(ckpt, map_location, **options)
    model.training_data = training_data(ckpt)
    return model


__all__ = ["METHODS", "inference_class", "load_transfer_model", "register_method"]
