"""One writer per folder: an advisory lock that the operating system drops when its process ends.

eet-fit locks its run folder, eet-prepare and eet-transfer their output folders: a second run started on the
same folder refuses with one message instead of interleaving files with the first.
"""

from __future__ import annotations

import os
from pathlib import Path

LOCK_NAME = ".eet-fit.lock"  # eet-fit's lock file in the run folder


class RunLockedError(RuntimeError):
    """Another process is working in this folder."""


class RunLock:
    """An exclusive, non-blocking advisory lock on ``<folder>/<name>`` (``.eet-fit.lock`` for eet-fit).

    Held for as long as the process keeps the object (the kernel drops it when the process ends, however it
    ends). Where ``fcntl`` does not exist (Windows) the lock is not taken.
    """

    def __init__(
        self, folder: Path, program: str = "eet-fit", name: str = LOCK_NAME, option: str = "--run_dir"
    ):
        self.path = Path(folder) / name
        self.program, self.option = program, option
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder else ""
            raise RunLockedError(
                f"{self.path.parent} is in use by another {self.program}{who}; wait for it to finish or "
                f"choose another {self.option}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self, remove: bool = False) -> None:
        """Drop the lock; ``remove`` deletes the lock file too (for folders that must hold only outputs)."""
        if self._fd is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
