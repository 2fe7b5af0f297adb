"""`TransferMethod`: the training half of the method contract, one LightningModule per training stage.

`eet-fit` trains whatever the config's ``stageN.class_path`` names. A stage module declares its
hyper-parameters once, in its ``__init__`` signature (the config's ``stageN:`` keys, and ``model:`` for the
ones all stages of the method share); the class attributes below tell the harness the rest:

- `method`, `stage`: written into every checkpoint (``eet_method``, ``eet_stage``), so that
  `eet_lightning.methods.load_transfer_model` knows which inference model reads it;
- `next_stage`: the class of the stage that follows when the config does not name one (EET's stage 2
  follows its stage 1); None for a method's last stage;
- `shared_hparams`: the ``__init__`` arguments that the config's ``model:`` section sets for every stage;
- `data_hparams`: the arguments the harness fills from the DataModule (`from_data`), never typed by hand;
- `previous_stage_arg`: the argument that receives the previous stage's checkpoint path;
- `required_labels`: the sample keys its training step needs besides ``image``.

and the methods: `from_data`, `check_init_args`, `training_step`, `log_images` (the rows of the image grids
`ImageGridCallback` writes; the ``input`` row first).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from eet_lightning.checkpoint_io import TRAINING_DATA_KEY, training_data_record


class TransferMethod(pl.LightningModule):
    """Base of every training stage of every method."""

    method: ClassVar[str] = ""
    stage: ClassVar[int] = 1
    next_stage: ClassVar[str | None] = None
    shared_hparams: ClassVar[tuple[str, ...]] = ()
    data_hparams: ClassVar[tuple[str, ...]] = ()
    previous_stage_arg: ClassVar[str | None] = None
    required_labels: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_data(cls, data: Any) -> dict[str, Any]:
        """The `data_hparams` values for training on ``data`` (an `EETDataModule`), and any shared argument
        the data sizes (e.g. EET's ``arch`` gets the image size and the class counts): a function of the
        DataModule and of ``init_args`` given to `complete_init_args`."""
        return {}

    @classmethod
    def complete_init_args(cls, init_args: dict[str, Any], data: Any) -> dict[str, Any]:
        """``init_args`` (from the config) completed from the data. Subclasses that size a shared argument
        from the data override this; the default adds `from_data`'s values."""
        missing = [k for k in cls.required_labels if k not in data_label_kinds(data)]
        if missing:
            raise ValueError(
                f"{cls.__name__} needs the labels {missing} in every training sample, which "
                f"{type(data).__name__} does not provide"
            )
        return {**init_args, **cls.from_data(data)}

    @classmethod
    def check_init_args(cls, init_args: dict[str, Any], name: str) -> None:
        """Refuse bad values before anything is written (``name``: the config section, for messages).
        Every argument named ``lr`` or ``lr_*`` must be a positive finite number and ``betas`` two numbers
        in [0, 1); subclasses add their own checks."""
        for key, value in init_args.items():
            if (key == "lr" or key.startswith("lr_")) and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            ):
                raise ValueError(f"{name}.{key} must be a positive finite number, got {value!r}")
        if "betas" in init_args:
            betas = tuple(init_args["betas"])
            if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
                raise ValueError(f"{name}.betas must be two numbers in [0, 1), got {list(betas)}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["eet_stage"] = self.stage
        checkpoint["eet_method"] = self.method
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:  # what it was trained on: the report warns when that was synthetic
            name = getattr(datamodule, "dataset_name", None) or type(datamodule).__name__
            checkpoint[TRAINING_DATA_KEY] = training_data_record(name)

    @torch.no_grad()
    def log_images(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Rows of an image grid for a batch of pairs: name -> [2N, 3, H, W] in [-1, 1], A-sides then
        B-sides (``input`` first)."""
        raise NotImplementedError(f"{type(self).__name__} draws no image grid")

    # ------------------------------------------------------------------ helpers every method uses

    @staticmethod
    def pair_inputs(
        batch: dict[str, dict[str, torch.Tensor]], keys: Iterable[str] = ("image", "aus", "identity", "pose")
    ) -> dict[str, torch.Tensor]:
        """Stack the two sides of an unpaired batch, A first, along the batch dimension."""
        a, b = batch["a"], batch["b"]
        return {k: torch.cat([a[k], b[k]]) for k in keys if k in a}

    def log_losses(self, prefix: str, values: dict[str, torch.Tensor], batch_size: int) -> None:
        # sync_dist averages across ranks, so logged values are the global means under DDP
        self.log_dict(
            {f"{prefix}/{k}": v.detach() for k, v in values.items()},
            on_step=prefix == "train",
            on_epoch=True,
            sync_dist=True,
            batch_size=batch_size,
            prog_bar=False,
        )

    def epochs_for_schedule(self) -> int:
        """The number of epochs the learning-rate schedule spans (the trainer's max_epochs, at least 1)."""
        epochs = self.trainer.max_epochs
        return epochs if epochs and epochs > 0 else 1


def data_label_kinds(data: Any) -> set[str]:
    """Which labels every training sample of ``data`` carries (besides the image)."""
    kinds = {"aus", "identity", "pose"}
    if getattr(data.info, "num_emotions", 0) > 0:
        kinds.add("emotion")
    return kinds


def half_constant_then_linear(total_epochs: int):
    """The learning-rate schedule of EET (and of GANimation and StarGAN): constant for the first half of the
    epochs, then linearly decayed each epoch."""
    half = total_epochs // 2

    def factor(epoch: int) -> float:
        if epoch < half:
            return 1.0
        return max(0.0, (total_epochs - epoch) / max(1, total_epochs - half))

    return factor


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: Sequence[float]) -> torch.optim.Adam:
    """Adam as every method uses it: torch's fused kernel, one pass over each tensor instead of the ten or
    so of the multi-tensor form (the same update up to float rounding: 1.5e-8 after six steps). At Table
    I's size EET's discriminators' step went from ~100 ms to ~20 ms on a 2-core CPU (the default form is
    measured beside it in benchmarks/bench.py)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=True)
    except RuntimeError:  # a device or dtype the fused kernel does not cover
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), foreach=True)
