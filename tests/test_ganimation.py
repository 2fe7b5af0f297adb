"""The GANimation baseline: its losses against hand-computed values, its networks, one training step through
Lightning, the checkpoint it writes as users load it, and the transfer identities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.methods import load_transfer_model
from eet_lightning.methods.gan_parts import gradient_penalty
from eet_lightning.methods.ganimation.model import GANimationCritic, GANimationGenerator, GANimationModel
from eet_lightning.methods.ganimation.training import (
    GANimation,
    au_condition_loss,
    cycle_loss,
    mask_size_loss,
    mask_smoothness_loss,
)

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(width=8, residual_blocks=1, critic_width=8)


def _data(**kw) -> SyntheticDataModule:
    args = dict(
        image_size=64,
        num_train_identities=4,
        num_test_identities=3,
        train_samples=16,
        val_pairs=4,
        batch_size=4,
        seed=0,
    )
    return SyntheticDataModule(**{**args, **kw})


def _images(n: int, seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------- losses


def test_losses_against_hand_computed_values() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 2.0], [3.0, 2.0]])
    # squared errors 1, 0, 0, 4 over 4 values
    assert au_condition_loss(pred, target).item() == pytest.approx(1.25)
    # absolute errors 1, 0, 0, 2 over 4 values
    assert cycle_loss(pred, target).item() == pytest.approx(0.75)
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])  # [2, 1, 2, 2]
    assert mask_size_loss(mask).item() == pytest.approx(3 / 8)
    # image 0: horizontal |1-0| + |1-1| = 1, vertical |1-0| + |1-1| = 1; image 1: 0; averaged over 2 images
    assert mask_smoothness_loss(mask).item() == pytest.approx(1.0)
    ramp = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 1, 2, 3)  # two rows 0 1 2: 4 steps of 1 across
    assert mask_smoothness_loss(ramp).item() == pytest.approx(4.0)


def test_gradient_penalty_of_a_linear_critic() -> None:
    # D(x) = sum(w * x) has gradient w everywhere: the penalty is (||w|| - 1)^2 = (2 - 1)^2
    class Linear(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            w = torch.full_like(x[0], 2.0 / x[0].numel() ** 0.5)
            return (x * w).flatten(1).sum(1), x.new_zeros(x.shape[0], 1)

    real, fake = _images(3, 0, 8), _images(3, 1, 8)
    assert gradient_penalty(Linear(), real, fake).item() == pytest.approx(1.0, abs=1e-5)


def test_weighted_totals_follow_the_hyper_parameters() -> None:
    torch.manual_seed(0)
    hp = dict(
        lambda_adv=2.0,
        lambda_cond=3.0,
        lambda_cyc=5.0,
        lambda_mask=7.0,
        lambda_mask_smooth=0.01,
        lambda_gp=11.0,
    )
    m = GANimation(image_size=64, **TINY, **hp)
    x, y = _images(4, 0), torch.rand(4, 12)
    desired = y.flip(0)
    fake, _ = m.generator(x, desired)
    c = m.critic_losses(x, y, fake)
    expected = 2.0 * c["C_wgan"] + 11.0 * c["C_gp"] + 3.0 * c["C_cond"]
    torch.testing.assert_close(c["total_c"], expected)
    g = m.generator_losses(x, y, desired)
    expected = (
        2.0 * g["G_adv"]
        + 3.0 * g["G_cond"]
        + 5.0 * g["G_cyc"]
        + 7.0 * g["G_mask"]
        + 0.01 * g["G_mask_smooth"]
    )
    torch.testing.assert_close(g["total_g"], expected)
    # the critic step reads AUs of real images only; the masks of forward and cycle both count
    torch.testing.assert_close(c["C_cond"], au_condition_loss(m.critic(x)[1], y))
    assert 0 < g["G_mask"].item() < 2


# ---------------------------------------------------------------------------------------------- networks


def test_generator_and_critic_shapes() -> None:
    g = GANimationGenerator(12, width=8, residual_blocks=1)
    x = _images(2, 0)
    out, mask = g(x, torch.rand(2, 12))
    assert out.shape == (2, 3, 64, 64) and mask.shape == (2, 1, 64, 64)
    assert out.abs().max() <= 1 and 0 <= mask.min() and mask.max() <= 1
    scores, aus = GANimationCritic(64, 12, width=8)(x)
    assert scores.shape == (2, 1, 2, 2) and aus.shape == (2, 12)  # 5 halvings at 64 px leave 2 x 2
    scores, aus = GANimationCritic(128, 17, width=4)(_images(1, 1, 128))
    assert scores.shape == (1, 1, 2, 2) and aus.shape == (1, 17)  # their 6 halvings at 128 px
    # their initialization: N(0, 0.02) convolution weights
    assert abs(g.trunk.body[0].weight.std().item() - 0.02) < 0.004


def test_mask_one_returns_the_input_exactly_and_zero_the_colour() -> None:
    g = GANimationGenerator(12, width=8, residual_blocks=1)
    c = g.trunk.out_channels
    x, cond = _images(2, 0), torch.rand(2, 12)
    for bias, expected in ((100.0, "input"), (-200.0, "colour")):
        head = nn.Conv2d(c, 1, 7, 1, 3, bias=True)
        nn.init.zeros_(head.weight)
        nn.init.constant_(head.bias, bias)
        g.attention[0] = head  # sigmoid(100) is 1.0 in float32, sigmoid(-200) is 0.0
        out, mask, colour = g.forward_with_colour(x, cond)
        if expected == "input":
            assert torch.equal(mask, torch.ones_like(mask)) and torch.equal(out, x)
        else:
            assert torch.equal(mask, torch.zeros_like(mask)) and torch.equal(out, colour)


def test_hyper_parameter_checks() -> None:
    for bad, match in (
        ({"n_critic": 0}, "n_critic"),
        ({"lambda_cyc": -1.0}, "lambda_cyc"),
        ({"lr": 0.0}, "lr"),
        ({"betas": [0.5, 1.0]}, "betas"),
        ({"critic_layers": 7}, "image_size"),
        ({"width": 1.5}, "width"),
    ):
        with pytest.raises(ValueError, match=match):
            GANimation.check_init_args({"image_size": 64, **bad}, "stage1")
        with pytest.raises(ValueError, match=match):
            GANimation(image_size=64, **{**TINY, **bad})
    GANimation.check_init_args({"image_size": 128, "n_critic": 5, "lambda_cond": 160.0}, "stage1")


def test_inference_side_does_not_import_lightning() -> None:
    code = (
        "import sys, eet_lightning.methods.ganimation.model\n"
        "print([m for m in ('pytorch_lightning', 'lightning_fabric', 'eet_lightning.methods.training') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two batches through a Lightning Trainer (critic steps 1 and 2, one G step after the second)."""
    tmp = tmp_path_factory.mktemp("ganimation")
    data = _data()
    args = GANimation.complete_init_args({**TINY, "n_critic": 2, "lr": 1e-3}, data)
    pl.seed_everything(0)
    module = GANimation(**args)
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp),
    )
    trainer.fit(module, datamodule=data)
    path = tmp / "last.ckpt"
    trainer.save_checkpoint(path)
    data.setup("validate")
    return {
        "args": args,
        "before": before,
        "module": module,
        "trainer": trainer,
        "path": path,
        "batch": next(iter(data.val_dataloader())),
    }


