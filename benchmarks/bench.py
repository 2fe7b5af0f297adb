"""The speed benchmark of issue 6: every figure as a ratio to this machine's own matmul rate.

    python benchmarks/bench.py [--device auto] [--quick] [--only inference,training] [--configs quick]
                               [--threads 2] [--variants fp32,fused,fused_cl,...] [--out runs/bench.json]

In one run, on the machine it runs on, it measures

- reference: fp32 and bf16 matmul GFLOP/s at 2048 x 2048 (the best of several repeats after a warm-up);
- inference: `EETModel.transfer` on one pair and on a batch of pairs, at the paper config (256 px,
  width 1, configs/disfa.yaml) and at the quick-start config (configs/synthetic.yaml), in images per second
  (a pair gives two swapped images), achieved GFLOP/s and the ratio to the fp32 matmul rate; the
  straightforward form ("fp32": Er's branches one after the other, spectral and batch norm as layers, the
  C allocator's defaults) beside the same with the tuned allocator ("allocator"), Er's branches side by
  side ("grouped") and the inference form EETModel loads ("fused": spectral and batch norm folded,
  convolution weights prepacked in oneDNN's layout, Er's branches as the config builds them), in
  channels-last memory format, under bf16 autocast, and compiled ("fused_compiled":
  ``EETModel.compile_for_inference``, torch.compile with weight freezing; its first call, which
  compiles, is not timed), and the fused form exported to ONNX and run by onnxruntime ("onnxruntime":
  `eet_lightning.onnx_model`, as many intra-op threads as torch; the CUDA execution provider on CUDA;
  FLOPs counted on the fused PyTorch form, the same arithmetic; the export is not timed), with the max
  abs output difference against "fp32";
- training: one stage-1 step (forward, backward, Adam, as Lightning's automatic optimization runs it) and
  one stage-2 step (`Stage2Module.training_step` itself: generator and discriminator updates), driven
  without a Trainer, in the straightforward form ("reference", built by `reference_forms.reference_form`
  beside this file: each side of a pair through its own passes, each discriminator input through its own
  call, Du and Dd one call each, spectral norm as ``W / sigma`` then the convolution, aten's PReLU
  backward, torch's default Adam; and Er's branches one after the other, contiguous tensors, the C
  allocator's defaults) and the form eet-fit trains with ("optimized": batched
  passes, shared discriminator calls, Du and Dd side by side, fused Adam, the tuned allocator, the
  YAML's Er form and memory format, spectral norm dividing the convolution's output where that is smaller than the weight, the
  vectorized PReLU backward), with the speed-up between them, and the optimized form under bf16 autocast
  ("optimized_bf16": what the Trainer's ``precision="bf16-mixed"`` runs; other numbers, so a precision
  choice rather than the same computation); the paper config at batch 2, the
  quick-start config at its stage batches. Both forms use spectral norm's own power iteration and the
  whole-kernel matrix products of Dsc/Dg (`nets/kernels/`). Then the speed-up once more with the two
  forms interleaved ("side by side": rounds of a few calls of each, one after the other, in one process,
  the tuned allocator for both; every config whose step takes under a second): the machine's speed
  drifts by 10-30% over minutes on a shared host, and rows measured minutes apart carry that drift into
  their ratio;
- data: pairs per second from the synthetic DataModule (the quick-start settings) and from a
  prepared-manifest DataModule (256 px, batch 16, via benchmarks/data_throughput.py), each as a multiple
  of the rate at which the stage-2 step of the matching config consumes pairs;
- peak memory of each: on CUDA the peak of ``torch.cuda.max_memory_allocated`` above what was allocated
  before the model was built; on CPU the peak resident set size (VmHWM, reset through
  /proc/self/clear_refs before each measurement, after ``malloc_trim``) above the RSS before it. Both
  include the weights, the optimizer state and the activations; DataLoader worker processes are not
  counted.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one untimed call (a training step
counts its backward pass too), never by hand. Times are wall-clock seconds, the best of the timed
repeats (with ``torch.cuda.synchronize`` around each on CUDA); all repeats are kept in the JSON.
The allocator setting (`eet_lightning.runtime.tune_cpu_allocator`) is process-wide and cannot be
undone, so the straightforward rows ("fp32", "reference") are all measured first, then every other row.
The load average at start (other work on the machine) and after the model rows (which counts the
benchmark's own threads; taken before the data rows' worker processes) is recorded: figures taken
while other work runs are not the machine's.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from eet_lightning.model import EETModel  # noqa: E402
from eet_lightning.nets import ArchConfig  # noqa: E402
from eet_lightning.runtime import configure_process, tune_cpu_allocator  # noqa: E402
from eet_lightning.stage1 import Stage1Module  # noqa: E402
from eet_lightning.stage2 import Stage2Module  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data_throughput  # noqa: E402
from reference_forms import reference_form, unscaled_spectral_norm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("reference", "inference", "training", "data")
# Inference forms, each against the straightforward one ("fp32": Er's branches one after the other, spectral
# norm parametrized, batch norm as its own layer, contiguous tensors): "grouped" runs Er's branches side by
# side; "fused" folds spectral and batch norm into the convolutions and prepacks their weights, with Er as
# the config builds it (what EETModel.load_from_checkpoint gives); "_cl" adds channels-last tensors,
# "_bf16" bf16 autocast on top; "onnxruntime" is the fused form exported to ONNX (eet-export --out NAME.onnx)
# and run by onnxruntime.
# "allocator" is "fp32" again once `tune_cpu_allocator` has run: every row but "fp32" (and the
# "reference" training rows) is measured with the allocator eet-fit, eet-transfer and eet-evaluate set up.
VARIANTS = (
    "fp32",
    "allocator",
    "channels_last",
    "grouped",
    "fused",
    "fused_cl",
    "fused_cl_bf16",
    "fused_compiled",
    "onnxruntime",
)
MATMUL_SIZE = 2048
PAPER_MS_PER_IMAGE = 49.0  # EET per image at test time, footnote of the paper's Table IV (one GTX 1080 Ti)
# Training images per epoch with the paper's splits (section IV-A1); an epoch visits each once as side A.
# The paper trained each for 119, 106, 142 and 27 hours on one GTX 1080 Ti (IV-A2).
DATASET_TRAIN_IMAGES = {"DISFA": 87_210, "RaFD": 4_320, "MMI": 173_374, "CFD": 1_081}
PAPER_TRAIN_HOURS = {"DISFA": 119, "RaFD": 106, "MMI": 142, "CFD": 27}


# --------------------------------------------------------------------------------------------------
# the two configurations


@dataclass
class BenchConfig:
    """One model setting as eet-fit would build it from a YAML file (n and v as its data would give)."""

    name: str
    arch: ArchConfig
    variant: str
    loss_weights: dict[str, float]
    stage1: dict[str, Any]
    stage2: dict[str, Any]
    train_batch: int  # pairs per stage-1 step
    infer_batch: int  # pairs per batched transfer call
    data: dict[str, Any] = field(default_factory=dict)  # the YAML's data init_args
    stage2_batch: int | None = None  # pairs per stage-2 step (None: train_batch), as stage2.batch_size
    channels_last: bool = False  # model.channels_last of the YAML: the memory format eet-fit trains in

    def batch(self, stage: int) -> int:
        return self.train_batch if stage == 1 or self.stage2_batch is None else self.stage2_batch


STAGE1_KEYS = ("lr", "betas", "detach_discriminator_inputs")
STAGE2_KEYS = (
    "lr_generator",
    "lr_discriminator",
    "betas",
    "train_au_encoder_on_generated",
    "train_feature_discriminators",
)


def load_config(
    name: str, path: Path, num_identities: int, num_poses: int, train_batch: int, infer_batch: int
) -> BenchConfig:
    raw = yaml.safe_load(path.read_text())
    model, data = raw.get("model", {}), raw.get("data", {}).get("init_args", {})
    arch = ArchConfig.coerce(dict(model.get("arch", {})))
    arch = replace(
        arch,
        image_size=int(data.get("image_size", arch.image_size)),
        num_identities=num_identities,
        num_poses=num_poses,
    )
    return BenchConfig(
        name=name,
        arch=arch,
        variant=model.get("variant", "eet"),
        loss_weights=dict(model.get("loss_weights", {})),
        stage1={k: raw["stage1"][k] for k in STAGE1_KEYS if k in raw.get("stage1", {})},
        stage2={k: raw["stage2"][k] for k in STAGE2_KEYS if k in raw.get("stage2", {})},
        train_batch=train_batch,
        infer_batch=infer_batch,
        data=data,
        stage2_batch=raw.get("stage2", {}).get("batch_size"),
        channels_last=bool(model.get("channels_last", False)),
    )


def bench_configs(paper_train_batch: int, infer_batch: int) -> dict[str, BenchConfig]:
    """paper: configs/disfa.yaml (256 px, width 1); quick: configs/synthetic.yaml (the quick start);
    tiny: the quick start at a sixteenth of Table I's width and batch 2, to test this script in seconds."""
    synthetic = yaml.safe_load((REPO / "configs/synthetic.yaml").read_text())["data"]["init_args"]
    quick = load_config(
        "quick",
        REPO / "configs/synthetic.yaml",
        int(synthetic["num_train_identities"]),
        len(synthetic["poses"]),
        int(synthetic["batch_size"]),
        infer_batch,
    )
    return {
        # DISFA's training split: 18 subjects, frontal faces (one pose class)
        "paper": replace(
            load_config("paper", REPO / "configs/disfa.yaml", 18, 1, paper_train_batch, infer_batch),
            stage2_batch=paper_train_batch,
        ),
        "quick": quick,
        "tiny": replace(
            quick,
            name="tiny",
            arch=replace(quick.arch, width=0.0625, encoder_width=0.0625),
            train_batch=2,
            infer_batch=2,
            stage2_batch=2,
        ),
    }


