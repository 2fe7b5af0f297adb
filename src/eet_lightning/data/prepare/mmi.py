"""The MMI Facial Expression Database as distributed: one folder per session,

    ROOT/Sessions/<n>/session.xml           session metadata
    ROOT/Sessions/<n>/S001-001.avi          the recording (a video), or
    ROOT/Sessions/<n>/S001-001.jpg          a still image
    ROOT/Sessions/<n>/S001-001.xml          FACS / emotion annotation (not read)

From ``session.xml`` the reader takes the media file (the root element's ``mediaFile`` attribute, or
else the only video or image in the folder) and the subject (the ``id`` of a ``subject`` element, or
else the root element's ``subjectId``). Frames come from videos (every ``--every``-th), stills as they
are. The paper splits 173,374 training and 18,757 test images at random; here the split is by subject
(about the same share, drawn with --seed, or ``--test-subjects``) so that test faces are unseen people.
MMI's few AU annotations are sparse: AU intensities come from OpenFace, as in the paper.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from eet_lightning.data.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from eet_lightning.data.prepare.common import (
    Face,
    Options,
    PrepareError,
    Source,
    choose_test_subjects,
    split_by_subjects,
    video_info,
)

MMI_TEST_FRACTION = 18757 / (173374 + 18757)


def read_session(folder: Path) -> tuple[Path, str]:
    """(media file, subject id) of one session folder; raises naming session.xml on any problem."""
    xml = folder / "session.xml"
    if not xml.is_file():
        raise PrepareError(f"MMI session without metadata: {xml} not found")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise PrepareError(f"{xml}: not valid XML ({err})") from err
    subject_el = root.find(".//subject")
    subject = subject_el.get("id") if subject_el is not None else root.get("subjectId")
    if not subject:
        raise PrepareError(f"{xml}: no subject (expected <subject id=...> or a subjectId attribute)")
    media_name = root.get("mediaFile")
    if media_name:
        media = folder / media_name
        if not media.is_file():
            raise PrepareError(f"{xml}: mediaFile {media_name!r} not found in {folder}")
    else:
        candidates = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES
        )
        if len(candidates) != 1:
            raise PrepareError(
                f"{xml}: no mediaFile attribute, and {len(candidates)} video/image files in {folder} "
                f"(expected exactly one)"
            )
        media = candidates[0]
    return media, subject.strip()


def read(opts: Options) -> list[Source]:
    root = Path(opts.root)
    sessions_dir = root / "Sessions" if (root / "Sessions").is_dir() else root
    folders = sorted(
        (p for p in sessions_dir.iterdir() if p.is_dir()),
        key=lambda p: (0, int(p.name)) if p.name.isdigit() else (1, p.name),
    )
    if not folders:
        raise PrepareError(f"no MMI session folders under {sessions_dir} (expected Sessions/<n>/)")
    sources = []
    for folder in folders:
        media, subject = read_session(folder)
        subject = f"{int(subject):03d}" if subject.isdigit() else subject
        base = f"{subject}/{folder.name}_{media.stem}"
        if media.suffix.lower() in VIDEO_SUFFIXES:
            count, frame_size = video_info(media)
            if count <= 0:
                raise PrepareError(f"{media}: cannot tell how many frames the video has")
            faces = [
                Face(key=f"{base}_{frame:05d}", subject=subject, frame=frame)
                for frame in range(1, count + 1, opts.every)
            ]
            sources.append(Source(media, "video", faces, expected_frames=count, frame_size=frame_size))
        else:
            sources.append(Source(media, "image", [Face(key=base, subject=subject)]))
    faces = [f for s in sources for f in s.faces]
    test = opts.test_subjects or choose_test_subjects(
        [f.subject for f in faces], MMI_TEST_FRACTION, opts.seed, "MMI"
    )
    split_by_subjects(faces, test, "MMI")
    return sources
