"""Faults during `eet-prepare`: a real process killed with SIGKILL (at a seeded random moment, and inside
the window between writing a temporary file and renaming it), a disk that fills up. After each, no file
at a final path is partial, and re-running the same command removes the orphan temporary files and ends
with exactly the output of an uninterrupted run (crops and manifest.csv byte for byte, summary.json
except its ``seconds``)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import miniatures as M
from bad_input import assert_one_clear_error, run_in_process
from eet_lightning.cli.prepare import main as prepare
from eet_lightning.data import images as images_module
from eet_lightning.data.prepare import common

PROG = "eet-prepare"
QUICK = ["--min-score", "0.5", "--size", "64", "--no-progress", "--threads", "1"]
FACES = 10  # the photo-folder miniature: 5 people, 2 photos each, every face found


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw") / "photos"
    M.write_folder(root, seed=0)
    return root


def _args(photos: Path, out: Path) -> list[str]:
    return [
        "folder",
        "--root",
        str(photos),
        "--labels",
        str(photos / "labels.csv"),
        "--out",
        str(out),
        *QUICK,
    ]


def _output(out: Path) -> dict[str, object]:
    """Every file below ``out`` by relative path: bytes, and summary.json parsed without ``seconds``."""
    files: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            rel = p.relative_to(out).as_posix()
            if rel == "summary.json":
                summary = json.loads(p.read_text())
                summary.pop("seconds")
                files[rel] = summary
            else:
                files[rel] = p.read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The output of one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert prepare(_args(photos, out)) == 0
    files = _output(out)
    assert sum(k.startswith("images/") for k in files) == FACES
    return files


def _temporary(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.tmp")] if out.exists() else []


def _crops(out: Path) -> list[Path]:
    folder = out / "images"
    return (
        [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if folder.exists()
        else []
    )


def _assert_nothing_partial(out: Path, reference: dict[str, object]) -> None:
    """Every file at a final path is whole: crops identical to the uninterrupted run's, the journal's
    lines whole JSON except perhaps a torn last one, temporary files only of write_bytes_atomic's pattern."""
    for crop in _crops(out):
        assert crop.read_bytes() == reference[crop.relative_to(out).as_posix()], f"partial crop {crop}"
    for name in ("manifest.csv",):
        if (out / name).exists():
            assert (out / name).read_bytes() == reference[name]
    journal = out / common.STATE_DIR / "progress.jsonl"
    if journal.exists():
        lines = journal.read_bytes().split(b"\n")
        for line in lines[:-1]:
            json.loads(line)
    for tmp in _temporary(out):
        assert common._TEMP_NAME.match(tmp.name), tmp


def _assert_finished_as_reference(out: Path, reference: dict[str, object]) -> None:
    assert not _temporary(out), "orphan temporary files were left"
    assert not (out / common.STATE_DIR).exists()
    assert _output(out) == reference


def _start(args: list[str], wrapper: str = "") -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore", NO_ALBUMENTATIONS_UPDATE="1")
    code = wrapper + "\nfrom eet_lightning.cli.prepare import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", "import sys\n" + code, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_a_random_moment_then_rerun_gives_the_same_output(
    photos: Path, reference: dict[str, object], tmp_path: Path, seed: int
) -> None:
    """SIGKILL once a seeded random number of crops has appeared, plus a seeded random delay."""
    rng = np.random.default_rng(seed)
    wait_for = int(rng.integers(1, FACES - 3))  # early enough that the run cannot finish first
    delay = float(rng.uniform(0.0, 0.01))
    out = tmp_path / "out"
    proc = _start(_args(photos, out))
    try:
        while len(_crops(out)) < wait_for and proc.poll() is None:
            time.sleep(0.002)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "summary.json").exists()
    _assert_nothing_partial(out, reference)
    assert prepare(_args(photos, out)) == 0
    _assert_finished_as_reference(out, reference)


# Kill the process from inside: at the n-th rename into --out (1: the journal's header, 2-11: the crops,
# 12: manifest.csv, 13: summary.json), after the temporary file is written and before it is renamed, or
# while the finished run removes its journal. Each leaves what a kill in that window leaves.
_KILL_AT_RENAME = """
import os, signal
_out, _n, _seen, _replace = os.path.abspath({out!r}), {n}, [0], os.replace
def _kill_before_rename(src, dst, *a, **k):
    if os.path.abspath(str(dst)).startswith(_out):
        _seen[0] += 1
        if _seen[0] == _n:
            os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *a, **k)
os.replace = _kill_before_rename
"""
_KILL_AT_TIDY_UP = """
import os, signal, shutil
_rmtree = shutil.rmtree
def _kill_in_rmtree(path, *a, **k):
    if str(path).endswith(".eet-prepare"):
        os.kill(os.getpid(), signal.SIGKILL)
    return _rmtree(path, *a, **k)
shutil.rmtree = _kill_in_rmtree
"""


