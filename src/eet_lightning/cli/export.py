"""`eet-export`: a trained model as a file that is safe to share: its transfer weights (.safetensors), or for
EET the whole transfer as one ONNX graph (.onnx).

eet-export --ckpt runs/synthetic/stage2/last.ckpt --out eet-synthetic.safetensors
eet-export --ckpt runs/ganimation_synthetic/stage1/last.ckpt --out ganimation.safetensors
eet-export --ckpt runs/synthetic/stage2/last.ckpt --out eet-synthetic.onnx

The suffix of ``--out`` picks the format.

``.safetensors``: a final checkpoint holds what only training needs (EET's discriminators and frozen stage-1
parts, the optimizers' state) besides the transfer networks, and it is a pickle (this library reads
checkpoints with ``weights_only=True``, but other tools may not). The export keeps the networks the method's
inference model uses (its ``parts``: EET's E, Ef, Er and G; GANimation's and StarGAN's generator and critic,
whose auxiliary head reads the source's AUs or emotion) with the hyper-parameters in a safetensors file:
tensors and a JSON header, nothing that could run code; for EET about a fifth of the checkpoint's size.
`eet_lightning.methods.load_transfer_model`, ``eet-transfer --ckpt`` and ``eet-evaluate --ckpt`` take it as
they take the checkpoint, with the same results.

``.onnx`` (EET only; ``--ckpt`` may also be EET's .safetensors export): E, Ef, Er and G in their fused
inference form as one graph for onnxruntime and other ONNX runtimes, inputs ``image_a``, ``image_b``
[B, 3, S, S] in [-1, 1] and ``weights`` [K] (per-Er-branch transfer weights: selective and graded transfer),
outputs ``a_with_b``, ``b_with_a`` and Er's AU intensities ``aus_a``, ``aus_b``
(`eet_lightning.onnx_model`; docs/export.md). `eet_lightning.onnx_model.OnnxTransferModel` runs it.

Bad input ends in one line ``eet-export: error: ...``, exit status 2, nothing written (also when the
export fails midway: the file is written to a temporary name and renamed when complete).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from eet_lightning.checkpoint_io import checkpoint_method, load_checkpoint, read_checkpoint, write_weights
from eet_lightning.methods import METHODS, inference_class
from eet_lightning.runtime import configure_process

PROG = "eet-export"


class ExportError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ExportError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Export a trained model's transfer weights to a safetensors file, or an EET to an ONNX "
        "graph.",
    )
    p.add_argument(
        "--ckpt",
        required=True,
        help="any method's final checkpoint (EET: runs/synthetic/stage2/last.ckpt); for .onnx an EET "
        "checkpoint or its .safetensors export",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output file: NAME.safetensors (the transfer weights, any method) or NAME.onnx (EET's transfer "
        "as one ONNX graph for onnxruntime; needs the onnx, onnxscript and onnxruntime packages)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


SUFFIXES = (".safetensors", ".onnx")


def export(ckpt: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``ckpt``'s transfer weights (its method's inference ``parts``) and hyper-parameters to ``out``
    (.safetensors), or an EET's transfer as an ONNX graph (.onnx, `eet_lightning.onnx_model.export_onnx`)."""
    out = Path(out)
    if out.suffix not in SUFFIXES:
        raise ExportError(f"--out {out}: the file name must end in .safetensors or .onnx")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; expected a file name ending in {out.suffix}")
    if out.exists() and not overwrite:
        raise ExportError(f"--out {out} exists; pass --overwrite to replace it")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ExportError(f"--out {out} cannot be created: {parent} is a file")
    if out.suffix == ".onnx":
        return _export_onnx(ckpt, out)
    try:
        loaded = load_checkpoint(ckpt, "--ckpt")
        method = checkpoint_method(loaded) or "eet"
        if method not in METHODS:
            raise ValueError(
                f"--ckpt {ckpt} was written by method {method!r}, which this installation does not know"
            )
        model_class = inference_class(method)
        loaded = read_checkpoint(ckpt, model_class.final_stage, "--ckpt", method=method, loaded=loaded)
    except (OSError, ValueError) as err:
        raise ExportError(str(err)) from None
    if not isinstance(loaded.get("hyper_parameters"), dict) or not isinstance(loaded.get("state_dict"), dict):
        raise ExportError(f"--ckpt {ckpt}: not a complete eet-lightning checkpoint")
    try:
        return write_weights(loaded, out, model_class.parts)
    except ValueError as err:
        raise ExportError(f"--ckpt {ckpt}: {err}") from None


def _export_onnx(ckpt: str | Path, out: Path) -> Path:
    from eet_lightning.onnx_model import export_onnx

    try:
        return export_onnx(ckpt, out, what="--ckpt")
    except FileNotFoundError as err:
        raise ExportError(str(err)) from None
    except (ValueError, RuntimeError) as err:  # bad input; the exporter failed (nothing was written)
        raise ExportError(" ".join(str(err).split())) from None


def main(args: Sequence[str] | None = None) -> int:
    configure_process()  # first: before torch starts a thread (see eet_lightning.runtime)
    argv = list(sys.argv[1:] if args is None else args)
    try:
        parsed = build_parser().parse_args(argv)
        path = export(parsed.ckpt, parsed.out, parsed.overwrite)
    except ExportError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, no permission: nothing is left behind (the write is atomic)
        where = err.filename or "--out"
        print(f"{PROG}: error: {where}: {err.strerror or err}", file=sys.stderr)
        return 2
    size = path.stat().st_size / 2**20
    print(f"{PROG}: wrote {path} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
