"""`eet-fit`: stage 1 then stage 2 of EET from one YAML file.

eet-fit --config configs/synthetic.yaml
eet-fit --config disfa.yaml --data.root /data/disfa_256 --trainer.devices 4
eet-fit --config synthetic.yaml --stage 2 --data.batch_size 8
eet-fit --config synthetic.yaml --print_config
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl  # noqa: E402
import yaml  # noqa: E402
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser  # noqa: E402
from lightning_fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from PIL import Image  # noqa: E402

from eet_lightning.base import LossWeights, Variant  # noqa: E402
from eet_lightning.callbacks import ImageGridCallback, first_pairs, pair_grid  # noqa: E402
from eet_lightning.checkpoint_io import read_checkpoint  # noqa: E402
from eet_lightning.datamodules.base import EETDataModule  # noqa: E402
from eet_lightning.durability import (  # noqa: E402
    AtomicCheckpointIO,
    RNGStateCallback,
    RunLock,
    RunLockedError,
    remove_stale_temporaries,
)
from eet_lightning.nets import ArchConfig  # noqa: E402
from eet_lightning.runtime import configure_process, tune_for_cli  # noqa: E402
from eet_lightning.stage1 import Stage1Module  # noqa: E402
from eet_lightning.stage2 import Stage2Module  # noqa: E402

BUNDLED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelOptions:
    """Shared by both stages. n, v, m, the AU weights and the image size come from the data."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    variant: Variant = "eet"  # eet | eet_single | bs_net | b_net (Table II)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    # channels-last memory format while training: the same results up to float rounding, faster
    # convolutions on CPU (oneDNN) and on CUDA with mixed precision
    channels_last: bool = False


@dataclass
class StageSchedule:
    max_epochs: int = 20  # the learning rate is constant for the first half, then decays linearly
    max_steps: int = -1  # stop early after this many steps (-1: no limit)
    checkpoint_every_n_epochs: int = 5  # periodic checkpoints besides last.ckpt
    limit_train_batches: float | int | None = None  # fraction or count of batches per epoch
    batch_size: int | None = None  # pairs per device per step in this stage (None: data.batch_size)


@dataclass
class Stage1Options(StageSchedule):
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    detach_discriminator_inputs: bool = False


@dataclass
class Stage2Options(StageSchedule):
    lr_generator: float = 3e-5
    lr_discriminator: float = 3e-5
    betas: tuple[float, float] = (0.5, 0.9)
    train_au_encoder_on_generated: bool = True
    train_feature_discriminators: bool = False
    stage1_ckpt: str | None = None  # default: <run_dir>/stage1/last.ckpt


class FitError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def build_parser() -> ArgumentParser:
    # exit_on_error=False: a parse error is raised (and printed by main() as one line) instead of
    # jsonargparse's usage dump of every option
    parser = ArgumentParser(
        prog="eet-fit", description="Train EET: stage 1, then stage 2, from one config.", exit_on_error=False
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML config (a bundled name such as disfa.yaml works too)"
    )
    parser.add_argument(
        "--stage", type=Literal["1", "2", "both"], default="both", help="which stage(s) to run"
    )
    parser.add_argument(
        "--run_dir", type=str, default="runs/eet", help="folder for checkpoints, logs, grids, config"
    )
    parser.add_argument("--seed_everything", type=int, default=0)
    parser.add_argument(
        "--resume", type=bool, default=False, help="continue from the run folder's last.ckpt files"
    )
    parser.add_argument(
        "--logger",
        type=Literal["csv", "tensorboard", "wandb", "none"],
        default="csv",
        help="where metrics go",
    )
    parser.add_argument("--wandb_project", type=str, default="eet-lightning")
    parser.add_argument("--grid_pairs", type=int, default=6, help="validation pairs shown in the image grids")
    parser.add_subclass_arguments(EETDataModule, "data", required=True)
    parser.add_class_arguments(ModelOptions, "model")
    parser.add_class_arguments(Stage1Options, "stage1")
    parser.add_class_arguments(Stage2Options, "stage2")
    parser.add_class_arguments(
        pl.Trainer,
        "trainer",
        skip={
            "callbacks",
            "logger",
            "max_epochs",
            "max_steps",
            "default_root_dir",
            "enable_checkpointing",
            "limit_train_batches",
            "plugins",
        },
        instantiate=False,  # the options only: each stage builds its own Trainer from them
    )
    return parser


