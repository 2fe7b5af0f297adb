"""What makes a training run survive faults: whole checkpoints, exact resume, one writer per run folder.

- `AtomicCheckpointIO` writes every checkpoint to a temporary sibling, flushes it to disk and renames it
  over the final name, so a checkpoint path always holds a whole file: a full disk or a kill during a save
  leaves the previous checkpoint in place (Lightning's own writer opens the final path and writes into it).
- `RNGStateCallback` stores the random number generators' states (torch, CUDA, numpy, Python) in every
  checkpoint and restores them when a run resumes. Training draws pairs, mirroring and augmentation from
  torch's global generator, so without it a resumed run continues from the re-seeded state of a fresh
  start and ends with different weights. With it, a run resumed from an epoch-end checkpoint ends
  bit-identical to an uninterrupted run (tests/test_faults_fit.py).
- `RunLock` keeps a second ``eet-fit`` out of a run folder that one is training in (an advisory ``flock``
  that the operating system releases when the process dies, kill -9 included).
- `remove_stale_temporaries` deletes the temporary files a killed save left behind (only ours, by name).
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from eet_lightning.run_lock import LOCK_NAME, RunLock, RunLockedError

__all__ = [
    "LOCK_NAME",
    "TEMP_PREFIX",
    "AtomicCheckpointIO",
    "RNGStateCallback",
    "RunLock",
    "RunLockedError",
    "remove_stale_temporaries",
    "rng_states",
    "set_rng_states",
]

TEMP_PREFIX = ".eet-tmp-"  # temporary checkpoint files: .eet-tmp-<final name>-<random>.tmp


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` that writes through a temporary file and an atomic rename (local paths)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as err:  # a full disk, a quota: reported against the checkpoint's own name
            Path(tmp).unlink(missing_ok=True)
            raise OSError(
                err.errno, f"could not save the checkpoint ({err.strerror or err})", str(path)
            ) from err
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary checkpoint files (``.eet-tmp-*.tmp``) a killed save left in ``folder``."""
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f"{TEMP_PREFIX}*.tmp") if p.is_file())
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def rng_states() -> dict[str, Any]:
    """The state of every global random generator, as tensors and plain values only (so that checkpoints
    holding it still load with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the global one is what we save)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate(_tuples(state["python"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class RNGStateCallback(pl.Callback):
    """Saves the global random generators' states with every checkpoint and restores them on resume.

    The state saved is the one at the moment of the save (after the epoch's validation); it is restored
    before training continues (Lightning runs its sanity-check validation inside an RNG-isolated block), so
    the next epoch draws exactly what it would have drawn without the interruption. Under DDP every rank
    restores the state rank 0 saved: the ranks are seeded alike and make the same number of draws per step.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])
