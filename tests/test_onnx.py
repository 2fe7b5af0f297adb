"""ONNX export (`eet_lightning.onnx_model.export_onnx`, ``eet-export --out NAME.onnx``) and the onnxruntime
model (`OnnxTransferModel`): the same swaps, selective and graded transfers and AU readings as `EETModel`
on synthetic faces and on photographs, at batch sizes 1 and 3 (the batch dimension is dynamic); the
metadata round trip; and the refusals (other methods, bad suffixes, existing files, files that are not
eet-export's ONNX), with nothing left behind when an export fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_input import assert_one_clear_error, files_under, run_in_process
from eet_lightning import EETModel
from eet_lightning.checkpoint_io import load_checkpoint, training_data
from eet_lightning.cli.export import main
from eet_lightning.pixels import to_model_range

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
from eet_lightning import onnx_model  # noqa: E402
from eet_lightning.onnx_model import INPUTS, ONNX_FORMAT, OUTPUTS, OnnxTransferModel, export_onnx  # noqa: E402

# onnxruntime against PyTorch's fused EETModel (one thread each): the largest abs difference measured over
# every case below (both tiny models, synthetic faces and photographs, batch 1 and 3, strengths 0.5, 1 and
# 1.5, selective or not, reconstructions) was 7.1e-6 on images in [-1, 1] and 7.2e-7 on AU intensities in
# [0, 5] (on random-noise inputs up to 1.1e-5). The bounds are about 7x the measured.
TOL_IMAGES = 5e-5
TOL_AUS = 5e-6


def _stage2(run: Path) -> Path:
    return run / "stage2" / "last.ckpt"


@pytest.fixture(scope="module")
def cli_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The tiny run (G draws the image, Table I) exported through the command line."""
    out = tmp_path_factory.mktemp("onnx_cli") / "tiny.onnx"
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["--ckpt", str(_stage2(tiny_run)), "--out", str(out)])
    assert rc == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def edit_export(tiny_edit_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with a G that warps and paints its input (the quick start's form: grid_sample inside)."""
    return export_onnx(_stage2(tiny_edit_run), tmp_path_factory.mktemp("onnx_edit") / "edit.onnx")


@pytest.fixture(scope="module", params=["image", "warp_composite"])
def pair(request, tiny_run: Path, tiny_edit_run: Path) -> tuple[EETModel, OnnxTransferModel]:
    """(PyTorch's fused EETModel, the onnxruntime model of its export)."""
    if request.param == "image":
        path, run = request.getfixturevalue("cli_export")[0], tiny_run
    else:
        path, run = request.getfixturevalue("edit_export"), tiny_edit_run
    return EETModel.load_from_checkpoint(_stage2(run)), OnnxTransferModel.load(path)


def _faces(count: int, seed: int) -> torch.Tensor:
    from eet_lightning.data import synthetic as R

    rng = np.random.default_rng(seed)
    faces = []
    for k in range(count):
        aus, _ = R.sample_expression(rng)
        person = R.make_identity(seed * 10 + k)
        faces.append(R.render_face(person, k % 3, aus, 1, R.sample_nuisance(rng), 64))
    return to_model_range(np.stack(faces))


def _photos() -> np.ndarray:
    """Crops of three photographs (the astronaut's face, the cat, the cameraman) at 64 x 64, uint8."""
    import cv2

    data = pytest.importorskip("skimage.data")
    crops = [
        data.astronaut()[20:260, 120:360],
        data.chelsea()[0:300, 60:360],
        np.repeat(data.camera()[40:296, 180:436, None], 3, axis=2),
    ]
    return np.stack([cv2.resize(c, (64, 64), interpolation=cv2.INTER_AREA) for c in crops])


def _max_diff(got, want) -> float:
    return max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True))


# ---------------------------------------------------------------------------------------------- the file


def test_cli_writes_a_checked_graph_with_a_dynamic_batch(cli_export: tuple[Path, str]) -> None:
    path, stdout = cli_export
    assert f"wrote {path}" in stdout
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == list(INPUTS)
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    for value in [*proto.graph.input[:2], *proto.graph.output]:
        batch = value.type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.dim_value, value.name  # symbolic: any batch size
    assert [d.dim_value for d in proto.graph.input[2].type.tensor_type.shape.dim] == [12]
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed


