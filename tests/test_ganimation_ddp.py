"""GANimation under 2-process DDP (gloo, spawn): both ranks take the same critic and generator steps and end
with identical weights, as EET's stage 2 does in test_stages.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy

from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.methods.ganimation.training import GANimation


class _SaveRankWeights(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        state["critic_steps"] = torch.tensor(pl_module.critic_steps)
        torch.save(state, Path(self.out_dir) / f"rank{trainer.global_rank}.pt")


@pytest.mark.ddp
@pytest.mark.slow
def test_ganimation_ddp_two_processes_hold_identical_weights(tmp_path: Path) -> None:
    data = SyntheticDataModule(
        image_size=64,
        num_train_identities=4,
        num_test_identities=3,
        train_samples=16,
        val_pairs=4,
        batch_size=2,
        seed=0,
    )
    args = GANimation.complete_init_args(
        {"width": 8, "residual_blocks": 1, "critic_width": 8, "n_critic": 2, "lr": 1e-3}, data
    )
    pl.seed_everything(0)
    module = GANimation(**args)
    start = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        # the generator sits out the critic steps (and the critic's weights the generator's): DDP must
        # tolerate parameters without gradients
        strategy=DDPStrategy(start_method="spawn", find_unused_parameters=True, process_group_backend="gloo"),
        max_epochs=1,
        limit_train_batches=4,  # 4 critic steps and 2 generator steps on each rank
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
    assert w0.keys() == w1.keys()
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=f"{key} differs between ranks")
    assert int(w0["critic_steps"]) == 4
    # training happened on both networks
    for part in ("generator", "critic"):
        assert any(not torch.equal(start[k], w0[k]) for k in start if k.startswith(part)), part
