"""The synthetic DataModule: unpaired batches, labels, held-out identities, ground truth, AU weights."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from eet_lightning.data import synthetic as R
from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.losses import au_occurrence_weights


def _dm(**kw) -> SyntheticDataModule:
    args = dict(
        image_size=64,
        num_train_identities=5,
        num_test_identities=3,
        train_samples=40,
        val_pairs=6,
        batch_size=8,
        seed=3,
    )
    args.update(kw)
    return SyntheticDataModule(**args)


def test_training_batches_are_unpaired_and_labelled() -> None:
    dm = _dm()
    dm.setup("fit")
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    a, b = batch["a"], batch["b"]
    assert a["image"].shape == (8, 3, 64, 64) and a["image"].min() >= -1 and a["image"].max() <= 1
    assert a["aus"].shape == (8, 12) and (a["aus"] >= 0).all() and (a["aus"] <= 5).all()
    assert (a["identity"] != b["identity"]).all()  # the two sides always show different people
    assert a["identity"].max() < 5 and a["pose"].max() < 3 and a["gaze"].max() < 3
    info = dm.info
    assert info.num_identities == 5 and info.num_poses == 3 and info.aus == list(R.DISFA_AUS)
    expected = au_occurrence_weights(torch.from_numpy(dm.train_records.aus))
    torch.testing.assert_close(torch.tensor(info.au_weights), expected)


def test_mirror_flips_image_pose_and_gaze() -> None:
    dm = _dm()
    dm.setup("fit")
    pool = dm.train_set.pool
    plain, mirrored = pool.sample(0, False), pool.sample(0, True)
    torch.testing.assert_close(mirrored["image"], plain["image"].flip(-1))
    assert int(mirrored["pose"]) == 2 - int(plain["pose"]) and int(mirrored["gaze"]) == 2 - int(plain["gaze"])
    torch.testing.assert_close(mirrored["aus"], plain["aus"])


def test_validation_pairs_are_held_out_with_exact_truth() -> None:
    dm = _dm()
    dm.setup("validate")
    pairs = dm.held_out_pairs(6, seed=0)
    ra, rb = pairs["records_a"], pairs["records_b"]
    assert (ra.identity >= 5).all() and (rb.identity >= 5).all()  # held-out labels come after training ones
    assert set(ra.identity_seed).isdisjoint(set(dm.train_identity_seeds))
    assert (ra.identity != rb.identity).all()
    k = 2

    def a_with_b_aus(gaze: int) -> np.ndarray:
        identity = R.make_identity(int(ra.identity_seed[k]))
        return R.render_face(identity, int(ra.pose[k]), rb.aus[k], gaze, ra.nuisance[k], 64)

    np.testing.assert_array_equal(pairs["truth_a"][k], a_with_b_aus(int(rb.gaze[k])))
    # the AU region's reference: B's AUs, everything else A's own (gaze included)
    np.testing.assert_array_equal(pairs["aus_only_a"][k], a_with_b_aus(int(ra.gaze[k])))
    batch = next(iter(dm.val_dataloader()))
    assert batch["a"]["truth"].shape == (6, 3, 64, 64)


def test_au_subset_and_single_pose() -> None:
    dm = _dm(aus=[12, 1], poses=[1], mirror=True)
    dm.setup("fit")
    sample = dm.train_set.pool.sample(0, True)
    assert sample["aus"].shape == (2,) and int(sample["pose"]) == 0 and dm.info.num_poses == 1
    torch.testing.assert_close(sample["aus"], torch.from_numpy(dm.train_records.aus[0, [6, 0]]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aus": [1, 7]}, "unknown AU"),
        ({"image_size": 96}, "image_size"),
        ({"poses": [0, 1]}, "mirror"),
        ({"poses": [4]}, "poses"),
        ({"num_train_identities": 1}, "num_train_identities"),
    ],
)
def test_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _dm(**kwargs)


def test_cache_reuses_rendered_pool(tmp_path: Path) -> None:
    dm = _dm(cache_dir=str(tmp_path))
    dm.setup("fit")
    files = sorted(tmp_path.glob("synthetic-*.npy"))
    assert len(files) == 2  # training pool + held-out pairs
    again = _dm(cache_dir=str(tmp_path))
    again.setup("fit")
    torch.testing.assert_close(again.train_set.pool.images, dm.train_set.pool.images)
    assert not list(tmp_path.glob("*.tmp.npy"))


def test_runs_sharing_a_cache_folder_do_not_collide(tmp_path: Path) -> None:
    """Several runs started at once (e.g. the ablation's variants) render and write the same cache file."""
    dm = _dm(cache_dir=str(tmp_path))
    start = threading.Barrier(3)

    def render() -> np.ndarray:
        start.wait(timeout=10)  # all three writers are past the "not cached yet" check
        return np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: dm._cached("pool", {"k": 1}, render), range(3)))
    for r in results:
        np.testing.assert_array_equal(r, results[0])
    (cached,) = tmp_path.glob("synthetic-pool-*.npy")
    np.testing.assert_array_equal(np.load(cached), results[0])
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]  # no temporary files left
