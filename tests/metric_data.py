"""Data and a worker for the 2-process metric test (a light module: spawned processes import it)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from eet_lightning.metrics import ICC31, AUIntensityMSE, FaceVerification, GazeAccuracy


def _random_au_data(n: int = 300, m: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(n, m, generator=g, dtype=torch.float64) * 5
    noise = torch.randn(n, m, generator=g, dtype=torch.float64) * torch.linspace(
        0.3, 3, m, dtype=torch.float64
    )
    return source, (0.8 * source + 0.5 + noise).clamp(0, 5)


def _verification_data(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 16, generator=g)
    same = torch.arange(n) % 2 == 0
    other = torch.randn(n, 16, generator=g)
    partner = torch.where(same[:, None], base + 0.9 * torch.randn(n, 16, generator=g), other)
    return base, partner, same


def _all_metrics() -> tuple[dict, dict]:
    source, generated = _random_au_data(n=301, m=4, seed=3)
    a, b, same = _verification_data(n=201, seed=3)
    gaze_pred = torch.randint(3, (101,), generator=torch.Generator().manual_seed(3))
    gaze_true = torch.randint(3, (101,), generator=torch.Generator().manual_seed(4))
    data = {
        "icc": (source, generated),
        "mse": (generated, source),
        "verification": (a, b, same),
        "verification_indexed": (a, b, same, torch.arange(201)),
        "gaze": (gaze_pred, gaze_true),
    }
    metrics = {
        "icc": ICC31(num_aus=4),
        "mse": AUIntensityMSE(num_aus=4),
        "verification": FaceVerification(),
        "verification_indexed": FaceVerification(),
        "gaze": GazeAccuracy(),
    }
    return data, metrics


def _flat(results: dict) -> dict[str, torch.Tensor]:
    return {f"{k}.{kk}": v.double().cpu() for k, r in results.items() for kk, v in r.items()}


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        data, metrics = _all_metrics()
        for name, metric in metrics.items():
            n = data[name][0].shape[0]
            # interleaved shards as a DistributedSampler deals them, in two updates each
            mine = torch.arange(rank, n, world)
            for chunk in mine.chunk(2):
                metric.update(*[t[chunk] for t in data[name]])
        results = _flat({name: metric.compute() for name, metric in metrics.items()})
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()
