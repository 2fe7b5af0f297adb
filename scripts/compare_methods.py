"""EET, GANimation and StarGAN trained at the same budget on the built-in synthetic faces, and scored against
the exact ground-truth swap and with the paper's protocols.

    python scripts/compare_methods.py --out runs/compare            # make compare: ~35 min on 2 CPU cores

For each method: ``eet-fit --config <its synthetic config> --run_dir OUT/<method> --resume true`` (a run
already complete is not trained again), then ``eet-evaluate`` with the same scorers (an AU estimator, an
identity model and a gaze classifier trained once on the synthetic training split with ``eet-evaluate
train-scorer``) on the same held-out pairs. The table (OUT/comparison.md, and OUT/comparison.json) has one row
per method and the reference rows beside them:

- ground truth: mean L1 to the true swap (pixels in [0, 1]) over the AU region (where the target rendered
  with its own and with the source's AUs differ) and over the whole image, for the swap, the unchanged
  target and each method's self-reconstruction of the target;
- expression: ICC(3,1) and MSE between the AUs the estimator reads on the source and on the swap;
- identity: verification accuracy (the generated image against another image of the target's subject or of
  someone else, 10-fold threshold), "real" as the upper bound;
- gaze: share of swaps whose gaze the classifier reads as the source's;
- training: wall-clock time of ``eet-fit`` (validation included) and seconds per training batch on this
  machine.

GANimation and StarGAN are given the source's labels (AUs, emotion) as their condition (``eet-evaluate
--condition labels``): the ground truth the synthetic faces have. Budget: each method's config is sized to
about the same training time on a 2-core CPU (the figures measured are in the table, see
docs/methods.md); ``--max-steps`` caps every stage for a quick check of the command itself.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {
    "eet": REPO / "configs" / "synthetic.yaml",
    "ganimation": REPO / "configs" / "ganimation_synthetic.yaml",
    "stargan": REPO / "configs" / "stargan_synthetic.yaml",
}
STAGES = {"eet": 2, "ganimation": 1, "stargan": 1}
SCORERS = {"au": "--au-estimator", "identity": "--identity-model", "gaze": "--gaze-classifier"}


def _run(args: list[str], log: Path) -> float:
    """Run a console script's module with this Python; its output goes to ``log``. Returns the seconds."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"compare_methods: {' '.join(args[:1])} failed (see {log}):\n" + "\n".join(tail))
    return time.perf_counter() - start


