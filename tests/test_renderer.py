"""Tests of the procedural face renderer (`eet_lightning.data.synthetic`)."""

from __future__ import annotations

import numpy as np
import pytest

from eet_lightning.data import synthetic as R

SIZE = 128
# Two contrasting people: short hair and nothing else; long hair with glasses.
SEEDS = (2, 29)
# Normalised y of the widest row of the head: the boundary between upper and lower face.
MID_Y = 0.05


def _coords(size: int) -> np.ndarray:
    return (np.arange(size) + 0.5) * (2.0 / size) - 1.0


def _nuisance(seed: int) -> R.Nuisance:
    return R.sample_nuisance(np.random.default_rng(seed))


def _render(identity: R.Identity, aus=None, pose: int = 1, gaze: int = 1, nuisance=None, size: int = SIZE):
    return R.render_face(
        identity, pose, {} if aus is None else aus, gaze, nuisance or _nuisance(7), size
    ).astype(np.int16)


# ------------------------------------------------------------------------------------------------------
# Basic contract


@pytest.mark.parametrize("size", R.SUPPORTED_SIZES)
def test_output_dtype_and_shape(size: int) -> None:
    aus, _ = R.sample_expression(np.random.default_rng(0))
    img = R.render_face(R.make_identity(0), 1, aus, 1, _nuisance(0), size)
    assert img.dtype == np.uint8
    assert img.shape == (size, size, 3)
    assert img.std() > 10  # not a blank frame


def test_deterministic() -> None:
    assert R.make_identity(5) == R.make_identity(5)
    assert R.sample_nuisance(np.random.default_rng(3)) == R.sample_nuisance(np.random.default_rng(3))
    ea = R.sample_expression(np.random.default_rng(4))
    eb = R.sample_expression(np.random.default_rng(4))
    np.testing.assert_array_equal(ea[0], eb[0])
    assert ea[1] == eb[1]
    nz = _nuisance(11)
    assert nz.noise_sigma > 0
    a = R.render_face(R.make_identity(5), 0, ea[0], 2, nz, 64)
    b = R.render_face(R.make_identity(5), 0, ea[0], 2, nz, 64)
    np.testing.assert_array_equal(a, b)


def test_dict_and_array_forms_agree() -> None:
    idn = R.make_identity(1)
    vec = np.zeros(len(R.DISFA_AUS), dtype=np.float32)
    vec[R.DISFA_AUS.index(12)] = 3.0
    vec[R.DISFA_AUS.index(4)] = 1.5
    np.testing.assert_array_equal(_render(idn, vec), _render(idn, {12: 3.0, 4: 1.5}))


def test_different_identities_differ() -> None:
    imgs = [_render(R.make_identity(s), nuisance=R._PLAIN_NUISANCE, size=64) for s in range(6)]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i] - imgs[j]).mean() > 3.0, (i, j)


def test_identity_attributes_vary() -> None:
    ids = [R.make_identity(s) for s in range(400)]
    assert len({i.hair_style for i in ids}) >= 3
    assert 0.1 < np.mean([i.glasses for i in ids]) < 0.3
    assert 0.08 < np.mean([i.beard != "none" for i in ids]) < 0.22
    lum = np.array([sum(i.skin) / 3 for i in ids])
    assert lum.min() < 110 and lum.max() > 200  # dark to light skin


# ------------------------------------------------------------------------------------------------------
# Action units