def resolve_config_names(args: Sequence[str]) -> list[str]:
    """`--config disfa.yaml` finds the bundled config when no such file is in the working directory."""
    out = list(args)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg == "--config" and i + 1 < len(out):
            value, i = out[i + 1], i + 1
        elif arg.startswith("--config="):
            value, prefix = arg.split("=", 1)[1], "--config="
        if value is None or Path(value).exists():
            continue
        bundled = BUNDLED_CONFIGS / Path(value).name
        if bundled.is_file():
            out[i] = prefix + str(bundled)
        else:
            names = sorted(p.name for p in BUNDLED_CONFIGS.glob("*.yaml"))
            raise FitError(f"config file not found: {value} (bundled configs: {', '.join(names)})")
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            check_config_file(Path(out[i + 1]))
        elif arg.startswith("--config="):
            check_config_file(Path(arg.split("=", 1)[1]))
    return out


def check_config_file(path: Path) -> None:
    """A config is a UTF-8 YAML file holding a mapping: anything else is one message naming the file (the
    parser's own report would not name it)."""
    if path.is_dir():
        raise FitError(f"--config {path} is a folder; expected a YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise FitError(
            f"--config {path} is not UTF-8 text (byte {err.start}); expected a YAML file"
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise FitError(f"--config {path} is not valid YAML ({problem}{where})") from None
    if not isinstance(loaded, dict):
        raise FitError(
            f"--config {path} holds a {type(loaded).__name__}; expected a mapping of options "
            "(data:, model:, stage1:, stage2:, trainer:)"
        )


def make_logger(kind: str, run_dir: Path, stage: str, project: str) -> Any:
    if kind == "none":
        return False
    if kind == "csv":
        return pl.loggers.CSVLogger(save_dir=str(run_dir / "logs"), name=stage)
    if kind == "tensorboard":
        return pl.loggers.TensorBoardLogger(save_dir=str(run_dir / "logs"), name=stage)
    # W&B: offline unless the user has configured an account (or chosen a mode themselves)
    configured = bool(os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"))
    netrc = Path.home() / ".netrc"
    configured = configured or (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))
    return pl.loggers.WandbLogger(
        project=project, name=f"{run_dir.name}-{stage}", save_dir=str(run_dir), offline=not configured
    )


class LastCheckpoint(pl.callbacks.ModelCheckpoint):
    """The every-epoch ``last.ckpt`` writer: its own class so that its state key differs from the periodic
    writer's (Lightning refuses two checkpoint callbacks with equal keys, as with a period of 1)."""


def _trainer(cfg: Any, sched: StageSchedule, run_dir: Path, stage: str, extra_callbacks: list) -> pl.Trainer:
    periodic = pl.callbacks.ModelCheckpoint(
        dirpath=str(run_dir / stage),
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=max(1, sched.checkpoint_every_n_epochs),
        save_top_k=-1,
    )
    # last.ckpt after every epoch, whatever the period above (Lightning's save_last writes it only
    # together with a periodic checkpoint, which left epochs saved nowhere)
    last = LastCheckpoint(
        dirpath=str(run_dir / stage),
        filename="last",
        every_n_epochs=1,
        save_top_k=1,
        enable_version_counter=False,
    )
    logger = make_logger(cfg.logger, run_dir, stage, cfg.wandb_project)
    callbacks = [periodic, last, RNGStateCallback(), *extra_callbacks]
    if logger:
        callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="epoch"))
    kwargs = dict(cfg.trainer)
    if sched.limit_train_batches is not None:
        kwargs["limit_train_batches"] = sched.limit_train_batches
    return pl.Trainer(
        **kwargs,
        max_epochs=sched.max_epochs,
        max_steps=sched.max_steps,
        default_root_dir=str(run_dir),
        callbacks=callbacks,
        logger=logger,
        plugins=[AtomicCheckpointIO()],  # a checkpoint path always holds a whole file
    )