# --------------------------------------------------------------------------------------------------
# measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS, so that the RSS baseline holds no earlier measurement."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """Peak memory above the level at ``start()``; see the module docstring for what is measured."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.resettable = True
        if device.type == "cuda":
            self.method = "cuda max_memory_allocated above the allocation at start"
        else:
            self.method = "peak RSS (VmHWM reset via /proc/self/clear_refs) above the RSS at start"
            try:
                Path("/proc/self/clear_refs").write_text("5")
                _status_kb("VmHWM")
            except (OSError, KeyError):
                self.resettable = False
                self.method = "process peak RSS (VmHWM, not resettable here: an upper bound) above start"

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.empty_cache()
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _trim_heap()
        if self.resettable:
            Path("/proc/self/clear_refs").write_text("5")
        self.base = _status_kb("VmRSS") * 1024

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        return max(0, _status_kb("VmHWM") * 1024 - self.base) / 2**20


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs of one call of ``fn`` (forward and, for a training step, backward), and its result."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def time_calls(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def figures(flops: int, times: list[float], images: int, reference: dict[str, float]) -> dict[str, Any]:
    best = min(times)
    rate = flops / best / 1e9
    fp32 = reference.get("matmul_fp32_gflops")
    return {
        "seconds": best,
        "seconds_median": statistics.median(times),
        "seconds_all": times,
        "images_per_s": images / best,
        "gflop": flops / 1e9,
        "gflops_per_s": rate,
        "ratio_to_fp32_matmul": rate / fp32 if fp32 else None,
    }


