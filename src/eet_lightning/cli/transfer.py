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
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # errors are reported as one line, not ffmpeg logs

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from eet_lightning.data.faces import Detection, FaceAligner, FaceAlignment, align_to_template, warp_back  # noqa: E402
from eet_lightning.data.images import (  # noqa: E402
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    read_rgb,
    usual_permissions,
    write_image_atomic,
)
from eet_lightning.model import EETModel  # noqa: E402
from eet_lightning.runtime import tune_for_cli  # noqa: E402

PROG = "eet-transfer"
# The pasted region in unit crop coordinates: an ellipse around the template's face (eyes at y 0.44, mouth
# at y 0.73, eye distance 0.25), fading to zero over its outer quarter so that no seam shows.
MASK_CENTER = (0.5, 0.54)
MASK_AXES = (0.32, 0.40)
MASK_FEATHER = 0.25


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
    p.add_argument("--ckpt", required=True, help="stage-2 checkpoint (e.g. runs/synthetic/stage2/last.ckpt)")
    p.add_argument("--source", help="photo, video or folder whose expressions are transferred")
    p.add_argument("--target", help="photo, video or folder that receives them")
    p.add_argument("--pairs", help="CSV with columns source,target (paths relative to the CSV's folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--crop-only", action="store_true", help="write the aligned crops, not the whole photos")
    p.add_argument(
        "--aus", type=int, nargs="*", help="move only these AUs (selective transfer), e.g. 12 25 26"
    )
    p.add_argument(
        "--strength", type=float, default=1.0, help="0 keeps the own expression, 1 swaps, >1 exaggerates"
    )
    p.add_argument(
        "--face-index",
        type=int,
        nargs="+",
        default=[0],
        metavar="K",
        help="which face when there are several (0: the largest); two values: the source's, then the target's",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=8, help="pairs or frames per forward pass")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks (EETModel.compile_for_inference): each batch shape compiles first "
        "(seconds), then batches run faster; for long videos and many pairs; needs a C++ compiler",
    )
    p.add_argument("--smooth", type=int, default=5, help="video: frames averaged for the face box (1: none)")
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
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
        )
        if not found:
            raise TransferError(f"--{role} {path}: the folder holds no images or videos")
        return found
    if not path.is_file():
        raise TransferError(f"--{role} {path}: no such file or folder")
    _kind(path)
    return [path]


def _pairs_csv(path_str: str) -> list[tuple[Path, Path]]:
    path = Path(path_str)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TransferError(f"--pairs {path}: cannot read the CSV ({err})") from None
    if not rows or not {"source", "target"} <= set(rows[0]):
        raise TransferError(f"--pairs {path}: expected a header line 'source,target' and at least one row")
    out = []
    for k, row in enumerate(rows, start=2):
        pair = []
        for col in ("source", "target"):
            value = (row.get(col) or "").strip()
            p = Path(value) if Path(value).is_absolute() else path.parent / value
            if not value or not p.is_file():
                raise TransferError(f"--pairs {path}, line {k}: {col} file not found: {value or '(empty)'}")
            _kind(p)
            pair.append(p)
        out.append((pair[0], pair[1]))
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


