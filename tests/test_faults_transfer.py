"""Faults in `eet-transfer`: kill -9 at a random point, a full disk, an interrupted job re-run. Nothing
half-written is ever left, the re-run removes the temporaries of the killed run (and nothing else) and does
only what is missing, and the result is byte-identical to an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from eet_lightning.cli import transfer
from eet_lightning.cli.transfer import _TEMPORARY, RECORD_NAME, main

skimage_data = pytest.importorskip("skimage.data")

# The killed run's os.replace waits this long before renaming a finished temporary, so that a kill lands
# while temporaries exist as often as between writes (the code that runs is the real one, only slower).
RENAME_DELAY = 0.3


def _photo(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tiny_run: Path) -> Path:
    return tiny_run / "stage2" / "last.ckpt"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of 4 photos (256 px, one face each) and a 12-frame clip of a face (128 px)."""
    root = tmp_path_factory.mktemp("fault_media")
    astronaut = cv2.resize(skimage_data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)
    camera = cv2.resize(camera, (256, 256), interpolation=cv2.INTER_AREA)
    folder = root / "photos"
    _photo(folder / "a.png", astronaut)
    _photo(folder / "b.png", camera)
    _photo(folder / "c.png", np.ascontiguousarray(astronaut[:, ::-1]))
    _photo(folder / "d.png", np.ascontiguousarray(camera[:, ::-1]))
    clip = root / "clip.mp4"
    small = cv2.resize(astronaut, (128, 128), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 128))
    for k in range(12):
        m = np.float32([[1, 0, k % 4], [0, 1, k % 3]])
        frame = cv2.warpAffine(small, m, (128, 128), borderMode=cv2.BORDER_REFLECT)
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return {"photos": folder, "a": folder / "a.png", "b": folder / "b.png", "clip": clip}


def _folder_job(ckpt: Path, media: dict[str, Path], out: Path) -> list[str]:
    """4 photos with each other: 6 pairs, 12 whole photos, in batches of 4 pairs (the last one short)."""
    folder = str(media["photos"])
    return [
        "--ckpt",
        str(ckpt),
        "--source",
        folder,
        "--target",
        folder,
        "--out",
        str(out),
        "--batch-size",
        "4",
    ]


def _video_job(ckpt: Path, media: dict[str, Path], out: Path) -> list[str]:
    return [
        "--ckpt",
        str(ckpt),
        "--source",
        str(media["clip"]),
        "--target",
        str(media["b"]),
        "--out",
        str(out),
    ]