def test_metadata_round_trip(cli_export: tuple[Path, str], tiny_run: Path) -> None:
    path = cli_export[0]
    ckpt = load_checkpoint(_stage2(tiny_run), "test")
    torch_model = EETModel.load_from_checkpoint(_stage2(tiny_run))
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}  # every value is JSON
    assert props["format"] == ONNX_FORMAT and props["method"] == "eet"
    assert props["training_data"] == training_data(ckpt) == {"dataset": "synthetic", "kind": "synthetic"}
    assert props["multi_branch"] is True and props["branches"] == 12 and props["variant"] == "eet"
    model = OnnxTransferModel.load(path)
    assert model.training_data == torch_model.training_data == training_data(ckpt)
    assert model.aus == torch_model.aus and model.image_size == torch_model.image_size == 64
    assert model.max_intensity == torch_model.max_intensity == 5
    assert model.method == "eet" and model.selective and model.multi_branch and model.variant == "eet"
    assert model.path == path and model.providers == ["CPUExecutionProvider"]
    assert model.device == torch.device("cpu") and not list(model.parameters())
    assert model.arch == torch_model.arch.to_dict()


def test_exported_weights_export_to_the_same_graph(
    cli_export: tuple[Path, str], tiny_run: Path, tmp_path: Path
) -> None:
    """eet-export's .safetensors weights of the checkpoint give the same ONNX model as the checkpoint."""
    weights = tmp_path / "tiny.safetensors"
    assert main(["--ckpt", str(_stage2(tiny_run)), "--out", str(weights)]) == 0
    from_weights = OnnxTransferModel.load(export_onnx(weights, tmp_path / "from_weights.onnx"))
    from_ckpt = OnnxTransferModel.load(cli_export[0])
    assert from_weights.training_data == from_ckpt.training_data and from_weights.aus == from_ckpt.aus
    a, b = _faces(2, 6), _faces(2, 7)
    assert _max_diff(from_weights.transfer(a, b, strength=0.5), from_ckpt.transfer(a, b, strength=0.5)) == 0


# ---------------------------------------------------------------------------------------------- same numbers


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("aus", "strength"), [(None, 1.0), ([12, 25, 26], 0.5), ([1, 2, 4, 6], 1.5)])
def test_transfer_matches_eet_on_synthetic_faces(pair, batch: int, aus, strength: float) -> None:
    torch_model, ort_model = pair
    a, b = _faces(batch, seed=1), _faces(batch, seed=2)
    want = torch_model.transfer(a, b, aus=aus, strength=strength)
    got = ort_model.transfer(a, b, aus=aus, strength=strength)
    assert got[0].shape == (batch, 3, 64, 64) and got[0].dtype == torch.float32
    assert _max_diff(got, want) <= TOL_IMAGES
    # the options move the output: a selective or graded transfer is not the plain swap
    if aus is not None:
        assert _max_diff(got, ort_model.transfer(a, b)) > 100 * TOL_IMAGES


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("aus", "strength"), [(None, 1.0), ([12, 25, 26], 0.5), (None, 1.5)])
def test_transfer_matches_eet_on_photographs(pair, batch: int, aus, strength: float) -> None:
    torch_model, ort_model = pair
    photos = _photos()[:batch]
    others = np.roll(_photos(), 1, axis=0)[:batch]
    a, b = to_model_range(photos), to_model_range(others)
    want = torch_model.transfer(a, b, aus=aus, strength=strength)
    assert _max_diff(ort_model.transfer(a, b, aus=aus, strength=strength), want) <= TOL_IMAGES
    # uint8 arrays in, uint8 arrays out (TransferModel's input handling): at most one level apart where
    # a value falls on a rounding boundary
    got8 = ort_model.transfer(photos, others, aus=aus, strength=strength)
    want8 = torch_model.transfer(photos, others, aus=aus, strength=strength)
    for g, w in zip(got8, want8, strict=True):
        assert g.dtype == np.uint8 and g.shape == (batch, 64, 64, 3)
        assert np.abs(g.astype(int) - w.astype(int)).max() <= 1


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_aus_and_reconstructions_match(pair, batch: int) -> None:
    torch_model, ort_model = pair
    x = torch.cat([_faces(2, seed=3), to_model_range(_photos())])[:batch]
    aus = ort_model.predict_aus(x)
    assert aus.shape == (batch, 12) and float(aus.min()) >= 0 and float(aus.max()) <= 5
    assert float((aus - torch_model.predict_aus(x)).abs().max()) <= TOL_AUS
    assert float((ort_model.reconstruct(x) - torch_model.reconstruct(x)).abs().max()) <= TOL_IMAGES
    # the graph's aus outputs are Er's readings of each side of a transfer
    a, b = x, x.flip(0)
    got = ort_model.run(OUTPUTS, a, b, np.ones(12, np.float32))
    assert float((got[2] - torch_model.predict_aus(a)).abs().max()) <= TOL_AUS
    assert float((got[3] - torch_model.predict_aus(b)).abs().max()) <= TOL_AUS
    # one image: [m], as TransferModel.predict_aus gives
    assert ort_model.predict_aus(x[0]).shape == (12,)


