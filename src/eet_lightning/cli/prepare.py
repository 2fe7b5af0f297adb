"""`eet-prepare`: a raw dataset download -> aligned face crops, manifest.csv and summary.json.

eet-prepare disfa --root /data/DISFA --out /data/disfa_256
eet-prepare rafd --root /data/RaFD --openface /data/RaFD_openface --out /data/rafd_256 --aus 17
eet-prepare cfd --root "/data/CFD Version 3.0" --openface /data/cfd_openface --out /data/cfd_256
eet-prepare mmi --root /data/MMI --openface /data/mmi_openface --out /data/mmi_256 --every 2
eet-prepare folder --root photos/ --labels labels.csv --out prepared/

Re-running the same command resumes an interrupted run; a finished output is never replaced unless
--overwrite is given.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from eet_lightning.aus import DISFA_AUS, OPENFACE_AUS, validate_aus
from eet_lightning.data.images import ImageReadError
from eet_lightning.data.openface import OpenFaceError
from eet_lightning.data.prepare import NEEDS_OPENFACE, READERS, Options, PrepareError, run_prepare
from eet_lightning.runtime import configure_process


def parse_aus(text: str) -> list[int]:
    """'12' (DISFA's AUs), '17' (OpenFace's) or a comma-separated list such as '1,2,4,12'."""
    text = text.strip()
    if text == "12":
        return list(DISFA_AUS)
    if text == "17":
        return list(OPENFACE_AUS)
    try:
        return validate_aus([int(t) for t in text.split(",") if t.strip()], where="--aus")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


MAX_SIZE = 4096  # the largest crop side (the paper's is 256)
MAX_BATCH = 4096  # images held in memory at once


class UsageError(Exception):
    """A command line argparse cannot parse: one line, exit status 2, no usage dump."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (eet-prepare --help lists the options)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="eet-prepare",
        description="Turn a raw face dataset into aligned crops + manifest.csv for eet-fit.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dataset", choices=sorted(READERS), help="which dataset layout --root holds")
    p.add_argument("--root", required=True, help="the raw download (or your image folder)")
    p.add_argument("--out", required=True, help="folder for crops, manifest.csv and summary.json")
    p.add_argument("--size", type=int, default=256, help="side of the square aligned crops")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="crop file format")
    p.add_argument(
        "--detector",
        choices=("mtcnn", "none"),
        default="mtcnn",
        help="mtcnn: detect and align; none: the images already are square aligned crops",
    )
    p.add_argument("--min-score", type=float, default=0.9, help="MTCNN detections below this are ignored")
    p.add_argument(
        "--aus", type=parse_aus, default=list(DISFA_AUS), help="12, 17 or a comma-separated AU list"
    )
    p.add_argument(
        "--openface", help="OpenFace output: a folder of per-file CSVs, or one CSV with file names"
    )
    p.add_argument(
        "--openface-min-confidence",
        type=float,
        default=0.0,
        help="OpenFace rows below this confidence count as failed",
    )
    p.add_argument(
        "--labels", help="folder mode: CSV of path, subject, [pose, gaze, emotion, split], AU columns"
    )
    p.add_argument("--every", type=int, default=1, help="videos: keep every n-th frame")
    p.add_argument(
        "--test-subjects", help="comma-separated test subjects, replacing the dataset's default split"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random splits")
    p.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="skip and count unreadable images instead of stopping",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="images per MTCNN batch (and per journal entry)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads for MTCNN (0: torch's default)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished or unfinished output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_numbers(ns: argparse.Namespace) -> None:
    """Every numeric option in its range (NaN and infinities included), before anything is read."""
    for flag, value, low, high in (
        ("--size", ns.size, 16, MAX_SIZE),
        ("--batch-size", ns.batch_size, 1, MAX_BATCH),
        ("--every", ns.every, 1, None),
        ("--threads", ns.threads, 0, None),
        ("--seed", ns.seed, 0, None),
    ):
        if value < low or (high is not None and value > high):
            expected = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise PrepareError(f"{flag} must be a whole number {expected}, got {value}")
    for flag, value in (
        ("--min-score", ns.min_score),
        ("--openface-min-confidence", ns.openface_min_confidence),
    ):
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise PrepareError(f"{flag} is a probability: it must be in [0, 1], got {value}")


def options_from_args(ns: argparse.Namespace) -> Options:
    _check_numbers(ns)
    root = Path(ns.root)
    if not root.is_dir():
        raise PrepareError(f"--root {root} is not a folder")
    if ns.dataset in NEEDS_OPENFACE and not ns.openface:
        raise PrepareError(
            f"{ns.dataset} has no AU intensity labels: pass --openface with OpenFace 2.0's output for it "
            f"(the paper annotated {ns.dataset} with OpenFace)"
        )
    if ns.dataset == "folder" and not ns.labels:
        raise PrepareError("eet-prepare folder needs --labels labels.csv")
    if ns.labels and ns.dataset != "folder":
        raise PrepareError("--labels is for `eet-prepare folder` only")
    if ns.openface and not Path(ns.openface).exists():
        raise PrepareError(f"--openface {ns.openface}: no such file or folder")
    if ns.labels and Path(ns.labels).is_dir():
        raise PrepareError(f"--labels {ns.labels} is a folder; expected a CSV file")
    if ns.labels and not Path(ns.labels).is_file():
        raise PrepareError(f"--labels {ns.labels}: no such file")
    tests = [t.strip() for t in ns.test_subjects.split(",") if t.strip()] if ns.test_subjects else None
    return Options(
        dataset=ns.dataset,
        root=str(root.resolve()),
        size=ns.size,
        image_format=ns.format,
        detector=ns.detector,
        aus=list(ns.aus),
        openface=str(Path(ns.openface).resolve()) if ns.openface else None,
        openface_min_confidence=ns.openface_min_confidence,
        labels=str(Path(ns.labels).resolve()) if ns.labels else None,
        every=ns.every,
        test_subjects=tests,
        seed=ns.seed,
        min_score=ns.min_score,
        skip_unreadable=ns.skip_unreadable,
    )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of `eet-prepare`; tests call ``main([...])`` directly. Returns the exit status."""
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    try:
        ns = build_parser().parse_args(list(sys.argv[1:] if args is None else args))
        opts = options_from_args(ns)
        if ns.threads > 0:
            import torch

            torch.set_num_threads(ns.threads)
        result = run_prepare(
            READERS[opts.dataset],
            opts,
            Path(ns.out),
            overwrite=ns.overwrite,
            progress=not ns.no_progress,
            batch_size=ns.batch_size,
        )
    except (UsageError, PrepareError, OpenFaceError, ImageReadError, OSError) as err:
        # OSError: what the run cannot write or read (a full disk, a folder taken away); the journal
        # keeps what finished, so the same command resumes
        if os.environ.get("EET_DEBUG"):
            raise
        message = " ".join(str(err).splitlines())  # one line, whatever the message holds
        print(f"eet-prepare: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eet-prepare: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    counts = result.summary["counts"]
    print(
        f"eet-prepare: {result.out}: {counts['written']} faces "
        f"({counts['train_images']} train / {counts['test_images']} test, "
        f"{counts['train_subjects']} / {counts['test_subjects']} subjects), {counts['skipped']} skipped "
        f"{result.summary['skipped_by_reason'] or ''}".rstrip()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
