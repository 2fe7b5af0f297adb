"""The dataset-independent part of `eet-prepare`: what a reader hands over (sources of faces with their
labels), subject splits, and the run that aligns, writes, resumes and summarises."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from eet_lightning.data.images import ImageReadError, read_rgb, write_image_atomic
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

STATE_DIR = ".eet-prepare"  # the resume journal of an unfinished run
FORMAT_VERSION = 1


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


def video_frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise PrepareError(f"{path}: cannot open the video")
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


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


class _Journal:
    """Append-only record of finished faces, so that an interrupted run resumes where it stopped."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.dir = out / STATE_DIR
        self.path = self.dir / "progress.jsonl"
        self.done: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            header = json.loads(lines[0]) if lines else None
            if header != {"settings": settings}:
                raise PrepareError(
                    f"{out} holds an unfinished eet-prepare run with other settings "
                    f"({self.dir}); re-run with the same options to resume, or pass --overwrite"
                )
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line torn by a crash: that face is redone
                    continue
                self.done[entry["key"]] = entry
            self._fh = self.path.open("a")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w")
            self._fh.write(json.dumps({"settings": settings}) + "\n")
            self._fh.flush()

    def add(self, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            self._fh.write(json.dumps(e) + "\n")
            self.done[e["key"]] = e
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _is_ours(out: Path) -> bool:
    names = {p.name for p in out.iterdir()}
    return not names or bool(names & {STATE_DIR, MANIFEST_NAME, SUMMARY_NAME})


def clear_output(out: Path) -> None:
    """Remove what eet-prepare wrote in ``out`` (for --overwrite); other files are left alone."""
    for name in (STATE_DIR, IMAGES_DIR):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in (MANIFEST_NAME, SUMMARY_NAME):
        (out / name).unlink(missing_ok=True)


@dataclass
class Result:
    out: Path
    summary: dict[str, Any]
    finished_before: bool = False


def run_prepare(
    reader: Reader,
    opts: Options,
    out: Path,
    overwrite: bool = False,
    progress: bool = True,
    batch_size: int = 16,
    log: Callable[[str], None] = print,
) -> Result:
    """Read the download, align every face, write crops, manifest.csv and summary.json into ``out``."""
    start = time.time()
    out = Path(out)
    settings = {**opts.key(), "format_version": FORMAT_VERSION}
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} exists and is not a folder")
    if out.is_dir() and not _is_ours(out):
        raise PrepareError(
            f"--out {out} is not empty and holds no eet-prepare output; choose an empty folder"
        )
    if out.is_dir() and overwrite:
        clear_output(out)
    if (out / MANIFEST_NAME).is_file() and (out / SUMMARY_NAME).is_file():
        previous = json.loads((out / SUMMARY_NAME).read_text())
        if previous.get("settings") == settings:
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

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    journal = _Journal(out, settings)
    aligner = None
    if opts.detector == "mtcnn":
        from eet_lightning.data.faces import FaceAligner

        aligner = FaceAligner(size=opts.size, min_score=opts.min_score)
    suffix = ".jpg" if opts.image_format == "jpg" else ".png"

    def finish(batch: list[tuple[Face, np.ndarray | None, str]]) -> None:
        images = [im for _, im, _ in batch if im is not None]
        if aligner is not None:
            aligned = iter(a.crop if a is not None else None for a in aligner.align_batch(images))
        else:
            aligned = iter(
                _already_aligned(im, opts.size, f"{root}/{w}") for _, im, w in batch if im is not None
            )
        entries = []
        for face, image, where in batch:
            crop = next(aligned) if image is not None else None
            if image is None:
                entries.append({"key": face.key, "skip": "unreadable", "source": where})
                continue
            if crop is None:
                entries.append({"key": face.key, "skip": "no_face", "source": where})
                continue
            rel = f"{IMAGES_DIR}/{face.key}{suffix}"
            write_image_atomic(out / rel, crop)
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
        journal.add(entries)

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
            batch: list[tuple[Face, np.ndarray | None, str]] = []
            for face, image in _load(src, pending, opts):
                batch.append((face, image, where_of(face)))
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
        if created and not journal.done:  # nothing finished: leave no trace at all
            shutil.rmtree(out, ignore_errors=True)
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
    write_manifest(out / MANIFEST_NAME, rows, opts.aus)
    write_summary(out / SUMMARY_NAME, summary)
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


def _load(src: Source, pending: list[Face], opts: Options) -> Iterator[tuple[Face, np.ndarray | None]]:
    if src.kind == "image":
        try:
            image = read_rgb(src.path)
        except ImageReadError:
            if not opts.skip_unreadable:
                raise
            image = None
        for face in pending:
            yield face, image
        return
    by_frame = {int(f.frame or 0): f for f in pending}
    for frame, image in iter_video_frames(src, set(by_frame)):
        yield by_frame[frame], image


def _already_aligned(image: np.ndarray, size: int, where: str) -> np.ndarray:
    h, w = image.shape[:2]
    if h != w:
        raise PrepareError(f"{where} is {w}x{h}: --detector none expects square, already aligned face crops")
    if h == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if h > size else cv2.INTER_LINEAR)
