"""Render the README figure of graded and selective transfer on held-out synthetic identities.

    python scripts/transfer_figure.py --ckpt runs/synthetic/stage2/last.ckpt \
        --config runs/synthetic/config.yaml --out runs/synthetic/transfer_figure.png

One row per held-out pair (target A, source B, never the same person): A, B, then A with B's expression at
strengths 0 -> 1 (``EETModel.transfer(a, b, strength=s)``), where strength 1 differs from strength 0 (4x
brighter), for a G that edits its input its motion (how far it moved each pixel) and mask (where it
painted), the true swap, where it differs from A (A rendered with B's AUs and gaze), A with only B's mouth AUs (``aus=`` the
model's AUs among 12 15 17 20 25 26), where that differs from strength 0, and the true mouth-only swap
(A rendered with B's mouth AUs and its own others). Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, ImageDraw

from eet_lightning import DISFA_AUS, EETModel
from eet_lightning.datamodules.synthetic import render_records
from eet_lightning.evaluation.synthetic import load_synthetic_run
from eet_lightning.nets.modules import FLOW_RANGE
from eet_lightning.runtime import configure_process

DIFF_GAIN = 4  # differences between generated images are small; shown four times brighter
# lip corner puller, lip corner depressor, chin raiser, lip stretcher, lips part, jaw drop
MOUTH_AUS = (12, 15, 17, 20, 25, 26)


def difference(x: np.ndarray, y: np.ndarray, gain: int | None = None) -> np.ndarray:
    """Per-pixel mean absolute difference of two uint8 image batches, times ``gain``, as grey images."""
    d = np.abs(x.astype(np.float32) - y.astype(np.float32)).mean(axis=-1, keepdims=True)
    return np.clip(d * (DIFF_GAIN if gain is None else gain), 0, 255).astype(np.uint8).repeat(3, axis=-1)


def grey(values: torch.Tensor) -> np.ndarray:
    """[N, H, W] values in [0, 1] as uint8 grey images [N, H, W, 3]."""
    v = (values.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return np.repeat(v[..., None], 3, axis=-1)


def figure_columns(
    model: EETModel, pairs: dict, strengths: list[float], mouth: list[int]
) -> dict[str, np.ndarray]:
    """Labelled columns of the figure, each uint8 [N, S, S, 3] (pairs from ``held_out_pairs``)."""
    a, b = pairs["a"], pairs["b"]
    cols: dict[str, np.ndarray] = {"target A": a, "source B": b}
    for s in strengths:
        cols[f"strength {s:g}"] = model.transfer(a, b, strength=s)[0]
    own = cols[f"strength {strengths[0]:g}"]
    cols[f"change x{DIFF_GAIN}"] = difference(cols[f"strength {strengths[-1]:g}"], own)
    if model.arch.generator_output != "image":  # G's maps for A with B's expression
        maps = model.transfer_maps(a, b)[0]
        if "flow" in maps:  # how far G moved each pixel of A (white: FLOW_RANGE, an eighth of the image)
            cols["motion"] = grey(maps["flow"].norm(dim=1) / FLOW_RANGE)
        if "mask" in maps:  # where G painted (white) and kept A (black)
            cols["mask"] = grey(maps["mask"][:, 0])
    cols["true swap"] = pairs["truth_a"]
    cols[f"true change x{DIFF_GAIN}"] = difference(pairs["truth_a"], a)
    cols["mouth AUs only"] = model.transfer(a, b, aus=mouth)[0]
    cols[f"mouth change x{DIFF_GAIN}"] = difference(cols["mouth AUs only"], own)
    ra, rb = pairs["records_a"], pairs["records_b"]
    idx = [DISFA_AUS.index(au) for au in mouth]  # the renderer's AU arrays are in DISFA order
    aus = ra.aus.copy()
    aus[:, idx] = rb.aus[:, idx]
    cols["true mouth only"] = render_records(ra, a.shape[1], aus=aus)
    return cols


def compose(columns: dict[str, np.ndarray], scale: int = 2, header: int = 18, gap: int = 4) -> np.ndarray:
    """A grid: one column per entry (labelled on top), one row per pair; tiles enlarged ``scale`` times."""
    first = next(iter(columns.values()))
    n, s = first.shape[0], first.shape[1] * scale
    w = len(columns) * (s + gap) - gap
    canvas = Image.new("RGB", (w, header + n * (s + gap) - gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (label, images) in enumerate(columns.items()):
        x = c * (s + gap)
        draw.text((x + 2, 3), label, fill=(0, 0, 0))
        for r in range(n):
            tile = Image.fromarray(images[r]).resize((s, s), Image.NEAREST)
            canvas.paste(tile, (x, header + r * (s + gap)))
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="stage-2 checkpoint trained on the synthetic faces")
    p.add_argument("--config", required=True, help="the run's config.yaml (for the synthetic data settings)")
    p.add_argument("--out", default="runs/synthetic/transfer_figure.png", help="PNG to write")
    p.add_argument("--pairs", type=int, default=4, help="rows: held-out pairs")
    p.add_argument("--steps", type=int, default=5, help="strengths from 0 to 1")
    p.add_argument("--seed", type=int, default=3, help="pair seed (validation uses 0, scoring 1)")
    p.add_argument("--scale", type=int, default=2, help="enlarge each face this many times")
    args = p.parse_args(argv)
    try:
        if args.pairs < 1 or args.steps < 2 or args.scale < 1:
            raise ValueError("--pairs and --scale must be at least 1, --steps at least 2")
        model, data = load_synthetic_run(args.ckpt, args.config)
        mouth = [au for au in MOUTH_AUS if au in model.aus]
        if not mouth:
            raise ValueError(f"the model has none of the mouth AUs {list(MOUTH_AUS)} (its AUs: {model.aus})")
        if not model.multi_branch:
            raise ValueError("the checkpoint is EET-Single: selective transfer needs one Er branch per AU")
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        print(f"transfer_figure: error: {err}", file=sys.stderr)
        return 2
    pairs = data.held_out_pairs(args.pairs, seed=args.seed)
    strengths = [float(x) for x in np.linspace(0.0, 1.0, args.steps)]
    figure = compose(figure_columns(model, pairs, strengths, mouth), scale=args.scale)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(figure).save(out)
    print(f"transfer_figure: wrote {out} ({len(pairs['a'])} pairs; mouth AUs {mouth})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
