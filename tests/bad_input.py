"""Shared checks of the bad-input sweeps: one line naming the input, exit status 2, no traceback, and
nothing written (or nothing left half-written) where the command refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder`` (relative paths); empty when it does not exist."""
    if not folder.exists():
        return set()
    if folder.is_file():
        return {"."}
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def assert_one_clear_error(prog: str, rc: int, err: str, *needles: str) -> None:
    """``rc`` is 2 and ``err`` is exactly one line ``<prog>: error: ...`` holding every needle."""
    assert rc == 2, f"exit status {rc}, stderr: {err!r}"
    assert "Traceback" not in err, err
    assert err.startswith(f"{prog}: error: "), err
    assert err.count("\n") == 1 and err.endswith("\n"), f"not one line: {err!r}"
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def run_in_process(main: Callable[[list[str]], int], args: Sequence[str], capsys) -> tuple[int, str, str]:
    """``main(args)`` with its output captured: (exit status, stdout, stderr). A ``SystemExit`` counts as
    the status it carries."""
    capsys.readouterr()
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse-style exits must not happen, but report them as a status
        rc = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def run_script(prog: str, args: Sequence[str], cwd: Path | None = None, timeout: float | None = None):
    """The console script ``prog`` in a fresh interpreter (its module's ``main``), as a user runs it."""
    module = {
        "eet-fit": "eet_lightning.cli.fit",
        "eet-prepare": "eet_lightning.cli.prepare",
        "eet-transfer": "eet_lightning.cli.transfer",
        "eet-evaluate": "eet_lightning.cli.evaluate",
    }[prog]
    env = dict(os.environ, PYTHONWARNINGS="ignore", NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="offline")
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
