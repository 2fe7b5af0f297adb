"""`eet-transfer`: swap expressions between face photos and videos with a trained EET.

eet-transfer --ckpt runs/synthetic/stage2/last.ckpt --source a.jpg --target b.jpg --out out/
eet-transfer --ckpt CKPT --source faces/ --target faces/ --out out/            # every pair of the folders
eet-transfer --ckpt CKPT --pairs pairs.csv --out out/ --aus 12 25 26 --strength 0.7
eet-transfer --ckpt CKPT --source driving.mp4 --target photo.jpg --out out/    # video of the photo's face

Each face is found with MTCNN, aligned to the training crop, transferred, and pasted back into the original
photo through the inverse warp with a feathered mask: the output is the whole photo with only the face
changed (``--crop-only`` writes the aligned crops instead). A photo pair writes both directions,
``T_with_S.png`` (T's photo with S's expression) and ``S_with_T.png``. A video as source (or target) writes
``T_with_S.mp4``: the target performing the source's expressions frame by frame, the face box smoothed
over time. Bad input ends in one line ``eet-transfer: error: ...`` and exit status 2 before anything is
written.

Resuming: every output is written under a temporary name in --out (``.NAME.xxxxxxxx.tmp``, or ``...tmp.mp4``
for videos) and renamed when complete, so an output that exists is whole. Before the first output,
``.eet-transfer.json`` in --out records the settings that decide the pixels (the checkpoint's SHA-256,
--aus, --strength, --crop-only, --face-index, --smooth) and the names of the outputs. Re-running a killed or
failed command removes the temporaries it left (only names of that pattern for outputs the record or the
job names, nothing else) and does only the outputs that are missing, in the same batches as an
uninterrupted run, so the result is byte-identical to one. Adding photos to a folder and re-running does
the new pairs only. A run with other settings is refused (outputs made two ways would be mixed), and so is a
file at an output's name that no recorded eet-transfer run wrote; ``--overwrite`` redoes every output and,
when the settings changed, first deletes the outputs the record lists. One eet-transfer at a time may
write into a folder (a lock, released when the process ends, even by kill -9).

Quality reports: every output ``T_with_S.png`` (or ``.mp4``) gets ``T_with_S.json`` beside it (`eet_lightning.quality`:
the detector's confidence and face sizes, head poses, the AUs the model reads on source, target and result,
how far the expression moved, an identity similarity, and warnings), and ``report.csv`` in --out holds one
row per output (a video's: medians over its frames, the warnings with the frames they hold for). The last lines printed count the warnings; a model trained only on the built-in
synthetic faces says so on every run (its outputs on photographs mean nothing). ``--no-report`` skips them.
``--onnx model.onnx`` runs an EET exported by ``eet-export --out model.onnx`` in onnxruntime instead of a
checkpoint in PyTorch.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from eet_lightning.checkpoint_io import checkpoint_kind
from eet_lightning.data.faces import Detection, FaceAligner, FaceAlignment, align_to_template, warp_back
from eet_lightning.data.images import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    read_rgb,
    usual_permissions,
    write_bytes_atomic,
    write_image_atomic,
)
from eet_lightning.methods import load_transfer_model
from eet_lightning.methods.inference import MAX_STRENGTH, TransferModel
from eet_lightning.quality import QualityReporter, reports_csv, video_report, warning_kinds
from eet_lightning.runtime import configure_process, tune_for_cli

PROG = "eet-transfer"
# The pasted region in unit crop coordinates: an ellipse around the template's face (eyes at y 0.44, mouth
# at y 0.73, eye distance 0.25), fading to zero over its outer quarter so that no seam shows.
MASK_CENTER = (0.5, 0.54)
MASK_AXES = (0.32, 0.40)
MASK_FEATHER = 0.25
MAX_SMOOTH = 1000  # --smooth: frames averaged (the edges are padded with that many copies)

# What a run leaves in --out besides its outputs: the record of the job (settings, output names), and
# temporaries of a run that was killed while writing (`write_bytes_atomic` names them ".NAME.xxxxxxxx.tmp";
# videos ".NAME.xxxxxxxx.tmp.mp4", as OpenCV picks the container from the suffix).
RECORD_NAME = ".eet-transfer.json"
RECORD_VERSION = 1
REPORT_CSV = "report.csv"  # one row per output (the JSON reports beside the images and videos, as CSV)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp(?:\.mp4)?$")
# earlier versions named video temporaries ".STEM.xxxxxxxx.mp4"
_OLD_VIDEO_TEMPORARY = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.mp4$")


class TransferError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit status 2 like every other error, no usage
        raise TransferError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Swap facial expressions between photos (and videos) with a trained EET.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1].split("\n\n", 1)[0],
    )
    p.add_argument(
        "--ckpt",
        help="the trained model: any method's final checkpoint (EET: runs/synthetic/stage2/last.ckpt) or "
        "eet-export's .safetensors weights",
    )
    p.add_argument(
        "--onnx", help="instead of --ckpt: an EET exported with eet-export --out model.onnx (onnxruntime)"
    )
    p.add_argument("--source", help="photo, video or folder whose expressions are transferred")
    p.add_argument("--target", help="photo, video or folder that receives them")
    p.add_argument("--pairs", help="CSV with columns source,target (paths relative to the CSV's folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--crop-only", action="store_true", help="write the aligned crops, not the whole photos")
    p.add_argument(
        "--aus", type=int, nargs="*", help="move only these AUs (selective transfer), e.g. 12 25 26"
    )
    p.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help=f"0 keeps the own expression, 1 swaps, up to {MAX_STRENGTH:g} exaggerates",
    )
    p.add_argument(
        "--face-index",
        type=int,
        nargs="+",
        default=[0],
        metavar="K",
        help="which face when there are several (0: the largest); two values: the source's, then the target's",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="redo every output (without it, a re-run keeps the outputs already written and does the rest); "
        "when --out holds outputs made with other settings, they are deleted first",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=8, help="pairs or frames per forward pass")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks (EETModel.compile_for_inference): each batch shape compiles first "
        "(seconds), then batches run faster; for long videos and many pairs; needs a C++ compiler",
    )
    p.add_argument(
        "--smooth",
        type=int,
        default=5,
        help=f"video: frames averaged for the face box (1: none, at most {MAX_SMOOTH})",
    )
    p.add_argument(
        "--face-weights",
        help="facenet-pytorch InceptionResnetV1 weights (state dict file) for the reports' identity "
        "similarity (default: the model's own identity classifier, where it has one)",
    )
    p.add_argument(
        "--no-report", action="store_true", help="write no quality reports (T_with_S.json, report.csv)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


# ---------------------------------------------------------------------------------------------- paste-back


def face_mask(size: int) -> np.ndarray:
    """The feathered paste mask in crop coordinates: float32 [size, size] in [0, 1], zero at the border."""
    u = (np.arange(size, dtype=np.float64) + 0.5) / size
    x, y = np.meshgrid(u, u)
    r = np.sqrt(((x - MASK_CENTER[0]) / MASK_AXES[0]) ** 2 + ((y - MASK_CENTER[1]) / MASK_AXES[1]) ** 2)
    t = np.clip((1.0 - r) / MASK_FEATHER, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep: no visible edge


def paste_face(
    photo: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None = None
) -> np.ndarray:
    """``photo`` (uint8 [H, W, 3]) with the edited aligned ``crop`` blended in through the inverse of the
    alignment ``matrix`` under the feathered ``mask`` (`face_mask` by default). Pixels where the mask is
    zero are returned unchanged."""
    if mask is None:
        mask = face_mask(crop.shape[0])
    warped, _ = warp_back(crop, matrix, photo.shape)
    alpha, _ = warp_back(mask, matrix, photo.shape)
    inside = alpha > 0
    out = photo.copy()
    a = alpha[inside][:, None]
    out[inside] = np.clip(np.rint(photo[inside] * (1.0 - a) + warped[inside] * a), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PhotoPair:
    """Two photos; writes ``a_with_b`` and ``b_with_a`` (one file when they are the same photo)."""

    a: Path
    b: Path


@dataclass(frozen=True)
class VideoJob:
    """The target (video or photo) performing the source's expressions (the source a video or photo)."""

    source: Path
    target: Path


