"""`eet-transfer` on real photographs and short generated videos with the tiny checkpoint: whole photos
with only the face changed, crops equal to `EETModel.transfer`, folders, pair lists, several faces, videos,
and every bad input ending in one error line with nothing written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from eet_lightning import EETModel
from eet_lightning.cli.transfer import RECORD_NAME, REPORT_CSV, _smooth, face_mask, main, report_name
from eet_lightning.data.faces import FaceAligner, warp_back
from eet_lightning.nets import ArchConfig, AURelatedEncoder

skimage_data = pytest.importorskip("skimage.data")


def _save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def _write_clip(path: Path, image: np.ndarray, frames: int, size: tuple[int, int]) -> Path:
    """``frames`` frames of ``image`` placed on a ``size`` (w, h) canvas, drifting a little each frame."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for k in range(frames):
        m = np.float32([[1, 0, 2 * k], [0, 1, k]])
        frame = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


def _read_clip(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    astronaut = skimage_data.astronaut()  # 512 x 512, one face
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)  # the cameraman, 512 x 512
    two = np.zeros((512, 768, 3), np.uint8)  # the astronaut beside the smaller cameraman
    two[:, :512] = astronaut
    two[128:384, 512:] = cv2.resize(camera, (256, 256), interpolation=cv2.INTER_AREA)
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    cam_canvas = np.zeros((240, 320, 3), np.uint8)
    cam_canvas[:, 40:280] = cv2.resize(camera, (240, 240), interpolation=cv2.INTER_AREA)
    return {
        "astronaut": _save(root / "photos" / "astronaut.png", astronaut),
        "camera": _save(root / "photos" / "camera.png", camera),
        "flipped": _save(root / "photos" / "flipped.jpg", np.ascontiguousarray(astronaut[:, ::-1])),
        "photos": root / "photos",
        "two_faces": _save(root / "other" / "two_faces.png", two),
        "cat": _save(root / "other" / "zz_cat.png", skimage_data.chelsea()),
        "clip": _write_clip(root / "clip.mp4", small, 6, (256, 256)),
        "clip2": _write_clip(root / "clip2.mp4", cam_canvas, 8, (320, 240)),
    }


@pytest.fixture(scope="module")
def ckpt(tiny_run: Path) -> Path:
    return tiny_run / "stage2" / "last.ckpt"


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(size=64)


def _run(*args: str | Path) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _outputs(out: Path) -> list[str]:
    """The images and videos in ``out``: besides them every run that writes leaves the record of the job,
    and every output its quality report (``NAME.json``, and ``report.csv`` for the job)."""
    names = sorted(p.name for p in out.iterdir())
    assert RECORD_NAME in names, names
    media = [n for n in names if n != RECORD_NAME and not n.endswith(".json") and n != REPORT_CSV]
    reports = sorted(n for n in names if n.endswith(".json") and n != RECORD_NAME)
    assert reports == sorted(report_name(n) for n in media), names
    assert (REPORT_CSV in names) == bool(media), names
    return media


def test_photo_pair_changes_only_the_face(ckpt: Path, media, aligner: FaceAligner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        _run("--ckpt", ckpt, "--source", media["astronaut"], "--target", media["camera"], "--out", out) == 0
    )
    assert _outputs(out) == ["astronaut_with_camera.png", "camera_with_astronaut.png"]
    for name, photo_path in (("camera_with_astronaut", "camera"), ("astronaut_with_camera", "astronaut")):
        photo, result = _rgb(media[photo_path]), _rgb(out / f"{name}.png")
        assert result.shape == photo.shape
        face = aligner.align(photo)
        _, footprint = warp_back(np.ones((64, 64), np.float32), face.matrix, photo.shape)  # the crop's area
        region = footprint > 0
        assert 0.005 < region.mean() < 0.25
        np.testing.assert_array_equal(result[~region], photo[~region])  # outside the face: untouched
        changed = np.abs(result.astype(int) - photo.astype(int)).max(axis=-1) > 0
        assert changed[region].mean() > 0.2  # inside: the face was redrawn