def test_training_steps_move_both_networks_and_log(trained: dict) -> None:
    module, before = trained["module"], trained["before"]
    after = module.state_dict()
    for part in ("generator", "critic"):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part)), part
    assert module.aus == trained["args"]["aus"]
    assert module.critic_steps == 2
    metrics = trained["trainer"].callback_metrics
    for key in (
        "train/C_gp",
        "train/C_cond",
        "train/G_cyc",
        "train/G_mask",
        "val/swap_truth_l1",
        "val/au_mse",
    ):
        assert key in metrics and torch.isfinite(metrics[key]), key
    rows = module.log_images(trained["batch"])
    assert list(rows) == ["input", "swapped", "cycle", "swap_mask", "truth"]
    assert all(r.shape == (8, 3, 64, 64) and r.min() >= -1 and r.max() <= 1 for r in rows.values())


def test_complete_init_args_fill_the_data_values() -> None:
    args = GANimation.complete_init_args({"width": 8}, _data())
    assert args["image_size"] == 64 and args["max_intensity"] == 5 and len(args["aus"]) == 12
    assert set(GANimation.data_hparams) <= set(args) and GANimation.required_labels == ("aus",)


def test_checkpoint_is_plain_and_loads_as_the_transfer_model(trained: dict) -> None:
    ckpt = torch.load(trained["path"], map_location="cpu", weights_only=True)
    assert ckpt["eet_method"] == "ganimation" and ckpt["eet_stage"] == 1
    assert ckpt["ganimation_critic_steps"] == 2
    hp = ckpt["hyper_parameters"]
    assert hp["critic_layers"] == 5 and hp["betas"] == [0.5, 0.999] and hp["lambda_cond"] == 160.0
    model = load_transfer_model(trained["path"])
    assert isinstance(model, GANimationModel) and not model.training
    assert isinstance(
        load_transfer_model(trained["path"], fuse=True), GANimationModel
    )  # a no-op, as for StarGAN
    with pytest.raises(ValueError, match="compile"):
        load_transfer_model(trained["path"], compile=True)
    module = trained["module"].eval()
    x = trained["batch"]["a"]["image"]
    with torch.no_grad():
        assert model.generator(x, torch.rand(4, 12))[1].shape == (4, 1, 64, 64)
        torch.testing.assert_close(model.critic(x)[1], module.critic(x)[1])


