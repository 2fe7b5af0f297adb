"""Seeded miniatures of the raw downloads of DISFA, RaFD, CFD and MMI, and of a user's photo folder, in
the real layouts, names and file formats (videos written with OpenCV, label files and OpenFace CSVs in
their real column formats). Faces are drawn by the library's synthetic renderer on a larger canvas, so
MTCNN finds them and alignment has real work to do.

    python tests/miniatures.py OUT_DIR     # writes OUT_DIR/{disfa,rafd,cfd,mmi,folder}
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from eet_lightning.aus import DISFA_AUS, OPENFACE_AUS
from eet_lightning.data import synthetic as R

CANVAS = (120, 160)  # frame height, width (DISFA's real videos are 1024 x 768; small keeps tests fast)
FACE = 96  # rendered face size inside the canvas
# Renderer identities MTCNN finds reliably at this size (checked once; the renderer is deterministic).
IDENTITY_SEEDS: tuple[int, ...] = (0, 1, 2, 4, 6, 7, 11, 12, 14)
_CLASS_OF_ANGLE = {45: 0, 90: 1, 135: 2}
_GAZE_CLASS = {"left": 0, "frontal": 1, "right": 2}


def face_frame(
    identity: int,
    aus: np.ndarray,
    rng: np.random.Generator,
    pose: int = 1,
    gaze: int = 1,
    canvas: tuple[int, int] = CANVAS,
) -> np.ndarray:
    """One synthetic person (``IDENTITY_SEEDS[identity]``) with the given 12 DISFA AU intensities, drawn
    at a random offset on a plain background: uint8 RGB [H, W, 3]."""
    person = R.make_identity(IDENTITY_SEEDS[identity % len(IDENTITY_SEEDS)])
    face = R.render_face(person, pose, aus, gaze, R.sample_nuisance(rng), 128)
    face = cv2.resize(face, (FACE, FACE), interpolation=cv2.INTER_AREA)
    h, w = canvas
    out = np.full((h, w, 3), rng.integers(60, 200, size=3), dtype=np.uint8)
    y = int(rng.integers(0, h - FACE + 1))
    x = int(rng.integers(0, w - FACE + 1))
    out[y : y + FACE, x : x + FACE] = face
    return out


def blank_frame(rng: np.random.Generator, canvas: tuple[int, int] = CANVAS) -> np.ndarray:
    """A frame without a face (the subject left the camera): must be skipped, never cropped."""
    return np.full((*canvas, 3), rng.integers(60, 200, size=3), dtype=np.uint8)


def write_video(path: Path, frames: list[np.ndarray], fps: float = 20.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def write_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=92)


def _intensities(rng: np.random.Generator) -> np.ndarray:
    """Integer AU intensities 0-5 for DISFA's 12 AUs (as the annotators give them)."""
    aus, _ = R.sample_expression(rng)
    return np.clip(np.round(aus), 0, 5)


def _openface_aus(disfa_aus: np.ndarray, rng: np.random.Generator) -> dict[int, float]:
    """OpenFace-style regression output for all 17 AUs: the 12 known ones with noise, the 5 others random."""
    out = {}
    for au in OPENFACE_AUS:
        if au in DISFA_AUS:
            v = disfa_aus[DISFA_AUS.index(au)] + rng.normal(0, 0.2)
        else:
            v = rng.uniform(0, 2.5)
        out[au] = float(np.clip(v, 0, 5))
    return out


def openface_header(kind: str, spaced: bool) -> list[str]:
    """The columns of OpenFace 2.0's CSVs: FeatureExtraction ('video') or FaceLandmarkImg ('image')."""
    head = (
        ["frame", "face_id", "timestamp", "confidence", "success"]
        if kind == "video"
        else ["face", "confidence"]
    )
    head += ["gaze_0_x", "gaze_0_y", "gaze_0_z", "gaze_angle_x", "gaze_angle_y", "pose_Tx", "pose_Rx"]
    head += [f"AU{a:02d}_r" for a in OPENFACE_AUS]
    head += [f"AU{a:02d}_c" for a in (*OPENFACE_AUS[:-1], 28, 45)]
    return [h if not spaced or k == 0 else f" {h}" for k, h in enumerate(head)]


def openface_row(
    kind: str, index: int, aus: dict[int, float], rng: np.random.Generator, success: bool = True
) -> list[str]:
    conf = f"{rng.uniform(0.88, 0.98):.2f}" if success else "0.00"
    if kind == "video":
        row = [str(index), "0", f"{(index - 1) / 20:.3f}", conf, "1" if success else "0"]
    else:
        row = [str(index - 1), conf]
    row += [f"{rng.normal(0, 0.2):.6f}" for _ in range(7)]
    row += [f"{(aus[a] if success else 0.0):.2f}" for a in OPENFACE_AUS]
    row += ["1.00" if success and aus.get(a, 0) > 1 else "0.00" for a in (*OPENFACE_AUS[:-1], 28, 45)]
    return row


