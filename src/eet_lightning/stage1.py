"""`Stage1Module`: the first training stage of EET (eq. 11)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from eet_lightning import losses as L
from eet_lightning.aus import DISFA_AUS
from eet_lightning.base import EETBase, LossWeights, Variant
from eet_lightning.methods.training import adam, half_constant_then_linear
from eet_lightning.nets import ArchConfig


class Stage1Module(EETBase):
    """Jointly trains E, C, Ef, Er, Du and Dd with eq. 11:
    L = L_u + lambda_c L_c + lambda_adu L_u^(D) + lambda_add L_d^(D).

    Each image goes through one disentanglement (no generation). Du learns to classify the discretized
    AU intensities from f_f, Dd the identity from f_r, so that stage 2 can make Ef and Er confuse them.
    """

    stage = 1
    next_stage = "eet_lightning.stage2.Stage2Module"

    def __init__(
        self,
        arch: ArchConfig | dict[str, Any] | None = None,
        aus: Sequence[int] = DISFA_AUS,
        au_weights: Sequence[float] | None = None,
        variant: Variant = "eet",
        loss_weights: LossWeights | dict[str, Any] | None = None,
        channels_last: bool = False,  # channels-last memory format while fitting (speed only)
        lr: float = 1e-4,  # the paper's stage-1 Adam learning rate
        betas: tuple[float, float] = (0.95, 0.999),  # the paper's stage-1 Adam betas
        detach_discriminator_inputs: bool = False,  # train Du/Dd on detached f_f/f_r (see synthetic.yaml)
    ) -> None:
        super().__init__(arch, aus, au_weights, variant, loss_weights, channels_last)
        self.save_hyperparameters()
        self.store_plain_hparams()
        if lr <= 0:
            raise ValueError(f"stage1.lr must be positive, got {lr}")

    def _losses(self, inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        w, lmax = self.weights, self.max_intensity
        feature = self.encoder(inputs["image"])
        au_related, au_pred = self.au_related_encoder(feature)
        identity_logits, pose_logits = self.attribute_classifier(feature)
        out = {
            "L_u": L.au_intensity_loss(au_pred, inputs["aus"], self.au_weights, lmax),
            "L_c": L.attribute_loss(
                identity_logits, pose_logits, inputs["identity"], inputs["pose"], w.lambda_p
            ),
        }
        total = out["L_u"] + w.lambda_c * out["L_c"]
        if self.flags["adversarial"]:
            au_free = self.au_free_encoder(feature)
            if self.hparams.detach_discriminator_inputs:
                au_free, au_related = au_free.detach(), au_related.detach()
            du_scores, dd_scores = self.feature_discriminators(au_free, au_related)
            out["L_u_D"] = L.au_discrimination_loss(du_scores, inputs["aus"], lmax)
            out["L_d_D"] = L.identity_discrimination_loss(dd_scores, inputs["identity"])
            total = total + w.lambda_adu * out["L_u_D"] + w.lambda_add * out["L_d_D"]
        out["total"] = total
        return out, au_pred

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> torch.Tensor:
        inputs = self.pair_inputs(batch)
        out, _ = self._losses(inputs)
        self.log_losses("train", out, inputs["image"].shape[0])
        return out["total"]

    def validation_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        # Validation identities are held out, so only identity-free quantities are meaningful here.
        inputs = self.pair_inputs(batch)
        feature = self.encoder(inputs["image"])
        _, au_pred = self.au_related_encoder(feature)
        _, pose_logits = self.attribute_classifier(feature)
        err = au_pred * self.max_intensity - inputs["aus"]
        values = {"au_mse": err.pow(2).mean(), "au_mae": err.abs().mean()}
        if self.arch.num_poses > 1:
            values["pose_acc"] = (pose_logits.argmax(1) == inputs["pose"]).float().mean()
        self.log_losses("val", values, inputs["image"].shape[0])

    def configure_optimizers(self) -> Any:
        params = (p for p in self.parameters() if p.requires_grad)
        opt = adam(params, self.hparams.lr, self.hparams.betas)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, half_constant_then_linear(self.epochs_for_schedule()))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
