"""Scoring a transfer against the exact ground truth of the synthetic faces.

For a pair (target A, source B) of held-out identities the true swap is A rendered with B's AUs and
gaze. We compare, over the whole image and over the AU region (the pixels where A rendered with its
own AUs and with B's differ), L1, PSNR and SSIM against the truth of:

- ``swapped``: G(f_r^b, f_f^a), the transfer;
- ``target_self``: G(f_r^a, f_f^a), the target's self-reconstruction (right identity, wrong expression);
- ``source_self``: G(f_r^b, f_f^b), the source's self-reconstruction (right expression, wrong identity);
- ``target``, ``source``: the unchanged input images;
- any other method's images for the same pairs (``generated``).

A transfer that works beats ``target_self`` in the AU region (it moved the expression) and beats
``source_self`` on the whole image (it kept the identity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torchmetrics.functional.image import structural_similarity_index_measure

from eet_lightning.evaluation.protocols import FaceSet
from eet_lightning.methods import load_transfer_model
from eet_lightning.methods.inference import TransferModel
from eet_lightning.pixels import to_model_range

CANDIDATES = ("swapped", "target_self", "source_self", "target", "source")
MEASURES = ("l1", "psnr", "ssim")
PSNR_CAP = 100.0  # dB, for a region that matches exactly (the unchanged source in its own AU region)


def _to_model(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(images, torch.Tensor):  # already [n, 3, H, W] in [-1, 1]
        return images.to(device, torch.float32)
    return to_model_range(images).to(device)


def image_errors(image: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image L1, PSNR (dB) and SSIM in [0, 1] pixel units, over the whole image and over ``mask``.

    ``image``, ``truth`` [n, 3, H, W] in [-1, 1]; ``mask`` bool [n, H, W]. PSNR is capped at 100 dB; for
    an empty mask the region values are NaN.
    """
    x, t = (image.clamp(-1, 1) + 1) / 2, (truth + 1) / 2
    m = mask.to(x.dtype)
    count = m.sum((1, 2))
    region = count > 0
    abs_err = (x - t).abs().mean(1)
    sq_err = (x - t).pow(2).mean(1)
    _, ssim_map = structural_similarity_index_measure(
        x, t, data_range=1.0, return_full_image=True, reduction="none"
    )
    ssim_map = ssim_map.mean(1)

    def masked(v: torch.Tensor) -> torch.Tensor:
        out = (v * m).sum((1, 2)) / count.clamp(min=1)
        return torch.where(region, out, torch.full_like(out, float("nan")))

    def psnr(mse: torch.Tensor) -> torch.Tensor:
        return (10 * torch.log10(1 / mse.clamp(min=1e-30))).clamp(max=PSNR_CAP)

    return {
        "whole_l1": abs_err.mean((1, 2)),
        "au_region_l1": masked(abs_err),
        "whole_psnr": psnr(sq_err.mean((1, 2))),
        "au_region_psnr": torch.where(region, psnr(masked(sq_err)), torch.full_like(count, float("nan"))),
        "whole_ssim": ssim_map.mean((1, 2)),
        "au_region_ssim": masked(ssim_map),
    }


