"""`EETModel` as a user meets it: input kinds in and out, selective and graded transfer (eq. 6 with
per-branch weights), AU list checks, EET-Single, map_location; and the per-AU chart of the grid callback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eet_lightning import ArchConfig, EETModel
from eet_lightning.callbacks import au_chart
from eet_lightning.pixels import to_uint8


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> EETModel:
    return EETModel.load_from_checkpoint(tiny_run / "stage2" / "last.ckpt")


@pytest.fixture(scope="module")
def faces(tiny_run: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Two batches of three real rendered faces (held-out identities) in [-1, 1]."""
    import yaml

    from eet_lightning.datamodules import SyntheticDataModule

    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    init = dict(cfg["data"]["init_args"], cache_dir=None)
    pairs = SyntheticDataModule(**init).held_out_pairs(3, seed=5)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1

    return t(pairs["a"]), t(pairs["b"])


def test_selective_and_graded_transfer_identities(model: EETModel, faces) -> None:
    a, b = faces
    plain_a, plain_b = model.transfer(a, b)
    self_a, self_b = model.reconstruct(a), model.reconstruct(b)
    assert (plain_a - self_a).abs().mean() > 1e-3  # the swap moves something, so the checks below can fail
    close = {"atol": 1e-5, "rtol": 1e-4}
    # no AU selected = each image keeps its own expression = the self-reconstruction
    none_a, none_b = model.transfer(a, b, aus=[])
    torch.testing.assert_close(none_a, self_a, **close)
    torch.testing.assert_close(none_b, self_b, **close)
    # every AU selected = the plain swap; strength 0 and 1 the same two ends
    all_a, all_b = model.transfer(a, b, aus=list(reversed(model.aus)))
    torch.testing.assert_close(all_a, plain_a, **close)
    torch.testing.assert_close(all_b, plain_b, **close)
    torch.testing.assert_close(model.transfer(a, b, strength=0.0)[0], self_a, **close)
    torch.testing.assert_close(model.transfer(a, b, strength=1.0)[1], plain_b, **close)
    # the plain swap is G(f_r of the other image, own f_f) (the paper's definition)
    fr, ff = model.encode(torch.cat([a, b]))
    torch.testing.assert_close(plain_a, model.decode(fr[3:], ff[:3]), **close)


def test_selective_transfer_swaps_only_the_listed_branches(model: EETModel, faces) -> None:
    a, b = faces
    mouth = [12, 25]
    branches, ff = model.encode_branches(torch.cat([a, b]))
    br_a, br_b = branches.chunk(2)
    # independent of mix_au_related: replace the listed branches of A by B's, then average (eq. 6)
    mixed = br_a.clone()
    for au in mouth:
        i = model.aus.index(au)
        mixed[:, i] = br_b[:, i]
    expected = model.decode(mixed.mean(dim=1), ff[:3])
    got, _ = model.transfer(a, b, aus=mouth)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, model.transfer(a, b)[0], atol=1e-4)  # fewer AUs moved than the swap
    # graded: half way on the listed branches, and beyond 1 (exaggeration) on all of them
    half = br_a.clone()
    for au in mouth:
        i = model.aus.index(au)
        half[:, i] = 0.5 * br_a[:, i] + 0.5 * br_b[:, i]
    got_half, _ = model.transfer(a, b, aus=mouth, strength=0.5)
    torch.testing.assert_close(got_half, model.decode(half.mean(dim=1), ff[:3]), atol=1e-5, rtol=1e-4)
    fr_a, fr_b = br_a.mean(dim=1), br_b.mean(dim=1)
    _, got_b = model.transfer(a, b, strength=1.5)
    torch.testing.assert_close(got_b, model.decode(fr_b + 1.5 * (fr_a - fr_b), ff[3:]), atol=1e-5, rtol=1e-4)


