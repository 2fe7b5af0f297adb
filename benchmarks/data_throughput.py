"""Data throughput: eet-prepare (images per second, with and without MTCNN) and a real-data DataModule
(pairs per second at batch 16, 256 px, 2 workers), on a seeded miniature folder of synthetic faces.

    python benchmarks/data_throughput.py [--images 96] [--batches 40] [--threads 1]

The issue asks that loading is at least 5x faster than one full-size training step consumes data; with
--step, one full-size stage-1 step is timed on the same machine for that comparison (slow on a CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from eet_lightning.aus import DISFA_AUS  # noqa: E402
from eet_lightning.cli.prepare import main as prepare  # noqa: E402
from eet_lightning.data import synthetic as R  # noqa: E402
from eet_lightning.datamodules import FolderDataModule  # noqa: E402
from eet_lightning.runtime import configure_process  # noqa: E402


def write_photos(root: Path, count: int, seed: int = 0) -> None:
    """``count`` 640 x 480 photos of 8 synthetic people (a 256 px face each) with labels.csv."""
    rng = np.random.default_rng(seed)
    people = [R.make_identity(s) for s in (0, 1, 2, 4, 6, 7, 11, 12)]
    rows = ["path,subject," + ",".join(f"AU{a:02d}" for a in DISFA_AUS)]
    for k in range(count):
        p = k % len(people)
        aus, _ = R.sample_expression(rng)
        face = R.render_face(people[p], 1, aus, 1, R.sample_nuisance(rng), 256)
        photo = np.full((480, 640, 3), rng.integers(60, 200, size=3), dtype=np.uint8)
        y, x = int(rng.integers(0, 480 - 256)), int(rng.integers(0, 640 - 256))
        photo[y : y + 256, x : x + 256] = face
        rel = f"p{p}/img{k:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(root / rel, quality=92)
        rows.append(f"{rel},p{p}," + ",".join(f"{v:.2f}" for v in aus))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def write_crops(root: Path, count: int, seed: int = 0) -> None:
    """``count`` square 256 px aligned-looking crops with labels.csv (input of --detector none)."""
    rng = np.random.default_rng(seed)
    people = [R.make_identity(s) for s in range(8)]
    rows = ["path,subject," + ",".join(f"AU{a:02d}" for a in DISFA_AUS)]
    for k in range(count):
        p = k % len(people)
        aus, _ = R.sample_expression(rng)
        rel = f"p{p}/img{k:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(R.render_face(people[p], 1, aus, 1, R.sample_nuisance(rng), 256)).save(root / rel)
        rows.append(f"{rel},p{p}," + ",".join(f"{v:.2f}" for v in aus))
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def time_prepare(raw: Path, out: Path, detector: str) -> float:
    args = ["folder", "--root", str(raw), "--labels", str(raw / "labels.csv"), "--out", str(out)]
    args += ["--detector", detector, "--size", "256", "--no-progress", "--min-score", "0.5"]
    start = time.perf_counter()
    assert prepare(args) == 0
    return time.perf_counter() - start


def pairs_per_second(loader, batches: int, image_shape: tuple[int, ...]) -> float:
    """Pairs per second over ``batches`` batches of ``loader`` (restarted at the end of an epoch), each
    batch's A images checked to be ``image_shape``; the first batch (worker start-up) is not counted."""
    it = iter(loader)
    next(it)
    seen, start = 0, time.perf_counter()
    while seen < batches:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        assert tuple(batch["a"]["image"].shape) == image_shape
        seen += 1
    return seen * image_shape[0] / (time.perf_counter() - start)


def time_loader(root: Path, batches: int, workers: int) -> float:
    dm = FolderDataModule(root=str(root), image_size=256, batch_size=16, num_workers=workers)
    dm.setup("fit")
    return pairs_per_second(dm.train_dataloader(), batches, (16, 3, 256, 256))


def time_training_step(batch: dict, repeats: int = 2) -> float:
    """Seconds of one full-size stage-1 step (Table I at width 1, 256 px, the given batch of pairs: forward,
    backward and Adam) on this machine's default device. Stage 2 steps are slower still, so this is a
    lower bound on how long the model takes to consume one batch."""
    from eet_lightning.nets import ArchConfig
    from eet_lightning.stage1 import Stage1Module

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = Stage1Module(arch=ArchConfig(image_size=256, width=1.0, num_identities=8, num_poses=1)).to(
        device
    )
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    batch = {side: {k: v.to(device) for k, v in batch[side].items()} for side in ("a", "b")}
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        opt.zero_grad()
        module.training_step(batch, 0).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=96, help="photos prepared per mode")
    parser.add_argument("--batches", type=int, default=40, help="batches of 16 pairs timed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for MTCNN (0: torch default)")
    parser.add_argument("--step", action="store_true", help="also time one full-size stage-1 training step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_photos(tmp / "photos", args.images)
        write_crops(tmp / "crops", args.images)
        t_mtcnn = time_prepare(tmp / "photos", tmp / "out_mtcnn", "mtcnn")
        t_none = time_prepare(tmp / "crops", tmp / "out_none", "none")
        print(
            f"eet-prepare, MTCNN + alignment, 640x480 photos -> 256 px: {args.images / t_mtcnn:7.1f} images/s"
        )
        print(
            f"eet-prepare, --detector none, 256 px crops:               {args.images / t_none:7.1f} images/s"
        )
        print("  (each includes start-up: model load and reading the labels)")
        rate = time_loader(tmp / "out_mtcnn", args.batches, args.workers)
        print(f"FolderDataModule, batch 16, 256 px, {args.workers} workers, mirror on:  {rate:7.1f} pairs/s")
        print(f"  = one batch of 16 pairs every {16 / rate * 1000:.1f} ms")
        if args.step:
            dm = FolderDataModule(root=str(tmp / "out_mtcnn"), image_size=256, batch_size=16, num_workers=0)
            dm.setup("fit")
            step = time_training_step(next(iter(dm.train_dataloader())))
            print(
                f"one full-size stage-1 step (batch 16, 256 px, width 1): {step:.2f} s = {16 / step:.1f} pairs/s"
            )
            print(
                f"  loading is {rate * step / 16:.0f}x faster than training consumes (the issue asks >= 5x)"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
