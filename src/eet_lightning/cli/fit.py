"""`eet-fit`: every training stage of a method from one YAML file (EET: stage 1 then stage 2).

eet-fit --config configs/synthetic.yaml
eet-fit --config disfa.yaml --data.root /data/disfa_256 --trainer.devices 4
eet-fit --config synthetic.yaml --stage 2 --data.batch_size 8
eet-fit --config ganimation_synthetic.yaml

A config's ``stageN:`` section names the stage's LightningModule by ``class_path`` (a `TransferMethod`;
EET's `Stage1Module` and `Stage2Module` when none is named) and holds its ``__init__`` arguments beside the
stage's schedule (``max_epochs``, ...); ``model:`` holds the arguments that all stages of the method share
(the stage classes' ``shared_hparams``). The options are read from the classes' signatures: each
hyper-parameter is declared once, in its module.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import shutil
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser
from lightning_fabric.utilities.exceptions import MisconfigurationException
from PIL import Image

from eet_lightning.callbacks import ImageGridCallback, first_pairs, pair_grid
from eet_lightning.checkpoint_io import read_checkpoint
from eet_lightning.datamodules.base import EETDataModule
from eet_lightning.durability import (
    AtomicCheckpointIO,
    RNGStateCallback,
    RunLock,
    RunLockedError,
    remove_stale_temporaries,
)
from eet_lightning.methods.training import TransferMethod
from eet_lightning.runtime import configure_process, tune_for_cli

BUNDLED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# the first stage when a config names none (the configs written before methods were plug-ins)
DEFAULT_FIRST_STAGE = "eet_lightning.stage1.Stage1Module"
MAX_STAGES = 9


@dataclass
class StageSchedule:
    max_epochs: int = 20  # the learning rate is constant for the first half, then decays linearly
    max_steps: int = -1  # stop early after this many steps (-1: no limit)
    checkpoint_every_n_epochs: int = 5  # periodic checkpoints besides last.ckpt
    limit_train_batches: float | int | None = None  # fraction or count of batches per epoch
    batch_size: int | None = None  # pairs per device per step in this stage (None: data.batch_size)


class FitError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


def stage_classes(argv: Sequence[str]) -> list[type[TransferMethod]]:
    """The LightningModule of each stage, read before the options are (they come from its signature):
    ``stageN.class_path`` of the configs in ``argv`` (later ones win) and of ``--stageN.class_path``
    options; a stage that names none follows the one before it (`TransferMethod.next_stage`), and the
    first defaults to EET's stage 1. ``argv`` has its config names resolved (`resolve_config_names`)."""
    named: dict[int, str] = {}
    sections: set[int] = set()
    args = list(argv)
    for i, arg in enumerate(args):
        value = None
        if arg == "--config" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is not None:
            loaded = yaml.safe_load(Path(value).read_text(encoding="utf-8")) or {}
            for key, section in loaded.items():
                k = _stage_number(key)
                if k is None:
                    continue
                sections.add(k)
                if isinstance(section, dict) and section.get("class_path"):
                    named[k] = str(section["class_path"])
        for k in range(1, MAX_STAGES + 1):
            flag = f"--stage{k}.class_path"
            if arg == flag and i + 1 < len(args):
                named[k] = args[i + 1]
            elif arg.startswith(flag + "="):
                named[k] = arg.split("=", 1)[1]
    classes = [_import_stage(named.get(1, DEFAULT_FIRST_STAGE), "stage1.class_path")]
    while True:
        k = len(classes) + 1
        path = named.get(k) or classes[-1].next_stage
        if path is None:
            break
        if k > MAX_STAGES:
            raise FitError(f"a method may have at most {MAX_STAGES} stages")
        classes.append(_import_stage(path, f"stage{k}.class_path"))
    extra = sorted(k for k in sections | set(named) if k > len(classes))
    if extra:
        raise FitError(
            f"the config has a stage{extra[0]} section, but {classes[0].__name__}'s method "
            f"({classes[0].method or 'unnamed'}) has {len(classes)} stage(s); remove it or name its class_path"
        )
    return classes


def _stage_number(key: Any) -> int | None:
    if isinstance(key, str) and key.startswith("stage") and key[5:].isdigit():
        return int(key[5:])
    return None


def _import_stage(path: str, what: str) -> type[TransferMethod]:
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name) if module_name else None
    except (ImportError, AttributeError) as err:
        raise FitError(f"{what}: cannot import {path!r} ({err})") from None
    if not (inspect.isclass(cls) and issubclass(cls, TransferMethod)):
        raise FitError(
            f"{what}: {path!r} is not a training stage (a subclass of eet_lightning.methods.training.TransferMethod)"
        )
    return cls


