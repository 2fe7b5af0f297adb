"""A trained EET as one ONNX graph (`export_onnx`, ``eet-export --out NAME.onnx``) and the model that runs
it with onnxruntime (`OnnxTransferModel`), without torch's networks.

The graph (opset 20, written by torch's dynamo exporter, ``torch.onnx.export(..., dynamo=True)`` through
onnxscript: the TorchScript exporter stops at ``affine_grid``, which the warping G of the quick start uses)
is `EETModel`'s fused inference form:

- inputs ``image_a`` and ``image_b`` float32 [B, 3, S, S] in [-1, 1] (any batch B, the same on both
  sides), ``weights`` float32 [K]: how far each Er branch moves from the image's own feature to the other
  side's (`EETModel.branch_weights`: the strength on the selected AUs' branches, 0 on the others; K = m
  AUs, or 1 for EET-Single);
- outputs ``a_with_b`` and ``b_with_a`` [B, 3, S, S] (`EETModel.transfer` on tensors, not clamped) and
  ``aus_a``, ``aus_b`` [B, m] (the AU intensities in [0, l] that Er reads on each input, as
  `EETModel.predict_aus`; Er runs on both sides anyway).

The file's ``metadata_props`` hold, each as a JSON string, what loading needs: ``format``
("eet-lightning-onnx/1"), ``method`` ("eet"), ``aus``, ``image_size``, ``max_intensity``,
``multi_branch``, ``branches`` (K), ``variant``, ``arch``, ``training_data`` (the checkpoint's
`eet_lightning.checkpoint_io.training_data` record), ``inputs``, ``outputs`` and ``exporter``.

Needs the packages onnx, onnxscript (export) and onnxruntime (both), imported when first used.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from eet_lightning.checkpoint_io import (
    TRAINING_KINDS,
    checkpoint_method,
    load_checkpoint,
    read_checkpoint,
    training_data,
)
from eet_lightning.methods.inference import Labels, TransferModel
from eet_lightning.model import branch_weights
from eet_lightning.nets.kernels.prelu import PReLU
from eet_lightning.nets.kernels.prepack import ConvTranspose2d, PrepackedWeight
from eet_lightning.nets.modules import AURelatedEncoder
from eet_lightning.pixels import check_image_size

ONNX_FORMAT = "eet-lightning-onnx/1"
INPUTS = ("image_a", "image_b", "weights")
OUTPUTS = ("a_with_b", "b_with_a", "aus_a", "aus_b")
OPSET = 20
# One protobuf holds at most 2 GiB; EET at Table I's size (256 px, width 1) exports to 552 MiB.
_MAX_PROTO_BYTES = 2**31 - 2**20
# ``export_onnx`` checks the graph against the PyTorch model on one random pair (batch 1, so the batch
# dimension is checked dynamic too) before writing it: max abs difference of the outputs. Measured: up to
# 2.4e-5 at Table I's size, 7e-6 at the quick start's (docs/export.md).
SELF_CHECK_TOLERANCE = 1e-3

__all__ = [
    "INPUTS",
    "ONNX_FORMAT",
    "OUTPUTS",
    "OnnxTransferModel",
    "export_onnx",
    "onnx_model_proto",
    "write_onnx",
]


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"ONNX export and onnxruntime inference need the package {module!r} "
            "(pip install onnx onnxscript onnxruntime)"
        ) from None


# ---------------------------------------------------------------------------------------------- export


class _TransferGraph(nn.Module):
    """What the ONNX graph computes: `EETModel._networks` on (image_a, image_b, weights) and Er's AUs."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, image_a: torch.Tensor, image_b: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        m = self.model
        n = image_a.shape[0]  # slices, not chunk(2): chunk's size guard would pin the batch to the example's
        x = torch.cat([image_a, image_b])
        feature = m.encoder(x)
        branches, au_pred = m.au_related_encoder.forward_branches(feature)
        au_free = m.au_free_encoder(feature)
        br_a, br_b = branches[:n], branches[n:]
        fr_a = m.mix_au_related(br_a, br_b, weights)  # A's own, moved towards B's (EETModel._swap_inputs)
        fr_b = m.mix_au_related(br_b, br_a, weights)
        out = m.generator(torch.cat([fr_a, fr_b]), au_free, x, feature)
        aus = au_pred * m.arch.max_intensity
        return out[:n], out[n:], aus[:n], aus[n:]


