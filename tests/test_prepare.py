"""`eet-prepare` on seeded miniatures of DISFA, RaFD, CFD, MMI and a photo folder (real layouts), the
DataModules on its output, two training steps of each stage per dataset, resume, and bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import miniatures as M
from eet_lightning.aus import DISFA_AUS, OPENFACE_AUS
from eet_lightning.cli.fit import main as fit_main
from eet_lightning.cli.prepare import main as prepare
from eet_lightning.data.manifest import au_column
from eet_lightning.datamodules import (
    CFDDataModule,
    DISFADataModule,
    FolderDataModule,
    MMIDataModule,
    RaFDDataModule,
)

# The renderer's cartoon faces score a little lower with MTCNN than photographs do.
SCORE = ["--min-score", "0.5", "--size", "64", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MTCNN and the tiny nets: one thread beats a contended pool
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("raw")
    M.write_all(out, seed=0)
    return out


def _args(dataset: str, raw: Path, out: Path) -> list[str]:
    args = [dataset, "--root", str(raw / dataset), "--out", str(out), *SCORE]
    if dataset in ("rafd", "cfd", "mmi"):
        args += ["--openface", str(raw / f"{dataset}_openface")]
    if dataset == "rafd":
        args += ["--aus", "17"]
    if dataset == "folder":
        args += ["--labels", str(raw / "folder" / "labels.csv")]
    return args


@pytest.fixture(scope="module")
def prepared(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("prepared")
    out = {}
    for dataset in ("disfa", "rafd", "cfd", "mmi", "folder"):
        assert prepare(_args(dataset, raw, base / dataset)) == 0, dataset
        out[dataset] = base / dataset
    return out


def _manifest(path: Path) -> list[dict[str, str]]:
    with (path / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


EXPECTED = {  # dataset: (faces written, skipped by reason, train subjects, test subjects)
    "disfa": (29, {"no_face": 1}, 3, 2),
    "rafd": (29, {"openface_failed": 1}, 3, 2),
    "cfd": (11, {}, None, None),
    "mmi": (17, {"openface_failed": 1}, 3, 2),
    "folder": (10, {}, 3, 2),
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_prepare_writes_crops_manifest_and_summary(prepared: dict[str, Path], dataset: str) -> None:
    out = prepared[dataset]
    written, skipped, n_train, n_test = EXPECTED[dataset]
    summary = json.loads((out / "summary.json").read_text())
    rows = _manifest(out)
    assert len(rows) == summary["counts"]["written"] == written
    assert summary["skipped_by_reason"] == skipped
    aus = OPENFACE_AUS if dataset == "rafd" else DISFA_AUS
    assert list(rows[0])[:7] == ["path", "subject", "split", "pose", "gaze", "emotion", "source"]
    assert [c for c in rows[0] if c.startswith("AU")] == [au_column(a) for a in aus]
    for row in rows[:: max(1, len(rows) // 6)]:
        with Image.open(out / row["path"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
        assert all(0.0 <= float(row[au_column(a)]) <= 5.0 for a in aus)
    train = {r["subject"] for r in rows if r["split"] == "train"}
    test = {r["subject"] for r in rows if r["split"] == "test"}
    if n_train is not None:
        assert (len(train), len(test)) == (n_train, n_test)
        assert not train & test  # subject-disjoint
    assert not list(out.rglob("*.tmp")) and not (out / ".eet-prepare").exists()
    # atomic writes go through private temporary files; the outputs get a plain file's mode
    umask = os.umask(0)
    os.umask(umask)
    for path in (out / rows[0]["path"], out / "summary.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_disfa_labels_and_split_follow_the_download(prepared: dict[str, Path], raw: Path) -> None:
    rows = _manifest(prepared["disfa"])
    truth = {}
    for subject in M.DISFA_SUBJECTS:
        for au in DISFA_AUS:
            lines = (
                (raw / "disfa" / "ActionUnit_Labels" / subject / f"{subject}_au{au}.txt").read_text().split()
            )
            for line in lines:
                frame, value = line.split(",")
                truth[(subject, int(frame), au)] = float(value)
    for row in rows:
        frame = int(row["source"].rsplit("#", 1)[1])
        assert row["source"].startswith(f"Videos_LeftCamera/LeftVideo{row['subject']}_comp.avi")
        for au in DISFA_AUS:
            assert float(row[au_column(au)]) == truth[(row["subject"], frame, au)]
    assert {r["subject"] for r in rows if r["split"] == "test"} == {"SN024", "SN025"}
    blank_subject, blank_frame = M.DISFA_BLANK
    summary = json.loads((prepared["disfa"] / "summary.json").read_text())
    assert summary["skipped_items"] == [
        {"item": f"{blank_subject}/{blank_subject}_{blank_frame:05d}", "reason": "no_face"}
    ]


def test_rafd_keeps_three_cameras_with_pose_gaze_emotion(prepared: dict[str, Path]) -> None:
    rows = _manifest(prepared["rafd"])
    assert {int(r["pose"]) for r in rows} == {45, 90, 135}  # 0 and 180 degree images left out
    assert {r["gaze"] for r in rows} == {"left", "frontal"}
    assert {r["emotion"] for r in rows} == {"happy", "neutral"}
    assert not any(M.RAFD_FAILED in r["path"] for r in rows)


def test_datamodules_expose_info_and_pairs(prepared: dict[str, Path]) -> None:
    dm = RaFDDataModule(
        root=str(prepared["rafd"]), image_size=64, aus=OPENFACE_AUS, batch_size=4, num_workers=0
    )
    info = dm.info
    assert info.aus == list(OPENFACE_AUS) and info.num_identities == 3 and info.num_poses == 3
    assert len(info.au_weights) == 17 and abs(sum(info.au_weights) - 1) < 1e-5
    rates = dm.occurrence_rates()
    present = rates > 0
    # eq. 5: weights inversely proportional to the occurrence rates
    w = np.asarray(info.au_weights)[present]
    np.testing.assert_allclose(w * rates[present], (w * rates[present])[0], rtol=1e-4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    a, b = batch["a"], batch["b"]
    assert a["image"].shape == (4, 3, 64, 64) and a["aus"].shape == (4, 17)
    assert a["image"].min() >= -1 and a["image"].max() <= 1
    assert (a["identity"] != b["identity"]).all()  # unpaired: different subjects
    assert set(a) == {"image", "aus", "identity", "pose", "gaze", "emotion"}
    val = next(iter(dm.val_dataloader()))
    assert (val["a"]["identity"] >= 3).all() and (val["a"]["identity"] != val["b"]["identity"]).all()
    d = DISFADataModule(root=str(prepared["disfa"]), image_size=64, num_workers=0)
    assert d.info.num_identities == 3 and d.info.num_poses == 1 and d.info.aus == list(DISFA_AUS)
    assert CFDDataModule(root=str(prepared["cfd"]), image_size=64).info.num_poses == 1
    assert MMIDataModule(root=str(prepared["mmi"]), image_size=64).info.num_identities == 3
    assert FolderDataModule(root=str(prepared["disfa"]), image_size=64).info.num_identities == 3


def test_mirror_flips_image_pose_and_gaze(prepared: dict[str, Path]) -> None:
    dm = RaFDDataModule(root=str(prepared["rafd"]), image_size=64, aus=OPENFACE_AUS, num_workers=0)
    plain = dm.table("train", augment=False)
    mirrored = dm.table("train", augment=True)
    k = next(i for i in range(len(plain)) if plain.gaze[i] == 0 and plain.pose[i] == 0)  # left gaze, 45 deg
    base = plain.sample(k, augment=False)
    seen = set()
    torch.manual_seed(0)
    for _ in range(20):
        s = mirrored.sample(k, augment=True)
        flipped = torch.allclose(s["image"], base["image"].flip(-1))
        assert flipped or torch.allclose(s["image"], base["image"])
        assert int(s["gaze"]) == (2 if flipped else 0) and int(s["pose"]) == (2 if flipped else 0)
        seen.add(flipped)
    assert seen == {True, False}


def test_datamodule_refuses_the_wrong_dataset_and_bad_manifests(
    prepared: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="holds a 'rafd' preparation"):
        DISFADataModule(root=str(prepared["rafd"]))
    with pytest.raises(ValueError, match="data.root must be set"):
        DISFADataModule(root=None)
    with pytest.raises(ValueError, match="no column AU07"):
        DISFADataModule(root=str(prepared["disfa"]), aus=[1, 7])
    with pytest.raises(ValueError, match="summary.json not found"):
        DISFADataModule(root=str(tmp_path))

    def broken(edit) -> Path:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(prepared["disfa"], copy)
        rows = _manifest(copy)
        header = list(rows[0])
        edit(rows, header)
        with (copy / "manifest.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        return copy

    def drop_column(rows, header):
        header.remove("AU12")

    def nan_value(rows, header):
        rows[3]["AU04"] = "nan"

    def too_big(rows, header):
        rows[5]["AU26"] = "5.5"

    for edit, message in (
        (drop_column, "no column AU12"),
        (nan_value, r"line 5: column AU04 is 'nan'"),
        (too_big, r"line 7: AU26 = 5.5 is outside \[0, 5\]"),
    ):
        copy = broken(edit)
        with pytest.raises(ValueError, match=message) as err:
            DISFADataModule(root=str(copy))
        assert str(copy / "manifest.csv") in str(err.value)


@pytest.mark.parametrize(
    ("dataset", "module", "aus"),
    [
        ("disfa", "DISFADataModule", None),
        ("rafd", "RaFDDataModule", list(OPENFACE_AUS)),
        ("cfd", "CFDDataModule", None),
        ("mmi", "MMIDataModule", None),
    ],
)
def test_two_training_steps_of_each_stage(
    prepared: dict[str, Path], tiny_config: Path, tmp_path: Path, dataset: str, module: str, aus
) -> None:
    cfg = yaml.safe_load(tiny_config.read_text())
    init = {
        "root": str(prepared[dataset]),
        "image_size": 64,
        "batch_size": 2,
        "num_workers": 0,
        "val_pairs": 2,
    }
    if aus:
        init["aus"] = aus
    cfg["data"] = {"class_path": f"eet_lightning.datamodules.{module}", "init_args": init}
    cfg["logger"] = "none"
    config = tmp_path / f"{dataset}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert fit_main(["--config", str(config), "--run_dir", str(run)]) == 0
    s1 = torch.load(run / "stage1" / "last.ckpt", map_location="cpu", weights_only=False)
    s2 = torch.load(run / "stage2" / "last.ckpt", map_location="cpu", weights_only=False)
    assert s1["global_step"] == 2 and s2["global_step"] == 4
    info = globals()[module](**init).info
    arch = s2["hyper_parameters"]["arch"]
    assert arch["num_identities"] == info.num_identities and arch["num_poses"] == info.num_poses
    assert arch["num_aus"] == len(aus or DISFA_AUS)
    np.testing.assert_allclose(s2["state_dict"]["au_weights"].numpy(), info.au_weights, rtol=1e-6)
    assert (run / "test_grid.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------------
# Resume, overwrite, and nothing half-written


def test_rerun_is_a_no_op_and_other_settings_need_overwrite(
    prepared: dict[str, Path], raw: Path, capsys
) -> None:
    out = prepared["folder"]
    before = (out / "manifest.csv").read_bytes()
    assert prepare(_args("folder", raw, out)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert prepare([*_args("folder", raw, out), "--seed", "3"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "manifest.csv").read_bytes() == before


def test_interrupted_run_resumes_where_it_stopped(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eet_lightning.data.prepare import common

    out = tmp_path / "out"
    real = common.write_image_atomic
    calls = {"n": 0}

    def flaky(path, image, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(path, image, *a, **k)

    monkeypatch.setattr(common, "write_image_atomic", flaky)
    args = [*_args("folder", raw, out), "--batch-size", "2"]
    assert prepare(args) == 130
    assert not (out / "manifest.csv").exists() and not list(out.rglob("*.tmp"))
    journal = (out / ".eet-prepare" / "progress.jsonl").read_text().splitlines()
    assert len(journal) == 1 + 4  # settings + the two batches finished before the interruption
    counted = {"n": 0}

    def counting(path, image, *a, **k):
        counted["n"] += 1
        real(path, image, *a, **k)

    monkeypatch.setattr(common, "write_image_atomic", counting)
    assert prepare(args) == 0
    assert counted["n"] == 6  # only what was missing
    assert len(_manifest(out)) == 10 and not (out / ".eet-prepare").exists()


# ------------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file, exit status 2, nothing left in --out


def _copy(raw: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(raw / name, dst)
    if (raw / f"{name}_openface").is_dir():
        shutil.copytree(raw / f"{name}_openface", tmp_path / f"{name}_openface")
    return tmp_path


def _fails(args: list[str], out: Path, capsys, *needles: str) -> None:
    assert prepare(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("eet-prepare: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists(), "a failed run left output behind"


def test_missing_disfa_label_file(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "disfa")
    missing = base / "disfa" / "ActionUnit_Labels" / "SN002" / "SN002_au9.txt"
    missing.unlink()
    _fails(_args("disfa", base, tmp_path / "out"), tmp_path / "out", capsys, str(missing), "not found")


def test_label_frame_count_disagrees_with_video(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "disfa")
    for au in DISFA_AUS:
        path = base / "disfa" / "ActionUnit_Labels" / "SN003" / f"SN003_au{au}.txt"
        path.write_text(path.read_text() + f"{M.DISFA_FRAMES + 1},0\n")
    _fails(
        _args("disfa", base, tmp_path / "out"),
        tmp_path / "out",
        capsys,
        "SN003_au",
        "7 labelled frames",
        "6 frames",
    )


def test_disfa_intensity_outside_range(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "disfa")
    path = base / "disfa" / "ActionUnit_Labels" / "SN001" / "SN001_au12.txt"
    lines = path.read_text().splitlines()
    lines[1] = "2,7"
    path.write_text("\n".join(lines) + "\n")
    _fails(
        _args("disfa", base, tmp_path / "out"),
        tmp_path / "out",
        capsys,
        str(path),
        "line 2",
        "outside [0, 5]",
    )


def test_rafd_name_that_does_not_parse(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "rafd")
    bad = base / "rafd" / "Rafd090_07_Caucasian_female_happy.jpg"  # the gaze is missing
    shutil.copy(next((base / "rafd").glob("Rafd090_*.jpg")), bad)
    _fails(_args("rafd", base, tmp_path / "out"), tmp_path / "out", capsys, str(bad), "not a RaFD file name")


def test_openface_csv_without_au_columns(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "cfd")
    csv_path = next((base / "cfd_openface").glob("CFD-BF-*.csv"))
    lines = csv_path.read_text().splitlines()
    keep = [i for i, h in enumerate(lines[0].split(",")) if "AU" not in h]
    csv_path.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n")
    _fails(
        _args("cfd", base, tmp_path / "out"),
        tmp_path / "out",
        capsys,
        str(csv_path),
        "no AU intensity columns",
    )


def test_rafd_without_openface_is_refused(raw: Path, tmp_path: Path, capsys) -> None:
    args = ["rafd", "--root", str(raw / "rafd"), "--out", str(tmp_path / "out")]
    _fails(args, tmp_path / "out", capsys, "--openface")


def test_folder_label_out_of_range_and_nan(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "folder")
    labels = base / "folder" / "labels.csv"
    lines = labels.read_text().splitlines()
    cells = lines[3].split(",")
    cells[-1] = "6"
    labels.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    _fails(_args("folder", base, tmp_path / "out"), tmp_path / "out", capsys, str(labels), "line 4", "AU26")
    cells[-1] = "NaN"
    labels.write_text("\n".join([*lines[:3], ",".join(cells), *lines[4:]]) + "\n")
    _fails(_args("folder", base, tmp_path / "out"), tmp_path / "out", capsys, str(labels), "'NaN'")


def test_truncated_image_stops_cleanly_and_resume_finishes(raw: Path, tmp_path: Path, capsys) -> None:
    base = _copy(raw, tmp_path, "folder")
    victim = base / "folder" / "eve" / "eve_1.jpg"
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    assert prepare(_args("folder", base, out)) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "Traceback" not in err
    assert not (out / "manifest.csv").exists() and not list(out.rglob("*.tmp"))
    # skipping is an explicit choice, and is counted
    assert prepare([*_args("folder", base, tmp_path / "skip"), "--skip-unreadable"]) == 0
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["skipped_by_reason"] == {"unreadable": 1}
    # fixed file: the interrupted run resumes and finishes
    victim.write_bytes(good)
    assert prepare(_args("folder", base, out)) == 0
    assert len(_manifest(out)) == 10


def test_out_folder_with_foreign_files_is_refused(raw: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("keep me")
    assert prepare(_args("folder", raw, out)) == 2
    assert "holds no eet-prepare output" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "keep me"


def test_openface_single_csv_with_file_names(tmp_path: Path) -> None:
    from eet_lightning.data.openface import OpenFaceError, OpenFaceLabels

    rng = np.random.default_rng(0)
    aus = {a: 1.5 for a in OPENFACE_AUS}
    header = ["filename", *M.openface_header("video", spaced=True)]
    rows = [
        ["clip.avi", *M.openface_row("video", 1, aus, rng)],
        ["clip.avi", *M.openface_row("video", 2, aus, rng, success=False)],
        ["photo.jpg", *M.openface_row("video", 1, {**aus, 12: 4.25}, rng)],
    ]
    path = tmp_path / "all.csv"
    path.write_text("\n".join(", ".join(r) for r in [header, *rows]) + "\n")
    labels = OpenFaceLabels(path, [1, 12])
    frames = labels.for_video("clip")
    assert frames[2] is None and frames[1].tolist() == [1.5, 1.5]
    assert labels.for_image("photo").tolist() == [1.5, 4.25]
    assert labels.for_image("absent") is None  # no row: OpenFace failed on it
    rows[0][header.index(" AU12_r")] = "6.00"
    path.write_text("\n".join(", ".join(r) for r in [header, *rows]) + "\n")
    with pytest.raises(OpenFaceError, match=r"all.csv, line 2: .*AU12_r = '6.00'"):
        OpenFaceLabels(path, [1, 12])
    no_names = tmp_path / "clip.csv"
    no_names.write_text("\n".join(",".join(r[1:]) for r in [header, *rows]) + "\n")
    with pytest.raises(OpenFaceError, match="file-name column"):
        OpenFaceLabels(no_names, [1, 12])


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        (0, "../../outside.jpg", "is outside --root"),
        (0, "/etc/hostname", "is outside --root"),
        (1, "../../../x", "is not a plain name"),
        (1, "..", "is not a plain name"),
    ],
)
def test_folder_paths_stay_inside_root_and_out(
    raw: Path, tmp_path: Path, capsys, column: int, value: str, needle: str
) -> None:
    """A labels row cannot read an image outside --root (its path) or write a crop outside --out (its
    subject names the crop's folder); one message names the row, nothing is written."""
    base = _copy(raw, tmp_path, "folder")
    labels = base / "folder" / "labels.csv"
    (tmp_path / "outside.jpg").write_bytes((base / "folder" / "eve" / "eve_1.jpg").read_bytes())
    lines = labels.read_text().splitlines()
    header = lines[0].split(",")
    assert header[:2] == ["path", "subject"], header
    cells = lines[2].split(",")
    cells[column] = value
    labels.write_text("\n".join([*lines[:2], ",".join(cells), *lines[3:]]) + "\n")
    _fails(_args("folder", base, tmp_path / "out"), tmp_path / "out", capsys, str(labels), "line 3", needle)
    assert not list(tmp_path.glob("x*")) and not (tmp_path.parent / "x").exists()