def _media(names) -> list[str]:
    """The images and videos among file names (not the record, the quality reports or report.csv)."""
    return [n for n in names if n.endswith((".png", ".mp4"))]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([*args, "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def reference(
    ckpt: Path, media: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """Uninterrupted runs of both jobs: the bytes every interrupted run must end with."""
    root = tmp_path_factory.mktemp("reference")
    refs = {}
    for name, job in (("folder", _folder_job), ("video", _video_job)):
        assert main([*job(ckpt, media, root / name), "--no-progress"]) == 0
        refs[name] = _snapshot(root / name)
    # the outputs, their quality reports, report.csv and the record
    assert len(refs["folder"]) == 12 + 12 + 1 + 1 and len(refs["video"]) == 1 + 1 + 1 + 1
    assert len(_media(refs["folder"])) == 12
    return refs


def _progress(out: Path) -> int:
    """How many files the run has begun to write (temporaries and finished files, the record included)."""
    if not out.is_dir():
        return 0
    begun = set()
    for name in os.listdir(out):
        m = _TEMPORARY.match(name)
        begun.add(m["name"] if m else name)
    return len(begun)


def _kill_during(args: list[str], out: Path, begun: int, delay: float) -> tuple[int, str]:
    """Run eet-transfer in a fresh interpreter (each rename delayed by RENAME_DELAY) and kill -9 it
    ``delay`` seconds after it began writing its ``begun``-th file (0: ``delay`` seconds after the start)."""
    code = (
        "import os, sys, time\n"
        "_replace = os.replace\n"
        "def slow_replace(*a, **k):\n"
        f"    time.sleep({RENAME_DELAY})\n"
        "    return _replace(*a, **k)\n"
        "os.replace = slow_replace\n"
        "from eet_lightning.cli.transfer import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore", NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    while proc.poll() is None and _progress(out) < begun:
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    return proc.returncode, err


def _check_killed_state(out: Path, expected: dict[str, bytes]) -> tuple[set[str], int]:
    """After the kill: every output there is whole (equal to the uninterrupted run's), the record is whole,
    and nothing else is there but temporaries named by our pattern. (outputs there, temporaries)"""
    if not out.exists():
        return set(), 0
    finished, temporaries = set(), 0
    for p in out.iterdir():
        if _TEMPORARY.match(p.name):
            temporaries += 1
        elif p.name == RECORD_NAME:
            assert json.loads(p.read_text())["outputs"] == sorted(n for n in expected if n != RECORD_NAME)
        else:
            assert p.name in expected, p.name
            assert p.read_bytes() == expected[p.name], f"{p.name} is not whole"
            finished.add(p.name)
    return finished, temporaries


def _resume_and_compare(args: list[str], out: Path, expected: dict[str, bytes], capsys) -> None:
    finished, temporaries = _check_killed_state(out, expected)
    rc, stdout, err = _run(args, capsys)
    assert rc == 0, err
    media, finished_media = _media(expected), _media(finished)
    todo = len(media) - len(finished_media)
    if todo:
        assert f"wrote {todo} file(s)" in stdout, stdout
    elif len(finished) == len(expected) - 1:
        assert "nothing to do" in stdout, stdout
    if finished_media and todo:
        assert f"resuming: {len(finished_media)} of the {len(media)} outputs" in stdout, stdout
    if temporaries:
        assert f"removed {temporaries} temporary file(s)" in stdout, stdout
    assert _snapshot(out) == expected  # byte-identical, the record included; no temporary left


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_a_folder_job_killed_at_a_random_point_resumes_to_the_same_bytes(
    ckpt: Path, media: dict[str, Path], reference: dict[str, dict], tmp_path: Path, capsys, seed: int
) -> None:
    rng = random.Random(seed)
    # 26 files are written (the record, then 12 photos each followed by its report, then report.csv); the
    # kill falls during the first 10 (or, with 0,
    # before any: while importing, loading or finding faces) at a random time inside a write or after it
    begun = rng.randint(1, 10) if seed else 0  # seeds 0, 2, 5: 0, 1 (the record), 10
    delay = rng.uniform(0.5, 4.0) if begun == 0 else rng.uniform(0.0, RENAME_DELAY + 0.1)
    out = tmp_path / "out"
    args = _folder_job(ckpt, media, out)
    rc, err = _kill_during(args, out, begun, delay)
    assert rc == -signal.SIGKILL, f"the run ended by itself before the kill (status {rc}): {err}"
    _resume_and_compare(args, out, reference["folder"], capsys)


def test_a_video_job_killed_while_writing_resumes_to_the_same_bytes(
    ckpt: Path, media: dict[str, Path], reference: dict[str, dict], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    args = _video_job(ckpt, media, out)
    rc, err = _kill_during(args, out, 2, RENAME_DELAY / 2)  # the record is whole, the video half-way
    assert rc == -signal.SIGKILL, f"the run ended by itself before the kill (status {rc}): {err}"
    finished, temporaries = _check_killed_state(out, reference["video"])
    assert not finished and temporaries >= 1  # a temporary .tmp.mp4, no video
    _resume_and_compare(args, out, reference["video"], capsys)


def test_a_full_disk_stops_with_one_line_and_a_re_run_finishes(
    ckpt: Path, media: dict[str, Path], reference: dict[str, dict], tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "out"
    args = _folder_job(ckpt, media, out)
    real, calls = transfer.write_image_atomic, []

    def fills_up(path: Path, image: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, image)

    monkeypatch.setattr(transfer, "write_image_atomic", fills_up)
    rc, _, err = _run(args, capsys)
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("eet-transfer: error: ") and calls[-1].name in err and "No space left" in err
    finished, temporaries = _check_killed_state(out, reference["folder"])
    assert len(_media(finished)) == 5 and len(finished) == 10 and temporaries == 0  # 5 photos, 5 reports
    monkeypatch.setattr(transfer, "write_image_atomic", real)
    _resume_and_compare(args, out, reference["folder"], capsys)


# ---------------------------------------------------------------------------------------------- resume rules


def _crop_job(ckpt: Path, folder: Path, out: Path) -> list[str]:
    return ["--ckpt", str(ckpt), "--source", str(folder), "--target", str(folder), "--out", str(out)]


def test_a_re_run_keeps_finished_outputs_and_removes_only_our_temporaries(
    ckpt: Path, media: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    args = [*_crop_job(ckpt, media["photos"], out), "--crop-only"]
    assert _run(args, capsys)[0] == 0
    expected = _snapshot(out)
    kept = {n: (out / n).stat().st_mtime_ns for n in ("a_with_b.png", "d_with_c.png")}
    for name in ("b_with_a.png", "c_with_d.png"):
        (out / name).unlink()
    ours = [".b_with_a.png.k2j_x9q0.tmp", "..eet-transfer.json.abcdefgh.tmp", ".c_with_d.png.00000000.tmp"]
    not_ours = [
        "notes.tmp",  # the user's
        ".b_with_a.png.tmp",  # not the pattern: no random part
        ".holiday.png.abcdefgh.tmp",  # the pattern, but no output of ours has that name
        ".b_with_a.png.ABCDEFGH.tmp",  # mkstemp never writes capitals
        ".x_with_y.mp4.abcdefgh.tmp.mp4",  # no such output
    ]
    for name in ours + not_ours:
        (out / name).write_bytes(b"partial")
    rc, stdout, err = _run(args, capsys)
    assert rc == 0, err
    assert "removed 3 temporary file(s)" in stdout and "resuming: 10 of the 12 outputs" in stdout
    assert "wrote 2 file(s)" in stdout
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept  # kept, not rewritten
    assert _snapshot(out) == {**expected, **{n: b"partial" for n in not_ours}}
    # everything there: nothing runs (no model is loaded), nothing changes
    rc, stdout, _ = _run(args, capsys)
    assert rc == 0 and "all 12 output(s) are already in" in stdout and "nothing to do" in stdout
    assert _snapshot(out) == {**expected, **{n: b"partial" for n in not_ours}}
    # --overwrite redoes every output
    rc, stdout, _ = _run([*args, "--overwrite"], capsys)
    assert rc == 0 and "wrote 12 file(s)" in stdout


def test_new_photos_in_a_folder_add_only_their_pairs(
    ckpt: Path, media: dict[str, Path], tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes((media["photos"] / name).read_bytes())
    out = tmp_path / "out"
    args = [*_crop_job(ckpt, folder, out), "--crop-only"]
    assert _run(args, capsys)[0] == 0
    first = _snapshot(out)
    (folder / "c.png").write_bytes((media["photos"] / "c.png").read_bytes())
    rc, stdout, _ = _run(args, capsys)
    assert rc == 0 and "resuming: 2 of the 6 outputs" in stdout and "wrote 4 file(s)" in stdout
    after = _snapshot(out)
    # what was there is kept as it was, but the record and report.csv, which gain the new outputs
    grown = (RECORD_NAME, "report.csv")
    assert {n: after[n] for n in first if n not in grown} == {
        n: v for n, v in first.items() if n not in grown
    }
    assert len((out / "report.csv").read_text().splitlines()) == 1 + 6
    assert json.loads(after[RECORD_NAME])["outputs"] == sorted(n for n in after if n != RECORD_NAME)


def test_other_settings_are_refused_and_overwrite_starts_afresh(
    ckpt: Path, media: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    job_a = ["--ckpt", str(ckpt), "--source", str(media["a"]), "--target", str(media["b"]), "--out", str(out)]
    assert _run([*job_a, "--crop-only", "--strength", "0.5"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == [
        RECORD_NAME,
        "a_with_b.json",
        "a_with_b.png",
        "b_with_a.json",
        "b_with_a.png",
        "report.csv",
    ]
    c = str(media["photos"] / "c.png")
    job_b = [
        "--ckpt",
        str(ckpt),
        "--source",
        c,
        "--target",
        str(media["b"]),
        "--out",
        str(out),
        "--crop-only",
    ]
    before = _snapshot(out)
    rc, _, err = _run(job_b, capsys)
    assert rc == 2 and "--strength 0.5 there, 1.0 now" in err and err.count("\n") == 1
    assert _snapshot(out) == before
    # the same settings add to the folder; --overwrite with others deletes what the record lists first
    rc, stdout, _ = _run([*job_b, "--strength", "0.5"], capsys)
    assert rc == 0 and len(list(out.iterdir())) == 10  # record, report.csv, 4 photos and their reports
    rows = (out / "report.csv").read_text().splitlines()[1:]  # both jobs' outputs
    assert sorted(r.split(",")[0] for r in rows) == [
        "a_with_b.png",
        "b_with_a.png",
        "b_with_c.png",
        "c_with_b.png",
    ]
    rc, stdout, err = _run([*job_b, "--overwrite"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        RECORD_NAME,
        "b_with_c.json",
        "b_with_c.png",
        "c_with_b.json",
        "c_with_b.png",
        "report.csv",
    ]
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["settings"]["strength"] == 1.0
    assert record["outputs"] == [
        "b_with_c.json",
        "b_with_c.png",
        "c_with_b.json",
        "c_with_b.png",
        "report.csv",
    ]