# Where each AU may change pixels: (y_min, y_max, |x| max) in normalised coordinates.
_REGIONS = {
    1: (-1.0, MID_Y, 0.5),
    2: (-1.0, MID_Y, 0.5),
    4: (-1.0, MID_Y, 0.5),
    5: (-1.0, MID_Y, 0.5),
    6: (-0.3, 0.45, 0.55),
    9: (-0.3, 0.6, 0.35),
    12: (MID_Y, 1.0, 0.6),
    15: (MID_Y, 1.0, 0.6),
    17: (MID_Y, 1.0, 0.6),
    20: (MID_Y, 1.0, 0.6),
    25: (MID_Y, 1.0, 0.6),
    26: (MID_Y, 1.0, 0.75),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("au", R.DISFA_AUS)
def test_au_effect_is_local_and_monotone(au: int, seed: int) -> None:
    idn = R.make_identity(seed)
    base = _render(idn)
    diffs, last = [], None
    for v in range(1, 6):
        last = _render(idn, {au: float(v)})
        diffs.append(float(np.abs(last - base).mean()))
    assert diffs[0] > 0, f"AU{au} at intensity 1 changes nothing"
    assert all(b > a for a, b in zip(diffs, diffs[1:])), f"AU{au} not monotone: {diffs}"

    changed = np.abs(last - base).max(-1) > 0
    ys, xs = np.nonzero(changed)
    c = _coords(SIZE)
    y0, y1, xmax = _REGIONS[au]
    assert c[ys].min() >= y0 and c[ys].max() <= y1, f"AU{au} changes rows y in [{c[ys].min()}, {c[ys].max()}]"
    assert np.abs(c[xs]).max() <= xmax, f"AU{au} changes columns up to |x| = {np.abs(c[xs]).max()}"
    # The background in the corners never moves.
    k = 6
    for corner in (changed[:k, :k], changed[:k, -k:], changed[-k:, :k], changed[-k:, -k:]):
        assert not corner.any()


def test_all_aus_at_once_leave_corners_alone() -> None:
    idn = R.make_identity(SEEDS[0])
    full = _render(idn, np.full(len(R.DISFA_AUS), R.MAX_INTENSITY), pose=2)
    base = _render(idn, pose=2)
    k = 6
    for sl in (
        (slice(0, k), slice(0, k)),
        (slice(0, k), slice(-k, None)),
        (slice(-k, None), slice(0, k)),
        (slice(-k, None), slice(-k, None)),
    ):
        np.testing.assert_array_equal(full[sl], base[sl])
    assert np.abs(full - base).mean() > 2.0


# ------------------------------------------------------------------------------------------------------
# Pose and gaze


def test_pose_changes_the_image() -> None:
    idn = R.make_identity(3)
    imgs = [_render(idn, pose=p) for p in range(3)]
    assert np.abs(imgs[0] - imgs[1]).mean() > 1.0
    assert np.abs(imgs[2] - imgs[1]).mean() > 1.0
    assert np.abs(imgs[0] - imgs[2]).mean() > 1.0


@pytest.mark.parametrize("pose", [0, 1, 2])
def test_gaze_changes_only_the_eyes(pose: int) -> None:
    idn = R.make_identity(SEEDS[1])
    imgs = [_render(idn, {5: 2.0}, pose=pose, gaze=g) for g in range(3)]
    c = _coords(SIZE)
    for g in (0, 2):
        diff = np.abs(imgs[g] - imgs[1]).max(-1) > 0
        assert diff.sum() > 10
        ys, xs = np.nonzero(diff)
        assert c[ys].min() >= idn.eye_y - 0.12 and c[ys].max() <= idn.eye_y + 0.1
        assert np.abs(c[xs]).max() <= idn.eye_spacing + idn.eye_w + 0.12
        # Nothing changes between the eyes (the nose bridge).
        assert not diff[:, np.abs(c) < 0.03].any()


# ------------------------------------------------------------------------------------------------------
# Expressions


def test_sample_expression_statistics() -> None:
    rng = np.random.default_rng(0)
    samples = [R.sample_expression(rng) for _ in range(2000)]
    aus = np.stack([s[0] for s in samples])
    emotions = np.array([s[1] for s in samples])
    assert aus.dtype == np.float32 and aus.shape == (2000, len(R.DISFA_AUS))
    assert aus.min() >= 0.0 and aus.max() <= R.MAX_INTENSITY
    rates = (aus > 2.0).mean(0)
    assert np.all(rates > 0.02) and np.all(rates < 0.6), dict(zip(R.DISFA_AUS, rates.round(3)))
    assert set(emotions.tolist()) == set(range(len(R.EMOTIONS)))
    # Neutral faces stay near zero, surprised ones raise the brows.
    assert aus[emotions == 0].mean() < 0.3
    assert aus[emotions == R.EMOTIONS.index("surprised"), R.DISFA_AUS.index(2)].mean() > 2.0


def test_sample_expression_au_order() -> None:
    full, e1 = R.sample_expression(np.random.default_rng(9))
    sub, e2 = R.sample_expression(np.random.default_rng(9), aus=(26, 1, 12))
    assert e1 == e2
    np.testing.assert_array_equal(sub, full[[R.DISFA_AUS.index(a) for a in (26, 1, 12)]])
    with pytest.raises(ValueError, match="14"):
        R.sample_expression(np.random.default_rng(0), aus=(1, 14))


# ------------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 100}, "size"),
        ({"pose": 3}, "pose"),
        ({"pose": -1}, "pose"),
        ({"gaze": 5}, "gaze"),
        ({"aus": {3: 1.0}}, "AU 3"),
        ({"aus": np.zeros(11)}, "shape"),
        ({"aus": {12: float("nan")}}, "nan"),
        ({"aus": {12: 5.5}}, "5.5"),
        ({"aus": np.full(12, -0.1)}, "-0.1"),
    ],
)
def test_validation_errors(kwargs: dict, match: str) -> None:
    args = {
        "identity": R.make_identity(0),
        "pose": 1,
        "aus": {},
        "gaze": 1,
        "nuisance": _nuisance(0),
        "size": 64,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        R.render_face(**args)


def test_identity_seed_validation() -> None:
    with pytest.raises(ValueError, match="seed"):
        R.make_identity(-1)


# ------------------------------------------------------------------------------------------------------
# Contact sheet


def test_contact_sheet() -> None:
    size, steps = 64, 4
    sheet = R.au_contact_sheet(R.make_identity(1), size, steps=steps)
    margin = size // 2
    assert sheet.dtype == np.uint8
    assert sheet.shape == (len(R.DISFA_AUS) * size, margin + steps * size, 3)
    # Each row is labelled, and its first column is the neutral face.
    for r in range(len(R.DISFA_AUS)):
        assert (sheet[r * size : (r + 1) * size, :margin] < 128).any()
    np.testing.assert_array_equal(
        sheet[:size, margin : margin + size], sheet[size : 2 * size, margin : margin + size]
    )
    assert not np.array_equal(sheet[:size, margin : margin + size], sheet[:size, -size:])
    with pytest.raises(ValueError, match="size"):
        R.au_contact_sheet(R.make_identity(1), 32)