# --------------------------------------------------------------------------------------------------
# reference


def matmul_rate(dtype: torch.dtype, device: torch.device, repeats: int, n: int = MATMUL_SIZE) -> dict:
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    # on CUDA one product is too short to time alone: each timed call runs several
    inner = 50 if device.type == "cuda" else 1
    times = time_calls(lambda: [a @ b for _ in range(inner)], device, repeats, warmup=2)
    best = min(times) / inner
    return {"size": n, "seconds": best, "gflops_per_s": 2 * n**3 / best / 1e9}


def run_reference(device: torch.device, repeats: int) -> dict[str, Any]:
    out = {
        "fp32": matmul_rate(torch.float32, device, repeats),
        "bf16": matmul_rate(torch.bfloat16, device, repeats),
    }
    if device.type == "cuda":
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            out["tf32"] = matmul_rate(torch.float32, device, repeats)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    out["matmul_fp32_gflops"] = out["fp32"]["gflops_per_s"]
    out["matmul_bf16_gflops"] = out["bf16"]["gflops_per_s"]
    return out


# --------------------------------------------------------------------------------------------------
# inputs


def fake_side(cfg: BenchConfig, batch: int, device: torch.device, gen: torch.Generator) -> dict:
    s, a = cfg.arch.image_size, cfg.arch
    return {
        "image": (torch.rand(batch, 3, s, s, generator=gen) * 2 - 1).to(device),
        "aus": (torch.rand(batch, a.num_aus, generator=gen) * a.max_intensity).to(device),
        "identity": torch.randint(a.num_identities, (batch,), generator=gen).to(device),
        "pose": torch.randint(a.num_poses, (batch,), generator=gen).to(device),
    }


def fake_batch(cfg: BenchConfig, batch: int, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"a": fake_side(cfg, batch, device, gen), "b": fake_side(cfg, batch, device, gen)}


# --------------------------------------------------------------------------------------------------
# inference


def build_inference_model(cfg: BenchConfig, device: torch.device) -> EETModel:
    torch.manual_seed(0)
    return EETModel(cfg.arch, variant=cfg.variant).to(device).eval()


def run_inference(
    cfg: BenchConfig,
    batch: int,
    variants: list[str],
    device: torch.device,
    reference: dict,
    memory: PeakMemory,
    repeats: int,
    warmup: int,
    expected: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]],
) -> list[dict]:
    """Rows for ``variants``; "fp32"'s output is kept in ``expected`` for the others to compare with."""
    rows: list[dict] = []
    data = fake_batch(cfg, batch, device)
    a, b = data["a"]["image"], data["b"]["image"]
    for variant in variants:
        if variant == "onnxruntime":
            rows.append(
                run_onnxruntime(cfg, batch, a, b, device, reference, memory, repeats, warmup, expected)
            )
            continue
        memory.start()
        model = build_inference_model(cfg, device)
        # Er's branches: one after the other in the straightforward rows, side by side in "grouped", and
        # in the fused rows as the config builds them (what EETModel.load_from_checkpoint gives)
        model.au_related_encoder.grouped = (
            cfg.arch.grouped_au_encoder if variant.startswith("fused") else variant == "grouped"
        )
        if variant in ("fp32", "allocator", "channels_last"):  # spectral norm as W / sigma, then the conv
            unscaled_spectral_norm(model)
        x, y = a, b
        if variant.startswith("fused"):
            model.fuse()
        if variant in ("channels_last", "fused_cl", "fused_cl_bf16"):
            model = model.to(memory_format=torch.channels_last)
            x, y = (
                a.contiguous(memory_format=torch.channels_last),
                b.contiguous(memory_format=torch.channels_last),
            )

        def call(model: EETModel = model, x: torch.Tensor = x, y: torch.Tensor = y, variant: str = variant):
            if variant.endswith("bf16"):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return model.transfer(x, y)
            return model.transfer(x, y)

        row = {
            "config": cfg.name,
            "image_size": cfg.arch.image_size,
            "width": cfg.arch.width,
            "batch_pairs": batch,
            "variant": variant,
        }
        packed = [m for m in model.modules() if getattr(m, "prepacked", False)]
        try:
            # torch's FLOP counter does not know oneDNN's prepacked-weight ops: count the same arithmetic
            # with the plain convolutions, then run the prepacked form once for the output
            for layer in packed:
                layer.prepacked = False
            flops, out = count_flops(call)
            for layer in packed:
                layer.prepacked = True
            if variant == "fused_compiled":  # FLOPs counted on the eager fused form: the same arithmetic
                model.compile_for_inference()
            if packed or variant == "fused_compiled":  # (the compiled form's first call compiles it)
                with torch.no_grad():
                    out = call()
        except RuntimeError as err:  # a variant the library does not support (yet): say so, go on
            rows.append({**row, "error": str(err).splitlines()[0]})
            del model, call
            continue
        times = time_calls(call, device, repeats, warmup)
        row.update(figures(flops, times, 2 * batch, reference), peak_mb=memory.peak_mb())
        row["ms_per_image"] = 1000 / row["images_per_s"]
        if variant == "fp32":
            expected[(cfg.name, batch)] = out
        elif (cfg.name, batch) in expected:
            row["max_abs_diff_vs_fp32"] = max(
                float((o.float() - e).abs().max()) for o, e in zip(out, expected[(cfg.name, batch)])
            )
        if variant.endswith("bf16") and reference.get("matmul_bf16_gflops"):
            row["ratio_to_bf16_matmul"] = row["gflops_per_s"] / reference["matmul_bf16_gflops"]
        rows.append(row)
        del model, out, call
    return rows


