"""`eet-prepare` on bad input: every case is one line ``eet-prepare: error: ...`` naming the input and
what was expected, exit status 2, no traceback, and nothing written under --out (nor anything there
changed). A photo folder with spaces and non-ASCII characters in every name works.

Each case edits a fresh copy of the seeded photo-folder miniature (tests/miniatures.py); almost all are
refused before a face is detected, so the sweep runs in seconds."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import miniatures as M
from bad_input import assert_one_clear_error, files_under, run_in_process, run_script
from eet_lightning.cli.prepare import main as prepare

PROG = "eet-prepare"
# The renderer's cartoon faces score a little lower with MTCNN than photographs do (tests/test_prepare.py).
QUICK = ["--min-score", "0.5", "--size", "64", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The miniature photo folder: 5 people, 2 images each, labels.csv."""
    root = tmp_path_factory.mktemp("raw") / "photos"
    M.write_folder(root, seed=0)
    return root


@dataclass
class Work:
    """A copy of the photo folder and an --out that does not exist yet."""

    base: Path
    root: Path
    labels: Path
    out: Path
    extra: list[str] = field(default_factory=list)

    def args(self, *extra: str, dataset: str = "folder", labels: bool = True) -> list[str]:
        args = [dataset, "--root", str(self.root), "--out", str(self.out), *QUICK]
        return [*args, *(["--labels", str(self.labels)] if labels else []), *extra]

    def rows(self) -> list[list[str]]:
        with self.labels.open(newline="") as fh:
            return list(csv.reader(fh))

    def write_rows(self, rows: list[list[str]]) -> None:
        with self.labels.open("w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows(rows)

    def replace_image(self, line: int, name: str, data: bytes) -> Path:
        """Point labels line ``line`` (1 = header) at a new file ``name`` holding ``data``."""
        rows = self.rows()
        path = self.root / name
        path.write_bytes(data)
        rows[line - 1][0] = name
        self.write_rows(rows)
        return path


def _work(photos: Path, tmp_path: Path) -> Work:
    base = tmp_path / "work"
    root = base / "photos"
    shutil.copytree(photos, root)
    return Work(base=base, root=root, labels=root / "labels.csv", out=base / "out")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds none: a few bytes that would ask a
    decoder for gigabytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _png(pixels: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------
# The cases: each edits the copy and returns (arguments, strings the one error line must hold)

Case = Callable[[Work], tuple[list[str], tuple[str, ...]]]


def bomb_png(w: Work):
    path = w.replace_image(3, "bomb.png", _png_header(100_000, 100_000))
    return w.args(), (str(path), "decompression bomb")


def bomb_just_over_the_limit(w: Work):  # PIL only warns between its limit and twice it
    path = w.replace_image(3, "big.png", _png_header(10_000, 9_000))
    return w.args(), (str(path), "more pixels than the", "decompression bomb")


def one_pixel_image(w: Work):
    path = w.replace_image(4, "dot.png", _png(np.zeros((1, 1, 3), np.uint8)))
    return w.args(), (str(path), "1x1 pixels", "too small to hold a face")


def sliver_image(w: Work):  # shrunk to 1024 px for detection, its short side would be 2 px
    path = w.replace_image(4, "sliver.png", _png(np.zeros((40, 20_000, 3), np.uint8)))
    return w.args(), (str(path), "too elongated")


def text_named_jpg(w: Work):
    path = w.replace_image(2, "notes.jpg", b"this is not an image\n")
    return w.args(), (str(path), "not a readable image")


def empty_jpg(w: Work):
    path = w.replace_image(5, "empty.jpg", b"")
    return w.args(), (str(path), "not a readable image")


def no_face_anywhere(w: Work):  # runs to the end, then must take its journal away with it
    rng = np.random.default_rng(0)
    for row in w.rows()[1:]:
        path = w.root / row[0]
        Image.fromarray(M.blank_frame(rng)).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    return w.args(), ("no face was found in any image", str(w.root))


def labels_not_utf8(w: Work):
    text = w.labels.read_text().splitlines()
    cells = text[3].split(",")
    cells[1] += "\xe9"  # a subject "bobé" saved as Latin-1: byte 0xe9 alone is not UTF-8
    text[3] = ",".join(cells)
    w.labels.write_bytes(("\n".join(text) + "\n").encode("latin-1"))
    return w.args(), (str(w.labels), "line 4", "not UTF-8")


def labels_nan(w: Work):
    rows = w.rows()
    rows[2][5] = "nan"
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 3", rows[0][5], "'nan'", "[0, 5]")


def labels_infinite(w: Work):
    rows = w.rows()
    rows[6][-1] = "inf"
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 7", "'inf'")


def labels_out_of_range(w: Work):
    rows = w.rows()
    rows[8][7] = "-1"
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 9", "[0, 5]")


def labels_duplicate_row(w: Work):
    rows = w.rows()
    rows.append(rows[2])
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 12", "listed twice", "lines 3 and 12")


def labels_two_images_one_crop(w: Work):  # eve_1.jpg and eve_1.png would both become images/eve/eve__eve_1
    rows = w.rows()
    shutil.copy(w.root / "eve" / "eve_1.jpg", w.root / "eve" / "eve_1.png")
    rows.append(["eve/eve_1.png", *rows[-1][1:]])
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 12", "would be written as the crop of line 11")


def labels_pose_out_of_range(w: Work):
    rows = w.rows()
    rows[5][2] = "400"
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 6", "pose", "0 to 180", "'400'")


def labels_ragged_row(w: Work):
    rows = w.rows()
    rows[4] = rows[4][:3]
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 5", "3 fields")


def labels_empty_file(w: Work):
    w.labels.write_bytes(b"")
    return w.args(), (str(w.labels), "empty")


def labels_a_folder(w: Work):
    w.labels = w.root / "eve"
    return w.args(), ("--labels", str(w.labels), "is a folder")


def labels_missing(w: Work):
    w.labels = w.base / "no such labels.csv"
    return w.args(), ("--labels", str(w.labels), "no such file")


def labels_null_path(w: Work):
    rows = w.rows()
    rows[3][0] = "cat/cat\x00.jpg"
    w.write_rows(rows)
    return w.args(), (str(w.labels), "line 4", "not an image path")


def out_is_a_file(w: Work):
    w.out.parent.mkdir(parents=True, exist_ok=True)
    w.out.write_text("a file where the output folder should go")
    return w.args(), ("--out", str(w.out), "not a folder")


def out_under_a_file(w: Work):
    (w.base / "file").write_text("x")
    w.out = w.base / "file" / "out"
    return w.args(), ("--out", str(w.out), "cannot be created", f"{w.base / 'file'} is a file")


def out_holds_other_files(w: Work):
    w.out.mkdir(parents=True)
    (w.out / "thesis.tex").write_text("keep me")
    return w.args(), ("--out", str(w.out), "holds no eet-prepare output")


def out_read_only(w: Work):
    (w.base / "locked").mkdir(parents=True)
    w.out = w.base / "locked" / "out"
    os.chmod(w.base / "locked", 0o555)
    return w.args(), ("--out", str(w.out), "not writable")


def out_inside_root(w: Work):  # the readers search --root: a re-run would read the crops as raw images
    w.out = w.root / "prepared"
    args = w.args("--openface", str(w.root), dataset="cfd", labels=False)
    return args, ("--out", "inside --root", str(w.root))


def min_score_two(w: Work):
    return w.args("--min-score", "2"), ("--min-score", "[0, 1]", "got 2.0")


def min_score_nan(w: Work):
    return w.args("--min-score", "nan"), ("--min-score", "[0, 1]", "got nan")


def openface_confidence_negative(w: Work):
    return w.args("--openface-min-confidence", "-0.5"), ("--openface-min-confidence", "[0, 1]")


def size_zero(w: Work):
    return w.args("--size", "0"), ("--size", "from 16 to 4096", "got 0")


def size_negative(w: Work):
    return w.args("--size", "-64"), ("--size", "got -64")


def size_absurd(w: Work):
    return w.args("--size", "1000000"), ("--size", "from 16 to 4096", "got 1000000")


def size_not_a_number(w: Work):
    return w.args("--size", "big"), ("--size", "invalid int value: 'big'")


def batch_size_zero(w: Work):
    return w.args("--batch-size", "0"), ("--batch-size", "got 0")


def every_zero(w: Work):
    return w.args("--every", "0"), ("--every", "of at least 1", "got 0")


def threads_negative(w: Work):
    return w.args("--threads", "-2"), ("--threads", "got -2")


def seed_negative(w: Work):
    return w.args("--seed", "-1"), ("--seed", "of at least 0", "got -1")


def aus_unknown(w: Work):
    return w.args("--aus", "1,2,99"), ("--aus", "99")


def unknown_option(w: Work):
    return w.args("--colour", "blue"), ("unrecognized arguments: --colour blue",)


def unknown_dataset(w: Work):
    return w.args(dataset="affectnet"), ("invalid choice: 'affectnet'",)


def root_missing(w: Work):
    w.root = w.base / "no such photos"
    return w.args(), ("--root", str(w.root), "is not a folder")


def unknown_test_subject(w: Work):
    return w.args("--test-subjects", "zed"), (str(w.labels), "test subject(s) ['zed'] not found")


def labels_for_a_dataset_without_them(w: Work):
    return w.args(dataset="disfa"), ("--labels is for `eet-prepare folder` only",)


CASES: dict[str, Case] = {
    f.__name__: f
    for f in (
        bomb_png,
        bomb_just_over_the_limit,
        one_pixel_image,
        sliver_image,
        text_named_jpg,
        empty_jpg,
        no_face_anywhere,
        labels_not_utf8,
        labels_nan,
        labels_infinite,
        labels_out_of_range,
        labels_duplicate_row,
        labels_two_images_one_crop,
        labels_pose_out_of_range,
        labels_ragged_row,
        labels_empty_file,
        labels_a_folder,
        labels_missing,
        labels_null_path,
        out_is_a_file,
        out_under_a_file,
        out_holds_other_files,
        out_read_only,
        out_inside_root,
        min_score_two,
        min_score_nan,
        openface_confidence_negative,
        size_zero,
        size_negative,
        size_absurd,
        size_not_a_number,
        batch_size_zero,
        every_zero,
        threads_negative,
        seed_negative,
        aus_unknown,
        unknown_option,
        unknown_dataset,
        root_missing,
        unknown_test_subject,
        labels_for_a_dataset_without_them,
    )
}
AS_ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
NEEDS_PERMISSIONS = {"out_read_only"}  # root writes into read-only folders


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(AS_ROOT, reason="root may write into a read-only folder"),
        )
        if name in NEEDS_PERMISSIONS
        else name
        for name in CASES
    ],
)
def test_bad_input_is_one_line_and_nothing_written(photos: Path, tmp_path: Path, capsys, case: str) -> None:
    w = _work(photos, tmp_path)
    args, needles = CASES[case](w)
    before = files_under(w.base)
    out_before = files_under(w.out)
    try:
        rc, _, err = run_in_process(prepare, args, capsys)
    finally:
        for folder in (w.base / "locked",):
            if folder.exists():
                os.chmod(folder, 0o755)
    assert_one_clear_error(PROG, rc, err, *needles)
    assert files_under(w.out) == out_before, "the refused run wrote under --out"
    assert files_under(w.base) == before, "the refused run wrote something"