def test_every_input_kind_comes_back_as_given(pair, tmp_path: Path) -> None:
    from PIL import Image

    _, ort_model = pair
    photos = _photos()
    Image.fromarray(photos[0]).save(tmp_path / "a.png")
    out_a, out_b = ort_model.transfer(tmp_path / "a.png", Image.fromarray(photos[1]))
    assert isinstance(out_a, Image.Image) and isinstance(out_b, Image.Image) and out_a.size == (64, 64)
    single = ort_model.transfer(to_model_range(photos[0]), to_model_range(photos[1]))[0]
    assert single.shape == (3, 64, 64)
    listed = ort_model.transfer([photos[0], photos[1]], [photos[1], photos[0]])[0]
    assert isinstance(listed, list) and len(listed) == 2 and listed[0].shape == (64, 64, 3)
    swapped = ort_model.swap(to_model_range(photos[:2]), to_model_range(photos[1:]))
    assert float(swapped.abs().max()) <= 1


def test_transfer_options_are_checked_as_eet_does(pair) -> None:
    _, model = pair
    with pytest.raises(ValueError, match="AU 14 is not one of this model's AUs"):
        model.transfer(_faces(1, 1), _faces(1, 2), aus=[14])
    with pytest.raises(ValueError, match="strength must be from 0"):
        model.check_transfer_options(None, 2.5)
    with pytest.raises(ValueError, match="as many images"):
        model.transfer(_faces(1, 1), _faces(2, 2))
    assert model.branch_weights([25], 0.5).tolist() == [0.5 if au == 25 else 0.0 for au in model.aus]


