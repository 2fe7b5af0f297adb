"""A quality report for every transfer: what the detector, the model and an identity network say about
one output, and plain warnings when it should not be trusted.

``eet-transfer`` writes one per output (``T_with_S.json`` beside ``T_with_S.png``, and ``report.csv`` with
one row per output) and ``eet-demo`` shows it. A report holds

- ``model``: the method and what it was trained on (``trained_on``: the checkpoint's record, see
  `eet_lightning.checkpoint_io.training_data`);
- ``target`` / ``source``: per face, the detector's confidence, the face's size in the photo (detector box
  side and eye distance in photo pixels), how much the alignment enlarged it to the model's crop
  (``upscale``: crop pixels per photo pixel) and a rough head pose from the five landmarks (``yaw_deg``,
  ``roll_deg``; see `head_pose`). None for crops that were not detected (synthetic pairs);
- ``aus``: the AU intensities (0 to l) the model reads on the source, the target and the result, and
  ``au_distance`` (mean absolute difference over the transferred AUs): source-target (how far the swap has
  to go), source-result (how far it is from the source's expression), target-result (how far it went);
  ``expression_moved``: the result's AUs projected on the target-to-source line, as a fraction of the way
  asked (1: the requested expression, 0: the target's own); None for a model that reads no AUs (StarGAN);
- ``emotion``: for a model conditioned on emotion classes (StarGAN), the class its classifier reads on
  target, source and result, and the result's probability of the source's class; None otherwise;
- ``identity``: the cosine similarity of identity features between target and result (and source-result,
  source-target), from the network named in ``identity.model``: FaceNet (``--face-weights``) when given,
  else the checkpoint's own identity classifier (EET's C), else none (the fields are None);
- ``warnings``: plain sentences, one per problem, with the thresholds of `THRESHOLDS`.

The thresholds were chosen on the quick-start model's held-out synthetic pairs and on the photos in the
tests; they flag outputs to look at, they do not prove an output good.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eet_lightning.data.faces import FaceAlignment

# Every warning's threshold (documented in docs/quality.md).
THRESHOLDS: dict[str, float] = {
    # "small face": the alignment enlarges the face more than this (crop pixels per photo pixel)
    "max_upscale": 2.0,
    # "uncertain face": the detector's probability is below this (eet-transfer keeps faces from 0.9)
    "min_detector_confidence": 0.95,
    # "large pose difference": the heads' yaw differs by more than this many degrees
    "max_yaw_difference_deg": 25.0,
    # "expression barely moved": the source's and target's AUs differ by at least this much (mean absolute
    # difference over the transferred AUs, intensity units 0-5) ...
    "min_au_distance_to_move": 0.5,
    # ... and the result went less than this fraction of the way asked
    "min_expression_moved": 0.25,
    # "identity drifted", FaceNet features: cosine similarity target-result below this (FaceNet's usual
    # verification threshold, L2 distance 1.1 between unit embeddings, is cosine 0.395)
    "min_identity_similarity_facenet": 0.4,
    # "identity drifted", the model's own identity classifier: below this (quick-start model, 200 held-out
    # synthetic pairs: same person 0.967 or more for 95%, two people 0.72 or less for 95%) ...
    "min_identity_similarity_own": 0.85,
}
# ... or, for either network, the result is more like the source than the target while the two are not
# the same person (source-target similarity below the network's threshold).

# The nose tip sits about 0.6 eye distances in front of the eyes' line; a yaw of t radians moves it
# sideways by 0.6 sin(t) eye distances (a rough model of an average head, for warnings only).
_NOSE_DEPTH = 0.6

SYNTHETIC_MODEL_WARNING = (
    "this model was trained only on the built-in synthetic faces: on photographs its output means nothing. "
    "For real faces, prepare a real dataset with eet-prepare and train on it with eet-fit (docs/usage.md)"
)


def head_pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) in degrees from MTCNN's five landmarks (eyes, nose, mouth corners) in photo pixels.

    Roll is the angle of the eyes' line. Yaw comes from how far the nose tip sits from the middle of the
    eyes, along the eyes' line, in eye distances (``_NOSE_DEPTH``): rough (a few degrees to ten), enough to
    tell a frontal face from a three-quarter view. Positive yaw: the nose is to the image's right.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left, right, nose = pts[0], pts[1], pts[2]
    axis = right - left
    dist = float(np.linalg.norm(axis))
    if dist < 1e-6:
        return 0.0, 0.0
    unit = axis / dist
    roll = math.degrees(math.atan2(axis[1], axis[0]))
    offset = float(np.dot(nose - (left + right) / 2.0, unit)) / dist
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, offset / _NOSE_DEPTH))))
    return yaw, roll


def face_fields(face: FaceAlignment | None) -> dict[str, float] | None:
    """The detector's and the alignment's view of one face (None when the crop was not detected). A face
    followed through a video (landmarks smoothed over frames, no detection of its own) has a NaN score:
    its ``detector_confidence`` is None."""
    if face is None:
        return None
    box = np.asarray(face.box, dtype=np.float64)
    eyes = np.asarray(face.landmarks, dtype=np.float64)
    yaw, roll = head_pose(eyes)
    scale = math.sqrt(abs(float(np.linalg.det(np.asarray(face.matrix, dtype=np.float64)[:, :2]))))
    return {
        "detector_confidence": round(float(face.score), 4) if math.isfinite(face.score) else None,
        "face_size_px": round(float(max(box[2] - box[0], box[3] - box[1])), 1),
        "eye_distance_px": round(float(np.linalg.norm(eyes[1] - eyes[0])), 1),
        "upscale": round(scale, 3),
        "yaw_deg": round(yaw, 1),
        "roll_deg": round(roll, 1),
    }


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a * b).sum()), 4)


class QualityReporter:
    """Builds the reports of a model's transfers (see the module docstring).

    ``face_weights``: a facenet-pytorch InceptionResnetV1 state dict file for the identity similarity;
    without it the model's own identity classifier is used where it has one.
    """

    def __init__(self, model: Any, face_weights: str | Path | None = None) -> None:
        self.model = model
        self.embedder = None
        if face_weights:
            from eet_lightning.evaluation.scorers import FaceNetEmbedder  # ScorerError is a ValueError

            self.embedder = FaceNetEmbedder(face_weights).eval().to(getattr(model, "device", "cpu"))
            self.identity_model = f"FaceNet InceptionResnetV1 ({Path(face_weights).name})"
            self.identity_threshold = THRESHOLDS["min_identity_similarity_facenet"]
        elif getattr(model, "identity_source", None) and _has_identity(model):
            self.identity_model = str(model.identity_source)
            self.identity_threshold = THRESHOLDS["min_identity_similarity_own"]
        else:
            self.identity_model = None
            self.identity_threshold = float("nan")
        self.reads_aus = bool(getattr(model, "reads_aus", False))
        self.reads_emotion = callable(getattr(model, "predict_emotion", None)) and bool(
            getattr(model, "emotions", ())
        )

    # ------------------------------------------------------------------ the model as a whole

    @property
    def trained_on(self) -> dict[str, Any]:
        return dict(getattr(self.model, "training_data", None) or {"dataset": "unknown", "kind": "unknown"})

    def model_warning(self, photographs: bool = True) -> str | None:
        """The warning every output of this model carries on photographs (None when there is none)."""
        return self.model_warning_for(self.model, photographs)

    @staticmethod
    def model_warning_for(model: Any, photographs: bool = True) -> str | None:
        """`model_warning` for a model without building a reporter."""
        trained = getattr(model, "training_data", None) or {}
        if photographs and trained.get("kind") == "synthetic":
            return SYNTHETIC_MODEL_WARNING
        return None

    # ------------------------------------------------------------------ one report per output

    def _read(self, crops: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(AU intensities [N, m] or None, unit identity features [N, D] or None) of uint8 crops."""
        if self.embedder is not None or not hasattr(self.model, "read_faces"):
            aus = self.model.predict_aus(crops).detach().float().cpu() if self.reads_aus else None
            return aus, self._identity(crops)
        aus, ident = self.model.read_faces(crops)  # one pass where the two share a network (EET's E)
        if self.identity_model is None:
            ident = None
        return (aus if self.reads_aus else None), ident

    def _identity(self, crops: np.ndarray) -> torch.Tensor | None:
        """Unit identity features [N, D] of uint8 crops [N, S, S, 3], or None without an identity network."""
        if self.identity_model is None:
            return None
        if self.embedder is not None:
            from eet_lightning.pixels import to_model_range

            with torch.no_grad():
                x = to_model_range(crops, self.embedder.device)
                return self.embedder.embed(x).float().cpu()
        return self.model.identity_features(crops)

    @torch.no_grad()
    def reports(
        self,
        targets: Sequence[FaceAlignment | None],
        sources: Sequence[FaceAlignment | None],
        target_crops: np.ndarray,
        source_crops: np.ndarray,
        result_crops: np.ndarray,
        aus: Sequence[int] | None = None,
        strength: float = 1.0,
        photographs: bool = True,
    ) -> list[dict[str, Any]]:
        """One report per output: ``result_crops[k]`` is ``target_crops[k]`` given the expression of
        ``source_crops[k]`` (uint8 [B, S, S, 3] each) with the transfer's ``aus`` and ``strength``;
        ``targets`` / ``sources`` the detected faces (None for crops that were not detected);
        ``photographs``: whether the inputs are photos (the synthetic-model warning applies)."""
        n = len(result_crops)
        if not (len(target_crops) == len(source_crops) == len(targets) == len(sources) == n):
            raise ValueError("reports: one target, source and result per output")
        crops = np.concatenate([np.asarray(target_crops), np.asarray(source_crops), np.asarray(result_crops)])
        # a pair's two directions share their crops (one's target is the other's source): read each once
        first: dict[bytes, int] = {}
        index = np.array(
            [first.setdefault(hashlib.blake2b(c.tobytes()).digest(), k) for k, c in enumerate(crops)]
        )
        unique = np.unique(index)
        where = np.searchsorted(unique, index)
        au_values, ident = self._read(crops[unique])
        if au_values is not None:
            au_values = au_values.numpy().reshape(len(unique), -1)[where]
        emotion = None
        if self.reads_emotion:  # a model conditioned on emotion classes (StarGAN): its classifier's view
            emotion = self.model.predict_emotion(crops[unique]).float().cpu().numpy()
            emotion = emotion.reshape(len(unique), -1)[where]
        ident = None if ident is None else ident[torch.as_tensor(where)]
        numbers = [int(a) for a in getattr(self.model, "aus", [])]
        moved_aus = numbers if aus is None else [int(a) for a in aus]
        columns = [numbers.index(a) for a in moved_aus if a in numbers]
        out = []
        for k in range(n):
            report: dict[str, Any] = {
                "model": {"method": getattr(self.model, "method", ""), "trained_on": self.trained_on},
                "transfer": {"aus": None if aus is None else moved_aus, "strength": float(strength)},
                "target": face_fields(targets[k]),
                "source": face_fields(sources[k]),
            }
            if au_values is not None:
                t, s, r = au_values[k], au_values[n + k], au_values[2 * n + k]
                report["aus"] = {
                    "numbers": numbers,
                    "target": [round(float(v), 3) for v in t],
                    "source": [round(float(v), 3) for v in s],
                    "result": [round(float(v), 3) for v in r],
                }
                report.update(_au_movement(t, s, r, columns, float(strength)))
            else:
                report["aus"] = None
                report["au_distance"] = None
                report["expression_moved"] = None
            report["emotion"] = None if emotion is None else self._emotion(emotion, n, k)
            if ident is not None:
                ft, fs, fr = ident[k], ident[n + k], ident[2 * n + k]
                report["identity"] = {
                    "model": self.identity_model,
                    "target_result": _cos(ft, fr),
                    "source_result": _cos(fs, fr),
                    "source_target": _cos(fs, ft),
                }
            else:
                report["identity"] = {
                    "model": None,
                    "target_result": None,
                    "source_result": None,
                    "source_target": None,
                }
            report["warnings"] = self._warnings(report, photographs)
            out.append(report)
        return out

    def _emotion(self, probabilities: np.ndarray, n: int, k: int) -> dict[str, Any]:
        """The emotion classes the model's classifier reads on target, source and result (``probabilities``
        [3n, K] in that order) and the result's probability of the source's class."""
        names = list(self.model.emotions)
        t, s, r = probabilities[k], probabilities[n + k], probabilities[2 * n + k]
        return {
            "classes": names,
            "target": names[int(t.argmax())],
            "source": names[int(s.argmax())],
            "result": names[int(r.argmax())],
            "result_source_probability": round(float(r[int(s.argmax())]), 4),
        }

    def _warnings(self, report: dict[str, Any], photographs: bool) -> list[str]:
        th = THRESHOLDS
        warnings = []
        model_warning = self.model_warning(photographs)
        if model_warning:
            warnings.append(f"synthetic-only model: {model_warning}")
        for role in ("target", "source"):
            face = report[role]
            if face is None:
                continue
            if face["upscale"] > th["max_upscale"]:
                warnings.append(
                    f"small face: the {role}'s face ({face['eye_distance_px']:g} px between the eyes) was "
                    f"enlarged {face['upscale']:.1f}x to the model's crop (above {th['max_upscale']:g}x "
                    "the result is blurred); use a larger photo of the face"
                )
            confidence = face["detector_confidence"]
            if confidence is not None and confidence < th["min_detector_confidence"]:
                warnings.append(
                    f"uncertain face: the detector is {face['detector_confidence']:.2f} sure the {role} holds "
                    f"a face (below {th['min_detector_confidence']:g})"
                )
        if report["target"] is not None and report["source"] is not None:
            diff = abs(report["target"]["yaw_deg"] - report["source"]["yaw_deg"])
            if diff > th["max_yaw_difference_deg"]:
                warnings.append(
                    f"large pose difference: the heads are turned {diff:.0f} degrees apart (above "
                    f"{th['max_yaw_difference_deg']:g}); the expression is read from a different view"
                )
        dist, moved = report["au_distance"], report["expression_moved"]
        if (
            dist is not None
            and moved is not None
            and dist["source_target"] >= th["min_au_distance_to_move"]
            and moved < th["min_expression_moved"]
        ):
            warnings.append(
                f"expression barely moved: the result went {max(moved, 0.0):.0%} of the way from the target's "
                f"expression to the one asked (below {th['min_expression_moved']:.0%}; the AUs differ by "
                f"{dist['source_target']:.2f} on average)"
            )
        emotion = report.get("emotion")
        if (
            emotion is not None
            and report["transfer"]["strength"] > 0
            and emotion["source"] != emotion["target"]
            and emotion["result"] != emotion["source"]
        ):
            warnings.append(
                f"emotion not reached: the model's classifier reads the result as {emotion['result']}, not "
                f"as the source's {emotion['source']} (probability {emotion['result_source_probability']:.2f})"
            )
        ident = report["identity"]
        if ident["model"] is not None:
            thr = self.identity_threshold
            tr, sr, st = ident["target_result"], ident["source_result"], ident["source_target"]
            if tr < thr:
                warnings.append(
                    f"identity drifted: the result's identity similarity to the target is {tr:.2f} (below "
                    f"{thr:g}, {ident['model']})"
                )
            elif st < thr and sr > tr:
                warnings.append(
                    f"identity drifted: the result looks more like the source's person ({sr:.2f}) than the "
                    f"target's ({tr:.2f}) ({ident['model']})"
                )
        return warnings