def test_crop_only_equals_the_model_on_aligned_crops(
    ckpt: Path, media, aligner: FaceAligner, tmp_path: Path
) -> None:
    model = EETModel.load_from_checkpoint(ckpt)
    cam, astro = aligner.align(_rgb(media["camera"])).crop, aligner.align(_rgb(media["astronaut"])).crop
    for extra, kwargs in (
        ([], {}),
        (["--aus", "12", "25", "--strength", "0.5"], {"aus": [12, 25], "strength": 0.5}),
    ):
        out = tmp_path / f"crops{len(extra)}"
        args = ["--ckpt", ckpt, "--source", media["astronaut"], "--target", media["camera"], "--out", out]
        assert _run(*args, "--crop-only", *extra) == 0
        cam_with_astro, astro_with_cam = model.transfer(cam, astro, **kwargs)
        for name, expected in (
            ("camera_with_astronaut", cam_with_astro),
            ("astronaut_with_camera", astro_with_cam),
        ):
            got = _rgb(out / f"{name}.png")
            assert got.shape == (64, 64, 3)
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, name
    # the selective, half-strength transfer is not the plain one
    assert (
        np.abs(
            _rgb(tmp_path / "crops0" / "camera_with_astronaut.png").astype(int)
            - _rgb(out / "camera_with_astronaut.png")
        ).max()
        > 5
    )


def test_compiled_crops_equal_the_plain_ones(ckpt: Path, media, tmp_path: Path) -> None:
    """``--compile`` (torch.compile with frozen weights) writes the crops the plain model writes."""
    outs = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"crops{len(flag)}"
        args = ["--ckpt", ckpt, "--source", media["astronaut"], "--target", media["camera"], "--out", out]
        assert _run(*args, "--crop-only", *flag) == 0
        outs[bool(flag)] = _rgb(out / "camera_with_astronaut.png").astype(int)
    assert np.abs(outs[True] - outs[False]).max() <= 1


def test_folders_pair_lists_and_face_index(ckpt: Path, media, aligner: FaceAligner, tmp_path: Path) -> None:
    # every pair of a folder with itself: 3 photos -> 3 pairs -> 6 files, batched by 2
    out = tmp_path / "all"
    assert (
        _run(
            "--ckpt",
            ckpt,
            "--source",
            media["photos"],
            "--target",
            media["photos"],
            "--out",
            out,
            "--batch-size",
            "2",
        )
        == 0
    )
    names = {"astronaut", "camera", "flipped"}
    assert _outputs(out) == sorted(f"{x}_with_{y}.png" for x in names for y in names if x != y)
    # a pair list, paths relative to the CSV
    csv = media["photos"].parent / "pairs.csv"
    csv.write_text("source,target\nphotos/astronaut.png,photos/flipped.jpg\n")
    out = tmp_path / "csv"
    assert _run("--ckpt", ckpt, "--pairs", csv, "--out", out) == 0
    assert _outputs(out) == ["astronaut_with_flipped.png", "flipped_with_astronaut.png"]
    # two faces: the largest (the astronaut, left) by default, the cameraman (right) with --face-index 1
    photo = _rgb(media["two_faces"])
    for index, side in ((0, slice(0, 512)), (1, slice(512, 768))):
        out = tmp_path / f"face{index}"
        args = ["--ckpt", ckpt, "--source", media["camera"], "--target", media["two_faces"], "--out", out]
        assert _run(*args, "--face-index", "0", str(index)) == 0
        result = _rgb(out / "two_faces_with_camera.png")
        changed = np.any(result != photo, axis=-1)
        other = np.ones(768, bool)
        other[side] = False
        assert changed[:, side].sum() > 200 and not changed[:, other].any()


