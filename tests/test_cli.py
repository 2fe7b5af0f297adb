"""`eet-fit` end to end on the tiny config: both stages, one stage, resume, config lookup, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from eet_lightning import EETModel
from eet_lightning.cli.fit import main


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_fit_writes_checkpoints_grid_and_config(tiny_run: Path) -> None:
    s1, s2 = tiny_run / "stage1" / "last.ckpt", tiny_run / "stage2" / "last.ckpt"
    assert s1.is_file() and s2.is_file()
    assert _ckpt(s1)["eet_stage"] == 1 and _ckpt(s2)["eet_stage"] == 2
    assert _ckpt(s1)["global_step"] == 2
    assert _ckpt(s2)["global_step"] == 4  # manual optimization: two optimizer steps per batch
    assert (tiny_run / "test_grid.png").stat().st_size > 0
    assert list((tiny_run / "samples").glob("stage2-epoch*.png"))
    assert (tiny_run / "au_contact_sheet.png").is_file()
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["data"]["init_args"]["batch_size"] == 4 and cfg["model"]["variant"] == "eet"
    metrics = (tiny_run / "logs" / "stage2" / "version_0" / "metrics.csv").read_text()
    assert "train/L_u_swap" in metrics and "val/swap_truth_l1" in metrics


def test_each_stage_may_set_its_own_batch_size(tiny_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--config", str(tiny_config), "--run_dir", str(run), "--stage1.limit_train_batches", "1.0"]
    args += ["--stage2.limit_train_batches", "1.0", "--stage1.batch_size", "8", "--stage2.batch_size", "2"]
    assert main(args) == 0
    # 16 training pairs an epoch: 2 batches of 8 in stage 1, 8 batches of 2 in stage 2 (2 steps each)
    assert _ckpt(run / "stage1" / "last.ckpt")["global_step"] == 2
    assert _ckpt(run / "stage2" / "last.ckpt")["global_step"] == 16


def test_stage2_checkpoint_is_self_contained(tiny_run: Path, tmp_path: Path) -> None:
    # Move the stage-1 file away: loading stage 2 must not need it.
    ckpt = tmp_path / "alone.ckpt"
    ckpt.write_bytes((tiny_run / "stage2" / "last.ckpt").read_bytes())
    model = EETModel.load_from_checkpoint(ckpt)
    assert not model.training
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    sa, sb = model.transfer(a, b)
    assert sa.shape == a.shape and sb.shape == b.shape
    assert sa.abs().max() <= 1 and not torch.allclose(sa, a)
    # the swap is G(f_r of the other image, own f_f): check against the parts
    fr, ff = model.encode(torch.cat([a, b]))
    torch.testing.assert_close(sa, model.decode(fr[2:], ff[:2]))
    single_a, _ = model.transfer(a[0], b[0])
    torch.testing.assert_close(single_a, sa[0], atol=1e-5, rtol=1e-4)
    assert model.predict_aus(a).shape == (2, 12)
    with pytest.raises(ValueError, match="stage-2 checkpoint"):
        EETModel.load_from_checkpoint(tiny_run / "stage1" / "last.ckpt")


def test_stage2_alone_reads_stage1_and_freezes_it(tiny_run: Path, tiny_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    rc = main(
        [
            "--config",
            str(tiny_config),
            "--run_dir",
            str(run),
            "--stage",
            "2",
            "--stage2.stage1_ckpt",
            str(tiny_run / "stage1" / "last.ckpt"),
            "--data.batch_size",
            "2",
        ]
    )
    assert rc == 0 and not (run / "stage1").exists()
    s1 = _ckpt(tiny_run / "stage1" / "last.ckpt")["state_dict"]
    s2 = _ckpt(run / "stage2" / "last.ckpt")["state_dict"]
    for key, value in s1.items():
        part = key.split(".")[0]
        if part in ("encoder", "attribute_classifier", "au_discriminator", "identity_discriminator"):
            torch.testing.assert_close(s2[key], value, msg=f"frozen {key} changed")
    moved = [k for k in s1 if k.startswith("au_related_encoder.") and not torch.equal(s1[k], s2[k])]
    assert moved, "Er did not train in stage 2"
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]["batch_size"] == 2


def test_fit_trains_under_bf16_mixed_precision(tiny_config: Path, tmp_path: Path) -> None:
    """``--trainer.precision bf16-mixed`` (autocast around both stages' steps, the manual-optimization
    stage included) trains to finite weights that load and swap like fp32 ones."""
    run_dir = tmp_path / "bf16"
    args = ["--config", str(tiny_config), "--run_dir", str(run_dir), "--trainer.precision", "bf16-mixed"]
    assert main(args) == 0
    stage1 = torch.load(run_dir / "stage1" / "last.ckpt", map_location="cpu", weights_only=False)
    stage2 = torch.load(run_dir / "stage2" / "last.ckpt", map_location="cpu", weights_only=False)
    assert stage2["hyper_parameters"] and all(
        v.dtype == torch.float32 and torch.isfinite(v).all()
        for v in stage2["state_dict"].values()
        if v.is_floating_point()
    )
    moved = [
        k
        for k, v in stage1["state_dict"].items()
        if k.startswith("au_related_encoder") and not torch.equal(v, stage2["state_dict"][k])
    ]
    assert moved  # stage 2 trained Er under autocast
    model = EETModel.load_from_checkpoint(run_dir / "stage2" / "last.ckpt")
    swapped, _ = model.transfer(torch.zeros(2, 3, 64, 64), torch.rand(2, 3, 64, 64) * 2 - 1)
    assert swapped.shape == (2, 3, 64, 64) and torch.isfinite(swapped).all()


def test_resume_continues_and_refuses_to_overwrite(tiny_config: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    base = ["--config", str(tiny_config), "--run_dir", str(run), "--stage", "1"]
    assert main([*base, "--stage1.max_epochs", "1"]) == 0
    first = _ckpt(run / "stage1" / "last.ckpt")
    assert first["global_step"] == 2
    assert main([*base, "--stage1.max_epochs", "2"]) == 2  # existing checkpoints, no --resume
    assert main([*base, "--stage1.max_epochs", "2", "--resume", "true"]) == 0
    ckpt = _ckpt(run / "stage1" / "last.ckpt")
    assert ckpt["global_step"] == 4 and ckpt["epoch"] == first["epoch"] + 1


def test_bundled_config_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", "synthetic.yaml", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"].endswith("SyntheticDataModule")
    # the bundled copy, found by name, is the repository's configs/synthetic.yaml
    bundled = yaml.safe_load((Path(__file__).parents[1] / "configs" / "synthetic.yaml").read_text())
    assert printed["stage2"]["batch_size"] == bundled["stage2"]["batch_size"] == 4
    assert (
        printed["model"]["channels_last"] is True and printed["model"]["arch"]["grouped_au_encoder"] is True
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--data.aus", "[1, 3, 12]"], "unknown AU"),
        (["--data.image_size", "100"], "image_size"),
        (["--model.arch.width", "0"], "width"),
        (["--stage1.max_epochs", "0"], "max_epochs"),
        (["--stage", "2"], "stage-1 checkpoint"),
    ],
)
def test_bad_config_values_end_in_one_clear_error(
    tiny_config: Path, tmp_path: Path, capsys, override: list[str], message: str
) -> None:
    rc = main(["--config", str(tiny_config), "--run_dir", str(tmp_path / "run"), *override])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "stage1").exists()


@pytest.mark.parametrize(
    ("root", "message"),
    [([], "data.root must be set"), (["--data.root", "/no/such/folder"], "/no/such/folder is not a folder")],
)
def test_paper_config_without_prepared_data(tmp_path: Path, capsys, root: list[str], message: str) -> None:
    rc = main(["--config", "disfa.yaml", "--run_dir", str(tmp_path / "run"), *root])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("eet-fit: error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_missing_config_file(capsys) -> None:
    assert main(["--config", "no_such_config.yaml"]) == 2
    assert "config file not found: no_such_config.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_other_loggers(
    tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: str
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # never reach the network from tests
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    rc = main(["--config", str(tiny_config), "--run_dir", str(run), "--stage", "1", "--logger", logger])
    assert rc == 0
    if logger == "tensorboard":
        assert list((run / "logs" / "stage1").rglob("events.out.tfevents.*"))
    else:
        assert list((run / "wandb").glob("offline-run-*"))


def test_last_checkpoint_after_every_epoch_and_only_existing_files_reported(
    tiny_config: Path, tmp_path: Path, capsys
) -> None:
    """3 epochs with a checkpoint every 2: the periodic file of epoch 2 and last.ckpt holding epoch 3 (the
    epoch after the last period used to be saved nowhere)."""
    run = tmp_path / "run"
    args = ["--config", str(tiny_config), "--run_dir", str(run), "--stage", "1"]
    assert main([*args, "--stage1.max_epochs", "3", "--stage1.checkpoint_every_n_epochs", "2"]) == 0
    files = sorted(p.name for p in (run / "stage1").iterdir())
    assert files == ["epoch001.ckpt", "last.ckpt"], files
    assert _ckpt(run / "stage1" / "last.ckpt")["global_step"] == 6  # 3 epochs of 2 steps
    assert _ckpt(run / "stage1" / "epoch001.ckpt")["global_step"] == 4
    capsys.readouterr()
    empty = tmp_path / "empty"
    assert (
        main(
            ["--config", str(tiny_config), "--run_dir", str(empty), "--stage", "1", "--stage1.max_steps", "0"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "stage1: nothing written" in out and not (empty / "stage1" / "last.ckpt").exists()