def test_au_list_and_strength_are_checked(model: EETModel, faces) -> None:
    a, b = faces
    with pytest.raises(ValueError, match=r"AU 7 is not one of this model's AUs \[1, 2, 4"):
        model.transfer(a, b, aus=[12, 7])
    with pytest.raises(ValueError, match="AU numbers"):
        model.transfer(a, b, aus=["AU12"])
    with pytest.raises(ValueError, match="AU numbers"):
        model.transfer(a, b, aus=12)
    with pytest.raises(ValueError, match="strength must be from 0"):
        model.transfer(a, b, strength=-0.5)
    with pytest.raises(ValueError, match="finite"):
        model.transfer(a, b, strength=float("nan"))
    with pytest.raises(ValueError, match="as many images"):
        model.transfer(a, b[:2])


def test_input_kinds_come_back_as_given(model: EETModel, faces, tmp_path: Path) -> None:
    a, b = faces
    plain_a, plain_b = model.transfer(a, b)
    ua, ub = to_uint8(a), to_uint8(b)  # the same faces as uint8 [N, 64, 64, 3]
    ref_a, ref_b = model.transfer(torch.from_numpy(ua).permute(0, 3, 1, 2).float() / 127.5 - 1, b)

    # a single tensor [3, S, S] gives single tensors
    one_a, one_b = model.transfer(a[0], b[0])
    assert one_a.shape == (3, 64, 64) and one_b.shape == (3, 64, 64)
    torch.testing.assert_close(one_a, plain_a[0], atol=1e-5, rtol=1e-4)
    # a uint8 batch gives a uint8 batch
    arr_a, arr_b = model.transfer(ua, ub)
    assert isinstance(arr_a, np.ndarray) and arr_a.dtype == np.uint8 and arr_a.shape == ua.shape
    assert np.abs(arr_a.astype(int) - to_uint8(ref_a).astype(int)).max() <= 1
    # single arrays, PIL images and paths, mixed across the two sides
    pil = Image.fromarray(ub[1])
    path = tmp_path / "face.png"
    Image.fromarray(ua[1]).save(path)
    out_arr, out_pil = model.transfer(ua[1], pil)
    assert isinstance(out_arr, np.ndarray) and out_arr.shape == (64, 64, 3)
    assert isinstance(out_pil, Image.Image) and out_pil.size == (64, 64)
    out_path, _ = model.transfer(path, pil)
    assert isinstance(out_path, Image.Image)
    np.testing.assert_array_equal(np.asarray(out_path), out_arr)
    # a list of single images gives a list
    listed, _ = model.transfer([ua[0], Image.fromarray(ua[1])], [ub[0], ub[1]])
    assert (
        isinstance(listed, list) and isinstance(listed[0], np.ndarray) and isinstance(listed[1], Image.Image)
    )
    assert np.abs(listed[0].astype(int) - to_uint8(ref_a)[0].astype(int)).max() <= 1
    # a larger square image is resized to the model's size; the result comes back at that size
    big = np.asarray(Image.fromarray(ua[2]).resize((128, 128), Image.BICUBIC))
    out_big, _ = model.transfer(big, ub[2])
    assert out_big.shape == (64, 64, 3)
    # predict_aus and reconstruct accept the same kinds
    aus = model.predict_aus(pil)
    assert aus.shape == (12,) and aus.device.type == "cpu" and 0 <= float(aus.min()) <= float(aus.max()) <= 5
    torch.testing.assert_close(model.predict_aus(b[1]), model.predict_aus(b)[1], atol=1e-5, rtol=1e-4)
    assert isinstance(model.reconstruct(pil), Image.Image)


