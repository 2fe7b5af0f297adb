"""The quick-start notebook runs top to bottom against a tiny checkpoint, and the README figure script
renders graded and selective transfers that match `EETModel`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from eet_lightning import EETModel
from eet_lightning.datamodules import SyntheticDataModule

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
FIGURE_SCRIPT = ROOT / "scripts" / "transfer_figure.py"


@pytest.mark.parametrize("run", ["tiny_run", "tiny_edit_run"])
def test_quickstart_notebook_runs(
    run: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook on a G that draws the whole image (Table I) and on one that edits its input (the
    quick start's)."""
    tiny_run = request.getfixturevalue(run)
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), "outputs are not stripped"
    source = "\n".join(c.source for c in code)
    for call in ("EETModel.load_from_checkpoint", "aus=mouth", "strength=s", "predict_aus"):
        assert call in source
    monkeypatch.setenv("EET_CKPT", str(tiny_run / "stage2" / "last.ckpt"))  # the kernel inherits it
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # faces, transfer, selective, sweep, AU bars
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert str(tiny_run / "stage2" / "last.ckpt") in text and "equals reconstruct(A): True" in text


def _figure_script():
    spec = importlib.util.spec_from_file_location("transfer_figure", FIGURE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transfer_figure_columns_match_the_model(tiny_run: Path, tmp_path: Path) -> None:
    fig = _figure_script()
    model = EETModel.load_from_checkpoint(tiny_run / "stage2" / "last.ckpt")
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    data = SyntheticDataModule(**dict(cfg["data"]["init_args"], cache_dir=None))
    pairs = data.held_out_pairs(2, seed=3)
    cols = fig.figure_columns(model, pairs, [0.0, 0.5, 1.0], [12, 25])
    a, b = pairs["a"], pairs["b"]

    def near(x: np.ndarray, y: np.ndarray) -> bool:
        return np.abs(x.astype(int) - y.astype(int)).max() <= 1

    assert near(cols["strength 0"], model.reconstruct(a))
    assert near(cols["strength 1"], model.transfer(a, b)[0])
    assert near(cols["mouth AUs only"], model.transfer(a, b, aus=[12, 25])[0])
    assert np.array_equal(cols["true swap"], pairs["truth_a"])
    # the true mouth-only swap is A with B's AU12 and AU25 and its own others: rendered independently here
    from eet_lightning.datamodules.synthetic import render_records

    aus = pairs["records_a"].aus.copy()
    aus[:, [6, 10]] = pairs["records_b"].aus[:, [6, 10]]  # AU12 and AU25 in DISFA order
    assert np.array_equal(cols["true mouth only"], render_records(pairs["records_a"], 64, aus=aus))
    gain = fig.DIFF_GAIN
    assert np.array_equal(cols[f"change x{gain}"], fig.difference(cols["strength 1"], cols["strength 0"]))
    assert np.array_equal(cols[f"true change x{gain}"], fig.difference(pairs["truth_a"], a))
    assert "mask" not in cols  # the tiny model's G draws whole images: no mask to show
    # the whole figure: a header and one row per pair; 12 columns here, each face 64 px enlarged twice
    out = tmp_path / "figure.png"
    args = ["--ckpt", str(tiny_run / "stage2" / "last.ckpt"), "--config", str(tiny_run / "config.yaml")]
    assert fig.main([*args, "--out", str(out), "--pairs", "2", "--steps", "4"]) == 0
    width = 12 * (128 + 4) - 4
    assert Image.open(out).size == (width, 18 + 2 * (128 + 4) - 4)
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert np.array_equal(grid[18 : 18 + 128 : 2, 0:128:2], a[0])  # the first tile is target A, enlarged
    assert fig.main([*args, "--out", str(out), "--steps", "1"]) == 2


def test_transfer_figure_bad_input(tiny_run: Path, tmp_path: Path, capsys) -> None:
    fig = _figure_script()
    stage1 = tiny_run / "stage1" / "last.ckpt"
    rc = fig.main(
        ["--ckpt", str(stage1), "--config", str(tiny_run / "config.yaml"), "--out", str(tmp_path / "f.png")]
    )
    assert rc == 2 and "stage-1" in capsys.readouterr().err and not (tmp_path / "f.png").exists()
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"data": {"class_path": "eet_lightning.datamodules.DISFADataModule"}}))
    rc = fig.main(["--ckpt", str(tiny_run / "stage2" / "last.ckpt"), "--config", str(other)])
    assert rc == 2 and "synthetic" in capsys.readouterr().err
