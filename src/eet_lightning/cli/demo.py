"""`eet-demo`: a local web page (Gradio) for trying a trained model on photos, a video and synthetic pairs.

eet-demo --ckpt runs/synthetic/stage2/last.ckpt                 # then open http://127.0.0.1:7860
eet-demo --ckpt CKPT --port 8080 --host 0.0.0.0 --face-weights 20180402-114759-vggface2.pt

The page takes a source photo (whose expression is transferred) and a target photo (which receives it), or
a source video, and shows the target photo with the source's expression pasted back (the `eet-transfer`
pipeline: MTCNN, alignment to the training crop, the model, the inverse warp), the aligned crops, a bar
chart of the AU intensities the model reads on the source, the target and the result, and the quality
report of the transfer (`eet_lightning.quality`). A model trained on the built-in synthetic faces also gets a
"Random synthetic pair" button: two held-out synthetic faces, the model's swap and the exact true swap.
See docs/demo.md.

Problems with the inputs (no face, an unreadable upload, a missing photo) are shown in the page and the
server keeps serving; problems with the command (a bad --ckpt, --port or --face-weights, a port in use)
end it before it serves, with one line ``eet-demo: error: ...`` and exit status 2.

`build_demo` returns the page as a ``gr.Blocks`` for a test or a notebook to launch; `DemoApp` holds the
handlers, which tests call directly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from eet_lightning.data.faces import Detection, FaceAligner, FaceAlignment, align_to_template
from eet_lightning.data.images import VIDEO_SUFFIXES, read_rgb
from eet_lightning.methods.inference import TransferModel, check_strength
from eet_lightning.runtime import configure_process, tune_for_cli

PROG = "eet-demo"
MAX_PAGE_STRENGTH = 1.5  # the slider's end (the model takes up to MAX_STRENGTH = 2)
DISPLAY_SIDE = 192  # crops are shown at least this large (nearest-neighbour: the model's pixels stay visible)
# System fonts only: the page loads nothing from outside the machine.
FONTS = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")
CSS = """
#demo-message { border: 2px solid #dc2626; border-radius: 8px; padding: 4px 12px; background: #fef2f2; }
#model-warning { border: 2px solid #d97706; border-radius: 8px; padding: 4px 12px; background: #fffbeb; }
#model-warning p, #demo-message p { margin: 4px 0; }
"""
log = logging.getLogger(__name__)


class DemoError(Exception):
    """A problem with the command (printed as one line, exit status 2)."""


class PageError(Exception):
    """A problem with the inputs of one request: shown in the page, the server keeps serving."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit status 2 like every other error, no usage
        raise DemoError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="A local web page for expression transfer with a trained model (Gradio).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1].split("\n\n", 1)[0],
    )
    p.add_argument(
        "--ckpt", required=True, help="the trained model: any method's final checkpoint or eet-export weights"
    )
    p.add_argument("--port", type=_port, default=7860, help="the port the page is served on (default 7860)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)",
    )
    p.add_argument(
        "--face-weights",
        help="facenet-pytorch InceptionResnetV1 weights (state dict) for the identity similarity of the "
        "quality report; without it the model's own identity classifier is used where it has one",
    )
    p.add_argument(
        "--examples",
        help="a folder of photos to pick the source and the target from (besides uploading them)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    return p


MAX_EXAMPLES = 48  # photos listed under each input (the first ones of --examples, by name)


def example_photos(folder: str | Path) -> list[Path]:
    """The photos of ``folder`` (--examples), by name, at most `MAX_EXAMPLES`; DemoError when there are
    none or it is no folder."""
    from eet_lightning.data.images import IMAGE_SUFFIXES

    path = Path(folder)
    if not path.is_dir():
        raise DemoError(f"--examples {path}: {'not a folder' if path.exists() else 'no such folder'}")
    found = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not found:
        raise DemoError(f"--examples {path}: the folder holds no photos ({' '.join(sorted(IMAGE_SUFFIXES))})")
    return found[:MAX_EXAMPLES]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, got {port}")
    return port


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Unreadable:
    """What an upload that is no readable image turns into (the handler shows ``message``)."""

    message: str


@dataclass
class TransferView:
    """What the page shows after a transfer. ``message``: an error (everything else empty) or None."""

    message: str | None = None
    result: np.ndarray | None = None  # the target photo with the source's expression
    crops: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # source, target, result (aligned)
    chart: Any = None  # matplotlib Figure of the AU intensities, or None
    chart_note: str = ""
    report: str = ""  # Markdown
    model_warning: str | None = None
    video: str | None = None  # the output as VP8 WebM, which browsers play (video source)
    video_file: str | None = None  # the mp4 eet-transfer wrote, to download


@dataclass
class SyntheticView:
    """What the page shows for a random synthetic pair."""

    message: str | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)  # source, target, swap, truth
    errors: str = ""  # Markdown: L1 against the truth
    chart: Any = None
    chart_note: str = ""
    report: str = ""
    seed: int | None = None
    truth_name: str = "true swap"  # "true result" (selected AUs), "reference" (strength other than 1)


