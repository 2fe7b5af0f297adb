"""No file the library reads can run code: a checkpoint crafted to create a file when unpickled is refused,
with one clear message, by every entry point that loads a checkpoint, and the file is never created."""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import pytest
import torch

from eet_lightning import EETModel
from eet_lightning.checkpoint_io import UnsafeCheckpointError, load_checkpoint
from eet_lightning.cli import evaluate, fit, transfer
from eet_lightning.evaluation.scorers import ScorerError, load_scorer

ROOT = Path(__file__).resolve().parent.parent


class _CreatesAFile:
    """Unpickling this calls ``Path.touch(marker)``: what a malicious checkpoint would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _crafted(tmp_path: Path, like: Path | None = None, name: str = "crafted.ckpt") -> tuple[Path, Path]:
    """(a checkpoint that passes for one of ours but creates ``marker`` when unpickled, marker)."""
    marker = tmp_path / f"{name}.ran"
    ckpt = torch.load(like, map_location="cpu", weights_only=True) if like else {"eet_stage": 2}
    ckpt["payload"] = _CreatesAFile(marker)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path, marker


def test_the_crafted_file_does_run_code_when_unpickled_plainly(tmp_path: Path) -> None:
    path, marker = _crafted(tmp_path)
    torch.load(path, weights_only=False)  # what the library used to do
    assert marker.exists()


def test_load_checkpoint_refuses_and_reads_ours(tiny_run: Path, tmp_path: Path) -> None:
    path, marker = _crafted(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"thing.*crafted.ckpt was refused"):
        load_checkpoint(path, "thing")
    assert not marker.exists()
    ckpt = load_checkpoint(tiny_run / "stage2" / "last.ckpt", "thing")
    assert ckpt["eet_stage"] == 2 and ckpt["state_dict"]
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(empty, "thing")
    with pytest.raises(FileNotFoundError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "none.ckpt", "thing")


def test_every_entry_point_refuses_a_crafted_checkpoint(tiny_run: Path, tmp_path: Path, capsys) -> None:
    stage2 = tiny_run / "stage2" / "last.ckpt"
    path, marker = _crafted(tmp_path, like=stage2)

    with pytest.raises(UnsafeCheckpointError, match="was refused"):
        EETModel.load_from_checkpoint(path)

    out = tmp_path / "out"
    face = ROOT / "docs" / "images" / "quickstart_test_grid.png"  # any image: the checkpoint fails first
    assert (
        transfer.main(["--ckpt", str(path), "--source", str(face), "--target", str(face), "--out", str(out)])
        == 2
    )
    assert "was refused" in capsys.readouterr().err and not out.exists()

    args = ["--ckpt", str(path), "--config", str(tiny_run / "config.yaml"), "--out", str(tmp_path / "ev")]
    assert evaluate.main([*args, "--pairs", "2", "--no-progress"]) == 2
    assert "was refused" in capsys.readouterr().err

    stage1, marker1 = _crafted(tmp_path, like=tiny_run / "stage1" / "last.ckpt", name="stage1.ckpt")
    config = ["--config", str(tiny_run / "config.yaml")]
    run = tmp_path / "run"
    assert (
        fit.main([*config, "--run_dir", str(run), "--stage", "2", "--stage2.stage1_ckpt", str(stage1)]) == 2
    )
    assert "was refused" in capsys.readouterr().err

    # resuming a run whose last.ckpt was replaced: refused before anything is written
    resumed = tmp_path / "resumed"
    shutil.copytree(tiny_run, resumed, ignore=shutil.ignore_patterns("logs", "samples"))
    crafted_last, marker_last = _crafted(tmp_path, like=tiny_run / "stage1" / "last.ckpt", name="last.ckpt")
    shutil.copy(crafted_last, resumed / "stage1" / "last.ckpt")
    before = sorted(p.name for p in resumed.iterdir())
    assert fit.main([*config, "--run_dir", str(resumed), "--stage", "1", "--resume", "true"]) == 2
    assert "was refused" in capsys.readouterr().err
    assert sorted(p.name for p in resumed.iterdir()) == before

    from eet_lightning.cli import export

    exported = tmp_path / "shared.safetensors"
    assert export.main(["--ckpt", str(path), "--out", str(exported)]) == 2
    assert "was refused" in capsys.readouterr().err and not exported.exists()

    scorer, marker_scorer = _crafted(tmp_path, name="scorer.ckpt")
    with pytest.raises(ScorerError, match="was refused"):
        load_scorer(scorer, "au")

    import importlib.util

    spec = importlib.util.spec_from_file_location("score_synthetic", ROOT / "scripts" / "score_synthetic.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    assert score.main(["--ckpt", str(path), "--config", str(tiny_run / "config.yaml")]) == 2
    assert "was refused" in capsys.readouterr().err

    for m in (marker, marker1, marker_last, marker_scorer):
        assert not m.exists(), f"{m.name}: code in a checkpoint ran"
