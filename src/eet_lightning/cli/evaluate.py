"""`eet-evaluate`: score a trained EET (and other methods' images) with the paper's protocols.

eet-evaluate --ckpt runs/synthetic/stage2/last.ckpt --config configs/synthetic.yaml --out runs/synthetic/eval \
    --au-estimator runs/scorers/au.ckpt --identity-model runs/scorers/id.ckpt --gaze-classifier runs/scorers/gaze.ckpt
eet-evaluate --ckpt CKPT --config rafd.yaml --data.root /data/rafd --out eval --protocol expression identity gaze \
    --face-weights 20180402-114759-vggface2.pt --openface openface_out.csv --generated stargan_out/
eet-evaluate train-scorer --config configs/synthetic.yaml --kind au --out runs/scorers/au.ckpt

The output folder gets results.json, results.md (per-AU tables in the paper's layout), chart.png (per-AU
ICC and MSE), examples.png and the pair lists (pairs/<protocol>.csv) that --generated folders follow:
DIR/<protocol>/<row:06d>.png is the row's target with the row's source's expression.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import yaml
from PIL import Image
from tqdm import tqdm

from eet_lightning.evaluation import protocols as P
from eet_lightning.evaluation.report import bar_chart, example_grid, markdown_report
from eet_lightning.evaluation.scorers import (
    FaceNetEmbedder,
    ScorerError,
    ScorerOptions,
    load_scorer,
    read_openface,
    train_scorer,
)
from eet_lightning.evaluation.synthetic import score_transfer, synthetic_faces
from eet_lightning.methods import METHODS, load_transfer_model
from eet_lightning.methods.inference import TransferModel
from eet_lightning.pixels import to_model_range, to_uint8
from eet_lightning.runtime import configure_process, tune_for_cli

ALL_PROTOCOLS = ("groundtruth", *P.PROTOCOLS)


# Upper bounds of the counts (far above the paper's protocols): a typo must not hold the machine for hours.
LIMITS = {
    "--pairs": 100_000,
    "--identity-pairs": 1_000_000,
    "--batch-size": 4096,
    "--examples": 64,
    "--scorer-epochs": 10_000,
    "--max-epochs": 10_000,
}
RESERVED_NAMES = (*METHODS, "real", "unchanged_target")  # the methods' own names are taken


class EvaluateError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (`EvaluateError`), without the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise EvaluateError(f"{message} ({self.prog} --help lists the options)")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _config_problem(err: BaseException) -> str:
    """One line saying what is wrong, from a jsonargparse error: its union-type messages list every
    subtype tried ("Expected a <class 'NoneType'>", the whole value given); the data class's own problem
    is the part to show."""

    def flat(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:297] + "..."

    cause = err.__cause__
    if cause is not None and str(cause).strip() and "Union subtypes" not in str(cause):
        return flat(str(cause))
    lines = str(err).splitlines()
    for k, line in enumerate(lines):
        text = line.strip()
        if not text.startswith("- ") or "<class 'NoneType'>" in text:
            continue
        indent = len(line) - len(line.lstrip())
        block = [text[2:]]
        for more in lines[k + 1 :]:  # the bullet's continuation: the lines indented below it
            if len(more) - len(more.lstrip()) <= indent:
                break
            block.append(more.strip())
        return flat(re.sub(r"^Problem with given class_path '[^']*':\s*", "", " ".join(block)))
    return flat(str(err))


def _load_data(config: str, overrides: Sequence[str]) -> Any:
    """The DataModule of an eet-fit config (``--data.*`` overrides pass through)."""
    from jsonargparse import ArgumentError

    from eet_lightning.cli.fit import FitError, build_parser, resolve_config_names

    try:
        # finds bundled configs by name and checks the file is UTF-8 YAML holding a mapping
        argv = resolve_config_names(["--config", config, *overrides])
    except FitError as err:
        raise EvaluateError(
            str(err) if str(err).startswith("--config") else f"--config {config}: {err}"
        ) from err
    try:
        parser = build_parser(argv)  # the options of the stages the config names
        parser.exit_on_error = False  # one line from us instead of jsonargparse's usage dump and exit
        cfg = parser.parse_args(argv)
    except FitError as err:
        raise EvaluateError(f"--config {config}: {err}") from err
    except ArgumentError as err:
        raise EvaluateError(
            f"--config {config}: not a valid eet-fit config ({_config_problem(err)})"
        ) from err
    except SystemExit as err:  # a parser that still exits: its message went to stderr already
        raise EvaluateError(f"--config {config}: not a valid eet-fit config") from err
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
    try:
        # the data alone: the config's model, stages and Trainer are not needed (a Trainer would print)
        return instantiate(cfg, instantiate_groups=False).data
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise EvaluateError(f"--config {config}: cannot build its data ({_config_problem(err)})") from err


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` (itself included) that does not exist yet; None when it exists."""
    top = None
    while not path.exists():
        top, path = path, path.parent
    return top