# ---------------------------------------------------------------------------------------------- figures


def au_chart(numbers: Sequence[int], series: dict[str, Sequence[float]], max_intensity: float = 5.0) -> Any:
    """A grouped bar chart of AU intensities (one group per AU, one bar per series): a matplotlib Figure
    (not pyplot's: nothing global is kept)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(numbers))
    colors = {"source": "#2563eb", "target": "#9ca3af", "result": "#ea580c", "source (label)": "#111827"}
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(
            x + (k - (len(series) - 1) / 2) * width,
            np.asarray(values, dtype=float),
            width,
            label=name,
            color=colors.get(name),
        )
    ax.set_xticks(x, [f"AU{n}" for n in numbers], fontsize=8)
    ax.set_ylim(0, max_intensity)
    ax.set_ylabel("intensity")
    ax.legend(fontsize=8, ncols=len(series), loc="upper right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def _enlarge(image: np.ndarray) -> np.ndarray:
    """A small crop enlarged by a whole factor (nearest neighbour) to at least DISPLAY_SIDE pixels."""
    factor = max(1, math.ceil(DISPLAY_SIDE / image.shape[0]))
    if factor == 1:
        return image
    return cv2.resize(
        image, (image.shape[1] * factor, image.shape[0] * factor), interpolation=cv2.INTER_NEAREST
    )


# ---------------------------------------------------------------------------------------------- the app


class DemoApp:
    """The page's handlers around one model. ``ckpt``: the model's file (for source videos, which go
    through `eet-transfer`, and for the synthetic faces' settings); ``face_weights``: FaceNet weights for
    the quality report; ``aligner``: a `FaceAligner` to share (one is made otherwise)."""

    def __init__(
        self,
        model: TransferModel,
        ckpt: str | Path | None = None,
        face_weights: str | Path | None = None,
        aligner: FaceAligner | None = None,
    ) -> None:
        from eet_lightning.quality import QualityReporter  # ScorerError (a ValueError) for bad weights

        self.model = model
        self.ckpt = None if ckpt is None else Path(ckpt)
        self.size = int(model.image_size)
        self.aligner = aligner or FaceAligner(size=self.size, device=str(model.device))
        self.reporter = QualityReporter(model, face_weights=face_weights)
        self.face_weights = face_weights  # for source videos' reports (eet-transfer --face-weights)
        self._lock = threading.Lock()  # one computation at a time: torch's thread count is process-wide
        self._data: Any = None
        self._workdir = tempfile.TemporaryDirectory(prefix="eet-demo-")

    # ---- what the model offers

    @property
    def synthetic(self) -> bool:
        return (getattr(self.model, "training_data", None) or {}).get("kind") == "synthetic"

    @property
    def selectable(self) -> bool:
        """Whether the model moves chosen AUs only (EET with one branch per AU, GANimation)."""
        if not self.model.selective or len(self.model.aus) < 2:
            return False
        try:
            self.model.check_transfer_options(self.model.aus[:1], 1.0)
        except ValueError:  # e.g. EET-Single: one branch for all AUs
            return False
        return True

    def description(self) -> str:
        m, data = self.model, getattr(self.model, "training_data", None) or {}
        method = m.method or type(m).__name__
        where = f" (`{self.ckpt.name}`)" if self.ckpt is not None else ""
        trained = data.get("dataset", "unknown")
        aus = ", ".join(str(a) for a in m.aus) if m.aus else "none"
        return (
            f"**Model**: {method}{where}, {self.size} x {self.size} px crops, trained on *{trained}*; "
            f"AUs {aus}."
        )

    # ---- options

    def _options(self, aus: Sequence[Any] | None, strength: Any) -> tuple[list[int] | None, float]:
        try:
            strength = float(strength if strength is not None else 1.0)
        except (TypeError, ValueError):
            raise PageError(f"the strength must be a number from 0 to {MAX_PAGE_STRENGTH:g}") from None
        try:
            strength = check_strength(strength)
        except ValueError as err:
            raise PageError(str(err)) from None
        chosen: list[int] | None = None
        if aus is not None and self.selectable:
            chosen = sorted({int(a) for a in aus})
            if set(chosen) == set(self.model.aus):
                chosen = None  # every AU: the plain transfer
        try:
            self.model.check_transfer_options(chosen, strength)
        except ValueError as err:
            raise PageError(str(err)) from None
        return chosen, strength

    @staticmethod
    def _face_index(value: Any, role: str) -> int:
        try:
            index = float(value if value is not None else 0)
        except (TypeError, ValueError):
            raise PageError(f"the {role} face index must be a whole number (0: the largest face)") from None
        if not (math.isfinite(index) and index >= 0 and index == int(index)):
            raise PageError(f"the {role} face index must be 0 (the largest face) or more, got {value}")
        return int(index)

    # ---- faces

    def _detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """MTCNN on each image (largest face first); images too small for its smallest face have none.
        On the CPU on one thread, as eet-transfer does (its many small convolutions gain nothing)."""
        found: list[list[Detection]] = [[] for _ in images]
        min_side = int(self.aligner.mtcnn.min_face_size)

        def usable(im: np.ndarray) -> bool:
            h, w = im.shape[:2]
            return min(h, w) * min(1.0, self.aligner.max_detect_side / float(max(h, w))) >= min_side

        keep = [k for k, im in enumerate(images) if usable(im)]
        if not keep:
            return found
        threads = torch.get_num_threads()
        if self.model.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            for k, dets in zip(keep, self.aligner.detect_batch([images[k] for k in keep]), strict=True):
                found[k] = dets
        finally:
            torch.set_num_threads(threads)
        return found

    def _pick(self, found: list[Detection], index: int, role: str, image: np.ndarray) -> Detection:
        if not found:
            h, w = image.shape[:2]
            small = int(self.aligner.mtcnn.min_face_size)
            hint = f"; a face needs at least {small} x {small} pixels" if min(h, w) < small else ""
            raise PageError(
                f"no face found in the {role} photo ({w} x {h} pixels{hint}); upload a photo with a clearly "
                "visible face"
            )
        if index >= len(found):
            raise PageError(
                f"the {role} face index {index} asks for face {index + 1}, but the {role} photo has "
                f"{len(found)} face(s) (0 is the largest)"
            )
        return found[index]

    @staticmethod
    def _image(value: Any, role: str) -> np.ndarray:
        if value is None:
            raise PageError(f"upload a {role} photo")
        if isinstance(value, Unreadable):
            raise PageError(f"the {role} photo: {value.message}")
        if isinstance(value, (str, Path)):
            try:
                return read_rgb(value)
            except (OSError, ValueError) as err:
                raise PageError(f"the {role} photo cannot be read as an image ({err})") from None
        image = np.asarray(value)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
            raise PageError(f"the {role} photo is not an image")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image[:, :, :3])

    # ---- photo transfer

    def transfer(
        self,
        source: Any,
        target: Any,
        aus: Sequence[Any] | None = None,
        strength: Any = 1.0,
        source_face: Any = 0,
        target_face: Any = 0,
        source_video: str | None = None,
    ) -> TransferView:
        """The target photo with the source's expression (or, with ``source_video``, the target performing
        the video); errors come back as ``TransferView(message=...)``, never raised."""
        try:
            with self._lock:
                if source_video:
                    return self._video(source_video, target, aus, strength, source_face, target_face)
                return self._photos(source, target, aus, strength, source_face, target_face)
        except PageError as err:
            return TransferView(message=str(err))
        except Exception as err:  # noqa: BLE001 - the page shows a message, the server keeps serving
            log.exception("eet-demo: the transfer failed")
            return TransferView(message=f"the transfer failed ({type(err).__name__}: {err})")

    def _photos(self, source, target, aus, strength, source_face, target_face) -> TransferView:
        if source is None and target is None:
            raise PageError("upload a source photo (its expression is transferred) and a target photo")
        src_img, tgt_img = self._image(source, "source"), self._image(target, "target")
        chosen, strength = self._options(aus, strength)
        s_index, t_index = self._face_index(source_face, "source"), self._face_index(target_face, "target")
        found = self._detect([src_img, tgt_img])
        s_det = self._pick(found[0], s_index, "source", src_img)
        t_det = self._pick(found[1], t_index, "target", tgt_img)
        src = align_to_template(src_img, s_det.landmarks, self.size, s_det.box, s_det.score)
        tgt = align_to_template(tgt_img, t_det.landmarks, self.size, t_det.box, t_det.score)
        out, _ = self.model.transfer(tgt.crop[None], src.crop[None], aus=chosen, strength=strength)
        from eet_lightning.cli.transfer import paste_face

        result = paste_face(tgt_img, out[0], tgt.matrix)
        view = TransferView(result=result, crops=(src.crop, tgt.crop, out[0]))
        view.model_warning = self.reporter.model_warning(photographs=True)
        self._report(view, ([tgt], [src]), (tgt.crop[None], src.crop[None], out), chosen, strength, True)
        return view

    def _report(
        self,
        view: TransferView | SyntheticView,
        faces: tuple[list[FaceAlignment | None], list[FaceAlignment | None]],
        crops: tuple[np.ndarray, np.ndarray, np.ndarray],
        aus: list[int] | None,
        strength: float,
        photographs: bool,
        labels: Sequence[float] | None = None,
    ) -> None:
        """The quality report of one output (target, source, result crops) as Markdown on ``view``, with
        the bar chart of the AUs it holds (and the source's true intensities, ``labels``, when known)."""
        from eet_lightning.quality import format_report

        targets, sources = faces
        report = self.reporter.reports(
            targets=targets,
            sources=sources,
            target_crops=crops[0],
            source_crops=crops[1],
            result_crops=crops[2],
            aus=aus,
            strength=strength,
            photographs=photographs,
        )[0]
        view.report = format_report(report)
        values = report.get("aus")
        if values is None:
            view.chart_note = (
                f"No AU chart: this model ({self.model.method or type(self.model).__name__}) reads no AU "
                "intensities."
            )
            return
        series = {k: values[k] for k in ("source", "target", "result")}
        if labels is not None:
            series["source (label)"] = [float(v) for v in labels]
        view.chart = au_chart(values["numbers"], series, float(self.model.max_intensity))

    # ---- video source

    def _video(self, video, target, aus, strength, source_face, target_face) -> TransferView:
        """The target photo performing the source video: `eet-transfer` into a fresh folder."""
        if self.ckpt is None:
            raise PageError("video transfer needs the model's checkpoint file (start the demo with --ckpt)")
        suffix = Path(str(video)).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            raise PageError(
                f"the source video must be one of {' '.join(sorted(VIDEO_SUFFIXES))}, got {suffix or 'no suffix'}"
            )
        tgt_img = self._image(target, "target")
        chosen, strength = self._options(aus, strength)
        s_index, t_index = self._face_index(source_face, "source"), self._face_index(target_face, "target")
        work = Path(self._workdir.name)
        for old in work.iterdir():  # only the latest video is kept
            shutil.rmtree(old, ignore_errors=True)
        job = Path(tempfile.mkdtemp(dir=work))
        (job / "in").mkdir()
        source_path = job / "in" / f"source{suffix}"
        shutil.copyfile(video, source_path)
        target_path = job / "in" / "target.png"
        cv2.imwrite(str(target_path), np.ascontiguousarray(tgt_img[:, :, ::-1]))
        args = ["--ckpt", str(self.ckpt), "--source", str(source_path), "--target", str(target_path)]
        args += ["--out", str(job / "out"), "--strength", f"{strength:g}", "--no-progress"]
        args += ["--face-index", str(s_index), str(t_index), "--device", str(self.model.device)]
        if chosen is not None:
            args += ["--aus", *map(str, chosen)]
        if self.face_weights:
            args += ["--face-weights", str(self.face_weights)]
        from eet_lightning.cli.transfer import main as transfer_main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = transfer_main(args)
        if code != 0:
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
            message = lines[-1] if lines else f"eet-transfer ended with status {code}"
            message = message.removeprefix("eet-transfer: error: ")
            raise PageError(
                message.replace(str(source_path), "the source video").replace(
                    str(target_path), "the target photo"
                )
            )
        result = job / "out" / "target_with_source.mp4"
        view = TransferView(video=str(playable_copy(result)), video_file=str(result))
        view.model_warning = self.reporter.model_warning(photographs=True)
        from eet_lightning.quality import format_report

        report_path = result.with_suffix(".json")  # eet-transfer's report over the frames
        view.report = (
            format_report(json.loads(report_path.read_text()))
            if report_path.is_file()
            else "Video transfer: no quality report was written."
        )
        view.chart_note = "No AU chart for videos."
        return view

    # ---- synthetic pairs

    def _synthetic_data(self) -> Any:
        """The synthetic faces the model was trained with (their settings from the checkpoint; the
        defaults at the model's size for exported weights, which do not carry them)."""
        if self._data is not None:
            return self._data
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        from eet_lightning.datamodules import SyntheticDataModule

        settings: dict[str, Any] = {}
        if self.ckpt is not None:
            from eet_lightning.checkpoint_io import load_checkpoint

            ckpt = load_checkpoint(self.ckpt, "--ckpt")
            found = ckpt.get("datamodule_hyper_parameters") if isinstance(ckpt, dict) else None
            if isinstance(found, dict):
                settings = {k: v for k, v in found.items() if k != "cache_dir"}
        settings.update(image_size=self.size, cache_dir=None, aus=list(self.model.aus) or None)
        if settings["aus"] is None:
            settings.pop("aus")
        try:
            self._data = SyntheticDataModule(**settings)
        except (TypeError, ValueError):  # settings of another version: the defaults at the model's size
            self._data = SyntheticDataModule(image_size=self.size, cache_dir=None)
        return self._data

    def synthetic_pair(self, aus: Sequence[Any] | None = None, strength: Any = 1.0, seed: int | None = None):
        """Two held-out synthetic faces (a random ``seed`` when None), the model's swap on their crops and
        the exact true swap. Errors come back as ``SyntheticView(message=...)``."""
        try:
            with self._lock:
                return self._synthetic(aus, strength, secrets.randbelow(2**31) if seed is None else int(seed))
        except PageError as err:
            return SyntheticView(message=str(err))
        except Exception as err:  # noqa: BLE001
            log.exception("eet-demo: the synthetic pair failed")
            return SyntheticView(message=f"the synthetic pair failed ({type(err).__name__}: {err})")

    def _synthetic(self, aus, strength, seed: int) -> SyntheticView:
        if not self.synthetic:
            raise PageError("synthetic pairs are for models trained on the built-in synthetic faces")
        from eet_lightning.aus import DISFA_AUS
        from eet_lightning.data.synthetic import MAX_INTENSITY
        from eet_lightning.datamodules.synthetic import render_records
        from eet_lightning.evaluation.synthetic import image_errors
        from eet_lightning.pixels import to_model_range

        chosen, strength = self._options(aus, strength)
        data = self._synthetic_data()
        held = data.held_out_pairs(1, seed=seed)  # as the scoring does: A the target, B the source
        target, source = held["a"], held["b"]
        ra, rb = held["records_a"], held["records_b"]
        plain = chosen is None and strength == 1.0
        if plain:  # the exact true swap: A rendered with B's AUs and gaze
            truth, region_from = held["truth_a"], held["aus_only_a"]
            truth_name = "true swap"
        else:  # A rendered with the chosen AUs moved by the strength, its own gaze
            cols = [DISFA_AUS.index(a) for a in (chosen if chosen is not None else self.model.aus)]
            moved = ra.aus.copy()
            moved[:, cols] = np.clip(
                ra.aus[:, cols] + strength * (rb.aus[:, cols] - ra.aus[:, cols]), 0.0, MAX_INTENSITY
            )
            truth = render_records(ra, self.size, aus=moved)
            region_from = truth
            truth_name = "true result" if strength == 1.0 else "reference"
        swap, _ = self.model.transfer(target, source, aus=chosen, strength=strength)
        mask = torch.from_numpy(np.any(target != region_from, axis=-1))
        t = to_model_range(truth)
        rows = []
        for name, images in (("model's swap", swap), ("the target unchanged", target)):
            e = image_errors(to_model_range(images), t, mask)
            region = float(e["au_region_l1"][0])
            rows.append(
                f"| {name} | {float(e['whole_l1'][0]):.4f} | "
                + ("-" if math.isnan(region) else f"{region:.4f}")
                + " |"
            )
        setting = (
            "plain swap"
            if plain
            else f"AUs {'all' if chosen is None else ' '.join(map(str, chosen)) or 'none'}, "
            f"strength {strength:g}; the {truth_name} is the target rendered with those AU intensities "
            "moved that far toward the source's"
        )
        errors = "\n".join(
            [
                f"Held-out identities, seed {seed} ({setting}). L1 against the {truth_name} "
                "(pixel units 0-1; AU region: where the expression changes the face):",
                "",
                "| | whole image | AU region |",
                "|---|---|---|",
                *rows,
            ]
        )
        view = SyntheticView(
            images={"source": source[0], "target": target[0], "swap": swap[0], "truth": truth[0]},
            errors=errors,
            seed=seed,
            truth_name=truth_name,
        )
        labels = rb.aus[0, data.au_columns] if list(data.aus) == list(self.model.aus) else None
        self._report(view, ([None], [None]), (target, source, swap), chosen, strength, False, labels)
        return view

    def close(self) -> None:
        self._workdir.cleanup()


# ---------------------------------------------------------------------------------------------- the page


def playable_copy(video: Path) -> Path:
    """A VP8 WebM copy of an mp4 written by eet-transfer, for the page: OpenCV writes mp4 as MPEG-4 Part 2,
    which browsers do not decode, and this machine may have no ffmpeg to convert it; OpenCV's own FFmpeg
    writes VP8, which they do. The mp4 itself when the WebM cannot be written."""
    out = video.with_suffix(".webm")
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"VP80"), fps, (w, h))
    frames = 0
    try:
        if not writer.isOpened():
            return video
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            writer.write(frame)
            frames += 1
    finally:
        writer.release()
        cap.release()
    if not frames or not out.is_file():
        out.unlink(missing_ok=True)
        return video
    return out


