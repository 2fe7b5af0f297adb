"""The dataset-independent part of `eet-prepare`: what a reader hands over (sources of faces with their
labels), subject splits, and the run that aligns, writes, resumes and summarises."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from eet_lightning.data.images import (
    MAX_IMAGE_PIXELS,
    ImageReadError,
    image_size,
    read_rgb,
    write_bytes_atomic,
    write_image_atomic,
)
from eet_lightning.data.manifest import (
    FRONTAL_POSE,
    IMAGES_DIR,
    MANIFEST_NAME,
    SUMMARY_NAME,
    au_column,
    write_manifest,
    write_summary,
)
from eet_lightning.data.openface import OpenFaceLabels
from eet_lightning.run_lock import RunLock, RunLockedError

LOCK_NAME = ".eet-prepare.lock"  # held while a run writes (removed when it ends)
STATE_DIR = ".eet-prepare"  # the resume journal of an unfinished run
FORMAT_VERSION = 1
# MTCNN looks for faces of at least this many pixels, in images shrunk to at most MAX_DETECT_SIDE for
# detection: a smaller image cannot hold a face it finds (and an empty image pyramid crashes it).
MIN_FACE_SIDE = 20
MAX_DETECT_SIDE = 1024
MIN_CROP_SIDE = 16  # --detector none: the smallest already-aligned crop (the smallest --size)
# The temporary files of `write_bytes_atomic` (tempfile.mkstemp): ".<final name>.<8 random chars>.tmp".
# A run killed between writing one and renaming it leaves it behind; the next run removes them.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


class PrepareError(ValueError):
    """A problem with the raw download, the labels or the options: one line naming the input."""


@dataclass
class Face:
    """One face to produce: where it comes from and its labels."""

    key: str  # unique id and the crop's path below images/ without suffix, e.g. SN001/SN001_00012
    subject: str
    pose: int = FRONTAL_POSE  # yaw in degrees (manifest convention)
    gaze: str = ""
    emotion: str = ""
    frame: int | None = None  # 1-based frame number in a video source
    aus: np.ndarray | None = None  # float32 [m] in the run's AU order; None until labelled
    split: str = ""


@dataclass
class Source:
    """One file of the raw download: a still image (one face) or a video (one face per wanted frame)."""

    path: Path
    kind: Literal["image", "video"]
    faces: list[Face]
    label_file: Path | None = None  # the label file the frame numbers come from (named in errors)
    expected_frames: int | None = None  # frames the label file describes (videos)
    frame_size: tuple[int, int] | None = None  # (width, height) the video declares, when a reader read it


@dataclass
class Options:
    """Everything that decides the output; stored in the summary and checked on resume."""

    dataset: str
    root: str
    size: int = 256
    image_format: Literal["jpg", "png"] = "jpg"
    detector: Literal["mtcnn", "none"] = "mtcnn"
    aus: list[int] = field(default_factory=list)
    openface: str | None = None
    openface_min_confidence: float = 0.0
    labels: str | None = None
    every: int = 1
    test_subjects: list[str] | None = None
    seed: int = 0
    min_score: float = 0.9
    skip_unreadable: bool = False

    def key(self) -> dict[str, Any]:
        return asdict(self)


Reader = Callable[[Options], list[Source]]


# ------------------------------------------------------------------------------------------------------
# Splits


def choose_test_subjects(subjects: Sequence[str], fraction: float, seed: int, what: str) -> list[str]:
    """``round(len * fraction)`` subjects (at least 2) drawn with ``seed``; at least 2 stay for training."""
    unique = sorted(set(subjects))
    n_test = max(2, round(len(unique) * fraction))
    if len(unique) - n_test < 2:
        raise PrepareError(
            f"{what}: {len(unique)} subject(s) found; a subject-disjoint split needs at least 4 "
            f"(2 for training, 2 for testing)"
        )
    rng = np.random.default_rng(seed)
    return sorted(unique[k] for k in rng.permutation(len(unique))[:n_test])


def split_by_subjects(faces: Sequence[Face], test: Sequence[str], what: str) -> None:
    """Mark faces of ``test`` subjects as test and the rest as train; unknown names are an error."""
    present = {f.subject for f in faces}
    unknown = sorted(set(test) - present)
    if unknown:
        raise PrepareError(f"{what}: test subject(s) {unknown} not found; subjects are {sorted(present)}")
    chosen = set(test)
    for f in faces:
        f.split = "test" if f.subject in chosen else "train"
    if chosen == present:
        raise PrepareError(f"{what}: every subject is a test subject; none is left for training")


# ------------------------------------------------------------------------------------------------------
# Labels from OpenFace


def label_with_openface(sources: list[Source], opts: Options) -> list[tuple[str, str]]:
    """Replace every face's AUs with OpenFace's; faces OpenFace failed on are removed and returned as
    (key, reason) pairs."""
    assert opts.openface is not None
    labels = OpenFaceLabels(opts.openface, opts.aus, opts.openface_min_confidence)
    dropped: list[tuple[str, str]] = []
    for src in sources:
        stem = src.path.stem
        if src.kind == "video":
            frames = labels.for_video(stem)
            kept = []
            for f in src.faces:
                vec = frames.get(int(f.frame or 0))
                if vec is None:
                    dropped.append((f.key, "openface_failed"))
                else:
                    f.aus = vec
                    kept.append(f)
            src.faces = kept
        else:
            vec = labels.for_image(stem)
            if vec is None:
                dropped.extend((f.key, "openface_failed") for f in src.faces)
                src.faces = []
            else:
                for f in src.faces:
                    f.aus = vec
    sources[:] = [s for s in sources if s.faces]
    return dropped


# ------------------------------------------------------------------------------------------------------
# Reading frames


def video_info(path: Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (width, height)) as the video's container declares them (0 where it does not)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise PrepareError(f"{path}: cannot open the video")
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), size
    finally:
        cap.release()


def video_frame_count(path: Path) -> int:
    return video_info(path)[0]


def iter_video_frames(src: Source, wanted: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(frame number from 1, RGB frame) for the wanted frames, in order."""
    cap = cv2.VideoCapture(str(src.path))
    if not cap.isOpened():
        raise PrepareError(f"{src.path}: cannot open the video")
    try:
        last = max(wanted)
        frame = 0
        while frame < last:
            frame += 1
            if frame in wanted:
                ok, bgr = cap.read()
                if ok:
                    yield frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            else:
                ok = cap.grab()
            if not ok:
                labelled = f" but {src.label_file} labels frame {last}" if src.label_file else ""
                raise PrepareError(f"{src.path}: the video ends after {frame - 1} frames{labelled}")
    finally:
        cap.release()


