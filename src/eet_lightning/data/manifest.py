"""The prepared-dataset format written by `eet-prepare` and read by every real-data DataModule, and the
generic face datasets built on it.

A prepared folder holds::

    manifest.csv    one row per aligned face crop
    summary.json    what eet-prepare did (dataset, settings, counts, skipped items and why)
    images/...      the crops (JPEG or PNG), all the same square size

Manifest columns (header row, comma separated):

    path      crop path relative to the folder
    subject   subject id as the dataset names it (e.g. SN001, 01, AF-200)
    split     train | test
    pose      camera yaw in degrees, RaFD's convention: 90 frontal, 45 and 135 the half profiles;
              a horizontal mirror maps pose p to 180 - p
    gaze      left | frontal | right, or empty where unknown
    emotion   one of EMOTIONS, or empty where unknown
    source    where the crop came from (file, and frame number for videos)
    AU01 ...  one column per AU, intensity in [0, 5]
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from eet_lightning.data.images import load_training_image, write_bytes_atomic
from eet_lightning.data.pairs import UnpairedPairs
from eet_lightning.data.synthetic import EMOTIONS
from eet_lightning.pixels import to_model_range

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "summary.json"
IMAGES_DIR = "images"
BASE_COLUMNS: tuple[str, ...] = ("path", "subject", "split", "pose", "gaze", "emotion", "source")
SPLITS: tuple[str, ...] = ("train", "test")
GAZES: tuple[str, ...] = ("left", "frontal", "right")  # gaze classes 0, 1, 2 (the synthetic data's order)
FRONTAL_POSE = 90
MAX_INTENSITY = 5.0


def au_column(au: int) -> str:
    """Manifest column of one AU: AU01, AU02, ..., AU45 (OpenFace's spelling without ``_r``)."""
    return f"AU{int(au):02d}"


class ManifestError(ValueError):
    """A prepared folder or manifest that does not hold what the DataModule needs."""


def write_manifest(path: Path, rows: Sequence[dict[str, Any]], aus: Sequence[int]) -> None:
    """Write the manifest atomically. Each row maps BASE_COLUMNS and au_column(a) to values."""
    columns = [*BASE_COLUMNS, *(au_column(a) for a in aus)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="raise")
    writer.writeheader()
    for row in rows:
        out = {c: row.get(c, "") for c in columns}
        for a in aus:
            out[au_column(a)] = f"{float(row[au_column(a)]):.4f}"
        out = {k: ("" if v is None else v) for k, v in out.items()}
        writer.writerow(out)
    write_bytes_atomic(path, buf.getvalue().encode())


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    write_bytes_atomic(path, (json.dumps(summary, indent=2, sort_keys=False) + "\n").encode())


def read_summary(root: Path) -> dict[str, Any]:
    path = root / SUMMARY_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path} not found: {root} is not a finished eet-prepare output (run eet-prepare, or let it "
            f"finish)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from err


@dataclass
class Manifest:
    """The rows of a manifest, validated, in file order."""

    path: Path  # the manifest file
    paths: list[str]  # crop paths relative to path.parent
    subjects: list[str]
    splits: list[str]
    poses: np.ndarray  # int64 [N] yaw in degrees
    gaze: list[str]  # "" where unknown
    emotion: list[str]  # "" where unknown
    aus: np.ndarray  # float32 [N, m], columns in the requested AU order
    au_list: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)


