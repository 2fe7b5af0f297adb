"""`eet-fit` under faults: kill -9 at a random moment then `--resume true` ends with the weights of an
uninterrupted run, bit for bit; a failed save leaves the previous checkpoint whole; a second run on the
same folder refuses; an unreadable last.ckpt gets a way out."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bad_input import assert_one_clear_error
from eet_lightning.cli.fit import main
from eet_lightning.durability import LOCK_NAME, TEMP_PREFIX, RunLock

# 6 epochs of 2 steps in stage 1, 3 in stage 2, a periodic checkpoint every 2 epochs
SCHEDULE = ["--stage1.max_epochs", "6", "--stage2.max_epochs", "3", "--stage1.checkpoint_every_n_epochs", "2"]
SCHEDULE += ["--stage2.checkpoint_every_n_epochs", "2", "--logger", "none"]


def _fit_command(config: Path, run_dir: Path, *extra: str) -> list[str]:
    code = "import sys; from eet_lightning.cli.fit import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "--config", str(config), "--run_dir", str(run_dir), *SCHEDULE, *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _step(path: Path) -> int:
    try:
        return int(_load(path)["global_step"])
    except Exception:  # not there yet
        return -1


def _assert_same_training_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for idx, st in opt_a["state"].items():
            for key, value in st.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, opt_b["state"][idx][key]), (
                        f"optimizer state {idx}.{key} differs"
                    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_config: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(_fit_command(tiny_config, run_dir), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "after_step", "max_delay", "seed"),
    [("stage1", 2, 0.2, 1), ("stage1", 6, 0.1, 2), ("stage2", 4, 1.5, 3), ("stage2", 8, 1.5, 4)],
)
def test_kill_9_then_resume_ends_with_identical_weights(
    tiny_config: Path,
    uninterrupted: Path,
    tmp_path: Path,
    stage: str,
    after_step: int,
    max_delay: float,
    seed: int,
) -> None:
    """kill -9 once ``stage``'s last.ckpt holds ``after_step`` steps, plus a seeded random delay (so the kill
    lands anywhere in the following epoch, a save included), then resume: every weight and every Adam
    moment equals the uninterrupted run's (tolerance 0: torch.equal)."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _fit_command(tiny_config, run_dir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = run_dir / stage / "last.ckpt"
    try:
        while _step(last) < after_step:
            assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()[-2000:]}"
            time.sleep(0.05)
        time.sleep(random.Random(seed).uniform(0.0, max_delay))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
    resumed = subprocess.run(
        _fit_command(tiny_config, run_dir, "--resume", "true"), env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("stage1", "stage2"):
        _assert_same_training_state(
            _load(run_dir / name / "last.ckpt"), _load(uninterrupted / name / "last.ckpt")
        )
        assert not list((run_dir / name).glob(f"{TEMP_PREFIX}*")), "a temporary checkpoint file was left"


def test_failed_save_keeps_the_previous_checkpoint_whole(
    tiny_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The disk fills up while the second epoch's checkpoint is written: one error line, last.ckpt still
    holds the first epoch whole, no temporary file is left, and --resume finishes the run."""
    run_dir = tmp_path / "run"
    args = ["--config", str(tiny_config), "--run_dir", str(run_dir), "--stage", "1", "--logger", "none"]
    real_save = torch.save
    saves = []

    def disk_fills_on_the_second_save(obj, f, *a, **k):
        saves.append(1)
        if len(saves) == 3:  # epoch 1: periodic + last; epoch 2: the periodic save fails half-way
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(getattr(f, "name", "?")))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", disk_fills_on_the_second_save)
    rc = main([*args, "--stage1.max_epochs", "2", "--stage1.checkpoint_every_n_epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("eet-fit: error: ") and err.count("\n") == 1, err
    assert "No space left on device" in err and "could not save the checkpoint" in err and ".ckpt" in err
    assert _load(run_dir / "stage1" / "last.ckpt")["global_step"] == 2  # epoch 1, whole
    assert not list((run_dir / "stage1").glob(f"{TEMP_PREFIX}*"))
    monkeypatch.setattr(torch, "save", real_save)
    assert main([*args, "--stage1.max_epochs", "2", "--resume", "true"]) == 0
    assert _load(run_dir / "stage1" / "last.ckpt")["global_step"] == 4


def test_leftover_temporaries_are_removed_and_foreign_files_kept(tiny_config: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "stage1").mkdir(parents=True)
    stale = run_dir / "stage1" / f"{TEMP_PREFIX}last.ckpt-abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    mine = run_dir / "stage1" / "notes.tmp"
    mine.write_text("the user's")
    args = ["--config", str(tiny_config), "--run_dir", str(run_dir), "--stage", "1", "--logger", "none"]
    assert main(args) == 0
    assert not stale.exists() and mine.read_text() == "the user's"


def test_a_second_run_on_the_same_folder_refuses(tiny_config: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    held = RunLock(run_dir)
    held.acquire()  # as a running eet-fit holds it
    try:
        rc = main(["--config", str(tiny_config), "--run_dir", str(run_dir), "--stage", "1"])
    finally:
        held.release()
    err = capsys.readouterr().err
    assert rc == 2 and "in use by another eet-fit" in err and str(os.getpid()) in err, err
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing else written
    assert main(["--config", str(tiny_config), "--run_dir", str(run_dir), "--stage", "1"]) == 0


def test_a_second_process_refuses_while_the_first_trains(tiny_config: Path, tmp_path: Path) -> None:
    """A real eet-fit holds the lock (a long stage 1); a second started on the same folder refuses with one
    line naming the first's process; once the first is killed (-9) the lock is free again."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        _fit_command(tiny_config, run_dir, "--stage", "1", "--stage1.max_epochs", "100000"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock = run_dir / LOCK_NAME
    try:
        while not (lock.is_file() and lock.read_text() == str(first.pid)):
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        second = subprocess.run(
            _fit_command(tiny_config, run_dir, "--stage", "1"), env=_env(), capture_output=True, text=True
        )
        assert first.poll() is None, "the first run ended before the second reached the lock"
    finally:
        first.kill()
        first.wait()
    assert_one_clear_error(
        "eet-fit", second.returncode, second.stderr, "in use by another eet-fit", str(first.pid)
    )
    free = RunLock(run_dir)
    free.acquire()  # kill -9 released it
    free.release()


def test_unreadable_last_checkpoint_names_the_way_out(tiny_config: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    args = ["--config", str(tiny_config), "--run_dir", str(run_dir), "--stage", "1", "--logger", "none"]
    assert main([*args, "--stage1.checkpoint_every_n_epochs", "1"]) == 0
    last = run_dir / "stage1" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # truncated by an earlier version's non-atomic save
    capsys.readouterr()
    assert main([*args, "--resume", "true", "--stage1.max_epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "not a readable PyTorch checkpoint" in err and "rename epoch000.ckpt to last.ckpt" in err, err
    assert err.count("\n") == 1
