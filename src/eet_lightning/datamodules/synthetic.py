"""`SyntheticDataModule`: the built-in procedural faces, with exact labels and exact swap ground truth."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from eet_lightning.aus import DISFA_AUS, validate_aus
from eet_lightning.data import synthetic as R
from eet_lightning.data.images import write_bytes_atomic
from eet_lightning.data.pairs import UnpairedPairs
from eet_lightning.datamodules.base import DataInfo, EETDataModule, EvaluationSettings
from eet_lightning.losses import au_occurrence_weights
from eet_lightning.pixels import check_image_size, to_model_range

# Bumped whenever the renderer's output changes, so that stale caches are never read.
RENDER_VERSION = 2


@dataclass
class FaceRecords:
    """Metadata of rendered faces; row k of every array describes face k."""

    identity: np.ndarray  # int64 [N] label (training identities 0..n-1, held-out ones after them)
    identity_seed: np.ndarray  # int64 [N] seed given to make_identity
    pose: np.ndarray  # int64 [N] renderer yaw class 0..2
    gaze: np.ndarray  # int64 [N] 0..2
    aus: np.ndarray  # float32 [N, 12] in DISFA_AUS order
    emotion: np.ndarray  # int64 [N]
    nuisance: list  # [N] R.Nuisance


def sample_records(
    rng: np.random.Generator,
    identity_labels: Sequence[int],
    identity_seeds: Sequence[int],
    poses: Sequence[int],
    n: int,
) -> FaceRecords:
    """n faces cycling through the given identities, with random pose, gaze, expression and nuisance."""
    idx = np.arange(n) % len(identity_labels)
    exprs = [R.sample_expression(rng) for _ in range(n)]
    return FaceRecords(
        identity=np.asarray(identity_labels, dtype=np.int64)[idx],
        identity_seed=np.asarray(identity_seeds, dtype=np.int64)[idx],
        pose=rng.choice(np.asarray(poses, dtype=np.int64), size=n),
        gaze=rng.integers(0, 3, size=n).astype(np.int64),
        aus=np.stack([e[0] for e in exprs]).astype(np.float32),
        emotion=np.asarray([e[1] for e in exprs], dtype=np.int64),
        nuisance=[R.sample_nuisance(rng) for _ in range(n)],
    )


def render_records(
    records: FaceRecords, size: int, aus: np.ndarray | None = None, gaze: np.ndarray | None = None
) -> np.ndarray:
    """Render every record (optionally with other AUs / gaze, for swap ground truth): uint8 [N, H, W, 3]."""
    aus = records.aus if aus is None else aus
    gaze = records.gaze if gaze is None else gaze
    identities: dict[int, R.Identity] = {}
    out = np.empty((len(records.identity), size, size, 3), dtype=np.uint8)
    for k, seed in enumerate(records.identity_seed.tolist()):
        if seed not in identities:
            identities[seed] = R.make_identity(seed)
        out[k] = R.render_face(
            identities[seed], int(records.pose[k]), aus[k], int(gaze[k]), records.nuisance[k], size
        )
    return out


class _Pool:
    """Rendered faces kept as uint8 in memory, with their labels in the model's AU order and pose labels."""

    def __init__(
        self, images: np.ndarray, records: FaceRecords, au_columns: list[int], pose_labels: dict[int, int]
    ):
        self.images = torch.from_numpy(images)  # uint8 [N, H, W, 3]
        self.records = records
        self.aus = torch.from_numpy(records.aus[:, au_columns].copy())
        self.pose_labels = pose_labels

    def sample(self, k: int, mirror: bool) -> dict[str, torch.Tensor]:
        image = to_model_range(self.images[k])
        pose, gaze = int(self.records.pose[k]), int(self.records.gaze[k])
        if mirror:  # a mirrored face looks the other way and is turned the other way
            image = image.flip(-1)
            pose, gaze = 2 - pose, 2 - gaze
        return {
            "image": image,
            "aus": self.aus[k],
            "identity": torch.tensor(int(self.records.identity[k])),
            "pose": torch.tensor(self.pose_labels[pose]),
            "gaze": torch.tensor(gaze),
            "emotion": torch.tensor(int(self.records.emotion[k])),
        }