def write_openface_csv(path: Path, kind: str, rows: list[list[str]], spaced: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = ", " if spaced else ","
    lines = [sep.join(h.strip() for h in openface_header(kind, spaced))]
    lines += [sep.join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------------
# DISFA

DISFA_SUBJECTS: tuple[str, ...] = ("SN001", "SN002", "SN003", "SN024", "SN025")  # SN024, SN025: test
DISFA_FRAMES = 6
DISFA_BLANK = ("SN002", 4)  # (subject, frame) without a face


def write_disfa(root: Path, seed: int = 0) -> dict:
    """Videos_LeftCamera/LeftVideoSNxxx_comp.avi and ActionUnit_Labels/SNxxx/SNxxx_auN.txt."""
    rng = np.random.default_rng([seed, 1])
    labels = {}
    for k, subject in enumerate(DISFA_SUBJECTS):
        frames, values = [], []
        for frame in range(1, DISFA_FRAMES + 1):
            aus = _intensities(rng)
            values.append(aus)
            if (subject, frame) == DISFA_BLANK:
                frames.append(blank_frame(rng))
            else:
                frames.append(face_frame(k, aus, rng))
        write_video(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi", frames)
        # the right camera is in the download too; the paper (and eet-prepare) use the left one
        write_video(root / "Video_RightCamera" / f"RightVideo{subject}_Comp.avi", frames[:2])
        values = np.stack(values)
        for j, au in enumerate(DISFA_AUS):
            path = root / "ActionUnit_Labels" / subject / f"{subject}_au{au}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{f},{int(v)}\n" for f, v in enumerate(values[:, j], start=1)))
        labels[subject] = values
    return {"labels": labels, "faces": len(DISFA_SUBJECTS) * DISFA_FRAMES - 1}


# ------------------------------------------------------------------------------------------------------
# RaFD

RAFD_SUBJECTS: tuple[tuple[int, str, str], ...] = (
    (1, "Caucasian", "female"),
    (2, "Caucasian", "male"),
    (3, "Moroccan", "male"),
    (5, "Caucasian", "female"),
    (9, "Kid", "female"),
)
RAFD_FAILED = "Rafd090_03_Moroccan_male_happy_left"  # OpenFace failed on this one


def write_rafd(root: Path, openface_dir: Path, seed: int = 0) -> dict:
    """Rafd{angle}_{id}_{ethnicity}_{gender}_{emotion}_{gaze}.jpg, plus OpenFace FaceLandmarkImg CSVs."""
    rng = np.random.default_rng([seed, 2])
    kept = 0
    for k, (sid, ethnicity, gender) in enumerate(RAFD_SUBJECTS):
        for angle in (0, 45, 90, 135, 180):
            for emotion, gaze in (("happy", "left"), ("neutral", "frontal")):
                name = f"Rafd{angle:03d}_{sid:02d}_{ethnicity}_{gender}_{emotion}_{gaze}"
                if angle in (0, 180):  # full profiles: in the download, not used by the paper
                    if k == 0:
                        write_jpeg(root / f"{name}.jpg", face_frame(k, np.zeros(12), rng, canvas=(171, 128)))
                    continue
                aus = _intensities(rng)
                image = face_frame(
                    k, aus, rng, pose=_CLASS_OF_ANGLE[angle], gaze=_GAZE_CLASS[gaze], canvas=(171, 128)
                )
                write_jpeg(root / f"{name}.jpg", image)
                ok = name != RAFD_FAILED
                row = openface_row("image", 1, _openface_aus(aus, rng), rng)
                # FaceLandmarkImg writes a header without rows for an image it finds no face in
                write_openface_csv(openface_dir / f"{name}.csv", "image", [row] if ok else [], spaced=False)
                kept += ok
    return {"faces": kept, "openface_failed": 1}


# ------------------------------------------------------------------------------------------------------
# CFD

CFD_IMAGES: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("AF", 200, 228, ("N", "HC", "A")),
    ("AM", 201, 31, ("N",)),
    ("BF", 1, 25, ("N", "HO", "F")),
    ("LM", 202, 30, ("N",)),
    ("WF", 3, 2, ("N", "HC")),
    ("WM", 4, 21, ("N",)),
)


def write_cfd(root: Path, openface_dir: Path, seed: int = 0) -> dict:
    """CFD Version 3.0/Images/CFD/{race}{gender}-{model}/CFD-...-{expression}.jpg, plus OpenFace CSVs
    (FaceLandmarkImg's, with the space after each comma of older OpenFace releases)."""
    rng = np.random.default_rng([seed, 3])
    base = root / "CFD Version 3.0" / "Images" / "CFD"
    count = 0
    for k, (rg, model, image, exprs) in enumerate(CFD_IMAGES):
        for expr in exprs:
            name = f"CFD-{rg}-{model:03d}-{image:03d}-{expr}"
            aus = _intensities(rng)
            write_jpeg(base / f"{rg}-{model:03d}" / f"{name}.jpg", face_frame(k, aus, rng, canvas=(122, 172)))
            row = openface_row("image", 1, _openface_aus(aus, rng), rng)
            write_openface_csv(openface_dir / f"{name}.csv", "image", [row], spaced=True)
            image += 1
            count += 1
    (root / "CFD Version 3.0" / "CFD 3.0 Norming Data and Codebook.xlsx").write_bytes(b"PK\x03\x04")
    return {"faces": count}