def report_name(output: str) -> str:
    """The quality report's file name beside an output: ``T_with_S.png`` (``.mp4``) -> ``T_with_S.json``."""
    return f"{Path(output).stem}.json"


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise TransferError(f"{path}: not an image or video file (suffix {suffix or 'none'})")


def _media(path_str: str, role: str) -> list[Path]:
    path = Path(path_str)
    if path.is_dir():
        found = sorted(
            p
            for p in path.iterdir()
            # hidden files are skipped: temporaries, and "._photo.jpg" resource forks that are no images
            if p.is_file()
            and not p.name.startswith(".")
            and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        )
        if not found:
            raise TransferError(f"--{role} {path}: the folder holds no images or videos")
        return found
    if not path.exists():
        raise TransferError(f"--{role} {path}: no such file or folder")
    if not path.is_file():
        raise TransferError(f"--{role} {path}: not a regular file or folder")
    _kind(path)
    return [path]


def _pairs_csv(path_str: str) -> list[tuple[Path, Path]]:
    """The (source, target) rows of a pair list; every path relative to the CSV's folder and inside it."""
    path = Path(path_str)
    if path.is_dir():
        raise TransferError(f"--pairs {path}: is a folder, not a CSV file")
    if not path.is_file():
        raise TransferError(f"--pairs {path}: no such file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TransferError(
            f"--pairs {path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "save the CSV as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        if "source" not in header or "target" not in header:
            got = f"got {','.join(header)!r}" if any(header) else "the file is empty"
            raise TransferError(f"--pairs {path}: expected a header line 'source,target' ({got})")
        columns = {col: header.index(col) for col in ("source", "target")}
        folder = path.parent.resolve()
        out = []
        for row in reader:
            line = reader.line_num
            if not any(v.strip() for v in row):
                continue  # a blank line
            pair = []
            for col, k in columns.items():
                value = row[k].strip() if k < len(row) else ""
                where = f"--pairs {path}, line {line}"
                if not value:
                    raise TransferError(f"{where}: the {col} is empty")
                p = path.parent / value
                if Path(value).is_absolute() or not p.resolve().is_relative_to(folder):
                    raise TransferError(
                        f"{where}: {col} {value!r} is outside the CSV's folder {path.parent} "
                        "(paths are relative to it and stay inside it)"
                    )
                if not p.is_file():
                    raise TransferError(f"{where}: {col} file not found: {value}")
                try:
                    _kind(p)
                except TransferError as err:
                    raise TransferError(f"{where}: {err}") from None
                pair.append(p)
            out.append((pair[0], pair[1]))
    except csv.Error as err:
        raise TransferError(f"--pairs {path}, line {reader.line_num}: not a readable CSV ({err})") from None
    if not out:
        raise TransferError(f"--pairs {path}: no pairs below the header line 'source,target'")
    return out


def plan(args: argparse.Namespace) -> tuple[list[PhotoPair], list[VideoJob], dict[Path, tuple[Path, ...]]]:
    """(photo pairs, video jobs, output path -> the inputs it comes from), checked for collisions."""
    if args.pairs:
        if args.source or args.target:
            raise TransferError("give either --pairs or --source and --target, not both")
        combos = _pairs_csv(args.pairs)
        folders = False
    else:
        if not (args.source and args.target):
            raise TransferError("give --source and --target (or --pairs)")
        out = Path(args.out).resolve()
        for role in ("source", "target"):
            folder = Path(getattr(args, role))
            if folder.is_dir() and folder.resolve() == out:
                raise TransferError(
                    f"--out {args.out} is the --{role} folder: its outputs would become inputs of a re-run; "
                    "choose another output folder"
                )
        sources, targets = _media(args.source, "source"), _media(args.target, "target")
        combos = [(s, t) for s in sources for t in targets]
        folders = len(sources) > 1 or len(targets) > 1
    out_dir = Path(args.out)
    photos: dict[frozenset, PhotoPair] = {}
    videos: list[VideoJob] = []
    outputs: dict[Path, tuple[Path, ...]] = {}

    def claim(name: str, inputs: tuple[Path, ...]) -> None:
        path = out_dir / name
        key = tuple(p.resolve() for p in inputs)
        if path in outputs and tuple(p.resolve() for p in outputs[path]) != key:
            raise TransferError(
                f"two outputs would be written to {path} (from {', '.join(map(str, outputs[path]))} and "
                f"{', '.join(map(str, inputs))}); give the inputs distinct file names"
            )
        outputs[path] = inputs

    if args.face_index[0] != args.face_index[-1]:
        both = {s.resolve() for s, _ in combos} & {t.resolve() for _, t in combos}
        if both:
            raise TransferError(
                f"two --face-index values need separate sources and targets, but {sorted(both)[0]} is both"
            )
    for source, target in combos:
        same = source.resolve() == target.resolve()
        if folders and same:
            continue  # a photo with itself is no transfer
        if "video" in (_kind(source), _kind(target)):
            videos.append(VideoJob(source, target))
            claim(f"{target.stem}_with_{source.stem}.mp4", (target, source))
            continue
        key = frozenset((source.resolve(), target.resolve()))
        if key in photos:
            continue
        photos[key] = PhotoPair(target, source)
        claim(f"{target.stem}_with_{source.stem}.png", (target, source))
        if not same:
            claim(f"{source.stem}_with_{target.stem}.png", (source, target))
    if not photos and not videos:
        raise TransferError("nothing to do: the only pairs given are photos paired with themselves")
    return list(photos.values()), videos, outputs


# ---------------------------------------------------------------------------------------------- faces


def _pick(found: list[Detection], index: int, path: Path, shape: tuple[int, ...], min_side: int) -> Detection:
    if not found:
        h, w = shape[:2]
        small = f"; a face needs at least {min_side} x {min_side}" if min(h, w) < min_side else ""
        raise TransferError(f"no face found in {path} ({w} x {h} pixels{small})")
    if index >= len(found):
        raise TransferError(
            f"{path}: --face-index {index} asks for face {index + 1} but {len(found)} face(s) were found"
        )
    return found[index]


def _center(det: Detection) -> np.ndarray:
    return np.array([(det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2])


def _smooth(landmarks: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over time of [F, 5, 2] landmarks (edges repeated)."""
    if window <= 1 or len(landmarks) < 2:
        return landmarks
    half = window // 2
    padded = np.concatenate([landmarks[:1].repeat(half, 0), landmarks, landmarks[-1:].repeat(half, 0)])
    kernel = np.ones(2 * half + 1) / (2 * half + 1)
    flat = padded.reshape(len(padded), -1)
    out = np.stack([np.convolve(flat[:, j], kernel, mode="valid") for j in range(flat.shape[1])], axis=1)
    return out.reshape(landmarks.shape)


def _frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames of a video, in order."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise TransferError(f"{path}: cannot read the video")
        count = 0
        while limit is None or count < limit:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def _frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return count


def _fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return float(fps) if fps and np.isfinite(fps) and 1.0 <= fps <= 240.0 else 25.0


@dataclass
class Track:
    """A face followed through a video: smoothed landmarks per frame and the frame size."""

    landmarks: np.ndarray  # float64 [F, 5, 2]
    frame_shape: tuple[int, int, int]


# ---------------------------------------------------------------------------------------------- running


class Runner:
    def __init__(self, args: argparse.Namespace, model: TransferModel, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.model = model
        self.size = model.image_size
        self.aligner = FaceAligner(size=self.size, device=str(device))
        self.aus = args.aus
        self.written: list[Path] = []
        self.reporter: QualityReporter | None = None
        if not args.no_report:
            try:
                self.reporter = QualityReporter(model, args.face_weights)
            except ValueError as err:  # --face-weights: missing, unreadable, not FaceNet's
                raise TransferError(str(err)) from None
        self.source_index, self.target_index = args.face_index[0], args.face_index[-1]

    def bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(
            total=total, desc=f"{PROG}: {desc}", unit=unit, disable=self.args.no_progress, file=sys.stderr
        )

    @property
    def min_face_side(self) -> int:
        return int(self.aligner.mtcnn.min_face_size)

    def _detectable(self, image: np.ndarray) -> bool:
        """Whether MTCNN can look at the image at all: its smallest face must fit in the detection image
        (an image smaller than that has no face; MTCNN itself fails on it with an unrelated error)."""
        h, w = image.shape[:2]
        scale = min(1.0, self.aligner.max_detect_side / float(max(h, w)))
        return min(h, w) * scale >= self.min_face_side

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """MTCNN on CPU runs on one thread: its many small convolutions gain nothing from more, and lose a
        lot when the cores are busy (6 frames of 256 px: 0.3 s on one thread, 5.2 s on two busy cores)."""
        found: list[list[Detection]] = [[] for _ in images]
        usable = [k for k, image in enumerate(images) if self._detectable(image)]
        if not usable:
            return found
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            for k, dets in zip(usable, self.aligner.detect_batch([images[k] for k in usable]), strict=True):
                found[k] = dets
        finally:
            torch.set_num_threads(threads)
        return found

    def transfer(self, a: list[np.ndarray], b: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out_a, out_b = self.model.transfer(
            np.stack(a), np.stack(b), aus=self.aus, strength=self.args.strength
        )
        return out_a, out_b

    # ---- finding faces (everything that can fail on the inputs happens here, before any output)

    def prepare(self, pairs: list[PhotoPair], videos: list[VideoJob], pending: list[VideoJob]) -> None:
        """Find the faces of every photo of the job (also those whose outputs exist: a resumed run detects
        in the same batches as an uninterrupted one, and so writes the same bytes) and follow the faces
        through the videos of the ``pending`` video jobs."""
        src, tgt = self.source_index, self.target_index
        photos = {item for pair in pairs for item in ((pair.a, tgt), (pair.b, src))}
        clips: set[tuple[Path, int]] = set()
        for job in videos:
            for item in ((job.source, src), (job.target, tgt)):
                if _kind(item[0]) == "video":
                    if job in pending:
                        clips.add(item)
                else:
                    photos.add(item)
        self.faces = self.locate_photos(sorted(photos))
        self.tracks = {item: self.track(*item) for item in sorted(clips)}

    def locate_photos(self, items: list[tuple[Path, int]]) -> dict[tuple[Path, int], FaceAlignment]:
        """The chosen face (path, face index) of every photo aligned; raises when one has none."""
        faces: dict[tuple[Path, int], FaceAlignment] = {}
        bs = self.args.batch_size
        with self.bar(len(items), "faces", "img") as bar:
            for start in range(0, len(items), bs):
                chunk = items[start : start + bs]
                images = [read_rgb(path) for path, _ in chunk]
                for (path, index), image, found in zip(chunk, images, self.detect(images)):
                    det = _pick(found, index, path, image.shape, self.min_face_side)
                    faces[path, index] = align_to_template(
                        image, det.landmarks, self.size, det.box, det.score
                    )
                bar.update(len(chunk))
        return faces

    # ---- photos

    def run_photos(self, pairs: list[PhotoPair], out_dir: Path, done: set[str]) -> None:
        """Transfer the pairs in batches and write both directions; ``done`` names outputs that exist and
        are kept. Batches are the uninterrupted run's: one with an output missing runs whole."""
        if not pairs:
            return

        def images(pair: PhotoPair) -> list[str]:
            first = f"{pair.a.stem}_with_{pair.b.stem}.png"
            return (
                [first]
                if pair.a.resolve() == pair.b.resolve()
                else [first, f"{pair.b.stem}_with_{pair.a.stem}.png"]
            )

        def names(pair: PhotoPair) -> list[str]:
            out = images(pair)
            return out if self.reporter is None else out + [report_name(n) for n in out]

        bs, src, tgt = self.args.batch_size, self.source_index, self.target_index
        faces = {
            "a": {p.a: self.faces[p.a, tgt] for p in pairs},
            "b": {p.b: self.faces[p.b, src] for p in pairs},
        }
        reported = flagged = 0
        with self.bar(len(pairs), "photos", "pair") as bar:
            for start in range(0, len(pairs), bs):
                chunk = pairs[start : start + bs]
                if all(name in done for pair in chunk for name in names(pair)):
                    bar.update(len(chunk))
                    continue
                face_a = [faces["a"][p.a] for p in chunk]
                face_b = [faces["b"][p.b] for p in chunk]
                crops_a = np.stack([f.crop for f in face_a])
                crops_b = np.stack([f.crop for f in face_b])
                out_a, out_b = self.transfer(list(crops_a), list(crops_b))
                reports = None
                if self.reporter is not None:  # both directions of the batch in one pass
                    reports = self.reporter.reports(
                        face_a + face_b,
                        face_b + face_a,
                        np.concatenate([crops_a, crops_b]),
                        np.concatenate([crops_b, crops_a]),
                        np.concatenate([out_a, out_b]),
                        aus=self.aus,
                        strength=self.args.strength,
                    )
                n = len(chunk)
                for k, (pair, ea, eb) in enumerate(zip(chunk, out_a, out_b)):
                    for d, (name, photo, other, face, edited) in enumerate(
                        zip(
                            images(pair),
                            (pair.a, pair.b),
                            (pair.b, pair.a),
                            (faces["a"][pair.a], faces["b"][pair.b]),
                            (ea, eb),
                        )
                    ):
                        if name not in done:
                            self.write_photo(out_dir / name, photo, face, edited)
                        if reports is not None and report_name(name) not in done:
                            report = {"output": name, "target_photo": str(photo), "source_photo": str(other)}
                            report.update(reports[k + d * n])
                            self.write_report(out_dir / report_name(name), report)
                            reported += 1
                            flagged += any(not w.startswith("synthetic-only") for w in report["warnings"])
                if reported:  # the bar's last line counts the outputs with warnings
                    bar.set_postfix_str(f"{flagged} of {reported} with warnings", refresh=False)
                bar.update(len(chunk))

    def write_report(self, path: Path, report: dict) -> None:
        try:
            write_bytes_atomic(path, (json.dumps(report, indent=1) + "\n").encode())
        except OSError as err:
            raise TransferError(f"{path}: cannot write the report ({err.strerror or err})") from None

    def write_photo(self, path: Path, photo_path: Path, face: FaceAlignment, edited: np.ndarray) -> None:
        image = edited if self.args.crop_only else paste_face(read_rgb(photo_path), edited, face.matrix)
        try:
            write_image_atomic(path, image)
        except OSError as err:  # e.g. a full disk: the temporary is gone, earlier outputs are whole
            raise TransferError(f"{path}: cannot write the output ({err.strerror or err})") from None
        self.written.append(path)

    # ---- videos

    def track(self, path: Path, index: int) -> Track:
        """Detect the face in every frame, follow the chosen one, fill frames without a detection from
        their neighbours and smooth the landmarks over time."""
        chosen: list[np.ndarray | None] = []
        previous: np.ndarray | None = None
        shape = None
        bs = self.args.batch_size
        chunk: list[np.ndarray] = []
        with self.bar(0, f"tracking {path.name}", "frame") as bar:

            def flush() -> None:
                nonlocal previous
                for found in self.detect(chunk):
                    if previous is None:
                        det = found[index] if len(found) > index else None
                    else:  # the detection nearest to the face followed so far
                        det = min(found, key=lambda d: np.linalg.norm(_center(d) - previous), default=None)
                    chosen.append(None if det is None else det.landmarks)
                    if det is not None:
                        previous = _center(det)
                bar.update(len(chunk))
                chunk.clear()

            for frame in _frames(path):
                shape = frame.shape if shape is None else shape
                chunk.append(frame)
                if len(chunk) == bs:
                    flush()
            if chunk:
                flush()
        if shape is None:
            raise TransferError(f"{path}: cannot read the video (no frames)")
        found = [k for k, lm in enumerate(chosen) if lm is not None]
        if not found:
            if index > 0:
                raise TransferError(
                    f"{path}: --face-index {index} asks for face {index + 1}, "
                    "but no frame has that many faces"
                )
            h, w = shape[:2]
            raise TransferError(
                f"no face found in {path} (in none of its {len(chosen)} frames of {w} x {h} pixels)"
            )
        known = np.stack([chosen[k] for k in found])  # [K, 5, 2]
        frames = np.arange(len(chosen))
        flat = known.reshape(len(found), -1)
        filled = np.stack([np.interp(frames, found, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        return Track(_smooth(filled.reshape(len(chosen), 5, 2), self.args.smooth), tuple(shape))

    def run_video(self, job: VideoJob, out_path: Path, done: set[str]) -> None:
        """Write the video ``out_path`` and its quality report (the one of them that is not in ``done``:
        a video whose report is missing is transferred again for the report, and not rewritten)."""
        report_path = out_path.with_suffix(".json")
        reporting = self.reporter is not None and report_path.name not in done
        video_done = out_path.name in done
        s = self.size
        src_video, tgt_video = _kind(job.source) == "video", _kind(job.target) == "video"
        src_key, tgt_key = (job.source, self.source_index), (job.target, self.target_index)
        lengths = [
            len(self.tracks[item].landmarks) for item, v in ((src_key, src_video), (tgt_key, tgt_video)) if v
        ]
        n = min(lengths)
        if tgt_video:
            h, w = self.tracks[tgt_key].frame_shape[:2]
        else:
            tgt_face = self.faces[tgt_key]
            tgt_photo = read_rgb(job.target)
            h, w = tgt_photo.shape[:2]
        if not src_video:
            src_face = self.faces[src_key]
        fps = _fps(job.target if tgt_video else job.source)
        if self.args.crop_only:
            h, w = s, s
        # MPEG-4 frames have even sides: an odd one loses its last row or column
        h2, w2 = h - h % 2, w - w % 2
        src_frames = _frames(job.source, n) if src_video else None
        tgt_frames = _frames(job.target, n) if tgt_video else None
        frame_reports: list[dict] = []
        nan = float("nan")  # a face followed through a video has no detector score of its own
        try:  # the suffix tells OpenCV the container
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{out_path.name}.", suffix=".tmp.mp4", dir=out_path.parent
            )
        except OSError as err:
            raise TransferError(f"{out_path}: cannot write the output ({err.strerror or err})") from None
        os.close(fd)
        tmp = Path(tmp_name)
        writer = None
        if video_done:  # only the report is missing: the frames are transferred again, no video written
            tmp.unlink()
        else:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w2, h2))
        try:
            if writer is not None and not writer.isOpened():
                raise TransferError(f"{out_path}: cannot open an MPEG-4 video writer")
            bs = self.args.batch_size
            with self.bar(n, out_path.name, "frame") as bar:
                for start in range(0, n, bs):
                    count = min(bs, n - start)
                    src_faces, tgt_faces, tgt_items = [], [], []
                    for k in range(start, start + count):
                        if src_video:
                            frame = next(src_frames)
                            landmarks = self.tracks[src_key].landmarks[k]
                            src_faces.append(align_to_template(frame, landmarks, s, score=nan))
                        else:
                            src_faces.append(src_face)
                        if tgt_video:
                            frame = next(tgt_frames)
                            landmarks = self.tracks[tgt_key].landmarks[k]
                            face = align_to_template(frame, landmarks, s, score=nan)
                            tgt_items.append((frame, face.matrix))
                            tgt_faces.append(face)
                        else:
                            tgt_items.append((tgt_photo, tgt_face.matrix))
                            tgt_faces.append(tgt_face)
                    tgt_crops = [f.crop for f in tgt_faces]
                    src_crops = [f.crop for f in src_faces]
                    edited, _ = self.transfer(tgt_crops, src_crops)
                    if reporting:
                        frame_reports += self.reporter.reports(
                            tgt_faces,
                            src_faces,
                            np.stack(tgt_crops),
                            np.stack(src_crops),
                            edited,
                            aus=self.aus,
                            strength=self.args.strength,
                        )
                    if writer is not None:
                        for (frame, matrix), crop in zip(tgt_items, edited):
                            image = crop if self.args.crop_only else paste_face(frame, crop, matrix)
                            writer.write(np.ascontiguousarray(image[:h2, :w2, ::-1]))
                    bar.update(count)
            if writer is not None:
                writer.release()
                if _frame_count(tmp) != n:  # OpenCV's writer does not report failed writes (a full disk)
                    raise TransferError(
                        f"{out_path}: cannot write the output (the video written holds too few frames)"
                    )
                usual_permissions(tmp)
                os.replace(tmp, out_path)
        except BaseException:
            if writer is not None:
                writer.release()
            tmp.unlink(missing_ok=True)
            raise
        if writer is not None:
            self.written.append(out_path)
        if reporting:
            report = {
                "output": out_path.name,
                "target_photo": str(job.target),
                "source_photo": str(job.source),
            }
            report.update(video_report(frame_reports))
            self.write_report(report_path, report)


# ---------------------------------------------------------------------------------------------- --out


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
    )


class OutputFolder:
    """--out: checked before anything runs, locked while written, resumable (see the module docstring).

    ``outputs`` are the job's file names, ``settings`` what decides their pixels."""

    def __init__(self, path: Path, outputs: list[str], settings: dict, ckpt: str, overwrite: bool) -> None:
        self.path = path
        self.outputs = outputs
        self.settings = settings
        self.ckpt = ckpt
        self.overwrite = overwrite
        self._lock: int | None = None
        self.recorded: list[str] = []  # every output the record lists (after `open`)
        self.removed = 0  # temporaries of killed runs removed by `open`

    def check_path(self) -> None:
        """--out is a folder, or can be made one (refused before anything is read)."""
        path = self.path
        if path.exists():
            if not path.is_dir():
                raise TransferError(f"--out {path} exists and is not a folder")
            if not os.access(path, os.W_OK | os.X_OK):
                raise TransferError(f"--out {path}: no permission to write in this folder")
            return
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise TransferError(f"--out {path} cannot be created: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TransferError(f"--out {path} cannot be created: no permission to write in {parent}")

    def record(self) -> dict | None:
        """The record of the earlier runs in --out (None when there is none, or when --overwrite replaces
        one that cannot be read)."""
        path = self.path / RECORD_NAME
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            ok = (
                isinstance(record, dict)
                and record.get("version") == RECORD_VERSION
                and isinstance(record.get("settings"), dict)
                and isinstance(record.get("outputs"), list)
                and all(_plain_name(n) for n in record["outputs"])
            )
            why = "" if ok else "not a record this version writes"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            why = str(err)
        if why:
            if self.overwrite:
                return None
            raise TransferError(
                f"--out {self.path}: cannot read the record {path} of earlier eet-transfer runs ({why}); "
                "pass --overwrite to replace it and redo the outputs"
            )
        return record

    def check(self) -> set[str]:
        """The job's outputs that exist and are kept; refuses what a re-run must not do."""
        if not self.path.is_dir():
            return set()
        existing = [n for n in self.outputs if (self.path / n).exists()]
        record = self.record()
        if self.overwrite:
            return set()
        if record is not None and record["settings"] != self.settings:
            raise TransferError(
                f"--out {self.path} holds eet-transfer outputs made with other settings "
                f"({self._differences(record)}); re-run with those settings to resume or add to them, choose "
                "another --out, or pass --overwrite to delete them and start afresh"
            )
        ours = set(record["outputs"]) if record is not None else set()
        foreign = [n for n in existing if n not in ours]
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise TransferError(
                f"{self.path / foreign[0]} exists{more} and no eet-transfer run recorded in {self.path} wrote it; "
                "pass --overwrite to replace"
            )
        return set(existing)

    def _differences(self, record: dict) -> str:
        old, new = record["settings"], self.settings
        if set(old) != set(new):
            return "a record of another version"
        parts = []
        for key in new:
            if old[key] == new[key]:
                continue
            if key == "ckpt_sha256":
                parts.append(f"another --ckpt ({record.get('ckpt', '?')}, or a file since rewritten)")
                continue
            show = {
                "aus": lambda v: "all" if v is None else " ".join(map(str, v)) or "none",
                "crop_only": lambda v: "on" if v else "off",
                "face_index": lambda v: " ".join(map(str, v)),
            }.get(key, str)
            parts.append(f"--{key.replace('_', '-')} {show(old[key])} there, {show(new[key])} now")
        return "; ".join(parts)

    def open(self) -> set[str]:
        """Make and lock the folder, check it again under the lock, delete what --overwrite replaces and the
        temporaries of killed runs, write the record; the outputs that exist and are kept."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TransferError(f"--out {self.path} cannot be created ({err.strerror or err})") from None
        self._take_lock()
        done = self.check()
        record = self.record()
        recorded = set(record["outputs"]) if record is not None else set()
        if record is not None and record["settings"] != self.settings:  # with --overwrite: start afresh
            for name in sorted(recorded):
                target = self.path / name
                if target.is_file() and not target.is_symlink():
                    target.unlink()
            recorded = set()
        self.removed = self._remove_temporaries(recorded | set(self.outputs))
        self.recorded = sorted(recorded | set(self.outputs))  # this run's outputs and the earlier runs'
        content = {
            "version": RECORD_VERSION,
            "settings": self.settings,
            "ckpt": self.ckpt,
            "outputs": sorted(recorded | set(self.outputs)),
        }
        try:
            write_bytes_atomic(self.path / RECORD_NAME, (json.dumps(content, indent=1) + "\n").encode())
        except OSError as err:
            raise TransferError(
                f"--out {self.path}: cannot write {RECORD_NAME} ({err.strerror or err})"
            ) from None
        return done

    def _remove_temporaries(self, names: set[str]) -> int:
        """Delete the temporaries that killed runs left for these outputs (and for the record); nothing
        else in the folder is touched."""
        removed = 0
        for entry in self.path.iterdir():
            m = _TEMPORARY.match(entry.name)
            ours = m is not None and (m["name"] in names or m["name"] == RECORD_NAME)
            if not ours:
                m = _OLD_VIDEO_TEMPORARY.match(entry.name)
                ours = m is not None and f"{m['stem']}.mp4" in names
            if ours and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise TransferError(
                f"--out {self.path}: another eet-transfer is writing into this folder; wait for it to end or "
                "choose another --out"
            ) from None
        self._lock = fd

    def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None


def _ckpt_sha256(path_str: str, flag: str = "--ckpt") -> str:
    """The checkpoint's (or ONNX file's) SHA-256: which model made the outputs, whatever path it is given by."""
    path = Path(path_str)
    if path.is_dir():
        raise TransferError(
            f"{flag} {path}: is a folder, not a {'model' if flag == '--onnx' else 'checkpoint'} file"
        )
    if not path.is_file():
        raise TransferError(f"{flag} {path}: no such {'ONNX' if flag == '--onnx' else 'checkpoint'} file")
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(9)
        # anything but a checkpoint or exported weights is refused here, before it is hashed or loaded
        # (an ONNX file has no magic bytes: onnxruntime checks it when it loads)
        if flag == "--ckpt" and checkpoint_kind(head) is None:
            what = "an empty file" if not head else "neither a zip archive, a pickle nor a safetensors file"
            raise TransferError(f"--ckpt {path}: not a PyTorch checkpoint file ({what})")
        digest.update(head)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_model(path: str, device: torch.device, compile: bool) -> TransferModel:  # noqa: A002
    """The trained model of any method from its final checkpoint (``compile``: EET's compiled form)."""
    try:
        return load_transfer_model(
            path, map_location=device, what="--ckpt", **({"compile": True} if compile else {})
        )
    except (OSError, ValueError) as err:  # unreadable, unsafe, not ours, the wrong stage
        message = str(err).removeprefix("--ckpt: ")
        raise TransferError(
            f"--ckpt {message}" if message.startswith(path) else f"--ckpt {path}: {message}"
        ) from None
    except TypeError as err:
        if compile and "compile" in str(err):
            raise TransferError(f"--compile: only EET models compile; {path} is another method's") from None
        detail = (str(err).strip().splitlines() or [""])[0]
        raise TransferError(
            f"--ckpt {path}: not a complete eet-lightning checkpoint (TypeError: {detail})"
        ) from None
    except (KeyError, AttributeError, RuntimeError) as err:  # ours, but parts missing or altered
        detail = (str(err).strip().splitlines() or [""])[0]
        raise TransferError(
            f"--ckpt {path}: not a complete eet-lightning checkpoint ({type(err).__name__}: {detail})"
        ) from None


def _load_onnx(path: str, device: torch.device) -> TransferModel:
    """An EET exported to ONNX, run by onnxruntime (CUDA's provider for a CUDA --device)."""
    import onnxruntime

    from eet_lightning.onnx_model import OnnxTransferModel

    providers = None
    if device.type == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            print(
                f"{PROG}: note: this onnxruntime has no CUDA provider (onnxruntime-gpu has); --onnx runs on the CPU"
            )
    try:
        return OnnxTransferModel.load(path, what="--onnx", providers=providers)
    except (OSError, ValueError) as err:
        message = str(err).removeprefix("--onnx: ")
        raise TransferError(
            f"--onnx {message}" if message.startswith(path) else f"--onnx {path}: {message}"
        ) from None


def _check_options(parsed: argparse.Namespace) -> None:
    if (parsed.ckpt is None) == (parsed.onnx is None):
        raise TransferError(
            "give the trained model as --ckpt CKPT (a checkpoint or .safetensors export) or as --onnx FILE "
            "(an ONNX export)" + (", not both" if parsed.ckpt else "")
        )
    if parsed.onnx and parsed.compile:
        raise TransferError("--compile compiles PyTorch networks; an --onnx model runs in onnxruntime")
    if parsed.face_weights and parsed.no_report:
        raise TransferError("--face-weights is for the quality reports, which --no-report turns off")
    if parsed.face_weights and not Path(parsed.face_weights).is_file():
        raise TransferError(f"--face-weights {parsed.face_weights}: no such file")
    if parsed.batch_size < 1:
        raise TransferError(f"--batch-size must be at least 1, got {parsed.batch_size}")
    if len(parsed.face_index) > 2 or min(parsed.face_index) < 0:
        raise TransferError(
            f"--face-index takes one or two values (source's, target's), each 0 (the largest face) or "
            f"more, got {' '.join(map(str, parsed.face_index))}"
        )
    if not 1 <= parsed.smooth <= MAX_SMOOTH:
        raise TransferError(f"--smooth must be from 1 to {MAX_SMOOTH} frames, got {parsed.smooth}")
    s = parsed.strength
    if not (math.isfinite(s) and 0.0 <= s <= MAX_STRENGTH):
        raise TransferError(
            f"--strength must be a number from 0 (the target's own expression) to {MAX_STRENGTH:g} (1: the "
            f"plain swap, above 1: exaggerated), got {s:g}"
        )


def _settings(parsed: argparse.Namespace) -> dict:
    """What decides the pixels of the outputs (not --batch-size, --device or --compile: float rounding)."""
    return {
        "ckpt_sha256": _ckpt_sha256(parsed.onnx, "--onnx") if parsed.onnx else _ckpt_sha256(parsed.ckpt),
        "aus": None if parsed.aus is None else sorted(set(parsed.aus)),
        "strength": float(parsed.strength),
        "crop_only": bool(parsed.crop_only),
        "face_index": [parsed.face_index[0], parsed.face_index[-1]],
        "smooth": int(parsed.smooth),
    }


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TransferError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TransferError(f"--device {name}: CUDA is not available on this machine")
    return device


def _report_removed(folder: OutputFolder) -> None:
    if folder.removed:
        print(
            f"{PROG}: removed {folder.removed} temporary file(s) left in {folder.path} by an interrupted run"
        )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of `eet-transfer`; tests call ``main([...])`` directly."""
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # errors are reported as one line, not ffmpeg logs
    tune_for_cli()  # reuse freed memory (see eet_lightning.runtime)
    folder: OutputFolder | None = None
    try:
        parsed = build_parser().parse_args(args)
        _check_options(parsed)
        device = _device(parsed.device)
        photos, videos, outputs = plan(parsed)
        out_dir = Path(parsed.out)
        media = [p.name for p in outputs]  # the images and videos
        reports = [] if parsed.no_report else [report_name(n) for n in media]
        names = media + reports + ([REPORT_CSV] if reports else [])
        folder = OutputFolder(out_dir, names, {}, "", parsed.overwrite)
        folder.check_path()
        folder.settings = _settings(parsed)
        folder.ckpt = str(Path(parsed.onnx or parsed.ckpt).resolve())
        done = folder.check()
        if len(done) == len(names):
            folder.open()  # removes temporaries a killed run may have left
            _report_removed(folder)
            print(
                f"{PROG}: all {len(media)} output(s) are already in {out_dir} (made with these settings); "
                "nothing to do (--overwrite redoes them)"
            )
            return 0
        if parsed.onnx:
            model = _load_onnx(parsed.onnx, device)
        else:
            model = _load_model(parsed.ckpt, device, parsed.compile)
        try:
            model.check_transfer_options(parsed.aus, parsed.strength)  # checked before any work
        except ValueError as err:
            given = " ".join(map(str, parsed.aus)) if parsed.aus else "(no AUs)"
            raise TransferError(f"--aus {given}: {err}") from None

        def video_todo(job: VideoJob) -> bool:  # its video, or its report, is missing
            name = f"{job.target.stem}_with_{job.source.stem}.mp4"
            return name not in done or (not parsed.no_report and report_name(name) not in done)

        pending = [j for j in videos if video_todo(j)]
        runner = Runner(parsed, model, device)
        runner.prepare(photos, videos, pending)
        done = folder.open()  # nothing is written before this point
        _report_removed(folder)
        kept = [n for n in media if n in done]
        if kept:
            print(
                f"{PROG}: resuming: {len(kept)} of the {len(media)} outputs are already in {out_dir} and are "
                "kept (--overwrite redoes them)"
            )
        runner.run_photos(photos, out_dir, done)
        for job in videos:
            name = f"{job.target.stem}_with_{job.source.stem}.mp4"
            if video_todo(job):
                if job not in pending:  # its output was there a moment ago, so its video was not read
                    raise TransferError(f"{out_dir / name} was deleted while eet-transfer started; re-run it")
                runner.run_video(job, out_dir / name, done)
        # report.csv covers every output recorded in --out (earlier jobs' too) whose report is there
        recorded = [n for n in folder.recorded if n.endswith(".json") and (out_dir / n).is_file()]
        summary = _write_csv(out_dir, recorded) if reports else None
    except (TransferError, ValueError, OSError) as err:
        if os.environ.get("EET_DEBUG"):
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if folder is not None:
            folder.close()
    skipped = f" (kept {len(kept)} that were already there)" if kept else ""
    print(f"{PROG}: wrote {len(runner.written)} file(s) to {out_dir}{skipped}")
    if summary is not None:
        print(f"{PROG}: {summary}")
    warning = QualityReporter.model_warning_for(model)
    if warning:
        print(f"{PROG}: warning: {warning}")
    return 0


def _write_csv(out_dir: Path, names: list[str]) -> str:
    """Gather the job's JSON reports into report.csv; the summary of their warnings."""
    reports = []
    for name in names:
        path = out_dir / name
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TransferError(
                f"{path}: cannot read the quality report ({err}); delete it and re-run to redo it"
            ) from None
    try:
        write_bytes_atomic(out_dir / REPORT_CSV, reports_csv(reports).encode())
    except OSError as err:
        raise TransferError(f"{out_dir / REPORT_CSV}: cannot write ({err.strerror or err})") from None
    kinds = warning_kinds(reports)
    kinds.pop("synthetic-only model", None)  # said once, on the last line
    flagged = sum(
        1 for r in reports if any(not w.startswith("synthetic-only model") for w in r.get("warnings") or [])
    )
    detail = f" ({', '.join(f'{k} {v}' for k, v in kinds.items())})" if kinds else ""
    return (
        f"quality: {flagged} of {len(reports)} output(s) with warnings{detail}; "
        f"reports: {out_dir / REPORT_CSV} and one .json per output"
    )


if __name__ == "__main__":
    sys.exit(main())