def _exportable(model: Any) -> Any:
    """``model`` (in place) in its fused form (`EETModel.fuse`; a no-op on a fused model) with layers that
    compute the same function in forms ONNX has, or that onnxruntime runs faster:

    - every convolution on torch's own op: the oneDNN prepacked-weight ops (`PrepackedWeight`) have no
      ONNX form (as `EETModel.compile_for_inference` turns them off for inductor);
    - PReLU with one slope as LeakyReLU with that slope (the same function; onnxruntime fuses it into the
      convolution before it, where PRelu is a broadcasting op of its own). Er's branches keep theirs
      when they run side by side (`stacked_layer` concatenates the branches' slopes);
    - stride-1 transposed convolutions (the first of each UpRes block, G's 1x1 outputs) as convolutions
      with the flipped, transposed kernel: the same sums, on onnxruntime's faster Conv kernels.

    At Table I's size these took onnxruntime from 0.34 to 0.26 s for one pair on a 2-core CPU."""
    model.fuse()
    for layer in model.modules():
        if isinstance(layer, PrepackedWeight):
            layer.prepacked = False
    _rewrite_layers(model)
    model.requires_grad_(False)
    return model.eval()


def _rewrite_layers(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, AURelatedEncoder) and child.grouped and len(child.branches) > 1:
            continue  # side by side: `stacked_layer` reads the per-branch layers as they are
        if type(child) in (nn.PReLU, PReLU) and child.weight.numel() == 1:
            setattr(module, name, nn.LeakyReLU(float(child.weight.detach())))
        elif (
            type(child) in (nn.ConvTranspose2d, ConvTranspose2d)
            and child.stride == (1, 1)
            and child.output_padding == (0, 0)
            and child.dilation == (1, 1)
            and child.groups == 1
            and child.padding_mode == "zeros"
            and all(k - 1 - p >= 0 for k, p in zip(child.kernel_size, child.padding))
        ):
            setattr(module, name, _conv_of_transposed(child))
        else:
            _rewrite_layers(child)


@torch.no_grad()
def _conv_of_transposed(layer: nn.ConvTranspose2d) -> nn.Conv2d:
    """A stride-1 transposed convolution as the convolution it equals: input and output channels
    swapped, the kernel flipped, padding k - 1 - p."""
    padding = tuple(k - 1 - p for k, p in zip(layer.kernel_size, layer.padding))
    conv = nn.Conv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, 1, padding, bias=layer.bias is not None
    ).to(device=layer.weight.device, dtype=layer.weight.dtype)
    conv.weight.copy_(layer.weight.transpose(0, 1).flip(2, 3))
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
    return conv.eval()


def _translations() -> dict[Any, Any]:
    """Custom ONNX forms for the dynamo exporter: ``affine_grid`` (G's warp, identity theta) as ONNX's
    AffineGrid op (opset 20), where torch decomposes it into a broadcast product and a ReduceSum over a
    3-wide axis that onnxruntime runs slowly (8% of the quick start's transfer at batch 16)."""
    from onnxscript import opset20 as op
    from onnxscript.function_libs.torch_lib.ops import common as common_ops

    def affine_grid(theta: Any, size: Sequence[Any], align_corners: bool = False) -> Any:
        return op.AffineGrid(theta, common_ops.merge_dims(size), align_corners=int(bool(align_corners)))

    return {torch.ops.aten.affine_grid_generator.default: affine_grid}


def _metadata(model: Any, record: dict[str, Any]) -> dict[str, str]:
    k = len(model.aus) if model.multi_branch else 1
    s = model.image_size
    values = {
        "format": ONNX_FORMAT,
        "method": "eet",
        "aus": [int(a) for a in model.aus],
        "image_size": int(s),
        "max_intensity": int(model.max_intensity),
        "multi_branch": bool(model.multi_branch),
        "branches": k,
        "variant": str(model.variant),
        "arch": model.arch.to_dict(),
        "training_data": record,
        "inputs": {"image_a": ["B", 3, s, s], "image_b": ["B", 3, s, s], "weights": [k]},
        "outputs": {
            "a_with_b": ["B", 3, s, s],
            "b_with_a": ["B", 3, s, s],
            "aus_a": ["B", len(model.aus)],
            "aus_b": ["B", len(model.aus)],
        },
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True), opset {OPSET}",
    }
    return {key: json.dumps(value, sort_keys=True) for key, value in values.items()}