@cache
def _photo_class() -> type:
    """gr.Image whose unreadable uploads reach the handler as `Unreadable` instead of failing in Gradio
    (where the page would only say "Error")."""
    import gradio as gr
    import gradio.component_meta as meta

    # Gradio's component metaclass writes a type stub (demo.pyi) beside the module that defines a component
    # class: into the installed package, which may not be writable and must not change. Not for this one.
    write_stub = meta.create_or_modify_pyi
    meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:

        class Photo(gr.Image):
            is_template = True  # drawn by the frontend's Image component

            def preprocess(self, payload: Any) -> Any:
                try:
                    return super().preprocess(payload)
                except Exception as err:  # noqa: BLE001 - PIL's many ways of saying "not an image"
                    name = getattr(payload, "orig_name", None) or "the upload"
                    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    return Unreadable(f"{name} is not a readable image ({detail})")

    finally:
        meta.create_or_modify_pyi = write_stub
    return Photo


def _theme() -> Any:
    import gradio as gr

    return gr.themes.Default(primary_hue="orange", font=FONTS, font_mono=MONO_FONTS)


@cache
def _blocks_class() -> type:
    """gr.Blocks that launches with the demo's theme and style and without a share link unless told."""
    import gradio as gr

    class DemoBlocks(gr.Blocks):
        def launch(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("theme", _theme())
            kwargs.setdefault("css", CSS)
            kwargs.setdefault("share", False)
            kwargs.setdefault("footer_links", [])
            return super().launch(*args, **kwargs)

    return DemoBlocks


def build_demo(
    model: TransferModel,
    ckpt: str | Path | None = None,
    face_weights: str | Path | None = None,
    aligner: FaceAligner | None = None,
    app: DemoApp | None = None,
    examples: Sequence[str | Path] = (),
) -> Any:
    """The page for ``model`` as a ``gr.Blocks`` (launch it with ``demo.launch(server_name=...,
    server_port=..., prevent_thread_lock=True)``, stop it with ``demo.close()``). ``ckpt``: the model's
    file, for source videos and the synthetic faces' settings; ``face_weights``: FaceNet weights for the
    quality report; ``examples``: photos listed under the source and target inputs, to pick instead of
    uploading. The `DemoApp` behind it is ``demo.eet_app``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    app = app or DemoApp(model, ckpt=ckpt, face_weights=face_weights, aligner=aligner)
    Photo = _photo_class()
    numbers = list(model.aus)
    warning_text = app.reporter.model_warning(photographs=True)

    def photo_input(role: str, label: str) -> Any:
        """A photo upload (``#ROLE-image``), with the --examples photos to pick from under it."""
        photo = Photo(
            label=label,
            type="numpy",
            image_mode="RGB",
            height=260,
            sources=["upload", "clipboard"],
            elem_id=f"{role}-image",
        )
        if examples:
            gr.Examples(
                [[str(p)] for p in examples],
                inputs=[photo],
                label=f"Pick a {role}",
                examples_per_page=12,
                elem_id=f"{role}-examples",
            )
        return photo

    with _blocks_class()(title="EET demo", analytics_enabled=False) as demo:
        gr.Markdown(
            "## Expression transfer\nThe **source** photo gives the expression, the **target** photo "
            "receives it. " + app.description(),
            elem_id="model-info",
        )
        model_warning = gr.Markdown(
            f"**Warning**: {warning_text}" if warning_text else "",
            visible=bool(warning_text),
            elem_id="model-warning",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                source = photo_input("source", "Source photo (expression)")
                with gr.Accordion(
                    "Source video (optional)",
                    open=False,
                    visible=app.ckpt is not None,
                    elem_id="source-video-accordion",
                ):
                    source_video = gr.Video(
                        label="Source video: the target performs it",
                        sources=["upload"],
                        elem_id="source-video",
                    )
            with gr.Column(scale=1):
                target = photo_input("target", "Target photo (receives it)")
            with gr.Column(scale=1):
                strength = gr.Slider(
                    0.0,
                    MAX_PAGE_STRENGTH,
                    value=1.0,
                    step=0.05,
                    label="Strength",
                    info="0: the target's own expression, 1: the source's, above 1: exaggerated",
                    elem_id="strength",
                )
                aus = gr.CheckboxGroup(
                    choices=[(f"AU{n}", n) for n in numbers],
                    value=numbers,
                    label="AUs to transfer",
                    info="selective transfer: only the ticked AUs move",
                    visible=app.selectable,
                    elem_id="aus",
                )
                with gr.Row():
                    source_face = gr.Number(
                        value=0,
                        precision=0,
                        minimum=0,
                        step=1,
                        label="Source face (0: largest)",
                        elem_id="source-face",
                    )
                    target_face = gr.Number(
                        value=0,
                        precision=0,
                        minimum=0,
                        step=1,
                        label="Target face (0: largest)",
                        elem_id="target-face",
                    )
                run = gr.Button("Transfer", variant="primary", elem_id="transfer-button")
                pair = gr.Button("Random synthetic pair", visible=app.synthetic, elem_id="synthetic-button")
                message = gr.Markdown(visible=False, elem_id="demo-message")
        with gr.Row(equal_height=False):
            result = gr.Image(
                label="Result: the target with the source's expression",
                format="png",
                height=330,
                interactive=False,
                elem_id="result-image",
            )
            result_video = gr.Video(
                label="Result video", interactive=False, visible=False, elem_id="result-video"
            )
            result_file = gr.File(
                label="Result video (mp4, as eet-transfer writes it)", visible=False, elem_id="result-file"
            )
            with gr.Column():
                with gr.Row():
                    crop_source = gr.Image(
                        label="Source crop",
                        format="png",
                        height=150,
                        interactive=False,
                        elem_id="crop-source",
                    )
                    crop_target = gr.Image(
                        label="Target crop",
                        format="png",
                        height=150,
                        interactive=False,
                        elem_id="crop-target",
                    )
                    crop_result = gr.Image(
                        label="Result crop",
                        format="png",
                        height=150,
                        interactive=False,
                        elem_id="crop-result",
                    )
                chart = gr.Plot(label="AU intensities the model reads", format="png", elem_id="au-chart")
                chart_note = gr.Markdown(visible=False, elem_id="au-chart-note")
        report = gr.Markdown(elem_id="report")
        with gr.Column(visible=app.synthetic, elem_id="synthetic-section"):
            gr.Markdown(
                "### Random synthetic pair\nTwo held-out synthetic faces (identities the model never "
                "trained on), the model's swap on their crops, and the exact true swap rendered by the "
                "face generator: the target's face with the source's expression."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    with gr.Row():
                        syn = {
                            key: gr.Image(
                                label=label,
                                format="png",
                                height=190,
                                interactive=False,
                                elem_id=f"synthetic-{key}",
                            )
                            for key, label in (
                                ("source", "Source"),
                                ("target", "Target"),
                                ("swap", "Model's swap"),
                                ("truth", "True swap"),
                            )
                        }
                    syn_errors = gr.Markdown(elem_id="synthetic-errors")
                with gr.Column(scale=2):
                    syn_chart = gr.Plot(label="AU intensities", format="png", elem_id="synthetic-au-chart")
                    syn_report = gr.Markdown(elem_id="synthetic-report")

        def on_transfer(src, tgt, video, chosen, amount, s_face, t_face):
            view = app.transfer(src, tgt, chosen, amount, s_face, t_face, source_video=video)
            failed = view.message is not None
            crops = view.crops or (None, None, None)
            warn = view.model_warning
            return (
                gr.update(value=f"**Error**: {view.message}" if failed else "", visible=failed),
                gr.update(value=view.result, visible=view.video is None),
                gr.update(value=view.video, visible=view.video is not None),
                gr.update(value=view.video_file, visible=view.video_file is not None),
                *(None if c is None else _enlarge(c) for c in crops),
                view.chart,
                gr.update(value=view.chart_note, visible=bool(view.chart_note)),
                f"**Quality report**\n\n{view.report}" if view.report else "",
                gr.update(value=f"**Warning**: {warn}" if warn else "", visible=bool(warn))
                if not failed
                else gr.update(),
            )

        def on_pair(chosen, amount):
            view = app.synthetic_pair(chosen, amount)
            failed = view.message is not None
            images = [view.images.get(k) for k in ("source", "target", "swap", "truth")]
            shown = [None if im is None else _enlarge(im) for im in images]
            return (
                gr.update(value=f"**Error**: {view.message}" if failed else "", visible=failed),
                *shown[:3],
                gr.update(value=shown[3], label=view.truth_name.capitalize()),
                view.chart,
                view.errors,
                f"**Quality report**\n\n{view.report}" if view.report else "",
            )

        run.click(
            on_transfer,
            inputs=[source, target, source_video, aus, strength, source_face, target_face],
            outputs=[
                message,
                result,
                result_video,
                result_file,
                crop_source,
                crop_target,
                crop_result,
                chart,
                chart_note,
                report,
                model_warning,
            ],
            api_name="transfer",
        )
        pair.click(
            on_pair,
            inputs=[aus, strength],
            outputs=[message, *syn.values(), syn_chart, syn_errors, syn_report],
            api_name="synthetic_pair",
        )
    demo.eet_app = app
    return demo


# ---------------------------------------------------------------------------------------------- command


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DemoError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DemoError(f"--device {name}: CUDA is not available on this machine")
    return device


def check_port(host: str, port: int) -> None:
    """DemoError when ``port`` on ``host`` cannot be listened on (in use, not allowed, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DemoError(f"--host {host}: not an address of this machine ({err.strerror or err})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        if os.name != "nt":  # as the server does: a port left in TIME_WAIT is free, a listener is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise DemoError(
                    f"--port {port}: the port is in use on {host}; stop what uses it or choose another --port"
                ) from None
            raise DemoError(f"--port {port} on {host}: cannot listen there ({err.strerror or err})") from None


def _check_face_weights(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise DemoError(f"--face-weights {path}: is a folder, not a weights file")
    if not p.is_file():
        raise DemoError(f"--face-weights {path}: no such file")


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of `eet-demo`; serves until interrupted. Tests call ``main([...])`` for its refusals."""
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    tune_for_cli()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        parsed = build_parser().parse_args(args)
        device = _device(parsed.device)
        check_port(parsed.host, parsed.port)
        examples = example_photos(parsed.examples) if parsed.examples else []
        if parsed.face_weights:
            _check_face_weights(parsed.face_weights)
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise DemoError("the demo needs Gradio: pip install gradio") from None
        from eet_lightning.cli.transfer import TransferError, _load_model

        try:
            model = _load_model(parsed.ckpt, device, compile=False)
        except TransferError as err:
            raise DemoError(str(err)) from None
        try:
            app = DemoApp(model, ckpt=parsed.ckpt, face_weights=parsed.face_weights)
        except (ValueError, OSError) as err:  # the face weights do not load
            if not parsed.face_weights:
                raise
            message = str(err)
            raise DemoError(
                message
                if message.startswith("--face-weights")
                else f"--face-weights {parsed.face_weights}: {message}"
            ) from None
        demo = build_demo(model, app=app, examples=examples)
        check_port(parsed.host, parsed.port)  # taken while the model loaded?
        print(f"{PROG}: serving {parsed.ckpt} on http://{parsed.host}:{parsed.port} (Ctrl+C stops it)")
        try:
            demo.launch(server_name=parsed.host, server_port=parsed.port, inbrowser=False, quiet=True)
        except OSError as err:
            raise DemoError(f"--port {parsed.port}: cannot serve there ({err})") from None
        finally:
            app.close()
    except DemoError as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