def _resume_path(run_dir: Path, stage: str, resume: bool) -> str | None:
    last = run_dir / stage / "last.ckpt"
    if last.is_file():
        if not resume:
            raise FitError(
                f"{run_dir / stage} already holds checkpoints; pass --resume true to continue that run "
                f"or choose another --run_dir"
            )
        # read it here first (tensors and plain values only, the right stage): a refused or foreign file
        # is one message before anything runs; Lightning then restores it with weights_only=True as well
        try:
            read_checkpoint(last, int(stage[-1]), f"--resume true ({stage})")
        except ValueError as err:
            periodic = sorted((run_dir / stage).glob("epoch*.ckpt"))
            way_out = (
                f"; to continue from the last periodic checkpoint, rename {periodic[-1].name} to last.ckpt"
                if periodic
                else "; delete it to start the stage afresh"
            )
            raise FitError(f"{err}{way_out}") from None
        return str(last)
    return None


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise FitError(f"{name} must be a positive finite number, got {value!r}")


def _check_schedule(name: str, sched: StageSchedule) -> None:
    """Every stage option checked before anything is written."""
    if sched.max_epochs < 1:
        raise FitError(f"{name}.max_epochs must be >= 1, got {sched.max_epochs}")
    if sched.max_steps < -1:
        raise FitError(f"{name}.max_steps must be >= 0 (or -1 for no limit), got {sched.max_steps}")
    if sched.checkpoint_every_n_epochs < 1:
        raise FitError(
            f"{name}.checkpoint_every_n_epochs must be >= 1, got {sched.checkpoint_every_n_epochs}"
        )
    limit = sched.limit_train_batches
    if limit is not None and not (
        math.isfinite(limit) and limit >= 0 and (limit <= 1 or float(limit).is_integer())
    ):
        raise FitError(
            f"{name}.limit_train_batches must be a fraction in [0, 1] or a count >= 0, got {limit!r}"
        )
    if sched.batch_size is not None and sched.batch_size < 1:
        raise FitError(
            f"{name}.batch_size must be >= 1 (or null for data.batch_size), got {sched.batch_size}"
        )
    lrs = ("lr",) if isinstance(sched, Stage1Options) else ("lr_generator", "lr_discriminator")
    for lr in lrs:
        _positive(f"{name}.{lr}", getattr(sched, lr))
    betas = tuple(sched.betas)
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise FitError(f"{name}.betas must be two numbers in [0, 1), got {list(betas)}")


def _check_run_dir(run_dir: Path) -> None:
    """The run folder is a folder, or can be created: checked before anything is written."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FitError(f"--run_dir {run_dir} is a file; expected a folder (existing or to be created)")
    first = run_dir
    while not first.exists():
        if first.parent == first:
            break
        first = first.parent
    if not first.is_dir():
        raise FitError(f"--run_dir {run_dir} cannot be created: {first} is a file")
    if not os.access(first, os.W_OK | os.X_OK):
        raise FitError(f"--run_dir {run_dir} cannot be written: no write permission in {first}")


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` (itself included) that does not exist yet; None when it exists."""
    top = None
    while not path.exists():
        top, path = path, path.parent
    return top


def _takes_run_lock() -> bool:
    """Only the launching process locks the run folder (DDP's other ranks run inside its lock)."""
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return rank == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _use_batch_size(data: EETDataModule, sched: StageSchedule, default: int | None) -> None:
    """The DataModules build their loaders from ``hparams.batch_size``; a stage may set its own."""
    if default is None:
        if sched.batch_size is not None:
            raise FitError(f"{type(data).__name__} has no batch_size to set per stage")
        return
    data.hparams.batch_size = sched.batch_size if sched.batch_size is not None else default


