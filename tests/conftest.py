"""Shared fixtures: the tiny test config and one tiny trained run reused by several tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# The networks in the tests are tiny: one thread per process avoids oversubscribing small CI machines
# (DDP tests start several processes) and is no slower. EET_TEST_THREADS overrides it.
os.environ["OMP_NUM_THREADS"] = os.environ.get("EET_TEST_THREADS", "1")

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

CONF = Path(__file__).parent / "conf"


@pytest.fixture(scope="session")
def tiny_config() -> Path:
    return CONF / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    """Both stages of the tiny config through `eet-fit`, once per test session."""
    from eet_lightning.cli.fit import main

    run_dir = tmp_path_factory.mktemp("tiny_run")
    assert main(["--config", str(tiny_config), "--run_dir", str(run_dir)]) == 0
    return run_dir
