"""The quality report of every transfer (`eet_lightning.quality`): its fields on real photographs through
eet-transfer and on synthetic pairs, each warning's rule, the training-data record that makes a
synthetic-only model warn on photographs, and the identity network named."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from eet_lightning.checkpoint_io import load_checkpoint, training_data
from eet_lightning.cli.export import main as export_main
from eet_lightning.cli.transfer import REPORT_CSV, main
from eet_lightning.data.faces import align_to_template, template_landmarks
from eet_lightning.methods import load_transfer_model
from eet_lightning.quality import (
    SYNTHETIC_MODEL_WARNING,
    THRESHOLDS,
    QualityReporter,
    format_report,
    head_pose,
    reports_csv,
)

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def ckpt(tiny_run: Path) -> Path:
    return tiny_run / "stage2" / "last.ckpt"


@pytest.fixture(scope="module")
def model(ckpt: Path):
    return load_transfer_model(ckpt)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quality_photos")
    astronaut = skimage_data.astronaut()
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)  # the cameraman, in three-quarter view
    paths = {"astronaut": root / "astronaut.png", "camera": root / "camera.png", "flipped": root / "flip.png"}
    Image.fromarray(astronaut).save(paths["astronaut"])
    Image.fromarray(camera).save(paths["camera"])
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(paths["flipped"])
    return paths


def _synthetic_crops(size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from eet_lightning.datamodules import SyntheticDataModule

    data = SyntheticDataModule(image_size=size, num_train_identities=8, num_test_identities=4, cache_dir=None)
    held = data.held_out_pairs(n, seed=seed)
    return held["a"], held["b"]


def test_the_training_data_record_is_written_and_read(ckpt: Path, tiny_run: Path, model, tmp_path) -> None:
    raw = load_checkpoint(ckpt, "test")
    assert raw["eet_training_data"] == {"dataset": "synthetic", "kind": "synthetic"}  # written by eet-fit
    assert model.training_data == {"dataset": "synthetic", "kind": "synthetic"}
    # checkpoints written before the record: recognised by the synthetic DataModule's hyper-parameters
    old = {k: v for k, v in raw.items() if k != "eet_training_data"}
    assert training_data(old) == {"dataset": "synthetic", "kind": "synthetic", "inferred": True}
    old.pop("datamodule_hyper_parameters")
    assert training_data(old)["kind"] == "unknown"
    # eet-export carries it
    out = tmp_path / "w.safetensors"
    assert export_main(["--ckpt", str(ckpt), "--out", str(out)]) == 0
    assert load_transfer_model(out).training_data == model.training_data


def test_head_pose_from_five_landmarks() -> None:
    eyes = np.array([[40.0, 50.0], [80.0, 50.0]])
    mouth = np.array([[45.0, 90.0], [75.0, 90.0]])

    def pts(nose_x: float) -> np.ndarray:
        return np.vstack([eyes, [[nose_x, 70.0]], mouth])

    assert head_pose(pts(60.0)) == pytest.approx((0.0, 0.0), abs=1e-9)
    # the nose 0.3 eye distances to the right: asin(0.3 / 0.6) = 30 degrees
    assert head_pose(pts(72.0))[0] == pytest.approx(30.0, abs=1e-6)
    assert head_pose(pts(48.0))[0] == pytest.approx(-30.0, abs=1e-6)
    # a rotated face: the roll is the eyes' angle, the yaw unchanged
    theta = math.radians(20)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    yaw, roll = head_pose(pts(72.0) @ rot.T)
    assert roll == pytest.approx(20.0, abs=1e-6) and yaw == pytest.approx(30.0, abs=1e-6)


def test_reports_of_eet_transfer_on_photographs(ckpt: Path, photos, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["--ckpt", ckpt, "--source", photos["camera"], "--target", photos["astronaut"], "--out", out]
    assert main([*map(str, args), "--no-progress"]) == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    report = json.loads((out / "astronaut_with_camera.json").read_text())
    assert report["output"] == "astronaut_with_camera.png"
    assert report["target_photo"].endswith("astronaut.png") and report["source_photo"].endswith("camera.png")
    assert report["model"] == {"method": "eet", "trained_on": {"dataset": "synthetic", "kind": "synthetic"}}
    target, source = report["target"], report["source"]
    assert target["detector_confidence"] > 0.99 and source["detector_confidence"] > 0.99
    assert 90 < target["face_size_px"] < 130 and 30 < target["eye_distance_px"] < 50
    assert target["upscale"] == pytest.approx(64 * 0.25 / target["eye_distance_px"], rel=0.1)
    assert abs(target["yaw_deg"]) < 10 and source["yaw_deg"] > 40  # frontal astronaut, turned cameraman
    aus = report["aus"]
    assert aus["numbers"] == [1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26][: len(aus["numbers"])]
    for side in ("source", "target", "result"):
        assert len(aus[side]) == len(aus["numbers"]) and all(0 <= v <= 5 for v in aus[side])
    t, s, r = (np.array(aus[k]) for k in ("target", "source", "result"))
    assert report["au_distance"]["source_target"] == pytest.approx(np.abs(s - t).mean(), abs=2e-3)
    assert report["au_distance"]["source_result"] == pytest.approx(np.abs(s - r).mean(), abs=2e-3)
    moved = np.dot(r - t, s - t) / np.dot(s - t, s - t)  # from the AUs rounded to 3 decimals
    assert report["expression_moved"] == pytest.approx(moved, abs=0.05)
    ident = report["identity"]
    assert ident["model"].startswith("EET's identity classifier C")
    assert -1 <= ident["target_result"] <= 1 and -1 <= ident["source_result"] <= 1
    warnings = report["warnings"]
    assert warnings[0] == f"synthetic-only model: {SYNTHETIC_MODEL_WARNING}"
    assert any(w.startswith("large pose difference: the heads are turned") for w in warnings)
    # the CSV holds one row per output, the same numbers
    rows = list(csv.DictReader((out / REPORT_CSV).open()))
    assert sorted(r["output"] for r in rows) == ["astronaut_with_camera.png", "camera_with_astronaut.png"]
    row = next(r for r in rows if r["output"] == "astronaut_with_camera.png")
    assert float(row["source_yaw_deg"]) == source["yaw_deg"]
    assert float(row["au_distance_source_target"]) == report["au_distance"]["source_target"]
    # the last lines: the warnings counted, then the model's own warning
    assert stdout[-2].startswith("eet-transfer: quality: 2 of 2 output(s) with warnings")
    assert "large pose difference 2" in stdout[-2]
    assert stdout[-1] == f"eet-transfer: warning: {SYNTHETIC_MODEL_WARNING}"


def test_no_report_writes_none(ckpt: Path, photos, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["--ckpt", ckpt, "--source", photos["flipped"], "--target", photos["astronaut"], "--out", out]
    assert main([*map(str, args), "--no-progress", "--no-report", "--crop-only"]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "astronaut_with_flip.png",
        "flip_with_astronaut.png",
    ]
    assert "quality:" not in capsys.readouterr().out
    # a re-run with reports keeps the images and adds their reports
    assert main([*map(str, args), "--no-progress", "--crop-only"]) == 0
    assert (out / "flip_with_astronaut.json").is_file() and (out / REPORT_CSV).is_file()
    assert "resuming: 2 of the 2 outputs" in capsys.readouterr().out


def test_reports_on_synthetic_pairs(model) -> None:
    a, b = _synthetic_crops(model.image_size, 3, seed=4)
    out_a, _ = model.transfer(a, b)
    reporter = QualityReporter(model)
    reports = reporter.reports([None] * 3, [None] * 3, a, b, out_a, photographs=False)
    assert len(reports) == 3
    for k, report in enumerate(reports):
        assert report["target"] is None and report["source"] is None  # crops, not detected
        assert not any(w.startswith("synthetic-only model") for w in report["warnings"])
        au = model.predict_aus(np.stack([a[k], b[k], out_a[k]])).numpy()
        assert np.allclose([report["aus"][s] for s in ("target", "source", "result")], au, atol=1e-3)
        assert "- model: eet, trained on synthetic" in format_report(report)
    # selective transfer: the distances and the movement are over the chosen AUs only, at the strength asked
    chosen = model.aus[:3]
    out_sel, _ = model.transfer(a, b, aus=chosen, strength=0.5)
    (report,) = reporter.reports([None], [None], a[:1], b[:1], out_sel[:1], aus=chosen, strength=0.5)
    t, s, r = model.predict_aus(np.stack([a[0], b[0], out_sel[0]])).numpy()[:, :3].astype(np.float64)
    assert report["transfer"] == {"aus": chosen, "strength": 0.5}
    assert report["au_distance"]["source_target"] == pytest.approx(np.abs(s - t).mean(), abs=2e-3)
    asked = 0.5 * (s - t)
    assert report["expression_moved"] == pytest.approx(np.dot(r - t, asked) / np.dot(asked, asked), abs=1e-3)
    text = reports_csv([report])
    assert text.splitlines()[0].startswith("output,target,source,warnings,")


def _direction(degrees: float) -> torch.Tensor:
    t = math.radians(degrees)
    return torch.tensor([math.cos(t), math.sin(t), 0.0])


def test_each_warning_and_its_threshold(model, monkeypatch) -> None:
    size = model.image_size
    photo = skimage_data.astronaut()
    reporter = QualityReporter(model)
    template = template_landmarks(size)
    # a face of 6 px between the eyes, given to a 64-px model (16 px between the eyes): enlarged 2.7x
    small = align_to_template(photo, template * (6.0 / 16.0) + 200, size, score=0.93)
    normal = align_to_template(photo, template * 2.0 + 100, size, score=0.999)
    crops = np.stack([small.crop])
    (report,) = reporter.reports([small], [normal], crops, crops, crops)
    kinds = [w.split(":")[0] for w in report["warnings"]]
    assert kinds[:3] == ["synthetic-only model", "small face", "uncertain face"]
    assert report["target"]["upscale"] == pytest.approx(16.0 / 6.0, abs=1e-3)
    assert (
        "enlarged 2.7x" in report["warnings"][1]
        and f"{THRESHOLDS['max_upscale']:g}x" in report["warnings"][1]
    )
    # an expression that should move but did not; then one that moved
    n_aus = len(model.aus)
    target_aus, source_aus = torch.zeros(n_aus), torch.full((n_aus,), 2.0)
    for result_aus, barely in ((target_aus + 0.2, True), (source_aus - 0.4, False)):
        values = torch.stack([target_aus, source_aus, result_aus])
        monkeypatch.setattr(reporter, "_read", lambda crops, v=values: (v, None))
        (report,) = reporter.reports([None], [None], crops, crops + 1, crops + 2, photographs=False)
        assert report["expression_moved"] == pytest.approx(0.1 if barely else 0.8, abs=1e-6)
        assert any(w.startswith("expression barely moved") for w in report["warnings"]) == barely
    monkeypatch.undo()
    # identity: the result below the threshold, or nearer the source's person than the target's
    unit = torch.eye(3)
    cases = {
        "below": torch.stack([unit[0], unit[1], 0.5 * unit[0] + 0.866 * unit[2]]),  # t-r 0.5
        # two people 50 degrees apart (0.64), the result 27 degrees from the target (0.89), 23 from the source
        "nearer_source": torch.stack([_direction(0), _direction(50), _direction(27)]),
        "fine": torch.stack([unit[0], unit[1], 0.99 * unit[0] + 0.141 * unit[1]]),
    }
    for name, feats in cases.items():
        monkeypatch.setattr(reporter, "_read", lambda crops, f=feats: (None, f))
        (report,) = reporter.reports([None], [None], crops, crops + 1, crops + 2, photographs=False)
        drift = [w for w in report["warnings"] if w.startswith("identity drifted")]
        assert bool(drift) == (name != "fine"), (name, report["identity"])
        if name == "nearer_source":
            assert "more like the source's person" in drift[0]


def test_identity_from_face_weights_and_models_without_identity(ckpt: Path, model, tmp_path: Path) -> None:
    from facenet_pytorch import InceptionResnetV1

    weights = tmp_path / "facenet.pt"
    torch.manual_seed(0)
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), weights)
    reporter = QualityReporter(model, face_weights=weights)
    a, b = _synthetic_crops(model.image_size, 2, seed=1)
    (report, _) = reporter.reports([None, None], [None, None], a, b, a, photographs=False)
    assert report["identity"]["model"] == "FaceNet InceptionResnetV1 (facenet.pt)"
    assert report["identity"]["target_result"] == pytest.approx(1.0, abs=1e-4)  # the result is the target
    with pytest.raises(ValueError, match="--face-weights"):
        QualityReporter(model, face_weights=tmp_path / "missing.pt")
    # an export written before C was kept: no identity network, the fields say so
    from eet_lightning.checkpoint_io import write_weights

    old = tmp_path / "old.safetensors"
    write_weights(
        load_checkpoint(ckpt, "t"), old, ("encoder", "au_free_encoder", "au_related_encoder", "generator")
    )
    old_model = load_transfer_model(old)
    assert old_model.attribute_classifier is None and old_model.identity_features(a) is None
    (report, _) = QualityReporter(old_model).reports([None] * 2, [None] * 2, a, b, a, photographs=False)
    assert report["identity"] == {
        "model": None,
        "target_result": None,
        "source_result": None,
        "source_target": None,
    }
    assert "identity: not measured" in format_report(report)
    # the transfer is the same with or without C
    assert np.array_equal(old_model.transfer(a, b)[0], model.transfer(a, b)[0])


def test_a_photo_too_small_for_the_face_warns(ckpt: Path, tmp_path: Path, capsys) -> None:
    photo = cv2.resize(skimage_data.astronaut(), (96, 96), interpolation=cv2.INTER_AREA)  # eyes ~8 px apart
    big = skimage_data.astronaut()
    Image.fromarray(photo).save(tmp_path / "small.png")
    Image.fromarray(big).save(tmp_path / "big.png")
    out = tmp_path / "out"
    args = [
        "--ckpt",
        ckpt,
        "--source",
        tmp_path / "big.png",
        "--target",
        tmp_path / "small.png",
        "--out",
        out,
    ]
    assert main([*map(str, args), "--no-progress"]) == 0
    report = json.loads((out / "small_with_big.json").read_text())
    assert report["target"]["upscale"] > THRESHOLDS["max_upscale"]
    assert any(w.startswith("small face: the target's face") for w in report["warnings"])
    assert "small face 2" in capsys.readouterr().out  # both directions use the small photo's face


def test_bad_report_options_are_one_line_and_write_nothing(
    ckpt: Path, photos, tmp_path: Path, capsys
) -> None:
    text = tmp_path / "weights.pt"
    text.write_text("not weights")
    photo = str(photos["astronaut"])
    cases = [
        (["--face-weights", str(tmp_path / "missing.pt")], "--face-weights"),
        (["--face-weights", str(text)], "not a readable PyTorch state dict"),
        (["--face-weights", str(text), "--no-report"], "--no-report"),
    ]
    for k, (extra, expected) in enumerate(cases):
        out = tmp_path / f"out{k}"
        rc = main(["--ckpt", str(ckpt), "--source", photo, "--target", photo, "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("eet-transfer: error: ") and err.count("\n") == 1, (extra, err)
        assert expected in err and not out.exists(), (extra, err)


def test_a_model_of_emotion_classes_reports_them(monkeypatch) -> None:
    """StarGAN reads no AUs; its report names the emotion classes its classifier reads, and warns when the
    result is not read as the source's."""
    from eet_lightning.methods.stargan.model import StarGANModel

    torch.manual_seed(0)
    model = StarGANModel(image_size=32, width=8, residual_blocks=1, critic_width=8).eval()
    reporter = QualityReporter(model)
    assert reporter.reads_emotion and not reporter.reads_aus
    rng = np.random.default_rng(0)
    t, s, r = (rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8) for _ in range(3))
    (report,) = reporter.reports([None], [None], t, s, r, photographs=False)
    assert report["aus"] is None and report["identity"]["model"] is None
    assert set(report["emotion"]) == {"classes", "target", "source", "result", "result_source_probability"}
    assert report["emotion"]["classes"] == list(model.emotions)
    for result_class, warned in ((3, True), (1, False)):
        probs = torch.zeros(3, len(model.emotions))
        probs[0, 0], probs[1, 1], probs[2, result_class] = 1.0, 1.0, 1.0  # target neutral, source happy
        monkeypatch.setattr(model, "predict_emotion", lambda x, p=probs: p)
        (report,) = reporter.reports([None], [None], t, s, r, photographs=False)
        assert report["emotion"]["source"] == "happy" and report["emotion"]["target"] == "neutral"
        assert any(w.startswith("emotion not reached") for w in report["warnings"]) == warned
        assert f"result {model.emotions[result_class]}" in format_report(report)
    row = reports_csv([report]).splitlines()[1]
    assert "happy" in row and "neutral" in row