def test_video_source_drives_a_photo_and_a_video(ckpt: Path, media, tmp_path: Path) -> None:
    out = tmp_path / "video"
    assert _run("--ckpt", ckpt, "--source", media["clip"], "--target", media["camera"], "--out", out) == 0
    frames = _read_clip(out / "camera_with_clip.mp4")
    assert len(frames) == 6 and frames[0].shape == (512, 512, 3)
    camera_bgr = _rgb(media["camera"])[:, :, ::-1].astype(int)
    corner = (slice(0, 100), slice(0, 100))  # far from the face: the photo, up to MPEG-4 compression
    assert np.abs(frames[0][corner] - camera_bgr[corner]).mean() < 6
    # a video target: as many frames as the shorter clip, at the target's size
    assert _run("--ckpt", ckpt, "--source", media["clip"], "--target", media["clip2"], "--out", out) == 0
    frames = _read_clip(out / "clip2_with_clip.mp4")
    assert len(frames) == 6 and frames[0].shape == (240, 320, 3)
    assert _outputs(out) == ["camera_with_clip.mp4", "clip2_with_clip.mp4"]


def test_face_track_smoothing() -> None:
    rng = np.random.default_rng(0)
    steady = np.tile(np.arange(10, dtype=float).reshape(1, 5, 2), (20, 1, 1))
    np.testing.assert_allclose(_smooth(steady, 5), steady)
    jitter = steady + rng.normal(0, 2.0, size=steady.shape)
    smoothed = _smooth(jitter, 5)
    assert smoothed.shape == jitter.shape
    assert np.abs(np.diff(smoothed, axis=0)).mean() < 0.5 * np.abs(np.diff(jitter, axis=0)).mean()
    np.testing.assert_allclose(_smooth(jitter, 1), jitter)


def test_feathered_mask_is_zero_at_the_crop_border() -> None:
    mask = face_mask(64)
    assert mask.max() == 1.0 and mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0
    assert 0 < mask[34, 13] < mask[34, 20] == 1.0  # fades in from the side of the face


