"""`eet-export`: a safetensors file of the transfer weights that every loader takes as it takes the
checkpoint (same outputs), that holds no pickle, and whose bad input ends in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from bad_input import assert_one_clear_error, files_under, run_in_process
from eet_lightning import EETModel
from eet_lightning.checkpoint_io import WEIGHTS_FORMAT
from eet_lightning.cli.export import main


@pytest.fixture(scope="module")
def exported(tiny_edit_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny.safetensors"
    assert main(["--ckpt", str(tiny_edit_run / "stage2" / "last.ckpt"), "--out", str(out)]) == 0
    return out


def test_export_holds_the_transfer_weights_only_and_loads_to_the_same_model(
    exported: Path, tiny_edit_run: Path
) -> None:
    ckpt_path = tiny_edit_run / "stage2" / "last.ckpt"
    with safe_open(str(exported), framework="pt") as fh:
        keys = set(fh.keys())  # noqa: SIM118
        meta = fh.metadata()
    assert meta["format"] == WEIGHTS_FORMAT and meta["eet_stage"] == "2"
    assert {k.split(".")[0] for k in keys} == {
        "encoder",
        "au_free_encoder",
        "au_related_encoder",
        "generator",
        "attribute_classifier",  # C: the quality report's identity features
    }
    assert meta["eet_training_data"] == '{"dataset": "synthetic", "kind": "synthetic"}'
    assert exported.stat().st_size < ckpt_path.stat().st_size / 2
    from_ckpt = EETModel.load_from_checkpoint(ckpt_path, fuse=False)
    from_file = EETModel.load_from_checkpoint(exported, fuse=False)
    for (name, a), (_, b) in zip(from_ckpt.state_dict().items(), from_file.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    fused_ckpt = EETModel.load_from_checkpoint(ckpt_path)
    fused_file = EETModel.load_from_checkpoint(exported)
    for x, y in zip(
        fused_ckpt.transfer(a, b, strength=0.7), fused_file.transfer(a, b, strength=0.7), strict=True
    ):
        assert torch.equal(x, y)


def test_exported_weights_drive_eet_transfer(exported: Path, tiny_edit_run: Path, tmp_path: Path) -> None:
    """The same photo pair through eet-transfer with the checkpoint and with its export: identical files."""
    from PIL import Image

    from eet_lightning.cli.transfer import main as transfer

    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    outputs = []
    for name, ckpt in (("ckpt", tiny_edit_run / "stage2" / "last.ckpt"), ("export", exported)):
        out = tmp_path / name
        assert (
            transfer(["--ckpt", str(ckpt), "--source", str(photo), "--target", str(photo), "--out", str(out)])
            == 0
        )
        outputs.append({p.name: p.read_bytes() for p in out.glob("*.png")})
    assert outputs[0] and outputs[0] == outputs[1]


def _stage1(run: Path) -> Path:
    return run / "stage1" / "last.ckpt"


CASES = [
    (
        "missing-ckpt",
        lambda t, r: ["--ckpt", str(t / "no.ckpt"), "--out", str(t / "o" / "m.safetensors")],
        ["no.ckpt"],
    ),
    (
        "stage1-ckpt",
        lambda t, r: ["--ckpt", str(_stage1(r)), "--out", str(t / "o" / "m.safetensors")],
        ["stage-1"],
    ),
    (
        "wrong-suffix",
        lambda t, r: ["--ckpt", str(r / "stage2" / "last.ckpt"), "--out", str(t / "o" / "m.pt")],
        [".safetensors"],
    ),
    (
        "out-is-folder",
        lambda t, r: ["--ckpt", str(r / "stage2" / "last.ckpt"), "--out", str(_folder(t))],
        ["is a folder"],
    ),
    (
        "out-under-file",
        lambda t, r: ["--ckpt", str(r / "stage2" / "last.ckpt"), "--out", str(_file(t) / "m.safetensors")],
        ["is a file"],
    ),
    ("no-out", lambda t, r: ["--ckpt", str(r / "stage2" / "last.ckpt")], ["--out"]),
    (
        "text-ckpt",
        lambda t, r: ["--ckpt", str(_file(t)), "--out", str(t / "o" / "m.safetensors")],
        ["not a readable PyTorch checkpoint"],
    ),
]


def _folder(t: Path) -> Path:
    (t / "o" / "x.safetensors").mkdir(parents=True, exist_ok=True)
    return t / "o" / "x.safetensors"


def _file(t: Path) -> Path:
    (t / "o").mkdir(parents=True, exist_ok=True)
    (t / "o" / "notes.txt").write_text("notes")
    return t / "o" / "notes.txt"


@pytest.mark.parametrize(("make", "needles"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tiny_run: Path, tmp_path: Path, capsys, make, needles: list[str]) -> None:
    args = make(tmp_path, tiny_run)
    before = files_under(tmp_path / "o")
    rc, _, err = run_in_process(main, args, capsys)
    assert_one_clear_error("eet-export", rc, err, *needles)
    assert files_under(tmp_path / "o") == before


def test_existing_output_needs_overwrite(exported: Path, tiny_edit_run: Path, capsys) -> None:
    before = exported.read_bytes()
    args = ["--ckpt", str(tiny_edit_run / "stage2" / "last.ckpt"), "--out", str(exported)]
    rc, _, err = run_in_process(main, args, capsys)
    assert_one_clear_error("eet-export", rc, err, "exists", "--overwrite")
    assert exported.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    # the same tensors and header entries (safetensors orders its JSON header freely, so not the same bytes)
    again = EETModel.load_from_checkpoint(exported, fuse=False).state_dict()
    first = EETModel.load_from_checkpoint(tiny_edit_run / "stage2" / "last.ckpt", fuse=False).state_dict()
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not eet-lightning weights"):
        EETModel.load_from_checkpoint(path)