# ------------------------------------------------------------------------------------------------------
# The run


# ------------------------------------------------------------------------------------------------------
# Files that cannot be prepared, found from their headers before anything is written


def _pixel_problem(where: str, w: int, h: int, detector: str) -> tuple[str, str] | None:
    """(reason, message) when an image of ``w`` x ``h`` pixels cannot give a crop; None when it can."""
    if detector == "none":
        if w != h:
            return (
                "not_square",
                f"{where} is {w}x{h}: --detector none expects square, already aligned face crops",
            )
        if w < MIN_CROP_SIDE:
            return "too_small", (
                f"{where} is {w}x{h} pixels: too small for an aligned face crop "
                f"(at least {MIN_CROP_SIDE}x{MIN_CROP_SIDE} expected)"
            )
        return None
    if min(w, h) < MIN_FACE_SIDE:
        return "too_small", (
            f"{where} is {w}x{h} pixels: too small to hold a face (at least {MIN_FACE_SIDE}x{MIN_FACE_SIDE} "
            "expected)"
        )
    if min(w, h) * MAX_DETECT_SIDE < MIN_FACE_SIDE * max(w, h):  # shrunk for detection below the minimum
        return "too_small", (
            f"{where} is {w}x{h} pixels: too elongated for face detection (shrunk to {MAX_DETECT_SIDE} px "
            f"on its long side, its short side would be under {MIN_FACE_SIDE} px)"
        )
    return None


