"""Stage-2 step time of the quick start's generator recipes, measured side by side.

    python benchmarks/recipes.py [--rounds 5] [--calls 3] [--out runs/recipes.json]

The recipes are the rows of docs/transfer_quality.md: today's recipe (G draws the whole image from f_r and
f_f, Table I) and each lever that makes G edit its input instead. Every recipe's `Stage2Module.training_step`
is built from configs/synthetic.yaml with that recipe's options, in one process, then timed in rounds of
``--calls`` calls of each recipe in turn, so that a drift of the machine's speed moves all of them alike.
Prints seconds per step (median over rounds), steps per second and the ratio to today's recipe.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import bench_configs, stage2_step, time_calls  # noqa: E402

from eet_lightning.runtime import configure_process, tune_for_cli  # noqa: E402

# name -> (arch options, loss weights, stage-2 options) on top of configs/synthetic.yaml with the editing
# options switched off (today's recipe: generator_output "image")
TODAY = {"generator_output": "image", "generator_skip": False, "generator_warp_gate": False}
RECIPES: dict[str, tuple[dict, dict, dict]] = {
    "today (G draws the image: Table I)": (TODAY, {}, {}),
    "composite + skip (run A)": (
        {"generator_output": "composite", "generator_skip": True, "generator_warp_gate": False},
        {},
        {},
    ),
    "warp_composite + skip (run G)": ({"generator_warp_gate": False}, {}, {}),
    "+ warp gate: configs/synthetic.yaml": ({}, {}, {}),
}


def main(argv: list[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds of timed calls (each recipe in turn)")
    p.add_argument("--calls", type=int, default=3, help="timed calls of each recipe per round")
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        print("recipes: error: --rounds and --calls must be at least 1", file=sys.stderr)
        return 2
    tune_for_cli()
    device = torch.device("cpu")
    quick = bench_configs(paper_train_batch=2, infer_batch=16)["quick"]
    steps = {}
    for name, (arch, weights, stage2) in RECIPES.items():
        cfg = replace(
            quick,
            arch=replace(quick.arch, **arch),
            loss_weights={**quick.loss_weights, **weights},
            stage2={**quick.stage2, **stage2},
        )
        steps[name] = stage2_step(cfg, device, optimized=True)
        time_calls(steps[name], device, 0, 2)  # warm-up
    per_round: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            per_round[name].append(statistics.median(time_calls(step, device, args.calls, 0)))
    first = next(iter(steps))
    rows = []
    print(f"stage-2 step, {quick.batch(2)} pairs, {args.rounds} rounds of {args.calls} calls (median)")
    print(f"{'recipe':<40}{'s/step':>9}{'steps/s':>9}{'vs today':>10}")
    for name, times in per_round.items():
        seconds = statistics.median(times)
        ratio = statistics.median([t / r for t, r in zip(times, per_round[first])])
        rows.append({"recipe": name, "seconds": seconds, "steps_per_s": 1 / seconds, "ratio": ratio})
        print(f"{name:<40}{seconds:>9.3f}{1 / seconds:>9.2f}{ratio:>9.2f}x")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps({"rounds": args.rounds, "calls": args.calls, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