# ------------------------------------------------------------------------------------------------------
# MMI

MMI_SESSIONS: tuple[tuple[int, int, str], ...] = (
    (1, 1, "video"),
    (2, 1, "image"),
    (3, 2, "video"),
    (4, 3, "video"),
    (5, 4, "image"),
    (6, 5, "video"),
)
MMI_FRAMES = 4
MMI_FAILED = (3, 2)  # (session, frame) OpenFace failed on


def session_xml(session: int, subject: int, media: str | None) -> str:
    media_attr = f' mediaFile="{media}"' if media else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<session sessionId="{session}"{media_attr}>\n'
        f'  <subject id="{subject}" />\n'
        '  <track id="0" type="Video" view="frontal" />\n'
        "</session>\n"
    )


def write_mmi(root: Path, openface_dir: Path, seed: int = 0) -> dict:
    """Sessions/<n>/session.xml with the recording (S00s-nnn.avi, or a still .jpg), plus OpenFace
    FeatureExtraction (videos) and FaceLandmarkImg (stills) CSVs."""
    rng = np.random.default_rng([seed, 4])
    faces = 0
    for session, subject, kind in MMI_SESSIONS:
        folder = root / "Sessions" / str(session)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"S{subject:03d}-{session:03d}"
        if kind == "video":
            frames, rows = [], []
            for frame in range(1, MMI_FRAMES + 1):
                aus = _intensities(rng)
                frames.append(face_frame(subject, aus, rng))
                ok = (session, frame) != MMI_FAILED
                rows.append(openface_row("video", frame, _openface_aus(aus, rng), rng, success=ok))
                faces += ok
            write_video(folder / f"{stem}.avi", frames)
            write_openface_csv(openface_dir / f"{stem}.csv", "video", rows, spaced=False)
            media = f"{stem}.avi"
        else:
            aus = _intensities(rng)
            write_jpeg(folder / f"{stem}.jpg", face_frame(subject, aus, rng))
            row = openface_row("image", 1, _openface_aus(aus, rng), rng)
            write_openface_csv(openface_dir / f"{stem}.csv", "image", [row], spaced=False)
            media = None  # a still: found as the only image in the folder
            faces += 1
        (folder / "session.xml").write_text(session_xml(session, subject, media))
        (folder / f"{stem}.xml").write_text(
            '<?xml version="1.0"?>\n<Metatags><Metatag Name="AU" Value="12"/></Metatags>\n'
        )
    return {"faces": faces, "openface_failed": 1}


# ------------------------------------------------------------------------------------------------------
# A user's folder


def write_folder(root: Path, seed: int = 0) -> dict:
    """photos/<person>/*.jpg|png with labels.csv; one grayscale and one RGBA image among them."""
    rng = np.random.default_rng([seed, 5])
    rows = ["path,subject,pose,gaze," + ",".join(f"AU{a:02d}" for a in DISFA_AUS)]
    count = 0
    for k, person in enumerate(("ann", "bob", "cat", "dan", "eve")):
        for j in range(2):
            aus = _intensities(rng)
            image = face_frame(k, aus, rng)
            rel = f"{person}/{person}_{j}.jpg"
            if (k, j) == (1, 0):
                rel = f"{person}/{person}_{j}_gray.png"
                Image.fromarray(image).convert("L").save(root / _mk(root, rel))
            elif (k, j) == (2, 1):
                rel = f"{person}/{person}_{j}_rgba.png"
                Image.fromarray(image).convert("RGBA").save(root / _mk(root, rel))
            else:
                write_jpeg(root / rel, image)
            rows.append(f"{rel},{person},90,frontal," + ",".join(f"{v:g}" for v in aus))
            count += 1
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"faces": count}


def _mk(root: Path, rel: str) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    return rel


def write_all(out: Path, seed: int = 0) -> dict[str, dict]:
    return {
        "disfa": write_disfa(out / "disfa", seed),
        "rafd": write_rafd(out / "rafd", out / "rafd_openface", seed),
        "cfd": write_cfd(out / "cfd", out / "cfd_openface", seed),
        "mmi": write_mmi(out / "mmi", out / "mmi_openface", seed),
        "folder": write_folder(out / "folder", seed),
    }


if __name__ == "__main__":
    print(
        {
            name: {k: v for k, v in d.items() if k != "labels"}
            for name, d in write_all(Path(sys.argv[1])).items()
        }
    )