def onnx_model_proto(model: Any, record: dict[str, Any] | None = None) -> Any:
    """A fused `EETModel` (eval mode, CPU) as an ``onnx.ModelProto`` with the metadata above, checked by
    ``onnx.checker`` and run by onnxruntime on one random pair against what the model computed before
    the export (`SELF_CHECK_TOLERANCE`). ``record``: the training-data record to store (default:
    "unknown"). The model is rewritten in place into the same function in ONNX-friendly layers (see
    `_exportable`); use it for the export only."""
    onnx = _require("onnx")
    _require("onnxscript")
    if getattr(model, "method", None) != "eet" or not hasattr(model, "au_related_encoder"):
        raise ValueError(f"ONNX export covers EET models only, got {type(model).__name__}")
    model.cpu()
    s, k = model.image_size, (len(model.aus) if model.multi_branch else 1)
    gen = torch.Generator().manual_seed(1)
    check = (  # batch 1 (the example is batch 2): the batch dimension is checked dynamic too
        torch.rand(1, 3, s, s, generator=gen) * 2 - 1,
        torch.rand(1, 3, s, s, generator=gen) * 2 - 1,
        torch.full((k,), 0.5),
    )
    with torch.no_grad():  # what EETModel computes (fused, as it loads), before the ONNX-friendly rewrites
        expected = _TransferGraph(model.fuse().eval())(*check)
    model = _exportable(model)
    graph = _TransferGraph(model).eval()
    gen = torch.Generator().manual_seed(0)
    example = (
        torch.rand(2, 3, s, s, generator=gen) * 2 - 1,
        torch.rand(2, 3, s, s, generator=gen) * 2 - 1,
        torch.ones(k),
    )
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():  # the exporter's notes (e.g. on the shared batch axis' name)
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: batch}, {0: batch}, None),
            opset_version=OPSET,
            custom_translation_table=_translations(),
            optimize=True,
            verbose=False,
        )
        proto = program.model_proto
    proto.doc_string = (
        "EET expression transfer (eet-lightning): (image_a, image_b, weights) -> (a_with_b, b_with_a, aus_a, "
        "aus_b); see metadata_props"
    )
    del proto.metadata_props[:]
    record = training_data({}) if record is None else record
    for key, value in _metadata(model, record).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    size = proto.ByteSize()
    if size > _MAX_PROTO_BYTES:
        raise ValueError(
            f"the model's ONNX graph takes {size / 2**30:.1f} GiB, more than one ONNX file holds (2 GiB)"
        )
    onnx.checker.check_model(proto, full_check=True)
    _self_check(proto, check, expected)
    return proto