def _init_parameters(cls: type) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.items()
    return [n for n, p in params if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def build_parser(argv: Sequence[str] = ()) -> ArgumentParser:
    """The options of ``eet-fit`` for the stages ``argv`` names (`stage_classes`)."""
    classes = stage_classes(argv)
    # exit_on_error=False: a parse error is raised (and printed by main() as one line) instead of
    # jsonargparse's usage dump of every option
    parser = ArgumentParser(
        prog="eet-fit", description="Train a method's stages from one config.", exit_on_error=False
    )
    parser.stage_classes = classes  # type: ignore[attr-defined]
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML config (a bundled name such as disfa.yaml works too)"
    )
    parser.add_argument(
        "--stage",
        type=str,
        default="all",
        help=f"which stage(s) to run: 1..{len(classes)} or all (both: all)",
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
        type=typing.Literal["csv", "tensorboard", "wandb", "none"],
        default="csv",
        help="where metrics go",
    )
    parser.add_argument("--wandb_project", type=str, default="eet-lightning")
    parser.add_argument("--grid_pairs", type=int, default=6, help="validation pairs shown in the image grids")
    parser.add_subclass_arguments(EETDataModule, "data", required=True)
    first = classes[0]
    shared = set(first.shared_hparams)
    if shared:
        skip = set(_init_parameters(first)) - shared
        parser.add_method_arguments(first, "__init__", "model", skip=skip)
    hints = typing.get_type_hints(StageSchedule)
    for k, cls in enumerate(classes, 1):
        skip = shared | set(cls.data_hparams)
        if set(_init_parameters(cls)) - skip:
            parser.add_method_arguments(cls, "__init__", f"stage{k}", skip=skip)
        parser.add_argument(
            f"--stage{k}.class_path",
            type=str,
            default=f"{cls.__module__}.{cls.__qualname__}",
            help=f"the LightningModule of stage {k}",
        )
        for f in dataclasses.fields(StageSchedule):
            parser.add_argument(f"--stage{k}.{f.name}", type=hints[f.name], default=f.default)
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


@dataclass
class Stage:
    """One training stage as configured: its module class and arguments, schedule and folder."""

    number: int
    cls: type[TransferMethod]
    init_args: dict[str, Any]
    schedule: StageSchedule

    @property
    def name(self) -> str:
        return f"stage{self.number}"


def _stages(cfg: Any, init: Any, classes: list[type[TransferMethod]], data: EETDataModule) -> list[Stage]:
    """Every configured stage, its arguments checked and completed from the data (nothing built yet)."""
    shared = dict(vars(init.model)) if "model" in init and init.model is not None else {}
    if not isinstance(shared, dict):
        shared = dict(shared)
    schedule_keys = {f.name for f in dataclasses.fields(StageSchedule)}
    out = []
    for k, cls in enumerate(classes, 1):
        section = init[f"stage{k}"]
        values = dict(vars(section)) if not isinstance(section, dict) else dict(section)
        expected = f"{cls.__module__}.{cls.__qualname__}"
        if values.pop("class_path", expected) != expected:  # read before parsing; cannot differ
            raise FitError(f"stage{k}.class_path changed while the options were read")
        schedule = StageSchedule(**{key: values.pop(key) for key in schedule_keys})
        _check_schedule(f"stage{k}", schedule)
        init_args = {**{key: shared[key] for key in cls.shared_hparams if key in shared}, **values}
        try:
            cls.check_init_args(init_args, f"stage{k}")
            init_args = cls.complete_init_args(init_args, data)
        except (ValueError, TypeError) as err:
            raise FitError(_one_line(err)) from err
        out.append(Stage(k, cls, init_args, schedule))
    return out


def _selected(choice: str, count: int) -> list[int]:
    if choice in ("all", "both"):
        return list(range(1, count + 1))
    if choice.isdigit() and 1 <= int(choice) <= count:
        return [int(choice)]
    raise FitError(f"--stage must be 1..{count} or all for this method ({count} stage(s)), got {choice!r}")


_LOCKS: list[RunLock] = []


