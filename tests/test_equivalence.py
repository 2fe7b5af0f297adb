"""Faster forms compute what the straightforward forms compute: the inference forms of `nets/fuse.py`,
and the batched passes of a training step against one image at a time. The straightforward training
forms the library no longer carries (per-side passes, separate discriminator calls, default Adam, aten's
PReLU backward, spectral norm on the weight) are benchmarks/reference_forms.py's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from eet_lightning.model import EETModel
from eet_lightning.nets import ArchConfig, AUFreeEncoder, AURelatedEncoder, FeatureEncoder, Generator
from eet_lightning.nets.fuse import (
    fold_batch_norm,
    fold_spectral_norm,
    fuse_for_inference,
)
from eet_lightning.nets.kernels.spectral_norm import SNConv2d, SNConvTranspose2d, SpectralNormMixin
from eet_lightning.stage2 import Stage2Module
from stage2_step import assert_stage2_results_close, stage2_inputs, stage2_step

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from reference_forms import (  # noqa: E402
    REFERENCE_MODULES,
    UnscaledSpectralNorm,
    aten_prelu,
    reference_form,
    unscaled_spectral_norm,
)

TOL = dict(rtol=1e-4, atol=1e-5)
# a whole generator output after several renormalizations: float rounding reaches ~1e-5
MODEL_TOL = dict(rtol=1e-4, atol=5e-5)


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial norm statistics, affine parameters and PReLU slopes, so that folding has work to do."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)
            if isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5)
    return module


def _count(module: nn.Module, kind: type | tuple[type, ...]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("norm", ["in", "bn"])
def test_folded_spectral_norm_matches_parametrized(norm: str) -> None:
    arch = ArchConfig(image_size=64, width=0.125, translation_norm=norm)
    torch.manual_seed(0)
    g = _randomize(Generator(arch)).eval()
    fr, ff = torch.randn(3, 128, 4, 4), torch.randn(3, 128, 4, 4)
    before = g(fr, ff)
    fold_spectral_norm(g)
    assert _count(g, (SNConv2d, SNConvTranspose2d)) == 0
    torch.testing.assert_close(g(fr, ff), before, **TOL)


def test_folded_batch_norm_matches_eval_batch_norm() -> None:
    arch = ArchConfig(
        image_size=64, width=0.125, encoder_width=0.5, translation_norm="bn", spectral_norm=False
    )
    torch.manual_seed(0)
    e, g = _randomize(FeatureEncoder(arch)).eval(), _randomize(Generator(arch), 1).eval()
    x, fr, ff = torch.randn(2, 3, 64, 64), torch.randn(2, 128, 4, 4), torch.randn(2, 128, 4, 4)
    e_before, g_before = e(x), g(fr, ff)
    fold_batch_norm(e)
    fold_batch_norm(g)  # includes the BN after the residual sum of every UpRes block
    assert _count(e, nn.BatchNorm2d) == 0 and _count(g, nn.BatchNorm2d) == 0
    torch.testing.assert_close(e(x), e_before, **TOL)
    torch.testing.assert_close(g(fr, ff), g_before, **TOL)


def test_fold_batch_norm_refuses_training_mode() -> None:
    e = FeatureEncoder(ArchConfig(image_size=64, width=0.125))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(e.train())


def _er_pair(norm: str, sn: bool) -> tuple[AURelatedEncoder, AURelatedEncoder]:
    arch = ArchConfig(image_size=128, width=0.125, translation_norm=norm, au_encoder_spectral_norm=sn)
    torch.manual_seed(0)
    looped = _randomize(AURelatedEncoder(arch, grouped=False))
    grouped = AURelatedEncoder(arch, grouped=True)
    grouped.load_state_dict(looped.state_dict())  # one state dict for both forms
    # Spectral norm by the normalized weight in both forms (the side-by-side form always uses it): the
    # output-scaled form rounds differently, and a 1e-7 change flips PReLU's kink for an element or two,
    # which batch norm's backward spreads over the channel. Output scaling has its own tests below.
    unscaled_spectral_norm(looped)
    return looped, grouped


@pytest.mark.parametrize("norm,sn", [("in", True), ("bn", False), ("bn", True)])
def test_side_by_side_branches_train_like_the_per_branch_loop(norm: str, sn: bool) -> None:
    """Er's m branches as one convolution per level: the same features, AUs, gradients, batch-norm
    statistics and spectral-norm vectors as running the branches one after the other."""
    looped, grouped = _er_pair(norm, sn)
    feature = torch.randn(4, looped.branches[0][0][0].in_channels, 32, 32)
    outs = {}
    for name, er in (("looped", looped), ("grouped", grouped)):
        er.train()
        x = feature.clone().requires_grad_()
        feats, aus = er.forward_branches(x)
        (feats.square().mean() + aus.sum()).backward()
        outs[name] = (feats, aus, x.grad, {n: p.grad for n, p in er.named_parameters()}, er.state_dict())
    (f1, a1, g1, p1, s1), (f2, a2, g2, p2, s2) = outs["looped"], outs["grouped"]
    torch.testing.assert_close(f2, f1, **TOL)
    torch.testing.assert_close(a2, a1, **TOL)
    torch.testing.assert_close(g2, g1, **TOL)
    assert p1.keys() == p2.keys()
    for name in p1:
        torch.testing.assert_close(p2[name], p1[name], **TOL, msg=name)
    for name in s1:  # running statistics, num_batches_tracked, spectral-norm vectors
        torch.testing.assert_close(s2[name], s1[name], **TOL, msg=name)
    # eval mode too, with the running statistics just updated
    looped.eval(), grouped.eval()
    with torch.no_grad():
        torch.testing.assert_close(grouped(feature)[0], looped(feature)[0], **TOL)


@pytest.mark.parametrize("channels_last", [False, True])
def test_feature_discriminators_side_by_side_train_like_separate_calls(channels_last: bool) -> None:
    """Du and Dd with their layers side by side (one grouped convolution per level): the same scores,
    input and parameter gradients and spectral-norm vectors as one call of each, over two training
    steps (each step's power iteration moves the vectors) and in eval mode."""
    from eet_lightning.nets.modules import FeatureDiscriminator

    arch = ArchConfig(image_size=64, width=0.125, num_identities=5)
    torch.manual_seed(0)
    pairs = []
    for _ in range(2):  # separate, side by side: the same weights
        du, dd = FeatureDiscriminator(arch, 36), FeatureDiscriminator(arch, arch.num_identities)
        pairs.append((du, dd))
    _randomize(pairs[0][0]), _randomize(pairs[0][1])
    for ours, theirs in zip(pairs[1], pairs[0]):
        ours.load_state_dict(theirs.state_dict())
        for module in (ours, theirs):  # the side-by-side form normalizes the weight; so does this one
            unscaled_spectral_norm(module)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    for module in (*pairs[0], *pairs[1]):
        module.to(memory_format=memory).train()
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        channels = pairs[0][0].layers[0][0].in_channels
        feats = [torch.randn(4, channels, 4, 4, generator=gen).to(memory_format=memory) for _ in range(2)]
        results = []
        for side_by_side, (du, dd) in zip((False, True), pairs):
            xs = [f.clone().requires_grad_() for f in feats]
            if side_by_side:
                scores = FeatureDiscriminator.side_by_side([du, dd], xs)
            else:
                scores = [du(xs[0]), dd(xs[1])]
            (scores[0].square().mean() + scores[1].sin().sum()).backward()
            grads = {
                f"{i}.{n}": p.grad.clone() for i, d in enumerate((du, dd)) for n, p in d.named_parameters()
            }
            for d in (du, dd):
                d.zero_grad()
            state = {f"{i}.{k}": v for i, d in enumerate((du, dd)) for k, v in d.state_dict().items()}
            results.append((scores, [x.grad for x in xs], grads, state))
        (s1, x1, g1, st1), (s2, x2, g2, st2) = results
        for a, b in zip(s2 + x2, s1 + x1):
            torch.testing.assert_close(a, b, **TOL)
        assert g1.keys() == g2.keys() and st1.keys() == st2.keys()
        for name in g1:
            torch.testing.assert_close(g2[name], g1[name], **TOL, msg=name)
        for name in st1:  # the power iteration ran once per layer in both forms
            torch.testing.assert_close(st2[name], st1[name], **TOL, msg=name)
    for module in (*pairs[0], *pairs[1]):
        module.eval()
    with torch.no_grad():
        got = FeatureDiscriminator.side_by_side(list(pairs[1]), feats)
        torch.testing.assert_close(got[0], pairs[0][0](feats[0]), **TOL)
        torch.testing.assert_close(got[1], pairs[0][1](feats[1]), **TOL)


def test_side_by_side_branches_after_folding() -> None:
    """The inference form (spectral and batch norm folded) still runs Er's branches side by side."""
    looped, grouped = _er_pair("bn", True)
    looped.eval(), grouped.eval()
    feature = torch.randn(2, looped.branches[0][0][0].in_channels, 32, 32)
    with torch.no_grad():
        want = looped.forward_branches(feature)
        fuse_for_inference(grouped)
        assert _count(grouped, (SNConv2d, nn.BatchNorm2d)) == 0
        for got, ref in zip(grouped.forward_branches(feature), want):
            torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("norm", ["in", "bn"])
def test_fused_model_transfers_like_the_training_form(norm: str) -> None:
    """Everything at once, through the user's API: transfer, selective transfer, AUs, reconstruction."""
    # the BN case also runs Er's branches side by side (the quick start's setting)
    arch = ArchConfig(
        image_size=64, width=0.125, encoder_width=0.25, translation_norm=norm, grouped_au_encoder=norm == "bn"
    )
    torch.manual_seed(0)
    plain = _randomize(EETModel(arch)).eval()
    fused = EETModel(arch).eval()
    fused.load_state_dict(plain.state_dict())
    fused.fuse()
    assert _count(fused, (SNConv2d, SNConvTranspose2d, nn.BatchNorm2d)) == 0
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    for got, want in zip(fused.transfer(a, b), plain.transfer(a, b)):
        torch.testing.assert_close(got, want, **MODEL_TOL)
    selective = dict(aus=[12, 25], strength=0.5)
    for got, want in zip(fused.transfer(a, b, **selective), plain.transfer(a, b, **selective)):
        torch.testing.assert_close(got, want, **MODEL_TOL)
    torch.testing.assert_close(fused.predict_aus(a), plain.predict_aus(a), **MODEL_TOL)
    torch.testing.assert_close(fused.reconstruct(a), plain.reconstruct(a), **MODEL_TOL)


def test_load_from_checkpoint_fuses_and_leaves_the_file_alone(tiny_run: Path) -> None:
    ckpt = tiny_run / "stage2" / "last.ckpt"
    before = ckpt.read_bytes()
    fused = EETModel.load_from_checkpoint(ckpt)
    plain = EETModel.load_from_checkpoint(ckpt, fuse=False)
    assert _count(fused, (SNConv2d, SNConvTranspose2d)) == 0 < _count(plain, (SNConv2d, SNConvTranspose2d))
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    for got, want in zip(fused.transfer(a, b), plain.transfer(a, b)):
        torch.testing.assert_close(got, want, **MODEL_TOL)
    assert ckpt.read_bytes() == before


def test_fuse_for_inference_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fuse_for_inference(AUFreeEncoder(ArchConfig(image_size=64, width=0.125)))


# --------------------------------------------------------------------------------------------------
# batched passes of a stage-2 step


def _eval_stage2() -> Stage2Module:
    """A stage-2 module with per-sample normalization only (IN; E's BN in eval mode), so that a batch of
    images is computed exactly as its images one at a time."""
    arch = ArchConfig(image_size=64, width=0.125, encoder_width=0.25, num_identities=5, num_poses=3)
    torch.manual_seed(0)
    return _randomize(Stage2Module(arch=arch)).eval()


def test_stacked_rounds_match_one_image_at_a_time() -> None:
    """Both images of every pair, both swap directions and the self-reconstructions go through E, Ef, Er
    and G as one batch in `Stage2Module._rounds`; here they are recomputed pair by pair, image by image."""
    m = _eval_stage2()
    a, b = torch.rand(3, 3, 64, 64) * 2 - 1, torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        r = m._rounds(torch.cat([a, b]))

        def parts(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = m.encoder(img[None])
            return m.au_free_encoder(f), m.au_related_encoder(f)[0]

        for i in range(3):
            ff_a, fr_a = parts(a[i])
            ff_b, fr_b = parts(b[i])
            swap_a, swap_b = m.generator(fr_b, ff_a), m.generator(fr_a, ff_b)
            ff2_a, fr2_a = parts(swap_a[0])
            ff2_b, fr2_b = parts(swap_b[0])
            want = {
                "swapped": (swap_a, swap_b),
                "self_recon": (m.generator(fr_a, ff_a), m.generator(fr_b, ff_b)),
                "cycle": (m.generator(fr2_b, ff2_a), m.generator(fr2_a, ff2_b)),
            }
            for key, (want_a, want_b) in want.items():
                got_a, got_b = r[key].chunk(2)
                torch.testing.assert_close(got_a[i : i + 1], want_a, **MODEL_TOL)
                torch.testing.assert_close(got_b[i : i + 1], want_b, **MODEL_TOL)


def test_discriminator_shared_call_matches_separate_calls() -> None:
    """Real and generated images share one call of Dg (and Dsc) in the discriminator step."""
    m = _eval_stage2()
    real, fake = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        for d in (m.image_discriminator, m.swap_discriminator):
            together = d(torch.cat([real, fake]))
            torch.testing.assert_close(together, torch.cat([d(real), d(fake)]), **TOL)


# --------------------------------------------------------------------------------------------------
# spectral norm's own backward, whole-kernel convolutions, reference vs batched stage-2 passes


def _explicit_spectral_norm(weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int, update: bool):
    """Spectral norm as autograd would differentiate it when written out (torch's formulation)."""
    mat = (weight.transpose(0, dim) if dim else weight).flatten(1)
    if update:
        with torch.no_grad():
            v = nn.functional.normalize(mat.t() @ u, dim=0, eps=1e-12)
            u = nn.functional.normalize(mat @ v, dim=0, eps=1e-12)
    return weight / torch.dot(u, mat @ v), u, v


@pytest.mark.parametrize("kind", [SNConv2d, SNConvTranspose2d])
@pytest.mark.parametrize("channels_last", [False, True])
def test_spectral_norm_backward_matches_autograd(kind: type, channels_last: bool) -> None:
    """`SpectralNormalize` (power iteration, W / sigma, and its hand-written two-pass gradient) against
    the written-out formula through autograd: outputs, weight gradients and the updated vectors, over
    several training steps and in eval mode, for convolutions (rows along dim 0) and transposed ones
    (dim 1), contiguous and channels-last weights."""
    torch.manual_seed(0)
    layer = kind(6, 5, 3, 2, 1)
    dim = 1 if kind is SNConvTranspose2d else 0
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
    weight = layer.weight.detach().clone().requires_grad_()
    u, v = layer.sn_u.clone(), layer.sn_v.clone()
    for training in (True, True, True, False):
        layer.train(training)
        grad_out = torch.randn(layer.weight.shape)
        ours = layer.normalized_weight()
        (got,) = torch.autograd.grad(ours, layer.weight, grad_out)
        want, u, v = _explicit_spectral_norm(weight, u, v, dim, training)
        (expected,) = torch.autograd.grad(want, weight, grad_out)
        torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.sn_u, u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.sn_v, v, rtol=1e-5, atol=1e-6)
        with torch.no_grad():  # a new weight each step, as training would make
            layer.weight.add_(torch.randn(layer.weight.shape) * 0.05)
            weight.copy_(layer.weight)


@pytest.mark.parametrize("sn", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_whole_kernel_convolution_is_a_matrix_product(sn: bool, channels_last: bool) -> None:
    """The 4x4 -> 1x1 and 1x1 -> 1x1 layers ending Dsc/Dg run as one matrix product: the same outputs and
    gradients as the convolution."""
    from eet_lightning.nets.blocks import conv

    torch.manual_seed(0)
    for k, stride, size in ((4, 2, 4), (1, 1, 1)):
        layer = conv(12, 7, k, stride, 0, sn).eval()
        x = torch.randn(3, 12, size, size)
        if channels_last:
            layer = layer.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        out = layer(x)
        weight = layer.normalized_weight() if sn else layer.weight
        want = nn.functional.conv2d(x, weight, layer.bias, stride)
        torch.testing.assert_close(out, want, **TOL)
        grad = torch.randn(want.shape)
        got = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
        expected = torch.autograd.grad(want, (x, layer.weight, layer.bias), grad)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, **TOL)


def test_reference_stage2_passes_give_the_same_losses_and_gradients() -> None:
    """The reference form of a stage-2 step (each side through its own passes of E, Ef, Er and G, each
    discriminator input through its own call, aten's PReLU backward, spectral norm on the weight) and the
    library's batched one: the same losses and the same gradients for the generator step and the
    discriminator step (eval mode, so that spectral norm's power iteration, which runs once per call, does
    not run more often in one form than in the other)."""
    results = []
    for reference in (True, False):
        m = _eval_stage2()
        if reference:
            reference_form(m)
        results.append(stage2_step(m, stage2_inputs()))
    losses, gen, disc = results[0]
    assert {"L_adg", "L_sc", "D_g", "D_sc"} <= losses.keys()
    assert_stage2_results_close(results[1], results[0])
    assert any(k.startswith("generator.") for k in gen) and any(
        k.startswith("image_discriminator.") for k in disc
    )


@pytest.mark.parametrize("stage", [1, 2])
def test_fused_adam_steps_like_torch_default(stage: int) -> None:
    """Both stages' optimizers use torch's fused Adam; from the same gradients it moves every parameter as
    the reference form's default Adam does."""
    from types import SimpleNamespace

    from eet_lightning.stage1 import Stage1Module

    arch = ArchConfig(image_size=64, width=0.125, encoder_width=0.25, num_identities=5, num_poses=3)
    params = []
    for reference in (True, False):
        torch.manual_seed(0)
        m = (Stage1Module if stage == 1 else Stage2Module)(arch=arch)
        if reference:
            reference_form(m)
        m.trainer = SimpleNamespace(max_epochs=1)
        config = m.configure_optimizers()
        optimizers = [config["optimizer"]] if stage == 1 else config[0]
        assert all(bool(o.defaults["fused"]) != reference for o in optimizers)
        gen = torch.Generator().manual_seed(2)
        for _ in range(3):
            for o in optimizers:
                for group in o.param_groups:
                    for p in group["params"]:
                        p.grad = torch.randn(p.shape, generator=gen)
                o.step()
        params.append({k: p.detach().clone() for k, p in m.named_parameters()})
    moved = 0
    for key, value in params[0].items():
        torch.testing.assert_close(params[1][key], value, rtol=1e-6, atol=1e-7)
        moved += 0 if stage == 2 and key.startswith("encoder.") else 1
    assert moved > 0


@pytest.mark.parametrize(
    "kind,args,size",
    [
        (SNConv2d, (16, 12, 3, 2, 1), 6),  # 3x3 stride-2 convolution
        (SNConvTranspose2d, (16, 12, 3, 2, 1, 1), 3),  # UpRes's stride-2 deconvolution
        (SNConvTranspose2d, (16, 12, 3, 1, 1, 0), 3),  # and its stride-1 one
        (SNConv2d, (16, 12, 4, 2, 0), 4),  # whole kernel: the 4x4 -> 1x1 layer ending Dsc/Dg
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_output_scaled_spectral_norm_matches_autograd(
    kind: type, args: tuple, size: int, channels_last: bool
) -> None:
    """`SNConvolution`, ``conv(x, W) / sigma + b`` with its hand-written gradient, against
    ``conv(x, W / sigma) + b`` written out through autograd: outputs, input, weight and bias gradients
    and the updated vectors, over training steps and in eval mode."""
    from eet_lightning.nets.kernels.layout import output_numel
    from eet_lightning.nets.kernels.spectral_norm import SNConvolution

    torch.manual_seed(0)
    layer = kind(*args)
    dim = 1 if kind is SNConvTranspose2d else 0
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
    weight = layer.weight.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    u, v = layer.sn_u.clone(), layer.sn_v.clone()
    for training in (True, True, True, False):
        layer.train(training)
        x = torch.randn(2, 16, size, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        assert output_numel(layer, x) <= layer.weight.numel()  # the layer takes the output-scaled form
        out = layer(x)
        assert type(out.grad_fn).__name__ == f"{SNConvolution.__name__}Backward"
        normalized, u, v = _explicit_spectral_norm(weight, u, v, dim, training)
        if kind is SNConvTranspose2d:
            want = nn.functional.conv_transpose2d(
                x, normalized, bias, layer.stride, layer.padding, layer.output_padding
            )
        else:
            want = nn.functional.conv2d(x, normalized, bias, layer.stride, layer.padding)
        torch.testing.assert_close(out, want, **TOL)
        grad = torch.randn(want.shape)
        got = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
        expected = torch.autograd.grad(want, (x, weight, bias), grad)
        for name, g, e in zip(("input", "weight", "bias"), got, expected):
            torch.testing.assert_close(g, e, **TOL, msg=name)
        assert got[1].stride() == layer.weight.stride()  # the gradient in the weight's own layout
        torch.testing.assert_close(layer.sn_u, u, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(layer.sn_v, v, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            layer.weight.add_(torch.randn(layer.weight.shape) * 0.05)
            weight.copy_(layer.weight)


def test_output_scaled_spectral_norm_only_where_the_output_is_smaller() -> None:
    """Where the output outweighs the kernel (Table I's first levels at 256 px) the layer divides the
    weight instead; under bf16 autocast both forms give the same values to bf16 precision."""
    from eet_lightning.nets.kernels.spectral_norm import SNConvolution

    torch.manual_seed(0)
    layer = SNConv2d(3, 8, 3, 1, 1)
    out = layer(torch.randn(2, 3, 16, 16, requires_grad=True))
    assert type(out.grad_fn).__name__ != f"{SNConvolution.__name__}Backward"
    deep = SNConv2d(32, 32, 3, 1, 1).eval()
    x = torch.randn(2, 32, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scaled = deep(x)
        plain = unscaled_spectral_norm(deep)(x)
    assert scaled.dtype == plain.dtype == torch.bfloat16
    torch.testing.assert_close(scaled.float(), plain.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("layouts", [("c", "c"), ("l", "l"), ("c", "l"), ("l", "c")])
def test_prelu_backward_matches_aten(per_channel: bool, layouts: tuple[str, str]) -> None:
    """`PReLU`'s CPU backward (threshold, lerp and a sum instead of aten's scalar loop) gives aten's input
    and slope gradients, one slope or one per channel, for every mix of contiguous and channels-last
    input and incoming gradient; an input that is exactly 0 takes the negative side's slope, as aten's."""
    from eet_lightning.nets.kernels.prelu import PReLU

    torch.manual_seed(0)
    ours = PReLU(6 if per_channel else 1, init=0.3)
    with torch.no_grad():
        ours.weight.copy_(torch.rand(ours.weight.shape))
    plain = nn.PReLU(6 if per_channel else 1)
    plain.load_state_dict(ours.state_dict())

    def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if kind == "l" else t.contiguous()

    x = torch.randn(3, 6, 5, 7)
    x[0, 0, 0, :3] = 0.0
    x = layout(x, layouts[0]).requires_grad_()
    grad = layout(torch.randn(3, 6, 5, 7), layouts[1])
    out = ours(x)
    assert type(out.grad_fn).__name__ == "PReLUFunctionBackward"
    got = torch.autograd.grad(out, (x, ours.weight), grad)
    want_out = plain(x)
    expected = torch.autograd.grad(want_out, (x, plain.weight), grad)
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-5)
    # no gradient wanted: aten's forward alone; the reference form (torch's own layer) keeps aten's backward
    with torch.no_grad():
        assert ours(x).grad_fn is None
    assert type(aten_prelu(ours)(x).grad_fn).__name__ != "PReLUFunctionBackward"


def test_instance_norm_keeps_channels_last() -> None:
    """torch's instance norm returns contiguous tensors; ours hands a channels-last input's layout on (the
    same values and gradients), so the element-wise ops after it do not mix layouts."""
    from eet_lightning.nets.blocks import InstanceNorm2d

    torch.manual_seed(0)
    ours, plain = InstanceNorm2d(6, affine=True), nn.InstanceNorm2d(6, affine=True)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    out, want = ours(x), plain(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    grad = torch.randn(out.shape)
    torch.testing.assert_close(
        torch.autograd.grad(out, (x, ours.weight), grad), torch.autograd.grad(want, (x, plain.weight), grad)
    )
    assert ours(torch.randn(2, 6, 5, 5)).is_contiguous()  # a contiguous input stays contiguous


@pytest.mark.parametrize("stage", [1, 2])
def test_reference_form_reaches_every_layer(stage: int) -> None:
    """`reference_form` turns a stage module into its reference subclass, every PReLU into torch's own and
    every spectrally normalized layer onto the normalized weight, keeping the state dict; the library's
    modules carry no switch to the reference form."""
    from eet_lightning.nets.kernels.prelu import PReLU
    from eet_lightning.stage1 import Stage1Module

    kind = Stage1Module if stage == 1 else Stage2Module
    arch = ArchConfig(image_size=64, width=0.125, encoder_width=0.25, num_identities=5, num_poses=3)
    m = kind(arch=arch)
    assert not hasattr(m, "straightforward") and not hasattr(kind, "_rounds_per_side")
    prelus = [x for x in m.modules() if isinstance(x, PReLU)]
    sn = [x for x in m.modules() if isinstance(x, SpectralNormMixin)]
    assert prelus and sn and not any(isinstance(x, UnscaledSpectralNorm) for x in sn)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert reference_form(m) is m and type(m) is REFERENCE_MODULES[kind] and isinstance(m, kind)
    assert all(type(x) is nn.PReLU for x in prelus) and not any(isinstance(x, PReLU) for x in m.modules())
    assert all(isinstance(x, UnscaledSpectralNorm) for x in sn)
    assert m.state_dict().keys() == state.keys()
    assert all(torch.equal(m.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepacked_convolutions_compute_the_plain_ones(channels_last: bool) -> None:
    """`PrepackedWeight`: a prepacked (de)convolution gives the plain one's output (strided, grouped,
    transposed with output padding), follows in-place weight updates and new input shapes, stays out of
    the state dict, copies and pickles without its oneDNN copy, and leaves gradient and autocast calls,
    and calls whose output outweighs the weight, to the plain path."""
    import copy
    import pickle

    from eet_lightning.nets.kernels.prepack import Conv2d, ConvTranspose2d

    torch.manual_seed(0)
    layers = [  # deep-level shapes: the output is smaller than the weight
        (Conv2d(16, 24, 3, 2, 1), 4),
        (Conv2d(24, 48, 3, 1, 1, groups=3), 3),
        (ConvTranspose2d(16, 8, 3, 2, 1, 1), 2),
        (ConvTranspose2d(16, 8, 3, 1, 1, 0), 3),
    ]
    for layer, size in layers:
        layer.eval()
        plain = copy.deepcopy(layer)
        layer.prepacked = True
        for batch in (2, 3):  # a new input shape makes a new copy
            x = torch.randn(batch, layer.in_channels, size, size)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                torch.testing.assert_close(layer(x), plain(x), **TOL)
            assert "_packed_cache" in layer.__dict__
        with torch.no_grad():  # an in-place update (as load_state_dict does) is seen at the next call
            layer.weight.mul_(-2.0)
            plain.weight.mul_(-2.0)
            torch.testing.assert_close(layer(x), plain(x), **TOL)
        assert set(layer.state_dict()) == set(plain.state_dict())
        for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
            assert "_packed_cache" not in clone.__dict__
            with torch.no_grad():
                torch.testing.assert_close(clone(x), plain(x), **TOL)
        big = torch.randn(2, layer.in_channels, 32, 32)  # an output larger than the weight: plain path
        layer.__dict__.pop("_packed_cache")
        with torch.no_grad():
            torch.testing.assert_close(layer(big), plain(big), **TOL)
        assert "_packed_cache" not in layer.__dict__
        out = layer(x.clone().requires_grad_())  # gradients wanted: the plain convolution
        assert out.grad_fn is not None and "Convolution" in type(out.grad_fn).__name__
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x).dtype == torch.bfloat16


def test_fused_model_prepacks_every_convolution() -> None:
    """`fuse_for_inference` marks every convolution of the inference form prepacked (and nothing in a
    training module is)."""
    from eet_lightning.nets.kernels.prepack import PrepackedWeight

    arch = ArchConfig(image_size=64, width=0.125, encoder_width=0.25)
    torch.manual_seed(0)
    model = EETModel(arch).eval()
    assert not any(getattr(m, "prepacked", False) for m in model.modules())
    model.fuse()
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(isinstance(m, PrepackedWeight) and m.prepacked for m in convs)


def test_output_scaled_spectral_norm_trains_under_bf16_autocast() -> None:
    """Under bf16 autocast (the mixed-precision path) the output-scaled layer gives the normalized-weight
    layer's output and gradients to bf16 precision, in bf16 for the activations and fp32 for the
    parameters' gradients, and updates its vectors in fp32."""
    import copy

    torch.manual_seed(0)
    scaled = SNConv2d(32, 48, 3, 2, 1).train()
    plain = copy.deepcopy(scaled)
    unscaled_spectral_norm(plain)
    x = torch.randn(2, 32, 6, 6)
    results = []
    for layer in (scaled, plain):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(xi)
        assert out.dtype == torch.bfloat16
        grads = torch.autograd.grad(out.float().square().sum(), (xi, layer.weight, layer.bias))
        results.append((out.float().detach(), *grads))
    assert [g.dtype for g in results[0][1:]] == [torch.float32] * 3
    for got, want in zip(*results):
        assert float((got - want).norm()) <= 2e-2 * float(want.norm())
    assert scaled.sn_u.dtype == torch.float32
    torch.testing.assert_close(scaled.sn_u, plain.sn_u)