def _has_identity(model: Any) -> bool:
    """Whether the model's own identity network is there (EET without C, from an old export, is not)."""
    probe = getattr(model, "_identity_tensors", None)
    if probe is None:
        return False
    size = int(getattr(model, "image_size", 16))
    device = getattr(model, "device", torch.device("cpu"))
    with torch.no_grad():
        return probe(torch.zeros(1, 3, size, size, device=device)) is not None


def _au_movement(
    target: np.ndarray, source: np.ndarray, result: np.ndarray, columns: list[int], strength: float
) -> dict[str, Any]:
    """AU distances over the transferred AUs and how far the result went of the way asked."""
    if not columns:
        return {"au_distance": None, "expression_moved": None}
    t, s, r = target[columns], source[columns], result[columns]
    asked = strength * (s - t)
    denom = float(np.dot(asked, asked))
    moved = float(np.dot(r - t, asked)) / denom if denom > 1e-8 else None
    return {
        "au_distance": {
            "source_target": round(float(np.abs(s - t).mean()), 3),
            "source_result": round(float(np.abs(s - r).mean()), 3),
            "target_result": round(float(np.abs(t - r).mean()), 3),
        },
        "expression_moved": None if moved is None else round(moved, 3),
    }


def _stats(values: Sequence[float | None]) -> dict[str, float] | None:
    known = np.array([v for v in values if v is not None], dtype=np.float64)
    if not known.size:
        return None
    return {
        "median": round(float(np.median(known)), 3),
        "min": round(float(known.min()), 3),
        "max": round(float(known.max()), 3),
    }