def _check_out(out: Path, flag: str = "--out", folder: bool = True) -> None:
    """Refuse an output that cannot be written (a file where a folder goes or the reverse, a folder that
    is not empty, a parent that is a file or not writable) before anything runs; writes nothing."""
    try:
        if folder and out.exists() and not out.is_dir():
            raise EvaluateError(f"{flag} {out} is a file; expected a new or empty folder")
        if folder and out.is_dir() and any(out.iterdir()):
            raise EvaluateError(f"{flag} {out} exists and is not empty; choose a new folder")
        if not folder and out.is_dir():
            raise EvaluateError(f"{flag} {out} is a folder; expected a checkpoint file name")
        top = _first_missing(out.parent)
        parent = top.parent if top is not None else out.parent
        if not parent.is_dir():
            raise EvaluateError(f"{flag} {out} cannot be created: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise EvaluateError(f"{flag} {out} cannot be created: {parent} is not writable")
    except OSError as err:  # a name too long, a folder that cannot be searched
        raise EvaluateError(f"{flag} {out}: {err.strerror or err}") from None


def _check_count(flag: str, value: int | None, low: int = 1) -> None:
    if value is None:
        return
    high = LIMITS.get(flag)
    if value < low or (high is not None and value > high):
        expected = f"from {low} to {high:,}" if high is not None else f"of at least {low}"
        raise EvaluateError(f"{flag} must be a whole number {expected}, got {value}")


def _check_file(flag: str, value: str | None, kind: str = "file") -> None:
    """``value`` names an existing file (or folder, or either)."""
    if not value:
        return
    path = Path(value)
    if kind == "file" and path.is_dir():
        raise EvaluateError(f"{flag} {path} is a folder; expected a file")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise EvaluateError(f"{flag} {path} is a file; expected a folder")
    if not path.exists():
        raise EvaluateError(f"{flag}: no such {'file or folder' if kind == 'any' else kind}: {path}")


def _check_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise EvaluateError(f"--device {text!r} is not a torch device (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluateError(f"--device {text}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise EvaluateError(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise EvaluateError(f"--device {text}: MPS is not available on this machine; use --device cpu")
    return device


def validate_args(a: argparse.Namespace) -> None:
    """Every option that can be checked without loading a file, checked before anything is loaded or
    written: counts in range, files that exist, an output that can be written."""
    for flag, value in (
        ("--pairs", a.pairs),
        ("--identity-pairs", a.identity_pairs),
        ("--batch-size", a.batch_size),
        ("--examples", a.examples),
        ("--scorer-epochs", a.scorer_epochs),
    ):
        _check_count(flag, value)
    _check_count("--seed", a.seed, low=0)
    _check_device(a.device)
    name = a.generated_name
    if not name or name != name.strip() or any(c in name for c in "/\\\0"):
        raise EvaluateError(f"--generated-name {name!r} must be a plain name (no '/', '\\' or spaces around)")
    if a.generated and name in RESERVED_NAMES:
        raise EvaluateError(f"--generated-name {name!r} is reserved; choose another name")
    _check_file("--ckpt", a.ckpt)
    for flag, value in (
        ("--au-estimator", a.au_estimator),
        ("--identity-model", a.identity_model),
        ("--gaze-classifier", a.gaze_classifier),
        ("--face-weights", a.face_weights),
    ):
        _check_file(flag, value)
    _check_file("--openface", a.openface, kind="any")
    _check_file("--generated", a.generated, kind="folder")
    _check_out(Path(a.out))


def _load_model(path: str, device: torch.device) -> TransferModel:
    """The trained model of any method (EET, GANimation, StarGAN, ...) from its final checkpoint."""
    try:
        return load_transfer_model(path, map_location=device, what="--ckpt")
    except (OSError, ValueError) as err:  # missing, foreign, refused, the wrong stage: the message names it
        raise EvaluateError(str(err)) from None
    except (
        KeyError,
        TypeError,
        RuntimeError,
        AttributeError,
    ) as err:  # the final stage by its marker, not its content
        raise EvaluateError(
            f"--ckpt {path}: not a complete eet-lightning checkpoint ({_first_line(err)[:200]})"
        ) from None


def _dataset_name(data: Any) -> str:
    """How the results name the dataset: the DataModule's ``dataset_name``, "own" for the user's own faces."""
    return getattr(data, "dataset_name", None) or "own"


def _real_faces(data: Any) -> P.FaceSet:
    """The test split as a `FaceSet`: labels from ``test_labels()`` (the manifest DataModules read them
    off the manifest, decoding no image) and images by row from ``load_test_images``; a DataModule with
    only a ``test_images()`` dataset of single sample dicts is read through once instead."""
    if callable(getattr(data, "test_labels", None)) and callable(getattr(data, "load_test_images", None)):
        return P.FaceSet.from_labels(data.test_labels(), data.load_test_images)
    getter = getattr(data, "test_images", None)
    if getter is None:
        raise EvaluateError(
            f"{type(data).__name__} does not expose its test split: the real-data protocols read "
            f"test_labels() with load_test_images(rows), or a test_images() dataset of single sample dicts"
        )
    data.setup("test")
    return P.FaceSet.from_samples(getter() if callable(getter) else getter)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="eet-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--ckpt", required=True, help="the trained model: any method's final checkpoint (EET: stage 2)"
    )
    p.add_argument(
        "--condition",
        choices=("labels", "images"),
        default="labels",
        help="for a conditional method (GANimation, StarGAN): give it the source's labels (AUs, emotion) "
        "where the test faces have them (default), or let it read them from the source image",
    )
    p.add_argument("--config", required=True, help="the eet-fit config of the dataset (a bundled name works)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--protocol", nargs="+", choices=ALL_PROTOCOLS, help="default: all the dataset supports")
    p.add_argument(
        "--au-estimator", help="AU estimator checkpoint from 'eet-evaluate train-scorer --kind au'"
    )
    p.add_argument(
        "--openface", help="OpenFace CSV (or folder of CSVs) for the images --export-openface wrote"
    )
    p.add_argument("--openface-skip-failed", action="store_true", help="leave out images OpenFace failed on")
    p.add_argument("--export-openface", action="store_true", help="write the images OpenFace must read")
    p.add_argument("--identity-model", help="identity model checkpoint from train-scorer --kind identity")
    p.add_argument("--face-weights", help="facenet-pytorch InceptionResnetV1 weights file (state dict)")
    p.add_argument("--gaze-classifier", help="gaze classifier checkpoint from train-scorer --kind gaze")
    p.add_argument("--train-scorers", action="store_true", help="train missing scorers on the training split")
    p.add_argument("--scorer-epochs", type=int, default=4, help="epochs for --train-scorers")
    p.add_argument("--generated", help="folder of another method's images for the written pair lists")
    p.add_argument("--generated-name", default="other", help="name of that method in the tables")
    p.add_argument("--pairs", type=int, default=200, help="synthetic data: held-out pairs to draw")
    p.add_argument(
        "--identity-pairs",
        type=int,
        help="identity protocol: same- and as many different-subject pairs (default: the paper's count, "
        "20000 DISFA, 5000 RaFD; fewer for a quick look)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the pair lists")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--examples", type=int, default=6, help="pairs in examples.png")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--logger", choices=("none", "wandb"), default="none", help="also log results to W&B")
    p.add_argument("--wandb-project", default="eet-lightning")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def build_train_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="eet-evaluate train-scorer",
        description="Train a scorer (AU estimator, gaze classifier, identity model) on a dataset's training split.",
    )
    p.add_argument("--config", required=True, help="the eet-fit config of the dataset")
    p.add_argument("--kind", required=True, choices=("au", "gaze", "identity"))
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--scorer-config", help="YAML of ScorerOptions (max_epochs, width, lr, ...)")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--limit-train-batches", type=float)
    p.add_argument("--no-progress", action="store_true")
    return p


