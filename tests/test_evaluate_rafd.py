"""`eet-evaluate` end to end on a miniature of RaFD: the seeded raw download (tests/miniatures.py) through
`eet-prepare`, a tiny EET trained a couple of steps per stage with `eet-fit`, scorers trained by
`--train-scorers`, the paper's RaFD protocols (expression with 5 partners, identity, gaze with 5
partners), `--generated` folders, and the labels-only accessor of the test split that the protocols
draw their pairs from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import miniatures as M
from eet_lightning.aus import OPENFACE_AUS
from eet_lightning.cli.evaluate import _real_faces
from eet_lightning.cli.evaluate import main as evaluate
from eet_lightning.cli.fit import main as fit
from eet_lightning.cli.prepare import main as prepare
from eet_lightning.data import manifest as manifest_module
from eet_lightning.data.manifest import GAZES, au_column
from eet_lightning.data.synthetic import EMOTIONS
from eet_lightning.datamodules import RaFDDataModule
from eet_lightning.evaluation import protocols as P
from eet_lightning.pixels import to_uint8

AUS = list(OPENFACE_AUS)  # RaFD's 17 OpenFace AUs (eet-prepare --aus 17)
# Three test subjects (RaFD's real split has 7): the identity protocol takes the expression of a third
# subject, neither of the pair's. 02 and 05 train. Subject 03 lost one image to OpenFace: 17 test images.
TEST_SUBJECTS = ("01", "03", "09")
TRAIN_SUBJECTS = ("02", "05")
N_TEST = 17
PARTNERS = 5  # the paper's RaFD protocol: 5 partners per test image, for expression and for gaze
IDENTITY_PAIRS = 20  # per kind (the paper's 5,000 would take minutes here)


def _datamodule(root: Path) -> RaFDDataModule:
    return RaFDDataModule(root=str(root), image_size=64, aus=AUS, batch_size=2, num_workers=0)


def _manifest_rows(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _pairs(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def rafd(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("rafd_eval")
    M.write_rafd(base / "raw", base / "openface", seed=0)
    prepared = base / "prepared"
    rc = prepare(
        [
            "rafd", "--root", str(base / "raw"), "--out", str(prepared),
            "--openface", str(base / "openface"), "--aus", "17",
            "--min-score", "0.5", "--size", "64",  # the thresholds of tests/test_prepare.py
            "--test-subjects", ",".join(TEST_SUBJECTS), "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    cfg = yaml.safe_load(tiny_config.read_text())
    cfg["data"] = {
        "class_path": "eet_lightning.datamodules.RaFDDataModule",
        "init_args": {
            "root": str(prepared),
            "image_size": 64,
            "aus": AUS,
            "batch_size": 2,
            "num_workers": 0,
            "val_pairs": 2,
        },
    }
    cfg["logger"] = "none"
    config = base / "rafd.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = base / "run"
    assert fit(["--config", str(config), "--run_dir", str(run)]) == 0
    out = base / "eval"
    rc = evaluate(
        [
            "--ckpt", str(run / "stage2" / "last.ckpt"), "--config", str(run / "config.yaml"),
            "--out", str(out), "--train-scorers", "--scorer-epochs", "1",
            "--identity-pairs", str(IDENTITY_PAIRS), "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    return {"prepared": prepared, "run": run, "eval": out}


def test_test_labels_come_from_the_manifest_without_decoding_an_image(
    rafd: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = _datamodule(rafd["prepared"])

    def no_decoding(path, *args, **kwargs):
        raise AssertionError(f"decoded {path} while reading labels")

    monkeypatch.setattr(manifest_module, "load_training_image", no_decoding)
    labels = dm.test_labels()
    faces = _real_faces(dm)  # what eet-evaluate's protocols draw their pairs from
    rows = [r for r in _manifest_rows(rafd["prepared"]) if r["split"] == "test"]
    assert len(labels) == len(faces) == len(rows) == N_TEST
    assert labels.paths == [r["path"] for r in rows] == faces.names
    assert labels.subjects == [r["subject"] for r in rows]
    assert labels.yaw.tolist() == [int(r["pose"]) for r in rows]
    assert labels.pose.tolist() == [[45, 90, 135].index(int(r["pose"])) for r in rows]
    assert labels.gaze.tolist() == [GAZES.index(r["gaze"]) for r in rows] == faces.gaze.tolist()
    assert labels.emotion.tolist() == [EMOTIONS.index(r["emotion"]) for r in rows]
    expected_aus = np.array([[float(r[au_column(a)]) for a in AUS] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(labels.aus, expected_aus)
    np.testing.assert_array_equal(faces.aus, expected_aus)
    # held-out people get identity classes after the n = 2 training subjects, one per subject
    np.testing.assert_array_equal(faces.identity, labels.identity)
    assert labels.identity.min() >= len(TRAIN_SUBJECTS) == dm.info.num_identities
    by_subject = dict(zip(labels.subjects, labels.identity.tolist()))
    assert len(set(by_subject.values())) == len(TEST_SUBJECTS) == len(by_subject)
    train = dm.labels("train")
    assert sorted(set(train.subjects)) == list(TRAIN_SUBJECTS) and set(train.identity.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        dm.labels("val")
    monkeypatch.undo()
    # images are read by row only when scored, the same as the un-augmented test table's
    images = faces.load(np.array([0, 7, 16]))
    table = dm.table("test", augment=False)
    assert images.shape == (3, 3, 64, 64)
    for got, k in zip(images, (0, 7, 16)):
        torch.testing.assert_close(got, table.sample(k, augment=False)["image"], rtol=0, atol=0)


def test_eet_evaluate_on_rafd_writes_every_output(rafd: dict[str, Path]) -> None:
    out = rafd["eval"]
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "results.md", "chart.png", "examples.png", "pairs", "scorers"} <= names
    assert {p.name for p in (out / "scorers").iterdir()} == {"au.ckpt", "gaze.ckpt", "identity.ckpt"}
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "rafd" and res["aus"] == AUS
    assert res["protocols"] == ["expression", "identity", "gaze"]  # RaFD's, no ground truth
    assert res["settings"] == {
        "expression_partners": PARTNERS,
        "identity_pairs": IDENTITY_PAIRS,
        "gaze_partners": PARTNERS,
    }
    expr = res["expression"]
    assert expr["rows"] == 2 * PARTNERS * N_TEST and set(expr["methods"]) == {"eet", "unchanged_target"}
    for scores in (*expr["methods"].values(), expr["scorer_on_real"]):
        icc, mse = np.array(scores["icc"]), np.array(scores["mse"])
        assert icc.shape == mse.shape == (len(AUS),)
        assert np.isfinite(icc).all() and (np.abs(icc) <= 1).all() and (mse >= 0).all()
        assert scores["icc_mean"] == pytest.approx(icc.mean())
        assert scores["mse_mean"] == pytest.approx(mse.mean())
    assert expr["methods"]["eet"]["rows_scored"] == 2 * PARTNERS * N_TEST
    ident = res["identity"]
    assert ident["rows"] == 2 * IDENTITY_PAIRS and set(ident["methods"]) == {"real", "eet"}
    for scores in ident["methods"].values():
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["tar_at_far"] <= 1
    gaze = res["gaze"]
    assert gaze["rows"] == PARTNERS * N_TEST and set(gaze["methods"]) == {"real", "eet"}
    for scores in gaze["methods"].values():  # a multiple of 1/85: a share of the 85 rows
        assert scores["accuracy"] * gaze["rows"] == pytest.approx(round(scores["accuracy"] * gaze["rows"]))
    table = (out / "results.md").read_text()
    for needle in ("Dataset: rafd", "| 45 |", "| 23 |", "| Avg |", "TAR@FAR=1%", "(170 generated images",
                   "(40 pairs", "Gaze transfer (85 pairs)"):  # fmt: skip
        assert needle in table, needle
    for png in ("chart.png", "examples.png"):
        with Image.open(out / png) as im:
            assert im.mode in ("RGB", "RGBA") and min(im.size) >= 64, png
            assert np.asarray(im.convert("L")).std() > 5, f"{png} is blank"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".eval-")]  # no temp folder left


def test_pair_lists_follow_the_rafd_protocol(rafd: dict[str, Path]) -> None:
    labels = _datamodule(rafd["prepared"]).test_labels()
    subject = np.array(labels.subjects)
    gaze_of = labels.gaze
    expr = _pairs(rafd["eval"] / "pairs" / "expression.csv")
    assert len(expr) == 2 * PARTNERS * N_TEST  # each test image with 5 partners, both swapped images
    target = np.array([int(r["target"]) for r in expr])
    source = np.array([int(r["source"]) for r in expr])
    assert [int(r["row"]) for r in expr] == list(range(len(expr)))
    np.testing.assert_array_equal(target[0::2], np.repeat(np.arange(N_TEST), PARTNERS))
    np.testing.assert_array_equal(target[0::2], source[1::2])
    np.testing.assert_array_equal(source[0::2], target[1::2])
    assert (subject[target] != subject[source]).all()
    assert [r["target_name"] for r in expr] == [labels.paths[t] for t in target]
    assert [r["source_name"] for r in expr] == [labels.paths[s] for s in source]

    ident = _pairs(rafd["eval"] / "pairs" / "identity.csv")
    real, other, donor = (np.array([int(r[c]) for r in ident]) for c in ("real", "target", "source"))
    same = np.array([r["same"] == "1" for r in ident])
    assert len(ident) == 2 * IDENTITY_PAIRS and same.sum() == IDENTITY_PAIRS
    assert (subject[real][same] == subject[other][same]).all() and (real[same] != other[same]).all()
    assert (subject[real][~same] != subject[other][~same]).all()
    assert (subject[donor] != subject[other]).all() and (subject[donor] != subject[real]).all()

    gz = _pairs(rafd["eval"] / "pairs" / "gaze.csv")
    g_target = np.array([int(r["target"]) for r in gz])
    g_source = np.array([int(r["source"]) for r in gz])
    assert len(gz) == PARTNERS * N_TEST
    np.testing.assert_array_equal(g_target, np.repeat(np.arange(N_TEST), PARTNERS))
    assert (gaze_of[g_target] != gaze_of[g_source]).all() and (subject[g_target] != subject[g_source]).all()

    # seeded: the same lists come back from the labels alone
    faces = _real_faces(_datamodule(rafd["prepared"]))
    settings = {"expression_partners": PARTNERS, "identity_pairs": IDENTITY_PAIRS, "gaze_partners": PARTNERS}
    for protocol in P.PROTOCOLS:
        again = P.build_pairs(protocol, faces, settings, seed=0)
        written = P.read_pairs(rafd["eval"] / "pairs" / f"{protocol}.csv")
        assert set(written) == set(again)
        for key in again:
            np.testing.assert_array_equal(written[key], again[key], err_msg=f"{protocol}.{key}")


def _write_copies(folder: Path, protocol: str, rows: dict[str, np.ndarray], column: str, dm) -> None:
    """A stand-in "method" whose image for each row is the real image of ``column`` (bit-exact)."""
    (folder / protocol).mkdir(parents=True)
    for r, k in zip(rows["row"], rows[column]):
        image = to_uint8(dm.load_test_images([int(k)]))[0]
        Image.fromarray(image).save(P.generated_path(folder, protocol, int(r)))


def test_generated_folder_on_rafd_and_a_missing_image(
    rafd: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    dm = _datamodule(rafd["prepared"])
    pairs = {p: P.read_pairs(rafd["eval"] / "pairs" / f"{p}.csv") for p in P.PROTOCOLS}
    copies = tmp_path / "copies"
    # expression and gaze: the real source itself (a perfect transfer of AUs and gaze); identity: the
    # partner's real image (what "real" scores)
    _write_copies(copies, "expression", pairs["expression"], "source", dm)
    _write_copies(copies, "gaze", pairs["gaze"], "source", dm)
    _write_copies(copies, "identity", pairs["identity"], "target", dm)
    scorers = rafd["eval"] / "scorers"
    args = [
        "--ckpt", str(rafd["run"] / "stage2" / "last.ckpt"), "--config", str(rafd["run"] / "config.yaml"),
        "--au-estimator", str(scorers / "au.ckpt"), "--identity-model", str(scorers / "identity.ckpt"),
        "--gaze-classifier", str(scorers / "gaze.ckpt"), "--identity-pairs", str(IDENTITY_PAIRS),
        "--generated", str(copies), "--generated-name", "copy", "--examples", "3", "--no-progress",
    ]  # fmt: skip
    out = tmp_path / "eval"
    assert evaluate([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    first = json.loads((rafd["eval"] / "results.json").read_text())
    expr = res["expression"]["methods"]
    assert set(expr) == {"eet", "copy", "unchanged_target"}
    # the same scorer on bit-identical images: zero MSE, perfect agreement
    assert expr["copy"]["mse_mean"] == 0.0
    assert expr["copy"]["icc"] == pytest.approx([1.0] * len(AUS))
    assert expr["copy"]["rows_scored"] == 2 * PARTNERS * N_TEST
    # EET's scores do not depend on which other methods are scored beside it
    for key in ("icc", "mse"):
        assert expr["eet"][key] == pytest.approx(first["expression"]["methods"]["eet"][key])
    assert res["identity"]["methods"]["copy"] == pytest.approx(res["identity"]["methods"]["real"])
    assert res["gaze"]["methods"]["copy"] == res["gaze"]["methods"]["real"]
    assert "| copy |" in (out / "results.md").read_text()

    # one image of the expression pair list missing: one clear error, nothing written
    missing = P.generated_path(copies, "expression", 7)
    missing.unlink()
    bad = tmp_path / "eval_bad"
    assert evaluate([*args, "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eet-evaluate: error: --generated:") and err.count("\n") == 1, err
    assert f"{copies} lacks 1 of the {2 * PARTNERS * N_TEST} images of the expression pair list" in err
    assert "expression/000007.png" in err and "Traceback" not in err
    assert not bad.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copies", "eval"]  # no temp folder left