def video_report(frames: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report for a video output from the reports of its frames (`QualityReporter.reports`, one per
    frame, in order): per-frame series of the numbers that change, their median / min / max, and each kind
    of warning once with the frames it holds for. The top-level ``au_distance``, ``expression_moved`` and
    ``identity`` similarities are the medians over the frames (so that a video's CSV row reads as a
    photo's); ``target`` / ``source`` are the first frame's faces."""
    if not frames:
        raise ValueError("video_report: no frames")
    first = frames[0]

    def series(get: Any) -> list[float | None]:
        out = []
        for report in frames:
            try:
                out.append(get(report))
            except (KeyError, TypeError):
                out.append(None)
        return out

    per_frame = {
        "expression_moved": series(lambda r: r["expression_moved"]),
        "au_distance_source_result": series(lambda r: r["au_distance"]["source_result"]),
        "au_distance_source_target": series(lambda r: r["au_distance"]["source_target"]),
        "identity_target_result": series(lambda r: r["identity"]["target_result"]),
        "yaw_difference_deg": series(
            lambda r: round(abs(r["target"]["yaw_deg"] - r["source"]["yaw_deg"]), 1)
        ),
        "emotion_result": series(lambda r: r["emotion"]["result"]),
    }
    per_frame = {k: v for k, v in per_frame.items() if any(x is not None for x in v)}
    summary = {k: _stats(v) for k, v in per_frame.items() if k != "emotion_result"}
    kinds: dict[str, list[int]] = {}
    examples: dict[str, str] = {}
    for k, report in enumerate(frames):
        for warning in report.get("warnings") or []:
            kind = warning.split(":", 1)[0]
            kinds.setdefault(kind, []).append(k)
            examples.setdefault(kind, warning)
    warnings = []
    for kind, where in kinds.items():
        if kind == "synthetic-only model":
            warnings.append(examples[kind])
            continue
        detail = examples[kind].split(":", 1)[1].strip()
        warnings.append(
            f"{kind}: in {len(where)} of {len(frames)} frames (first, frame {where[0]}: {detail})"
        )

    def median(key: str) -> float | None:
        return (summary.get(key) or {}).get("median")

    ident = dict(first.get("identity") or {})
    if ident.get("model") is not None:
        ident["target_result"] = median("identity_target_result")
        for key in ("source_result", "source_target"):
            ident[key] = (_stats(series(lambda r, key=key: r["identity"][key])) or {}).get("median")
    dist = None
    if "au_distance_source_result" in summary:
        dist = {
            key: (_stats(series(lambda r, key=key: r["au_distance"][key])) or {}).get("median")
            for key in ("source_target", "source_result", "target_result")
        }
    return {
        "model": first["model"],
        "transfer": first["transfer"],
        "frames": len(frames),
        "target": first.get("target"),
        "source": first.get("source"),
        "aus": None,
        "au_distance": dist,
        "expression_moved": median("expression_moved"),
        "emotion": None,
        "identity": ident,
        "summary": summary,
        "per_frame": per_frame,
        "warnings": warnings,
    }


def format_report(report: dict[str, Any]) -> str:
    """A few Markdown lines for people: the warnings first, then the numbers."""
    lines = []
    warnings = report.get("warnings") or []
    if warnings:
        lines += [f"- **warning**: {w}" for w in warnings]
    else:
        lines.append("- no warnings")
    for role in ("target", "source"):
        face = report.get(role)
        if face:
            confidence = face["detector_confidence"]
            seen = "followed through the video" if confidence is None else f"detector {confidence:.3f}"
            lines.append(
                f"- {role} face: {seen}, {face['face_size_px']:g} px "
                f"(eyes {face['eye_distance_px']:g} px apart, enlarged {face['upscale']:.2f}x), "
                f"yaw {face['yaw_deg']:+.0f} deg, roll {face['roll_deg']:+.0f} deg"
            )
    dist = report.get("au_distance")
    if dist:
        moved = report.get("expression_moved")
        lines.append(
            f"- AU distance (mean |difference|, 0-5): source-target {dist['source_target']:.2f}, "
            f"source-result {dist['source_result']:.2f}; moved "
            + ("-" if moved is None else f"{moved:.0%}")
            + " of the way asked"
        )
    elif report.get("aus") is None and "frames" not in report:
        lines.append("- AUs: this model reads no AU intensities")
    emotion = report.get("emotion")
    if emotion:
        lines.append(
            f"- emotion (the model's classifier): source {emotion['source']}, target {emotion['target']}, "
            f"result {emotion['result']} ({emotion['result_source_probability']:.0%} the source's)"
        )
    ident = report.get("identity") or {}
    if ident.get("model"):
        lines.append(
            f"- identity similarity target-result {ident['target_result']:.2f} "
            f"(source-result {ident['source_result']:.2f}; {ident['model']})"
        )
    else:
        lines.append("- identity: not measured (no identity network; give --face-weights)")
    if "frames" in report:
        lines.append(f"- video: {report['frames']} frames; the numbers above are medians over them")
    trained = (report.get("model") or {}).get("trained_on") or {}
    lines.append(
        f"- model: {report.get('model', {}).get('method', '?')}, trained on {trained.get('dataset', '?')}"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CSV

CSV_COLUMNS = (
    "output",
    "target",
    "source",
    "warnings",
    "target_detector_confidence",
    "target_face_size_px",
    "target_upscale",
    "target_yaw_deg",
    "source_detector_confidence",
    "source_face_size_px",
    "source_upscale",
    "source_yaw_deg",
    "au_distance_source_target",
    "au_distance_source_result",
    "au_distance_target_result",
    "expression_moved",
    "emotion_source",
    "emotion_target",
    "emotion_result",
    "identity_model",
    "identity_target_result",
    "identity_source_result",
    "trained_on",
)


def csv_row(report: dict[str, Any]) -> dict[str, Any]:
    """One report as a flat CSV row (`CSV_COLUMNS`); absent values are empty."""
    row: dict[str, Any] = {
        "output": report.get("output", ""),
        "target": report.get("target_photo", ""),
        "source": report.get("source_photo", ""),
        "warnings": " | ".join(report.get("warnings") or []),
    }
    for role in ("target", "source"):
        face = report.get(role) or {}
        for key in ("detector_confidence", "face_size_px", "upscale", "yaw_deg"):
            row[f"{role}_{key}"] = face.get(key, "")
    dist = report.get("au_distance") or {}
    for key in ("source_target", "source_result", "target_result"):
        row[f"au_distance_{key}"] = dist.get(key, "")
    moved = report.get("expression_moved")
    row["expression_moved"] = "" if moved is None else moved
    emotion = report.get("emotion") or {}
    for key in ("source", "target", "result"):
        row[f"emotion_{key}"] = emotion.get(key, "")
    ident = report.get("identity") or {}
    row["identity_model"] = ident.get("model") or ""
    for key in ("target_result", "source_result"):
        value = ident.get(key)
        row[f"identity_{key}"] = "" if value is None else value
    row["trained_on"] = ((report.get("model") or {}).get("trained_on") or {}).get("dataset", "")
    return row


def reports_csv(reports: Sequence[dict[str, Any]]) -> str:
    """The reports as CSV text, one row per output, `CSV_COLUMNS` in order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for report in reports:
        writer.writerow(csv_row(report))
    return buf.getvalue()


def warning_kinds(reports: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many outputs carry each kind of warning (the words before the colon)."""
    counts: dict[str, int] = {}
    for report in reports:
        for kind in {w.split(":", 1)[0] for w in report.get("warnings") or []}:
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))
