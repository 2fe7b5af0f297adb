"""Stage modules: the Table II variants, frozen stage-1 parts, the learning-rate schedule, DDP."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from eet_lightning import ArchConfig, Stage1Module, Stage2Module
from eet_lightning.base import half_constant_then_linear
from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.variants import variant_flags

TINY_ARCH = dict(image_size=64, width=0.0625, num_identities=4, num_poses=3, au_encoder_spectral_norm=False)


def _batch(b: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)

    def side() -> dict:
        return {
            "image": torch.rand(b, 3, 64, 64, generator=g) * 2 - 1,
            "aus": torch.rand(b, 12, generator=g) * 5,
            "identity": torch.randint(4, (b,), generator=g),
            "pose": torch.randint(3, (b,), generator=g),
        }

    return {"a": side(), "b": side()}


def test_schedule_constant_then_linear_to_zero() -> None:
    f = half_constant_then_linear(10)
    assert [f(e) for e in range(5)] == [1.0] * 5
    assert [round(f(e), 3) for e in range(5, 10)] == [1.0, 0.8, 0.6, 0.4, 0.2]
    assert f(10) == 0.0


@pytest.mark.parametrize(
    ("variant", "has_du", "has_dsc", "branches"),
    [
        ("eet", True, True, 12),
        ("eet_single", True, True, 1),
        ("bs_net", False, True, 12),
        ("b_net", False, False, 12),
    ],
)
def test_table2_variants(variant: str, has_du: bool, has_dsc: bool, branches: int) -> None:
    m = Stage2Module(arch=ArchConfig(**TINY_ARCH), variant=variant)
    assert hasattr(m, "au_discriminator") == has_du and hasattr(m, "identity_discriminator") == has_du
    assert hasattr(m, "swap_discriminator") == has_dsc
    assert len(m.au_related_encoder.branches) == branches
    inputs = m.pair_inputs(_batch())
    r = m._rounds(inputs["image"])
    g = m.generator_losses(inputs, r)
    expected = {"L_u", "L_u_swap", "L_c", "L_r", "L_adg", "total_g"}
    expected |= {"L_u_E", "L_d_E"} if has_du else set()
    expected |= {"L_sc"} if has_dsc else set()
    assert set(g) == expected
    s1 = Stage1Module(arch=ArchConfig(**TINY_ARCH), variant=variant)
    out, _ = s1._losses(s1.pair_inputs(_batch()))
    assert ("L_u_D" in out) == has_du and ("L_d_D" in out) == has_du
    with pytest.raises(ValueError, match="variant"):
        variant_flags("c_net")


def test_stage1_detached_discriminators_do_not_reach_encoders() -> None:
    torch.manual_seed(0)
    for detach in (True, False):
        m = Stage1Module(arch=ArchConfig(**TINY_ARCH), detach_discriminator_inputs=detach)
        out, _ = m._losses(m.pair_inputs(_batch()))
        out["L_u_D"].backward()
        ef_grad = [p.grad for p in m.au_free_encoder.parameters() if p.grad is not None]
        assert (len(ef_grad) == 0) == detach
        assert all(p.grad is not None for p in m.au_discriminator.parameters())


def test_stage2_weights_and_single_pose() -> None:
    m = Stage2Module(arch=ArchConfig(**{**TINY_ARCH, "num_poses": 1}), loss_weights={"lambda_r": 3.0})
    assert m.weights.lambda_p == 0.0 and m.weights.lambda_r == 3.0  # the paper: lambda_p = 0 with one pose
    with pytest.raises(ValueError, match="au_weights"):
        Stage2Module(arch=ArchConfig(**TINY_ARCH), au_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="unknown AU"):
        Stage2Module(arch=ArchConfig(**TINY_ARCH), aus=[1, 2, 3])
    with pytest.raises(ValueError, match="lambda_sc"):
        Stage2Module(arch=ArchConfig(**TINY_ARCH), loss_weights={"lambda_sc": -1})


def test_stage2_frozen_parts_stay_in_eval_and_out_of_optimizers(tmp_path: Path) -> None:
    m = Stage2Module(arch=ArchConfig(**TINY_ARCH))
    m.train()
    for name in ("encoder", "attribute_classifier", "au_discriminator", "identity_discriminator"):
        part = getattr(m, name)
        assert not part.training and not any(p.requires_grad for p in part.parameters())
    assert m.generator.training and m.au_free_encoder.training
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    m.trainer = trainer
    (opt_g, opt_d), _ = m.configure_optimizers()
    in_opt = {id(p) for o in (opt_g, opt_d) for group in o.param_groups for p in group["params"]}
    frozen = [
        p
        for n in ("encoder", "attribute_classifier", "au_discriminator", "identity_discriminator")
        for p in getattr(m, n).parameters()
    ]
    assert not any(id(p) in in_opt for p in frozen)
    trained = [
        p for n in ("au_free_encoder", "au_related_encoder", "generator") for p in getattr(m, n).parameters()
    ]
    assert all(id(p) in {id(q) for g in opt_g.param_groups for q in g["params"]} for p in trained)


class _SaveRankWeights(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, Path(self.out_dir) / f"rank{trainer.global_rank}.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_stage2_ddp_two_processes_hold_identical_weights(tiny_run: Path, tmp_path: Path) -> None:
    data = SyntheticDataModule(
        image_size=64,
        num_train_identities=4,
        num_test_identities=3,
        train_samples=16,
        val_pairs=4,
        batch_size=2,
        seed=0,
    )
    module = Stage2Module(
        arch=ArchConfig(**TINY_ARCH),
        au_weights=data.info.au_weights,
        stage1_ckpt=str(tiny_run / "stage1" / "last.ckpt"),
        lr_generator=1e-3,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="spawn", find_unused_parameters=True, process_group_backend="gloo"),
        max_steps=6,  # 3 batches x (generator + discriminator step)
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[_SaveRankWeights(str(tmp_path))],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=data)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    start = torch.load(tiny_run / "stage1" / "last.ckpt", map_location="cpu", weights_only=False)[
        "state_dict"
    ]
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=f"{key} differs between ranks")
    # training happened: Er moved away from its stage-1 weights on both ranks
    moved = [k for k in start if k.startswith("au_related_encoder") and not torch.equal(start[k], w0[k])]
    assert moved


def test_swap_au_loss_reads_swapped_images_with_a_fixed_er() -> None:
    # With train_au_encoder_on_generated=False, L_u on the swapped images still trains Er as the
    # encoder of the source's expression (round 1) but not as the reader of the swapped image (round 2).
    grads = {}
    for train_er in (True, False):
        torch.manual_seed(0)
        m = Stage2Module(arch=ArchConfig(**TINY_ARCH), train_au_encoder_on_generated=train_er)
        m.train()
        inputs = m.pair_inputs(_batch())
        r = m._rounds(inputs["image"])
        m.generator_losses(inputs, r)["L_u_swap"].backward()
        head_grads = [p.grad for p in m.au_related_encoder.heads.parameters()]
        # the AU heads act only when reading (round 1's heads see no L_u_swap): trained only when asked
        assert all(g is not None and g.abs().sum() > 0 for g in head_grads) == train_er
        assert all(g is None for g in head_grads) != train_er
        # the branches still learn, as encoders of the source's expression fed to G in round 1
        grads[train_er] = torch.cat([p.grad.flatten() for p in m.au_related_encoder.branches.parameters()])
        assert grads[train_er].abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.generator.parameters())
    assert not torch.allclose(grads[True], grads[False])


def test_feature_discriminators_keep_learning_when_asked(tmp_path: Path) -> None:
    m = Stage2Module(arch=ArchConfig(**TINY_ARCH), train_feature_discriminators=True)
    m.train()
    assert m.au_discriminator.training and all(p.requires_grad for p in m.au_discriminator.parameters())
    assert not m.encoder.training and not any(p.requires_grad for p in m.encoder.parameters())
    m.trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path)
    )
    (_, opt_d), _ = m.configure_optimizers()
    in_d = {id(p) for g in opt_d.param_groups for p in g["params"]}
    assert all(id(p) in in_d for p in m.identity_discriminator.parameters())
    inputs = m.pair_inputs(_batch())
    d = m.discriminator_losses(inputs, m._rounds(inputs["image"]))
    assert {"L_u_D", "L_d_D", "D_g", "D_sc"} <= set(d)
    d["total_d"].backward()
    assert all(p.grad is None for p in m.au_free_encoder.parameters())  # Du learns from detached f_f
    assert all(p.grad is not None for p in m.au_discriminator.parameters())
