"""CUDA: what the CPU tests check, on a GPU (skipped where torch sees none).

A stage-2 step computes on the GPU the losses and gradients it computes on the CPU; `eet-fit` trains both
stages there in fp32 and under bf16-mixed precision; the fused model a checkpoint loads into swaps
expressions on the GPU as on the CPU; `make bench` measures the GPU. TF32 is off for the comparisons
(it rounds matmul and convolution inputs to 10-bit mantissas).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eet_lightning.model import EETModel
from eet_lightning.nets import ArchConfig
from eet_lightning.stage2 import Stage2Module
from stage2_step import assert_stage2_results_close, stage2_inputs, stage2_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("channels_last", [False, True])
def test_stage2_step_on_gpu_matches_cpu(channels_last: bool) -> None:
    """Eval mode (spectral norm's power iteration and batch norm's statistics stand still), the same
    weights and inputs on both devices: the same losses, and gradients to 1e-3 of each tensor's norm."""
    arch = ArchConfig(image_size=64, width=0.125, encoder_width=0.25, num_identities=5, num_poses=3)
    torch.manual_seed(0)
    cpu = Stage2Module(arch=arch).eval()
    gpu = Stage2Module(arch=arch).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.cuda()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    cpu.to(memory_format=memory), gpu.to(memory_format=memory)
    inputs = stage2_inputs()
    want = stage2_step(cpu, inputs)
    got = stage2_step(gpu, {k: v.cuda() for k, v in inputs.items()})
    assert_stage2_results_close(got, want)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_eet_fit_trains_on_the_gpu(tiny_config: Path, tmp_path: Path, precision: str) -> None:
    from eet_lightning.cli.fit import main

    run_dir = tmp_path / "run"
    args = ["--config", str(tiny_config), "--run_dir", str(run_dir), "--trainer.accelerator", "gpu"]
    assert main([*args, "--trainer.precision", precision]) == 0
    ckpt = torch.load(run_dir / "stage2" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    model = EETModel.load_from_checkpoint(run_dir / "stage2" / "last.ckpt", map_location="cuda")
    out_a, _ = model.transfer(
        torch.zeros(2, 3, 64, 64, device="cuda"), torch.zeros(2, 3, 64, 64, device="cuda")
    )
    assert out_a.device.type == "cuda" and torch.isfinite(out_a).all()


def test_fused_transfer_on_gpu_matches_cpu(tiny_run: Path) -> None:
    ckpt = tiny_run / "stage2" / "last.ckpt"
    cpu = EETModel.load_from_checkpoint(ckpt)
    gpu = EETModel.load_from_checkpoint(ckpt, map_location="cuda")
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1 for _ in range(2))
    want = cpu.transfer(a, b)
    got = gpu.transfer(a.cuda(), b.cuda())
    for g, w in zip(got, want):
        assert g.device.type == "cuda"
        torch.testing.assert_close(g.cpu(), w, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = gpu.transfer(a.cuda(), b.cuda())
    for g, w in zip(half, want):
        assert float((g.float().cpu() - w).abs().max()) < 0.5


def test_bench_measures_the_gpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(BENCH), "--quick", "--configs", "tiny", "--device", "cuda", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["device"].startswith("cuda")
    assert result["reference"]["matmul_fp32_gflops"] > 0
    rows = [r for r in result["inference"] + result["training"] if "error" not in r]
    assert rows and all(r["seconds"] > 0 and r["peak_mb"] >= 0 for r in rows)
    assert {r["stage"] for r in result["side_by_side"]} == {1, 2}


def test_eet_transfer_with_reports_on_gpu_matches_cpu(tiny_run: Path, tmp_path: Path) -> None:
    """The photo pipeline with its quality reports on the GPU: the same faces, and AUs and identity
    similarities within float rounding of the CPU's."""
    import numpy as np
    from PIL import Image

    skimage_data = pytest.importorskip("skimage.data")
    from eet_lightning.cli.transfer import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(skimage_data.astronaut()).save(photos / "astronaut.png")
    Image.fromarray(np.repeat(skimage_data.camera()[:, :, None], 3, axis=2)).save(photos / "camera.png")
    ckpt = str(tiny_run / "stage2" / "last.ckpt")
    reports = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        args = ["--ckpt", ckpt, "--source", str(photos), "--target", str(photos), "--out", str(out)]
        assert main([*args, "--device", device, "--no-progress"]) == 0
        reports[device] = json.loads((out / "astronaut_with_camera.json").read_text())
    cpu, gpu = reports["cpu"], reports["cuda"]
    assert gpu["target"]["eye_distance_px"] == pytest.approx(cpu["target"]["eye_distance_px"], abs=0.5)
    for side in ("source", "target", "result"):
        assert np.allclose(gpu["aus"][side], cpu["aus"][side], atol=0.02), side
    assert gpu["identity"]["target_result"] == pytest.approx(cpu["identity"]["target_result"], abs=0.01)
