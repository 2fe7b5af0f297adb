"""The user's own photos: a folder of images and a label CSV.

    eet-prepare folder --root photos/ --labels labels.csv --out prepared/

``labels.csv`` has a header row and one row per image:

    path      image path relative to --root (required)
    subject   person id (required; pairs are drawn across subjects)
    pose      optional yaw in degrees, 90 frontal, 45 / 135 half profiles (default 90)
    gaze      optional left | frontal | right
    emotion   optional, one of the library's emotion names
    split     optional train | test (default: a seeded subject-disjoint split, about 10% test)
    AU01 ...  one column per AU in --aus (AU1, AU01 or AU01_r all work), intensities 0-5;
              not needed with --openface, which labels the images instead
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from eet_lightning.data.manifest import GAZES, IMAGES_DIR
from eet_lightning.data.prepare.common import (
    Face,
    Options,
    PrepareError,
    Source,
    choose_test_subjects,
    split_by_subjects,
)
from eet_lightning.data.synthetic import EMOTIONS

FOLDER_TEST_FRACTION = 0.1
_AU = re.compile(r"^au0*(\d+)(_r)?$", re.IGNORECASE)


def read_table(labels: Path) -> list[list[str]]:
    """The rows of the label CSV (UTF-8, a byte-order mark allowed); one error naming the file and line
    for anything else."""
    if labels.is_dir():
        raise PrepareError(f"--labels {labels} is a folder; expected a CSV file")
    if not labels.is_file():
        raise PrepareError(f"label file not found: {labels}")
    try:
        raw = labels.read_bytes()
    except OSError as err:
        raise PrepareError(f"{labels}: cannot read the label file ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise PrepareError(
            f"{labels}, line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save the label file as "
            "UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return list(reader)
    except csv.Error as err:
        raise PrepareError(f"{labels}, line {reader.line_num}: not a valid CSV row ({err})") from None


def read(opts: Options) -> list[Source]:
    root = Path(opts.root)
    if not opts.labels:
        raise PrepareError("eet-prepare folder needs --labels labels.csv (path, subject, AU columns)")
    labels = Path(opts.labels)
    table = read_table(labels)
    if not table:
        raise PrepareError(f"{labels}: the label file is empty")
    header = [h.strip() for h in table[0]]
    col = {h.lower(): i for i, h in enumerate(header)}
    for needed in ("path", "subject"):
        if needed not in col:
            raise PrepareError(f"{labels}: no {needed!r} column; the header is {header}")
    au_col: dict[int, int] = {}
    for i, h in enumerate(header):
        m = _AU.match(h)
        if m:
            au_col[int(m.group(1))] = i
    if opts.openface is None:
        missing = [a for a in opts.aus if a not in au_col]
        if missing:
            raise PrepareError(
                f"{labels}: no column for AU(s) {missing} (name them AU01, AU1 or AU01_r), or pass --openface"
            )
    sources, seen, given_split = [], {}, "split" in col
    stems: dict[str, str] = {}
    keys: dict[str, int] = {}
    for line, row in enumerate(table[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise PrepareError(f"{labels}, line {line}: {len(row)} fields, the header has {len(header)}")
        rel = row[col["path"]].strip()
        if not rel or "\0" in rel:
            raise PrepareError(f"{labels}, line {line}: path {rel!r} is not an image path relative to --root")
        path = root / rel
        if Path(rel).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
            raise PrepareError(
                f"{labels}, line {line}: path {rel!r} is outside --root {root} (paths are relative to it)"
            )
        if not path.is_file():
            raise PrepareError(f"{labels}, line {line}: image {path} not found")
        if rel in seen:
            raise PrepareError(f"{labels}, line {line}: {rel} is listed twice (lines {seen[rel]} and {line})")
        seen[rel] = line
        if opts.openface and path.stem in stems:
            raise PrepareError(
                f"{labels}, line {line}: {rel} and {stems[path.stem]} share the file stem that OpenFace "
                f"output is matched by"
            )
        stems[path.stem] = rel
        subject = row[col["subject"]].strip()
        if not subject:
            raise PrepareError(f"{labels}, line {line}: empty subject")
        if "/" in subject or "\\" in subject or subject in (".", "..") or "\0" in subject:
            # the subject names the crop's folder under --out: it may not leave it
            raise PrepareError(
                f"{labels}, line {line}: subject {subject!r} is not a plain name (no '/', '\\', '.' or '..')"
            )
        pose = 90
        if "pose" in col and row[col["pose"]].strip():
            try:
                pose = int(row[col["pose"]])
            except ValueError:
                pose = -1
            if not 0 <= pose <= 180:  # a mirror maps pose p to 180 - p
                raise PrepareError(
                    f"{labels}, line {line}: pose must be a whole yaw in degrees from 0 to 180 (90 frontal), "
                    f"got {row[col['pose']]!r}"
                )
        gaze = row[col["gaze"]].strip() if "gaze" in col else ""
        if gaze and gaze not in GAZES:
            raise PrepareError(f"{labels}, line {line}: gaze must be one of {GAZES}, got {gaze!r}")
        emotion = row[col["emotion"]].strip() if "emotion" in col else ""
        if emotion and emotion not in EMOTIONS:
            raise PrepareError(f"{labels}, line {line}: emotion must be one of {EMOTIONS}, got {emotion!r}")
        aus = None
        if opts.openface is None:
            values = []
            for a in opts.aus:
                text = row[au_col[a]].strip()
                try:
                    v = float(text)
                except ValueError:
                    v = math.nan
                if not math.isfinite(v) or not 0 <= v <= 5:
                    raise PrepareError(
                        f"{labels}, line {line}: {header[au_col[a]]} is {text!r}, expected a number in [0, 5]"
                    )
                values.append(v)
            aus = np.asarray(values, dtype=np.float32)
        split = ""
        if given_split:
            split = row[col["split"]].strip()
            if split not in ("train", "test"):
                raise PrepareError(f"{labels}, line {line}: split must be train or test, got {split!r}")
        key = f"{subject}/{Path(rel).with_suffix('').as_posix().replace('/', '__')}"
        if key in keys:  # e.g. a.jpg and a.png of one subject: both would be written as one crop
            raise PrepareError(
                f"{labels}, line {line}: {rel} would be written as the crop of line {keys[key]} "
                f"({IMAGES_DIR}/{key}); rename one of the images"
            )
        keys[key] = line
        face = Face(key=key, subject=subject, pose=pose, gaze=gaze, emotion=emotion, aus=aus, split=split)
        sources.append(Source(path, "image", [face]))
    if not sources:
        raise PrepareError(f"{labels}: no rows")
    faces = [f for s in sources for f in s.faces]
    if opts.test_subjects:
        split_by_subjects(faces, opts.test_subjects, str(labels))
    elif not given_split:
        test = choose_test_subjects([f.subject for f in faces], FOLDER_TEST_FRACTION, opts.seed, str(labels))
        split_by_subjects(faces, test, str(labels))
    return sources