def run(cfg: Any, parser: ArgumentParser) -> dict[str, Path]:
    """Run the configured stages; returns the paths written (checkpoints, grid, config)."""
    run_dir = Path(cfg.run_dir)
    try:
        init = parser.instantiate_classes(cfg)
    except ValueError as err:
        raise FitError(_one_line(err)) from err
    data: EETDataModule = init.data
    classes = parser.stage_classes  # type: ignore[attr-defined]
    stages = _stages(cfg, init, classes, data)
    selected = _selected(cfg.stage, len(stages))
    if cfg.grid_pairs < 1:
        raise FitError(f"--grid_pairs must be >= 1, got {cfg.grid_pairs}")
    # a stage that starts from the one before it: that checkpoint is checked (read safely, the right stage)
    # before anything runs; when the earlier stage runs too, it is written first
    for stage in stages:
        arg = stage.cls.previous_stage_arg
        if arg is None or stage.number == 1:
            continue
        given = stage.init_args.get(arg)
        previous = Path(given) if given else run_dir / f"stage{stage.number - 1}" / "last.ckpt"
        stage.init_args[arg] = str(previous)
        resuming = cfg.resume and (run_dir / stage.name / "last.ckpt").is_file()
        if stage.number in selected and stage.number - 1 not in selected and not resuming:
            if not previous.is_file():
                raise FitError(
                    f"stage {stage.number} needs a stage-{stage.number - 1} checkpoint, but {previous} does not "
                    f"exist (run --stage {stage.number - 1} first or set --{stage.name}.{arg})"
                )
            read_checkpoint(
                previous,
                stage.number - 1,
                f"--{stage.name}.{arg}" if given else f"stage {stage.number}'s stage-{stage.number - 1} file",
            )
    _check_run_dir(run_dir)

    # Under the lock (another run may be writing the folder): what the folder holds, then the Trainers
    # (a bad trainer option, such as an accelerator this machine lacks, is refused here). A refusal leaves
    # the folder as it was: a folder or lock file made for this run is removed again.
    created = _first_missing(run_dir)
    lock = RunLock(run_dir) if _takes_run_lock() else None
    lock_existed = lock is not None and lock.path.exists()
    if lock is not None:
        lock.acquire()  # held until the process ends: a second eet-fit on this folder refuses
        _LOCKS.append(lock)
    final = stages[-1]
    trainers: dict[int, pl.Trainer] = {}
    resume: dict[int, str | None] = {}
    try:
        for stage in stages:
            if stage.number in selected:
                resume[stage.number] = _resume_path(run_dir, stage.name, cfg.resume)
        try:
            for stage in stages:
                if stage.number not in selected:
                    continue
                extra = []
                if stage is final:
                    extra = [
                        ImageGridCallback(run_dir / "samples", num_pairs=cfg.grid_pairs, prefix=stage.name)
                    ]
                trainers[stage.number] = _trainer(cfg, stage.schedule, run_dir, stage.name, extra)
        except MisconfigurationException as err:
            raise FitError(f"trainer: {err}") from None
    except BaseException:
        if lock is not None:
            _LOCKS.remove(lock)
            lock.release(remove=not lock_existed)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    for stage in stages:
        remove_stale_temporaries(run_dir / stage.name)  # what a killed save left behind
    parser.save(cfg, run_dir / "config.yaml", overwrite=True, skip_check=True)
    written: dict[str, Path] = {"config": run_dir / "config.yaml"}
    if hasattr(data, "write_previews"):
        written.update(data.write_previews(run_dir))

    data_batch_size = getattr(data.hparams, "batch_size", None)
    for stage in stages:
        if stage.number not in selected:
            continue
        pl.seed_everything(cfg.seed_everything + stage.number - 1, workers=True)
        _use_batch_size(data, stage.schedule, data_batch_size)
        try:
            module = stage.cls(**stage.init_args)
        except (ValueError, TypeError) as err:
            raise FitError(f"{stage.name}: {_one_line(err)}") from err
        trainer = trainers[stage.number]
        trainer.fit(module, datamodule=data, ckpt_path=resume[stage.number], weights_only=True)
        written[stage.name] = run_dir / stage.name / "last.ckpt"
        if stage is final and trainer.is_global_zero:
            written["grid"] = write_test_grid(module, data, run_dir / "test_grid.png", cfg.grid_pairs)
    return written


def write_test_grid(module: TransferMethod, data: EETDataModule, path: Path, pairs: int) -> Path:
    """The method's image grid (`TransferMethod.log_images`: inputs, swaps, ... [, truth]) on held-out
    test pairs."""
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
    try:
        argv = resolve_config_names(argv)
        parser = build_parser(argv)
        cfg = parser.parse_args(argv)
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
