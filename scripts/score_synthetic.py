"""Score a trained model (EET, GANimation, StarGAN) against the exact swap ground truth of held-out synthetic identities.

    python scripts/score_synthetic.py --ckpt runs/synthetic/stage2/last.ckpt \
        --config runs/synthetic/config.yaml --pairs 200 --out runs/synthetic/score.json

Prints mean L1 to the true swap over the whole image and over the AU region (the pixels where the target
rendered with its own AUs and with the source's AUs differ) for the swapped image, the
target's and the source's self-reconstructions and the unchanged inputs (see
`eet_lightning.evaluation.synthetic`). Exit status 0 whether or not the transfer criteria pass; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from eet_lightning.evaluation.synthetic import format_report, load_synthetic_run, score_transfer
from eet_lightning.runtime import configure_process


def main(argv: list[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="any method's final checkpoint (EET: stage 2)")
    p.add_argument("--config", required=True, help="the run's config.yaml (for the synthetic data settings)")
    p.add_argument("--pairs", type=int, default=200, help="held-out pairs to score")
    p.add_argument("--seed", type=int, default=1, help="pair seed (validation uses 0)")
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    try:
        model, data = load_synthetic_run(args.ckpt, args.config)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        print(f"score_synthetic: error: {err}", file=sys.stderr)
        return 2
    pairs = data.held_out_pairs(args.pairs, seed=args.seed)
    # a conditional method (GANimation, StarGAN) is given the source's true labels, as eet-evaluate does
    labels = {
        side: {
            "aus": pairs[f"records_{side}"].aus[:, data.au_columns],
            "emotion": pairs[f"records_{side}"].emotion,
        }
        for side in ("a", "b")
    }
    kinds = getattr(model, "condition_labels", ())
    result = score_transfer(
        model,
        pairs["a"],
        pairs["b"],
        pairs["truth_a"],
        aus_only=pairs["aus_only_a"],
        source_labels={k: labels["b"][k] for k in kinds} or None,
        target_labels={k: labels["a"][k] for k in kinds} or None,
    )
    result["ckpt"] = str(args.ckpt)
    print(format_report(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
