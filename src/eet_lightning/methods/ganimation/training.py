"""`GANimation`: the one training stage of the GANimation baseline (Pumarola et al., ECCV 2018).

The objective of the paper's eq. 5, with the weights of the authors' code (``options/train_options.py``,
``models/ganimation.py``); the pairs of our unpaired batches give the desired expressions: A is asked for
B's AUs and B for A's, both directions stacked in one batch. With I the real images, y their normalized AUs
(intensity / l), y' the desired ones and G(I | y') = (image, mask):

- critic step (every batch):  lambda_adv * (E[D(G(I|y'))] - E[D(I)]) + lambda_gp * GP
  + lambda_cond * MSE(D_y(I), y);
- generator step (every ``n_critic``-th batch):  -lambda_adv * E[D(G(I|y'))]
  + lambda_cond * MSE(D_y(G(I|y')), y') + lambda_cyc * L1(G(G(I|y') | y), I)
  + lambda_mask * (mean(A1) + mean(A2)) + lambda_mask_smooth * (TV(A1) + TV(A2)),

A1 being the mask of the forward generation and A2 that of the cycle. Manual optimization, Adam, the
learning rate constant for the first half of the epochs and then decayed linearly to 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from eet_lightning.aus import DISFA_AUS, validate_aus
from eet_lightning.methods.gan_parts import gradient_penalty, wgan_critic_loss, wgan_generator_loss
from eet_lightning.methods.ganimation.model import (
    GANimationCritic,
    GANimationGenerator,
    critic_layers_for,
    read_aus,
)
from eet_lightning.methods.training import TransferMethod, adam, half_constant_then_linear
from eet_lightning.runtime import configure_process

# ---------------------------------------------------------------------------------------------- losses


def au_condition_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of AU readings: (1 / (B m)) sum_{b,i} (D_y(x)_{b,i} - y_{b,i})^2 (their
    ``MSELoss``; the division by the batch size their code adds is folded into ``lambda_cond``)."""
    return (predicted - target).pow(2).mean()


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The identity (cycle) loss, mean absolute error: (1 / N) sum |G(G(I|y')|y) - I| over all N values."""
    return (reconstructed - real).abs().mean()


def mask_size_loss(mask: torch.Tensor) -> torch.Tensor:
    """The attention mask's mean, (1 / N) sum A over all N values: pushes the mask from 1 (input kept) towards
    0 (G's colour), so that G cannot leave every image unchanged (the mask "saturating to 1")."""
    return mask.mean()


def mask_smoothness_loss(mask: torch.Tensor) -> torch.Tensor:
    """The mask's total variation, summed over each image and averaged over the batch:
    (1 / B) sum_b sum_{i,j} (|A[b,i,j+1] - A[b,i,j]| + |A[b,i+1,j] - A[b,i,j]|) (their
    ``_compute_loss_smooth``, which sums over the batch too; see ``lambda_mask_smooth``)."""
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().sum()
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().sum()
    return (dx + dy) / mask.shape[0]


# ---------------------------------------------------------------------------------------------- the stage


class GANimation(TransferMethod):
    """G with the attention mask against the WGAN-GP critic with an AU-regression head (one stage)."""

    method = "ganimation"
    stage = 1
    next_stage = None
    shared_hparams = ()
    data_hparams = ("aus", "image_size", "max_intensity")
    required_labels = ("aus",)

    @classmethod
    def from_data(cls, data: Any) -> dict[str, Any]:
        info = data.info
        return {
            "aus": list(info.aus),
            "image_size": int(data.image_size),
            "max_intensity": int(info.max_intensity),
        }

    @classmethod
    def check_init_args(cls, init_args: dict[str, Any], name: str) -> None:
        super().check_init_args(init_args, name)
        _check_values(init_args, name)

    def __init__(
        self,
        aus: Sequence[int] = DISFA_AUS,  # from the data: the AU order of the condition vectors
        image_size: int = 128,  # from the data; the paper's 128 px
        max_intensity: int = 5,  # from the data: l, to normalize intensities to [0, 1] (their /5)
        width: int = 64,  # G's channels after its first convolution (their conv_dim)
        residual_blocks: int = 6,  # G's residual blocks at a quarter of the resolution (their repeat_num)
        critic_width: int = 64,  # the critic's channels after its first convolution
        critic_layers: int | None = None,  # the critic's halvings; None: down to 2 x 2 (6 at 128 px)
        lambda_adv: float = 1.0,  # the WGAN terms of G and the critic (their lambda_D_prob)
        # their lambda_D_cond is 4000 on an MSE that their code divides again by the batch size, 25 in
        # their launch script: 4000 / 25 = 160 on the plain MSE, the same weight at their batch size
        lambda_cond: float = 160.0,
        lambda_cyc: float = 10.0,  # the cycle (identity) L1 (their lambda_cyc, the paper's lambda_idt)
        lambda_mask: float = 0.1,  # the masks' mean (their lambda_mask, the paper's lambda_A)
        # their lambda_mask_smooth 1e-5 is on a total variation summed over a batch of 25 faces; per face,
        # as `mask_smoothness_loss` averages it, the same weight is 25 * 1e-5
        lambda_mask_smooth: float = 2.5e-4,
        lambda_gp: float = 10.0,  # the gradient penalty (their lambda_D_gp)
        n_critic: int = 5,  # G is updated every n-th batch, the critic every batch
        # uniform noise in [-0.1, 0.1] added to the desired normalized AUs (their _generate_random_cond)
        condition_noise: float = 0.1,
        lr: float = 1e-4,  # Adam's learning rate, for G and the critic (their lr_G, lr_D)
        betas: tuple[float, float] = (0.5, 0.999),  # Adam's betas for both (their G_adam_b*, D_adam_b*)
    ) -> None:
        super().__init__()
        configure_process()
        self.aus = validate_aus(aus)
        values = dict(locals())
        values.pop("self"), values.pop("__class__", None)
        type(self).check_init_args(values, type(self).__name__)
        self.save_hyperparameters()
        # plain values only, so that the checkpoint loads with torch.load(weights_only=True)
        layers = critic_layers_for(int(image_size), critic_layers)
        self.hparams.update(
            aus=list(self.aus),
            image_size=int(image_size),
            max_intensity=int(max_intensity),
            critic_layers=layers,
            betas=[float(b) for b in betas],
        )
        self.automatic_optimization = False
        m = len(self.aus)
        self.generator = GANimationGenerator(m, int(width), int(residual_blocks))
        self.critic = GANimationCritic(int(image_size), m, int(critic_width), layers)
        # critic steps so far: G steps after every n_critic-th (kept in the checkpoint for resuming)
        self.critic_steps = 0

    def setup(self, stage: str) -> None:
        configure_process()  # a process that DDP started with spawn never ran __init__

    @property
    def max_intensity(self) -> int:
        return int(self.hparams.max_intensity)

    # ------------------------------------------------------------------ inputs

    def _inputs(
        self, batch: dict[str, dict[str, torch.Tensor]], noise: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images [A; B], their normalized AUs, the desired ones [B's; A's] (+ uniform noise when ``noise``))."""
        inputs = self.pair_inputs(batch, ("image", "aus"))
        real = inputs["aus"].to(inputs["image"].dtype) / self.max_intensity
        a, b = real.chunk(2)
        desired = torch.cat([b, a])
        scale = float(self.hparams.condition_noise)
        if noise and scale > 0:
            desired = desired + (torch.rand_like(desired) * 2 - 1) * scale
        return inputs["image"], real, desired

    # ------------------------------------------------------------------ losses

    def critic_losses(
        self, images: torch.Tensor, real_aus: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The critic's terms on real images and (detached) generated ones, real and fake in one call."""
        hp = self.hparams
        n = images.shape[0]
        fake = fake.detach()
        scores, aus = self.critic(torch.cat([images, fake]))
        out = {
            "C_wgan": wgan_critic_loss(scores[:n], scores[n:]),
            "C_gp": gradient_penalty(self.critic, images, fake),
            "C_cond": au_condition_loss(aus[:n], real_aus),
        }
        out["total_c"] = (
            hp.lambda_adv * out["C_wgan"] + hp.lambda_gp * out["C_gp"] + hp.lambda_cond * out["C_cond"]
        )
        return out

    def generator_losses(
        self, images: torch.Tensor, real_aus: torch.Tensor, desired: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """G's terms: the generated images through the critic, then back to their own AUs (the cycle)."""
        hp = self.hparams
        fake, mask = self.generator(images, desired)
        scores, fake_aus = self.critic(fake)
        cycle, cycle_mask = self.generator(fake, real_aus)
        out = {
            "G_adv": wgan_generator_loss(scores),
            "G_cond": au_condition_loss(fake_aus, desired),
            "G_cyc": cycle_loss(cycle, images),
            "G_mask": mask_size_loss(mask) + mask_size_loss(cycle_mask),
            "G_mask_smooth": mask_smoothness_loss(mask) + mask_smoothness_loss(cycle_mask),
        }
        out["total_g"] = (
            hp.lambda_adv * out["G_adv"]
            + hp.lambda_cond * out["G_cond"]
            + hp.lambda_cyc * out["G_cyc"]
            + hp.lambda_mask * out["G_mask"]
            + hp.lambda_mask_smooth * out["G_mask_smooth"]
        )
        return out

    # ------------------------------------------------------------------ Lightning hooks

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        opt_g, opt_c = self.optimizers()
        images, real_aus, desired = self._inputs(batch, noise=True)
        with self.toggled_optimizer(opt_c):
            with torch.no_grad():
                fake, _ = self.generator(images, desired)
            c = self.critic_losses(images, real_aus, fake)
            opt_c.zero_grad(set_to_none=True)
            self.manual_backward(c["total_c"])
            opt_c.step()
        self.critic_steps += 1
        values = dict(c)
        if self.critic_steps % int(self.hparams.n_critic) == 0:
            with self.toggled_optimizer(opt_g):
                g = self.generator_losses(images, real_aus, desired)
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g["total_g"])
                opt_g.step()
            values.update(g)
        self.log_losses("train", values, images.shape[0])

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ganimation_critic_steps"] = int(self.critic_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.critic_steps = int(checkpoint.get("ganimation_critic_steps", 0))

    def _generate(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Swaps (each side with the other's labelled AUs), their masks, the cycles and self-reconstructions."""
        images, real_aus, desired = self._inputs(batch, noise=False)
        swapped, mask = self.generator(images, desired)
        cycle, _ = self.generator(swapped, real_aus)
        self_recon, _ = self.generator(images, real_aus)
        return {
            "image": images,
            "aus": real_aus,
            "desired": desired,
            "swapped": swapped,
            "mask": mask,
            "cycle": cycle,
            "self_recon": self_recon,
        }

    def validation_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        r = self._generate(batch)
        lmax = self.max_intensity
        images = r["image"]
        values = {
            "self_recon_l1": (r["self_recon"] - images).abs().mean(),
            "cycle_l1": (r["cycle"] - images).abs().mean(),
            # the critic's AU head on real faces, in intensity units
            "au_mse": ((read_aus(self.critic, images) - r["aus"]) * lmax).pow(2).mean(),
            # how well the swaps carry the source's AUs, as the critic reads them
            "swap_au_mse": ((read_aus(self.critic, r["swapped"]) - r["desired"]) * lmax).pow(2).mean(),
            "mask_mean": r["mask"].mean(),
        }
        if "truth" in batch["a"]:  # synthetic data: the exact swap is known
            truth = torch.cat([batch["a"]["truth"], batch["b"]["truth"]])
            values["swap_truth_l1"] = (r["swapped"] - truth).abs().mean()
        self.log_losses("val", values, images.shape[0])

    @torch.no_grad()
    def log_images(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Rows: inputs, swaps, cycles back to the own AUs, the swaps' masks (white: input kept), truth."""
        r = self._generate(batch)
        rows = {
            "input": r["image"],
            "swapped": r["swapped"],
            "cycle": r["cycle"],
            "swap_mask": r["mask"].expand(-1, 3, -1, -1) * 2 - 1,
        }
        if "truth" in batch["a"]:
            rows["truth"] = torch.cat([batch["a"]["truth"], batch["b"]["truth"]])
        return rows

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_g = adam(self.generator.parameters(), hp.lr, hp.betas)
        opt_c = adam(self.critic.parameters(), hp.lr, hp.betas)
        factor = half_constant_then_linear(self.epochs_for_schedule())
        return [opt_g, opt_c], [
            torch.optim.lr_scheduler.LambdaLR(opt_g, factor),
            torch.optim.lr_scheduler.LambdaLR(opt_c, factor),
        ]


def _check_values(args: dict[str, Any], name: str) -> None:
    """ValueError for a bad value among the arguments given (any subset of `GANimation.__init__`'s)."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for key in ("width", "critic_width", "n_critic", "image_size", "max_intensity"):
        if key in args and not (count(args[key]) and args[key] >= 1):
            raise ValueError(f"{name}.{key} must be a positive integer, got {args[key]!r}")
    if "residual_blocks" in args and not (count(args["residual_blocks"]) and args["residual_blocks"] >= 0):
        raise ValueError(
            f"{name}.residual_blocks must be a non-negative integer, got {args['residual_blocks']!r}"
        )
    if args.get("critic_layers") is not None and not (
        count(args["critic_layers"]) and args["critic_layers"] >= 1
    ):
        raise ValueError(
            f"{name}.critic_layers must be a positive integer or null, got {args['critic_layers']!r}"
        )
    for key, value in args.items():
        if (key.startswith("lambda_") or key == "condition_noise") and not (number(value) and value >= 0):
            raise ValueError(f"{name}.{key} must be a non-negative number, got {value!r}")
    if "image_size" in args and count(args["image_size"]):
        size = args["image_size"]
        layers = critic_layers_for(size, args.get("critic_layers"))
        if size % 4 or size % (2**layers):
            raise ValueError(
                f"{name}: image_size {size} must be divisible by 4 (G) and by 2^{layers} (the critic's halvings)"
            )