@pytest.mark.parametrize("case", ["bomb_png", "labels_not_utf8"])
def test_no_traceback_escapes_a_real_process(photos: Path, tmp_path: Path, case: str) -> None:
    """The console script as a user runs it: a fresh interpreter, nothing but the one line on stderr."""
    w = _work(photos, tmp_path)
    args, needles = CASES[case](w)
    before = files_under(w.base)
    proc = run_script(PROG, args)
    assert_one_clear_error(PROG, proc.returncode, proc.stderr, *needles)
    assert proc.stdout == ""
    assert files_under(w.base) == before


def test_help_is_still_the_usage_text(capsys) -> None:
    rc, out, err = run_in_process(prepare, ["--help"], capsys)
    assert rc == 0 and out.startswith("usage: eet-prepare") and err == ""


# ------------------------------------------------------------------------------------------------------
# What must work, and what a refusal must leave untouched


def test_spaces_and_non_ascii_names_work(photos: Path, tmp_path: Path) -> None:
    """Folders, files and subjects with spaces and non-ASCII characters, labels.csv in UTF-8 with a
    byte-order mark (as spreadsheet programs save it), --out with both too."""
    root = tmp_path / "mes photos é" / "日本 語"
    people = {"ann": "Zoë Ålund", "bob": "José María", "cat": "李 小龍", "dan": "Ольга"}
    src = list(csv.reader((photos / "labels.csv").open(newline="")))
    header, body = src[0], src[1:]
    rows = [[*header, "split"]]
    for k, row in enumerate(body):
        old = row[1]
        if old not in people:
            continue
        rel = f"{people[old]}/photo n° {k} ü.{row[0].rsplit('.', 1)[1]}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photos / row[0], root / rel)
        rows.append([rel, people[old], *row[2:], "test" if old in ("cat", "dan") else "train"])
    labels = root / "étiquettes 1.csv"
    with labels.open("w", newline="", encoding="utf-8-sig") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    out = tmp_path / "sortie préparée" / "ünï cödé"
    args = ["folder", "--root", str(root), "--labels", str(labels), "--out", str(out), *QUICK]
    assert prepare(args) == 0
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh))
    assert {r["subject"] for r in manifest} == set(people.values())
    assert len(manifest) == 8
    for r in manifest:
        assert (out / r["path"]).is_file() and r["source"] in {row[0] for row in rows[1:]}
        with Image.open(out / r["path"]) as im:
            assert im.size == (64, 64)
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["counts"]["written"] == 8


