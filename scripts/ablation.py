"""The ablation of Table II on the synthetic ground-truth benchmark: B-Net, BS-Net, EET-Single and EET
trained with one budget (the config's), scored against the exact swap and by an AU estimator.

    python scripts/ablation.py --config configs/synthetic.yaml --run_dir runs/ablation --pairs 200

Each variant trains with `eet-fit --model.variant V --run_dir RUN_DIR/V` (resumed when its run folder
exists); one AU estimator is trained on the same training split (RUN_DIR/scorers/au.ckpt). Prints the
table as Markdown and writes RUN_DIR/ablation.md and RUN_DIR/ablation.json. Exit status 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eet_lightning import EETModel
from eet_lightning.cli import fit
from eet_lightning.cli.evaluate import EvaluateError, _load_data
from eet_lightning.datamodules import SyntheticDataModule
from eet_lightning.evaluation import protocols as P
from eet_lightning.evaluation.scorers import ScorerError, ScorerOptions, load_scorer, train_scorer
from eet_lightning.evaluation.synthetic import score_transfer, synthetic_faces
from eet_lightning.runtime import configure_process
from eet_lightning.variants import VARIANTS

NAMES = {"b_net": "B-Net", "bs_net": "BS-Net", "eet_single": "EET-Single", "eet": "EET"}
TABLE_ORDER = ("b_net", "bs_net", "eet_single", "eet")


def ablation_table(rows: dict[str, dict]) -> str:
    head = (
        "| Variant | L1 AU region | L1 AU region, target self-recon | swap better (AU region) | L1 whole "
        "| L1 whole, source self-recon | PSNR whole | SSIM whole | ICC Avg | MSE Avg |"
    )
    lines = [head, "|---|" + "---:|" * 9]
    for v, r in rows.items():
        gt, ex = r["groundtruth"], r["expression"]["methods"]["eet"]
        vals = [
            gt["au_region_l1"]["swapped"],
            gt["au_region_l1"]["target_self"],
        ]
        whole = [gt["whole_l1"]["swapped"], gt["whole_l1"]["source_self"]]
        lines.append(
            f"| {NAMES[v]} | "
            + " | ".join(f"{x:.4f}" for x in vals)
            + f" | {gt['au_region_swapped_beats_target_self_rate']:.1%} | "
            + " | ".join(f"{x:.4f}" for x in whole)
            + f" | {gt['whole_psnr']['swapped']:.2f} | {gt['whole_ssim']['swapped']:.4f}"
            + f" | {ex['icc_mean']:.3f} | {ex['mse_mean']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="an eet-fit config on the synthetic faces")
    p.add_argument("--run_dir", required=True, help="one sub-folder per variant, plus scorers/")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(TABLE_ORDER))
    p.add_argument("--pairs", type=int, default=200, help="held-out pairs scored (both directions each)")
    p.add_argument("--seed", type=int, default=1, help="pair seed (validation uses 0)")
    p.add_argument("--scorer-epochs", type=int, default=4)
    args, fit_args = p.parse_known_args(argv)
    run_dir = Path(args.run_dir)
    try:
        data = _load_data(args.config, [a for a in fit_args if a.startswith("--data.")])
        if not isinstance(data, SyntheticDataModule):
            raise EvaluateError(f"{args.config} does not train on the synthetic faces")
        for v in args.variants:
            rc = fit.main(
                [
                    "--config",
                    args.config,
                    "--run_dir",
                    str(run_dir / v),
                    "--model.variant",
                    v,
                    "--resume",
                    "true",
                    *fit_args,
                ]
            )
            if rc != 0:
                raise EvaluateError(f"training {v} failed (eet-fit exit status {rc})")
        au_path = run_dir / "scorers" / "au.ckpt"
        if not au_path.is_file():
            train_scorer("au", data, au_path, ScorerOptions(max_epochs=args.scorer_epochs))
        reader = P.AUReader(estimator=load_scorer(au_path, "au"))
        faces, pairs, truth = synthetic_faces(data, args.pairs, args.seed)
        images = truth["images"]
        rows: dict[str, dict] = {}
        for v in [v for v in TABLE_ORDER if v in args.variants]:
            model = EETModel.load_from_checkpoint(run_dir / v / "stage2" / "last.ckpt")
            target, source = images[pairs["target"]], images[pairs["source"]]
            gt = score_transfer(model, target, source, truth["truth"], aus_only=truth["aus_only"])
            ex = P.score_expression(pairs, faces, {"eet": P.model_generator(model)}, reader, len(model.aus))
            rows[v] = {"groundtruth": gt, "expression": ex}
    except (EvaluateError, ScorerError, ValueError, OSError) as err:
        print(f"ablation: error: {err}", file=sys.stderr)
        return 2
    table = ablation_table(rows)
    command = "python scripts/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(table)
    (run_dir / "ablation.md").write_text(f"{table}\n\nCommand: `{command}`\n")
    (run_dir / "ablation.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
