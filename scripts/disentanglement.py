"""Report how disentangled a trained EET is, on held-out synthetic identities.

    python scripts/disentanglement.py --ckpt runs/synthetic/stage2/last.ckpt \
        --config runs/synthetic/config.yaml --faces 400 --out runs/synthetic/disentanglement.json

Linear probes on the AU-free feature f_f and the AU-related feature f_r of the A and B faces of
--faces / 2 held-out pairs: f_f -> AU intensities and f_r -> identity should be near chance, f_r -> AUs and
f_f -> identity high. Then, per pair, the cosine and the relative size of the swap's change in the AU region
against the true change, beside the target's self-reconstruction (see
`eet_lightning.evaluation.disentanglement`). Exit status 0 whatever the scores; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from eet_lightning.evaluation.disentanglement import format_report, score_disentanglement
from eet_lightning.evaluation.synthetic import load_synthetic_run
from eet_lightning.runtime import configure_process

MIN_FACES = 8


def _positive_float(value: str, flag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise ValueError(f"{flag} must be 'cv' or a number > 0, got {value!r}")
    return number


def main(argv: list[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    p = argparse.ArgumentParser(
        prog="disentanglement", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ckpt", required=True, help="stage-2 checkpoint")
    p.add_argument("--config", required=True, help="the run's config.yaml (for the synthetic data settings)")
    p.add_argument(
        "--faces", type=int, default=400, help="held-out faces: the A and B sides of faces/2 pairs"
    )
    p.add_argument("--seed", type=int, default=1, help="pair and split seed (validation pairs use 0)")
    p.add_argument(
        "--ridge",
        default="cv",
        help="the probes' ridge, relative to the mean eigenvalue of the Gram matrix; 'cv' (default): each "
        "probe picks its own by cross-validation on its training half",
    )
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    try:
        if args.faces < MIN_FACES or args.faces % 2:
            raise ValueError(
                f"--faces must be an even number >= {MIN_FACES} (the A and B faces of --faces / 2 held-out "
                f"pairs), got {args.faces}"
            )
        ridge = None if args.ridge == "cv" else _positive_float(args.ridge, "--ridge")
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        model, data = load_synthetic_run(args.ckpt, args.config)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        print(f"disentanglement: error: {err}", file=sys.stderr)
        return 2
    result = score_disentanglement(model, data, args.faces // 2, args.seed, ridge, args.batch_size)
    result["ckpt"] = str(args.ckpt)
    print(format_report(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
