"""Shared fixtures: the tiny test config and one tiny trained run reused by several tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from eet_lightning.runtime import configure_process

os.environ.setdefault("WANDB_MODE", "offline")
# The networks in the tests are tiny: one thread per process avoids oversubscribing small CI machines
# (DDP tests start several processes) and is no slower. EET_TEST_THREADS overrides it.
os.environ["OMP_NUM_THREADS"] = os.environ.get("EET_TEST_THREADS", "1")

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# What every console script does first (denormals flushed, no PyPI check, the eval-mode warning off), before
# any test starts torch's threads.
configure_process()

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


@pytest.fixture(scope="session")
def tiny_edit_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path, tiny_run: Path) -> Path:
    """Stage 2 of the tiny config with a G that edits its input as the quick start's does (a gated warp
    and a mask over it, E's feature of the input inside G), from the tiny run's stage 1."""
    from eet_lightning.cli.fit import main

    run_dir = tmp_path_factory.mktemp("tiny_edit_run")
    args = ["--config", str(tiny_config), "--run_dir", str(run_dir), "--stage", "2"]
    args += ["--stage2.stage1_ckpt", str(tiny_run / "stage1" / "last.ckpt")]
    args += ["--model.arch.generator_output", "warp_composite", "--model.arch.generator_warp_gate", "true"]
    args += ["--model.arch.generator_skip", "true", "--model.loss_weights.lambda_flow", "10"]
    assert main(args) == 0
    return run_dir
