"""`eet-transfer` with the baselines' checkpoints (GANimation, StarGAN trained through eet-fit on a tiny
budget): photo crops equal to the loaded model's `transfer`, and the options a baseline does not have
refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_input import assert_one_clear_error, run_in_process
from eet_lightning.cli.fit import main as fit_main
from eet_lightning.cli.transfer import main as transfer_main
from eet_lightning.data.faces import FaceAligner
from eet_lightning.methods import load_transfer_model

skimage_data = pytest.importorskip("skimage.data")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = ["--data.num_train_identities", "4", "--data.num_test_identities", "3", "--data.train_samples", "16"]
TINY += ["--data.val_pairs", "4", "--data.batch_size", "4", "--data.cache_dir", "null", "--grid_pairs", "2"]
TINY += ["--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--stage1.batch_size", "4"]
TINY += ["--stage1.max_epochs", "1", "--stage1.limit_train_batches", "2", "--stage1.n_critic", "1"]
TINY += ["--stage1.width", "8", "--stage1.critic_width", "8", "--stage1.residual_blocks", "1"]


@pytest.fixture(scope="module")
def baselines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("baselines")
    out = {}
    for method in ("ganimation", "stargan"):
        run = root / method
        args = ["--config", str(CONFIGS / f"{method}_synthetic.yaml"), "--run_dir", str(run), *TINY]
        assert fit_main(args) == 0
        out[method] = run / "stage1" / "last.ckpt"
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    camera = np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)
    paths = {"astronaut": root / "astronaut.png", "camera": root / "camera.png"}
    Image.fromarray(skimage_data.astronaut()).save(paths["astronaut"])
    Image.fromarray(camera).save(paths["camera"])
    return paths


@pytest.mark.parametrize("method", ["ganimation", "stargan"])
def test_a_baseline_transfers_photos_as_its_model_does(
    baselines: dict[str, Path], photos: dict[str, Path], method: str, tmp_path: Path
) -> None:
    ckpt, out = baselines[method], tmp_path / "out"
    args = ["--ckpt", ckpt, "--source", photos["astronaut"], "--target", photos["camera"], "--out", out]
    assert transfer_main([str(a) for a in args] + ["--crop-only", "--no-progress"]) == 0
    model = load_transfer_model(ckpt)
    aligner = FaceAligner(size=model.image_size)
    cam = aligner.align(np.asarray(Image.open(photos["camera"]).convert("RGB"))).crop
    astro = aligner.align(np.asarray(Image.open(photos["astronaut"]).convert("RGB"))).crop
    expected, _ = model.transfer(cam, astro)
    got = np.asarray(Image.open(out / "camera_with_astronaut.png").convert("RGB"))
    assert got.shape == expected.shape == (64, 64, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("method", "extra", "needles"),
    [
        ("stargan", ["--aus", "12"], ["--aus", "selective transfer", "StarGANModel"]),
        ("ganimation", ["--compile"], ["--ckpt", "compile=True is not available"]),
        ("ganimation", ["--strength", "3"], ["--strength"]),
    ],
    ids=["stargan-selective", "ganimation-compile", "strength"],
)
def test_what_a_baseline_cannot_do_is_one_line(
    baselines: dict[str, Path],
    photos: dict[str, Path],
    method: str,
    extra: list[str],
    needles: list[str],
    tmp_path: Path,
    capsys,
) -> None:
    out = tmp_path / "out"
    args = ["--ckpt", baselines[method], "--source", photos["astronaut"], "--target", photos["camera"]]
    args += ["--out", out, "--no-progress", *extra]
    rc, _, err = run_in_process(transfer_main, [str(a) for a in args], capsys)
    assert_one_clear_error("eet-transfer", rc, err, *needles)
    assert not out.exists()
