"""Reading checkpoint files without running code from them.

A PyTorch checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever code it names. Every
checkpoint this library reads (stage-1 and stage-2 checkpoints, scorer checkpoints, runs it resumes) is
read with ``torch.load(weights_only=True)``: only tensors and plain values (dicts, lists, tuples, strings,
numbers, booleans, None) load, anything else is refused before it is built. The library's own
checkpoints hold nothing else (the hyper-parameters are stored as plain dicts, see
`EETBase.store_plain_hparams`), so a file that needs more is not one of ours, or was altered.

The weights a user shares can also be a ``.safetensors`` file (`write_weights`, ``eet-export``): tensors and
a JSON header only, no pickle at all; `load_checkpoint` reads it into the same dictionary form as a
checkpoint (``eet_stage``, ``hyper_parameters``, ``state_dict``), so everything that loads an `EETModel`
takes either.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

WEIGHTS_FORMAT = "eet-lightning-weights/1"  # the safetensors header's "format" entry
# What a model was trained on, recorded in every checkpoint (``eet_training_data``) and carried by eet-export:
# {"dataset": name, "kind": one of TRAINING_KINDS}. "synthetic": only the built-in rendered faces, so the
# model means nothing on photographs; "real": a face dataset (DISFA, RaFD, ..., or the user's own folder).
TRAINING_DATA_KEY = "eet_training_data"
TRAINING_KINDS = ("synthetic", "real", "unknown")
SYNTHETIC_DATASETS = frozenset({"synthetic"})


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
        head = fh.read(9)
    kind = checkpoint_kind(head)
    if kind == "safetensors":
        return _read_weights(path, what)
    if kind is None:
        found = "an empty file" if not head else "neither a zip archive, a pickle nor a safetensors file"
        raise ValueError(
            f"{what}: {path} is not a readable PyTorch checkpoint ({found}); expected a checkpoint written by "
            "eet-fit or weights written by eet-export"
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


def read_checkpoint(
    path: str | Path,
    expected_stage: int,
    what: str,
    method: str | None = None,
    loaded: Any = None,
) -> dict[str, Any]:
    """Load a Lightning checkpoint written by this library (safely: `load_checkpoint`) and check which
    stage, and with ``method`` which method, wrote it. ``loaded``: the file's contents when already read."""
    ckpt = load_checkpoint(path, what) if loaded is None else loaded  # tensors and plain values only
    stage = ckpt.get("eet_stage") if isinstance(ckpt, dict) else None
    found_method = checkpoint_method(ckpt)
    if method is not None and found_method is not None and found_method != method:
        raise ValueError(
            f"{what}: {path} is a {found_method} checkpoint; expected a {method} checkpoint "
            f"(eet_lightning.methods.load_transfer_model loads any method's)"
        )
    if stage != expected_stage:
        found = f"a stage-{stage} checkpoint" if stage else "not an eet-lightning checkpoint"
        raise ValueError(f"{what}: {path} is {found}; expected a stage-{expected_stage} checkpoint")
    return ckpt


def checkpoint_method(ckpt: Any) -> str | None:
    """The method that wrote a checkpoint dict: its ``eet_method`` entry ("eet" for checkpoints written
    before methods were named), None for a dict that is not an eet-lightning checkpoint."""
    if not isinstance(ckpt, dict) or "eet_stage" not in ckpt:
        return None
    method = ckpt.get("eet_method", "eet")
    return method if isinstance(method, str) else None


def training_data_record(dataset: str) -> dict[str, str]:
    """The ``eet_training_data`` entry of a model trained on ``dataset`` (a DataModule's name)."""
    return {"dataset": dataset, "kind": "synthetic" if dataset in SYNTHETIC_DATASETS else "real"}


def training_data(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the model of a checkpoint dict (or exported weights) was trained on: ``{"dataset", "kind"}``.

    Checkpoints written before the record existed: those of the built-in synthetic faces are recognised by
    their DataModule's hyper-parameters (``num_train_identities`` and ``train_samples``, which only
    `SyntheticDataModule` has) and say ``"inferred": True``; anything else is ``kind "unknown"``."""
    record = ckpt.get(TRAINING_DATA_KEY) if isinstance(ckpt, dict) else None
    if (
        isinstance(record, dict)
        and isinstance(record.get("dataset"), str)
        and record.get("kind") in TRAINING_KINDS
    ):
        return {"dataset": record["dataset"], "kind": record["kind"]}
    dm = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
    if isinstance(dm, dict) and {"num_train_identities", "train_samples"} <= set(dm):
        return {"dataset": "synthetic", "kind": "synthetic", "inferred": True}
    return {"dataset": "unknown", "kind": "unknown"}


def checkpoint_kind(head: bytes) -> str | None:
    """What a file's first 9 bytes say it is: "zip" (torch.save since PyTorch 1.6), "pickle" (torch.save's
    legacy format; protocol 2 and above start with 0x80), "safetensors" (an 8-byte little-endian header
    length, then the JSON header's ``{``), or None (anything else: text, an image, an empty file)."""
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    return None


def _read_weights(path: Path, what: str) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open has no iteration)
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{what}: {path} is not a readable safetensors file ({err})") from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(
            f"{what}: {path} is a safetensors file but not eet-lightning weights (its header names format "
            f"{meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}; write one with eet-export)"
        )
    try:
        hparams = json.loads(meta["hyper_parameters"])
        stage = int(meta["eet_stage"])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{what}: {path} has a damaged header ({err})") from None
    method = meta.get("eet_method", "eet")
    out = {"eet_stage": stage, "eet_method": method, "hyper_parameters": hparams, "state_dict": tensors}
    try:
        out[TRAINING_DATA_KEY] = json.loads(meta.get(TRAINING_DATA_KEY, "null"))
    except ValueError:
        raise ValueError(f"{what}: {path} has a damaged header (its training-data record)") from None
    return out


def write_weights(ckpt: dict[str, Any], path: str | Path, parts: Iterable[str]) -> Path:
    """Write the tensors of ``ckpt["state_dict"]`` under ``parts`` (top-level module names) and the
    checkpoint's hyper-parameters and stage to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    parts = tuple(parts)
    tensors = {
        k: v.detach().cpu().contiguous() for k, v in ckpt["state_dict"].items() if k.split(".")[0] in parts
    }
    if not tensors:
        raise ValueError(f"the checkpoint holds no weights of {list(parts)}")
    meta = {
        "format": WEIGHTS_FORMAT,
        "eet_stage": str(int(ckpt["eet_stage"])),
        "eet_method": str(ckpt.get("eet_method", "eet")),
        "hyper_parameters": json.dumps(ckpt["hyper_parameters"], sort_keys=True),
        TRAINING_DATA_KEY: json.dumps(training_data(ckpt), sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