def _batches_trained(ckpt: Path) -> int:
    """Training batches a checkpoint's run went through (Lightning's fit-loop counter)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return int(state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"])


def train(method: str, out: Path, common: list[str], max_steps: int | None) -> dict[str, Any]:
    run_dir = out / method
    final = run_dir / f"stage{STAGES[method]}" / "last.ckpt"
    timing = run_dir / "fit_timing.json"
    if final.is_file() and timing.is_file():  # trained by an earlier call: its own timing stands
        return json.loads(timing.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["eet_lightning.cli.fit", "--config", str(CONFIGS[method]), "--run_dir", str(run_dir)]
    args += ["--resume", "true", "--trainer.enable_progress_bar", "false", *common]
    if max_steps is not None:
        for k in range(1, STAGES[method] + 1):
            args += [f"--stage{k}.max_steps", str(max_steps)]
    seconds = _run(args, run_dir / "fit.log")
    batches = sum(_batches_trained(run_dir / f"stage{k}" / "last.ckpt") for k in range(1, STAGES[method] + 1))
    last_stage = _batches_trained(final)
    result = {
        "fit_seconds": seconds,
        "batches": batches,
        "final_stage_batches": last_stage,
        "seconds_per_batch": seconds / max(batches, 1),
    }
    timing.write_text(json.dumps(result, indent=2))
    return result


def train_scorers(out: Path, common: list[str], epochs: int | None) -> dict[str, Path]:
    paths = {}
    for kind in SCORERS:
        path = out / "scorers" / f"{kind}.ckpt"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            args = ["eet_lightning.cli.evaluate", "train-scorer", "--config", str(CONFIGS["eet"])]
            args += ["--kind", kind, "--out", str(path), "--no-progress", *common]
            if epochs is not None:
                args += ["--max-epochs", str(epochs)]
            _run(args, out / "scorers" / f"{kind}.log")
        paths[kind] = path
    return paths


def evaluate(
    method: str,
    out: Path,
    scorers: dict[str, Path],
    common: list[str],
    pairs: int,
    seed: int,
    identity_pairs: int | None,
) -> dict:
    run_dir = out / method
    folder = run_dir / "eval"
    ckpt = run_dir / f"stage{STAGES[method]}" / "last.ckpt"
    stamp = run_dir / "eval_settings.json"
    settings = {"pairs": pairs, "seed": seed, "identity_pairs": identity_pairs, "data": common}
    settings["ckpt_mtime"] = ckpt.stat().st_mtime_ns
    if (folder / "results.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return json.loads((folder / "results.json").read_text())  # scored before, with these settings
    shutil.rmtree(folder, ignore_errors=True)
    args = ["eet_lightning.cli.evaluate", "--ckpt", str(ckpt)]
    args += [
        "--config",
        str(CONFIGS[method]),
        "--out",
        str(folder),
        "--pairs",
        str(pairs),
        "--seed",
        str(seed),
    ]
    args += ["--no-progress", "--condition", "labels", *common]
    if identity_pairs is not None:
        args += ["--identity-pairs", str(identity_pairs)]
    for kind, flag in SCORERS.items():
        args += [flag, str(scorers[kind])]
    _run(args, run_dir / "evaluate.log")
    stamp.write_text(json.dumps(settings))
    return json.loads((folder / "results.json").read_text())


def table(rows: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The comparison as Markdown and as a dict."""
    figures: dict[str, Any] = {}
    first = next(iter(rows.values()))["results"]
    gt0 = first["groundtruth"]
    figures["unchanged target"] = {
        "au_region_l1": gt0["au_region_l1"]["target"],
        "whole_l1": gt0["whole_l1"]["target"],
        "icc": first["expression"]["methods"]["unchanged_target"]["icc_mean"],
        "mse": first["expression"]["methods"]["unchanged_target"]["mse_mean"],
        "identity_accuracy": first["identity"]["methods"]["real"]["accuracy"],
        "gaze_accuracy": first["gaze"]["methods"]["real"]["accuracy"],
    }
    for method, row in rows.items():
        res = row["results"]
        gt = res["groundtruth"]
        figures[method] = {
            "au_region_l1": gt["au_region_l1"]["swapped"],
            "whole_l1": gt["whole_l1"]["swapped"],
            "self_au_region_l1": gt["au_region_l1"]["target_self"],
            "self_whole_l1": gt["whole_l1"]["target_self"],
            "beats_self_rate": gt.get("au_region_swapped_beats_target_self_rate"),
            "icc": res["expression"]["methods"][method]["icc_mean"],
            "mse": res["expression"]["methods"][method]["mse_mean"],
            "identity_accuracy": res["identity"]["methods"][method]["accuracy"],
            "gaze_accuracy": res["gaze"]["methods"][method]["accuracy"],
            **row["timing"],
        }
    lines = [
        f"{gt0['pairs'] // 2} held-out pairs, both directions (seed {first['seed']}); L1 to the true swap, pixels in [0, 1]; "
        "identity and gaze: the real source images as the reference row",
        "",
        "| | AU-region L1 | whole L1 | self-recon. AU-region L1 | self-recon. whole L1 | swap beats self-recon. "
        "(AU region) | ICC(3,1) | MSE | identity acc. | gaze acc. | training | s / batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = figures["unchanged target"]
    lines.append(
        f"| unchanged target / real | {ref['au_region_l1']:.4f} | {ref['whole_l1']:.4f} | | | | "
        f"{ref['icc']:.3f} | {ref['mse']:.3f} | {ref['identity_accuracy']:.3f} | {ref['gaze_accuracy']:.3f} | | |"
    )
    for method in rows:
        f = figures[method]
        rate = "" if f["beats_self_rate"] is None else f"{100 * f['beats_self_rate']:.1f}%"
        lines.append(
            f"| {method} | {f['au_region_l1']:.4f} | {f['whole_l1']:.4f} | {f['self_au_region_l1']:.4f} | "
            f"{f['self_whole_l1']:.4f} | {rate} | {f['icc']:.3f} | {f['mse']:.3f} | "
            f"{f['identity_accuracy']:.3f} | {f['gaze_accuracy']:.3f} | {f['fit_seconds'] / 60:.1f} min "
            f"({f['batches']} batches) | {f['seconds_per_batch']:.3f} |"
        )
    return "\n".join(lines) + "\n", figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/compare", help="folder for the runs, scorers and the table")
    p.add_argument("--methods", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--pairs", type=int, default=200, help="held-out pairs scored (each gives two swaps)")
    p.add_argument("--seed", type=int, default=1, help="seed of the held-out pairs (validation uses 0)")
    p.add_argument("--identity-pairs", type=int, help="identity protocol pairs (default: the dataset's)")
    p.add_argument("--max-steps", type=int, help="cap every training stage (a quick check of the command)")
    p.add_argument("--scorer-epochs", type=int, help="epochs of each scorer (default: eet-evaluate's)")
    p.add_argument(
        "--data",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="data overrides for every run, e.g. train_samples=64",
    )
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = []
    for item in a.data:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--data takes KEY=VALUE, got {item!r}")
        common += [f"--data.{key}", value]
    scorers = train_scorers(out, common, a.scorer_epochs)
    rows = {}
    for method in a.methods:
        timing = train(method, out, common, a.max_steps)
        results = evaluate(method, out, scorers, common, a.pairs, a.seed, a.identity_pairs)
        rows[method] = {"timing": timing, "results": results}
        print(
            f"compare_methods: {method}: trained in {timing['fit_seconds'] / 60:.1f} min, scored", flush=True
        )
    text, figures = table(rows)
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(figures, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