def test_eet_single_exports_one_branch_and_refuses_selective_transfer(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(_stage2(tiny_run), "test")
    hp = {**ckpt["hyper_parameters"], "variant": "eet_single"}
    arch = dict(hp["arch"], multi_branch=False)
    torch.manual_seed(0)
    fresh = EETModel(arch, hp["aus"], variant="eet_single").eval()
    single = {**ckpt, "hyper_parameters": hp, "state_dict": fresh.state_dict()}
    torch.save(single, tmp_path / "single.ckpt")
    model = OnnxTransferModel.load(export_onnx(tmp_path / "single.ckpt", tmp_path / "single.onnx"))
    torch_model = EETModel.load_from_checkpoint(tmp_path / "single.ckpt")
    assert not model.multi_branch and model.variant == "eet_single"
    assert model.session.get_inputs()[2].shape == [1]
    a, b = _faces(3, 4), _faces(3, 5)
    assert (
        _max_diff(model.transfer(a, b, strength=0.5), torch_model.transfer(a, b, strength=0.5)) <= TOL_IMAGES
    )
    with pytest.raises(ValueError, match="EET-Single") as got:
        model.transfer(a, b, aus=[12])
    with pytest.raises(ValueError) as want:
        torch_model.transfer(a, b, aus=[12])
    assert str(got.value) == str(want.value)


# ---------------------------------------------------------------------------------------------- refusals


def _ganimation_ckpt(path: Path) -> Path:
    """A tiny GANimation checkpoint as its training writes one (weights untrained)."""
    from eet_lightning.aus import DISFA_AUS
    from eet_lightning.methods.ganimation.model import GANimationModel

    hp = {"image_size": 64, "aus": list(DISFA_AUS), "width": 8, "residual_blocks": 1, "critic_width": 8}
    model = GANimationModel(**hp)
    torch.save(
        {
            "eet_stage": 1,
            "eet_method": "ganimation",
            "hyper_parameters": hp,
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def test_other_methods_are_refused(tmp_path: Path, capsys) -> None:
    from eet_lightning.methods import load_transfer_model

    ckpt = _ganimation_ckpt(tmp_path / "ganimation.ckpt")
    assert load_transfer_model(ckpt).method == "ganimation"  # a checkpoint the library loads
    with pytest.raises(
        ValueError, match=r"ganimation\.ckpt is a ganimation checkpoint; ONNX export covers EET"
    ):
        export_onnx(ckpt, tmp_path / "o" / "g.onnx")
    rc, _, err = run_in_process(main, ["--ckpt", str(ckpt), "--out", str(tmp_path / "o" / "g.onnx")], capsys)
    assert_one_clear_error("eet-export", rc, err, "ganimation.ckpt", "covers EET")
    assert files_under(tmp_path / "o") == set()
    # its weights still export to safetensors
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "w" / "g.safetensors")]) == 0


