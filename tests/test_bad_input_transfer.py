"""Every bad input to `eet-transfer` ends in one line ``eet-transfer: error: ...`` that names the input, exit
status 2, no traceback, and nothing new in --out; awkward but valid paths (spaces, non-ASCII) work."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from bad_input import assert_one_clear_error, files_under, run_in_process, run_script
from eet_lightning.cli.transfer import RECORD_NAME, main

skimage_data = pytest.importorskip("skimage.data")

PROG = "eet-transfer"


# ---------------------------------------------------------------------------------------------- inputs


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int, rows: int | None = None) -> Path:
    """A grayscale PNG declaring ``side`` x ``side`` pixels of zeros: a few hundred kilobytes that decode to
    ``side**2`` bytes. With ``rows`` only that many rows of data follow (the header alone is the bomb)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side if rows is None else rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
    path.write_bytes(png + _png_chunk(b"IEND", b""))
    return path


def _clip(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    return path


class _RunsCode:
    """Unpickling this opens (creates) ``marker``: what a crafted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def ckpt(tiny_run: Path) -> Path:
    return tiny_run / "stage2" / "last.ckpt"


@pytest.fixture(scope="module")
def inputs(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good photos (256 px) and every kind of bad file, made once."""
    root = tmp_path_factory.mktemp("bad_transfer")
    small = lambda im: cv2.resize(im, (256, 256), interpolation=cv2.INTER_AREA)  # noqa: E731
    astronaut = small(skimage_data.astronaut())
    camera = small(np.repeat(skimage_data.camera()[:, :, None], 3, axis=2))
    f: dict[str, Path] = {"root": root}

    def image(name: str, array: np.ndarray) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        return path

    def raw(name: str, data: bytes) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    f["astro"] = image("photos/astronaut.png", astronaut)
    f["cam"] = image("photos/camera.png", camera)
    f["cat"] = image("cat.png", small(skimage_data.chelsea()))
    f["mixed"] = root / "mixed"  # two faces and, last in the folder, a photo without one
    image("mixed/astronaut.png", astronaut)
    image("mixed/camera.png", camera)
    image("mixed/zz_cat.png", small(skimage_data.chelsea()))
    f["one_pixel"] = image("one.png", np.full((1, 1, 3), 128, np.uint8))
    f["text_jpg"] = raw("notes.jpg", b"these are my notes, not a photo\n")
    f["empty_png"] = raw("empty.png", b"")
    f["truncated_png"] = raw("truncated.png", f["astro"].read_bytes()[:3000])
    f["bomb"] = _bomb_png(root / "bomb.png", 12_000)  # 144 M pixels from ~150 kB
    f["bomb_header"] = _bomb_png(root / "bomb_header.png", 60_000, rows=4)  # 3.6 G pixels declared
    f["garbage_mp4"] = raw("garbage.mp4", np.random.default_rng(0).bytes(4096))
    f["empty_mp4"] = raw("empty.mp4", b"")
    noise = np.random.default_rng(1).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    f["faceless_mp4"] = _clip(root / "noise.mp4", list(noise))
    f["txt"] = raw("notes.txt", b"hello\n")
    f["empty_dir"] = root / "empty_dir"
    f["empty_dir"].mkdir()
    f["file"] = raw("a_file", b"not a folder\n")

    # checkpoints
    f["ckpt_text"] = raw("ckpts/text.ckpt", b"not a checkpoint\n")
    f["ckpt_empty"] = raw("ckpts/empty.ckpt", b"")
    f["ckpt_truncated"] = raw("ckpts/truncated.ckpt", ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    f["ckpt_plain"] = root / "ckpts/plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, f["ckpt_plain"])
    f["ckpt_marker"] = root / "ckpts/code_ran"
    f["ckpt_unsafe"] = root / "ckpts/unsafe.ckpt"
    torch.save({"eet_stage": 2, "payload": _RunsCode(f["ckpt_marker"])}, f["ckpt_unsafe"])
    assert not f["ckpt_marker"].exists()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    no_hparams = {k: v for k, v in state.items() if k != "hyper_parameters"}
    f["ckpt_no_hparams"] = root / "ckpts/no_hparams.ckpt"
    torch.save(no_hparams, f["ckpt_no_hparams"])
    missing = dict(state)
    missing["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("generator.")}
    f["ckpt_no_generator"] = root / "ckpts/no_generator.ckpt"
    torch.save(missing, f["ckpt_no_generator"])
    f["ckpt_stage1"] = ckpt.parent.parent / "stage1" / "last.ckpt"

    # pair lists (the photos lie in photos/, the lists beside them)
    f["pairs_latin1"] = raw(
        "photos/latin1.csv", "source,target\nastronaut.png,caméra.png\n".encode("latin-1")
    )
    f["pairs_columns"] = raw("photos/columns.csv", b"a,b\nastronaut.png,camera.png\n")
    f["pairs_empty"] = raw("photos/empty.csv", b"")
    f["pairs_header_only"] = raw("photos/header.csv", b"source,target\n")
    f["pairs_dotdot"] = raw("photos/dotdot.csv", b"source,target\nastronaut.png,../cat.png\n")
    f["pairs_absolute"] = raw("photos/abs.csv", f"source,target\n{f['cam']},astronaut.png\n".encode())
    f["pairs_missing"] = raw(
        "photos/missing.csv", b"source,target\nastronaut.png,camera.png\nnope.png,camera.png\n"
    )
    f["pairs_empty_cell"] = raw("photos/cell.csv", b"source,target\nastronaut.png,\n")
    f["pairs_kind"] = raw("photos/kind.csv", b"source,target\nastronaut.png,list.txt\n")
    raw("photos/list.txt", b"x\n")
    image("photos/sub/camera.png", camera)
    f["pairs_collide"] = raw(
        "photos/collide.csv", b"source,target\nastronaut.png,camera.png\nastronaut.png,sub/camera.png\n"
    )
    return f


@pytest.fixture(scope="module")
def finished_out(ckpt: Path, inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """--out of a finished --strength 0.5 crop-only run of astronaut -> camera (with its record)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    args = ["--ckpt", ckpt, "--source", inputs["astro"], "--target", inputs["cam"], "--out", out]
    assert main([*map(str, args), "--crop-only", "--strength", "0.5", "--no-progress"]) == 0
    assert (out / RECORD_NAME).is_file() and len(files_under(out)) == 6  # 2 crops, 2 reports, CSV, record
    return out


# ---------------------------------------------------------------------------------------------- the cases

# Each case: (extra arguments, needles the one error line must hold). The arguments come after the good
# ones (--ckpt, astronaut -> camera, --out, --crop-only), and a later option replaces an earlier one.
# A callable builds them from (inputs, ckpt, out), and may prepare --out first.
Case = tuple[list, list[str]]
Builder = Callable[[dict[str, Path], Path, Path], Case]


def _copy_finished(finished: Path, out: Path, record: bytes | None = None) -> None:
    shutil.copytree(finished, out)
    if record is not None:
        (out / RECORD_NAME).write_bytes(record)


CASES: dict[str, Builder] = {
    # --- photos and videos
    "source_missing": lambda f, c, o: (
        ["--source", f["root"] / "nope.png"],
        ["--source", "nope.png", "no such"],
    ),
    "target_missing": lambda f, c, o: (
        ["--target", f["root"] / "nope.jpg"],
        ["--target", "nope.jpg", "no such"],
    ),
    "source_not_media": lambda f, c, o: (["--source", f["txt"]], ["notes.txt", "not an image or video"]),
    "source_folder_empty": lambda f, c, o: (
        ["--source", f["empty_dir"]],
        ["empty_dir", "no images or videos"],
    ),
    "text_named_jpg": lambda f, c, o: (["--source", f["text_jpg"]], ["notes.jpg", "not a readable image"]),
    "empty_png": lambda f, c, o: (["--target", f["empty_png"]], ["empty.png", "not a readable image"]),
    "truncated_png": lambda f, c, o: (["--source", f["truncated_png"]], ["truncated.png", "cannot decode"]),
    "decompression_bomb": lambda f, c, o: (["--source", f["bomb"]], ["bomb.png", "decompression bomb"]),
    "bomb_header_only": lambda f, c, o: (["--target", f["bomb_header"]], ["bomb_header.png", "pixels"]),
    "one_pixel_image": lambda f, c, o: (
        ["--source", f["one_pixel"]],
        ["no face found in", "one.png (1 x 1 pixels"],
    ),
    "photo_without_face": lambda f, c, o: (
        ["--target", f["cat"]],
        ["no face found in", "cat.png (256 x 256"],
    ),
    "faceless_last_in_folder": lambda f, c, o: (
        ["--source", f["mixed"], "--target", f["mixed"]],
        ["no face found in", str(f["mixed"] / "zz_cat.png")],
    ),
    "garbage_video": lambda f, c, o: (
        ["--source", f["garbage_mp4"]],
        ["garbage.mp4", "cannot read the video"],
    ),
    "empty_video": lambda f, c, o: (["--source", f["empty_mp4"]], ["empty.mp4", "cannot read the video"]),
    "video_without_face": lambda f, c, o: (
        ["--source", f["faceless_mp4"]],
        ["no face found in", "noise.mp4"],
    ),
    "face_index_too_large": lambda f, c, o: (["--face-index", "3"], ["--face-index 3", "astronaut.png"]),
    "face_index_negative": lambda f, c, o: (["--face-index", "-1"], ["--face-index", "-1"]),
    "face_index_three_values": lambda f, c, o: (
        ["--face-index", "0", "0", "1"],
        ["--face-index", "one or two"],
    ),
    "face_index_pair_on_one_folder": lambda f, c, o: (
        ["--source", f["mixed"], "--target", f["mixed"], "--face-index", "0", "1"],
        ["--face-index", "separate sources and targets"],
    ),
    # --- options
    "strength_absurd": lambda f, c, o: (["--strength", "1e6"], ["--strength", "1e+06", "from 0", "to 2"]),
    "strength_nan": lambda f, c, o: (["--strength", "nan"], ["--strength", "got nan"]),
    "strength_inf": lambda f, c, o: (["--strength", "inf"], ["--strength", "got inf"]),
    "strength_negative": lambda f, c, o: (["--strength", "-0.5"], ["--strength", "got -0.5"]),
    "strength_not_a_number": lambda f, c, o: (["--strength", "lots"], ["--strength", "'lots'"]),
    "batch_size_zero": lambda f, c, o: (["--batch-size", "0"], ["--batch-size", "got 0"]),
    "smooth_zero": lambda f, c, o: (["--smooth", "0"], ["--smooth", "got 0"]),
    "smooth_absurd": lambda f, c, o: (["--smooth", "1000000000"], ["--smooth", "got 1000000000"]),
    "unknown_au": lambda f, c, o: (
        ["--aus", "12", "7"],
        ["--aus 12 7", "AU 7 is not one of this model's AUs"],
    ),
    "au_not_a_number": lambda f, c, o: (["--aus", "twelve"], ["--aus", "'twelve'"]),
    "device_nonsense": lambda f, c, o: (["--device", "toaster"], ["--device toaster", "not a torch device"]),
    "unknown_option": lambda f, c, o: (["--colour", "red"], ["unrecognized arguments", "--colour"]),
    "pairs_and_source": lambda f, c, o: (
        ["--pairs", f["pairs_columns"]],
        ["--pairs", "--source", "not both"],
    ),
    # --- the checkpoint
    "ckpt_missing": lambda f, c, o: (["--ckpt", f["root"] / "nope.ckpt"], ["--ckpt", "nope.ckpt", "no such"]),
    "ckpt_folder": lambda f, c, o: (["--ckpt", f["root"] / "ckpts"], ["--ckpt", "ckpts", "is a folder"]),
    "ckpt_text": lambda f, c, o: (
        ["--ckpt", f["ckpt_text"]],
        ["--ckpt", "text.ckpt", "not a PyTorch checkpoint file"],
    ),
    "ckpt_empty": lambda f, c, o: (["--ckpt", f["ckpt_empty"]], ["--ckpt", "empty.ckpt", "an empty file"]),
    "ckpt_truncated": lambda f, c, o: (
        ["--ckpt", f["ckpt_truncated"]],
        ["--ckpt", "truncated.ckpt", "not a readable"],
    ),
    "ckpt_foreign": lambda f, c, o: (
        ["--ckpt", f["ckpt_plain"]],
        ["--ckpt", "plain.ckpt", "not an eet-lightning"],
    ),
    "ckpt_stage1": lambda f, c, o: (["--ckpt", f["ckpt_stage1"]], ["--ckpt", "stage1", "stage-1 checkpoint"]),
    "ckpt_runs_code": lambda f, c, o: (["--ckpt", f["ckpt_unsafe"]], ["--ckpt", "unsafe.ckpt", "refused"]),
    "ckpt_without_hparams": lambda f, c, o: (
        ["--ckpt", f["ckpt_no_hparams"]],
        ["--ckpt", "no_hparams.ckpt", "not a complete eet-lightning checkpoint"],
    ),
    "ckpt_without_generator": lambda f, c, o: (
        ["--ckpt", f["ckpt_no_generator"]],
        ["--ckpt", "no_generator.ckpt", "not a complete eet-lightning checkpoint"],
    ),
    # --- the output folder
    "out_is_a_file": lambda f, c, o: (["--out", f["file"]], ["--out", "a_file", "not a folder"]),
    "out_below_a_file": lambda f, c, o: (
        ["--out", f["file"] / "out"],
        ["--out", "a_file", "cannot be created"],
    ),
    "out_is_the_source_folder": lambda f, c, o: (
        ["--source", o, "--target", f["mixed"], "--out", o],
        ["--out", "is the --source folder"],
    ),
    # --- pair lists
    "pairs_missing": lambda f, c, o: (
        ["--pairs", f["root"] / "nope.csv"],
        ["--pairs", "nope.csv", "no such"],
    ),
    "pairs_folder": lambda f, c, o: (["--pairs", f["root"] / "photos"], ["--pairs", "photos", "is a folder"]),
    "pairs_not_utf8": lambda f, c, o: (
        ["--pairs", f["pairs_latin1"]],
        ["--pairs", "latin1.csv", "not UTF-8"],
    ),
    "pairs_no_columns": lambda f, c, o: (["--pairs", f["pairs_columns"]], ["columns.csv", "'source,target'"]),
    "pairs_empty_file": lambda f, c, o: (["--pairs", f["pairs_empty"]], ["empty.csv", "the file is empty"]),
    "pairs_header_only": lambda f, c, o: (["--pairs", f["pairs_header_only"]], ["header.csv", "no pairs"]),
    "pairs_outside_folder": lambda f, c, o: (
        ["--pairs", f["pairs_dotdot"]],
        ["dotdot.csv, line 2", "'../cat.png'", "outside the CSV's folder"],
    ),
    "pairs_absolute_path": lambda f, c, o: (
        ["--pairs", f["pairs_absolute"]],
        ["abs.csv, line 2", str(f["cam"]), "outside the CSV's folder"],
    ),
    "pairs_file_missing": lambda f, c, o: (
        ["--pairs", f["pairs_missing"]],
        ["missing.csv, line 3", "nope.png"],
    ),
    "pairs_empty_cell": lambda f, c, o: (
        ["--pairs", f["pairs_empty_cell"]],
        ["cell.csv, line 2", "target is empty"],
    ),
    "pairs_not_media": lambda f, c, o: (
        ["--pairs", f["pairs_kind"]],
        ["kind.csv, line 2", "list.txt", "not an image"],
    ),
    "pairs_two_outputs_one_name": lambda f, c, o: (
        ["--pairs", f["pairs_collide"]],
        ["two outputs would be written to", "camera_with_astronaut.png"],
    ),
}
_PAIRS_ONLY = {name for name in CASES if name.startswith("pairs_") and name != "pairs_and_source"}


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Names and contents of everything below ``folder`` (a file: itself)."""
    if folder.is_file():
        return {".": folder.read_bytes()}
    return {
        name: (None if (folder / name).is_dir() else (folder / name).read_bytes())
        for name in files_under(folder)
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_naming_it_and_nothing_is_written(
    ckpt: Path, inputs: dict[str, Path], tmp_path: Path, capsys, case: str
) -> None:
    out = tmp_path / "out"
    extra, needles = CASES[case](inputs, ckpt, out)
    if case == "out_is_the_source_folder":
        shutil.copytree(inputs["mixed"], out)
    if case in _PAIRS_ONLY:
        args = ["--ckpt", ckpt, "--out", out, "--crop-only", *extra]
    else:
        args = [
            "--ckpt",
            ckpt,
            "--source",
            inputs["astro"],
            "--target",
            inputs["cam"],
            "--out",
            out,
            "--crop-only",
        ]
        args += extra
    out_given = Path(args[len(args) - 1 - [str(a) for a in reversed(args)].index("--out") + 1])
    before = _snapshot(out_given), files_under(inputs["root"])
    rc, _, err = run_in_process(main, [*map(str, args), "--no-progress"], capsys)
    assert_one_clear_error(PROG, rc, err, *needles)
    assert (_snapshot(out_given), files_under(inputs["root"])) == before  # nothing new, nothing changed
    assert not inputs["ckpt_marker"].exists()  # no code from a checkpoint ran


# Cases where --out already holds something: it must be left exactly as it was.
def _record_other_settings(f, c, finished, out) -> Case:
    _copy_finished(finished, out)  # made with --strength 0.5
    return [], ["--out", "other settings", "--strength 0.5 there, 1.0 now", "--overwrite"]


def _record_unreadable(f, c, finished, out) -> Case:
    _copy_finished(finished, out, record=b"{not json")
    return ["--strength", "0.5"], ["--out", RECORD_NAME, "cannot read the record", "--overwrite"]


def _record_foreign(f, c, finished, out) -> Case:
    _copy_finished(finished, out, record=b'{"outputs": ["../../etc/passwd"], "settings": {}, "version": 1}')
    return ["--strength", "0.5"], ["--out", "cannot read the record"]


def _output_not_ours(f, c, finished, out) -> Case:
    out.mkdir()
    (out / "camera_with_astronaut.png").write_bytes(b"my own picture")
    return [], ["camera_with_astronaut.png exists", "--overwrite"]


def _other_settings_aus(f, c, finished, out) -> Case:
    _copy_finished(finished, out)
    return ["--strength", "0.5", "--aus", "12"], ["--aus all there, 12 now"]


def _locked(f, c, finished, out) -> Case:
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another eet-transfer writing there; closed when the test ends
    _locked.fds.append(fd)
    return [], ["--out", "another eet-transfer is writing"]


_locked.fds = []


def _read_only(f, c, finished, out) -> Case:
    out.mkdir()
    out.chmod(0o555)
    return [], ["--out", "no permission"]


FOLDER_CASES = {
    "record_other_settings": _record_other_settings,
    "record_other_aus": _other_settings_aus,
    "record_unreadable": _record_unreadable,
    "record_names_paths": _record_foreign,
    "output_not_written_by_us": _output_not_ours,
    "out_locked_by_another_run": _locked,
    "out_read_only": _read_only,
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name == "out_read_only" and os.geteuid() == 0, reason="root writes into read-only folders"
            ),
        )
        for name in sorted(FOLDER_CASES)
    ],
)
def test_an_out_folder_that_must_not_be_touched_is_left_as_it_was(
    ckpt: Path, inputs: dict[str, Path], finished_out: Path, tmp_path: Path, capsys, case: str
) -> None:
    out = tmp_path / "out"
    extra, needles = FOLDER_CASES[case](inputs, ckpt, finished_out, out)
    before = _snapshot(out)
    args = [
        "--ckpt",
        ckpt,
        "--source",
        inputs["astro"],
        "--target",
        inputs["cam"],
        "--out",
        out,
        "--crop-only",
    ]
    try:
        rc, _, err = run_in_process(main, [*map(str, args), *map(str, extra), "--no-progress"], capsys)
    finally:
        while _locked.fds:
            os.close(_locked.fds.pop())
        if case == "out_read_only":
            out.chmod(0o755)
    assert_one_clear_error(PROG, rc, err, *needles)
    assert _snapshot(out) == before


@pytest.mark.parametrize("case", ["decompression_bomb", "one_pixel_image"])
def test_no_traceback_escapes_the_console_script(
    ckpt: Path, inputs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    """The same refusals in a fresh interpreter, as a user meets them (nothing caught by a test harness)."""
    out = tmp_path / "out"
    extra, needles = CASES[case](inputs, ckpt, out)
    args = [
        "--ckpt",
        ckpt,
        "--source",
        inputs["astro"],
        "--target",
        inputs["cam"],
        "--out",
        out,
        "--crop-only",
    ]
    result = run_script(PROG, [*map(str, args), *map(str, extra), "--no-progress"])
    assert_one_clear_error(PROG, result.returncode, result.stderr, *needles)
    assert not out.exists()


def test_spaces_and_non_ascii_paths_work(ckpt: Path, inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    """Not bad input: photos, a video, a pair list and --out with spaces and non-ASCII names."""
    folder = tmp_path / "Fotos von Zoë" / "été 2024"
    folder.mkdir(parents=True)
    astro, cam = folder / "Astronaut Ümit.png", folder / "カメラ man.png"
    shutil.copy(inputs["astro"], astro)
    shutil.copy(inputs["cam"], cam)
    frames = [np.asarray(Image.open(inputs["astro"]).convert("RGB"))] * 3
    clip = _clip(folder / "Gesicht – Ölé.mp4", frames)
    (folder / "Paare ü.csv").write_text(f"source,target\n{astro.name},{cam.name}\n", encoding="utf-8")
    out = tmp_path / "Ergebnisse ß" / "sortie été"
    base = ["--ckpt", str(ckpt), "--crop-only", "--no-progress", "--out"]
    rc, stdout, err = run_in_process(
        main, [*base, str(out), "--source", str(astro), "--target", str(cam)], capsys
    )
    assert rc == 0, err
    assert {"Astronaut Ümit_with_カメラ man.png", "カメラ man_with_Astronaut Ümit.png"} <= files_under(out)
    rc, _, err = run_in_process(
        main, [*base, str(out / "pairs"), "--pairs", str(folder / "Paare ü.csv")], capsys
    )
    assert rc == 0, err
    assert "カメラ man_with_Astronaut Ümit.png" in files_under(out / "pairs")
    rc, _, err = run_in_process(
        main, [*base, str(out / "video"), "--source", str(clip), "--target", str(cam)], capsys
    )
    assert rc == 0, err
    cap = cv2.VideoCapture(str(out / "video" / "カメラ man_with_Gesicht – Ölé.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    cap.release()
