"""benchmarks/bench.py (`make bench`): the JSON it writes, and that its stage steps train what Lightning's do.

No timing is asserted here: speed is measured by the benchmark, not by tests.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("eet_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _positive(row: dict, *keys: str) -> None:
    for key in keys:
        value = row[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, row)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(BENCH), "--quick", "--threads", "1", "--configs", "tiny", "--device", "cpu"]
    # no time limit: a slow or busy machine makes this slower, not wrong (a subprocess, because the
    # benchmark sets process-wide allocator and thread settings)
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fp32 matmul" in proc.stdout and "stage2" in proc.stdout
    return json.loads(out.read_text())


def test_bench_json_has_every_section(tiny_bench: dict) -> None:
    machine = tiny_bench["machine"]
    assert machine["device"] == "cpu" and machine["threads"] == 1
    assert {"load_start", "load_end", "torch", "cpu_count"} <= set(machine)
    assert tiny_bench["memory_measure"]
    ref = tiny_bench["reference"]
    _positive(ref, "matmul_fp32_gflops", "matmul_bf16_gflops")
    assert ref["fp32"]["size"] == ref["bf16"]["size"] == 2048


def test_bench_inference_rows(tiny_bench: dict) -> None:
    rows = {(r["batch_pairs"], r["variant"]): r for r in tiny_bench["inference"]}
    assert set(rows) == {(b, v) for b in (1, 2) for v in _load_bench().VARIANTS}
    for (_, variant), row in rows.items():
        if "error" in row:  # a variant the library cannot run yet is reported, never silently dropped
            assert variant != "fp32" and row["error"]
            continue
        _positive(row, "seconds", "images_per_s", "gflop", "gflops_per_s", "ratio_to_fp32_matmul")
        assert row["peak_mb"] >= 0
        ref = tiny_bench["reference"]["matmul_fp32_gflops"]
        assert row["ratio_to_fp32_matmul"] == pytest.approx(row["gflops_per_s"] / ref)
        assert row["images_per_s"] == pytest.approx(2 * row["batch_pairs"] / row["seconds"])
    # FLOPs are counted, and a swap's cost grows with the batch (but for spectral norm's matrix-vector
    # products, once per layer and call whatever the batch)
    assert rows[(2, "fp32")]["gflop"] == pytest.approx(2 * rows[(1, "fp32")]["gflop"], rel=1e-3)
    assert rows[(2, "fp32")]["gflop"] < 2 * rows[(1, "fp32")]["gflop"]
    # channels-last, the fused inference form and its ONNX export run by onnxruntime compute the same swaps
    onnx_here = all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))
    for variant in ("channels_last", "fused", "fused_cl", "fused_compiled", "onnxruntime"):
        if variant == "onnxruntime" and not onnx_here:  # optional packages: the row says why it is missing
            assert "error" in rows[(2, variant)]
            continue
        assert rows[(2, variant)]["max_abs_diff_vs_fp32"] < 1e-4
    # onnxruntime's row counts the fused form's FLOPs (the same arithmetic)
    for batch in (1, 2) if onnx_here else ():
        assert rows[(batch, "onnxruntime")]["gflop"] == pytest.approx(rows[(batch, "fused")]["gflop"])
        assert rows[(batch, "onnxruntime")]["providers"] == ["CPUExecutionProvider"]
    bf16 = rows[(2, "fused_cl_bf16")]
    if "error" not in bf16:
        assert bf16["max_abs_diff_vs_fp32"] < 0.5


def test_bench_training_and_data_rows(tiny_bench: dict) -> None:
    forms = {(r["stage"], r["variant"]): r for r in tiny_bench["training"]}
    assert set(forms) == {(s, f) for s in (1, 2) for f in ("reference", "optimized", "optimized_bf16")}
    for row in forms.values():
        _positive(row, "seconds", "images_per_s", "pairs_per_s", "gflop", "gflops_per_s", "peak_mb")
        assert row["batch_pairs"] == 2 and row["config"] == "tiny"
    for stage in (1, 2):
        ref, opt = forms[(stage, "reference")], forms[(stage, "optimized")]
        assert opt["speedup_vs_reference"] == pytest.approx(ref["seconds"] / opt["seconds"])
        assert opt["gflop"] == pytest.approx(ref["gflop"], rel=1e-3)  # the same work, counted the same way
        bf16 = forms[(stage, "optimized_bf16")]
        assert bf16["speedup_vs_reference"] == pytest.approx(ref["seconds"] / bf16["seconds"])
        assert bf16["ratio_to_bf16_matmul"] == pytest.approx(
            bf16["gflops_per_s"] / tiny_bench["reference"]["matmul_bf16_gflops"]
        )
    pairs = {r["stage"]: r for r in tiny_bench["side_by_side"]}
    assert set(pairs) == {1, 2}
    for row in pairs.values():  # the interleaved comparison: the speed-up of each round, then the median
        assert row["config"] == "tiny" and row["rounds"] == len(row["reference_seconds_all"]) == 2
        ratios = sorted(r / o for r, o in zip(row["reference_seconds_all"], row["optimized_seconds_all"]))
        assert row["speedup"] == pytest.approx((ratios[0] + ratios[1]) / 2)
        assert row["speedup_min"] == pytest.approx(ratios[0]) and row["speedup_max"] == pytest.approx(
            ratios[1]
        )
    rows = {s: forms[(s, "optimized")] for s in (1, 2)}
    # stage 2 runs two rounds through G and two discriminators on top of the encoders
    assert rows[2]["gflop"] > 2 * rows[1]["gflop"]
    data = {r["source"]: r for r in tiny_bench["data"]}
    assert set(data) == {"synthetic", "manifest"}
    for row in data.values():
        _positive(row, "pairs_per_s")
    step = rows[2]["pairs_per_s"]
    assert data["synthetic"]["ratio_to_stage2_step"] == pytest.approx(data["synthetic"]["pairs_per_s"] / step)
    assert data["manifest"]["ratio_to_stage2_step"] is None  # its config (paper) was not measured


def test_bench_steps_update_what_training_updates() -> None:
    bench = _load_bench()
    cfg = bench.bench_configs(paper_train_batch=2, infer_batch=2)["tiny"]
    device = torch.device("cpu")
    step = bench.stage2_step(cfg, device, optimized=False)
    module = step.module
    # the reference form: benchmarks/reference_forms.py's stage module and layers, Er's branches in a loop
    forms = sys.modules["reference_forms"]  # imported by bench.py
    assert not module.au_related_encoder.grouped and isinstance(module, forms.ReferenceStage2Module)
    assert not any(isinstance(m, forms.PReLU) for m in module.modules())
    assert any(isinstance(m, forms.UnscaledSpectralNorm) for m in module.modules())
    # parameters only: forward passes alone move batch-norm statistics and spectral-norm vectors
    before = {k: v.detach().clone() for k, v in module.named_parameters()}
    step()
    changed = {k.split(".")[0] for k, v in module.named_parameters() if not torch.equal(v, before[k])}
    # the generator step (Ef, Er, G) and the discriminator step (Dg, Dsc, and Du/Dd as the quick start
    # keeps training them) both ran; E and C are frozen
    assert {"au_free_encoder", "au_related_encoder", "generator", "image_discriminator"} <= changed
    assert {"swap_discriminator", "au_discriminator", "identity_discriminator"} <= changed
    assert not {"encoder", "attribute_classifier"} & changed
    step1 = bench.stage1_step(cfg, device, optimized=True)
    assert step1.module.au_related_encoder.grouped
    assert type(step1.module) is bench.Stage1Module  # the optimized form: the library's module as it is
    before = [p.clone() for p in step1.module.encoder.parameters()]
    step1()
    assert any(not torch.equal(p, q) for p, q in zip(step1.module.encoder.parameters(), before))


def test_epoch_cost_from_the_stage2_step() -> None:
    bench = _load_bench()
    rows = {(r["dataset"], r["devices"]): r for r in bench.epoch_costs({"batch_pairs": 2, "seconds": 3.0})}
    assert set(rows) == {(d, n) for d in ("DISFA", "RaFD", "MMI", "CFD") for n in (1, 8)}
    disfa = rows[("DISFA", 1)]
    assert (
        disfa["steps"] == 43_605
        and disfa["hours"] == pytest.approx(43_605 * 3.0 / 3600)
        and disfa["measured"]
    )
    assert rows[("DISFA", 8)]["steps"] == 5_451 and not rows[("DISFA", 8)]["measured"]
    assert rows[("CFD", 1)]["steps"] == 541  # 1,081 images: the last step has one pair


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--configs", "huge"], "--configs must be a comma-separated subset"),
        (["--only", "speed"], "--only must be a comma-separated subset"),
    ],
)
def test_bench_rejects_bad_arguments(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        _load_bench().main(argv)


@pytest.mark.slow
def test_recipes_benchmark_times_every_recipe(tmp_path: Path) -> None:
    """benchmarks/recipes.py: every generator recipe's stage-2 step built and timed side by side."""
    out = tmp_path / "recipes.json"
    script = BENCH.parent / "recipes.py"
    cmd = [sys.executable, str(script), "--rounds", "1", "--calls", "1", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and rows[0]["ratio"] == 1.0
    assert all(r["seconds"] > 0 and math.isclose(r["steps_per_s"], 1 / r["seconds"]) for r in rows)
    assert "configs/synthetic.yaml" in done.stdout
    bad = subprocess.run([sys.executable, str(script), "--rounds", "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--rounds" in bad.stderr