def _kill_points() -> list[pytest.param]:
    crop = int(np.random.default_rng(15).integers(2, 12))  # a seeded random crop
    return [
        pytest.param(_KILL_AT_RENAME, 1, id="journal-header"),
        pytest.param(_KILL_AT_RENAME, crop, id=f"rename-{crop}-crop"),
        pytest.param(_KILL_AT_RENAME, 12, id="manifest"),
        pytest.param(_KILL_AT_RENAME, 13, id="summary"),
        pytest.param(_KILL_AT_TIDY_UP, 0, id="journal-removal"),
    ]


@pytest.mark.parametrize(("wrapper", "n"), _kill_points())
def test_kill_inside_a_write_leaves_nothing_partial_and_rerun_cleans_up(
    photos: Path, reference: dict[str, object], tmp_path: Path, wrapper: str, n: int
) -> None:
    out = tmp_path / "out"
    proc = _start(_args(photos, out), wrapper.format(out=str(out), n=n))
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read().decode()
    _assert_nothing_partial(out, reference)
    if wrapper == _KILL_AT_RENAME and n > 1:
        assert len(_temporary(out)) == 1  # the file it was about to rename: an orphan for the rerun
    assert prepare(_args(photos, out)) == 0
    _assert_finished_as_reference(out, reference)


def test_full_disk_is_one_line_and_rerun_resumes(
    photos: Path, reference: dict[str, object], tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the 4th crop is written (its temporary file is written, then the next call
    fails): one line naming the crop, the temporary file removed, the 3 finished crops kept."""
    out = tmp_path / "out"
    real = images_module.usual_permissions  # called by write_bytes_atomic once the data is written
    calls = {"n": 0}

    def fills_up(path) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # the journal's header, 3 crops, then the 4th crop
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path)

    monkeypatch.setattr(images_module, "usual_permissions", fills_up)
    rc, _, err = run_in_process(prepare, _args(photos, out), capsys)
    assert_one_clear_error(PROG, rc, err, "No space left on device", "cannot write", str(out / "images"))
    _assert_nothing_partial(out, reference)
    assert len(_crops(out)) == 3 and not _temporary(out)
    monkeypatch.setattr(images_module, "usual_permissions", real)  # room again
    assert prepare(_args(photos, out)) == 0
    _assert_finished_as_reference(out, reference)


def test_rerun_removes_only_its_own_temporary_files(
    photos: Path, reference: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real = common.write_image_atomic
    calls = {"n": 0}

    def interrupted(path, image, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(path, image, *a, **k)

    monkeypatch.setattr(common, "write_image_atomic", interrupted)
    assert prepare(_args(photos, out)) == 130
    monkeypatch.setattr(common, "write_image_atomic", real)
    crop_dir = _crops(out)[0].parent
    orphans = [crop_dir / ".x_1.jpg.k2j4_8zq.tmp", out / ".manifest.csv.abcdefgh.tmp"]
    keep = [crop_dir / "notes.tmp", crop_dir / ".draft.txt.abcdefgh.tmp", out / ".mine.abcdefgh.tmp"]
    for p in orphans + keep:
        p.write_bytes(b"left behind")
    assert prepare(_args(photos, out)) == 0
    assert not any(p.exists() for p in orphans)
    assert all(p.read_bytes() == b"left behind" for p in keep)
    for p in keep:
        p.unlink()
    _assert_finished_as_reference(out, reference)


def test_a_second_run_on_the_same_out_refuses(photos: Path, tmp_path: Path, capsys) -> None:
    """While one eet-prepare writes into --out (its lock held), another on the same folder refuses with one
    line and touches nothing; once the first is done the lock file is gone and a run goes through."""
    from eet_lightning.run_lock import RunLock

    out = tmp_path / "out"
    out.mkdir()
    held = RunLock(out, "eet-prepare", common.LOCK_NAME, "--out")
    held.acquire()
    try:
        rc, _, err = run_in_process(prepare, _args(photos, out), capsys)
    finally:
        held.release(remove=True)
    assert_one_clear_error("eet-prepare", rc, err, str(out), "in use by another eet-prepare", "--out")
    assert list(out.iterdir()) == []
    assert prepare(_args(photos, out)) == 0
    assert not (out / common.LOCK_NAME).exists() and (out / "manifest.csv").is_file()