def test_a_video_output_gets_one_report_over_its_frames(ckpt: Path, photos, tmp_path: Path, capsys) -> None:
    """A source video: per-frame series, their medians, each warning once with the frames it holds for;
    a report deleted on its own is made again without rewriting the video."""
    face = cv2.resize(skimage_data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for k in range(6):
        frame = cv2.warpAffine(
            face, np.float32([[1, 0, k], [0, 1, k % 2]]), (256, 256), borderMode=cv2.BORDER_REFLECT
        )
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    out = tmp_path / "out"
    args = ["--ckpt", str(ckpt), "--source", str(clip), "--target", str(photos["camera"]), "--out", str(out)]
    assert main([*args, "--no-progress", "--batch-size", "4"]) == 0
    assert "quality: 1 of 1 output(s) with warnings (large pose difference 1)" in capsys.readouterr().out
    path = out / "camera_with_clip.json"
    report = json.loads(path.read_text())
    assert report["output"] == "camera_with_clip.mp4" and report["frames"] == 6
    assert report["target"]["detector_confidence"] > 0.99  # the photo's face, detected
    assert report["source"]["detector_confidence"] is None  # followed through the video, smoothed
    series = report["per_frame"]
    for key in (
        "expression_moved",
        "au_distance_source_result",
        "identity_target_result",
        "yaw_difference_deg",
    ):
        assert len(series[key]) == 6, key
        values = [v for v in series[key] if v is not None]
        assert report["summary"][key]["median"] == pytest.approx(float(np.median(values)), abs=1e-3), key
    assert report["expression_moved"] == report["summary"]["expression_moved"]["median"]
    pose = [w for w in report["warnings"] if w.startswith("large pose difference")]
    assert len(pose) == 1 and pose[0].startswith("large pose difference: in 6 of 6 frames (first, frame 0: ")
    assert report["warnings"][0] == f"synthetic-only model: {SYNTHETIC_MODEL_WARNING}"
    rows = list(csv.DictReader((out / REPORT_CSV).open()))
    assert [r["output"] for r in rows] == ["camera_with_clip.mp4"]
    assert float(rows[0]["expression_moved"]) == report["expression_moved"]
    # the report alone deleted: made again, byte-identical, the video untouched
    video = out / "camera_with_clip.mp4"
    before, stamp = path.read_bytes(), video.stat().st_mtime_ns
    path.unlink()
    assert main([*args, "--no-progress", "--batch-size", "4"]) == 0
    assert path.read_bytes() == before and video.stat().st_mtime_ns == stamp
    assert "wrote 0 file(s)" in capsys.readouterr().out