@pytest.fixture(scope="module")
def finished(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "out"
    assert (
        prepare(
            [
                "folder",
                "--root",
                str(photos),
                "--labels",
                str(photos / "labels.csv"),
                "--out",
                str(out),
                *QUICK,
            ]
        )
        == 0
    )
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["labels_nan", "bomb_png", "one_pixel_image", "size_zero"])
def test_overwrite_keeps_the_finished_output_when_the_input_is_bad(
    photos: Path, finished: Path, tmp_path: Path, capsys, case: str
) -> None:
    """--overwrite replaces a finished output only once the new input has passed every check."""
    w = _work(photos, tmp_path)
    shutil.copytree(finished, w.out)
    before = _snapshot(w.out)
    args, needles = CASES[case](w)
    rc, _, err = run_in_process(prepare, [*args, "--overwrite"], capsys)
    assert_one_clear_error(PROG, rc, err, *needles)
    assert _snapshot(w.out) == before


def test_one_pixel_image_is_skipped_and_counted_when_asked(photos: Path, tmp_path: Path) -> None:
    """As for unreadable files, --skip-unreadable skips and counts an image too small to hold a face."""
    w = _work(photos, tmp_path)
    one_pixel_image(w)
    bomb = w.replace_image(7, "bomb.png", _png_header(100_000, 100_000))
    assert prepare([*w.args(), "--skip-unreadable"]) == 0
    summary = json.loads((w.out / "summary.json").read_text())
    assert summary["skipped_by_reason"] == {"too_small": 1, "unreadable": 1}
    assert summary["counts"]["written"] == 8
    assert {i["reason"] for i in summary["skipped_items"]} == {"too_small", "unreadable"}
    assert bomb.name not in (w.out / "manifest.csv").read_text()


