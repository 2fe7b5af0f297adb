"""The reference forms of the training computations: the straightforward way to compute what the library
computes faster. The library (``src/``) has one form of each computation, the fast one; these are kept
here, beside their users, to time it against (benchmarks/bench.py) and to test that both compute the
same (tests/test_equivalence.py, tests/test_composition.py, tests/test_bench.py).

- `ReferenceStage1Module`, `ReferenceStage2Module`: the stage modules with each side of a pair through its
  own passes of E, Ef, Er and G (4 passes of E/Ef/Er and 6 of G a stage-2 step, as Fig. 1(a) draws them,
  where the library's `Stage2Module._rounds` makes 2 and 2), each discriminator input through its own call
  (one call per side of each image batch; Du and Dd one call each, not side by side) and torch's default
  Adam (`default_adam`) instead of the fused one;
- `reference_layers`: torch's own ``nn.PReLU`` (aten's backward) in place of the library's `PReLU`
  (`nets/kernels/prelu.py`), and spectral norm that always normalizes the weight, ``conv(x, W / sigma) + b``
  (`unscaled_spectral_norm`), in place of dividing the output where that is smaller
  (`nets/kernels/spectral_norm.py`, `SNConvolution`);
- `reference_form`: both at once, for a built `Stage1Module` or `Stage2Module`, in place.

The rest of the reference training form of the benchmark, Er's branches one after the other and contiguous
tensors, are library options (``arch.grouped_au_encoder``, ``channels_last``): set them as well.
Each conversion keeps the module's parameters, buffers and state dict; only the computation changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from eet_lightning.nets.kernels.prelu import PReLU
from eet_lightning.nets.kernels.spectral_norm import SNConv2d, SNConvTranspose2d
from eet_lightning.stage1 import Stage1Module
from eet_lightning.stage2 import Stage2Module

# --------------------------------------------------------------------------------------------------
# layers


class UnscaledSpectralNorm:
    """Spectral norm that always divides the weight: ``conv(x, W / sigma) + b``, whatever the output's
    size (the library divides the convolution's output by sigma where the output is the smaller)."""

    def spectral_conv(self, x: torch.Tensor, conv) -> torch.Tensor:
        return conv(x, self.normalized_weight(), self.bias)


class UnscaledSNConv2d(UnscaledSpectralNorm, SNConv2d):
    pass


class UnscaledSNConvTranspose2d(UnscaledSpectralNorm, SNConvTranspose2d):
    pass


UNSCALED = {SNConv2d: UnscaledSNConv2d, SNConvTranspose2d: UnscaledSNConvTranspose2d}


def unscaled_spectral_norm(module: nn.Module) -> nn.Module:
    """Every spectrally normalized layer of ``module`` on the normalized weight (`UnscaledSpectralNorm`), in
    place; returns ``module``."""
    for layer in module.modules():
        if type(layer) in UNSCALED:
            layer.__class__ = UNSCALED[type(layer)]
    return module


def aten_prelu(module: nn.Module) -> nn.Module:
    """Every `PReLU` of ``module`` as torch's own ``nn.PReLU`` (aten's backward), in place; returns
    ``module``. The same parameter and state dict: the library's layer only replaces the CPU backward."""
    for layer in module.modules():
        if type(layer) is PReLU:
            layer.__class__ = nn.PReLU
    return module


def reference_layers(module: nn.Module) -> nn.Module:
    """`aten_prelu` and `unscaled_spectral_norm`, in place; returns ``module``."""
    return aten_prelu(unscaled_spectral_norm(module))


# --------------------------------------------------------------------------------------------------
# optimizers


def default_adam(optimizer: torch.optim.Optimizer) -> torch.optim.Adam:
    """torch's default Adam over the parameters of ``optimizer``, with its learning rate and betas (the
    library's `eet_lightning.methods.training.adam` is the fused kernel: the same update up to rounding)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.optim.Adam(params, lr=optimizer.defaults["lr"], betas=tuple(optimizer.defaults["betas"]))


def _same_schedule(
    scheduler: torch.optim.lr_scheduler.LambdaLR, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, scheduler.lr_lambdas[0])


# --------------------------------------------------------------------------------------------------
# stage modules


class _SeparateFeatureDiscriminators:
    def feature_discriminators(
        self, au_free: torch.Tensor, au_related: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Du(f_f), Dd(f_r)), one call each (the library runs them side by side)."""
        return self.au_discriminator(au_free), self.identity_discriminator(au_related)


class ReferenceStage1Module(_SeparateFeatureDiscriminators, Stage1Module):
    """`Stage1Module` with Du and Dd one call each and torch's default Adam."""

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        opt = default_adam(config["optimizer"])
        config["optimizer"] = opt
        config["lr_scheduler"]["scheduler"] = _same_schedule(config["lr_scheduler"]["scheduler"], opt)
        return config


class ReferenceStage2Module(_SeparateFeatureDiscriminators, Stage2Module):
    """`Stage2Module` with each side and each generated image set through its own passes, each
    discriminator input through its own call, Du and Dd one call each and torch's default Adam."""

    def _rounds(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`Stage2Module._rounds` with each side and each generated image set through its own passes of E,
        Ef, Er and G, as Fig. 1(a) draws them (4 passes of E/Ef/Er and 6 of G, not 2 and 2)."""
        a, b = x.chunk(2)
        base = self.arch.generator_needs_base

        def G(fr: torch.Tensor, ff: torch.Tensor, image: torch.Tensor, feat: torch.Tensor):
            return self.generator.forward_with_maps(fr, ff, image if base else None, feat if base else None)

        feat_a, ff_a, fr_a, au_a = self._encode(a, first_round=True)
        feat_b, ff_b, fr_b, au_b = self._encode(b, first_round=True)
        (swap_a, m1), (swap_b, m2) = G(fr_b, ff_a, a, feat_a), G(fr_a, ff_b, b, feat_b)
        (recon_a, m3), (recon_b, m4) = G(fr_a, ff_a, a, feat_a), G(fr_b, ff_b, b, feat_b)
        feat2_a, ff2_a, fr2_a, au2_a = self._encode(swap_a, first_round=False)
        feat2_b, ff2_b, fr2_b, au2_b = self._encode(swap_b, first_round=False)
        (cycle_a, m5), (cycle_b, m6) = G(fr2_b, ff2_a, swap_a, feat2_a), G(fr2_a, ff2_b, swap_b, feat2_b)
        out = {
            "au_free": torch.cat([ff_a, ff_b]),
            "au_related": torch.cat([fr_a, fr_b]),
            "au_pred": torch.cat([au_a, au_b]),
            "swapped": torch.cat([swap_a, swap_b]),
            "self_recon": torch.cat([recon_a, recon_b]),
            "feature2": torch.cat([feat2_a, feat2_b]),
            "au_pred2": torch.cat([au2_a, au2_b]),
            "cycle": torch.cat([cycle_a, cycle_b]),
        }
        for key in m1:
            out[key] = torch.cat([m[key] for m in (m1, m2, m3, m4, m5, m6)])
        return out

    def _discriminate(self, discriminator: nn.Module, *images: torch.Tensor) -> torch.Tensor:
        """Scores of stacked [A; B] image batches, concatenated: one call per side of each."""
        return torch.cat([discriminator(side) for batch in images for side in batch.chunk(2)])

    def configure_optimizers(self) -> Any:
        optimizers, schedulers = super().configure_optimizers()
        optimizers = [default_adam(opt) for opt in optimizers]
        return optimizers, [_same_schedule(s, opt) for s, opt in zip(schedulers, optimizers)]


REFERENCE_MODULES = {Stage1Module: ReferenceStage1Module, Stage2Module: ReferenceStage2Module}


def reference_form(module: Stage1Module | Stage2Module) -> Stage1Module | Stage2Module:
    """A built stage module in its reference form, in place: its class the reference subclass (per-side
    passes, separate discriminator calls, default Adam) and its layers `reference_layers`. Returns
    ``module``. Call it before ``configure_optimizers``."""
    if type(module) in REFERENCE_MODULES.values():
        return reference_layers(module)
    if type(module) not in REFERENCE_MODULES:
        raise TypeError(f"no reference form for {type(module).__name__}")
    module.__class__ = REFERENCE_MODULES[type(module)]
    return reference_layers(module)