def read_manifest(path: str | Path, aus: Sequence[int]) -> Manifest:
    """Read and validate a manifest; every problem is one `ManifestError` naming the file (and the line
    and column where there is one)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (write it with eet-prepare)")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ManifestError(f"{path}: the manifest is empty") from None
        table = list(reader)
    missing = [c for c in ("path", "subject", "split", "pose") if c not in header]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {missing}; the header is {header}")
    au_cols = [au_column(a) for a in aus]
    absent = [c for c in au_cols if c not in header]
    if absent:
        present = [h for h in header if h.startswith("AU")]
        raise ManifestError(
            f"{path}: no column {', '.join(absent)} for the requested AUs {list(aus)}; the manifest has "
            f"{', '.join(present) or 'no AU columns'} (prepare with --aus to get them, or set data.aus)"
        )
    col = {h: i for i, h in enumerate(header)}
    out = Manifest(
        path, [], [], [], np.zeros(0, np.int64), [], [], np.zeros((0, len(aus)), np.float32), list(aus)
    )
    poses: list[int] = []
    values = np.empty((len(table), len(aus)), dtype=np.float32)
    n = 0
    for line, row in enumerate(table, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ManifestError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
        split = row[col["split"]].strip()
        if split not in SPLITS:
            raise ManifestError(f"{path}, line {line}: split must be one of {SPLITS}, got {split!r}")
        try:
            pose = int(row[col["pose"]])
        except ValueError:
            raise ManifestError(
                f"{path}, line {line}: pose must be an integer yaw in degrees, got {row[col['pose']]!r}"
            ) from None
        gaze = row[col["gaze"]].strip() if "gaze" in col else ""
        if gaze and gaze not in GAZES:
            raise ManifestError(f"{path}, line {line}: gaze must be one of {GAZES} or empty, got {gaze!r}")
        emotion = row[col["emotion"]].strip() if "emotion" in col else ""
        if emotion and emotion not in EMOTIONS:
            raise ManifestError(
                f"{path}, line {line}: emotion must be one of {EMOTIONS} or empty, got {emotion!r}"
            )
        for j, c in enumerate(au_cols):
            text = row[col[c]].strip()
            try:
                v = float(text)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise ManifestError(
                    f"{path}, line {line}: column {c} is {text!r}, expected a number in [0, 5]"
                )
            if not 0.0 <= v <= MAX_INTENSITY:
                raise ManifestError(f"{path}, line {line}: {c} = {v} is outside [0, 5]")
            values[n, j] = v
        out.paths.append(row[col["path"]])
        out.subjects.append(row[col["subject"]].strip())
        out.splits.append(split)
        out.gaze.append(gaze)
        out.emotion.append(emotion)
        poses.append(pose)
        n += 1
    if n == 0:
        raise ManifestError(f"{path}: the manifest has no rows")
    out.poses = np.asarray(poses, dtype=np.int64)
    out.aus = values[:n].copy()
    return out


# ------------------------------------------------------------------------------------------------------
# Datasets


@dataclass
class SplitLabels:
    """The labels of some manifest rows, read from the manifest alone (no image is decoded): what an
    evaluation protocol needs to draw its pairs. Row k is the k-th row of the split, in manifest order,
    the same order as `FaceTable` indices."""

    paths: list[str]  # crop path relative to the prepared folder
    subjects: list[str]  # subject id as the dataset names it
    identity: np.ndarray  # int64 [N] identity class (training subjects 0..n-1, held-out people after)
    pose: np.ndarray  # int64 [N] pose class (index into the training yaws)
    yaw: np.ndarray  # int64 [N] camera yaw in degrees
    aus: np.ndarray  # float32 [N, m] AU intensities in [0, 5]
    gaze: np.ndarray | None  # int64 [N] class of GAZES, None unless every row has one
    emotion: np.ndarray | None  # int64 [N] class of EMOTIONS, None unless every row has one

    def __len__(self) -> int:
        return len(self.paths)


class FaceTable:
    """Some rows of a manifest as tensors ready for sampling, with one image transform.

    Labels: ``identity`` is the index of the subject in ``identities``; ``pose`` the index of the yaw in
    ``pose_values``; gaze and emotion are class indices (GAZES, EMOTIONS) and only present when every row
    has them.
    """

    def __init__(
        self,
        manifest: Manifest,
        rows: np.ndarray,
        identities: dict[str, int],
        pose_values: Sequence[int],
        transform: Any,  # albumentations Compose (with save_applied_params) or None
        image_size: int,
        with_paths: bool = False,  # add each crop's manifest path as "path" (a string, for inspection)
    ) -> None:
        self.root = manifest.path.parent
        self.with_paths = with_paths
        self.paths = [manifest.paths[r] for r in rows]
        self.subjects = [manifest.subjects[r] for r in rows]
        self.yaw = np.asarray([int(manifest.poses[r]) for r in rows], dtype=np.int64)
        self.identity = np.asarray([identities[manifest.subjects[r]] for r in rows], dtype=np.int64)
        pose_index = {int(p): k for k, p in enumerate(pose_values)}
        # poses never seen in training (a test-only yaw) fall back to the nearest training yaw
        self.pose = np.asarray(
            [pose_index.get(int(manifest.poses[r]), _nearest(pose_values, manifest.poses[r])) for r in rows],
            dtype=np.int64,
        )
        self.mirrored_pose = np.asarray(
            [pose_index.get(180 - int(p), _nearest(pose_values, 180 - int(p))) for p in pose_values],
            dtype=np.int64,
        )
        gaze = [manifest.gaze[r] for r in rows]
        self.gaze = np.asarray([GAZES.index(g) for g in gaze], np.int64) if all(gaze) else None
        emotion = [manifest.emotion[r] for r in rows]
        self.emotion = np.asarray([EMOTIONS.index(e) for e in emotion], np.int64) if all(emotion) else None
        self.aus = torch.from_numpy(manifest.aus[rows].copy())
        self.transform = transform
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def labels(self) -> SplitLabels:
        """Every row's labels without decoding an image."""
        return SplitLabels(
            paths=list(self.paths),
            subjects=list(self.subjects),
            identity=self.identity.copy(),
            pose=self.pose.copy(),
            yaw=self.yaw.copy(),
            aus=self.aus.numpy().copy(),
            gaze=None if self.gaze is None else self.gaze.copy(),
            emotion=None if self.emotion is None else self.emotion.copy(),
        )

    def images(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The un-augmented images of some rows: [n, 3, H, W] in [-1, 1]."""
        idx = [int(k) for k in np.asarray(indices).reshape(-1)]
        if not idx:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([self.sample(k, augment=False)["image"] for k in idx])

    def sample(self, k: int, augment: bool) -> dict[str, Any]:
        import cv2

        path = self.root / self.paths[k]
        image = load_training_image(path)
        if image.shape[0] != self.image_size or image.shape[1] != self.image_size:
            shrink = image.shape[0] > self.image_size
            image = cv2.resize(
                image,
                (self.image_size, self.image_size),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
            )
        flipped = False
        if augment and self.transform is not None:
            # albumentations keeps its own RNG: seed it from torch's, which the DataLoader seeds per worker
            self.transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())))
            result = self.transform(image=image)
            image = result["image"]
            flipped = any(name == "HorizontalFlip" for name, _ in result.get("applied_transforms", []))
        tensor = to_model_range(image)
        pose = int(self.pose[k])
        out: dict[str, Any] = {
            "image": tensor,
            "aus": self.aus[k],
            "identity": torch.tensor(int(self.identity[k])),
        }
        if flipped:  # a mirrored face is turned and looks the other way
            pose = int(self.mirrored_pose[pose])
        out["pose"] = torch.tensor(pose)
        if self.gaze is not None:
            gaze = int(self.gaze[k])
            out["gaze"] = torch.tensor(2 - gaze if flipped else gaze)
        if self.emotion is not None:
            out["emotion"] = torch.tensor(int(self.emotion[k]))
        if self.with_paths:
            out["path"] = self.paths[k]
        return out


def _nearest(values: Sequence[int], p: int) -> int:
    return int(np.argmin([abs(int(v) - int(p)) for v in values]))


class TrainPairs(UnpairedPairs):
    """Item i: face i as A and a random face of another subject as B (unpaired), each augmented."""

    def __init__(self, table: FaceTable) -> None:
        super().__init__(table.identity)
        if len(self.identities) < 2:
            raise ManifestError("the training split needs at least two subjects to draw unpaired pairs")
        self.table = table

    def side(self, k: int) -> dict[str, Any]:
        return self.table.sample(k, augment=True)


class FixedPairs(Dataset):
    """Held-out pairs fixed by a seed: A runs through the split (evenly spaced when there are more rows
    than pairs), B is a random face of another subject."""

    def __init__(self, table: FaceTable, num_pairs: int, seed: int) -> None:
        self.table = table
        ids = table.identity
        if len(np.unique(ids)) < 2:
            raise ManifestError(
                "the test split needs at least two subjects to form pairs of different people"
            )
        n = len(table)
        rng = np.random.default_rng([seed, 7])
        count = min(int(num_pairs), n) if num_pairs > 0 else n
        self.a = np.linspace(0, n - 1, count).round().astype(np.int64)
        self.b = np.empty_like(self.a)
        for k, i in enumerate(self.a):
            others = np.flatnonzero(ids != ids[i])
            self.b[k] = others[rng.integers(len(others))]

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, k: int) -> dict[str, dict[str, Any]]:
        return {
            "a": self.table.sample(int(self.a[k]), augment=False),
            "b": self.table.sample(int(self.b[k]), augment=False),
        }