_LOCKS: list[RunLock] = []


def run(cfg: Any, parser: ArgumentParser) -> dict[str, Path]:
    """Run the configured stages; returns the paths written (checkpoints, grid, config)."""
    run_dir = Path(cfg.run_dir)
    try:
        init = parser.instantiate_classes(cfg)
    except ValueError as err:
        raise FitError(_one_line(err)) from err
    data: EETDataModule = init.data
    info = data.info
    model_opts: ModelOptions = init.model
    arch = replace(
        ArchConfig.coerce(model_opts.arch),
        image_size=data.image_size,
        num_aus=len(info.aus),
        num_identities=info.num_identities,
        num_poses=info.num_poses,
    )
    common = dict(
        arch=arch,
        aus=list(info.aus),
        au_weights=list(info.au_weights) or None,
        variant=model_opts.variant,
        loss_weights=LossWeights.coerce(model_opts.loss_weights),
        channels_last=model_opts.channels_last,
    )
    s1: Stage1Options = init.stage1
    s2: Stage2Options = init.stage2
    _check_schedule("stage1", s1)
    _check_schedule("stage2", s2)
    stages = ["1", "2"] if cfg.stage == "both" else [cfg.stage]
    # Fail on a missing stage-1 checkpoint before spending any time
    stage1_ckpt = Path(s2.stage1_ckpt) if s2.stage1_ckpt else run_dir / "stage1" / "last.ckpt"
    if (
        stages == ["2"]
        and not stage1_ckpt.is_file()
        and not (cfg.resume and (run_dir / "stage2" / "last.ckpt").is_file())
    ):
        raise FitError(
            f"stage 2 needs a stage-1 checkpoint, but {stage1_ckpt} does not exist (run --stage 1 first "
            f"or set --stage2.stage1_ckpt)"
        )
    if cfg.grid_pairs < 1:
        raise FitError(f"--grid_pairs must be >= 1, got {cfg.grid_pairs}")
    _check_run_dir(run_dir)
    resuming2 = cfg.resume and (run_dir / "stage2" / "last.ckpt").is_file()
    if "2" in stages and not resuming2 and "1" not in stages:
        # the stage-1 file stage 2 starts from: read (safely) and checked now, before anything is written
        read_checkpoint(
            stage1_ckpt, 1, "--stage2.stage1_ckpt" if s2.stage1_ckpt else "stage 2's stage-1 file"
        )

    # Under the lock (another run may be writing the folder): what the folder holds, then the Trainers
    # (a bad trainer option, such as an accelerator this machine lacks, is refused here). A refusal leaves
    # the folder as it was: a folder or lock file made for this run is removed again.
    created = _first_missing(run_dir)
    lock = RunLock(run_dir) if _takes_run_lock() else None
    lock_existed = lock is not None and lock.path.exists()
    if lock is not None:
        lock.acquire()  # held until the process ends: a second eet-fit on this folder refuses
        _LOCKS.append(lock)
    try:
        resume1 = _resume_path(run_dir, "stage1", cfg.resume) if "1" in stages else None
        resume2 = _resume_path(run_dir, "stage2", cfg.resume) if "2" in stages else None
        grids = ImageGridCallback(run_dir / "samples", num_pairs=cfg.grid_pairs, prefix="stage2")
        try:
            trainer1 = _trainer(cfg, s1, run_dir, "stage1", []) if "1" in stages else None
            trainer2 = _trainer(cfg, s2, run_dir, "stage2", [grids]) if "2" in stages else None
        except MisconfigurationException as err:
            raise FitError(f"trainer: {err}") from None
    except BaseException:
        if lock is not None:
            _LOCKS.remove(lock)
            lock.release(remove=not lock_existed)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    for stage in ("stage1", "stage2"):
        remove_stale_temporaries(run_dir / stage)  # what a killed save left behind
    parser.save(cfg, run_dir / "config.yaml", overwrite=True, skip_check=True)
    written: dict[str, Path] = {"config": run_dir / "config.yaml"}
    if hasattr(data, "write_previews"):
        written.update(data.write_previews(run_dir))

    data_batch_size = getattr(data.hparams, "batch_size", None)
    if "1" in stages:
        pl.seed_everything(cfg.seed_everything, workers=True)
        _use_batch_size(data, s1, data_batch_size)
        module1 = Stage1Module(
            **common,
            lr=s1.lr,
            betas=tuple(s1.betas),
            detach_discriminator_inputs=s1.detach_discriminator_inputs,
        )
        assert trainer1 is not None
        trainer1.fit(module1, datamodule=data, ckpt_path=resume1, weights_only=True)
        written["stage1"] = run_dir / "stage1" / "last.ckpt"

    if "2" in stages:
        pl.seed_everything(cfg.seed_everything + 1, workers=True)
        _use_batch_size(data, s2, data_batch_size)
        module2 = Stage2Module(
            **common,
            stage1_ckpt=str(stage1_ckpt),
            lr_generator=s2.lr_generator,
            lr_discriminator=s2.lr_discriminator,
            betas=tuple(s2.betas),
            train_au_encoder_on_generated=s2.train_au_encoder_on_generated,
            train_feature_discriminators=s2.train_feature_discriminators,
        )
        assert trainer2 is not None
        trainer2.fit(module2, datamodule=data, ckpt_path=resume2, weights_only=True)
        written["stage2"] = run_dir / "stage2" / "last.ckpt"
        if trainer2.is_global_zero:
            written["grid"] = write_test_grid(module2, data, run_dir / "test_grid.png", cfg.grid_pairs)
    return written


