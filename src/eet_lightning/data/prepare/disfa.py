"""DISFA as distributed: left-camera videos and per-AU label files.

    ROOT/Videos_LeftCamera/LeftVideoSN001_comp.avi            (found anywhere below ROOT)
    ROOT/ActionUnit_Labels/SN001/SN001_au1.txt ... _au26.txt  one "frame,intensity" line per frame, from 1

The 12 AUs are 1 2 4 5 6 9 12 15 17 20 25 26, intensities 0-5. The paper follows Walecki et al. (CVPR
2017): 18 training and 9 test subjects. Its subject list is not published; the default here is the first
18 subjects in ID order for training and the last 9 (DISFA_TEST_SUBJECTS) for testing.
``--test-subjects`` replaces the list.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from eet_lightning.aus import DISFA_AUS
from eet_lightning.data.prepare.common import (
    Face,
    Options,
    PrepareError,
    Source,
    split_by_subjects,
    video_info,
)

DISFA_TEST_SUBJECTS: tuple[str, ...] = (
    "SN024",
    "SN025",
    "SN026",
    "SN027",
    "SN028",
    "SN029",
    "SN030",
    "SN031",
    "SN032",
)
_VIDEO = re.compile(r"^LeftVideo(SN\d{3})_comp\.avi$", re.IGNORECASE)
_LINE = re.compile(r"^\s*(\d+)\s*,\s*(\d+(?:\.\d+)?)\s*$")


def find_videos(root: Path) -> dict[str, Path]:
    videos: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        m = _VIDEO.match(path.name)
        if m and path.is_file():
            subject = m.group(1).upper()
            if subject in videos:
                raise PrepareError(f"two left-camera videos for {subject}: {videos[subject]} and {path}")
            videos[subject] = path
    if not videos:
        raise PrepareError(
            f"no DISFA left-camera video (LeftVideoSNxxx_comp.avi) found under {root}; pass the folder "
            f"that holds Videos_LeftCamera and ActionUnit_Labels"
        )
    return videos


def read_label_file(path: Path) -> np.ndarray:
    """Intensities of one AU, float32 [frames], checked: frames 1..N in order, values 0-5."""
    if not path.is_file():
        raise PrepareError(f"DISFA label file not found: {path}")
    values = []
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise PrepareError(f"{path}, line {line_no}: expected 'frame,intensity', got {line.strip()!r}")
        frame, value = int(m.group(1)), float(m.group(2))
        if frame != len(values) + 1:
            raise PrepareError(f"{path}, line {line_no}: frame {frame}, expected frame {len(values) + 1}")
        if not 0 <= value <= 5:
            raise PrepareError(f"{path}, line {line_no}: intensity {value} is outside [0, 5]")
        values.append(value)
    if not values:
        raise PrepareError(f"{path}: the label file is empty")
    return np.asarray(values, dtype=np.float32)


def find_label_dir(root: Path) -> Path:
    for path in sorted(root.rglob("ActionUnit_Labels")):
        if path.is_dir():
            return path
    raise PrepareError(f"no ActionUnit_Labels folder under {root} (DISFA's labels; or pass --openface)")


def read(opts: Options) -> list[Source]:
    root = Path(opts.root)
    videos = find_videos(root)
    own_labels = opts.openface is None
    if own_labels:
        bad = [a for a in opts.aus if a not in DISFA_AUS]
        if bad:
            raise PrepareError(
                f"DISFA's labels cover AUs {list(DISFA_AUS)}, not {bad}; use --aus 12 or --openface"
            )
        label_dir = find_label_dir(root)
    sources: list[Source] = []
    for subject, video in videos.items():
        frames, frame_size = video_info(video)
        label_file = None
        aus = None
        if own_labels:
            columns = []
            for au in opts.aus:
                label_file = label_dir / subject / f"{subject}_au{au}.txt"
                columns.append(read_label_file(label_file))
                if len(columns[-1]) != len(columns[0]):
                    raise PrepareError(
                        f"{label_file}: {len(columns[-1])} frames, but "
                        f"{label_dir / subject / f'{subject}_au{opts.aus[0]}.txt'} has {len(columns[0])}"
                    )
            aus = np.stack(columns, axis=1)
            if frames > 0 and frames != len(aus):
                raise PrepareError(
                    f"{label_file}: {len(aus)} labelled frames, but the video {video} has {frames} frames"
                )
            count = len(aus)
        else:
            if frames <= 0:
                raise PrepareError(f"{video}: cannot tell how many frames the video has")
            count = frames
        faces = [
            Face(
                key=f"{subject}/{subject}_{frame:05d}",
                subject=subject,
                frame=frame,
                aus=None if aus is None else aus[frame - 1],
            )
            for frame in range(1, count + 1, opts.every)
        ]
        sources.append(
            Source(video, "video", faces, label_file=label_file, expected_frames=count, frame_size=frame_size)
        )
    test = list(opts.test_subjects) if opts.test_subjects else [s for s in DISFA_TEST_SUBJECTS if s in videos]
    if not test:
        raise PrepareError(
            f"none of DISFA's default test subjects {list(DISFA_TEST_SUBJECTS)} is under {root}; "
            f"pass --test-subjects"
        )
    split_by_subjects([f for s in sources for f in s.faces], test, "DISFA")
    return sources
