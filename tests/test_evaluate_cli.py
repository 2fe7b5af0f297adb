"""`eet-evaluate` end to end on the tiny synthetic model, its errors, and the ablation command."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from eet_lightning.cli.evaluate import main
from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.evaluation.synthetic import synthetic_faces

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture(scope="module")
def evaluated(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "eet"
    rc = main(
        [
            "--ckpt", str(tiny_run / "stage2" / "last.ckpt"),
            "--config", str(tiny_run / "config.yaml"),
            "--out", str(out),
            "--pairs", "6",
            "--train-scorers", "--scorer-epochs", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    return out


def test_eet_evaluate_writes_every_output(evaluated: Path) -> None:
    names = {p.name for p in evaluated.iterdir()}
    assert {"results.json", "results.md", "chart.png", "examples.png", "pairs", "scorers"} <= names
    res = json.loads((evaluated / "results.json").read_text())
    assert res["protocols"] == ["groundtruth", "expression", "identity", "gaze"]
    expr = res["expression"]
    assert expr["rows"] == 12 and set(expr["methods"]) == {"eet", "unchanged_target"}
    assert len(expr["methods"]["eet"]["icc"]) == 12 and all(
        -1 <= v <= 1 for v in expr["methods"]["eet"]["icc"]
    )
    assert res["identity"]["rows"] == 400 and set(res["identity"]["methods"]) == {"real", "eet"}
    assert res["groundtruth"]["pairs"] == 12 and res["groundtruth"]["au_region_l1"]["source"] > 0
    table = (evaluated / "results.md").read_text()
    assert "| Avg |" in table and "| 26 |" in table and "TAR@FAR=1%" in table and "SSIM AU region" in table
    with open(evaluated / "pairs" / "expression.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
    assert Image.open(evaluated / "chart.png").size[0] > 300
    assert not [p for p in evaluated.parent.iterdir() if p.name.startswith(".eet-")]  # no temp folder left


def test_eet_evaluate_scores_another_methods_folder(evaluated: Path, tiny_run: Path, tmp_path: Path) -> None:
    # "another method" that returns the exact true swap: zero error against the truth, beating EET
    data = SyntheticDataModule(
        image_size=64, num_train_identities=4, num_test_identities=3, train_samples=16, val_pairs=4, seed=0
    )
    _, pairs, truth = synthetic_faces(data, 6, seed=0)
    folder = tmp_path / "oracle" / "expression"
    folder.mkdir(parents=True)
    for row in pairs["row"]:
        Image.fromarray(truth["truth"][row]).save(folder / f"{row:06d}.png")
    out = tmp_path / "eval"
    args = [
        "--ckpt", str(tiny_run / "stage2" / "last.ckpt"),
        "--config", str(tiny_run / "config.yaml"),
        "--pairs", "6",
        "--protocol", "groundtruth", "expression",
        "--au-estimator", str(evaluated / "scorers" / "au.ckpt"),
        "--generated", str(tmp_path / "oracle"), "--generated-name", "oracle",
        "--no-progress",
    ]  # fmt: skip
    assert main([*args, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    gt = res["groundtruth"]
    assert gt["whole_l1"]["oracle"] == 0 and gt["au_region_ssim"]["oracle"] == pytest.approx(1.0)
    assert gt["whole_l1"]["swapped"] > 0.05
    assert set(res["expression"]["methods"]) == {"eet", "oracle", "unchanged_target"}
    # one missing image of the pair list: one clear error, nothing written
    (folder / "000003.png").unlink()
    bad = tmp_path / "eval_bad"
    assert main([*args, "--out", str(bad)]) == 2
    assert not bad.exists()


def test_eet_evaluate_bad_input(tiny_run: Path, tmp_path: Path, capsys) -> None:
    base = ["--config", str(tiny_run / "config.yaml"), "--pairs", "4", "--no-progress"]
    cases = [
        (["--ckpt", str(tiny_run / "stage1" / "last.ckpt")], "is a stage-1 checkpoint; expected a stage-2"),
        (["--protocol", "identity"], "identity scoring needs --face-weights FILE"),
        (["--protocol", "identity", "--face-weights", str(tiny_run / "config.yaml")], "--face-weights"),
        (["--protocol", "expression"], "needs --au-estimator CKPT or --openface CSV"),
        (
            ["--protocol", "identity", "--identity-pairs", "0"],
            "--identity-pairs must be a whole number from 1 to 1,000,000, got 0",
        ),
        (["--protocol", "expression", "--openface", str(tmp_path / "of.csv")], "--openface: no such file"),
    ]
    (tmp_path / "empty.csv").write_text("frame, success, AU01_r\n1, 1, 0.5\n")
    cases.append(
        (
            ["--protocol", "expression", "--openface", str(tmp_path / "empty.csv")],
            "lacks the AU intensity column",
        )
    )
    for k, (extra, message) in enumerate(cases):
        ckpt = [] if "--ckpt" in extra else ["--ckpt", str(tiny_run / "stage2" / "last.ckpt")]
        out = tmp_path / f"out{k}"
        assert main([*base, *ckpt, *extra, "--out", str(out)]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("eet-evaluate: error:") and message in err and "Traceback" not in err, err
        assert err.count("\n") == 1
        assert not out.exists()


def test_train_scorer_command(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "gaze.ckpt"
    args = ["train-scorer", "--config", str(tiny_run / "config.yaml"), "--kind", "gaze", "--out", str(out)]
    assert main([*args, "--max-epochs", "1", "--no-progress"]) == 0
    from eet_lightning.evaluation.scorers import load_scorer

    clf = load_scorer(out, "gaze")
    assert clf.predict_gaze(torch.zeros(2, 3, 64, 64)).shape == (2,)


@pytest.mark.slow
def test_ablation_command_on_a_tiny_budget(tiny_config: Path, tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("ablation", SCRIPTS / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main(
        ["--config", str(tiny_config), "--run_dir", str(tmp_path), "--variants", "b_net", "eet_single",
         "--pairs", "4", "--scorer-epochs", "1"]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| B-Net |" in printed and "| EET-Single |" in printed and "| EET |" not in printed
    rows = json.loads((tmp_path / "ablation.json").read_text())
    assert set(rows) == {"b_net", "eet_single"}
    assert (tmp_path / "b_net" / "stage2" / "last.ckpt").is_file() and (
        tmp_path / "scorers" / "au.ckpt"
    ).is_file()
    assert "Command: `python scripts/ablation.py" in (tmp_path / "ablation.md").read_text()


def test_eet_evaluate_scores_a_model_whose_g_edits_its_input(tiny_edit_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "edit"
    rc = main(
        [
            "--ckpt", str(tiny_edit_run / "stage2" / "last.ckpt"),
            "--config", str(tiny_edit_run / "config.yaml"),
            "--out", str(out),
            "--pairs", "4",
            "--train-scorers", "--scorer-epochs", "1",
            "--no-progress",
        ]
    )  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    gt = res["groundtruth"]
    assert 0 < gt["au_region_l1"]["swapped"] < 1 and 0 < gt["whole_l1"]["swapped"] < 1
    # the edit keeps the target where nothing changes: far closer to it than to the other person
    assert gt["whole_l1"]["swapped"] < gt["whole_l1"]["source"]
    assert set(res["expression"]["methods"]) == {"eet", "unchanged_target"}
