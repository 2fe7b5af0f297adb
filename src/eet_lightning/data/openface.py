"""OpenFace 2.0 AU intensities, matched to the images and video frames of a dataset.

OpenFace writes one CSV per input: ``FeatureExtraction -f video.avi`` gives ``video.csv`` with one row per
frame (``frame`` counted from 1, ``face_id``, ``timestamp``, ``confidence``, ``success``, ...,
``AU01_r`` ... ``AU45_r``, ``AU01_c`` ...); ``FaceLandmarkImg -f image.jpg`` gives ``image.csv`` with one
row per face (``face``, ``confidence``, ...). Older releases put a space after every comma; both are read.

``--openface`` takes either such a folder of per-input CSVs (matched by file stem), or one CSV with a
file-name column (``filename``, ``file``, ``path``, ``name``, ``input`` or ``image``), optionally with a
``frame`` column for videos. Rows with ``success`` 0, or ``confidence`` below the threshold, count as
frames OpenFace failed on; so do frames or images without a row.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NAME_COLUMNS: tuple[str, ...] = ("filename", "file", "path", "name", "input", "image")


class OpenFaceError(ValueError):
    """An OpenFace CSV that cannot be used (missing, no AU columns, bad values)."""


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class _Rows:
    """One OpenFace CSV parsed: AU vectors per (name, frame), best face per frame, failures as None."""

    def __init__(self, path: Path, aus: Sequence[int], min_confidence: float, need_name: bool) -> None:
        self.path = path
        try:
            with path.open(newline="") as fh:
                table = list(csv.reader(fh))
        except FileNotFoundError:
            raise OpenFaceError(f"OpenFace CSV not found: {path}") from None
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise OpenFaceError(f"{path}: cannot read the OpenFace CSV ({err})") from err
        if not table:
            raise OpenFaceError(f"{path}: the OpenFace CSV is empty")
        header = [h.strip() for h in table[0]]
        col = {h.lower(): i for i, h in enumerate(header)}
        au_cols = {int(h[2:-2]): i for i, h in enumerate(header) if h.startswith("AU") and h.endswith("_r")}
        if not au_cols:
            raise OpenFaceError(
                f"{path}: no AU intensity columns (AU01_r ... AU45_r); run OpenFace with AU output (-aus)"
            )
        missing = [a for a in aus if a not in au_cols]
        if missing:
            raise OpenFaceError(
                f"{path}: no column for AU(s) {missing}; it has {sorted(au_cols)} (OpenFace 2.0 estimates "
                f"intensities of AUs 1 2 4 5 6 7 9 10 12 14 15 17 20 23 25 26 45)"
            )
        name_col = next((col[c] for c in NAME_COLUMNS if c in col), None)
        if need_name and name_col is None:
            raise OpenFaceError(
                f"{path}: a single OpenFace CSV for a whole dataset needs a file-name column "
                f"({', '.join(NAME_COLUMNS)}); or pass the folder of OpenFace's per-file CSVs"
            )
        frame_col = col.get("frame")
        success_col = col.get("success")
        conf_col = col.get("confidence")
        self.entries: dict[tuple[str, int], tuple[float, np.ndarray | None]] = {}
        for line, row in enumerate(table[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise OpenFaceError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
            name = Path(row[name_col].strip()).stem if name_col is not None else ""
            frame = 1
            if frame_col is not None:
                f = _number(row[frame_col])
                if not math.isfinite(f):
                    raise OpenFaceError(f"{path}, line {line}: frame is {row[frame_col]!r}")
                frame = int(f)
            ok = success_col is None or _number(row[success_col]) == 1
            conf = _number(row[conf_col]) if conf_col is not None else 1.0
            ok = ok and math.isfinite(conf) and conf >= min_confidence
            vec = None
            if ok:
                vec = np.asarray([_number(row[au_cols[a]]) for a in aus], dtype=np.float32)
                bad = [(a, row[au_cols[a]].strip()) for a, v in zip(aus, vec, strict=True) if not 0 <= v <= 5]
                if bad:
                    raise OpenFaceError(
                        f"{path}, line {line}: AU intensity outside [0, 5] or not a number: "
                        + ", ".join(f"AU{a:02d}_r = {t!r}" for a, t in bad)
                    )
            key = (name, frame)
            # several faces in one frame or image: keep the most confident successful one
            previous = self.entries.get(key)
            score = conf if vec is not None else -math.inf
            if previous is None or score > previous[0]:
                self.entries[key] = (score, vec)

    def image(self, name: str) -> np.ndarray | None:
        found = [v for (n, _), (_, v) in self.entries.items() if n == name]
        found = [v for v in found if v is not None]
        return found[0] if found else None

    def frames(self, name: str) -> dict[int, np.ndarray | None]:
        return {f: v for (n, f), (_, v) in self.entries.items() if n == name}


class OpenFaceLabels:
    """AU intensities from OpenFace output, for ``aus`` in that order (float32 vectors in [0, 5])."""

    def __init__(self, source: str | Path, aus: Sequence[int], min_confidence: float = 0.0) -> None:
        self.source = Path(source)
        self.aus = [int(a) for a in aus]
        self.min_confidence = float(min_confidence)
        if self.source.is_dir():
            self._single: _Rows | None = None
        elif self.source.is_file():
            self._single = _Rows(self.source, self.aus, self.min_confidence, need_name=True)
        else:
            raise OpenFaceError(f"--openface {self.source}: no such file or folder")
        self._cache: dict[str, _Rows] = {}

    def _file(self, stem: str) -> tuple[_Rows, str]:
        if self._single is not None:
            return self._single, stem
        path = self.source / f"{stem}.csv"
        if stem not in self._cache:
            if not path.is_file():
                raise OpenFaceError(
                    f"OpenFace CSV not found: {path} (expected one CSV per input, named after it)"
                )
            self._cache = {stem: _Rows(path, self.aus, self.min_confidence, need_name=False)}  # one at a time
        return self._cache[stem], ""

    def check(self, stems: Sequence[str]) -> None:
        """Fail early, naming the first per-input CSV that is missing or unusable."""
        for stem in stems:
            self._file(stem)

    def for_image(self, stem: str) -> np.ndarray | None:
        """AUs of the image with this file stem, or None where OpenFace failed on it."""
        rows, name = self._file(stem)
        return rows.image(name if self._single is None else stem)

    def for_video(self, stem: str) -> dict[int, np.ndarray | None]:
        """AUs per frame number (from 1) of the video with this stem; missing frames are failures."""
        rows, name = self._file(stem)
        return rows.frames(name if self._single is None else stem)