def test_a_bad_file_met_on_resume_keeps_the_journal(
    photos: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted run, then an image replaced by a decompression bomb: the re-run refuses it in one
    line before touching the journal; with the image back, the run resumes and finishes."""
    from eet_lightning.data.prepare import common

    w = _work(photos, tmp_path)
    real = common.write_image_atomic
    calls = {"n": 0}

    def interrupted(path, image, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        real(path, image, *a, **k)

    monkeypatch.setattr(common, "write_image_atomic", interrupted)
    assert prepare(w.args()) == 130
    monkeypatch.setattr(common, "write_image_atomic", real)
    journal = w.out / common.STATE_DIR / "progress.jsonl"
    before = {p: p.read_bytes() for p in [journal, *w.out.rglob("*.jpg")]}
    victim = w.root / "eve" / "eve_1.jpg"
    good = victim.read_bytes()
    victim.write_bytes(_png_header(100_000, 100_000))
    rc, _, err = run_in_process(prepare, w.args(), capsys)
    assert_one_clear_error(PROG, rc, err, str(victim), "decompression bomb")
    assert {p: p.read_bytes() for p in before} == before and len(list(w.out.rglob("*.jpg"))) == 3
    victim.write_bytes(good)
    assert prepare(w.args()) == 0
    assert json.loads((w.out / "summary.json").read_text())["counts"]["written"] == 10


def test_a_frame_too_small_met_while_running_is_one_line(
    photos: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sizes are checked from the headers first; a frame that still turns out too small (a video whose
    container did not say) stops the run with one line naming it instead of crashing MTCNN."""
    from eet_lightning.data.prepare import common

    monkeypatch.setattr(common, "check_sources", lambda sources, opts: {})  # as if no header had told
    w = _work(photos, tmp_path)
    path = w.replace_image(4, "dot.png", _png(np.zeros((1, 1, 3), np.uint8)))
    rc, _, err = run_in_process(prepare, w.args(), capsys)
    assert_one_clear_error(PROG, rc, err, str(path), "too small to hold a face")
    assert not (w.out / "manifest.csv").exists() and not list(w.out.rglob("*.tmp"))


def test_videos_with_frames_too_small_are_refused_from_their_header(tmp_path: Path) -> None:
    """A video's declared frame size is checked with the images, before anything is written."""
    from eet_lightning.data.prepare.common import (
        Face,
        Options,
        PrepareError,
        Source,
        check_sources,
        video_info,
    )

    video = tmp_path / "clip 1 é.avi"
    M.write_video(video, [np.zeros((8, 8, 3), np.uint8)] * 3)
    count, size = video_info(video)
    assert count == 3 and size == (8, 8)
    source = Source(video, "video", [Face(key="s/s_00001", subject="s", frame=1)])
    with pytest.raises(PrepareError, match="clip 1 é.avi is 8x8 pixels: too small to hold a face"):
        check_sources([source], Options(dataset="mmi", root=str(tmp_path)))
    skipped = check_sources([source], Options(dataset="mmi", root=str(tmp_path), skip_unreadable=True))
    assert skipped == {video: "too_small"}