def test_export_command_refusals(
    tiny_run: Path, cli_export: tuple[Path, str], tmp_path: Path, capsys
) -> None:
    ckpt = str(_stage2(tiny_run))
    for out, needles in [
        (tmp_path / "o" / "m.pt", [".safetensors or .onnx"]),
        (tmp_path / "o" / "m.ONNX", [".safetensors or .onnx"]),
    ]:
        rc, _, err = run_in_process(main, ["--ckpt", ckpt, "--out", str(out)], capsys)
        assert_one_clear_error("eet-export", rc, err, *needles)
    rc, _, err = run_in_process(
        main,
        ["--ckpt", str(tiny_run / "stage1" / "last.ckpt"), "--out", str(tmp_path / "o" / "s1.onnx")],
        capsys,
    )
    assert_one_clear_error("eet-export", rc, err, "stage-1")
    rc, _, err = run_in_process(
        main, ["--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "o" / "n.onnx")], capsys
    )
    assert_one_clear_error("eet-export", rc, err, "none.ckpt")
    assert files_under(tmp_path / "o") == set()
    # an existing file is kept without --overwrite
    existing = cli_export[0]
    before = existing.read_bytes()
    rc, _, err = run_in_process(main, ["--ckpt", ckpt, "--out", str(existing)], capsys)
    assert_one_clear_error("eet-export", rc, err, "exists", "--overwrite")
    assert existing.read_bytes() == before


def test_a_failed_export_leaves_nothing(
    tiny_run: Path, cli_export: tuple[Path, str], tmp_path: Path, capsys, monkeypatch
) -> None:
    ckpt = str(_stage2(tiny_run))
    existing = tmp_path / "keep" / "old.onnx"
    existing.parent.mkdir()
    shutil.copy(cli_export[0], existing)
    before = existing.read_bytes()

    # the exporter fails: one line, nothing written, the folder --out would have made not made
    def broken_exporter(*args, **kwargs):
        raise RuntimeError("Failed to export the model with torch.export.\nmany more lines")

    monkeypatch.setattr(torch.onnx, "export", broken_exporter)
    rc, _, err = run_in_process(
        main, ["--ckpt", ckpt, "--out", str(tmp_path / "o" / "new" / "m.onnx")], capsys
    )
    assert_one_clear_error("eet-export", rc, err, "ONNX export failed", "Failed to export the model")
    assert files_under(tmp_path / "o") == set()
    monkeypatch.undo()

    # the disk fills up while the file is written: the temporary file goes, the old file stays whole
    class Unwritable:
        def SerializeToString(self) -> bytes:  # noqa: N802 (protobuf's name)
            raise OSError(28, "No space left on device")

    # the graph onnxruntime runs differs from PyTorch's model (here: any difference at all is too much)
    monkeypatch.setattr(onnx_model, "SELF_CHECK_TOLERANCE", -1.0)
    rc, _, err = run_in_process(main, ["--ckpt", ckpt, "--out", str(existing), "--overwrite"], capsys)
    assert_one_clear_error("eet-export", rc, err, "differs from the PyTorch model", "not written")
    assert files_under(existing.parent) == {"old.onnx"} and existing.read_bytes() == before
    monkeypatch.undo()

    monkeypatch.setattr(onnx_model, "onnx_model_proto", lambda model, record=None: Unwritable())
    for out in (existing, tmp_path / "o" / "new" / "m.onnx"):
        rc, _, err = run_in_process(main, ["--ckpt", ckpt, "--out", str(out), "--overwrite"], capsys)
        assert_one_clear_error("eet-export", rc, err, "No space left on device")
    assert files_under(existing.parent) == {"old.onnx"} and existing.read_bytes() == before
    assert files_under(tmp_path / "o") == set() and not (tmp_path / "o").exists()


def _foreign_onnx(path: Path, props: dict[str, str] | None = None) -> Path:
    """A trivial ONNX model (y = x + 1) written with onnx.helper, with the given metadata."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "add", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, props or {})
    onnx.save(model, str(path))
    return path


def _with_metadata(source: Path, path: Path, **changes: str | None) -> Path:
    proto = onnx.load(str(source))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    return path


def test_load_refuses_files_eet_export_did_not_write(cli_export: tuple[Path, str], tmp_path: Path) -> None:
    good = cli_export[0]
    (tmp_path / "notes.onnx").write_text("not a model")
    (tmp_path / "cut.onnx").write_bytes(good.read_bytes()[:5000])
    cases = {
        tmp_path / "missing.onnx": "no such ONNX file",
        tmp_path: "is a folder",
        tmp_path / "notes.onnx": "is not a readable ONNX model",
        tmp_path / "cut.onnx": "is not a readable ONNX model",
        _foreign_onnx(tmp_path / "plain.onnx"): "not one written by eet-export (no format tag",
        _foreign_onnx(tmp_path / "other.onnx", {"format": '"other/1"'}): "format 'other/1'",
        _with_metadata(good, tmp_path / "v2.onnx", format='"eet-lightning-onnx/2"'): "eet-lightning-onnx/2",
        _with_metadata(good, tmp_path / "size.onnx", image_size="abc"): "damaged eet-export metadata",
        _with_metadata(good, tmp_path / "nosize.onnx", image_size=None): "no 'image_size' entry",
        _with_metadata(good, tmp_path / "big.onnx", image_size="128"): "image_a has shape",
        _with_metadata(good, tmp_path / "aus.onnx", aus="[1, 2]"): "aus_a has shape",
        _with_metadata(good, tmp_path / "td.onnx", training_data='{"kind": 3}'): "training_data",
    }
    for path, needle in cases.items():
        with pytest.raises(ValueError, match="--onnx") as err:
            OnnxTransferModel.load(path)
        message = str(err.value)
        assert str(path) in message and needle in message, message
        assert "\n" not in message


def test_execution_providers(cli_export: tuple[Path, str]) -> None:
    path = cli_export[0]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        model = OnnxTransferModel.load(path, providers="CUDAExecutionProvider")
        assert model.providers[0] == "CUDAExecutionProvider"
    else:  # asked for but missing here: said, then the CPU
        with pytest.warns(RuntimeWarning, match="no CUDAExecutionProvider"):
            model = OnnxTransferModel.load(path, providers=["CUDAExecutionProvider"])
        assert model.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="execution providers"):
        OnnxTransferModel.load(path, providers=["GPU"])
