"""Writing evaluation results: Markdown tables in the paper's layout, a bar chart, an example grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from eet_lightning.pixels import to_uint8


def _fmt(v: float, digits: int = 2) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def markdown_report(results: dict[str, Any]) -> str:
    """Per-AU ICC / MSE (Tables II-IV), verification (Tables V, VI), gaze (Table VII), ground truth."""
    aus = results["aus"]
    lines = [
        f"# Evaluation of {results['ckpt']}",
        "",
        f"Dataset: {results['dataset']}; seed {results['seed']}.",
        "",
    ]
    expr = results.get("expression")
    if expr:
        methods = list(expr["methods"])
        lines += [
            f"## Expression transfer ({expr['rows']} generated images; AUs read by {expr['scorer']})",
            "",
            "| AU | "
            + " | ".join(f"ICC {m}" for m in methods)
            + " | "
            + " | ".join(f"MSE {m}" for m in methods)
            + " |",
            "|---|" + "---:|" * (2 * len(methods)),
        ]
        for i, au in enumerate(aus):
            icc = [_fmt(expr["methods"][m]["icc"][i]) for m in methods]
            mse = [_fmt(expr["methods"][m]["mse"][i]) for m in methods]
            lines.append(f"| {au} | " + " | ".join(icc + mse) + " |")
        icc = [_fmt(expr["methods"][m]["icc_mean"]) for m in methods]
        mse = [_fmt(expr["methods"][m]["mse_mean"]) for m in methods]
        lines += ["| Avg | " + " | ".join(icc + mse) + " |", ""]
        lines += [
            "ICC(3,1) higher is better, MSE lower is better, between the AUs of the real source and of the "
            "generated target; `unchanged_target` is the target image itself (no transfer).",
            "",
        ]
        if "scorer_on_real" in expr:
            s = expr["scorer_on_real"]
            lines += [
                f"The AU scorer on the real source images against their labels: ICC {_fmt(s['icc_mean'])}, MSE {_fmt(s['mse_mean'])}.",
                "",
            ]
    ident = results.get("identity")
    if ident:
        lines += [
            f"## Identity preservation ({ident['rows']} pairs; embeddings: {ident['scorer']})",
            "",
            "| Method | Accuracy (%) | TAR@FAR=1% (%) |",
            "|---|---:|---:|",
        ]
        for m, v in ident["methods"].items():
            lines.append(f"| {m} | {_fmt(100 * v['accuracy'])} | {_fmt(100 * v['tar_at_far'])} |")
        lines.append("")
    gaze = results.get("gaze")
    if gaze:
        lines += [f"## Gaze transfer ({gaze['rows']} pairs)", "", "| Method | Accuracy (%) |", "|---|---:|"]
        for m, v in gaze["methods"].items():
            lines.append(f"| {m} | {_fmt(100 * v['accuracy'])} |")
        lines.append("")
    gt = results.get("groundtruth")
    if gt:
        lines += [
            f"## Against the exact swap ({gt['pairs']} generated images; AU region {_fmt(100 * gt['au_region_fraction'], 1)}% of pixels)",
            "",
            "| Candidate | L1 whole | L1 AU region | PSNR whole | PSNR AU region | SSIM whole | SSIM AU region |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in gt["whole_l1"]:
            vals = [
                _fmt(gt["whole_l1"][c], 4),
                _fmt(gt["au_region_l1"][c], 4),
                _fmt(gt["whole_psnr"][c]),
                _fmt(gt["au_region_psnr"][c]),
                _fmt(gt["whole_ssim"][c], 4),
                _fmt(gt["au_region_ssim"][c], 4),
            ]
            lines.append(f"| {c} | " + " | ".join(vals) + " |")
        if "passes" in gt:
            lines += [
                "",
                f"Transfer criteria (swapped beats target_self on AU-region L1 and source_self on whole-image L1): "
                f"{'PASS' if gt['passes'] else 'FAIL'}.",
            ]
        lines.append("")
    return "\n".join(lines)


def bar_chart(results: dict[str, Any], path: Path) -> Path | None:
    """Per-AU ICC and MSE bars, one colour per method."""
    expr = results.get("expression")
    if not expr:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aus = [str(a) for a in results["aus"]] + ["Avg"]
    methods = list(expr["methods"])
    x = np.arange(len(aus))
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(
        2, 1, figsize=(max(6, 0.7 * len(aus) * max(1, len(methods) / 2)), 6), sharex=True
    )
    for j, m in enumerate(methods):
        v = expr["methods"][m]
        axes[0].bar(x + j * width, v["icc"] + [v["icc_mean"]], width, label=m)
        axes[1].bar(x + j * width, v["mse"] + [v["mse_mean"]], width, label=m)
    axes[0].set_ylabel("ICC(3,1) (higher is better)")
    axes[1].set_ylabel("MSE (lower is better)")
    axes[1].set_xticks(x + width * (len(methods) - 1) / 2, aus)
    axes[1].set_xlabel("AU")
    axes[0].legend(fontsize=8)
    axes[0].axhline(0, color="black", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def example_grid(rows: dict[str, torch.Tensor], path: Path, label_width: int = 110) -> Path:
    """One labelled row per entry (each [N, 3, H, W] in [-1, 1]), column k = example pair k."""
    if not rows:
        raise ValueError("example_grid: no rows to draw")
    first = next(iter(rows.values()))
    n, _, h, w = first.shape
    if n == 0:
        raise ValueError("example_grid: no example pairs to draw (at least 1 expected)")
    grid = np.full((len(rows) * h, label_width + n * (w + 2), 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows.values()):
        tiles = to_uint8(images)
        for k in range(n):
            x0 = label_width + k * (w + 2)
            grid[r * h : (r + 1) * h, x0 : x0 + w] = tiles[k]
    canvas = Image.fromarray(grid)
    draw = ImageDraw.Draw(canvas)
    for r, name in enumerate(rows):
        draw.text((4, r * h + h // 2 - 6), name, fill=(0, 0, 0))
    canvas.save(path)
    return path