@pytest.fixture(scope="module")
def model(trained: dict) -> GANimationModel:
    return load_transfer_model(trained["path"])


def test_transfer_on_every_input_kind(model: GANimationModel, trained: dict) -> None:
    a, b = trained["batch"]["a"]["image"][:2], trained["batch"]["b"]["image"][:2]
    out_a, out_b = model.transfer(a, b)
    assert out_a.shape == (2, 3, 64, 64) and out_b.shape == (2, 3, 64, 64) and out_a.dtype == torch.float32
    single, _ = model.transfer(a[0], b[0])
    assert single.shape == (3, 64, 64)
    ua = ((a.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    ub = ((b.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    arr, _ = model.transfer(ua, ub)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == (2, 64, 64, 3)
    pil, _ = model.transfer(Image.fromarray(ua[0]), Image.fromarray(ub[0]))
    assert isinstance(pil, Image.Image) and pil.size == (64, 64)
    big, _ = model.transfer(Image.fromarray(ua[0]).resize((128, 128)), Image.fromarray(ub[0]))
    assert big.size == (64, 64)
    aus = model.predict_aus(a)
    assert aus.shape == (2, 12) and aus.min() >= 0 and aus.max() <= 5
    assert model.predict_aus(a[0]).shape == (12,)
    assert model.reconstruct(a).shape == (2, 3, 64, 64)
    assert model.swap(a, b).shape == (2, 3, 64, 64)


def test_labels_b_condition_the_transfer(model: GANimationModel, trained: dict) -> None:
    a, b = trained["batch"]["a"]["image"][:2], trained["batch"]["b"]["image"][:2]
    labels = trained["batch"]["b"]["aus"][:2]
    out_a, out_b = model.transfer(a, b, labels_b={"aus": labels})
    with torch.no_grad():
        expected_a, _ = model.generator(torch.cat([a, b]), torch.cat([labels / 5, labels / 5]))
    torch.testing.assert_close(out_a, expected_a[:2], atol=1e-5, rtol=0)
    # B's own AUs are the labels: B transferred at strength 0 is G(B, labels)
    _, own_b = model.transfer(a, b, strength=0.0, labels_b={"aus": labels})
    torch.testing.assert_close(own_b, expected_a[2:], atol=1e-5, rtol=0)
    # labels that differ from what the critic reads change the result
    plain_a, _ = model.transfer(a, b)
    assert not torch.allclose(plain_a, out_a)
    assert torch.equal(model.swap(a, b, source_labels={"aus": labels}), out_a.clamp(-1, 1))
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        model.transfer(a, b, labels_b={"aus": labels + 6})
    with pytest.raises(ValueError, match="not a condition"):
        model.transfer(a, b, labels_b={"emotion": torch.zeros(2, dtype=torch.long)})


def test_selective_and_graded_identities(model: GANimationModel, trained: dict) -> None:
    a, b = trained["batch"]["a"]["image"], trained["batch"]["b"]["image"]
    # strength 0 keeps each side's own AUs: G(x, own AUs as read) = the reconstruction
    out_a, out_b = model.transfer(a, b, strength=0.0)
    assert torch.equal(torch.cat([out_a, out_b]), model.reconstruct(torch.cat([a, b])))
    # all AUs selected is the plain transfer; none selected is strength 0
    full = model.transfer(a, b)
    for got, want in zip(model.transfer(a, b, aus=model.aus), full):
        assert torch.equal(got, want)
    for got, want in zip(model.transfer(a, b, aus=[]), (out_a, out_b)):
        assert torch.equal(got, want)
    # selective: only AU 12 takes B's value, the others keep A's own
    la, lb = trained["batch"]["a"]["aus"], trained["batch"]["b"]["aus"]
    sel_a, _ = model.transfer(a, b, aus=[12], labels_a={"aus": la}, labels_b={"aus": lb})
    cond = la.clone() / 5
    k = model.aus.index(12)
    cond[:, k] = lb[:, k] / 5
    with torch.no_grad():
        expected = model.generator(torch.cat([a, b]), torch.cat([cond, torch.zeros_like(cond)]))[0][:4]
    torch.testing.assert_close(sel_a, expected, atol=1e-5, rtol=0)
    # graded: half way between the own and the source's intensities
    half_a, _ = model.transfer(a, b, strength=0.5, labels_a={"aus": la}, labels_b={"aus": lb})
    with torch.no_grad():
        expected = model.generator(torch.cat([a, b]), torch.cat([(la + lb) / 10, lb / 5]))[0][:4]
    torch.testing.assert_close(half_a, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not one of"):
        model.transfer(a, b, aus=[3])


def test_animate_sets_the_given_intensities(model: GANimationModel, trained: dict) -> None:
    a = trained["batch"]["a"]["image"][:2]
    target = torch.zeros(12)
    target[model.aus.index(12)] = 4.0
    out = model.animate(a, target)
    with torch.no_grad():
        expected = model.generator(a, (target / 5).expand(2, -1))[0]
    torch.testing.assert_close(out, expected)
    own = model.predict_aus(a) / 5
    own[:, model.aus.index(12)] = 0.8
    with torch.no_grad():
        expected = model.generator(a, own)[0]
    torch.testing.assert_close(model.animate(a, {12: 4.0}), expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        model.animate(a, {12: 9.0})


# ---------------------------------------------------------------------------------------------- eet-fit


@pytest.mark.slow
def test_the_synthetic_config_trains_through_eet_fit(tmp_path: Path) -> None:
    from eet_lightning.cli.fit import main

    run_dir = tmp_path / "run"
    shrink = {
        "--data.num_train_identities": "4",
        "--data.num_test_identities": "3",
        "--data.train_samples": "16",
        "--data.val_pairs": "4",
        "--data.cache_dir": str(tmp_path / "cache"),
        "--stage1.max_epochs": "1",
        "--stage1.limit_train_batches": "2",
        "--stage1.batch_size": "4",
        "--stage1.width": "8",
        "--stage1.residual_blocks": "1",
        "--stage1.critic_width": "8",
        "--stage1.n_critic": "2",
        "--trainer.enable_progress_bar": "false",
        "--trainer.accelerator": "cpu",
        "--grid_pairs": "2",
    }
    args = ["--config", str(ROOT / "configs" / "ganimation_synthetic.yaml"), "--run_dir", str(run_dir)]
    assert main(args + [x for kv in shrink.items() for x in kv]) == 0
    final = run_dir / "stage1" / "last.ckpt"
    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    assert ckpt["eet_method"] == "ganimation" and ckpt["ganimation_critic_steps"] == 2
    hp = ckpt["hyper_parameters"]
    assert hp["width"] == 8 and hp["image_size"] == 64 and len(hp["aus"]) == 12 and hp["lr"] == 1e-4
    assert not (run_dir / "stage2").exists()
    assert (run_dir / "test_grid.png").stat().st_size > 0
    metrics = (run_dir / "logs" / "stage1" / "version_0" / "metrics.csv").read_text()
    assert "val/swap_truth_l1" in metrics and "train/G_cyc" in metrics
    model = load_transfer_model(final)
    faces = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out_a, _ = model.transfer(faces, faces[::-1].copy())
    assert isinstance(model, GANimationModel) and out_a.shape == faces.shape and out_a.dtype == np.uint8