def test_bad_images_get_one_clear_error(model: EETModel, faces, tmp_path: Path) -> None:
    a, b = faces
    with pytest.raises(ValueError, match="square aligned face crop"):
        model.transfer(np.zeros((64, 80, 3), np.uint8), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        model.transfer(np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"in \[-1, 1\]"):
        model.transfer(a * 127.5 + 127.5, b)
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        model.transfer(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        model.transfer(bad, b[0])
    with pytest.raises(ValueError, match="empty list"):
        model.transfer([], [])
    with pytest.raises(ValueError, match="not mix tensors"):
        model.transfer([a[0], np.zeros((64, 64, 3), np.uint8)], [b[0], b[1]])
    listed, _ = model.transfer([a[0], a[1]], [b[0], b[1]])  # a list of tensors gives a list of tensors
    assert isinstance(listed, list) and listed[1].shape == (3, 64, 64)


def test_eet_single_grades_but_refuses_selective_transfer() -> None:
    torch.manual_seed(0)
    arch = ArchConfig(image_size=64, width=0.0625, multi_branch=False)
    single = EETModel(arch, variant="eet_single").eval()
    assert not single.multi_branch
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    plain, _ = single.transfer(a, b)
    torch.testing.assert_close(single.transfer(a, b, aus=single.aus)[0], plain)  # all AUs is no selection
    torch.testing.assert_close(
        single.transfer(a, b, strength=0.0)[0], single.reconstruct(a), atol=1e-5, rtol=1e-4
    )
    fr, ff = single.encode(torch.cat([a, b]))
    half, _ = single.transfer(a, b, strength=0.5)
    torch.testing.assert_close(half, single.decode(0.5 * fr[:2] + 0.5 * fr[2:], ff[:2]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="EET-Single"):
        single.transfer(a, b, aus=[12])
    with pytest.raises(ValueError, match="EET-Single"):
        single.transfer(a, b, aus=[])


def test_load_map_location_and_eval(tiny_run: Path) -> None:
    ckpt = tiny_run / "stage2" / "last.ckpt"
    for where in ("cpu", torch.device("cpu")):
        model = EETModel.load_from_checkpoint(ckpt, map_location=where)
        assert not model.training and model.device.type == "cpu"
        assert all(not m.training for m in model.modules())


def test_compiled_model_transfers_like_the_fused_one(tiny_run: Path, model: EETModel, faces) -> None:
    """``compile=True`` (torch.compile with weight freezing): the same swaps, selective and graded ones
    included, for two batch sizes; the option needs the fused form and eval mode."""
    ckpt = tiny_run / "stage2" / "last.ckpt"
    compiled = EETModel.load_from_checkpoint(ckpt, compile=True)
    assert compiled._networks is not EETModel._networks  # a compiled copy, not the class's function
    a, b = faces
    for kwargs in ({}, {"aus": [12, 25, 26], "strength": 0.5}):
        for n in (3, 1):
            got, want = compiled.transfer(a[:n], b[:n], **kwargs), model.transfer(a[:n], b[:n], **kwargs)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="compile=True needs fuse=True"):
        EETModel.load_from_checkpoint(ckpt, fuse=False, compile=True)
    with pytest.raises(ValueError, match="eval mode"):
        EETModel.load_from_checkpoint(ckpt).train().compile_for_inference()


def test_au_chart_and_the_grid_callback_writes_it(tiny_run: Path) -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 5, size=(8, 12))
    chart = au_chart(true, true + 0.5, list(range(12)), 5.0, title="t")
    assert chart.dtype == np.uint8 and chart.ndim == 3 and chart.shape[2] == 3
    assert (chart < 200).mean() > 0.01  # something is drawn on the white figure
    with pytest.raises(ValueError, match=r"\[N, 12\]"):
        au_chart(true, true[:, :5], list(range(12)))
    # the tiny run's stage 2 wrote one chart per validation epoch beside the image grid
    charts = sorted((tiny_run / "samples").glob("stage2-aus-epoch*.png"))
    grids = sorted((tiny_run / "samples").glob("stage2-epoch*.png"))
    assert charts and len(charts) == len(grids)
    assert np.asarray(Image.open(charts[0])).std() > 10
