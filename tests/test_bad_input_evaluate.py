"""`eet-evaluate` (and its train-scorer command) on bad input: every case is one line
``eet-evaluate: error: ...`` naming the input and what was expected, exit status 2, no traceback, and
nothing written: no output folder, no temporary folder beside it, nothing created above it.

Options that can be checked without loading a file are checked before anything is loaded (the cases in
UP_FRONT run with model loading replaced by a failure); checkpoints and configs are refused before any
image is generated."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from bad_input import assert_one_clear_error, files_under, run_in_process, run_script
from eet_lightning.cli import evaluate as evaluate_module
from eet_lightning.cli.evaluate import main as evaluate

PROG = "eet-evaluate"


@dataclass
class Work:
    """Inputs (the tiny run's files and copies of them) in ``inputs``; --out inside ``base``."""

    run: Path
    inputs: Path
    base: Path
    out: Path

    @property
    def ckpt(self) -> Path:
        return self.run / "stage2" / "last.ckpt"

    @property
    def config(self) -> Path:
        return self.run / "config.yaml"

    def args(self, *extra: str, ckpt: Path | None = None, config: Path | None = None) -> list[str]:
        return [
            "--ckpt", str(ckpt or self.ckpt),
            "--config", str(config or self.config),
            "--out", str(self.out),
            "--pairs", "2", "--no-progress", "--protocol", "groundtruth",
            *extra,
        ]  # fmt: skip

    def yaml_config(self, name: str, edit: Callable[[dict], object]) -> Path:
        cfg = yaml.safe_load(self.config.read_text())
        edit(cfg)
        path = self.inputs / name
        path.write_text(yaml.safe_dump(cfg))
        return path


class _RunsCode:
    """Unpickling this creates the file ``marker``: what a crafted checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


Case = Callable[[Work], tuple[list[str], tuple[str, ...]]]


# counts and values -------------------------------------------------------------------------------------


def examples_zero(w: Work):
    return w.args("--examples", "0"), ("--examples", "from 1 to 64", "got 0")


def pairs_zero(w: Work):
    return w.args("--pairs", "0"), ("--pairs", "got 0")


def pairs_negative(w: Work):
    return w.args("--pairs", "-5"), ("--pairs", "got -5")


def batch_size_zero(w: Work):
    return w.args("--batch-size", "0"), ("--batch-size", "got 0")


def batch_size_nan(w: Work):
    return w.args("--batch-size", "nan"), ("argument --batch-size", "invalid int value: 'nan'")


def examples_not_a_number(w: Work):
    return w.args("--examples", "six"), ("argument --examples", "'six'")


def identity_pairs_absurd(w: Work):
    return w.args("--identity-pairs", "1000000000"), ("--identity-pairs", "got 1000000000")


def seed_negative(w: Work):
    return w.args("--seed", "-1"), ("--seed", "of at least 0", "got -1")


def scorer_epochs_zero(w: Work):
    return w.args("--train-scorers", "--scorer-epochs", "0"), ("--scorer-epochs", "got 0")


def device_unknown(w: Work):
    return w.args("--device", "gpu9"), ("--device", "'gpu9'", "not a torch device")


def device_cuda_missing(w: Work):
    return w.args("--device", "cuda"), ("--device cuda", "CUDA is not available")


def generated_name_reserved(w: Work):
    (w.inputs / "other").mkdir()
    return w.args("--generated", str(w.inputs / "other"), "--generated-name", "eet"), (
        "--generated-name 'eet'",
        "reserved",
    )


def generated_name_with_a_slash(w: Work):
    return w.args("--generated-name", "../x"), ("--generated-name '../x'", "plain name")


def generated_folder_missing(w: Work):
    path = w.inputs / "no such method"
    return w.args("--generated", str(path)), ("--generated", str(path), "no such folder")


def protocol_unknown(w: Work):
    return [*w.args()[:-2], "--protocol", "beauty"], ("argument --protocol", "invalid choice: 'beauty'")


def unknown_option(w: Work):
    return w.args("--colour", "blue"), ("unrecognized arguments: --colour",)


def ckpt_not_given(w: Work):
    return w.args()[2:], ("required", "--ckpt")


# the output --------------------------------------------------------------------------------------------


def out_is_a_file(w: Work):
    w.base.mkdir(parents=True, exist_ok=True)
    w.out.write_text("not a folder")
    return w.args(), ("--out", str(w.out), "is a file")


def out_under_a_file(w: Work):
    w.base.mkdir(parents=True, exist_ok=True)
    (w.base / "file").write_text("x")
    w.out = w.base / "file" / "eval"
    return w.args(), ("--out", str(w.out), "cannot be created", f"{w.base / 'file'} is a file")


def out_not_empty(w: Work):
    w.out.mkdir(parents=True)
    (w.out / "results.json").write_text("{}")
    return w.args(), ("--out", str(w.out), "not empty")


def out_read_only(w: Work):
    (w.base / "locked").mkdir(parents=True)
    os.chmod(w.base / "locked", 0o555)
    w.out = w.base / "locked" / "eval"
    return w.args(), ("--out", str(w.out), "not writable")


# checkpoints --------------------------------------------------------------------------------------------


def ckpt_missing(w: Work):
    path = w.inputs / "no such.ckpt"
    return w.args(ckpt=path), ("--ckpt", str(path), "no such")


def ckpt_a_folder(w: Work):
    return w.args(ckpt=w.run / "stage2"), ("--ckpt", str(w.run / "stage2"), "is a folder")


def ckpt_not_a_checkpoint(w: Work):
    path = w.inputs / "notes.ckpt"
    path.write_bytes(b"these are my notes, not weights\n" * 10)
    return w.args(ckpt=path), ("--ckpt", str(path), "not a readable PyTorch checkpoint")


def ckpt_truncated(w: Work):
    path = w.inputs / "half.ckpt"
    data = w.ckpt.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return w.args(ckpt=path), ("--ckpt", str(path), "not a readable PyTorch checkpoint")


def ckpt_of_stage_one(w: Work):
    path = w.run / "stage1" / "last.ckpt"
    return w.args(ckpt=path), ("--ckpt", str(path), "is a stage-1 checkpoint; expected a stage-2")


def ckpt_that_runs_code(w: Work):
    path = w.inputs / "shared.ckpt"
    torch.save({"eet_stage": 2, "payload": _RunsCode(w.inputs / "pwned")}, path)
    return w.args(ckpt=path), ("--ckpt", str(path), "refused")


def ckpt_hollow(w: Work):  # the stage marker of a stage-2 checkpoint and nothing else
    path = w.inputs / "hollow.ckpt"
    torch.save({"eet_stage": 2}, path)
    return w.args(ckpt=path), ("--ckpt", str(path), "not a complete eet-lightning checkpoint")


# scorers and other files ------------------------------------------------------------------------------


def au_estimator_missing(w: Work):
    path = w.inputs / "au.ckpt"
    return w.args("--au-estimator", str(path)), ("--au-estimator", str(path), "no such file")


def au_estimator_is_an_eet_checkpoint(w: Work):
    args = [*w.args()[:-2], "--protocol", "expression", "--au-estimator", str(w.ckpt)]
    return args, ("--au-estimator", str(w.ckpt), "stage-2 EET checkpoint", "expected a 'au' scorer")


def gaze_classifier_missing(w: Work):
    path = w.inputs / "gaze.ckpt"
    return w.args("--gaze-classifier", str(path)), ("--gaze-classifier", str(path), "no such file")


def identity_model_not_a_checkpoint(w: Work):
    path = w.inputs / "identity.ckpt"
    path.write_bytes(b"\x00not a checkpoint\n")
    args = [*w.args()[:-2], "--protocol", "identity", "--identity-model", str(path)]
    return args, ("--identity-model", str(path), "not a readable PyTorch checkpoint")


def face_weights_missing(w: Work):
    path = w.inputs / "vggface2.pt"
    return w.args("--face-weights", str(path)), ("--face-weights", str(path), "no such file")


def openface_missing(w: Work):
    path = w.inputs / "openface.csv"
    return w.args("--openface", str(path)), ("--openface", str(path), "no such file")


# configs ----------------------------------------------------------------------------------------------


def config_missing(w: Work):
    path = w.inputs / "nowhere.yaml"
    return w.args(config=path), ("--config", str(path), "config file not found")


def config_unknown_key(w: Work):
    path = w.yaml_config("unknown.yaml", lambda c: c.update(colour="blue"))
    return w.args(config=path), ("--config", str(path), "'colour' is not accepted")


def config_malformed(w: Work):
    path = w.inputs / "malformed.yaml"
    path.write_text("data: {class_path: [unclosed\n")
    return w.args(config=path), ("--config", str(path), "is not valid YAML", "line 2")


def config_wrong_type(w: Work):
    path = w.yaml_config("wrong.yaml", lambda c: c["data"]["init_args"].update(image_size="big"))
    return w.args(config=path), ("--config", str(path), '"image_size"', "Got value: big")


def config_not_a_mapping(w: Work):
    path = w.inputs / "list.yaml"
    path.write_text("- data\n- model\n")
    return w.args(config=path), ("--config", str(path), "expected a mapping")


def config_negative_count(w: Work):
    path = w.yaml_config("neg.yaml", lambda c: c["data"]["init_args"].update(num_test_identities=-3))
    return w.args(config=path), ("--config", str(path), "num_test_identities is too small: -3")


def data_override_bad_size(w: Work):
    return w.args("--data.image_size", "32"), ("--config", "data.image_size must be one of", "got 32")


def data_override_unknown(w: Work):
    return w.args("--data.colour", "blue"), ("--config", "'colour' is not accepted")


# train-scorer --------------------------------------------------------------------------------------------


def train_scorer_max_epochs_zero(w: Work):
    args = ["train-scorer", "--config", str(w.config), "--kind", "au", "--out", str(w.out / "au.ckpt")]
    return [*args, "--max-epochs", "0"], ("--max-epochs", "got 0")


def train_scorer_limit_nan(w: Work):
    args = ["train-scorer", "--config", str(w.config), "--kind", "au", "--out", str(w.out / "au.ckpt")]
    return [*args, "--limit-train-batches", "nan"], ("--limit-train-batches", "got nan")


def train_scorer_out_is_a_folder(w: Work):
    w.out.mkdir(parents=True)
    args = ["train-scorer", "--config", str(w.config), "--kind", "gaze", "--out", str(w.out)]
    return args, ("--out", str(w.out), "is a folder")


def train_scorer_unknown_kind(w: Work):
    args = ["train-scorer", "--config", str(w.config), "--kind", "beauty", "--out", str(w.out / "b.ckpt")]
    return args, ("argument --kind", "invalid choice: 'beauty'")


CASES: dict[str, Case] = {
    f.__name__: f
    for f in (
        examples_zero,
        pairs_zero,
        pairs_negative,
        batch_size_zero,
        batch_size_nan,
        examples_not_a_number,
        identity_pairs_absurd,
        seed_negative,
        scorer_epochs_zero,
        device_unknown,
        device_cuda_missing,
        generated_name_reserved,
        generated_name_with_a_slash,
        generated_folder_missing,
        protocol_unknown,
        unknown_option,
        ckpt_not_given,
        out_is_a_file,
        out_under_a_file,
        out_not_empty,
        out_read_only,
        ckpt_missing,
        ckpt_a_folder,
        ckpt_not_a_checkpoint,
        ckpt_truncated,
        ckpt_of_stage_one,
        ckpt_that_runs_code,
        ckpt_hollow,
        au_estimator_missing,
        au_estimator_is_an_eet_checkpoint,
        gaze_classifier_missing,
        identity_model_not_a_checkpoint,
        face_weights_missing,
        openface_missing,
        config_missing,
        config_unknown_key,
        config_malformed,
        config_wrong_type,
        config_not_a_mapping,
        config_negative_count,
        data_override_bad_size,
        data_override_unknown,
        train_scorer_max_epochs_zero,
        train_scorer_limit_nan,
        train_scorer_out_is_a_folder,
        train_scorer_unknown_kind,
    )
}
# Refused before the checkpoint is read: these run with the model loader replaced by a failure.
UP_FRONT = {
    "examples_zero",
    "pairs_zero",
    "pairs_negative",
    "batch_size_zero",
    "batch_size_nan",
    "examples_not_a_number",
    "identity_pairs_absurd",
    "seed_negative",
    "scorer_epochs_zero",
    "device_unknown",
    "device_cuda_missing",
    "generated_name_reserved",
    "generated_name_with_a_slash",
    "generated_folder_missing",
    "out_is_a_file",
    "out_under_a_file",
    "out_not_empty",
    "out_read_only",
    "ckpt_missing",
    "ckpt_a_folder",
    "au_estimator_missing",
    "gaze_classifier_missing",
    "face_weights_missing",
    "openface_missing",
}
AS_ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
SKIPS = {
    "out_read_only": pytest.mark.skipif(AS_ROOT, reason="root may write into a read-only folder"),
    "device_cuda_missing": pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
}


def _work(tiny_run: Path, tmp_path: Path) -> Work:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    base = tmp_path / "work"
    return Work(run=tiny_run, inputs=inputs, base=base, out=base / "eval")


def _no_model(*args, **kwargs):
    raise AssertionError("the checkpoint was loaded before the options were checked")


@pytest.mark.parametrize(
    "case", [pytest.param(name, marks=SKIPS[name]) if name in SKIPS else name for name in CASES]
)
def test_bad_input_is_one_line_and_nothing_written(
    tiny_run: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    w = _work(tiny_run, tmp_path)
    args, needles = CASES[case](w)
    if case in UP_FRONT:
        monkeypatch.setattr(evaluate_module, "_load_model", _no_model)
    before = files_under(w.base)
    try:
        rc, out, err = run_in_process(evaluate, args, capsys)
    finally:
        if (w.base / "locked").exists():
            os.chmod(w.base / "locked", 0o755)
    assert_one_clear_error(PROG, rc, err, *needles)
    assert files_under(w.base) == before, "the refused run wrote something"
    assert not (w.inputs / "pwned").exists(), "code in a checkpoint ran"


@pytest.mark.parametrize(
    "case", ["examples_zero", "ckpt_that_runs_code", "au_estimator_is_an_eet_checkpoint"]
)
def test_no_traceback_escapes_a_real_process(tiny_run: Path, tmp_path: Path, case: str) -> None:
    """The console script as a user runs it: a fresh interpreter, nothing but the one line on stderr."""
    w = _work(tiny_run, tmp_path)
    args, needles = CASES[case](w)
    proc = run_script(PROG, args)
    assert_one_clear_error(PROG, proc.returncode, proc.stderr, *needles)
    assert proc.stdout == "" and files_under(w.base) == set()
    assert not (w.inputs / "pwned").exists()


def test_a_failure_after_the_checks_leaves_no_folders_behind(
    tiny_run: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while evaluating (here: the disk fills while the report is written) removes the
    temporary folder and the parent folders the run created for --out; one line names what failed."""

    def full_disk(results, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(evaluate_module, "bar_chart", full_disk)
    w = _work(tiny_run, tmp_path)
    w.out = w.base / "a" / "b" / "eval"
    args = [
        *w.args()[:-2],
        "--protocol",
        "groundtruth",
        "expression",
        "--train-scorers",
        "--scorer-epochs",
        "1",
    ]
    rc, _, err = run_in_process(evaluate, args, capsys)
    assert_one_clear_error(PROG, rc, err, "No space left on device", "chart.png")
    assert files_under(w.base) == set()


def test_help_is_still_the_usage_text(capsys) -> None:
    rc, out, err = run_in_process(evaluate, ["--help"], capsys)
    assert rc == 0 and out.startswith("usage: eet-evaluate") and err == ""