def _scorer_options(path: str | None, **overrides: Any) -> ScorerOptions:
    values: dict[str, Any] = {}
    if path:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise EvaluateError(f"--scorer-config {path}: {err}") from err
        if not isinstance(values, dict):
            raise EvaluateError(f"--scorer-config {path}: expected a mapping of options")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("limit_train_batches"), float) and values["limit_train_batches"] >= 1:
        values["limit_train_batches"] = int(values["limit_train_batches"])
    return ScorerOptions.from_dict(values, where=path or "scorer options")


def train_main(argv: Sequence[str]) -> int:
    p = build_train_parser()
    args, rest = p.parse_known_args(argv)
    bad = [r for r in rest if r.startswith("-") and not r.startswith("--data.")]
    if bad:
        raise EvaluateError(
            f"unrecognized arguments: {' '.join(bad)} (eet-evaluate train-scorer --help lists the options)"
        )
    _check_count("--max-epochs", args.max_epochs)
    ltb = args.limit_train_batches
    if ltb is not None and not (math.isfinite(ltb) and ltb > 0):
        raise EvaluateError(f"--limit-train-batches must be a fraction in (0, 1] or a count >= 1, got {ltb}")
    if ltb is not None and ltb > 1 and ltb != int(ltb):
        raise EvaluateError(f"--limit-train-batches above 1 is a count of batches: a whole number, got {ltb}")
    _check_file("--scorer-config", args.scorer_config)
    _check_out(Path(args.out), folder=False)
    data = _load_data(args.config, rest)
    opts = _scorer_options(
        args.scorer_config, max_epochs=args.max_epochs, limit_train_batches=args.limit_train_batches
    )
    path = train_scorer(args.kind, data, args.out, opts, progress=not args.no_progress)
    print(f"eet-evaluate: {args.kind} scorer: {path}")
    return 0


