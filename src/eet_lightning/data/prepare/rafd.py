"""RaFD as distributed: ``Rafd{angle}_{id}_{ethnicity}_{gender}_{emotion}_{gaze}.jpg`` in one folder.

The paper keeps the 45, 90 and 135 degree cameras (4,824 images of 67 subjects), uses the camera angle
as pose (v = 3) and the gaze (frontal / left / right) as a label, and splits 60 training and 7 test
subjects at random (here: drawn with --seed). RaFD has no AU labels: they come from OpenFace.
"""

from __future__ import annotations

import re
from pathlib import Path

from eet_lightning.data.images import IMAGE_SUFFIXES
from eet_lightning.data.prepare.common import (
    Face,
    Options,
    PrepareError,
    Source,
    choose_test_subjects,
    split_by_subjects,
)

RAFD_ANGLES: tuple[int, ...] = (45, 90, 135)  # the paper's cameras
RAFD_TEST_FRACTION = 7 / 67
RAFD_EMOTIONS: tuple[str, ...] = (
    "angry",
    "contemptuous",
    "disgusted",
    "fearful",
    "happy",
    "neutral",
    "sad",
    "surprised",
)
RAFD_GAZES: tuple[str, ...] = ("frontal", "left", "right")
_NAME = re.compile(
    r"^Rafd(?P<angle>\d{3})_(?P<id>\d+)_(?P<ethnicity>[A-Za-z]+)_(?P<gender>male|female)_"
    r"(?P<emotion>[a-z]+)_(?P<gaze>[a-z]+)$"
)


def parse_name(path: Path) -> dict[str, str]:
    """The fields of a RaFD file name; raises naming the file when it does not parse."""
    m = _NAME.match(path.stem)
    if not m or m["emotion"] not in RAFD_EMOTIONS or m["gaze"] not in RAFD_GAZES:
        raise PrepareError(
            f"{path}: not a RaFD file name; expected Rafd{{angle}}_{{id}}_{{ethnicity}}_{{gender}}_"
            f"{{emotion}}_{{gaze}}.jpg with emotion in {RAFD_EMOTIONS} and gaze in {RAFD_GAZES}"
        )
    return m.groupdict()


def read(opts: Options, angles: tuple[int, ...] = RAFD_ANGLES) -> list[Source]:
    root = Path(opts.root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PrepareError(f"no RaFD images under {root}")
    sources = []
    for path in files:
        fields = parse_name(path)
        angle = int(fields["angle"])
        if angle not in angles:
            continue
        subject = f"{int(fields['id']):02d}"
        face = Face(
            key=f"{subject}/{path.stem}",
            subject=subject,
            pose=angle,
            gaze=fields["gaze"],
            emotion=fields["emotion"],
        )
        sources.append(Source(path, "image", [face]))
    if not sources:
        raise PrepareError(f"no RaFD image under {root} was taken by the {list(angles)} degree cameras")
    faces = [f for s in sources for f in s.faces]
    test = opts.test_subjects or choose_test_subjects(
        [f.subject for f in faces], RAFD_TEST_FRACTION, opts.seed, "RaFD"
    )
    split_by_subjects(faces, test, "RaFD")
    return sources
