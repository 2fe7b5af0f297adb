"""`scripts/compare_methods.py` end to end on a tiny budget: three methods trained through eet-fit, scored
by eet-evaluate with shared scorers, one table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_methods.py"
TINY_DATA = [
    "image_size=64",
    "num_train_identities=4",
    "num_test_identities=3",
    "train_samples=16",
    "val_pairs=4",
    "cache_dir=null",
]


@pytest.mark.slow
def test_compare_methods_on_a_tiny_budget(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    args = [sys.executable, str(SCRIPT), "--out", str(out), "--max-steps", "2", "--scorer-epochs", "1"]
    args += ["--pairs", "4", "--identity-pairs", "20", "--data", *TINY_DATA]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((out / "comparison.json").read_text())
    assert set(figures) == {"unchanged target", "eet", "ganimation", "stargan"}
    for method in ("eet", "ganimation", "stargan"):
        f = figures[method]
        assert 0 < f["au_region_l1"] < 1 and 0 < f["whole_l1"] < 1 and 0 <= f["identity_accuracy"] <= 1
        assert f["batches"] > 0 and f["seconds_per_batch"] > 0
        assert (out / method / "eval" / "results.json").is_file()
    table = (out / "comparison.md").read_text()
    assert "| ganimation |" in table and "| unchanged target / real |" in table
    # a second call reuses the trained runs and scorers (nothing is trained again)
    again = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        json.loads((out / "comparison.json").read_text())["eet"]["fit_seconds"]
        == figures["eet"]["fit_seconds"]
    )
