"""`eet-transfer --onnx`: the whole photo pipeline on an EET exported by `eet-export --out model.onnx`,
run in onnxruntime: the same photos as the checkpoint's (up to float rounding), reports included, and bad
input refused in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eet_lightning.cli.export import main as export_main
from eet_lightning.cli.transfer import RECORD_NAME, main
from eet_lightning.quality import SYNTHETIC_MODEL_WARNING

pytest.importorskip("onnxruntime")
skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx_transfer")
    ckpt = tiny_run / "stage2" / "last.ckpt"
    onnx_path = root / "eet.onnx"
    assert export_main(["--ckpt", str(ckpt), "--out", str(onnx_path)]) == 0
    photos = root / "photos"
    photos.mkdir()
    astronaut = skimage_data.astronaut()
    Image.fromarray(astronaut).save(photos / "astronaut.png")
    Image.fromarray(np.ascontiguousarray(astronaut[:, ::-1])).save(photos / "mirror.png")
    Image.fromarray(np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)).save(photos / "camera.png")
    return {"ckpt": ckpt, "onnx": onnx_path, "photos": photos, "root": root}


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("extra", [[], ["--crop-only", "--aus", "12", "25", "26", "--strength", "0.7"]])
def test_onnx_runs_the_photo_pipeline_like_the_checkpoint(exported, tmp_path: Path, capsys, extra) -> None:
    folder = str(exported["photos"])
    job = ["--source", folder, "--target", folder, "--no-progress", *extra]
    assert main(["--ckpt", str(exported["ckpt"]), "--out", str(tmp_path / "torch"), *job]) == 0
    capsys.readouterr()
    assert main(["--onnx", str(exported["onnx"]), "--out", str(tmp_path / "onnx"), *job]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"eet-transfer: wrote 6 file(s) to {tmp_path / 'onnx'}"
    assert lines[-1] == f"eet-transfer: warning: {SYNTHETIC_MODEL_WARNING}"  # the export carries the record
    pngs = sorted(p.name for p in (tmp_path / "torch").glob("*.png"))
    assert len(pngs) == 6 and pngs == sorted(p.name for p in (tmp_path / "onnx").glob("*.png"))
    for name in pngs:
        a, b = _rgb(tmp_path / "torch" / name), _rgb(tmp_path / "onnx" / name)
        # float rounding of two runtimes: a pixel level at most, almost everywhere equal
        assert a.shape == b.shape and np.abs(a - b).max() <= 2 and (a != b).mean() < 0.01, name
        report_t = json.loads((tmp_path / "torch" / name).with_suffix(".json").read_text())
        report_o = json.loads((tmp_path / "onnx" / name).with_suffix(".json").read_text())
        assert report_o["model"] == {
            "method": "eet",
            "trained_on": {"dataset": "synthetic", "kind": "synthetic"},
        }
        assert report_o["target"] == report_t["target"] and report_o["source"] == report_t["source"]
        assert np.allclose(report_o["aus"]["result"], report_t["aus"]["result"], atol=0.02)
        # the exported graph has no identity network: said, not guessed
        assert report_o["identity"]["model"] is None and report_t["identity"]["model"] is not None
    record = json.loads((tmp_path / "onnx" / RECORD_NAME).read_text())
    assert record["ckpt"] == str(exported["onnx"].resolve())


def test_bad_onnx_input_is_one_line_and_writes_nothing(exported, tmp_path: Path, capsys) -> None:
    photo = str(exported["photos"] / "astronaut.png")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("not a model")
    cases = [
        (["--onnx", str(tmp_path / "missing.onnx")], "--onnx"),
        (["--onnx", str(not_onnx)], str(not_onnx)),
        (["--onnx", str(tmp_path)], "is a folder"),
        (["--onnx", str(exported["onnx"]), "--compile"], "--compile"),
        (["--onnx", str(exported["ckpt"])], str(exported["ckpt"])),  # a checkpoint given as ONNX
    ]
    for k, (args, expected) in enumerate(cases):
        out = tmp_path / f"out{k}"
        rc = main([*args, "--source", photo, "--target", photo, "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("eet-transfer: error: ") and err.count("\n") == 1, (args, err)
        assert expected in err, (args, err)
        assert not out.exists(), args
