"""`StarGAN`: the StarGAN baseline's training (one stage), and its losses as small pure functions.

StarGAN (Choi et al., CVPR 2018) with the emotion classes as the domains. Each batch of pairs (A, B) is
stacked into one batch x = [A; B] whose original domains are c' = [emotion_A; emotion_B] and whose target
domains are c = [emotion_B; emotion_A]: A is translated into B's expression and B into A's, the transfer
the other methods are scored on. (The paper draws the targets by shuffling the batch's labels; with pairs
of different subjects this is the same kind of draw.)

The objective is the paper's (eq. 1-5, with the WGAN-GP adversarial loss of its implementation section):

    L_D = E[D_src(G(x, c))] - E[D_src(x)] + lambda_gp GP + lambda_cls L_cls^r
    L_G = -E[D_src(G(x, c))] + lambda_cls L_cls^f + lambda_rec L_rec

with L_cls^r = CE(D_cls(x), c'), L_cls^f = CE(D_cls(G(x, c)), c) and L_rec = |x - G(G(x, c), c')|_1. D
takes a step on every batch, G on every ``n_critic``-th (the paper's 5).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from eet_lightning.methods.gan_parts import gradient_penalty, wgan_critic_loss, wgan_generator_loss
from eet_lightning.methods.stargan.model import build_networks, one_hot_domains
from eet_lightning.methods.training import TransferMethod, adam, data_label_kinds, half_constant_then_linear
from eet_lightning.runtime import configure_process

# ------------------------------------------------------------------------------------------------------
# losses


def domain_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cls (eq. 2 on real images, eq. 3 on generated ones): the cross-entropy of the domain logits
    [N, K] against class indices [N], averaged over the batch,

        L_cls = -(1/N) sum_i log softmax(logits_i)[labels_i]

    (the paper's single-label form, used for RaFD's eight expressions)."""
    return F.cross_entropy(logits, labels.long())


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L_rec (eq. 4), the cycle: the mean absolute difference over every pixel and channel,

    L_rec = mean |x - G(G(x, c), c')|."""
    return (images - reconstruction).abs().mean()


def discriminator_losses(
    real_scores: torch.Tensor,
    fake_scores: torch.Tensor,
    real_logits: torch.Tensor,
    real_labels: torch.Tensor,
    penalty: torch.Tensor,
    lambda_cls: float,
    lambda_gp: float,
) -> dict[str, torch.Tensor]:
    """D's objective L_D = -L_adv + lambda_cls L_cls^r (eq. 5) with WGAN-GP's L_adv:

    D_adv = mean D_src(G(x, c)) - mean D_src(x)        (patch scores averaged over patches and images)
    D_gp  = penalty                                   (`gradient_penalty`: E[(|grad D_src(x^)|_2 - 1)^2])
    D_cls = CE(D_cls(x), c')                          (`domain_classification_loss` on real images)
    total_d = D_adv + lambda_gp D_gp + lambda_cls D_cls
    """
    out = {
        "D_adv": wgan_critic_loss(real_scores, fake_scores),
        "D_gp": penalty,
        "D_cls": domain_classification_loss(real_logits, real_labels),
    }
    out["total_d"] = out["D_adv"] + lambda_gp * out["D_gp"] + lambda_cls * out["D_cls"]
    return out


def generator_losses(
    fake_scores: torch.Tensor,
    fake_logits: torch.Tensor,
    target_labels: torch.Tensor,
    reconstruction: torch.Tensor,
    images: torch.Tensor,
    lambda_cls: float,
    lambda_rec: float,
) -> dict[str, torch.Tensor]:
    """G's objective L_G = L_adv + lambda_cls L_cls^f + lambda_rec L_rec (eq. 5), with WGAN's L_adv:

    G_adv = -mean D_src(G(x, c))
    G_cls = CE(D_cls(G(x, c)), c)                     (the fakes classified as their target domain)
    G_rec = mean |x - G(G(x, c), c')|                 (`reconstruction_loss`)
    total_g = G_adv + lambda_cls G_cls + lambda_rec G_rec
    """
    out = {
        "G_adv": wgan_generator_loss(fake_scores),
        "G_cls": domain_classification_loss(fake_logits, target_labels),
        "G_rec": reconstruction_loss(reconstruction, images),
    }
    out["total_g"] = out["G_adv"] + lambda_cls * out["G_cls"] + lambda_rec * out["G_rec"]
    return out


# ------------------------------------------------------------------------------------------------------
# the training module


class StarGAN(TransferMethod):
    """StarGAN's G and D trained with WGAN-GP, domain classification and cycle reconstruction, manual
    optimization: D on every batch, G on every ``n_critic``-th."""

    method = "stargan"
    stage = 1
    next_stage = None
    shared_hparams = ()
    data_hparams = ("image_size", "num_emotions")
    required_labels = ("emotion",)

    @classmethod
    def from_data(cls, data: Any) -> dict[str, Any]:
        return {"image_size": int(data.image_size), "num_emotions": int(data.info.num_emotions)}

    @classmethod
    def complete_init_args(cls, init_args: dict[str, Any], data: Any) -> dict[str, Any]:
        if "emotion" not in data_label_kinds(data):
            raise ValueError(
                f"StarGAN translates between emotion classes (its domains), so every training sample needs "
                f"an emotion label; {type(data).__name__} has none (data.info.num_emotions is 0). Train it "
                f"on data with emotion labels: the synthetic faces or RaFD"
            )
        return super().complete_init_args(init_args, data)

    @classmethod
    def check_init_args(cls, init_args: dict[str, Any], name: str) -> None:
        super().check_init_args(init_args, name)
        for key in ("width", "residual_blocks", "critic_width", "n_critic", "num_emotions"):
            value = init_args.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}.{key} must be a positive integer, got {value!r}")
        layers = init_args.get("critic_layers")
        if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
            raise ValueError(f"{name}.critic_layers must be a positive integer or null, got {layers!r}")
        for key in ("lambda_cls", "lambda_rec", "lambda_gp"):
            value = init_args.get(key)
            if value is not None and not (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                raise ValueError(f"{name}.{key} must be a non-negative finite number, got {value!r}")

    def __init__(
        self,
        image_size: int = 128,  # set from the data; the paper's RaFD and CelebA images are 128 px
        num_emotions: int = 8,  # the number of domains, set from the data (RaFD's eight expressions)
        width: int = 64,  # G's channels after its first convolution (the paper: 64)
        residual_blocks: int = 6,  # G's residual blocks at the bottleneck (the paper: 6 at 128 px)
        critic_width: int = 64,  # D's channels after its first convolution (the paper: 64)
        # D's 4x4 stride-2 convolutions; null: down to a 2 x 2 map (the paper: 6 at 128 px)
        critic_layers: int | None = None,
        lambda_cls: float = 1.0,  # domain classification (the paper: 1)
        lambda_rec: float = 10.0,  # cycle reconstruction (the paper: 10)
        lambda_gp: float = 10.0,  # WGAN-GP gradient penalty (the paper: 10)
        n_critic: int = 5,  # G takes a step on every n-th batch, D on every batch (the paper: 5)
        lr_generator: float = 1e-4,  # Adam learning rate of G (the paper: 1e-4)
        lr_discriminator: float = 1e-4,  # Adam learning rate of D (the paper: 1e-4)
        betas: tuple[float, float] = (0.5, 0.999),  # Adam's betas for both (the paper: 0.5, 0.999)
    ) -> None:
        super().__init__()
        configure_process()  # denormals flushed before the networks are built (see EETBase)
        self.check_init_args({k: v for k, v in locals().items() if k not in ("self", "__class__")}, "stargan")
        # plain values only: the checkpoint must load with torch.load(weights_only=True)
        self.save_hyperparameters()
        self.hparams["betas"] = [float(b) for b in betas]
        self.automatic_optimization = False
        self.generator, self.discriminator = build_networks(
            image_size, num_emotions, width, residual_blocks, critic_width, critic_layers
        )
        self.critic_steps = 0  # D's steps so far (kept in the checkpoint): G steps on every n_critic-th

    def setup(self, stage: str) -> None:
        configure_process()  # a process that DDP started with spawn never ran __init__

    # ------------------------------------------------------------------ the pieces of a step

    def domains(self, batch: dict[str, dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(original, target) domain indices of the stacked batch [A; B]: [e_A; e_B] and [e_B; e_A]."""
        ea, eb = batch["a"]["emotion"], batch["b"]["emotion"]
        return torch.cat([ea, eb]).long(), torch.cat([eb, ea]).long()

    def translate(self, images: torch.Tensor, domains: torch.Tensor) -> torch.Tensor:
        """G(x, one-hot(domains))."""
        return self.generator(images, one_hot_domains(domains, self.hparams.num_emotions))

    def discriminator_step_losses(
        self, x: torch.Tensor, org: torch.Tensor, trg: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """L_D on real images ``x`` (domains ``org``) and G's translations of them into ``trg`` (no
        gradient reaches G)."""
        with torch.no_grad():
            fake = self.translate(x, trg)
        n = x.shape[0]
        scores, logits = self.discriminator(torch.cat([x, fake]))  # D has no normalization: one call for both
        penalty = gradient_penalty(self.discriminator, x, fake)
        hp = self.hparams
        return discriminator_losses(
            scores[:n], scores[n:], logits[:n], org, penalty, hp.lambda_cls, hp.lambda_gp
        )

    def generator_step_losses(
        self, x: torch.Tensor, org: torch.Tensor, trg: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """L_G for translating ``x`` (domains ``org``) into ``trg`` and back."""
        fake = self.translate(x, trg)
        reconstruction = self.translate(fake, org)
        scores, logits = self.discriminator(fake)
        hp = self.hparams
        return generator_losses(scores, logits, trg, reconstruction, x, hp.lambda_cls, hp.lambda_rec)

    # ------------------------------------------------------------------ Lightning hooks

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        x = torch.cat([batch["a"]["image"], batch["b"]["image"]])
        org, trg = self.domains(batch)
        with self.toggled_optimizer(opt_d):
            d = self.discriminator_step_losses(x, org, trg)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d["total_d"])
            opt_d.step()
        self.critic_steps += 1
        logged = dict(d)
        if self.critic_steps % self.hparams.n_critic == 0:
            with self.toggled_optimizer(opt_g):
                g = self.generator_step_losses(x, org, trg)
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g["total_g"])
                opt_g.step()
            # logged on G's steps only, so that the epoch means average G's steps
            self.log_losses("train", g, x.shape[0])
        self.log_losses("train", logged, x.shape[0])

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["stargan_critic_steps"] = int(self.critic_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.critic_steps = int(checkpoint.get("stargan_critic_steps", 0))

    def validation_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        x = torch.cat([batch["a"]["image"], batch["b"]["image"]])
        org, trg = self.domains(batch)
        swapped = self.translate(x, trg)
        cycle = self.translate(swapped, org)
        real_logits = self.discriminator(x)[1]
        swapped_logits = self.discriminator(swapped)[1]
        values = {
            "rec_l1": reconstruction_loss(cycle, x),
            # D's domain classification of real held-out images, and of the swaps as their target domain
            "cls_acc": (real_logits.argmax(1) == org).float().mean(),
            "swap_cls_acc": (swapped_logits.argmax(1) == trg).float().mean(),
        }
        if "truth" in batch["a"]:  # synthetic data: the exact swap is known
            truth = torch.cat([batch["a"]["truth"], batch["b"]["truth"]])
            values["swap_truth_l1"] = (swapped - truth).abs().mean()
        self.log_losses("val", values, x.shape[0])

    @torch.no_grad()
    def log_images(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Rows: the inputs, their swaps (G(x, c), c the other side's emotion), the cycle reconstructions
        G(G(x, c), c'), and the true swaps when the data has them."""
        x = torch.cat([batch["a"]["image"], batch["b"]["image"]])
        org, trg = self.domains(batch)
        swapped = self.translate(x, trg)
        rows = {"input": x, "swapped": swapped, "reconstruction": self.translate(swapped, org)}
        if "truth" in batch["a"]:
            rows["truth"] = torch.cat([batch["a"]["truth"], batch["b"]["truth"]])
        return rows

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_g = adam(self.generator.parameters(), hp.lr_generator, hp.betas)
        opt_d = adam(self.discriminator.parameters(), hp.lr_discriminator, hp.betas)
        factor = half_constant_then_linear(self.epochs_for_schedule())
        return [opt_g, opt_d], [
            torch.optim.lr_scheduler.LambdaLR(opt_g, factor),
            torch.optim.lr_scheduler.LambdaLR(opt_d, factor),
        ]