def write_test_grid(module: Stage2Module, data: EETDataModule, path: Path, pairs: int) -> Path:
    """Grid of (Ia, Ib, swapped, self-reconstructed, cross-cycle[, truth]) on held-out test pairs."""
    data.setup("test")
    batch = first_pairs(data.test_dataloader(), pairs)
    module.eval()
    batch = module.transfer_batch_to_device(batch, module.device, 0)
    Image.fromarray(pair_grid(module.log_images(batch))).save(path)
    return path


def _one_line(err: BaseException) -> str:
    """The error as one line. jsonargparse's reports on a union of types span many lines: the first names
    the option, the first listed reason (with its indented continuation) says what was wrong."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return str(err).strip()
    head = lines[0].strip().rstrip(":")
    for i, line in enumerate(lines[1:], 1):
        if line.lstrip().startswith("- "):
            indent = len(line) - len(line.lstrip())
            reason = [line.strip()[2:]]
            for more in lines[i + 1 :]:
                if len(more) - len(more.lstrip()) <= indent:
                    break
                reason.append(more.strip())
            text = " ".join([*(part.rstrip(":") + ":" for part in reason[:-1]), reason[-1]])
            return text if head.startswith("Does not validate") else f"{head}: {text}"
    return " ".join(line.strip() for line in lines)


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of `eet-fit`; tests call ``main([...])`` directly."""
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    argv = list(sys.argv[1:] if args is None else args)
    tune_for_cli()  # reuse freed memory (see eet_lightning.runtime)
    parser = build_parser()
    try:
        cfg = parser.parse_args(resolve_config_names(argv))
        written = run(cfg, parser)
    except (FitError, ArgumentError, ValueError, RunLockedError, OSError) as err:
        if os.environ.get("EET_DEBUG"):
            raise
        print(f"eet-fit: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        while _LOCKS:
            _LOCKS.pop().release()
    for name, path in written.items():
        if path.exists():  # e.g. no checkpoint when a stage ran no step (max_steps 0)
            print(f"eet-fit: {name}: {path}")
        else:
            print(f"eet-fit: {name}: nothing written ({path} does not exist)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
