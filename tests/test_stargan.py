"""The StarGAN baseline: its losses against hand-computed values, its networks' shapes, a manual-optimization
training step with a Lightning Trainer, loading the checkpoint as a `TransferModel`, and transfer."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.datamodules.base import DataInfo
from eet_lightning.methods import load_transfer_model
from eet_lightning.methods.gan_parts import gradient_penalty
from eet_lightning.methods.stargan.model import (
    StarGANDiscriminator,
    StarGANGenerator,
    StarGANModel,
    one_hot_domains,
)
from eet_lightning.methods.stargan.training import (
    StarGAN,
    discriminator_losses,
    domain_classification_loss,
    generator_losses,
    reconstruction_loss,
)

TINY = dict(width=8, residual_blocks=1, critic_width=8, n_critic=2)
LN2 = math.log(2.0)


def _dm(**kw) -> SyntheticDataModule:
    args = dict(
        image_size=64,
        num_train_identities=5,
        num_test_identities=3,
        train_samples=40,
        val_pairs=4,
        batch_size=4,
        seed=3,
    )
    args.update(kw)
    return SyntheticDataModule(**args)


# ------------------------------------------------------------------------------------------------------
# losses


def test_domain_classification_loss_by_hand() -> None:
    # sample 1: equal logits over 2 classes -> -log(1/2); sample 2: logits (log 3, 0), class 1 -> -log(1/4)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(domain_classification_loss(logits, labels), torch.tensor(1.5 * LN2))


def test_reconstruction_loss_by_hand() -> None:
    x = torch.zeros(1, 1, 2, 2)
    rec = torch.tensor([0.5, -1.0, 0.25, 0.25]).view(1, 1, 2, 2)
    torch.testing.assert_close(reconstruction_loss(rec, x), torch.tensor(0.5))


def test_discriminator_losses_by_hand() -> None:
    real = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)  # mean 2
    fake = torch.tensor([0.5, -0.5]).view(2, 1, 1, 1)  # mean 0
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    out = discriminator_losses(real, fake, logits, torch.tensor([0, 1]), torch.tensor(0.25), 2.0, 10.0)
    torch.testing.assert_close(out["D_adv"], torch.tensor(-2.0))
    torch.testing.assert_close(out["D_gp"], torch.tensor(0.25))
    torch.testing.assert_close(out["D_cls"], torch.tensor(1.5 * LN2))
    torch.testing.assert_close(out["total_d"], torch.tensor(-2.0 + 10 * 0.25 + 2 * 1.5 * LN2))


def test_generator_losses_by_hand() -> None:
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(2, 1, 1, 2)  # mean 2.5
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    x = torch.zeros(2, 1, 1, 2)
    rec = torch.tensor([1.0, -1.0, 0.0, 0.0]).view(2, 1, 1, 2)  # mean |.| 0.5
    out = generator_losses(scores, logits, torch.tensor([0, 1]), rec, x, 1.0, 10.0)
    torch.testing.assert_close(out["G_adv"], torch.tensor(-2.5))
    torch.testing.assert_close(out["G_cls"], torch.tensor(1.5 * LN2))
    torch.testing.assert_close(out["G_rec"], torch.tensor(0.5))
    torch.testing.assert_close(out["total_g"], torch.tensor(-2.5 + 1.5 * LN2 + 10 * 0.5))


def test_gradient_penalty_of_a_linear_critic() -> None:
    # D(x) = 3 * x on one-pixel images: the gradient is 3 at every mixed point, so GP = (3 - 1)^2 = 4
    class Linear(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (3 * x,)

    real, fake = torch.rand(5, 1, 1, 1), torch.rand(5, 1, 1, 1)
    torch.testing.assert_close(gradient_penalty(Linear(), real, fake), torch.tensor(4.0))


# ------------------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize(("size", "patches"), [(64, 2), (128, 2)])
def test_network_shapes(size: int, patches: int) -> None:
    g = StarGANGenerator(8, width=8, residual_blocks=1)
    d = StarGANDiscriminator(size, 8, width=8)
    x = torch.rand(3, 3, size, size) * 2 - 1
    y = g(x, one_hot_domains(torch.tensor([0, 3, 7]), 8))
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    scores, logits = d(y)
    assert scores.shape == (3, 1, patches, patches) and logits.shape == (3, 8)
    assert len([m for m in d.body if isinstance(m, torch.nn.Conv2d)]) == size.bit_length() - 2


def test_bad_init_args_and_data_without_emotions_are_refused() -> None:
    with pytest.raises(ValueError, match="n_critic"):
        StarGAN.check_init_args({"n_critic": 0}, "stage1")
    with pytest.raises(ValueError, match="lambda_rec"):
        StarGAN.check_init_args({"lambda_rec": -1.0}, "stage1")
    with pytest.raises(ValueError, match="lr_generator"):
        StarGAN.check_init_args({"lr_generator": 0.0}, "stage1")

    class NoEmotionData:
        image_size = 64
        info = DataInfo(aus=[1, 2], num_identities=3, num_poses=1)

    with pytest.raises(ValueError, match="emotion label"):
        StarGAN.complete_init_args({}, NoEmotionData())
    assert StarGAN.complete_init_args({"width": 8}, _dm()) == {
        "width": 8,
        "image_size": 64,
        "num_emotions": 8,
    }


# ------------------------------------------------------------------------------------------------------
# training and the trained model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[StarGAN, dict, Path]:
    """Two batches of training (two D steps, one G step at n_critic 2), and the checkpoint written."""
    pl.seed_everything(0)
    dm = _dm()
    module = StarGAN(**StarGAN.complete_init_args(dict(TINY), dm))
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    out = tmp_path_factory.mktemp("stargan")
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
        default_root_dir=out,
    )
    trainer.fit(module, dm)
    trainer.save_checkpoint(out / "last.ckpt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return module, {"before": before, "metrics": metrics}, out / "last.ckpt"


def test_training_step_changes_generator_and_discriminator(trained) -> None:
    module, info, _ = trained
    before = info["before"]
    for part in ("generator", "discriminator"):
        changed = [
            k for k, v in module.state_dict().items() if k.startswith(part) and not torch.equal(v, before[k])
        ]
        assert changed, f"{part} weights did not change"
    assert module.critic_steps == 2
    m = info["metrics"]
    for key in (
        "train/total_d",
        "train/total_g",
        "train/G_rec",
        "val/rec_l1",
        "val/cls_acc",
        "val/swap_truth_l1",
    ):
        assert key in m and math.isfinite(m[key]), key
    assert 0 <= m["val/cls_acc"] <= 1


def test_checkpoint_is_plain_and_loads_as_stargan_model(trained) -> None:
    module, _, path = trained
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["eet_method"] == "stargan" and ckpt["eet_stage"] == 1 and ckpt["stargan_critic_steps"] == 2
    assert ckpt["hyper_parameters"]["num_emotions"] == 8 and ckpt["hyper_parameters"]["betas"] == [0.5, 0.999]
    model = load_transfer_model(path)
    assert isinstance(model, StarGANModel) and not model.training and model.image_size == 64
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    c = one_hot_domains(torch.tensor([2, 5]), 8)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.generator(x, c), module.generator(x, c))
        torch.testing.assert_close(model.discriminator(x)[1], module.discriminator(x)[1])
    with pytest.raises(ValueError, match="compile"):
        StarGANModel.load_from_checkpoint(path, compile=True)


@pytest.fixture(scope="module")
def model(trained) -> StarGANModel:
    return load_transfer_model(trained[2])


def test_transfer_keeps_the_kind_and_shape_of_its_inputs(model: StarGANModel) -> None:
    rng = np.random.default_rng(0)
    arr_a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    arr_b = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)  # resized to the model's 64 px
    out_a, out_b = model.transfer(Image.fromarray(arr_a), Image.fromarray(arr_b))
    assert isinstance(out_a, Image.Image) and out_a.size == (64, 64) and isinstance(out_b, Image.Image)
    out_a, out_b = model.transfer(arr_a, arr_b)
    assert isinstance(out_a, np.ndarray) and out_a.shape == (64, 64, 3) and out_a.dtype == np.uint8
    batch = np.stack([arr_a, arr_a])
    out_a, _ = model.transfer(batch, batch)
    assert out_a.shape == (2, 64, 64, 3) and out_a.dtype == np.uint8
    t = torch.rand(3, 64, 64) * 2 - 1
    out_a, out_b = model.transfer(t, t)
    assert isinstance(out_a, torch.Tensor) and out_a.shape == (3, 64, 64)
    out_a, _ = model.transfer(t[None].repeat(2, 1, 1, 1), t[None].repeat(2, 1, 1, 1))
    assert out_a.shape == (2, 3, 64, 64) and out_a.min() >= -1 and out_a.max() <= 1
    assert model.reconstruct(arr_a).shape == (64, 64, 3)
    p = model.predict_emotion(t)
    assert p.shape == (8,) and torch.isclose(p.sum(), torch.tensor(1.0))
    assert model.translate(t, "happy").shape == (3, 64, 64)
    with pytest.raises(ValueError, match="selective"):
        model.transfer(t, t, aus=[12])
    with pytest.raises(NotImplementedError):
        model.predict_aus(t)


def test_transfer_with_labels_and_strength(model: StarGANModel) -> None:
    torch.manual_seed(1)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    G = model.generator
    with torch.no_grad():
        own_a = model.discriminator(a)[1].softmax(1)
        read_b = model.discriminator(b)[1].softmax(1)
        labelled = G(a, one_hot_domains(torch.tensor([1, 4]), 8))
        read = G(a, read_b)
        half = G(a, own_a + 0.5 * (one_hot_domains(torch.tensor([1, 4]), 8) - own_a))
    # B's expression from its labels (one-hot), or from D's classifier's softmax on B
    out_a, _ = model.transfer(a, b, labels_b={"emotion": torch.tensor([1, 4])})
    torch.testing.assert_close(out_a, labelled)
    torch.testing.assert_close(model.transfer(a, b)[0], read)
    torch.testing.assert_close(model.swap(a, b, source_labels={"emotion": torch.tensor([1, 4])}), labelled)
    # strength 0: A's own domain as read, i.e. its reconstruction; 0.5: half-way from A's own domain
    torch.testing.assert_close(model.transfer(a, b, strength=0.0)[0], model.reconstruct(a))
    out, _ = model.transfer(a, b, strength=0.5, labels_b={"emotion": torch.tensor([1, 4])})
    torch.testing.assert_close(out, half)
    # with A's label too, strength 0 is G(A, one-hot of A's label)
    out, _ = model.transfer(a, b, strength=0.0, labels_a={"emotion": torch.tensor([3, 3])})
    torch.testing.assert_close(out, G(a, one_hot_domains(torch.tensor([3, 3]), 8)))
    with pytest.raises(ValueError, match=r"class indices in \[0, 8\)"):
        model.transfer(a, b, labels_b={"emotion": torch.tensor([1, 8])})
    with pytest.raises(ValueError, match="not a condition"):
        model.transfer(a, b, labels_b={"aus": torch.zeros(2, 12)})


def test_inference_side_imports_no_lightning() -> None:
    code = (
        "import sys; import eet_lightning.methods.stargan.model; "
        "print([m for m in ('pytorch_lightning', 'lightning_fabric', 'eet_lightning.methods.stargan.training')"
        " if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------------------------------------------
# eet-fit

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_synthetic_config_trains_through_eet_fit(tmp_path: Path) -> None:
    from eet_lightning.cli.fit import main

    run_dir = tmp_path / "run"
    shrink = [
        ("--data.num_train_identities", "4"),
        ("--data.num_test_identities", "3"),
        ("--data.train_samples", "16"),
        ("--data.val_pairs", "4"),
        ("--data.cache_dir", str(tmp_path / "cache")),
        ("--stage1.max_epochs", "1"),
        ("--stage1.limit_train_batches", "2"),
        ("--stage1.batch_size", "2"),
        ("--stage1.width", "8"),
        ("--stage1.residual_blocks", "1"),
        ("--stage1.critic_width", "8"),
        ("--stage1.n_critic", "1"),
        ("--trainer.accelerator", "cpu"),
        ("--trainer.enable_progress_bar", "false"),
        ("--trainer.enable_model_summary", "false"),
        ("--grid_pairs", "2"),
    ]
    args = ["--config", str(ROOT / "configs" / "stargan_synthetic.yaml"), "--run_dir", str(run_dir)]
    assert main(args + [x for kv in shrink for x in kv]) == 0
    final = run_dir / "stage1" / "last.ckpt"
    ckpt = torch.load(final, map_location="cpu", weights_only=True)
    assert ckpt["eet_method"] == "stargan" and ckpt["stargan_critic_steps"] == 2
    hp = ckpt["hyper_parameters"]
    assert hp["width"] == 8 and hp["image_size"] == 64 and hp["num_emotions"] == 8 and hp["lambda_rec"] == 10
    assert not (run_dir / "stage2").exists()
    assert (run_dir / "test_grid.png").stat().st_size > 0
    metrics = (run_dir / "logs" / "stage1" / "version_0" / "metrics.csv").read_text()
    assert "val/swap_truth_l1" in metrics and "val/cls_acc" in metrics and "train/G_rec" in metrics
    model = load_transfer_model(final)
    faces = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    out_a, _ = model.transfer(faces, faces[::-1].copy())
    assert isinstance(model, StarGANModel) and out_a.shape == faces.shape and out_a.dtype == np.uint8


def test_the_rafd_config_reads_as_the_paper_setting() -> None:
    from eet_lightning.cli.fit import build_parser, resolve_config_names

    argv = resolve_config_names(["--config", str(ROOT / "configs" / "stargan_rafd.yaml")])
    parser = build_parser(argv)
    assert [c.__name__ for c in parser.stage_classes] == ["StarGAN"]
    cfg = parser.parse_args(argv + ["--data.root", "/nonexistent"])  # parsed, not instantiated
    s = cfg.stage1
    assert cfg.data.init_args.image_size == 128 and cfg.data.init_args.batch_size == 8
    assert (s.width, s.residual_blocks, s.critic_width, s.n_critic) == (64, 6, 64, 5)
    assert (s.lambda_cls, s.lambda_rec, s.lambda_gp) == (1.0, 10.0, 10.0)
    assert s.lr_generator == s.lr_discriminator == 1e-4 and tuple(s.betas) == (0.5, 0.999)