_ONNX_FILES: dict[str, Path] = {}  # config name -> its fused model exported once (removed at exit)


def _onnx_file(cfg: BenchConfig, model: EETModel) -> Path:
    """The fused ``model`` of ``cfg`` as an ONNX file (`eet_lightning.onnx_model`), exported once per
    config into a temporary folder."""
    if cfg.name not in _ONNX_FILES:
        import atexit
        import shutil

        from eet_lightning.onnx_model import write_onnx

        folder = Path(tempfile.mkdtemp(prefix="eet-bench-onnx-"))
        atexit.register(shutil.rmtree, folder, True)
        record = {"dataset": "none (untrained benchmark weights)", "kind": "unknown"}
        _ONNX_FILES[cfg.name] = write_onnx(model, folder / f"{cfg.name}.onnx", record)
    return _ONNX_FILES[cfg.name]


def run_onnxruntime(
    cfg: BenchConfig,
    batch: int,
    a: torch.Tensor,
    b: torch.Tensor,
    device: torch.device,
    reference: dict,
    memory: PeakMemory,
    repeats: int,
    warmup: int,
    expected: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]],
) -> dict:
    """The "onnxruntime" row: the fused form's FLOPs counted in PyTorch and the graph exported (neither
    timed nor in the peak memory), then `OnnxTransferModel.transfer` timed; its peak memory counts
    onnxruntime's copy of the weights and its activations."""
    row = {
        "config": cfg.name,
        "image_size": cfg.arch.image_size,
        "width": cfg.arch.width,
        "batch_pairs": batch,
        "variant": "onnxruntime",
    }
    try:
        import onnxruntime as ort

        from eet_lightning.onnx_model import OnnxTransferModel

        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("this onnxruntime has no CUDAExecutionProvider")
            providers = ["CUDAExecutionProvider"]
        model = build_inference_model(cfg, torch.device("cpu"))
        model.au_related_encoder.grouped = cfg.arch.grouped_au_encoder
        model.fuse()
        for layer in model.modules():  # count the arithmetic on the plain convolutions (as for "fused")
            if getattr(layer, "prepacked", False):
                layer.prepacked = False
        flops, _ = count_flops(lambda m=model: m.transfer(a.cpu(), b.cpu()))
        path = _onnx_file(cfg, model)
        del model
        memory.start()
        session = OnnxTransferModel.load(path, what="bench", providers=providers)
    except (ImportError, ValueError, RuntimeError) as err:  # no onnxruntime here, no CUDA provider, ...
        return {**row, "error": str(err).strip().splitlines()[0]}

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        return session.transfer(a, b)

    out = call()  # onnxruntime plans its memory on the first run of a shape
    times = time_calls(call, device, repeats, warmup)
    row.update(figures(flops, times, 2 * batch, reference), peak_mb=memory.peak_mb())
    row["ms_per_image"] = 1000 / row["images_per_s"]
    row["providers"] = session.providers
    if (cfg.name, batch) in expected:
        row["max_abs_diff_vs_fp32"] = max(
            float((o.float() - e).abs().max()) for o, e in zip(out, expected[(cfg.name, batch)])
        )
    return row


# --------------------------------------------------------------------------------------------------
# training


def _no_log(*args: Any, **kwargs: Any) -> None:
    """Stands in for ``log_losses``: outside a Trainer, Lightning's ``self.log`` has nowhere to go."""


# Training forms: "reference" is the straightforward one (`reference_forms.reference_form`: each side of a
# pair through its own passes, each discriminator input through its own call, torch's default Adam, aten's
# PReLU backward, spectral norm on the weight; plus Er's branches one after the other, contiguous tensors,
# the C allocator's defaults); "optimized" is what eet-fit trains with for that config (the library's
# stage modules as they are: batched passes, shared discriminator calls, fused Adam, the tuned allocator,
# and the YAML's arch.grouped_au_encoder and channels_last).
TRAINING_FORMS = ("reference", "optimized", "optimized_bf16")
# the forms compared call for call (the bf16 one computes other numbers: it is a precision choice)
SAME_ARITHMETIC_FORMS = ("reference", "optimized")


def _training_module(
    kind: type[Stage1Module] | type[Stage2Module],
    options: dict,
    cfg: BenchConfig,
    device: torch.device,
    optimized: bool,
) -> Stage1Module | Stage2Module:
    """A stage module as eet-fit builds it, in train mode, set up for fitting, in the given form."""
    torch.manual_seed(0)
    module = kind(
        arch=cfg.arch,
        variant=cfg.variant,
        loss_weights=cfg.loss_weights,
        channels_last=optimized and cfg.channels_last,
        **options,
    ).to(device)
    module.au_related_encoder.grouped = optimized and cfg.arch.grouped_au_encoder
    if not optimized:  # per-side passes, separate discriminator calls, default Adam, reference layers
        reference_form(module)
    module.trainer = SimpleNamespace(max_epochs=1)  # all configure_optimizers reads from a Trainer
    module.setup("fit")
    module.train()
    module.log_losses = _no_log
    return module


