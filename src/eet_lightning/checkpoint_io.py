"""Reading checkpoint files without running code from them.

A PyTorch checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever code it names. Every
checkpoint this library reads (stage-1 and stage-2 checkpoints, scorer checkpoints, runs it resumes) is
read with ``torch.load(weights_only=True)``: only tensors and plain values (dicts, lists, tuples, strings,
numbers, booleans, None) load, anything else is refused before it is built. The library's own
checkpoints hold nothing else (the hyper-parameters are stored as plain dicts, see
`EETBase.store_plain_hparams`), so a file that needs more is not one of ours, or was altered.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """A checkpoint that would need arbitrary Python objects (and so could run code) to load."""


def load_checkpoint(path: str | Path, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one clear error naming ``what``
    and ``path``: FileNotFoundError for a missing file, `UnsafeCheckpointError` for a file that holds more
    than tensors and plain values (nothing in it is run), ValueError for a file that is not a readable
    PyTorch checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what}: {path} is a folder; expected a checkpoint file (.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such checkpoint file: {path}")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # torch.save writes a zip archive (since PyTorch 1.6) or, in the legacy format, a pickle (protocol 2+
    # starts with 0x80); anything else is not a checkpoint at all (a text file, an image, an empty file)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = "an empty file" if not head else "neither a zip archive nor a pickle"
        raise ValueError(
            f"{what}: {path} is not a readable PyTorch checkpoint ({kind}); expected a checkpoint written by eet-fit"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Weights only load failed" in str(err) or "Unsupported global" in str(err):
            raise UnsafeCheckpointError(
                f"{what}: {path} was refused: it holds Python objects other than tensors and plain values, "
                "which could run code when loaded (eet-lightning's checkpoints hold none; the file is "
                "foreign or was altered)"
            ) from None
        raise ValueError(f"{what}: {path} is not a readable PyTorch checkpoint ({reason})") from None
    except Exception as err:  # a truncated or damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{what}: {path} is not a readable PyTorch checkpoint (truncated or damaged: {reason})"
        ) from None
