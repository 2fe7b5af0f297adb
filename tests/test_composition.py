"""The options that make G edit its input instead of redrawing it: composition with a mask, a warp of the
input and both (``arch.generator_output``: composite, warp, warp_composite, with ``generator_warp_gate``),
E's feature of the input inside G (``arch.generator_skip``), the mask and flow losses; through `eet-fit`,
`EETModel` and checkpoints written before these options existed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from eet_lightning import EETModel
from eet_lightning import losses as L
from eet_lightning.cli.fit import main
from eet_lightning.nets import ArchConfig, FeatureEncoder, Generator
from eet_lightning.nets.modules import FLOW_RANGE, warp
from eet_lightning.stage2 import Stage2Module
from stage2_step import stage2_inputs, stage2_step

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from reference_forms import reference_form  # noqa: E402

ARCH = dict(image_size=64, width=0.125, encoder_width=0.25, num_identities=5, num_poses=3)


def _inputs(arch: ArchConfig, batch: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    c = arch.ch(1024)
    fr, ff = torch.randn(batch, c, 4, 4, generator=gen), torch.randn(batch, c, 4, 4, generator=gen)
    base = torch.rand(batch, 3, 64, 64, generator=gen) * 2 - 1
    with torch.no_grad():
        feat = FeatureEncoder(arch).eval()(base)
    return fr, ff, base, feat


@pytest.mark.parametrize("skip", [False, True])
def test_composing_generator_shapes_gradients_and_mask_range(skip: bool) -> None:
    arch = ArchConfig(**ARCH, generator_output="composite", generator_skip=skip)
    g = Generator(arch).eval()  # eval: spectral norm's power iteration does not move between calls
    fr, ff, base, feat = _inputs(arch)
    feat.requires_grad_(True)
    out, maps = g.forward_with_maps(fr, ff, base, feat)
    mask = maps["mask"]
    assert out.shape == base.shape and mask.shape == (3, 1, 64, 64)
    assert 0 <= float(mask.detach().min()) and float(mask.detach().max()) <= 1
    assert out.abs().max() <= 1  # a convex mix of tanh colours and a base in [-1, 1]
    torch.testing.assert_close(g(fr, ff, base, feat), out)
    (out.square().mean() + mask.mean()).backward()
    assert g.to_rgb.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in g.parameters())
    assert (feat.grad is not None and feat.grad.abs().sum() > 0) == skip  # the skip reaches G's output


def test_zero_mask_returns_the_base_exactly_and_a_full_mask_gives_the_colour() -> None:
    arch = ArchConfig(**ARCH, generator_output="composite", generator_skip=True)
    g = Generator(arch).eval()
    fr, ff, base, feat = _inputs(arch)
    with torch.no_grad():
        g.to_rgb.weight[:, 3].zero_()  # deconvolution weight [in, out, 1, 1]: channel 3 is the mask
        g.to_rgb.bias[3] = -1e4
        out, maps = g.forward_with_maps(fr, ff, base, feat)
        mask = maps["mask"]
        assert torch.equal(mask, torch.zeros_like(mask))
        assert torch.equal(out, base)
        g.to_rgb.bias[3] = 1e4
        full = g(fr, ff, base, feat)
        g.to_rgb.bias[3] = -1e4
        colour = torch.tanh(g.to_rgb(_last_activations(g, fr, ff, feat))[:, :3])
    torch.testing.assert_close(full, colour)


def _last_activations(g: Generator, fr: torch.Tensor, ff: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    x = torch.cat([fr, ff], 1)
    for i, block in enumerate(g.blocks):
        x = block(x)
        if i == g.skip_after:
            x = torch.cat([x, feat], 1)
    return x


def test_warp_moves_pixels_and_a_zero_flow_keeps_them() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(warp(x, torch.zeros(2, 2, 8, 8)), x)
    flow = torch.zeros(2, 2, 8, 8)
    flow[:, 0] = 2 / 8  # one pixel to the right in [-1, 1] units: each pixel shows its right neighbour
    torch.testing.assert_close(warp(x, flow)[..., :-1], x[..., 1:])
    torch.testing.assert_close(warp(x, flow)[..., -1], x[..., -1])  # the border repeats
    flow[:, 0] = 1 / 8  # half a pixel: the mean of the two neighbours
    torch.testing.assert_close(warp(x, flow)[..., :-1], (x[..., 1:] + x[..., :-1]) / 2)


def test_gated_warp_keeps_the_base_where_the_gate_is_closed() -> None:
    arch = ArchConfig(
        **ARCH, generator_output="warp_composite", generator_skip=True, generator_warp_gate=True
    )
    g = Generator(arch).eval()
    fr, ff, base, feat = _inputs(arch)
    with torch.no_grad():
        g.to_rgb.bias[3] = -1e4  # mask shut: the output is the (gated) moved base
        g.to_rgb.weight[:, 4].zero_()
        g.to_rgb.bias[4] = -1e4  # gate shut too: the base itself, however G's flow moves
        g.to_flow.bias.fill_(0.5)
        out, maps = g.forward_with_maps(fr, ff, base, feat)
        assert set(maps) == {"flow", "gate", "mask"} and float(maps["flow"].abs().min()) > 0
        assert torch.equal(out, base)
        g.to_rgb.bias[4] = 1e4  # gate open: the warped base
        out = g(fr, ff, base, feat)
        flow = g.forward_with_maps(fr, ff, base, feat)[1]["flow"]
    torch.testing.assert_close(out, warp(base, flow))


def test_warping_generator_starts_near_the_base_and_its_flow_learns() -> None:
    arch = ArchConfig(**ARCH, generator_output="warp", generator_skip=True, generator_flow_scale=4)
    torch.manual_seed(0)
    g = Generator(arch).eval()
    fr, ff, base, feat = _inputs(arch)
    out, maps = g.forward_with_maps(fr, ff, base, feat)
    assert set(maps) == {"flow"} and maps["flow"].shape == (3, 2, 64, 64)
    assert float(maps["flow"].detach().abs().max()) < 0.2 * FLOW_RANGE  # a small flow to start from
    assert not hasattr(g, "to_rgb") and len(g.blocks) == 2  # a warp at S/4 needs G up to 16 x 16 only
    out.square().mean().backward()
    assert g.to_flow.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="flow scale <= 4"):
        Generator(ArchConfig(**ARCH, generator_output="warp", generator_skip=True, generator_flow_scale=8))


def test_generator_refuses_a_missing_base() -> None:
    fr, ff, base, feat = _inputs(ArchConfig(**ARCH))
    with pytest.raises(ValueError, match="needs the base image"):
        Generator(ArchConfig(**ARCH, generator_output="composite"))(fr, ff)
    with pytest.raises(ValueError, match="E's feature of the base image"):
        Generator(ArchConfig(**ARCH, generator_skip=True))(fr, ff, base)
    plain = Generator(ArchConfig(**ARCH))
    out, maps = plain.forward_with_maps(fr, ff)
    assert maps == {} and out.shape == base.shape
    with pytest.raises(ValueError, match="generator_output"):
        ArchConfig(**ARCH, generator_output="mask")


def test_mask_losses_known_answers() -> None:
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :, 2:] = 1.0  # one vertical edge
    assert float(L.mask_size_loss(mask)) == pytest.approx(0.5)
    # rows do not change; across columns one of 3 neighbour pairs per row jumps by 1
    assert float(L.total_variation_loss(mask)) == pytest.approx(1 / 3)
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2
    assert float(L.total_variation_loss(checker.float()[None, None])) == pytest.approx(2.0)
    assert float(L.total_variation_loss(torch.full((1, 1, 5, 5), 0.3))) == 0.0
    flow = torch.zeros(2, 2, 4, 4)
    flow[:, 0], flow[:, 1] = 0.3, 0.4  # every pixel moved by 0.5
    flow[1] = 0.0
    assert float(L.flow_size_loss(flow)) == pytest.approx(0.25, abs=1e-5)
    assert float(L.flow_size_loss(torch.zeros(1, 2, 3, 3))) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="2 channels"):
        L.flow_size_loss(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="mask must have shape"):
        L.mask_size_loss(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="at least 2 x 2"):
        L.total_variation_loss(torch.zeros(1, 1, 1, 4))


def _stage2(output: str = "composite") -> Stage2Module:
    arch = dict(ARCH, generator_output=output, generator_skip=True, generator_warp_gate=True)
    torch.manual_seed(0)
    return Stage2Module(arch=arch, train_au_encoder_on_generated=False)


def test_stage2_step_with_composition_trains_the_mask() -> None:
    m = _stage2()
    losses, gen, disc = stage2_step(m, stage2_inputs())
    assert {"L_mask", "L_mask_tv"} <= losses.keys()
    w = m.weights
    expected = (
        losses["L_u"]
        + w.lambda_u_swap * losses["L_u_swap"]
        + w.lambda_c * losses["L_c"]
        + w.lambda_r * losses["L_r"]
        + w.lambda_adg * losses["L_adg"]
        + w.lambda_adu * losses["L_u_E"]
        + w.lambda_add * losses["L_d_E"]
        + w.lambda_sc * losses["L_sc"]
        + w.lambda_mask * losses["L_mask"]
        + w.lambda_mask_tv * losses["L_mask_tv"]
    )
    torch.testing.assert_close(losses["total_g"], expected)
    assert gen["generator.to_rgb.weight"][:, 3].abs().sum() > 0  # the mask channel learns
    r = m._rounds(stage2_inputs()["image"])
    assert (
        r["mask"].shape == (12, 1, 64, 64) and "flow" not in r
    )  # swaps, self-reconstructions, cross-cycles of 4 images
    rows = m.log_images({"a": _side(0), "b": _side(1)})
    assert rows["swap_mask"].shape == (4, 3, 64, 64)


def test_stage2_step_with_a_warping_generator_penalizes_its_flow() -> None:
    arch = dict(ARCH, generator_output="warp_composite", generator_skip=True)
    torch.manual_seed(0)
    m = Stage2Module(arch=arch, loss_weights={"lambda_flow": 10.0}, train_au_encoder_on_generated=False)
    losses, gen, _ = stage2_step(m, stage2_inputs())
    assert {"L_mask", "L_mask_tv", "L_flow"} <= losses.keys() and float(losses["L_flow"]) > 0
    assert gen["generator.to_flow.weight"].abs().sum() > 0
    m0 = Stage2Module(arch=arch, loss_weights={"lambda_flow": 0.0}, train_au_encoder_on_generated=False)
    m0.load_state_dict(m.state_dict())
    losses0, _, _ = stage2_step(m0, stage2_inputs())
    # the same networks and inputs: the totals differ by the weighted flow term alone
    torch.testing.assert_close(
        losses["total_g"] - losses0["total_g"], 10.0 * losses["L_flow"], atol=1e-3, rtol=1e-3
    )
    rows = m.eval().log_images({"a": _side(0), "b": _side(1)})
    assert rows["swap_motion"].shape == (4, 3, 64, 64) and rows["swap_mask"].shape == (4, 3, 64, 64)


def _side(seed: int) -> dict[str, torch.Tensor]:
    x = stage2_inputs(batch=2, seed=seed)
    return {"image": x["image"], "aus": x["aus"], "identity": x["identity"], "pose": x["pose"]}


@pytest.mark.parametrize("output", ["composite", "warp_composite"])
def test_reference_and_batched_passes_agree_with_an_editing_generator(output: str) -> None:
    """The same losses and G's gradients from the per-side passes (benchmarks/reference_forms.py) and the
    batched ones (the encoders' PReLU slopes see inputs within rounding of their kink, so their gradients
    are compared in tests/test_equivalence.py on weights drawn away from it)."""
    results = []
    for reference in (True, False):
        m = _stage2(output).eval()
        if reference:
            reference_form(m)
        results.append(stage2_step(m, stage2_inputs()))
    (l0, g0, _), (l1, g1, _) = results
    assert {"L_mask", "L_mask_tv"} <= l0.keys()
    for key in l0:
        torch.testing.assert_close(l1[key], l0[key], atol=1e-4, rtol=1e-4)
    for key in (k for k in g0 if k.startswith("generator.") and not k.endswith("bias")):
        assert float((g1[key] - g0[key]).norm()) <= 1e-2 * float(g0[key].norm()) + 1e-6, key


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        ["--model.arch.generator_output", "composite"],
        ["--model.arch.generator_output", "warp_composite", "--model.arch.generator_warp_gate", "true"],
        ["--model.arch.generator_output", "warp"],
    ],
    ids=["composite", "warp_composite", "warp"],
)
def test_fit_with_an_editing_generator_and_the_model_it_writes(
    tiny_run: Path, tiny_config: Path, tmp_path: Path, options: list[str]
) -> None:
    run = tmp_path / "edit"
    args = ["--config", str(tiny_config), "--run_dir", str(run), "--stage", "2"]
    args += ["--stage2.stage1_ckpt", str(tiny_run / "stage1" / "last.ckpt")]
    args += ["--model.arch.generator_skip", "true", "--model.loss_weights.lambda_mask", "0.2", *options]
    assert main(args) == 0
    mode = options[1]
    metrics = (run / "logs" / "stage2" / "version_0" / "metrics.csv").read_text()
    assert ("train/L_mask" in metrics and "train/L_mask_tv" in metrics) == (mode != "warp")
    plain = EETModel.load_from_checkpoint(run / "stage2" / "last.ckpt", fuse=False)
    fused = EETModel.load_from_checkpoint(run / "stage2" / "last.ckpt")
    assert fused.needs_base and fused.arch.generator_output == mode
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    sa, sb = fused.transfer(a, b)
    pa, pb = plain.transfer(a, b)
    torch.testing.assert_close(sa, pa, atol=1e-4, rtol=1e-4)
    fr, ff = fused.encode(torch.cat([a, b]))
    torch.testing.assert_close(fused.decode(fr[2:], ff[:2], a), sa, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="pass base="):
        fused.decode(fr[2:], ff[:2])
    maps_a, maps_b = fused.transfer_maps(a, b)
    expected = {"composite": {"mask"}, "warp_composite": {"mask", "flow", "gate"}, "warp": {"flow"}}
    assert set(maps_a) == expected[mode]
    if "flow" in maps_a:
        assert maps_a["flow"].shape == (2, 2, 64, 64) and float(maps_a["flow"].abs().max()) <= FLOW_RANGE
    if mode == "composite":
        mask = maps_a["mask"]
        assert mask.shape == (2, 1, 64, 64) and 0 <= float(mask.min()) <= float(mask.max()) <= 1
        # where the mask is 0 the output is the input: out - a == mask * (colour - a)
        assert torch.all((sa - a).abs() <= 2 * mask + 1e-5)
    if mode == "warp":  # the output is A's own pixels moved: A warped by the flow G gave
        torch.testing.assert_close(sa, warp(a, maps_a["flow"]), atol=1e-5, rtol=1e-4)
    uint8 = (a[:1] + 1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()  # other input kinds too
    maps_u, _ = fused.transfer_maps(uint8, b[:1])
    assert all(v.shape[0] == 1 and v.is_floating_point() for v in maps_u.values())


def test_models_without_a_composing_generator_refuse_masks_and_old_checkpoints_load(
    tiny_run: Path, tmp_path: Path
) -> None:
    """A checkpoint written before these options existed (no generator_output, generator_skip, lambda_mask
    in its hyper-parameters) loads as the image-drawing G of Table I and swaps as before."""
    ckpt = torch.load(tiny_run / "stage2" / "last.ckpt", map_location="cpu", weights_only=False)
    for key in ("generator_output", "generator_skip", "generator_warp_gate", "generator_flow_scale"):
        ckpt["hyper_parameters"]["arch"].pop(key)
    for key in ("lambda_mask", "lambda_mask_tv", "lambda_flow"):
        ckpt["hyper_parameters"]["loss_weights"].pop(key)
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    then, now = (
        EETModel.load_from_checkpoint(old),
        EETModel.load_from_checkpoint(tiny_run / "stage2" / "last.ckpt"),
    )
    assert not then.needs_base and then.arch.generator_output == "image"
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(then.transfer(a, b)[0], now.transfer(a, b)[0])
    with pytest.raises(ValueError, match="only a G that edits its input"):
        then.transfer_maps(a, b)
    module = Stage2Module(**{k: v for k, v in ckpt["hyper_parameters"].items() if k != "stage1_ckpt"})
    module.load_state_dict(ckpt["state_dict"])  # resuming an old run builds the same networks
