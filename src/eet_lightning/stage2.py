"""`Stage2Module`: the second training stage of EET (eq. 12), with manual GAN optimization."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eet_lightning import losses as L
from eet_lightning.aus import DISFA_AUS
from eet_lightning.base import EETBase, LossWeights, Variant
from eet_lightning.checkpoint_io import read_checkpoint
from eet_lightning.methods.training import adam, half_constant_then_linear
from eet_lightning.nets import ArchConfig, Generator, ImageDiscriminator
from eet_lightning.nets.modules import FLOW_RANGE

# Parts that stage 2 takes from stage 1; E, C, Du and Dd are then frozen, Ef and Er keep training.
STAGE1_PARTS = (
    "encoder",
    "attribute_classifier",
    "au_free_encoder",
    "au_related_encoder",
    "au_discriminator",
    "identity_discriminator",
)
FROZEN_PARTS = ("encoder", "attribute_classifier", "au_discriminator", "identity_discriminator")


class Stage2Module(EETBase):
    """Trains Ef, Er and G against Dsc and Dg with eq. 12; E, C, Du, Dd come frozen from stage 1.

    Each step runs two rounds of disentangle-swap-generate (Fig. 1a), then one generator step (Ef, Er, G)
    and one discriminator step (Dsc, Dg) with manual optimization.
    """

    stage = 2
    previous_stage_arg = "stage1_ckpt"

    def __init__(
        self,
        arch: ArchConfig | dict[str, Any] | None = None,
        aus: Sequence[int] = DISFA_AUS,
        au_weights: Sequence[float] | None = None,
        variant: Variant = "eet",
        loss_weights: LossWeights | dict[str, Any] | None = None,
        channels_last: bool = False,  # channels-last memory format while fitting (speed only)
        stage1_ckpt: str | None = None,  # stage-1 checkpoint; read once when fitting starts
        lr_generator: float = 3e-5,  # the paper's stage-2 learning rate, for Ef, Er, G
        lr_discriminator: float = 3e-5,  # the same rate for Dsc, Dg unless set apart
        betas: tuple[float, float] = (0.5, 0.9),  # the paper's stage-2 Adam betas
        # Er's second-round pass (on the swapped images) trains Er too, as in the paper; False keeps Er a
        # fixed judge there, so that G and Er cannot agree on a code (see configs/synthetic.yaml).
        train_au_encoder_on_generated: bool = True,
        # The paper freezes Du and Dd after stage 1; True keeps them learning in the discriminator step,
        # so that Ef and Er keep facing a real adversary as their features move (see synthetic.yaml).
        train_feature_discriminators: bool = False,
    ) -> None:
        super().__init__(arch, aus, au_weights, variant, loss_weights, channels_last)
        self.save_hyperparameters()
        self.store_plain_hparams()
        self.automatic_optimization = False
        for name, lr in (("lr_generator", lr_generator), ("lr_discriminator", lr_discriminator)):
            if lr <= 0:
                raise ValueError(f"stage2.{name} must be positive, got {lr}")
        self.generator = Generator(self.arch)  # G
        if self.flags["swap_consistency"]:
            self.swap_discriminator = ImageDiscriminator(self.arch)  # Dsc
        self.image_discriminator = ImageDiscriminator(self.arch)  # Dg
        for part in self.frozen_parts:
            part.requires_grad_(False)
            part.eval()
        self._stage1_loaded = False

    # ----------------------------------------------------------------------------------------------
    # frozen stage-1 parts

    @property
    def frozen_names(self) -> tuple[str, ...]:
        if self.hparams.get("train_feature_discriminators", False):
            return ("encoder", "attribute_classifier")
        return FROZEN_PARTS

    @property
    def frozen_parts(self) -> list[nn.Module]:
        return [getattr(self, n) for n in self.frozen_names if hasattr(self, n)]

    def train(self, mode: bool = True) -> Stage2Module:
        # Lightning switches the whole module to train mode; the frozen parts must stay in eval so that
        # E's and C's batch-norm statistics and Du/Dd's spectral-norm vectors never move.
        super().train(mode)
        for part in self.frozen_parts:
            part.eval()
        return self

    def load_stage1_weights(self, path: str | Path) -> None:
        """Copy E, C, Ef, Er, Du, Dd from a stage-1 checkpoint (shapes and AU list must agree)."""
        ckpt = read_checkpoint(path, 1, "stage2.stage1_ckpt")
        their_aus = list(ckpt.get("hyper_parameters", {}).get("aus", self.aus))
        if their_aus != self.aus:
            raise ValueError(
                f"stage-1 checkpoint {path} was trained on AUs {their_aus}, this model uses {self.aus}"
            )
        own = self.state_dict()
        wanted = {k: v for k, v in ckpt["state_dict"].items() if k.split(".")[0] in STAGE1_PARTS}
        missing = [k for k in own if k.split(".")[0] in STAGE1_PARTS and k not in wanted]
        bad = [k for k, v in wanted.items() if k not in own or own[k].shape != v.shape]
        if missing or bad:
            raise ValueError(
                f"stage-1 checkpoint {path} does not match this stage-2 architecture "
                f"(missing: {missing[:4]}, mismatched: {bad[:4]}); use the same arch and variant in both stages"
            )
        self.load_state_dict(wanted, strict=False)
        self._stage1_loaded = True

    def setup(self, stage: str) -> None:
        if stage == "fit" and not self._stage1_loaded and self.hparams.stage1_ckpt:
            # Resuming a stage-2 run restores every weight from its own checkpoint right after this.
            self.load_stage1_weights(self.hparams.stage1_ckpt)
        super().setup(stage)

    # ----------------------------------------------------------------------------------------------
    # the two rounds of Fig. 1(a)

    def disentangle(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image -> (facial feature f, AU-free f_f, AU-related f_r, predicted normalized AUs)."""
        feature = self.encoder(images)
        au_free = self.au_free_encoder(feature)
        au_related, au_pred = self.au_related_encoder(feature)
        return feature, au_free, au_related, au_pred

    def forward(self, image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Swap expressions: (A with B's expression, B with A's expression)."""
        x = torch.cat([image_a, image_b])
        feature, ff, fr, _ = self.disentangle(x)
        ff_a, ff_b = ff.chunk(2)
        fr_a, fr_b = fr.chunk(2)
        return self.generator(torch.cat([fr_b, fr_a]), torch.cat([ff_a, ff_b]), x, feature).chunk(2)

    def _encode(
        self, images: torch.Tensor, first_round: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f, f_f, f_r, normalized AUs) of real images (first round) or of swapped ones (second round)."""
        if first_round:
            with torch.no_grad():  # E is frozen and the real images need no gradient
                feature = self.encoder(images)
        else:  # E of the generated image, as eq. 7 needs: gradients reach G through it
            feature = self.encoder(images)
        au_free = self.au_free_encoder(feature)
        if first_round or self.hparams.train_au_encoder_on_generated or not torch.is_grad_enabled():
            au_related, au_pred = self.au_related_encoder(feature)
        else:  # gradients reach G through the swapped image, never Er's weights
            er = self.au_related_encoder
            state = {k: v.detach() for k, v in er.named_parameters()} | dict(er.named_buffers())
            au_related, au_pred = torch.func.functional_call(er, state, (feature,))
        return feature, au_free, au_related, au_pred

    def _rounds(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both rounds for a stacked batch x = [A; B]. Every output is stacked the same way.

        Both sides and both swap directions go through E, Ef, Er and G together: 2 passes of E/Ef/Er and
        2 of G, where Fig. 1(a) draws 4 and 6 (that form is benchmarks/reference_forms.py's)."""
        feature, au_free, au_related, au_pred = self._encode(x, first_round=True)
        ff_a, ff_b = au_free.chunk(2)
        fr_a, fr_b = au_related.chunk(2)
        G = self.generator
        # One generator call for the swaps (İa = G(fr_b, ff_a), İb = G(fr_a, ff_b)) and the
        # self-reconstructions (Ǐa = G(fr_a, ff_a), Ǐb = G(fr_b, ff_b)); a composing G edits the input.
        xx, feat_xx = (
            (torch.cat([x, x]), torch.cat([feature, feature]))
            if self.arch.generator_needs_base
            else (None, None)
        )
        generated, maps1 = G.forward_with_maps(
            torch.cat([fr_b, fr_a, fr_a, fr_b]), torch.cat([ff_a, ff_b, ff_a, ff_b]), xx, feat_xx
        )
        swapped, self_recon = generated.chunk(2)
        # Second round on the swapped images, then the cross-cycle reconstruction Îa = G(f_r(İb), f_f(İa)),
        # which edits the swapped image İa when G composes.
        feature2, au_free2, au_related2, au_pred2 = self._encode(swapped, first_round=False)
        ff2_a, ff2_b = au_free2.chunk(2)
        fr2_a, fr2_b = au_related2.chunk(2)
        cycle, maps2 = G.forward_with_maps(
            torch.cat([fr2_b, fr2_a]),
            torch.cat([ff2_a, ff2_b]),
            swapped if self.arch.generator_needs_base else None,
            feature2 if self.arch.generator_needs_base else None,
        )
        out = {
            "au_free": au_free,
            "au_related": au_related,
            "au_pred": au_pred,
            "swapped": swapped,
            "self_recon": self_recon,
            "feature2": feature2,
            "au_pred2": au_pred2,
            "cycle": cycle,
        }
        for key in maps1:  # G's masks / flows of the swaps, self-reconstructions and cross-cycles
            out[key] = torch.cat([maps1[key], maps2[key]])
        return out

    def _discriminate(self, discriminator: nn.Module, *images: torch.Tensor) -> torch.Tensor:
        """Scores of stacked [A; B] image batches, concatenated: one call for all of them (instance norm
        keeps samples independent)."""
        return discriminator(torch.cat(images))

    @staticmethod
    def _swap_halves(t: torch.Tensor) -> torch.Tensor:
        a, b = t.chunk(2)
        return torch.cat([b, a])

    def generator_losses(
        self, inputs: dict[str, torch.Tensor], r: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        w, lmax = self.weights, self.max_intensity
        identity_logits, pose_logits = self.attribute_classifier(r["feature2"])
        out = {
            "L_u": L.au_intensity_loss(r["au_pred"], inputs["aus"], self.au_weights, lmax),
            # the swapped image must carry the source's AUs
            "L_u_swap": L.au_intensity_loss(
                r["au_pred2"], self._swap_halves(inputs["aus"]), self.au_weights, lmax
            ),
            # ... and keep the target's identity and pose (L_c only on the swapped images)
            "L_c": L.attribute_loss(
                identity_logits, pose_logits, inputs["identity"], inputs["pose"], w.lambda_p
            ),
            "L_r": L.reconstruction_loss(r["self_recon"], r["cycle"], inputs["image"]),
            "L_adg": L.lsgan_generator_loss(self._discriminate(self.image_discriminator, r["swapped"])),
        }
        total = (
            out["L_u"]
            + w.lambda_u_swap * out["L_u_swap"]
            + w.lambda_c * out["L_c"]
            + w.lambda_r * out["L_r"]
            + w.lambda_adg * out["L_adg"]
        )
        if self.flags["adversarial"]:
            du_scores, dd_scores = self.feature_discriminators(r["au_free"], r["au_related"])
            out["L_u_E"] = L.au_confusion_loss(du_scores, self.arch.num_aus, lmax)
            out["L_d_E"] = L.identity_confusion_loss(dd_scores)
            total = total + w.lambda_adu * out["L_u_E"] + w.lambda_add * out["L_d_E"]
        if self.flags["swap_consistency"]:
            out["L_sc"] = L.lsgan_generator_loss(self._discriminate(self.swap_discriminator, r["swapped"]))
            total = total + w.lambda_sc * out["L_sc"]
        if "mask" in r:  # a composing G: its masks small and smooth (GANimation)
            out["L_mask"] = L.mask_size_loss(r["mask"])
            out["L_mask_tv"] = L.total_variation_loss(r["mask"])
            total = total + w.lambda_mask * out["L_mask"] + w.lambda_mask_tv * out["L_mask_tv"]
        if "gate" in r:  # the gate of a warping G: as small and smooth as its mask
            out["L_gate"] = L.mask_size_loss(r["gate"])
            out["L_gate_tv"] = L.total_variation_loss(r["gate"])
            total = total + w.lambda_mask * out["L_gate"] + w.lambda_mask_tv * out["L_gate_tv"]
        if "flow" in r:  # a warping G: moves as little of the image as it can
            out["L_flow"] = L.flow_size_loss(r["flow"])
            total = total + w.lambda_flow * out["L_flow"]
        out["total_g"] = total
        return out

    def discriminator_losses(
        self, inputs: dict[str, torch.Tensor], r: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        swapped = r["swapped"].detach()
        n = swapped.shape[0]
        # real and generated inputs share one call
        scores = self._discriminate(self.image_discriminator, inputs["image"], swapped)
        out = {"D_g": L.lsgan_discriminator_loss(scores[:n], scores[n:])}
        total = out["D_g"]
        if self.flags["swap_consistency"]:
            # Dsc: self-reconstruction is "real", the swapped image "fake" (eq. 8)
            scores = self._discriminate(self.swap_discriminator, r["self_recon"].detach(), swapped)
            out["D_sc"] = L.lsgan_discriminator_loss(scores[:n], scores[n:])
            total = total + out["D_sc"]
        if self.flags["adversarial"] and self.hparams.get("train_feature_discriminators", False):
            lmax = self.max_intensity
            du_scores, dd_scores = self.feature_discriminators(
                r["au_free"].detach(), r["au_related"].detach()
            )
            out["L_u_D"] = L.au_discrimination_loss(du_scores, inputs["aus"], lmax)
            out["L_d_D"] = L.identity_discrimination_loss(dd_scores, inputs["identity"])
            total = total + out["L_u_D"] + out["L_d_D"]
        out["total_d"] = total
        return out

    # ----------------------------------------------------------------------------------------------
    # Lightning hooks

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        inputs = self.pair_inputs(batch)
        with self.toggled_optimizer(opt_g):
            rounds = self._rounds(inputs["image"])
            g = self.generator_losses(inputs, rounds)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g["total_g"])
            opt_g.step()
        with self.toggled_optimizer(opt_d):
            d = self.discriminator_losses(inputs, rounds)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d["total_d"])
            opt_d.step()
        self.log_losses("train", {**g, **d}, inputs["image"].shape[0])

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def validation_step(self, batch: dict[str, dict[str, torch.Tensor]], batch_idx: int) -> None:
        inputs = self.pair_inputs(batch)
        r = self._rounds(inputs["image"])
        values = {
            "self_recon_l1": (r["self_recon"] - inputs["image"]).abs().mean(),
            "cycle_l1": (r["cycle"] - inputs["image"]).abs().mean(),
            "au_mse": (r["au_pred"] * self.max_intensity - inputs["aus"]).pow(2).mean(),
            # how well the swapped images carry the source's AUs, as read by Er
            "swap_au_mse": (r["au_pred2"] * self.max_intensity - self._swap_halves(inputs["aus"]))
            .pow(2)
            .mean(),
        }
        if "truth" in batch["a"]:  # synthetic data: the exact swap is known
            truth = torch.cat([batch["a"]["truth"], batch["b"]["truth"]])
            values["swap_truth_l1"] = (r["swapped"] - truth).abs().mean()
            values["self_truth_l1"] = (r["self_recon"] - truth).abs().mean()
        self.log_losses("val", values, inputs["image"].shape[0])

    @torch.no_grad()
    def log_images(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Rows for an image grid: inputs, swaps, self-reconstructions, cross-cycle reconstructions."""
        inputs = self.pair_inputs(batch)
        r = self._rounds(inputs["image"])
        rows = {
            "input": inputs["image"],
            "swapped": r["swapped"],
            "self_recon": r["self_recon"],
            "cycle": r["cycle"],
        }
        if "truth" in batch["a"]:
            rows["truth"] = torch.cat([batch["a"]["truth"], batch["b"]["truth"]])
        n = inputs["image"].shape[0]
        if "mask" in r:  # where a painting G painted the swaps (white) and kept the input (black)
            rows["swap_mask"] = r["mask"][:n].expand(-1, 3, -1, -1) * 2 - 1
        if "flow" in r:  # how far a warping G moved each pixel of the swaps (white: FLOW_RANGE or more)
            rows["swap_motion"] = (r["flow"][:n].norm(dim=1, keepdim=True) / FLOW_RANGE).clamp(max=1).expand(
                -1, 3, -1, -1
            ) * 2 - 1
        return rows

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        g_params = [
            p for m in (self.au_free_encoder, self.au_related_encoder, self.generator) for p in m.parameters()
        ]
        d_modules = [self.image_discriminator] + (
            [self.swap_discriminator] if self.flags["swap_consistency"] else []
        )
        if self.flags["adversarial"] and hp.get("train_feature_discriminators", False):
            d_modules += [self.au_discriminator, self.identity_discriminator]
        d_params = [p for m in d_modules for p in m.parameters()]
        opt_g = adam(g_params, hp.lr_generator, hp.betas)
        opt_d = adam(d_params, hp.lr_discriminator, hp.betas)
        factor = half_constant_then_linear(self.epochs_for_schedule())
        return [opt_g, opt_d], [
            torch.optim.lr_scheduler.LambdaLR(opt_g, factor),
            torch.optim.lr_scheduler.LambdaLR(opt_d, factor),
        ]