@torch.no_grad()
def score_transfer(
    model: TransferModel | None,
    target: np.ndarray,
    source: np.ndarray,
    truth: np.ndarray,
    batch_size: int = 50,
    generated: dict[str, np.ndarray | torch.Tensor] | None = None,
    aus_only: np.ndarray | None = None,
    source_labels: dict[str, np.ndarray] | None = None,
    target_labels: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Mean L1 (in [0, 1] pixel units), PSNR and SSIM of every candidate against ``truth``, over the whole
    image and over the AU region.

    The AU region of a pair is where the target rendered with its own AUs and with the source's AUs differ:
    ``aus_only`` is the target rendered with the source's AUs and everything else its own (gaze included).
    Without it, the region is where the target and ``truth`` differ (which also counts gaze changes).

    ``target``, ``source`` and ``truth`` are uint8 [N, H, W, 3]; ``truth`` is the target rendered with the
    source's AUs and gaze. ``generated`` adds other methods' images for the same pairs (uint8 [N, H, W, 3]
    or float [N, 3, H, W] in [-1, 1]). Without a model only the unchanged inputs and ``generated`` are scored.
    ``model`` is any method's `TransferModel`: ``swapped`` is its `swap`, ``target_self`` and ``source_self``
    its `reconstruct`. ``source_labels`` / ``target_labels`` (per pair, e.g. ``{"aus": [N, m]}``): what a
    conditional model (GANimation, StarGAN) is given as the source's expression for the swap and as each
    image's own for its reconstruction, instead of reading them from the images.
    """
    if not (target.shape == source.shape == truth.shape) or target.ndim != 4:
        raise ValueError(
            f"target, source and truth must share one [N, H, W, 3] shape, got "
            f"{target.shape}, {source.shape}, {truth.shape}"
        )
    generated = dict(generated or {})
    for name, images in generated.items():
        if len(images) != len(target):
            raise ValueError(f"generated images {name!r}: {len(images)} for {len(target)} pairs")
    names = [c for c in CANDIDATES if model is not None or c in ("target", "source")] + list(generated)
    if aus_only is not None and aus_only.shape != target.shape:
        raise ValueError(f"aus_only must have the targets' shape {target.shape}, got {aus_only.shape}")
    region = np.any(target != (truth if aus_only is None else aus_only), axis=-1)  # [N, H, W]
    values: dict[str, dict[str, list[torch.Tensor]]] = {c: {} for c in names}
    device = model.device if model is not None else torch.device("cpu")
    for start in range(0, len(target), batch_size):
        sl = slice(start, start + batch_size)
        a, b = _to_model(target[sl], device), _to_model(source[sl], device)
        images = {"target": a, "source": b}
        if model is not None:
            images["swapped"] = model.swap(a, b, _rows_of(source_labels, sl))
            # each image with its own expression: a conditional model given its own labels where known
            if target_labels is not None and getattr(model, "condition_labels", ()):
                images["target_self"] = model.swap(a, a, _rows_of(target_labels, sl))
                images["source_self"] = model.swap(b, b, _rows_of(source_labels, sl))
            else:
                images["target_self"] = model.reconstruct(a).clamp(-1, 1)
                images["source_self"] = model.reconstruct(b).clamp(-1, 1)
        for name, imgs in generated.items():
            images[name] = _to_model(imgs[sl], device)
        t = _to_model(truth[sl], device)
        mask = torch.from_numpy(region[sl]).to(device)
        for name in names:
            for key, v in image_errors(images[name], t, mask).items():
                values[name].setdefault(key, []).append(v.cpu())
    per = {c: {k: torch.cat(v).numpy() for k, v in d.items()} for c, d in values.items()}
    has_region = region.reshape(len(region), -1).any(1)
    result: dict[str, Any] = {
        "pairs": int(len(target)),
        "pairs_with_au_region": int(has_region.sum()),
        "au_region_fraction": float(region.mean()),
    }
    for key in per[names[0]]:
        sel = has_region if key.startswith("au_region") else slice(None)
        result[key] = {c: float(per[c][key][sel].mean()) for c in names}
    if model is not None:
        region_gap = (
            per["swapped"]["au_region_l1"][has_region] - per["target_self"]["au_region_l1"][has_region]
        )
        whole_gap = per["swapped"]["whole_l1"] - per["source_self"]["whole_l1"]
        result.update(
            {
                "au_region_swapped_minus_target_self": float(region_gap.mean()),
                "au_region_swapped_beats_target_self_rate": float((region_gap < 0).mean()),
                "whole_swapped_minus_source_self": float(whole_gap.mean()),
                "whole_swapped_beats_source_self_rate": float((whole_gap < 0).mean()),
                "passes": bool(
                    region_gap.mean() < 0 and (region_gap < 0).mean() >= 0.6 and whole_gap.mean() < 0
                ),
            }
        )
    return result


def _rows_of(labels: dict[str, np.ndarray] | None, rows: slice) -> dict[str, torch.Tensor] | None:
    return None if labels is None else {k: torch.from_numpy(np.asarray(v[rows])) for k, v in labels.items()}


def format_report(result: dict[str, Any]) -> str:
    names = list(result["whole_l1"])
    lines = [
        f"{result['pairs']} held-out pairs; AU region = {100 * result['au_region_fraction']:.1f}% of pixels",
        f"{'candidate':<14}{'whole L1':>10}{'AU-region L1':>14}{'whole PSNR':>12}{'AU PSNR':>10}"
        f"{'whole SSIM':>12}{'AU SSIM':>10}",
    ]
    for c in names:
        row = [result[k][c] for k in ("whole_l1", "au_region_l1", "whole_psnr", "au_region_psnr")]
        ssim = [result[k][c] for k in ("whole_ssim", "au_region_ssim")] if "whole_ssim" in result else [0, 0]
        lines.append(
            f"{c:<14}{row[0]:>10.4f}{row[1]:>14.4f}{row[2]:>12.2f}{row[3]:>10.2f}{ssim[0]:>12.4f}{ssim[1]:>10.4f}"
        )
    if "passes" in result:
        lines += [
            f"AU region: swapped - target_self = {result['au_region_swapped_minus_target_self']:+.4f} "
            f"(swapped wins on {100 * result['au_region_swapped_beats_target_self_rate']:.1f}% of pairs; need < 0 and >= 60%)",
            f"whole image: swapped - source_self = {result['whole_swapped_minus_source_self']:+.4f} "
            f"(swapped wins on {100 * result['whole_swapped_beats_source_self_rate']:.1f}% of pairs; need < 0)",
            f"transfer criteria: {'PASS' if result['passes'] else 'FAIL'}",
        ]
    return "\n".join(lines)


def synthetic_faces(
    data: Any, num_pairs: int, seed: int
) -> tuple[FaceSet, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Held-out synthetic pairs as a `FaceSet` of 2N images (A-sides then B-sides), the expression pair
    list over them (rows 2k, 2k+1 = (A_k, B_k), (B_k, A_k)), and per row the truth and the target with the
    source's AUs alone (which defines the AU region), uint8 [2N, H, W, 3]."""
    held = data.held_out_pairs(num_pairs, seed=seed)
    ra, rb = held["records_a"], held["records_b"]
    images = np.concatenate([held["a"], held["b"]])
    cols = data.au_columns
    faces = FaceSet.from_arrays(
        images,
        identity=np.concatenate([ra.identity, rb.identity]),
        names=[f"a{i:05d}" for i in range(num_pairs)] + [f"b{i:05d}" for i in range(num_pairs)],
        aus=np.concatenate([ra.aus[:, cols], rb.aus[:, cols]]),
        gaze=np.concatenate([ra.gaze, rb.gaze]),
        emotion=np.concatenate([ra.emotion, rb.emotion]),
    )
    k = np.arange(num_pairs)
    target = np.stack([k, num_pairs + k], 1).ravel()
    source = np.stack([num_pairs + k, k], 1).ravel()
    pairs = {"row": np.arange(2 * num_pairs), "pair": np.repeat(k, 2), "target": target, "source": source}
    shape = held["truth_a"].shape[1:]
    truth = np.stack([held["truth_a"], held["truth_b"]], 1).reshape(-1, *shape)
    aus_only = np.stack([held["aus_only_a"], held["aus_only_b"]], 1).reshape(-1, *shape)
    return faces, pairs, {"images": images, "truth": truth, "aus_only": aus_only}


def load_synthetic_run(ckpt: str | Path, config: str | Path) -> tuple[TransferModel, Any]:
    """(the trained model of ``ckpt``, any method, the `SyntheticDataModule` of the run's ``config``) for the scripts
    that score a quick-start model against ground truth. ValueError when the config does not train on the
    synthetic faces or its image size is not the checkpoint's; the loaders' own errors otherwise."""
    from eet_lightning.datamodules import SyntheticDataModule  # the data side, only for these scripts

    cfg = yaml.safe_load(Path(config).read_text())
    data_cfg = cfg.get("data") if isinstance(cfg, dict) else None
    if not isinstance(data_cfg, dict) or not str(data_cfg.get("class_path", "")).endswith(
        "SyntheticDataModule"
    ):
        raise ValueError(f"{config} does not train on the synthetic faces (data: SyntheticDataModule)")
    data = SyntheticDataModule(**dict(data_cfg.get("init_args") or {}, cache_dir=None))
    model = load_transfer_model(ckpt, what="--ckpt")
    if model.image_size != data.image_size:
        raise ValueError(f"the checkpoint is for {model.image_size} px, the config for {data.image_size} px")
    return model, data