def stage1_step(cfg: BenchConfig, device: torch.device, optimized: bool) -> Callable[[], Any]:
    """One step of stage 1 as Lightning's automatic optimization runs it: zero_grad, training_step,
    backward, Adam step (the optimizer of ``configure_optimizers``)."""
    module = _training_module(Stage1Module, cfg.stage1, cfg, device, optimized)
    opt = module.configure_optimizers()["optimizer"]
    batch = fake_batch(cfg, cfg.batch(1), device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        module.training_step(batch, 0).backward()
        opt.step()

    step.module = module  # type: ignore[attr-defined]  # keeps the module alive with the closure
    return step


def stage2_step(cfg: BenchConfig, device: torch.device, optimized: bool) -> Callable[[], Any]:
    """``Stage2Module.training_step`` itself (generator step, then discriminator step, with toggled
    optimizers), with a minimal stand-in for the Trainer: the two optimizers of ``configure_optimizers``,
    plain ``backward`` for ``manual_backward`` (what Lightning's does at 32-true precision on one device)
    and no logging."""
    module = _training_module(Stage2Module, cfg.stage2, cfg, device, optimized)
    (opt_g, opt_d), _ = module.configure_optimizers()
    module.trainer = SimpleNamespace(max_epochs=1, optimizers=[opt_g, opt_d])  # read by toggle_optimizer
    module.optimizers = lambda: (opt_g, opt_d)
    module.manual_backward = lambda loss: loss.backward()
    batch = fake_batch(cfg, cfg.batch(2), device)

    def step() -> None:
        module.training_step(batch, 0)

    step.module = module  # type: ignore[attr-defined]
    return step


def run_training(
    cfg: BenchConfig,
    stage: int,
    device: torch.device,
    reference: dict,
    memory: PeakMemory,
    repeats: int,
    warmup: int,
    form: str = "reference",
    flops: int | None = None,
) -> dict:
    """One training form timed. ``flops``: the step's FLOPs when already counted on another form of the
    same arithmetic (torch's counter overcounts the backward of grouped convolutions, so the optimized
    form's FLOPs are taken from the reference form's count)."""
    memory.start()
    make = stage1_step if stage == 1 else stage2_step
    step = make(cfg, device, form != "reference")
    if form == "optimized_bf16":  # what the Trainer's precision="bf16-mixed" does: autocast around the step
        plain = step

        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                plain()

        step.module = plain.module  # type: ignore[attr-defined]
    counted, _ = count_flops(step)  # also the first (warm-up) step
    flops = counted if flops is None else flops
    times = time_calls(step, device, repeats, warmup)
    row = {
        "config": cfg.name,
        "stage": stage,
        "image_size": cfg.arch.image_size,
        "width": cfg.arch.width,
        "batch_pairs": cfg.batch(stage),
        "variant": form,
        **figures(flops, times, 2 * cfg.batch(stage), reference),
        "peak_mb": memory.peak_mb(),
    }
    row["pairs_per_s"] = cfg.batch(stage) / row["seconds"]
    if form == "optimized_bf16" and reference.get("matmul_bf16_gflops"):
        row["ratio_to_bf16_matmul"] = row["gflops_per_s"] / reference["matmul_bf16_gflops"]
    del step
    return row


def side_by_side(
    cfg: BenchConfig, stage: int, device: torch.device, rounds: int, calls: int, warmup: int
) -> dict:
    """The speed-up of the optimized training form over the reference form, measured interleaved: both
    steps built in one process, then ``rounds`` rounds of ``calls`` timed calls of the reference form
    followed by ``calls`` of the optimized one. Each round's ratio of medians compares the two forms a
    second apart, so a drift in the machine's speed (other virtual machines on the host, frequency)
    moves both; the median over rounds and its range are reported. Both forms run with the C
    allocator setting in force at the time (the tuned one: it is process-wide and cannot be undone)."""
    make = stage1_step if stage == 1 else stage2_step
    steps = {form: make(cfg, device, form == "optimized") for form in SAME_ARITHMETIC_FORMS}
    for step in steps.values():
        time_calls(step, device, 0, warmup)
    per_round: dict[str, list[float]] = {form: [] for form in SAME_ARITHMETIC_FORMS}
    for _ in range(rounds):
        for form, step in steps.items():
            per_round[form].append(statistics.median(time_calls(step, device, calls, 0)))
    ratios = [r / o for r, o in zip(per_round["reference"], per_round["optimized"])]
    return {
        "config": cfg.name,
        "stage": stage,
        "image_size": cfg.arch.image_size,
        "batch_pairs": cfg.batch(stage),
        "rounds": rounds,
        "calls_per_round": calls,
        "reference_seconds": statistics.median(per_round["reference"]),
        "optimized_seconds": statistics.median(per_round["optimized"]),
        "reference_seconds_all": per_round["reference"],
        "optimized_seconds_all": per_round["optimized"],
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
    }


# --------------------------------------------------------------------------------------------------
# data


def synthetic_rate(cfg: BenchConfig, batches: int, samples: int, memory: PeakMemory) -> dict:
    """Pairs per second from the SyntheticDataModule with the quick-start settings (its pool of
    ``samples`` pre-rendered faces; rendering is set-up, not throughput)."""
    from eet_lightning.datamodules import SyntheticDataModule

    settings = {k: v for k, v in cfg.data.items() if k != "cache_dir"}
    settings.update(train_samples=samples, cache_dir=None)
    memory.start()
    dm = SyntheticDataModule(**settings)
    dm.setup("fit")
    batch_size, size = int(settings["batch_size"]), int(settings["image_size"])
    rate = data_throughput.pairs_per_second(dm.train_dataloader(), batches, (batch_size, 3, size, size))
    return {
        "source": "synthetic",
        "config": cfg.name,
        "image_size": int(settings["image_size"]),
        "batch_pairs": batch_size,
        "workers": int(settings.get("num_workers", 0)),
        "pairs_per_s": rate,
        "peak_mb": memory.peak_mb(),
    }


def manifest_rate(batches: int, images: int, workers: int, memory: PeakMemory) -> dict:
    """Pairs per second from a FolderDataModule on an eet-prepare output of seeded synthetic 256 px crops
    (data_throughput.py's miniature and loader loop: batch 16, 256 px, mirror on)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_throughput.write_crops(root / "crops", images)
        with contextlib.redirect_stdout(sys.stderr):  # keep its summary line out of the table
            data_throughput.time_prepare(root / "crops", root / "prepared", "none")
        memory.start()
        rate = data_throughput.time_loader(root / "prepared", batches, workers)
        peak = memory.peak_mb()
    return {
        "source": "manifest",
        "config": "paper",
        "image_size": 256,
        "batch_pairs": 16,
        "workers": workers,
        "pairs_per_s": rate,
        "peak_mb": peak,
    }


# --------------------------------------------------------------------------------------------------
# epoch cost


def epoch_costs(stage2_row: dict, devices: tuple[int, ...] = (1, 8)) -> list[dict]:
    """One stage-2 epoch of each dataset from the measured paper-config stage-2 step: steps of
    ``batch_pairs`` pairs per device, ``images / (batch_pairs x devices)`` steps. With more than one device
    the step time is the one-device time, a lower bound: DDP's gradient all-reduce (255 M parameters) is
    not in it, and is not measured on a single device."""
    rows = []
    for name, images in DATASET_TRAIN_IMAGES.items():
        for n in devices:
            steps = math.ceil(images / (stage2_row["batch_pairs"] * n))
            rows.append(
                {
                    "dataset": name,
                    "train_images": images,
                    "devices": n,
                    "batch_pairs_per_device": stage2_row["batch_pairs"],
                    "steps": steps,
                    "hours": steps * stage2_row["seconds"] / 3600,
                    "measured": n == 1,
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------
# report


def print_table(result: dict) -> None:
    m, ref = result["machine"], result.get("reference", {})
    print(f"\n{m['device_name']} ({m['device']}), torch {m['torch']}, {m['threads']} threads")
    print(
        f"load average at start {m['load_start']:.2f}, after the model rows {m['load_end']:.2f} "
        f"({m['cpu_count']} CPUs; the second counts this benchmark's own threads)"
    )
    if m["load_start"] > 0.5 * (m["cpu_count"] or 1):
        print("  WARNING: other work was running at the start; these figures may not be the machine's own")
    print(f"peak memory: {result['memory_measure']}")
    if "allocator_tuned" in m:
        state = "tuned (eet_lightning.runtime)" if m["allocator_tuned"] else "could not be tuned here"
        print(f"C allocator: defaults for the fp32 / reference rows, {state} for every other row")
    if ref:
        line = f"reference: fp32 matmul {ref['matmul_fp32_gflops']:.1f} GFLOP/s, bf16 {ref['matmul_bf16_gflops']:.1f}"
        if "tf32" in ref:
            line += f", tf32 {ref['tf32']['gflops_per_s']:.1f}"
        print(line + f" GFLOP/s ({MATMUL_SIZE} x {MATMUL_SIZE}, best of the repeats)")
    head = f"{'':36} {'s/call':>8} {'img/s':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'/fp32mm':>7} {'peak MB':>8}"
    for section in ("inference", "training"):
        rows = result.get(section, [])
        if not rows:
            continue
        print(f"\n{section}\n{head}  extra")
        for r in rows:
            if "error" in r:
                name = f"{r['config']} {r['image_size']}px b{r['batch_pairs']} {r['variant']}"
                print(f"{name:36} failed: {r['error'][:100]}")
                continue
            if section == "inference":
                name = f"{r['config']} {r['image_size']}px b{r['batch_pairs']} {r['variant']}"
                extra = f"{r['ms_per_image']:.1f} ms/img"
                if "max_abs_diff_vs_fp32" in r:
                    extra += f", max|diff| {r['max_abs_diff_vs_fp32']:.2e}"
                if "ratio_to_bf16_matmul" in r:
                    extra += f", {r['ratio_to_bf16_matmul']:.1%} of bf16 matmul"
            else:
                name = (
                    f"{r['config']} stage{r['stage']} {r['image_size']}px b{r['batch_pairs']} {r['variant']}"
                )
                extra = f"{r['pairs_per_s']:.2f} pairs/s"
                if "speedup_vs_reference" in r:
                    extra += f", {r['speedup_vs_reference']:.2f}x the reference form"
                if "ratio_to_bf16_matmul" in r:
                    extra += f", {r['ratio_to_bf16_matmul']:.1%} of bf16 matmul"
            print(
                f"{name:36} {r['seconds']:8.3f} {r['images_per_s']:8.2f} {r['gflop']:8.2f} "
                f"{r['gflops_per_s']:8.1f} {r['ratio_to_fp32_matmul'] or 0:7.1%} {r['peak_mb']:8.0f}  {extra}"
            )
    if result.get("side_by_side"):
        print("\ntraining, the two forms interleaved (median of rounds; both with the tuned allocator)")
        for r in result["side_by_side"]:
            name = f"{r['config']} stage{r['stage']} {r['image_size']}px b{r['batch_pairs']}"
            print(
                f"{name:36} reference {r['reference_seconds']:.3f} s, optimized {r['optimized_seconds']:.3f} s: "
                f"{r['speedup']:.2f}x (rounds {r['speedup_min']:.2f}-{r['speedup_max']:.2f}x, "
                f"{r['rounds']} x {r['calls_per_round']} calls)"
            )
    if result.get("data"):
        print(f"\ndata\n{'':36} {'pairs/s':>8} {'step p/s':>8} {'ratio':>8} {'peak MB':>8}")
        for r in result["data"]:
            name = f"{r['source']} {r['image_size']}px b{r['batch_pairs']} w{r['workers']}"
            step, ratio = r.get("step_pairs_per_s"), r.get("ratio_to_stage2_step")
            step_text = f"{step:8.2f}" if step else f"{'-':>8}"
            ratio_text = f"{ratio:7.1f}x" if ratio else f"{'-':>8}"
            print(
                f"{name:36} {r['pairs_per_s']:8.1f} {step_text} {ratio_text} {r['peak_mb']:8.0f}  "
                f"(vs the {r['config']} stage-2 step)"
            )
    if result.get("epoch_cost"):
        print(
            "\none stage-2 epoch at the paper config (the optimized step above; 8 devices: that step time, a lower bound)"
        )
        for r in result["epoch_cost"]:
            note = "" if r["measured"] else "  (all-reduce not included)"
            print(
                f"  {r['dataset']:6} {r['train_images']:>7,} images  {r['devices']} device(s) x "
                f"{r['batch_pairs_per_device']} pairs: {r['steps']:>7,} steps, {r['hours']:8.2f} h{note}"
            )
    paper = [
        r
        for r in result.get("inference", [])
        if r["config"] == "paper" and r["batch_pairs"] == 1 and r["variant"] == "fp32" and "error" not in r
    ]
    if paper:
        ms = paper[0]["ms_per_image"]
        print(
            f"paper config, one pair: {ms:.1f} ms per image; the paper's EET: {PAPER_MS_PER_IMAGE:.0f} ms "
            f"per image on a GTX 1080 Ti ({PAPER_MS_PER_IMAGE / ms:.2f}x)"
        )
    print()


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(
            f"bench.py: {what} must be a comma-separated subset of {','.join(allowed)}, got {text!r}"
        )
    return items


def main(argv: list[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    parser.add_argument("--quick", action="store_true", help="one timed repeat each, small data runs (CI)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"subset of {','.join(SECTIONS)}")
    parser.add_argument(
        "--configs", default="paper,quick", help="subset of paper,quick,tiny (tiny: for tests of this script)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"inference variants from {','.join(VARIANTS)} (fp32, the training form, is always measured first)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--infer-batch", type=int, default=16, help="pairs per batched transfer call")
    parser.add_argument("--paper-train-batch", type=int, default=2, help="pairs per step at the paper config")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed repeats (default 5, 2 slow, 1 quick)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers of the manifest DataModule"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="rounds of the interleaved reference/optimized training comparison (default 7)",
    )
    parser.add_argument("--out", default="runs/bench.json", help="where the JSON goes")
    args = parser.parse_args(argv)

    sections = parse_list(args.only, SECTIONS, "--only")
    if args.rounds < 1:
        raise SystemExit(f"bench.py: --rounds must be at least 1, got {args.rounds}")
    configs = parse_list(args.configs, ("paper", "quick", "tiny"), "--configs")
    variants = parse_list(args.variants, VARIANTS, "--variants")
    variants = ["fp32"] + [v for v in variants if v != "fp32"]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise SystemExit(
            f"bench.py: --device must be cpu, cuda, cuda:N or auto, got {args.device!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.py: --device cuda given, but torch sees no CUDA device")
    quick = args.quick
    cuda = device.type == "cuda"
    # repeats: fast calls get more; the 256 px / width 1 CPU steps take seconds each, so two warm-ups
    # (the FLOP-counting call and one more: the C allocator's heap reaches the step's peak in the first
    # steps, each new 4 KB page costing a fault, ~8 us on this VM) and 2 timed calls
    fast_repeats = args.repeats or (1 if quick else 5)
    slow_repeats = args.repeats or (1 if quick else (5 if cuda else 2))
    # the FLOP-counting call is always the first warm-up
    fast_warmup, slow_warmup = (0 if quick else 1, 0 if quick else 1) if not cuda else (3, 2)
    # batched 256 px inference on CPU (seconds a call, eight forms): the counting call is its only warm-up
    # (no optimizer state or backward buffers to settle, unlike a training step), to keep the run < 10 min
    slow_infer_warmup = 0 if not cuda else slow_warmup
    # interleaved reference/optimized training steps: rounds, timed calls of each form per round, warm-ups
    side_by_side_plan = (2, 1, 1) if quick else (args.rounds, 3, 5)

    all_configs = bench_configs(args.paper_train_batch, args.infer_batch)
    memory = PeakMemory(device)
    result: dict[str, Any] = {
        "machine": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_start": os.getloadavg()[0],
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
        },
        "settings": {
            "quick": quick,
            "configs": {
                n: {
                    "arch": c.arch.to_dict(),
                    "variant": c.variant,
                    "train_batch": {"stage1": c.batch(1), "stage2": c.batch(2)},
                }
                for n, c in all_configs.items()
                if n in configs
            },
            "timing": "best of the timed repeats; the FLOP-counting call is the first warm-up",
            "repeats": {"fast": fast_repeats, "slow": slow_repeats},
            "warmups_after_flop_count": {
                "fast": fast_warmup,
                "slow": slow_warmup,
                "slow_inference": slow_infer_warmup,
            },
            "slow": "paper-config batched inference and training steps on CPU",
        },
        "memory_measure": memory.method,
    }
    _cpu_name(result)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    reference = {}
    if "reference" in sections or any(s in sections for s in ("inference", "training")):
        log("reference: matmul ...")
        reference = run_reference(device, 3 if quick else (20 if cuda else 10))
        result["reference"] = reference

    # The straightforward forms first, with the C allocator's defaults; then the allocator eet-fit uses
    # (a process-wide setting that cannot be undone) and every other form.
    expected: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    result["inference"], result["training"] = [], []
    training_rows: dict[tuple[str, int], dict[str, dict]] = {}

    def measure_inference(names: list[str]) -> None:
        if "inference" not in sections:
            return
        for name in configs:
            cfg = all_configs[name]
            slow = name == "paper" and not cuda
            for batch in (1, cfg.infer_batch):
                log(f"inference: {name} batch {batch} {','.join(names)} ...")
                result["inference"] += run_inference(
                    cfg,
                    batch,
                    names,
                    device,
                    reference,
                    memory,
                    slow_repeats if slow and batch > 1 else fast_repeats,
                    slow_infer_warmup if slow and batch > 1 else fast_warmup,
                    expected,
                )

    def measure_training(form: str) -> None:
        if "training" not in sections:
            return
        for name in configs:
            cfg = all_configs[name]
            slow = name == "paper" and not cuda
            repeats, warmup = (slow_repeats, slow_warmup) if slow else (fast_repeats, fast_warmup)
            for stage in (1, 2):
                log(f"training: {name} stage {stage} {form} ...")
                rows = training_rows.setdefault((name, stage), {})
                counted = rows["reference"]["gflop"] * 1e9 if "reference" in rows else None
                rows[form] = run_training(
                    cfg, stage, device, reference, memory, repeats, warmup, form, counted
                )
                result["training"].append(rows[form])

    measure_inference(["fp32"])
    measure_training("reference")
    result["machine"]["allocator_tuned"] = tune_cpu_allocator()
    measure_inference([v for v in variants if v != "fp32"])
    measure_training("optimized")
    measure_training("optimized_bf16")
    if "training" in sections:
        # the speed-up again, the two forms interleaved (the configs whose steps take under a second)
        result["side_by_side"] = []
        for name in configs:
            if name == "paper" and not cuda:
                continue
            for stage in (1, 2):
                log(f"training side by side: {name} stage {stage} ...")
                result["side_by_side"].append(
                    side_by_side(all_configs[name], stage, device, *side_by_side_plan)
                )

    stage2_rates: dict[str, float] = {}
    for (name, stage), rows in training_rows.items():
        for form in ("optimized", "optimized_bf16"):
            if "reference" in rows and form in rows:
                rows[form]["speedup_vs_reference"] = rows["reference"]["seconds"] / rows[form]["seconds"]
        if stage == 2 and "optimized" in rows:  # the form the library trains with
            stage2_rates[name] = rows["optimized"]["pairs_per_s"]
    order = {n: i for i, n in enumerate(configs)}
    result["inference"].sort(
        key=lambda r: (order[r["config"]], r["batch_pairs"], VARIANTS.index(r["variant"]))
    )
    result["training"].sort(
        key=lambda r: (order[r["config"]], r["stage"], TRAINING_FORMS.index(r["variant"]))
    )
    for section in ("inference", "training"):
        if section not in sections:
            del result[section]

    paper_stage2 = training_rows.get(("paper", 2), {}).get("optimized")
    if paper_stage2:
        result["epoch_cost"] = epoch_costs(paper_stage2)

    # before the data rows: their DataLoader worker processes count in the load average themselves
    result["machine"]["load_end"] = os.getloadavg()[0]
    if "data" in sections:
        result["data"] = []
        log("data: synthetic ...")
        # the synthetic DataModule feeds the quick start (or the tiny config when only that is measured)
        synthetic_cfg = all_configs["tiny" if configs == ["tiny"] else "quick"]
        rows = [synthetic_rate(synthetic_cfg, 10 if quick else 60, 128 if quick else 600, memory)]
        log("data: manifest ...")
        rows.append(manifest_rate(4 if quick else 30, 48 if quick else 96, args.workers, memory))
        for row in rows:
            step = stage2_rates.get(row["config"])
            row["step_pairs_per_s"] = step
            row["ratio_to_stage2_step"] = row["pairs_per_s"] / step if step else None
        result["data"] = rows

    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _cpu_name(result: dict) -> None:
    if result["machine"]["device"] != "cpu":
        return
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                result["machine"]["device_name"] = line.split(":", 1)[1].strip()
                return
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