def _self_check(proto: Any, inputs: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    """The graph run by onnxruntime on ``inputs`` against PyTorch's ``expected`` outputs; RuntimeError
    when they differ by more than SELF_CHECK_TOLERANCE."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(list(OUTPUTS), {name: x.numpy() for name, x in zip(INPUTS, inputs)})
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    if not diff <= SELF_CHECK_TOLERANCE:
        raise RuntimeError(
            f"the exported ONNX graph differs from the PyTorch model by {diff:.3g} (more than "
            f"{SELF_CHECK_TOLERANCE:g}) on a test pair; not written"
        )


def export_onnx(ckpt: str | Path, out: str | Path, what: str = "--ckpt") -> Path:
    """Export an EET stage-2 checkpoint (or eet-export's .safetensors weights of one) to the ONNX file
    ``out``: one graph, described in the module docstring, with a dynamic batch dimension.

    The networks are loaded fused (`EETModel.fuse`: spectral and batch norm folded into the convolutions)
    with torch's own convolutions (the oneDNN prepacked weights have no ONNX form) and exported with
    torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, onnxscript, opset 20); the graph
    passes ``onnx.checker`` (full check) and is run once by onnxruntime against PyTorch before it is
    written. The file is written atomically (a temporary file beside ``out``, then renamed): nothing is
    left behind on failure, and an existing ``out`` is replaced only by a complete file.

    ValueError naming ``what`` and the file for anything that is not an EET final checkpoint (other
    methods' checkpoints included: ONNX export covers EET); RuntimeError when the exporter fails.
    """
    from eet_lightning.model import EETModel

    out = Path(out)
    loaded = load_checkpoint(ckpt, what)
    method = checkpoint_method(loaded)
    if method is None:
        raise ValueError(f"{what}: {ckpt} is not an eet-lightning checkpoint")
    if method != "eet":
        raise ValueError(
            f"{what}: {ckpt} is a {method} checkpoint; ONNX export covers EET only (export its weights to "
            "a .safetensors file instead)"
        )
    loaded = read_checkpoint(ckpt, EETModel.final_stage, what, method="eet", loaded=loaded)
    if not isinstance(loaded.get("hyper_parameters"), dict) or not isinstance(loaded.get("state_dict"), dict):
        raise ValueError(f"{what}: {ckpt}: not a complete eet-lightning checkpoint")
    try:  # as load_transfer_model(ckpt, fuse=True) builds it, without reading the file twice
        model = EETModel.from_checkpoint(loaded, None, fuse=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{what}: {ckpt}: the weights do not build an EET model ({reason})") from None
    record = training_data(loaded)
    del loaded
    try:
        proto = onnx_model_proto(model, record)
    except ValueError as err:
        raise ValueError(f"{what}: {ckpt}: {err}") from err
    except Exception as err:  # the exporter's own errors (torch.export, onnxscript, onnx.checker), the check
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"{what}: {ckpt}: ONNX export failed ({first[:300]})") from err
    return _write_atomically(proto, out)


def write_onnx(model: Any, out: str | Path, record: dict[str, Any] | None = None) -> Path:
    """A fused `EETModel` already in memory (eval mode, CPU) written as `export_onnx` writes a checkpoint's
    (`onnx_model_proto`, then atomically to ``out``). ``record``: its training-data record (default
    ``model.training_data``)."""
    if record is None:
        record = dict(getattr(model, "training_data", None) or training_data({}))
    return _write_atomically(onnx_model_proto(model, record), Path(out))


def _write_atomically(proto: Any, path: Path) -> Path:
    """``proto`` serialized to ``path`` through a temporary file in the same folder and ``os.replace``;
    folders this created are removed again when the write fails."""
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(proto.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(err, OSError) and err.errno is not None and err.filename in (None, tmp):
            raise OSError(err.errno, err.strerror, str(path)) from err  # name the file the user gave
        raise
    return path


# ---------------------------------------------------------------------------------------------- inference


def _provider_list(providers: str | Sequence[str] | None, where: str) -> list[str]:
    """onnxruntime execution providers: CPU when None; the requested ones that this onnxruntime offers,
    then CPU as the fallback (a warning names a requested one that is missing)."""
    ort = _require("onnxruntime")
    if providers is None:
        return ["CPUExecutionProvider"]
    asked = [providers] if isinstance(providers, str) else list(providers)
    known, available = set(ort.get_all_providers()), set(ort.get_available_providers())
    unknown = [p for p in asked if p not in known]
    if unknown or not asked:
        raise ValueError(
            f"{where}: providers must name onnxruntime execution providers such as 'CUDAExecutionProvider', "
            f"got {providers!r}"
        )
    missing = [p for p in asked if p not in available]
    if missing:
        warnings.warn(
            f"{where}: onnxruntime here has no {', '.join(missing)} (available: "
            f"{', '.join(sorted(available))}); running on the CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    chosen = [p for p in asked if p in available]
    return chosen + ([] if "CPUExecutionProvider" in chosen else ["CPUExecutionProvider"])


class OnnxTransferModel(TransferModel):
    """An EET exported by `export_onnx`, run by onnxruntime; `TransferModel`'s interface (input kinds,
    `transfer` with ``aus=`` and ``strength=``, `reconstruct`, `predict_aus`) on the same numbers as
    `EETModel` up to float rounding.

    >>> model = OnnxTransferModel.load("eet-synthetic.onnx")                          # doctest: +SKIP
    >>> a_with_b, b_with_a = model.transfer(image_a, image_b, aus=[12, 25], strength=0.5)  # doctest: +SKIP

    It holds no torch parameters: tensors are prepared and returned on the CPU (outputs of tensor inputs
    go back to the input's device). ``path``: the file; ``providers``: onnxruntime's, in order.
    """

    method = "eet"
    selective = True  # EET-Single refuses selective transfer in `branch_weights`, as EETModel does

    def __init__(self, session: Any, path: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        self.session = session
        self.path = path
        self.aus = list(meta["aus"])
        self.image_size = meta["image_size"]
        self.max_intensity = meta["max_intensity"]
        self.multi_branch = meta["multi_branch"]
        self.variant = meta["variant"]
        self.arch = meta["arch"]
        self.training_data = meta["training_data"]
        self.providers = list(session.get_providers())

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls, path: str | Path, what: str = "--onnx", providers: str | Sequence[str] | None = None
    ) -> OnnxTransferModel:
        """Open an ONNX file written by `export_onnx` (``eet-export --out NAME.onnx``) with onnxruntime:
        the CPU execution provider by default; ``providers`` e.g. "CUDAExecutionProvider" (used when this
        onnxruntime has it, else the CPU, with a warning). On the CPU onnxruntime runs as many intra-op
        threads as torch does (``torch.get_num_threads()``) and one graph at a time.

        One ValueError naming ``what`` and the file for a missing file, a file that is not ONNX, and an
        ONNX model that eet-export did not write (no or another format tag, damaged metadata)."""
        ort = _require("onnxruntime")
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{what}: {path} is a folder; expected an ONNX file written by eet-export")
        if not path.is_file():
            raise ValueError(f"{what}: no such ONNX file: {path}")
        chosen = _provider_list(providers, what)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its notes on unused initializers are not the user's
        try:
            session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as err:  # onnxruntime's InvalidProtobuf, Fail, ... (not a common base class)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"{what}: {path} is not a readable ONNX model ({reason[:300]}); expected a file written by "
                "eet-export --out NAME.onnx"
            ) from None
        meta = _read_metadata(session, path, what)
        return cls(session, path, meta)

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], map_location: Any = None, **options: Any
    ) -> OnnxTransferModel:
        raise ValueError(
            "OnnxTransferModel runs ONNX files: use OnnxTransferModel.load(path); export a checkpoint with "
            "eet-export --out NAME.onnx"
        )

    @classmethod
    def load_from_checkpoint(
        cls, path: str | Path, map_location: Any = None, **options: Any
    ) -> OnnxTransferModel:
        """`load` (``options``: ``providers``, ``what``); ``map_location`` is not used."""
        return cls.load(path, **options)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def needs_base(self) -> bool:
        return bool(self.arch.get("generator_output", "image") != "image" or self.arch.get("generator_skip"))

    # ------------------------------------------------------------------ transfer options

    def branch_weights(self, aus: Iterable[int] | None = None, strength: float = 1.0) -> np.ndarray:
        """The graph's ``weights`` input: ``strength`` on the branches of ``aus`` (all AUs when None), 0 on
        the others; float32 [K] (`EETModel.branch_weights`, the same refusals)."""
        return np.array(branch_weights(self, aus, strength), dtype=np.float32)

    def check_transfer_options(self, aus: Iterable[int] | None, strength: float) -> None:
        self.branch_weights(aus, strength)

    # ------------------------------------------------------------------ the tensor forms

    def run(
        self, names: Sequence[str], image_a: torch.Tensor, image_b: torch.Tensor, weights: np.ndarray
    ) -> list[torch.Tensor]:
        """The graph's outputs ``names`` (of `OUTPUTS`) on prepared CPU tensors, as CPU tensors."""
        feeds = {
            "image_a": _array(image_a),
            "image_b": _array(image_b),
            "weights": np.ascontiguousarray(weights, dtype=np.float32),
        }
        return [torch.from_numpy(o) for o in self.session.run(list(names), feeds)]

    def _transfer_tensors(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        aus: list[int] | None,
        strength: float,
        labels_a: Labels | None,
        labels_b: Labels | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out_a, out_b = self.run(OUTPUTS[:2], a, b, self.branch_weights(aus, strength))
        return out_a, out_b

    def _own_halves(self, x: torch.Tensor, names: Sequence[str]) -> torch.Tensor:
        """Outputs ``names`` (a pair such as a_with_b, b_with_a) with every image as its own partner:
        the first half of ``x`` as image_a, the rest as image_b (the last image once more when the count
        is odd), weights 0 (each side keeps its own expression), so that each image goes through the
        graph once. Every image is computed on its own (batch and instance norm in eval form), so the
        pairing does not change the numbers."""
        n = x.shape[0]
        half = (n + 1) // 2
        a, b = x[:half], x[half:]
        if b.shape[0] < half:
            b = torch.cat([b, x[-1:]])
        zeros = np.zeros(len(self.aus) if self.multi_branch else 1, dtype=np.float32)
        first, second = self.run(names, a, b, zeros)
        return torch.cat([first, second])[:n]

    def _predict_aus_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """Er's AU intensities in [0, l], from the graph's aus outputs. onnxruntime takes the names of the
        outputs to return but runs every node all the same (16 pairs of the quick start's model: 61.8 ms
        for the aus alone, 61.0 ms for all four outputs), so each image goes through the graph once,
        paired with another (`_own_halves`), rather than as both sides: 37.7 ms for 16 images."""
        return self._own_halves(x, OUTPUTS[2:])

    def _reconstruct_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """Self-reconstructions: the transfer with weights 0."""
        return self._own_halves(x, OUTPUTS[:2])


def _array(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def _read_metadata(session: Any, path: Path, what: str) -> dict[str, Any]:
    """The metadata `export_onnx` writes, checked against the graph's inputs and outputs."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    raw = props.get("format")
    try:
        fmt = json.loads(raw) if raw is not None else None
    except ValueError:
        fmt = raw
    if fmt != ONNX_FORMAT:
        found = "no format tag" if raw is None else f"format {fmt!r}"
        raise ValueError(
            f"{what}: {path} is an ONNX model but not one written by eet-export ({found} in its metadata, "
            f"expected {ONNX_FORMAT!r}); export a checkpoint with eet-export --out NAME.onnx"
        )

    def damaged(detail: str) -> ValueError:
        return ValueError(f"{what}: {path} has damaged eet-export metadata ({detail})")

    meta: dict[str, Any] = {}
    for key in ("method", "aus", "image_size", "max_intensity", "multi_branch", "variant", "arch"):
        if key not in props:
            raise damaged(f"no {key!r} entry")
        try:
            meta[key] = json.loads(props[key])
        except ValueError:
            raise damaged(f"{key!r} is not JSON") from None
    if meta["method"] != "eet":
        raise damaged(f"method {meta['method']!r}; this version runs EET graphs only")
    aus = meta["aus"]
    if (
        not isinstance(aus, list)
        or not aus
        or not all(isinstance(a, int) and not isinstance(a, bool) for a in aus)
        or len(set(aus)) != len(aus)
    ):
        raise damaged(f"aus {aus!r}")
    try:
        meta["image_size"] = check_image_size(meta["image_size"], "image_size")
    except ValueError as err:
        raise damaged(str(err)) from None
    if not isinstance(meta["max_intensity"], int) or isinstance(meta["max_intensity"], bool):
        raise damaged(f"max_intensity {meta['max_intensity']!r}")
    if meta["max_intensity"] < 1:
        raise damaged(f"max_intensity {meta['max_intensity']!r}")
    if not isinstance(meta["multi_branch"], bool) or not isinstance(meta["variant"], str):
        raise damaged("multi_branch or variant")
    if not isinstance(meta["arch"], dict):
        raise damaged("arch")
    try:
        record = json.loads(props.get("training_data", "null"))
    except ValueError:
        raise damaged("training_data is not JSON") from None
    if record is None:  # (every export writes one)
        record = {"dataset": "unknown", "kind": "unknown"}
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("dataset"), str)
        or record.get("kind") not in TRAINING_KINDS
    ):
        raise damaged(f"training_data {record!r}")
    meta["training_data"] = record
    # the graph itself must be the one the metadata describes
    s, k, m = meta["image_size"], len(aus) if meta["multi_branch"] else 1, len(aus)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    expected_in = {"image_a": [3, s, s], "image_b": [3, s, s]}
    expected_out = {"a_with_b": [3, s, s], "b_with_a": [3, s, s], "aus_a": [m], "aus_b": [m]}
    if set(inputs) != set(INPUTS) or set(outputs) != set(OUTPUTS):
        raise damaged(f"the graph's inputs {sorted(inputs)} and outputs {sorted(outputs)}")
    for name, shape in {**expected_in, **expected_out}.items():
        got = {**inputs, **outputs}[name]
        if len(got) != len(shape) + 1 or list(got[1:]) != shape:
            raise damaged(f"{name} has shape {got}, the metadata says [B, {', '.join(map(str, shape))}]")
    if list(inputs["weights"]) != [k]:
        raise damaged(f"weights has shape {inputs['weights']}, the metadata says [{k}]")
    return meta