# --------------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, args: argparse.Namespace, overrides: Sequence[str]) -> None:
        self.args = args
        self.overrides = list(overrides)
        self.device = torch.device(args.device)

    def scorer(self, kind: str, given: str | None, tmp: Path, data: Any) -> Any:
        if given:
            flag = {"au": "--au-estimator", "gaze": "--gaze-classifier", "identity": "--identity-model"}[kind]
            try:
                return load_scorer(given, kind, self.device)
            except (ScorerError, OSError, ValueError) as err:
                what = {"au": "AU estimator", "gaze": "gaze classifier", "identity": "identity model"}[kind]
                message = _first_line(err)  # "<what>: <path> ...": the option says what it is
                raise EvaluateError(f"{flag}: {message.removeprefix(what + ': ')}") from None
            except (KeyError, TypeError, RuntimeError, AttributeError) as err:  # the marker, not the content
                raise EvaluateError(
                    f"{flag} {given}: not a complete scorer checkpoint ({_first_line(err)[:200]})"
                ) from None
        if self.args.train_scorers:
            path = tmp / "scorers" / f"{kind}.ckpt"
            opts = ScorerOptions(max_epochs=self.args.scorer_epochs)
            train_scorer(kind, data, path, opts, progress=not self.args.no_progress)
            return load_scorer(path, kind, self.device)
        flag = {"au": "--au-estimator", "gaze": "--gaze-classifier", "identity": "--identity-model"}[kind]
        extra = (
            " or --openface CSV"
            if kind == "au"
            else (" or --face-weights FILE" if kind == "identity" else "")
        )
        raise EvaluateError(
            f"the {kind} scoring needs {flag} CKPT{extra} (train one with 'eet-evaluate train-scorer "
            f"--kind {kind}', or pass --train-scorers)"
        )

    def run(self) -> dict[str, Any]:
        a = self.args
        model = _load_model(a.ckpt, self.device)
        data = _load_data(a.config, self.overrides)
        name = _dataset_name(data)
        if model.image_size != data.image_size:
            raise EvaluateError(
                f"the checkpoint is for {model.image_size} px, the config for {data.image_size} px"
            )
        if model.aus and list(data.info.aus) != model.aus:  # (StarGAN's model knows no AUs)
            raise EvaluateError(
                f"the checkpoint predicts AUs {model.aus}, the config's data has {data.info.aus}"
            )
        settings = P.protocol_settings(data)
        if a.identity_pairs is not None:
            settings["identity_pairs"] = a.identity_pairs
        truth = None
        if callable(getattr(data, "held_out_pairs", None)):  # the synthetic faces: the true swap is known
            faces, expression_pairs, truth = synthetic_faces(data, a.pairs, a.seed)
        else:
            faces, expression_pairs = _real_faces(data), None
        protocols = a.protocol or [
            p
            for p in ALL_PROTOCOLS
            if (p != "groundtruth" or truth is not None) and (p != "gaze" or faces.gaze is not None)
        ]
        if "groundtruth" in protocols and truth is None:
            raise EvaluateError(
                "--protocol groundtruth needs the synthetic faces (only they have the true swap)"
            )
        out = Path(a.out)
        _check_out(out)  # again: the folder may have changed while the data loaded
        created = _first_missing(out.parent)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        except OSError as err:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise EvaluateError(f"--out {out}: cannot write there ({err.strerror or err})") from None
        try:
            results = self._evaluate(
                model, data, name, faces, expression_pairs, truth, protocols, settings, tmp
            )
            if out.exists():
                out.rmdir()
            tmp.replace(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        return results

    def _evaluate(
        self, model, data, name, faces, expression_pairs, truth, protocols, settings, tmp: Path
    ) -> dict[str, Any]:
        a = self.args
        generated = Path(a.generated) if a.generated else None
        aus = list(data.info.aus)  # the AUs scored: the data's (the model's, where it has them, are the same)
        pairs: dict[str, dict[str, np.ndarray]] = {}
        for p in protocols:
            key = "expression" if p == "groundtruth" else p
            if key in pairs:
                continue
            pairs[key] = (
                expression_pairs
                if key == "expression" and expression_pairs is not None
                else P.build_pairs(key, faces, settings, a.seed)
            )
            P.write_pairs(tmp / "pairs" / f"{key}.csv", pairs[key], faces)
            if generated is not None:
                P.check_generated(generated, key, pairs[key]["row"])
        # scorers first: every missing one is an error before any long work
        reader = None
        if "expression" in protocols:
            if a.openface:
                names = self._openface_names(
                    pairs["expression"],
                    [model.method] + ([a.generated_name] if generated is not None else []),
                )
                table = read_openface(a.openface, names, aus, a.openface_skip_failed)
                reader = P.AUReader(table={Path(k).stem: v for k, v in table.items()})
                scorer_name = f"OpenFace ({a.openface})"
            elif a.au_estimator or a.train_scorers or not a.export_openface:
                reader = P.AUReader(estimator=self.scorer("au", a.au_estimator, tmp, data))
                scorer_name = "AU estimator" + (
                    f" ({a.au_estimator})" if a.au_estimator else " (trained here)"
                )
            if reader is not None and reader.estimator is not None and reader.estimator.aus != aus:
                raise EvaluateError(f"--au-estimator reads AUs {reader.estimator.aus}, the data has {aus}")
        embedder = None
        if "identity" in protocols:
            if a.identity_model or (a.train_scorers and not a.face_weights):
                embedder = self.scorer("identity", a.identity_model, tmp, data)
                embed_name = "identity model"
            else:
                embedder = FaceNetEmbedder(a.face_weights).to(self.device)
                embed_name = f"FaceNet InceptionResnetV1 ({a.face_weights})"
        gaze_clf = self.scorer("gaze", a.gaze_classifier, tmp, data) if "gaze" in protocols else None

        size = model.image_size
        # a conditional method (GANimation, StarGAN) is given the source's labels where the faces have them
        # (--condition labels), else it reads them from the source image with its own critic
        labels = P.source_labels(model, faces) if a.condition == "labels" else None
        total = sum(
            len(pairs["identity" if p == "identity" else "gaze" if p == "gaze" else "expression"]["row"])
            for p in protocols
        )
        bar = tqdm(total=total, desc="eet-evaluate", unit="img", disable=a.no_progress, file=sys.stderr)
        tick = bar.update

        def with_generated(protocol: str) -> dict[str, P.Generate]:
            key = "expression" if protocol == "groundtruth" else protocol
            m = {model.method: P.model_generator(model, pairs[key], labels)}
            if generated is not None:
                m[a.generated_name] = P.folder_generator(generated, protocol, size)
            return m

        results: dict[str, Any] = {
            "ckpt": str(a.ckpt),
            "config": str(a.config),
            "dataset": name,
            "method": model.method,
            "condition": (a.condition if labels is not None else "images")
            if model.condition_labels
            else None,
            "aus": aus,
            "seed": a.seed,
            "protocols": protocols,
            "settings": settings,
        }
        if a.export_openface and "expression" in pairs:
            results["openface_export"] = str(
                self._export_openface(tmp, pairs["expression"], faces, with_generated("expression"))
            )
        if "expression" in protocols and reader is not None:
            results["expression"] = P.score_expression(
                pairs["expression"],
                faces,
                with_generated("expression"),
                reader,
                len(aus),
                a.batch_size,
                tick,
            )
            results["expression"]["scorer"] = scorer_name
        if "groundtruth" in protocols:
            rows = pairs["expression"]
            target, source = truth["images"][rows["target"]], truth["images"][rows["source"]]
            other = None
            if generated is not None:
                other = {a.generated_name: P.load_generated(generated, "expression", rows["row"], size)}
            results["groundtruth"] = score_transfer(
                model,
                target,
                source,
                truth["truth"],
                a.batch_size,
                other,
                aus_only=truth["aus_only"],
                source_labels=None if labels is None else {k: v[rows["source"]] for k, v in labels.items()},
                target_labels=None if labels is None else {k: v[rows["target"]] for k, v in labels.items()},
            )
            tick(len(rows["row"]))
        if "identity" in protocols:
            results["identity"] = P.score_identity(
                pairs["identity"], faces, with_generated("identity"), embedder, a.batch_size, tick
            )
            results["identity"]["scorer"] = embed_name
        if "gaze" in protocols:
            results["gaze"] = P.score_gaze(
                pairs["gaze"], faces, with_generated("gaze"), gaze_clf, a.batch_size, tick
            )
        bar.close()

        (tmp / "results.json").write_text(json.dumps(results, indent=2))
        (tmp / "results.md").write_text(markdown_report(results))
        bar_chart(results, tmp / "chart.png")
        self._examples(
            tmp / "examples.png",
            pairs["expression"] if "expression" in pairs else next(iter(pairs.values())),
            faces,
            truth,
            with_generated("expression" if "expression" in pairs else next(iter(pairs))),
        )
        if a.logger == "wandb":
            self._to_wandb(results, tmp)
        return results

    def _openface_names(self, rows: dict[str, np.ndarray], methods: list[str]) -> list[str]:
        real = sorted(set(rows["target"].tolist()) | set(rows["source"].tolist()))
        names = [f"real_{i:06d}.png" for i in real]
        names += [f"{P.export_key(m, 'expression', int(r))}.png" for m in methods for r in rows["row"]]
        return names

    def _export_openface(
        self, tmp: Path, rows: dict[str, np.ndarray], faces: P.FaceSet, methods: dict
    ) -> Path:
        folder = tmp / "openface" / "images"
        folder.mkdir(parents=True)
        real = sorted(set(rows["target"].tolist()) | set(rows["source"].tolist()))
        for start in range(0, len(real), self.args.batch_size):
            idx = np.asarray(real[start : start + self.args.batch_size])
            for i, img in zip(idx, to_uint8(faces.load(idx))):
                Image.fromarray(img).save(folder / f"real_{i:06d}.png")
        for start in range(0, len(rows["row"]), self.args.batch_size):
            sl = slice(start, start + self.args.batch_size)
            target, source = faces.load(rows["target"][sl]), faces.load(rows["source"][sl])
            for m, generate in methods.items():
                for r, img in zip(rows["row"][sl], to_uint8(generate(target, source, rows["row"][sl]))):
                    Image.fromarray(img).save(folder / f"{P.export_key(m, 'expression', int(r))}.png")
        names = self._openface_names(rows, list(methods))
        (tmp / "openface" / "manifest.csv").write_text("file\n" + "\n".join(names) + "\n")
        return folder

    def _examples(self, path: Path, rows: dict[str, np.ndarray], faces: P.FaceSet, truth, methods) -> None:
        k = min(self.args.examples, len(rows["row"]))
        sel = np.arange(k)
        target, source = faces.load(rows["target"][sel]), faces.load(rows["source"][sel])
        grid = {"target": target, "source": source}
        for m, generate in methods.items():
            grid[m] = generate(target, source, rows["row"][sel])
        if truth is not None and "pair" in rows:
            grid["truth"] = to_model_range(truth["truth"][sel])
        example_grid(grid, path)

    def _to_wandb(self, results: dict[str, Any], folder: Path) -> None:
        import wandb

        configured = bool(os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"))
        run = wandb.init(
            project=self.args.wandb_project,
            name=f"evaluate-{results['dataset']}",
            dir=str(folder),
            mode=None if configured else "offline",
            config={k: results[k] for k in ("ckpt", "dataset", "seed", "protocols")},
        )
        summary = {}
        for section in ("expression", "identity", "gaze"):
            for m, v in results.get(section, {}).get("methods", {}).items():
                for key, value in v.items():
                    if isinstance(value, float):
                        summary[f"{section}/{m}/{key}"] = value
        run.summary.update(summary)
        images = {
            n: wandb.Image(str(folder / f))
            for n, f in (("chart", "chart.png"), ("examples", "examples.png"))
            if (folder / f).is_file()
        }
        run.log(images)
        run.finish()


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of `eet-evaluate`; tests call ``main([...])`` directly."""
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    argv = list(sys.argv[1:] if args is None else args)
    tune_for_cli()  # reuse freed memory (see eet_lightning.runtime)
    try:
        if argv[:1] == ["train-scorer"]:
            return train_main(argv[1:])
        parsed, rest = build_parser().parse_known_args(argv)
        bad = [r for r in rest if r.startswith("-") and not r.startswith("--data.")]
        if bad:
            raise EvaluateError(
                f"unrecognized arguments: {' '.join(bad)} (eet-evaluate --help lists the options)"
            )
        validate_args(parsed)
        results = _Run(parsed, rest).run()
    except (EvaluateError, ScorerError, P.ProtocolError, ValueError, OSError) as err:
        # OSError: what cannot be read or written (a full disk, a file taken away): nothing is left
        # half-written, the output folder only appears once complete
        if os.environ.get("EET_DEBUG"):
            raise
        message = " ".join(str(err).splitlines())  # one line, whatever the message holds
        print(f"eet-evaluate: error: {message}", file=sys.stderr)
        return 2
    print(f"eet-evaluate: results: {Path(parsed.out) / 'results.md'}")
    for section in ("expression", "identity", "gaze"):
        for m, v in results.get(section, {}).get("methods", {}).items():
            shown = {k: round(val, 4) for k, val in v.items() if isinstance(val, float)}
            print(f"eet-evaluate: {section}: {m}: {shown}")
    if "groundtruth" in results:
        gt = results["groundtruth"]
        print(
            f"eet-evaluate: groundtruth: AU-region L1 {json.dumps({k: round(v, 4) for k, v in gt['au_region_l1'].items()})}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