def _video_size(src: Source) -> tuple[int, int]:
    """(width, height) of a video's frames as its container declares them (0, 0 when it does not)."""
    w, h = src.frame_size if src.frame_size is not None else video_info(src.path)[1]
    if w * h > MAX_IMAGE_PIXELS:
        raise PrepareError(
            f"{src.path}: {w} x {h} pixel frames are more than the {MAX_IMAGE_PIXELS:,} allowed"
        )
    return w, h


def check_sources(sources: Sequence[Source], opts: Options) -> dict[Path, str]:
    """Open every image's header and every video's container: a file that is missing, not an image, a
    decompression bomb or too small for a face is refused here, before anything is written. Under
    ``--skip-unreadable`` such files are returned (path -> reason) to be skipped and counted instead."""
    skip: dict[Path, str] = {}
    hint = "; --skip-unreadable skips and counts such files"
    for src in sources:
        try:
            w, h = image_size(src.path) if src.kind == "image" else _video_size(src)
        except ImageReadError as err:
            if opts.skip_unreadable:
                skip[src.path] = "unreadable"
                continue
            raise PrepareError(f"{err}{hint}") from None
        if w <= 0 or h <= 0:  # a video container that does not say: its frames are checked as they come
            continue
        problem = _pixel_problem(str(src.path), w, h, opts.detector)
        if problem is None:
            continue
        reason, message = problem
        if reason == "too_small" and opts.skip_unreadable:
            skip[src.path] = reason
            continue
        raise PrepareError(message + (hint if reason == "too_small" else ""))
    return skip


# ------------------------------------------------------------------------------------------------------
# The output folder


