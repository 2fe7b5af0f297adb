"""One production form of each data computation (issue 16), and proof that it computes what the forms it
replaced did: the uint8 <-> [-1, 1] conversions (`eet_lightning.pixels`), the unpaired pair draw of both
training sets (`eet_lightning.data.pairs`), the image size check, the AU occurrence threshold and the
evaluation settings each DataModule declares.

The replaced forms are copied here, as they were, and only here: they are the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from eet_lightning import ArchConfig
from eet_lightning.aus import DISFA_AUS
from eet_lightning.data import synthetic as R
from eet_lightning.data.manifest import BASE_COLUMNS, FaceTable, TrainPairs, au_column, write_manifest
from eet_lightning.data.pairs import UnpairedPairs
from eet_lightning.datamodules import (
    CFDDataModule,
    DISFADataModule,
    EETDataModule,
    FolderDataModule,
    MMIDataModule,
    RaFDDataModule,
    SyntheticDataModule,
)
from eet_lightning.datamodules.manifest import ManifestDataModule, build_augmentation
from eet_lightning.evaluation import protocols as P
from eet_lightning.losses import au_occurrence_threshold, au_occurrence_weights
from eet_lightning.nets import config as nets_config
from eet_lightning.pixels import SUPPORTED_IMAGE_SIZES, check_image_size, to_model_range, to_uint8

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# --------------------------------------------------------------------------------------------------
# the forms replaced, as they were before issue 16


def old_model_from_uint8(images: np.ndarray, device: torch.device | str) -> torch.Tensor:  # model.py
    x = torch.from_numpy(np.array(images, dtype=np.uint8)).to(device)
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def old_score_to_model(
    images: np.ndarray, device: torch.device | str
) -> torch.Tensor:  # evaluation/synthetic.py
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).to(device)


def old_protocols_to_tensor(images: np.ndarray) -> torch.Tensor:  # evaluation/protocols.py
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float().div(127.5).sub(1.0)


def old_evaluate_truth(images: np.ndarray) -> torch.Tensor:  # cli/evaluate.py, the example grid's truth
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def old_to_tensor_images(images: np.ndarray) -> torch.Tensor:  # datamodules/synthetic.py
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def old_pool_sample_image(images: np.ndarray, k: int) -> torch.Tensor:  # datamodules/synthetic.py _Pool
    pool = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return pool[k].float().div(127.5).sub(1.0)


def old_manifest_image(image: np.ndarray) -> torch.Tensor:  # data/manifest.py FaceTable.sample
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def old_to_uint8(images: torch.Tensor) -> np.ndarray:  # callbacks.py
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


class OldSyntheticTrainPairs(Dataset):  # datamodules/synthetic.py _TrainPairs
    def __init__(self, pool: Any, mirror: bool) -> None:
        self.pool, self.mirror = pool, mirror
        ids = pool.records.identity
        self.by_identity = {int(i): np.flatnonzero(ids == i) for i in np.unique(ids)}
        self.identities = sorted(self.by_identity)
        self.position = {identity: k for k, identity in enumerate(self.identities)}

    def __len__(self) -> int:
        return len(self.pool.records.identity)

    def _flip(self) -> bool:
        return self.mirror and bool(torch.rand(()) < 0.5)

    def __getitem__(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        own = self.position[int(self.pool.records.identity[i])]
        r = int(torch.randint(len(self.identities) - 1, ()))
        candidates = self.by_identity[self.identities[r if r < own else r + 1]]
        j = int(candidates[int(torch.randint(len(candidates), ()))])
        return {"a": self.pool.sample(i, self._flip()), "b": self.pool.sample(j, self._flip())}


class OldManifestTrainPairs(Dataset):  # data/manifest.py TrainPairs
    def __init__(self, table: Any) -> None:
        self.table = table
        ids = table.identity
        self.by_identity = {int(i): np.flatnonzero(ids == i) for i in np.unique(ids)}
        self.identities = sorted(self.by_identity)
        self.position = {identity: k for k, identity in enumerate(self.identities)}

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict[str, dict[str, Any]]:
        own = self.position[int(self.table.identity[i])]
        r = int(torch.randint(len(self.identities) - 1, ()))
        candidates = self.by_identity[self.identities[r if r < own else r + 1]]
        j = int(candidates[int(torch.randint(len(candidates), ()))])
        return {"a": self.table.sample(i, augment=True), "b": self.table.sample(j, augment=True)}


OLD_PAPER_SETTINGS: dict[str, dict[str, Any]] = {  # evaluation/protocols.py, looked up by class name
    "disfa": {"expression_partners": 1, "identity_pairs": 20000, "gaze_partners": 0},
    "rafd": {"expression_partners": 5, "identity_pairs": 5000, "gaze_partners": 5},
    "mmi": {"expression_partners": 1, "identity_pairs": 5000, "gaze_partners": 0},
    "cfd": {"expression_partners": 5, "identity_pairs": 5000, "gaze_partners": 0},
    "folder": {"expression_partners": 1, "identity_pairs": 5000, "gaze_partners": 0},
    "synthetic": {"expression_partners": 1, "identity_pairs": 200, "gaze_partners": 1},
}

# --------------------------------------------------------------------------------------------------
# conversions


def _every_level(n: int = 5, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 [n, size, size, 3] holding every one of the 256 levels, shuffled."""
    values = np.arange(n * size * size * 3) % 256
    np.random.default_rng(seed).shuffle(values)
    return values.astype(np.uint8).reshape(n, size, size, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_to_model_range_equals_every_replaced_conversion(device: str) -> None:
    images = _every_level()
    new = to_model_range(images)
    assert new.dtype == torch.float32 and new.shape == (5, 3, 16, 16) and new.is_contiguous()
    assert new.min() == -1 and new.max() == 1
    # the old forms run where they did: model.py converted on the device, the scorer before moving there
    assert torch.equal(to_model_range(images, device), old_model_from_uint8(images, device))
    assert torch.equal(to_model_range(images).to(device), old_score_to_model(images, device))
    for old in (old_protocols_to_tensor, old_evaluate_truth, old_to_tensor_images):
        assert torch.equal(new, old(images))
    for k in range(len(images)):
        assert torch.equal(to_model_range(torch.from_numpy(images)[k]), old_pool_sample_image(images, k))
        mirrored = images[k][:, ::-1]  # negative strides, as albumentations' flip gives them
        one = to_model_range(mirrored)
        assert one.shape == (3, 16, 16) and one.is_contiguous()
        assert torch.equal(one, old_manifest_image(mirrored))
    # a tensor input and a read-only array give the same, and the input is left as it was
    assert torch.equal(to_model_range(torch.from_numpy(images.copy())), new)
    frozen = images.copy()
    frozen.flags.writeable = False
    assert torch.equal(to_model_range(frozen), new) and np.array_equal(frozen, images)


def test_to_model_range_refuses_what_is_not_uint8_rgb() -> None:
    for bad in (
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((2, 3, 8, 8), np.uint8),
        np.zeros((8, 8), np.uint8),
    ):
        with pytest.raises(ValueError, match=r"images must be uint8 \[H, W, 3\] or \[N, H, W, 3\]"):
            to_model_range(bad)
    with pytest.raises(ValueError, match="images must be uint8"):
        to_model_range(torch.zeros(1, 8, 8, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_to_uint8_equals_the_replaced_conversion(device: str) -> None:
    g = torch.Generator().manual_seed(0)
    halves = (torch.arange(255, dtype=torch.float32) + 0.5) / 127.5 - 1  # ties of the rounding
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    spread = torch.rand(4 * 3 * 16 * 16 - 511, generator=g) * 3 - 1.5  # values outside [-1, 1] too
    values = torch.cat([halves, levels, spread])[torch.randperm(4 * 3 * 16 * 16, generator=g)]
    images = values.reshape(4, 3, 16, 16).to(device).requires_grad_(True)
    new = to_uint8(images)
    assert new.dtype == np.uint8 and new.shape == (4, 16, 16, 3)
    np.testing.assert_array_equal(new, old_to_uint8(images))
    np.testing.assert_array_equal(to_uint8(images.double()), old_to_uint8(images.double()))
    # a round trip through the model's range gives every level back
    every = _every_level()
    np.testing.assert_array_equal(to_uint8(to_model_range(every, device)), every)


# --------------------------------------------------------------------------------------------------
# the unpaired pair draw


class RecordingPool:
    """A synthetic pool that notes which face each sample is and whether it was mirrored."""

    def __init__(self, pool: Any) -> None:
        self.pool, self.records, self.log = pool, pool.records, []

    def sample(self, k: int, mirror: bool) -> dict[str, torch.Tensor]:
        self.log.append((k, mirror))
        return self.pool.sample(k, mirror)


class RecordingTable:
    """A manifest table that notes which face each sample is and whether albumentations mirrored it."""

    def __init__(self, table: FaceTable) -> None:
        self.table, self.identity, self.log = table, table.identity, []

    def __len__(self) -> int:
        return len(self.table)

    def sample(self, k: int, augment: bool) -> dict[str, Any]:
        out = self.table.sample(k, augment)
        plain = self.table.sample(k, augment=False)["image"]  # draws nothing
        mirrored = torch.equal(out["image"], plain.flip(-1))
        assert mirrored or torch.equal(out["image"], plain)  # the crops are not mirror-symmetric
        self.log.append((k, mirrored))
        return out


def _draw(pairs: Dataset, seed: int, items: list[int]) -> tuple[list, torch.Tensor]:
    torch.manual_seed(seed)
    out = [pairs[i] for i in items]
    return out, torch.get_rng_state()


def _assert_same_pairs(old: Dataset, new: Dataset, old_log: list, new_log: list) -> None:
    items = list(range(len(old))) * 2
    for seed in (0, 1, 2024):
        old_log.clear()
        new_log.clear()
        old_out, old_state = _draw(old, seed, items)
        new_out, new_state = _draw(new, seed, items)
        assert new_log == old_log  # the same faces as A and B, the same mirror flags, in the same order
        assert {m for _, m in old_log} == {False, True} and len({k for k, _ in old_log}) > len(old) // 2
        assert torch.equal(new_state, old_state)  # and nothing drawn more or less
        for o, n in zip(old_out, new_out):
            for side in ("a", "b"):
                assert o[side].keys() == n[side].keys()
                for key, value in o[side].items():
                    assert torch.equal(n[side][key], value), (side, key)


def test_synthetic_pairs_draw_as_before() -> None:
    dm = SyntheticDataModule(
        image_size=64, num_train_identities=4, num_test_identities=2, train_samples=40, val_pairs=1, seed=3
    )
    dm.setup("fit")
    assert isinstance(dm.train_set, UnpairedPairs)
    old_pool, new_pool = RecordingPool(dm.train_set.pool), RecordingPool(dm.train_set.pool)
    old, new = OldSyntheticTrainPairs(old_pool, True), type(dm.train_set)(new_pool, True)
    assert len(new) == len(old) == 40
    _assert_same_pairs(old, new, old_pool.log, new_pool.log)
    # every face image is the old conversion of the rendered pixels
    rendered = dm.train_set.pool.images.numpy()
    for k in range(4):
        assert torch.equal(dm.train_set.pool.sample(k, False)["image"], old_pool_sample_image(rendered, k))


def _write_folder(root: Path, subjects: int = 4, per_subject: int = 3) -> Path:
    """A prepared folder (eet-prepare's layout) of random 64 px crops; AU values around the threshold."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    levels = [0.0, 1.9999, 2.0, 2.0001, 3.0, 5.0]
    for s in range(subjects):
        for k in range(per_subject + 1):
            path = f"images/s{s}_{k}.png"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / path)
            row = {
                "path": path,
                "subject": f"S{s}",
                "split": "test" if k == per_subject else "train",
                "pose": 90,
                "gaze": ("left", "frontal", "right")[(s + k) % 3],
                "emotion": "",
                "source": path,
            }
            row.update(
                {au_column(a): levels[(s * 7 + k * 3 + j) % len(levels)] for j, a in enumerate(DISFA_AUS)}
            )
            rows.append(row)
    assert set(BASE_COLUMNS) <= set(rows[0])
    write_manifest(root / "manifest.csv", rows, DISFA_AUS)
    (root / "summary.json").write_text(json.dumps({"dataset": "folder"}))
    return root


def test_manifest_pairs_draw_as_before(tmp_path: Path) -> None:
    dm = FolderDataModule(root=str(_write_folder(tmp_path)), image_size=64, num_workers=0, mirror=True)
    dm.setup("fit")
    assert isinstance(dm.train_set, TrainPairs) and isinstance(dm.train_set, UnpairedPairs)
    table = FaceTable(
        dm.manifest, dm._train_rows, dm.identities, dm.pose_values, build_augmentation(True, 0.0), 64
    )
    old_table, new_table = RecordingTable(table), RecordingTable(table)
    old, new = OldManifestTrainPairs(old_table), TrainPairs(new_table)
    assert len(new) == len(old) == 12
    _assert_same_pairs(old, new, old_table.log, new_table.log)
    # with colour jitter (one more seed per face from torch) the images are the same too
    jitter = FaceTable(
        dm.manifest, dm._train_rows, dm.identities, dm.pose_values, build_augmentation(True, 0.3), 64
    )
    torch.manual_seed(5)
    old_out = [OldManifestTrainPairs(jitter)[i] for i in range(12)]
    torch.manual_seed(5)
    new_out = [TrainPairs(jitter)[i] for i in range(12)]
    for o, n in zip(old_out, new_out):
        for side in ("a", "b"):
            assert torch.equal(o[side]["image"], n[side]["image"]) and o[side]["pose"] == n[side]["pose"]
    # the images are the old conversion of the decoded crops
    plain = table.sample(0, augment=False)["image"]
    crop = np.array(Image.open(tmp_path / dm.manifest.paths[dm._train_rows[0]]).convert("RGB"))
    assert torch.equal(plain, old_manifest_image(crop))


# --------------------------------------------------------------------------------------------------
# image sizes, occurrence threshold, evaluation settings


def test_one_image_size_check_with_the_messages_it_had() -> None:
    assert nets_config.SUPPORTED_IMAGE_SIZES is SUPPORTED_IMAGE_SIZES is R.SUPPORTED_SIZES
    assert SUPPORTED_IMAGE_SIZES == (64, 128, 256)
    assert check_image_size(np.int64(128), "x") == 128
    with pytest.raises(ValueError, match=r"arch\.image_size must be one of \(64, 128, 256\), got 32"):
        ArchConfig(image_size=32)
    with pytest.raises(ValueError, match=r"data\.image_size must be one of \(64, 128, 256\), got 100"):
        SyntheticDataModule(image_size=100)
    with pytest.raises(ValueError, match=r"^size must be one of \(64, 128, 256\), got True"):
        R.render_face(
            R.make_identity(0),
            1,
            np.zeros(12, np.float32),
            1,
            R.sample_nuisance(np.random.default_rng(0)),
            True,
        )


def test_one_occurrence_threshold(tmp_path: Path) -> None:
    assert au_occurrence_threshold(5) == 2.0 and au_occurrence_threshold(4) == 1.5
    dm = FolderDataModule(root=str(_write_folder(tmp_path)), image_size=64, num_workers=0)
    aus = dm.manifest.aus[dm._train_rows]
    rates = dm.occurrence_rates()
    np.testing.assert_array_equal(rates, (aus > 2.0).mean(0))  # the hard-coded form it replaced
    assert 0 < rates.min() and rates.max() < 1  # 2.0 itself does not occur, 2.0001 does
    weights = au_occurrence_weights(torch.from_numpy(aus), 5).numpy()  # eq. 5 from the same occurrences
    np.testing.assert_allclose(weights, (1 / rates) / (1 / rates).sum(), rtol=1e-6)
    np.testing.assert_allclose(dm.info.au_weights, weights, rtol=0)


def test_each_datamodule_declares_its_evaluation_settings() -> None:
    classes = [
        DISFADataModule,
        RaFDDataModule,
        MMIDataModule,
        CFDDataModule,
        FolderDataModule,
        SyntheticDataModule,
    ]
    for cls in classes:
        old_name = cls.__name__.lower().replace("datamodule", "")  # how they were looked up
        assert "evaluation_settings" in vars(cls), cls.__name__
        assert P.protocol_settings(cls) == OLD_PAPER_SETTINGS[old_name]
    # those the old table did not name got the folder's; so do DataModules that declare nothing
    for other in (ManifestDataModule, EETDataModule, object()):
        assert P.protocol_settings(other) == OLD_PAPER_SETTINGS["folder"]