@pytest.fixture(scope="module")
def single_ckpt(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint turned into an EET-Single one (a fresh single-branch Er)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    hp = state["hyper_parameters"]
    hp["variant"] = "eet_single"
    arch = ArchConfig.coerce(hp["arch"])
    arch.multi_branch = False
    torch.manual_seed(0)
    er = AURelatedEncoder(arch).state_dict()
    sd = {k: v for k, v in state["state_dict"].items() if not k.startswith("au_related_encoder.")}
    sd.update({f"au_related_encoder.{k}": v for k, v in er.items()})
    state["state_dict"] = sd
    path = tmp_path_factory.mktemp("single") / "single.ckpt"
    torch.save(state, path)
    return path


def test_eet_single_checkpoint_transfers_but_not_selectively(
    single_ckpt: Path, media, tmp_path: Path, capsys
) -> None:
    args = ["--ckpt", single_ckpt, "--source", media["astronaut"], "--target", media["camera"], "--crop-only"]
    assert _run(*args, "--out", tmp_path / "ok", "--strength", "0.5") == 0
    assert len(_outputs(tmp_path / "ok")) == 2
    capsys.readouterr()
    assert _run(*args, "--out", tmp_path / "bad", "--aus", "12") == 2
    assert "EET-Single" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def _bad(media: dict[str, Path], ckpt: Path, tmp_path: Path, case: str) -> tuple[list, str]:
    astro, cam = media["astronaut"], media["camera"]
    if case == "no_face":  # the face-less photo comes last in its folder: nothing may be written before it
        folder = tmp_path / "mixed"
        for p in (astro, cam, media["cat"]):
            _save(folder / p.name, _rgb(p))
        return ["--source", folder, "--target", folder], "no face found in " + str(folder / "zz_cat.png")
    if case == "unreadable_image":
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"\x89PNG not really")
        return ["--source", bad, "--target", cam], "broken.png"
    if case == "unreadable_video":
        bad = tmp_path / "broken.mp4"
        bad.write_bytes(b"not a video")
        return ["--source", bad, "--target", cam], "broken.mp4: cannot read the video"
    if case == "stage1":
        return [
            "--source",
            astro,
            "--target",
            cam,
            "--ckpt",
            ckpt.parent.parent / "stage1" / "last.ckpt",
        ], "stage-1 checkpoint"
    if case == "unknown_au":
        return ["--source", astro, "--target", cam, "--aus", "12", "7"], "AU 7 is not one of this model's AUs"
    if case == "face_index":
        return ["--source", astro, "--target", cam, "--face-index", "3"], "--face-index 3"
    if case == "missing":
        return ["--source", tmp_path / "nope.png", "--target", cam], "nope.png: no such file"
    if case == "negative_strength":
        return ["--source", astro, "--target", cam, "--strength", "-1"], "--strength must be a number from 0"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "no_face",
        "unreadable_image",
        "unreadable_video",
        "stage1",
        "unknown_au",
        "face_index",
        "missing",
        "negative_strength",
    ],
)
def test_bad_input_is_one_error_line_and_nothing_written(
    ckpt: Path, media, tmp_path: Path, capsys, case: str
) -> None:
    args, message = _bad(media, ckpt, tmp_path, case)
    out = tmp_path / "out"
    rc = _run("--ckpt", ckpt, "--out", out, *args)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("eet-transfer: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()


def test_existing_output_is_kept_unless_overwrite(ckpt: Path, media, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "camera_with_astronaut.png").write_bytes(b"mine")
    args = [
        "--ckpt",
        ckpt,
        "--source",
        media["astronaut"],
        "--target",
        media["camera"],
        "--out",
        out,
        "--crop-only",
    ]
    assert _run(*args) == 2
    err = capsys.readouterr().err
    assert "camera_with_astronaut.png exists" in err and "--overwrite" in err and err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["camera_with_astronaut.png"]
    assert (out / "camera_with_astronaut.png").read_bytes() == b"mine"
    assert _run(*args, "--overwrite") == 0
    assert _rgb(out / "camera_with_astronaut.png").shape == (64, 64, 3)


def test_argument_errors_are_one_line(ckpt: Path, media, tmp_path: Path, capsys) -> None:
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "eet-transfer: error: give --source and --target (or --pairs)\n"
    assert main(["--source", "a.png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eet-transfer: error: ") and "--out" in err and err.count("\n") == 1
    assert main(["--source", "a.png", "--target", "b.png", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eet-transfer: error: give the trained model as --ckpt") and err.count("\n") == 1
    assert main(["--ckpt", str(ckpt), "--onnx", "m.onnx", "--out", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
    args = ["--ckpt", str(ckpt), "--out", str(tmp_path), "--source", str(media["astronaut"]), "--target"]
    assert main([*args, str(media["camera"]), "--pairs", "p.csv"]) == 2
    assert "not both" in capsys.readouterr().err
    folder = str(media["photos"])
    assert main([*args[:4], "--source", folder, "--target", folder, "--face-index", "0", "1"]) == 2
    assert "need separate sources and targets" in capsys.readouterr().err
    assert main([*args, str(media["camera"]), "--face-index", "0", "1", "2"]) == 2
    assert "one or two values" in capsys.readouterr().err
    assert main([*args, str(media["camera"]), "--device", "nonsense"]) == 2
    assert "--device nonsense: not a torch device" in capsys.readouterr().err


def test_a_model_whose_g_edits_its_input_transfers_photos(
    tiny_edit_run: Path, media, aligner, tmp_path
) -> None:
    """eet-transfer with the quick start's kind of G (it warps and paints over the target): the crops it
    writes are the model's transfer of the aligned faces, and the whole photo changes only in the face."""
    ckpt = tiny_edit_run / "stage2" / "last.ckpt"
    model = EETModel.load_from_checkpoint(ckpt)
    assert model.needs_base
    cam, astro = aligner.align(_rgb(media["camera"])).crop, aligner.align(_rgb(media["astronaut"])).crop
    out = tmp_path / "crops"
    args = ["--ckpt", ckpt, "--source", media["astronaut"], "--target", media["camera"], "--out", out]
    assert _run(*args, "--crop-only") == 0
    expected, _ = model.transfer(cam, astro)
    got = _rgb(out / "camera_with_astronaut.png")
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert _run(*args[:-1], tmp_path / "photos") == 0
    photo = _rgb(tmp_path / "photos" / "camera_with_astronaut.png")
    assert photo.shape == _rgb(media["camera"]).shape
