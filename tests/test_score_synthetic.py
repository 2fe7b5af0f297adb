"""The ground-truth scoring of a transfer on held-out synthetic identities."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eet_lightning import EETModel
from eet_lightning.evaluation.synthetic import score_transfer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "score_synthetic.py"


def _script():
    spec = importlib.util.spec_from_file_location("score_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_bookkeeping_with_known_images(tiny_run: Path) -> None:
    model = EETModel.load_from_checkpoint(tiny_run / "stage2" / "last.ckpt")
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    source = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    truth = target.copy()
    truth[:, 10:20, 10:30] = source[:, 10:20, 10:30]  # the AU region: 200 pixels per image
    result = score_transfer(model, target, source, truth)
    assert result["pairs"] == 3 and result["pairs_with_au_region"] == 3
    # the unchanged target equals the truth outside the region, so its whole-image L1 is the region's
    # L1 times the region's share of the image
    share = 200 / (64 * 64)
    assert result["au_region_fraction"] == pytest.approx(share, rel=0.05)
    assert result["whole_l1"]["target"] == pytest.approx(result["au_region_l1"]["target"] * share, rel=0.06)
    manual = np.abs(target[:, 10:20, 10:30].astype(float) - source[:, 10:20, 10:30]).mean() / 255
    assert result["au_region_l1"]["target"] == pytest.approx(manual, rel=0.06)
    assert result["au_region_l1"]["source"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        swapped, _ = model.transfer(
            torch.from_numpy(target).permute(0, 3, 1, 2).float() / 127.5 - 1,
            torch.from_numpy(source).permute(0, 3, 1, 2).float() / 127.5 - 1,
        )
    t = torch.from_numpy(truth).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert result["whole_l1"]["swapped"] == pytest.approx(float((swapped - t).abs().mean() / 2), rel=1e-4)


def test_au_region_comes_from_the_aus_only_rendering(tiny_run: Path) -> None:
    """With ``aus_only`` the AU region is where it differs from the target, not where the truth does
    (the truth also carries the source's gaze)."""
    model = EETModel.load_from_checkpoint(tiny_run / "stage2" / "last.ckpt")
    rng = np.random.default_rng(1)
    target = rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    source = rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    truth, aus_only = target.copy(), target.copy()
    aus_only[:, 40:50, 10:30] = source[:, 40:50, 10:30]  # the AU change: 200 pixels
    truth[:, 40:50, 10:30] = source[:, 40:50, 10:30]
    truth[:, 5:10, 5:25] = source[:, 5:10, 5:25]  # a gaze change: 100 more pixels, outside the AU region
    by_truth = score_transfer(model, target, source, truth)
    by_aus = score_transfer(model, target, source, truth, aus_only=aus_only)
    assert by_truth["au_region_fraction"] == pytest.approx(300 / 64**2, rel=0.05)
    assert by_aus["au_region_fraction"] == pytest.approx(200 / 64**2, rel=0.05)
    manual = np.abs(target[:, 40:50, 10:30].astype(float) - source[:, 40:50, 10:30]).mean() / 255
    assert by_aus["au_region_l1"]["target"] == pytest.approx(manual, rel=0.06)
    with pytest.raises(ValueError, match="aus_only"):
        score_transfer(model, target, source, truth, aus_only=aus_only[:1])


def test_score_script_end_to_end(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "score.json"
    rc = _script().main(
        [
            "--ckpt",
            str(tiny_run / "stage2" / "last.ckpt"),
            "--config",
            str(tiny_run / "config.yaml"),
            "--pairs",
            "6",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "AU region: swapped - target_self" in printed and "transfer criteria:" in printed
    result = json.loads(out.read_text())
    assert result["pairs"] == 6 and set(result["whole_l1"]) == {
        "swapped",
        "target_self",
        "source_self",
        "target",
        "source",
    }
    assert result["au_region_l1"]["target"] > 0  # the target differs from the truth in its AU region


def test_score_script_bad_input(tmp_path: Path, capsys) -> None:
    rc = _script().main(["--ckpt", str(tmp_path / "missing.ckpt"), "--config", str(tmp_path / "none.yaml")])
    assert rc == 2 and "score_synthetic: error" in capsys.readouterr().err