class _TrainPairs(UnpairedPairs):
    """Item i: face i as A and a random face of another identity as B (unpaired), each mirrored at random."""

    def __init__(self, pool: _Pool, mirror: bool) -> None:
        super().__init__(pool.records.identity)
        self.pool, self.mirror = pool, mirror

    def side(self, k: int) -> dict[str, torch.Tensor]:
        return self.pool.sample(k, self.mirror and bool(torch.rand(()) < 0.5))


class _FixedPairs(Dataset):
    """Held-out pairs with the exact swap ground truth ('truth' of A is A's face with B's AUs and gaze)."""

    def __init__(self, pool_a: _Pool, pool_b: _Pool, truth_a: np.ndarray, truth_b: np.ndarray) -> None:
        self.pool_a, self.pool_b = pool_a, pool_b
        self.truth_a, self.truth_b = to_model_range(truth_a), to_model_range(truth_b)

    def __len__(self) -> int:
        return len(self.pool_a.records.identity)

    def __getitem__(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        a = self.pool_a.sample(i, False)
        b = self.pool_b.sample(i, False)
        a["truth"], b["truth"] = self.truth_a[i], self.truth_b[i]
        return {"a": a, "b": b}


class SyntheticDataModule(EETDataModule):
    """Procedurally rendered faces (`eet_lightning.data.synthetic`) with exact AU, identity, pose and gaze
    labels. Training identities and held-out identities are disjoint (the paper's subject-disjoint
    protocol); validation and test pairs come from the held-out identities and carry the true swap."""

    # smaller pair lists than the paper's datasets: the faces are few and scoring runs on a CPU
    dataset_name = "synthetic"  # how results and reports name it
    evaluation_settings = EvaluationSettings(expression_partners=1, identity_pairs=200, gaze_partners=1)

    def __init__(
        self,
        image_size: int = 64,  # 64, 128 or 256
        aus: Sequence[int] = DISFA_AUS,  # any subset of the 12 DISFA AUs the renderer draws
        num_train_identities: int = 48,  # n
        num_test_identities: int = 12,  # held-out identities for validation / test pairs
        train_samples: int = 6000,  # faces rendered once for training (an epoch visits each once as A)
        val_pairs: int = 64,  # held-out pairs with ground truth
        poses: Sequence[int] = (0, 1, 2),  # renderer yaw classes used (0 left, 1 frontal, 2 right)
        batch_size: int = 16,  # pairs per device per step
        num_workers: int = 0,  # DataLoader workers (the pool is pre-rendered, so 0 is usually enough)
        mirror: bool = True,  # the paper's random horizontal mirror (pose and gaze labels follow)
        seed: int = 0,  # everything rendered follows from it
        cache_dir: str | None = None,  # keep rendered pools here as .npz and reuse them
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_image_size(image_size, "data.image_size")
        self.aus = validate_aus(
            aus, supported=DISFA_AUS, where="data.aus (the synthetic faces draw DISFA's 12 AUs)"
        )
        self.au_columns = [DISFA_AUS.index(a) for a in self.aus]
        self.poses = sorted({int(p) for p in poses})
        if not self.poses or any(p not in (0, 1, 2) for p in self.poses):
            raise ValueError(f"data.poses must be a non-empty subset of [0, 1, 2], got {list(poses)}")
        if mirror and any(2 - p not in self.poses for p in self.poses):
            raise ValueError(f"data.mirror needs left and right poses together, got poses {self.poses}")
        for name in (
            "num_train_identities",
            "num_test_identities",
            "train_samples",
            "val_pairs",
            "batch_size",
        ):
            if int(getattr(self.hparams, name)) < (2 if "identities" in name else 1):
                raise ValueError(f"data.{name} is too small: {getattr(self.hparams, name)}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.pose_labels = {p: i for i, p in enumerate(self.poses)}
        n_train, n_test = num_train_identities, num_test_identities
        self.train_identity_seeds = [seed * 1_000_003 + k for k in range(n_train)]
        self.test_identity_seeds = [seed * 1_000_003 + n_train + k for k in range(n_test)]
        rng = np.random.default_rng([seed, 1])
        self.train_records = sample_records(
            rng, list(range(n_train)), self.train_identity_seeds, self.poses, train_samples
        )
        self._info = DataInfo(
            aus=list(self.aus),
            num_identities=n_train,
            num_poses=len(self.poses),
            au_weights=au_occurrence_weights(
                torch.from_numpy(self.train_records.aus[:, self.au_columns]), int(R.MAX_INTENSITY)
            ).tolist(),
            max_intensity=int(R.MAX_INTENSITY),
            num_emotions=len(R.EMOTIONS),
        )
        self.train_set: _TrainPairs | None = None
        self.val_set: _FixedPairs | None = None

    # ----------------------------------------------------------------------------------------------

    def _cached(self, name: str, key: dict, render) -> np.ndarray:
        if not self.hparams.cache_dir:
            return render()
        digest = hashlib.sha1(json.dumps({**key, "v": RENDER_VERSION}, sort_keys=True).encode()).hexdigest()[
            :16
        ]
        path = Path(self.hparams.cache_dir) / f"synthetic-{name}-{digest}.npy"
        if path.is_file():
            return np.load(path)
        images = render()
        buffer = io.BytesIO()
        np.save(buffer, images)
        # a temporary file of its own, then an atomic rename: runs sharing the cache folder never collide
        # and never leave a half-written cache behind
        write_bytes_atomic(path, buffer.getvalue())
        return images

    def held_out_pairs(self, num_pairs: int, seed: int) -> dict[str, np.ndarray | FaceRecords]:
        """`num_pairs` pairs of held-out identities (A and B always different people), rendered with the
        swap ground truth: truth_a = render(identity_a, pose_a, aus_b, gaze_b, nuisance_a), and the
        reverse for B; and with the other's AUs alone, aus_only_a = render(identity_a, pose_a, aus_b,
        gaze_a, nuisance_a), which defines the AU region (the pixels where A rendered with its own AUs and
        with B's differ). Images are uint8 [N, H, W, 3]."""
        rng = np.random.default_rng([self.hparams.seed, 2, seed])
        n_test = len(self.test_identity_seeds)
        ia = rng.integers(0, n_test, size=num_pairs)
        ib = (ia + rng.integers(1, n_test, size=num_pairs)) % n_test  # always another identity
        base = len(self.train_identity_seeds)
        seeds = np.asarray(self.test_identity_seeds)
        sides = {}
        for side, idx in (("a", ia), ("b", ib)):
            recs = sample_records(rng, (base + idx).tolist(), seeds[idx].tolist(), self.poses, num_pairs)
            sides[side] = recs
        size = self.image_size
        ra, rb = sides["a"], sides["b"]
        key = {
            "size": size,
            "pairs": num_pairs,
            "seed": self.hparams.seed,
            "pair_seed": seed,
            "ids": self.hparams.num_train_identities,
            "test_ids": n_test,
            "poses": self.poses,
            "aus_only": True,
        }
        stacked = self._cached(
            "pairs",
            key,
            lambda: np.stack(
                [
                    render_records(ra, size),
                    render_records(rb, size),
                    render_records(ra, size, aus=rb.aus, gaze=rb.gaze),
                    render_records(rb, size, aus=ra.aus, gaze=ra.gaze),
                    render_records(ra, size, aus=rb.aus),
                    render_records(rb, size, aus=ra.aus),
                ]
            ),
        )
        return {
            "records_a": ra,
            "records_b": rb,
            "a": stacked[0],
            "b": stacked[1],
            "truth_a": stacked[2],
            "truth_b": stacked[3],
            "aus_only_a": stacked[4],
            "aus_only_b": stacked[5],
        }

    def write_previews(self, out_dir: str | Path) -> dict[str, Path]:
        """The AU contact sheet: each AU swept 0 -> 5 on the first held-out identity."""
        from PIL import Image

        path = Path(out_dir) / "au_contact_sheet.png"
        identity = R.make_identity(self.test_identity_seeds[0])
        sheet = R.au_contact_sheet(identity, max(self.image_size, 128))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sheet).save(path)
        return {"contact_sheet": path}

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            key = {
                "size": self.image_size,
                "n": self.hparams.train_samples,
                "seed": self.hparams.seed,
                "ids": self.hparams.num_train_identities,
                "poses": self.poses,
            }
            images = self._cached("train", key, lambda: render_records(self.train_records, self.image_size))
            pool = _Pool(images, self.train_records, self.au_columns, self.pose_labels)
            self.train_set = _TrainPairs(pool, self.hparams.mirror)
        if self.val_set is None:
            pairs = self.held_out_pairs(self.hparams.val_pairs, seed=0)
            self.val_set = _FixedPairs(
                _Pool(pairs["a"], pairs["records_a"], self.au_columns, self.pose_labels),
                _Pool(pairs["b"], pairs["records_b"], self.au_columns, self.pose_labels),
                pairs["truth_a"],
                pairs["truth_b"],
            )