def _is_ours(out: Path) -> bool:
    names = {p.name for p in out.iterdir()}
    return not names or bool(names & {STATE_DIR, MANIFEST_NAME, SUMMARY_NAME, LOCK_NAME})


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` (itself included) that does not exist yet; None when it exists."""
    top = None
    while not path.exists():
        top, path = path, path.parent
    return top


def check_output_folder(out: Path, root: Path, dataset: str) -> None:
    """Refuse an ``--out`` that cannot become eet-prepare's output: a file, a folder of other files, a
    folder that cannot be created or written, a folder inside the raw download. Writes nothing."""
    try:
        if out.exists() and not out.is_dir():
            raise PrepareError(f"--out {out} exists and is not a folder")
        if dataset != "folder" and out.resolve().is_relative_to(root.resolve()):
            # the readers search --root for raw files: a re-run would find the crops among them
            raise PrepareError(
                f"--out {out} is inside --root {root}; choose a folder outside the raw download"
            )
        if out.is_dir():
            if not _is_ours(out):
                raise PrepareError(
                    f"--out {out} is not empty and holds no eet-prepare output; choose an empty folder"
                )
            if not os.access(out, os.W_OK | os.X_OK):
                raise PrepareError(f"--out {out}: the folder is not writable")
            return
        top = _first_missing(out)
        parent = top.parent if top is not None else out
        if not parent.is_dir():
            raise PrepareError(f"--out {out} cannot be created: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PrepareError(f"--out {out} cannot be created: {parent} is not writable")
    except OSError as err:  # e.g. a name too long, a folder that cannot be searched
        raise PrepareError(f"--out {out}: {err.strerror or err}") from None


def clear_output(out: Path) -> None:
    """Remove what eet-prepare wrote in ``out`` (for --overwrite); other files are left alone."""
    for name in (STATE_DIR, IMAGES_DIR):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in (MANIFEST_NAME, SUMMARY_NAME):
        (out / name).unlink(missing_ok=True)


def remove_leftovers(out: Path) -> list[Path]:
    """Remove the temporary files a killed run left in ``out``: only names of `write_bytes_atomic`'s
    pattern for the files eet-prepare writes (crops below images/, manifest.csv, summary.json)."""
    removed = []
    candidates = list(out.glob(".*.tmp"))
    if (out / IMAGES_DIR).is_dir():
        candidates += (out / IMAGES_DIR).rglob(".*.tmp")
    for path in candidates:
        m = _TEMP_NAME.match(path.name)
        if not m or not path.is_file():
            continue
        name = m["name"]
        ours = (
            Path(name).suffix.lower() in (".jpg", ".png")
            if path.parent != out
            else name in (MANIFEST_NAME, SUMMARY_NAME)
        )
        if ours:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _leave_no_trace(out: Path, created: Path | None, journal: _Journal | None) -> None:
    """After a failure with nothing finished: remove what this run made (the folders it created, or its
    journal and crop folder in a folder that was there), so that the failure leaves --out as it was."""
    if journal is not None and journal.done:
        return  # finished faces: kept for the next run to resume from
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    shutil.rmtree(out / IMAGES_DIR, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------
# The run


class _Journal:
    """Append-only record of finished faces, so that an interrupted run resumes where it stopped."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.dir = out / STATE_DIR
        self.path = self.dir / "progress.jsonl"
        self.done: dict[str, dict[str, Any]] = {}
        raw = self.path.read_bytes() if self.path.is_file() else b""
        whole = raw[: raw.rfind(b"\n") + 1]  # a line torn by a kill is dropped: that face is redone
        lines = whole.decode("utf-8", errors="replace").splitlines()
        if lines:
            try:
                header = json.loads(lines[0])
            except json.JSONDecodeError:
                header = None
            if header != {"settings": settings}:
                raise PrepareError(
                    f"{out} holds an unfinished eet-prepare run with other settings "
                    f"({self.dir}); re-run with the same options to resume, or pass --overwrite"
                )
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "key" in entry:
                    self.done[entry["key"]] = entry
            if len(whole) != len(raw):
                with self.path.open("r+b") as fh:
                    fh.truncate(len(whole))
        else:  # the header is written whole or not at all, so a kill here cannot block the next run
            write_bytes_atomic(self.path, (json.dumps({"settings": settings}) + "\n").encode())
        self._fh = self.path.open("a")

    def add(self, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            self._fh.write(json.dumps(e) + "\n")
            self.done[e["key"]] = e
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


@dataclass
class Result:
    out: Path
    summary: dict[str, Any]
    finished_before: bool = False


def _previous_summary(out: Path) -> dict[str, Any]:
    path = out / SUMMARY_NAME
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PrepareError(f"{path}: not a readable eet-prepare summary ({err}); pass --overwrite") from None
    if not isinstance(previous, dict):
        raise PrepareError(f"{path}: not an eet-prepare summary; pass --overwrite")
    return previous


def _strerror(err: OSError) -> str:
    return err.strerror or str(err)


def run_prepare(
    reader: Reader,
    opts: Options,
    out: Path,
    overwrite: bool = False,
    progress: bool = True,
    batch_size: int = 16,
    log: Callable[[str], None] = print,
) -> Result:
    """Read the download, align every face, write crops, manifest.csv and summary.json into ``out``.

    Every input is checked before the first write; a failure after it leaves either nothing (no face
    finished) or a journal that the same command resumes from. A kill leaves at most temporary files,
    which the next run removes. While it writes, ``out`` is locked: a second run on it refuses."""
    with contextlib.ExitStack() as cleanup:
        return _run_prepare(reader, opts, out, overwrite, progress, batch_size, log, cleanup)


def _lock(out: Path, cleanup: contextlib.ExitStack) -> None:
    """Lock ``out`` for this run (`PrepareError` when another run holds it); released, and the lock file
    removed, when the run returns or fails."""
    lock = RunLock(out, "eet-prepare", LOCK_NAME, "--out")
    try:
        lock.acquire()
    except RunLockedError as err:
        raise PrepareError(str(err)) from None
    cleanup.callback(lock.release, remove=True)


def _run_prepare(
    reader: Reader,
    opts: Options,
    out: Path,
    overwrite: bool,
    progress: bool,
    batch_size: int,
    log: Callable[[str], None],
    cleanup: contextlib.ExitStack,
) -> Result:
    start = time.time()
    out = Path(out)
    if batch_size < 1:
        raise PrepareError(f"--batch-size must be at least 1, got {batch_size}")
    settings = {**opts.key(), "format_version": FORMAT_VERSION}
    check_output_folder(out, Path(opts.root), opts.dataset)
    if not overwrite and (out / MANIFEST_NAME).is_file() and (out / SUMMARY_NAME).is_file():
        previous = _previous_summary(out)
        if previous.get("settings") == settings:
            # a run killed while tidying up may have left its journal, temporary files or lock file behind
            _lock(out, cleanup)
            shutil.rmtree(out / STATE_DIR, ignore_errors=True)
            remove_leftovers(out)
            log(f"eet-prepare: {out} is already finished with these settings; nothing to do")
            return Result(out, previous, finished_before=True)
        raise PrepareError(
            f"{out} holds a finished preparation with other settings; pass --overwrite to replace it"
        )

    # Everything that can be checked without decoding pixels is checked before anything is written.
    sources = reader(opts)
    dropped: list[tuple[str, str]] = []
    if opts.openface:
        dropped = label_with_openface(sources, opts)
    faces = [f for s in sources for f in s.faces]
    if not faces:
        raise PrepareError(f"no faces to prepare under {opts.root}")
    unlabelled = next((f for f in faces if f.aus is None), None)
    if unlabelled is not None:
        raise PrepareError(f"{opts.dataset} has no AU labels for {unlabelled.key}: pass --openface")
    if not {f.split for f in faces} <= {"train", "test"}:  # pragma: no cover - readers always split
        raise PrepareError("internal: a reader left faces without a split")
    keys: dict[str, Source] = {}
    for src in sources:
        for f in src.faces:
            if f.key in keys:  # two files would write one crop
                raise PrepareError(
                    f"{keys[f.key].path} and {src.path} would both be written as {IMAGES_DIR}/{f.key}; "
                    "rename one of them"
                )
            keys[f.key] = src
    skip_source = check_sources(sources, opts)

    created = _first_missing(out)
    journal = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        _lock(out, cleanup)  # before anything in --out is touched
        if overwrite:
            clear_output(out)
        remove_leftovers(out)
        journal = _Journal(out, settings)
    except OSError as err:
        _leave_no_trace(out, created, journal)
        raise PrepareError(f"--out {out}: cannot write there ({_strerror(err)})") from None
    aligner = None
    if opts.detector == "mtcnn":
        from eet_lightning.data.faces import FaceAligner

        aligner = FaceAligner(
            size=opts.size,
            min_face_size=MIN_FACE_SIDE,
            min_score=opts.min_score,
            max_detect_side=MAX_DETECT_SIDE,
        )
    suffix = ".jpg" if opts.image_format == "jpg" else ".png"

    def finish(batch: list[tuple[Face, np.ndarray | None, str, str]]) -> None:
        reasons = []
        for _, image, where, reason in batch:
            if image is not None:  # sizes were checked from the headers; a video's frames only here
                problem = _pixel_problem(f"{root}/{where}", image.shape[1], image.shape[0], opts.detector)
                if problem is not None:
                    if problem[0] != "too_small" or not opts.skip_unreadable:
                        raise PrepareError(problem[1])
                    reason = problem[0]
            reasons.append(reason)
        images = [im for (_, im, _, _), why in zip(batch, reasons) if not why]
        if aligner is not None:
            aligned = iter(a.crop if a is not None else None for a in aligner.align_batch(images))
        else:
            aligned = iter(_already_aligned(im, opts.size) for im in images)
        entries = []
        for (face, _, where, _), reason in zip(batch, reasons):
            if reason:
                entries.append({"key": face.key, "skip": reason, "source": where})
                continue
            crop = next(aligned)
            if crop is None:
                entries.append({"key": face.key, "skip": "no_face", "source": where})
                continue
            rel = f"{IMAGES_DIR}/{face.key}{suffix}"
            try:
                write_image_atomic(out / rel, crop)
            except OSError as err:
                raise PrepareError(f"cannot write {out / rel} ({_strerror(err)})") from None
            row = {
                "path": rel,
                "subject": face.subject,
                "split": face.split,
                "pose": int(face.pose),
                "gaze": face.gaze,
                "emotion": face.emotion,
                "source": where,
            }
            row.update({au_column(a): float(v) for a, v in zip(opts.aus, face.aus, strict=True)})
            entries.append({"key": face.key, "row": row})
        try:
            journal.add(entries)
        except OSError as err:
            raise PrepareError(f"cannot write the resume journal {journal.path} ({_strerror(err)})") from None

    root = Path(opts.root)
    todo = sum(1 for f in faces if f.key not in journal.done)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=len(faces), initial=len(faces) - todo, unit="face", desc=f"eet-prepare {opts.dataset}"
        )
    try:
        for src in sources:
            pending = [f for f in src.faces if f.key not in journal.done]
            if not pending:
                continue
            where_of = _source_name(src, root)
            batch: list[tuple[Face, np.ndarray | None, str, str]] = []
            for face, image, reason in _load(src, pending, opts, skip_source.get(src.path, "")):
                batch.append((face, image, where_of(face), reason))
                if len(batch) == batch_size:
                    finish(batch)
                    if bar is not None:
                        bar.update(len(batch))
                    batch = []
            if batch:
                finish(batch)
                if bar is not None:
                    bar.update(len(batch))
    except BaseException:
        journal.close()
        if bar is not None:
            bar.close()
        _leave_no_trace(out, created, journal)
        raise
    journal.close()
    if bar is not None:
        bar.close()

    rows, skipped = [], list(dropped)
    for f in faces:
        entry = journal.done[f.key]
        if "row" in entry:
            rows.append(entry["row"])
        else:
            skipped.append((f.key, entry["skip"]))
    if not rows:
        journal.done.clear()  # nothing but skips: nothing worth resuming
        _leave_no_trace(out, created, journal)
        raise PrepareError(f"no face was found in any image under {opts.root}; nothing to write")
    reasons: dict[str, int] = {}
    for _, why in skipped:
        reasons[why] = reasons.get(why, 0) + 1
    splits = {s: [r for r in rows if r["split"] == s] for s in ("train", "test")}
    summary = {
        "dataset": opts.dataset,
        "settings": settings,
        "aus": list(opts.aus),
        "au_source": "openface" if opts.openface else ("labels" if opts.labels else "dataset"),
        "counts": {
            "faces_considered": len(faces) + len(dropped),
            "written": len(rows),
            "skipped": len(skipped),
            **{f"{s}_images": len(v) for s, v in splits.items()},
            **{f"{s}_subjects": len({r["subject"] for r in v}) for s, v in splits.items()},
        },
        "skipped_by_reason": reasons,
        "skipped_items": [{"item": k, "reason": why} for k, why in skipped[:5000]],
        "test_subjects": sorted({r["subject"] for r in splits["test"]}),
        "seconds": round(time.time() - start, 2),
    }
    try:
        write_manifest(out / MANIFEST_NAME, rows, opts.aus)
        write_summary(out / SUMMARY_NAME, summary)
    except OSError as err:  # the journal stays: the same command writes them once there is room
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        raise PrepareError(
            f"cannot write {out / MANIFEST_NAME} or {SUMMARY_NAME} ({_strerror(err)})"
        ) from None
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    return Result(out, summary)


def _source_name(src: Source, root: Path) -> Callable[[Face], str]:
    try:
        rel = src.path.relative_to(root).as_posix()
    except ValueError:
        rel = src.path.as_posix()
    if src.kind == "video":
        return lambda face: f"{rel}#{face.frame}"
    return lambda face: rel


def _load(
    src: Source, pending: list[Face], opts: Options, skip: str = ""
) -> Iterator[tuple[Face, np.ndarray | None, str]]:
    """(face, its image, "") for each pending face, or (face, None, reason) for one to skip."""
    if skip:
        for face in pending:
            yield face, None, skip
        return
    if src.kind == "image":
        reason = ""
        try:
            image = read_rgb(src.path)
        except ImageReadError:
            if not opts.skip_unreadable:
                raise
            image, reason = None, "unreadable"
        for face in pending:
            yield face, image, reason
        return
    by_frame = {int(f.frame or 0): f for f in pending}
    for frame, image in iter_video_frames(src, set(by_frame)):
        yield by_frame[frame], image, ""


def _already_aligned(image: np.ndarray, size: int) -> np.ndarray:
    """A square crop (checked by `_pixel_problem`) resized to ``size``."""
    h = image.shape[0]
    if h == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_LINEAR)
