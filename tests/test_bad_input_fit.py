"""Bad input to `eet-fit` and `EETModel`: every case ends in one line naming the input and what was
expected (exit status 2 for the command, one ValueError / FileNotFoundError for the model), no traceback, no
usage dump, and nothing written to the run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bad_input import assert_one_clear_error, files_under, run_in_process, run_script
from eet_lightning import EETModel
from eet_lightning.cli.fit import main

# ---------------------------------------------------------------------------------------------- eet-fit

# (id, extra arguments, needles the one error line must hold); {tmp} is the test's own folder
OPTION_CASES = [
    ("lr-zero", ["--stage1.lr", "0"], ["stage1.lr", "positive"]),
    ("lr-nan", ["--stage1.lr", "nan"], ["stage1.lr", "nan"]),
    ("lr-inf", ["--stage2.lr_generator", "inf"], ["stage2.lr_generator", "inf"]),
    ("lr-negative", ["--stage2.lr_discriminator=-1e-4"], ["stage2.lr_discriminator", "positive"]),
    ("lr-not-a-number", ["--stage1.lr", "fast"], ["stage1.lr", "fast"]),
    ("betas-above-one", ["--stage1.betas", "[0.9, 1.5]"], ["stage1.betas", "[0, 1)"]),
    ("betas-three", ["--stage2.betas", "[0.5, 0.9, 0.9]"], ["stage2.betas"]),
    ("max-epochs-zero", ["--stage1.max_epochs", "0"], ["stage1.max_epochs", ">= 1"]),
    ("max-epochs-text", ["--stage2.max_epochs", "many"], ["stage2.max_epochs", "many"]),
    ("max-steps-negative", ["--stage1.max_steps", "-5"], ["stage1.max_steps", "-5"]),
    (
        "period-zero",
        ["--stage1.checkpoint_every_n_epochs", "0"],
        ["stage1.checkpoint_every_n_epochs", ">= 1"],
    ),
    ("limit-negative", ["--stage2.limit_train_batches", "-1"], ["stage2.limit_train_batches", "-1"]),
    (
        "limit-fraction-above-one",
        ["--stage1.limit_train_batches", "1.5"],
        ["stage1.limit_train_batches", "1.5"],
    ),
    ("stage-batch-zero", ["--stage2.batch_size", "0"], ["stage2.batch_size", ">= 1"]),
    ("data-batch-zero", ["--data.batch_size", "0"], ["batch_size", "0"]),
    ("grid-pairs-zero", ["--grid_pairs", "0"], ["--grid_pairs", ">= 1"]),
    ("stage-three", ["--stage", "3"], ["stage", "3"]),
    ("resume-maybe", ["--resume", "maybe"], ["resume", "maybe"]),
    ("seed-text", ["--seed_everything", "abc"], ["seed_everything", "abc"]),
    ("logger-unknown", ["--logger", "mlflow"], ["logger", "mlflow"]),
    ("unknown-option", ["--stage1.lrr", "1e-4"], ["stage1.lrr"]),
    ("loss-weight-negative", ["--model.loss_weights.lambda_u_swap", "-1"], ["lambda_u_swap", "non-negative"]),
    ("loss-weight-unknown", ["--model.loss_weights.lambda_q", "1"], ["lambda_q"]),
    ("variant-unknown", ["--model.variant", "eet_plus"], ["variant", "eet_plus"]),
    ("arch-width-zero", ["--model.arch.width", "0"], ["arch.width", "0"]),
    ("arch-output-unknown", ["--model.arch.generator_output", "paint"], ["generator_output", "paint"]),
    ("image-size-unsupported", ["--data.image_size", "100"], ["image_size", "100"]),
    ("au-unknown", ["--data.aus", "[1, 3, 12]"], ["AU", "3"]),
    ("trainer-devices-zero", ["--trainer.devices", "0"], ["trainer", "devices"]),
    ("trainer-gpu-missing", ["--trainer.accelerator", "cuda"], ["trainer", "CUDA"]),
    ("stage2-without-stage1", ["--stage", "2"], ["stage-1 checkpoint", "does not exist"]),
]


def _fit(tiny_config: Path, run_dir: Path, extra: list[str]) -> list[str]:
    return ["--config", str(tiny_config), "--run_dir", str(run_dir), *extra]


@pytest.mark.parametrize(
    ("extra", "needles"), [c[1:] for c in OPTION_CASES], ids=[c[0] for c in OPTION_CASES]
)
def test_bad_option(tiny_config: Path, tmp_path: Path, capsys, extra: list[str], needles: list[str]) -> None:
    if extra == ["--trainer.accelerator", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run_dir = tmp_path / "run"
    rc, out, err = run_in_process(main, _fit(tiny_config, run_dir, extra), capsys)
    assert_one_clear_error("eet-fit", rc, err, *needles)
    assert "usage:" not in out + err
    assert not run_dir.exists(), files_under(run_dir)


def _yaml(tmp: Path, text: str | bytes) -> Path:
    """Each case its own file (bad1.yaml, bad2.yaml, ...)."""
    path = tmp / "in" / f"bad{len(list(tmp.glob('in/bad*.yaml'))) + 1}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _tiny(tiny_config: Path, edit: Callable[[dict], None]) -> str:
    cfg = yaml.safe_load(tiny_config.read_text())
    edit(cfg)
    return yaml.safe_dump(cfg)


def _config_cases(tiny_config: Path, tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """(arguments, needles) of config-file cases, built in ``tmp``."""

    def set_key(*path_value):
        *path, value = path_value

        def edit(cfg):
            node = cfg
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value

        return edit

    folder = tmp / "in" / "a_folder.yaml"
    folder.mkdir(parents=True)
    text_ckpt = tmp / "in" / "notes.ckpt"
    text_ckpt.write_text("not weights")
    return {
        "config-missing": (["--config", str(tmp / "in" / "nope.yaml")], ["nope.yaml", "not found"]),
        "config-is-folder": (["--config", str(folder)], ["a_folder.yaml"]),
        "config-malformed": (["--config", str(_yaml(tmp, "data: [\n  - oops"))], [".yaml"]),
        "config-not-utf8": (["--config", str(_yaml(tmp, b"seed_everything: \xff\xfe\n"))], [".yaml"]),
        "config-not-a-mapping": (["--config", str(_yaml(tmp, "- 1\n- 2\n"))], [".yaml"]),
        "config-unknown-top-key": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, set_key("epochs", 3))))],
            ["epochs"],
        ),
        "config-unknown-nested-key": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, set_key("stage1", "warmup", 3))))],
            ["warmup"],
        ),
        "config-wrong-type": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, set_key("stage1", "max_epochs", [1, 2]))))],
            ["stage1.max_epochs"],
        ),
        "config-lr-string": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, set_key("stage2", "lr_generator", "high"))))],
            ["stage2.lr_generator", "high"],
        ),
        "config-data-class-unknown": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, set_key("data", "class_path", "my.Data"))))],
            ["my.Data"],
        ),
        "config-data-option-unknown": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, set_key("data", "init_args", "faces", 9))))],
            ["faces"],
        ),
        "config-no-data": (
            ["--config", str(_yaml(tmp, _tiny(tiny_config, lambda c: c.pop("data"))))],
            ["data"],
        ),
        "stage1-ckpt-missing": (
            [
                "--config",
                str(tiny_config),
                "--stage",
                "2",
                "--stage2.stage1_ckpt",
                str(tmp / "in" / "s1.ckpt"),
            ],
            ["s1.ckpt", "does not exist"],
        ),
        "stage1-ckpt-text": (
            ["--config", str(tiny_config), "--stage", "2", "--stage2.stage1_ckpt", str(text_ckpt)],
            ["notes.ckpt", "not a readable PyTorch checkpoint"],
        ),
    }


CONFIG_CASE_IDS = [
    "config-missing",
    "config-is-folder",
    "config-malformed",
    "config-not-utf8",
    "config-not-a-mapping",
    "config-unknown-top-key",
    "config-unknown-nested-key",
    "config-wrong-type",
    "config-lr-string",
    "config-data-class-unknown",
    "config-data-option-unknown",
    "config-no-data",
    "stage1-ckpt-missing",
    "stage1-ckpt-text",
]


@pytest.mark.parametrize("case", CONFIG_CASE_IDS)
def test_bad_config(tiny_config: Path, tmp_path: Path, capsys, case: str) -> None:
    args, needles = _config_cases(tiny_config, tmp_path)[case]
    run_dir = tmp_path / "run"
    rc, out, err = run_in_process(main, [*args, "--run_dir", str(run_dir)], capsys)
    assert_one_clear_error("eet-fit", rc, err, *needles)
    assert "usage:" not in out + err
    assert not run_dir.exists(), files_under(run_dir)


def test_stage1_file_of_the_wrong_stage(tiny_run: Path, tiny_config: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    wrong = tiny_run / "stage2" / "last.ckpt"
    args = _fit(tiny_config, run_dir, ["--stage", "2", "--stage2.stage1_ckpt", str(wrong)])
    rc, _, err = run_in_process(main, args, capsys)
    assert_one_clear_error("eet-fit", rc, err, str(wrong), "stage-2 checkpoint", "expected a stage-1")
    assert not run_dir.exists()


@pytest.mark.parametrize("where", ["is-a-file", "under-a-file"])
def test_run_dir_that_cannot_be_a_folder(tiny_config: Path, tmp_path: Path, capsys, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    run_dir = blocker if where == "is-a-file" else blocker / "run"
    rc, _, err = run_in_process(main, _fit(tiny_config, run_dir, []), capsys)
    assert_one_clear_error("eet-fit", rc, err, "--run_dir", str(run_dir), "is a file")
    assert blocker.read_text() == "a file"


def test_existing_run_without_resume_and_foreign_last_checkpoint(
    tiny_config: Path, tmp_path: Path, capsys
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "stage1").mkdir(parents=True)
    (run_dir / "stage1" / "last.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    before = files_under(run_dir)
    rc, _, err = run_in_process(main, _fit(tiny_config, run_dir, []), capsys)
    assert_one_clear_error("eet-fit", rc, err, "already holds checkpoints", "--resume true")
    rc, _, err = run_in_process(main, _fit(tiny_config, run_dir, ["--resume", "true"]), capsys)
    assert_one_clear_error(
        "eet-fit", rc, err, "last.ckpt", "not a readable PyTorch checkpoint", "start the stage"
    )
    assert files_under(run_dir) == before


def test_paths_with_spaces_and_non_ascii_work(tiny_config: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "my configs" / "réglage é.yaml"
    config.parent.mkdir()
    config.write_text(tiny_config.read_text())
    run_dir = tmp_path / "runs ü" / "essai 1"
    rc, out, _ = run_in_process(
        main, ["--config", str(config), "--run_dir", str(run_dir), "--stage", "1"], capsys
    )
    assert rc == 0 and (run_dir / "stage1" / "last.ckpt").is_file() and str(run_dir) in out


@pytest.mark.parametrize(
    ("args", "needles"),
    [(["--stage1.lr", "-1"], ["stage1.lr"]), (["--no_such_option", "1"], ["no_such_option"])],
    ids=["bad-value", "unknown-option"],
)
def test_no_traceback_escapes_the_script(
    tiny_config: Path, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    run_dir = tmp_path / "run"
    done = run_script("eet-fit", ["--config", str(tiny_config), "--run_dir", str(run_dir), *args])
    assert_one_clear_error("eet-fit", done.returncode, done.stderr, *needles)
    assert not run_dir.exists()


def test_help_is_still_printed_when_asked_for(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--run_dir" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- EETModel


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> EETModel:
    return EETModel.load_from_checkpoint(tiny_run / "stage2" / "last.ckpt")


def _img(*shape: int) -> torch.Tensor:
    return torch.rand(*shape) * 2 - 1


MODEL_CASES: list[tuple[str, Callable[[EETModel, Path], object], type[Exception], list[str]]] = [
    (
        "load-missing",
        lambda m, t: EETModel.load_from_checkpoint(t / "none.ckpt"),
        FileNotFoundError,
        ["none.ckpt"],
    ),
    ("load-folder", lambda m, t: EETModel.load_from_checkpoint(t), ValueError, ["is a folder"]),
    (
        "load-text",
        lambda m, t: EETModel.load_from_checkpoint(_text(t)),
        ValueError,
        ["notes.ckpt", "not a readable PyTorch checkpoint"],
    ),
    (
        "one-channel",
        lambda m, t: m.transfer(_img(1, 1, 64, 64), _img(1, 3, 64, 64)),
        ValueError,
        ["image_a", "[1, 1, 64, 64]"],
    ),
    (
        "wrong-size",
        lambda m, t: m.transfer(_img(1, 3, 64, 64), _img(1, 3, 32, 32)),
        ValueError,
        ["image_b", "64"],
    ),
    (
        "nan-pixels",
        lambda m, t: m.transfer(_img(1, 3, 64, 64).fill_(float("nan")), _img(1, 3, 64, 64)),
        ValueError,
        ["image_a", "NaN"],
    ),
    (
        "out-of-range",
        lambda m, t: m.transfer(_img(1, 3, 64, 64) * 200, _img(1, 3, 64, 64)),
        ValueError,
        ["[-1, 1]"],
    ),
    (
        "uint8-tensor",
        lambda m, t: m.transfer(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), _img(1, 3, 64, 64)),
        ValueError,
        ["float tensor"],
    ),
    (
        "batch-mismatch",
        lambda m, t: m.transfer(_img(2, 3, 64, 64), _img(3, 3, 64, 64)),
        ValueError,
        ["2 and 3"],
    ),
    (
        "float-numpy",
        lambda m, t: m.transfer(np.zeros((64, 64, 3), np.float32), _img(3, 64, 64)),
        ValueError,
        ["uint8"],
    ),
    (
        "not-square",
        lambda m, t: m.transfer(np.zeros((64, 80, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)),
        ValueError,
        ["square"],
    ),
    (
        "missing-image-path",
        lambda m, t: m.transfer(t / "no.png", t / "no.png"),
        ValueError,
        ["no.png", "not found"],
    ),
    ("empty-list", lambda m, t: m.transfer([], []), ValueError, ["empty list"]),
    ("unknown-au", lambda m, t: m.transfer(_img(3, 64, 64), _img(3, 64, 64), aus=[3]), ValueError, ["AU 3"]),
    (
        "strength-huge",
        lambda m, t: m.transfer(_img(3, 64, 64), _img(3, 64, 64), strength=1e6),
        ValueError,
        ["strength", "1000000"],
    ),
    (
        "strength-nan",
        lambda m, t: m.transfer(_img(3, 64, 64), _img(3, 64, 64), strength=float("nan")),
        ValueError,
        ["strength", "nan"],
    ),
    ("wrong-kind", lambda m, t: m.predict_aus("not an image path"), ValueError, ["not an image path"]),
]


def _text(folder: Path) -> Path:
    path = folder / "notes.ckpt"
    path.write_text("these are notes")
    return path


@pytest.mark.parametrize(
    ("call", "error", "needles"), [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES]
)
def test_eet_model_bad_input(
    model: EETModel, tmp_path: Path, call: Callable, error: type[Exception], needles: list[str]
) -> None:
    with pytest.raises(error) as info:
        call(model, tmp_path)
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