def _pick(found: list[Detection], index: int, path: Path) -> Detection:
    if not found:
        raise TransferError(f"no face found in {path}")
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
    def __init__(self, args: argparse.Namespace, model: EETModel, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.model = model
        self.size = model.arch.image_size
        self.aligner = FaceAligner(size=self.size, device=str(device))
        self.aus = args.aus
        self.written: list[Path] = []
        self.source_index, self.target_index = args.face_index[0], args.face_index[-1]

    def bar(self, total: int, desc: str, unit: str) -> tqdm:
        return tqdm(
            total=total, desc=f"{PROG}: {desc}", unit=unit, disable=self.args.no_progress, file=sys.stderr
        )

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """MTCNN on CPU runs on one thread: its many small convolutions gain nothing from more, and lose a
        lot when the cores are busy (6 frames of 256 px: 0.3 s on one thread, 5.2 s on two busy cores)."""
        if self.device.type != "cpu":
            return self.aligner.detect_batch(images)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.aligner.detect_batch(images)
        finally:
            torch.set_num_threads(threads)

    def transfer(self, a: list[np.ndarray], b: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out_a, out_b = self.model.transfer(
            np.stack(a), np.stack(b), aus=self.aus, strength=self.args.strength
        )
        return out_a, out_b

    # ---- finding faces (everything that can fail on the inputs happens here, before any output)

    def prepare(self, pairs: list[PhotoPair], videos: list[VideoJob]) -> None:
        src, tgt = self.source_index, self.target_index
        photos = {item for pair in pairs for item in ((pair.a, tgt), (pair.b, src))}
        clips: set[tuple[Path, int]] = set()
        for job in videos:
            for item in ((job.source, src), (job.target, tgt)):
                (clips if _kind(item[0]) == "video" else photos).add(item)
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
                    det = _pick(found, index, path)
                    faces[path, index] = align_to_template(
                        image, det.landmarks, self.size, det.box, det.score
                    )
                bar.update(len(chunk))
        return faces

    # ---- photos

    def run_photos(self, pairs: list[PhotoPair], out_dir: Path) -> None:
        if not pairs:
            return
        bs, src, tgt = self.args.batch_size, self.source_index, self.target_index
        faces = {
            "a": {p.a: self.faces[p.a, tgt] for p in pairs},
            "b": {p.b: self.faces[p.b, src] for p in pairs},
        }
        with self.bar(len(pairs), "photos", "pair") as bar:
            for start in range(0, len(pairs), bs):
                chunk = pairs[start : start + bs]
                out_a, out_b = self.transfer(
                    [faces["a"][p.a].crop for p in chunk], [faces["b"][p.b].crop for p in chunk]
                )
                for pair, ea, eb in zip(chunk, out_a, out_b):
                    self.write_photo(
                        out_dir / f"{pair.a.stem}_with_{pair.b.stem}.png", pair.a, faces["a"][pair.a], ea
                    )
                    if pair.a.resolve() != pair.b.resolve():
                        self.write_photo(
                            out_dir / f"{pair.b.stem}_with_{pair.a.stem}.png", pair.b, faces["b"][pair.b], eb
                        )
                bar.update(len(chunk))

    def write_photo(self, path: Path, photo_path: Path, face: FaceAlignment, edited: np.ndarray) -> None:
        image = edited if self.args.crop_only else paste_face(read_rgb(photo_path), edited, face.matrix)
        write_image_atomic(path, image)
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
            raise TransferError(f"no face found in {path}")
        known = np.stack([chosen[k] for k in found])  # [K, 5, 2]
        frames = np.arange(len(chosen))
        flat = known.reshape(len(found), -1)
        filled = np.stack([np.interp(frames, found, flat[:, j]) for j in range(flat.shape[1])], axis=1)
        return Track(_smooth(filled.reshape(len(chosen), 5, 2), self.args.smooth), tuple(shape))

    def run_video(self, job: VideoJob, out_path: Path) -> None:
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
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".mp4", dir=out_path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w2, h2))
        try:
            if not writer.isOpened():
                raise TransferError(f"{out_path}: cannot open an MPEG-4 video writer")
            bs = self.args.batch_size
            with self.bar(n, out_path.name, "frame") as bar:
                for start in range(0, n, bs):
                    count = min(bs, n - start)
                    src_crops, tgt_crops, tgt_items = [], [], []
                    for k in range(start, start + count):
                        if src_video:
                            frame = next(src_frames)
                            src_crops.append(
                                align_to_template(frame, self.tracks[src_key].landmarks[k], s).crop
                            )
                        else:
                            src_crops.append(src_face.crop)
                        if tgt_video:
                            frame = next(tgt_frames)
                            face = align_to_template(frame, self.tracks[tgt_key].landmarks[k], s)
                            tgt_items.append((frame, face.matrix))
                            tgt_crops.append(face.crop)
                        else:
                            tgt_items.append((tgt_photo, tgt_face.matrix))
                            tgt_crops.append(tgt_face.crop)
                    edited, _ = self.transfer(tgt_crops, src_crops)
                    for (frame, matrix), crop in zip(tgt_items, edited):
                        image = crop if self.args.crop_only else paste_face(frame, crop, matrix)
                        writer.write(np.ascontiguousarray(image[:h2, :w2, ::-1]))
                    bar.update(count)
            writer.release()
            usual_permissions(tmp)
            os.replace(tmp, out_path)
        except BaseException:
            writer.release()
            tmp.unlink(missing_ok=True)
            raise
        self.written.append(out_path)


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


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of `eet-transfer`; tests call ``main([...])`` directly."""
    tune_for_cli()  # reuse freed memory (see eet_lightning.runtime)
    try:
        parsed = build_parser().parse_args(args)
        if parsed.batch_size < 1:
            raise TransferError(f"--batch-size must be at least 1, got {parsed.batch_size}")
        if len(parsed.face_index) > 2 or min(parsed.face_index) < 0:
            raise TransferError(
                f"--face-index takes one or two values (source's, target's), each 0 (the largest face) or "
                f"more, got {' '.join(map(str, parsed.face_index))}"
            )
        if parsed.smooth < 1:
            raise TransferError(f"--smooth must be at least 1 frame, got {parsed.smooth}")
        photos, videos, outputs = plan(parsed)
        out_dir = Path(parsed.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise TransferError(f"--out {out_dir} exists and is not a folder")
        existing = [p for p in outputs if p.exists()]
        if existing and not parsed.overwrite:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise TransferError(f"{existing[0]} exists{more}; pass --overwrite to replace")
        device = _device(parsed.device)
        model = EETModel.load_from_checkpoint(parsed.ckpt, map_location=device, compile=parsed.compile)
        model.branch_weights(parsed.aus, parsed.strength)  # AU list and strength checked before any work
        runner = Runner(parsed, model, device)
        runner.prepare(photos, videos)
        out_dir.mkdir(parents=True, exist_ok=True)
        runner.run_photos(photos, out_dir)
        for job in videos:
            runner.run_video(job, out_dir / f"{job.target.stem}_with_{job.source.stem}.mp4")
    except (TransferError, ValueError, OSError) as err:
        if os.environ.get("EET_DEBUG"):
            raise
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{PROG}: wrote {len(runner.written)} file(s) to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
