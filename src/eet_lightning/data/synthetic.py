"""Procedural face renderer: the library's built-in synthetic dataset.

Every face is drawn from explicit parameters (identity, yaw class, 12 DISFA action-unit intensities, gaze
class and image nuisance), so labels are exact and the ground truth of an expression swap is simply a
re-render with the other face's AUs and gaze.

Geometry lives in normalised image coordinates: x and y both span [-1, 1] (x to the right, y downwards),
so the same face comes out at every supported size. Shapes are described by (approximate) signed
distances and composited back to front with coverage ``clip(0.5 - d / pixel, 0, 1)``, which anti-aliases
edges at any resolution without supersampling. All work is vectorised numpy on small windows around each
feature; coordinate vectors are cached per size.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from eet_lightning.aus import DISFA_AUS
from eet_lightning.pixels import SUPPORTED_IMAGE_SIZES, check_image_size

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprised",
    "angry",
    "disgusted",
    "fearful",
    "contemptuous",
)
POSES: tuple[str, ...] = ("left", "frontal", "right")  # yaw classes 0, 1, 2
GAZES: tuple[str, ...] = ("left", "straight", "right")  # gaze classes 0, 1, 2
MAX_INTENSITY: float = 5.0
SUPPORTED_SIZES: tuple[int, ...] = SUPPORTED_IMAGE_SIZES
HAIR_STYLES: tuple[str, ...] = ("short", "long", "fringe", "buzz", "bald")
BEARD_STYLES: tuple[str, ...] = ("none", "full", "goatee", "stubble")

_AU_INDEX: dict[int, int] = {au: i for i, au in enumerate(DISFA_AUS)}

Color = tuple[float, float, float]

# ------------------------------------------------------------------------------------------------------
# Palettes (RGB 0..255)

_SKIN_ANCHORS = np.array(
    [
        (255, 226, 204),
        (244, 204, 176),
        (228, 178, 138),
        (205, 146, 104),
        (172, 112, 74),
        (134, 86, 58),
        (96, 60, 42),
    ],
    dtype=np.float64,
)
_HAIR_COLORS: tuple[Color, ...] = (
    (28.0, 24.0, 22.0),  # black
    (60.0, 40.0, 28.0),  # dark brown
    (104.0, 70.0, 44.0),  # brown
    (138.0, 66.0, 36.0),  # auburn
    (202.0, 166.0, 104.0),  # blonde
    (226.0, 204.0, 152.0),  # light blonde
    (150.0, 147.0, 143.0),  # grey
)
_HAIR_P_LIGHT = np.array([0.18, 0.24, 0.17, 0.08, 0.17, 0.07, 0.09])
_HAIR_P_DARK = np.array([0.62, 0.24, 0.06, 0.01, 0.01, 0.0, 0.06])
_EYE_COLORS: tuple[Color, ...] = (
    (98.0, 60.0, 32.0),  # brown
    (58.0, 36.0, 24.0),  # dark brown
    (128.0, 98.0, 52.0),  # hazel
    (78.0, 118.0, 72.0),  # green
    (72.0, 118.0, 172.0),  # blue
    (118.0, 130.0, 142.0),  # grey
)
_EYE_P_LIGHT = np.array([0.26, 0.14, 0.14, 0.12, 0.24, 0.10])
_EYE_P_DARK = np.array([0.40, 0.52, 0.06, 0.01, 0.0, 0.01])

_SCLERA = np.array((236.0, 231.0, 224.0), dtype=np.float32)
_PUPIL = np.array((16.0, 12.0, 12.0), dtype=np.float32)
_WHITE = np.array((255.0, 255.0, 255.0), dtype=np.float32)
_LASH = np.array((34.0, 24.0, 24.0), dtype=np.float32)
_MOUTH_INSIDE = np.array((58.0, 18.0, 24.0), dtype=np.float32)
_TEETH = np.array((240.0, 236.0, 226.0), dtype=np.float32)
_TONGUE = np.array((172.0, 72.0, 78.0), dtype=np.float32)
_CARUNCLE = np.array((214.0, 146.0, 142.0), dtype=np.float32)

# ------------------------------------------------------------------------------------------------------
# Fixed layout constants (normalised units)

_FACE_CY = 0.05  # vertical centre of the head outline (widest row)
_K_FAR = 0.84  # horizontal foreshortening of the side turned away from the camera
_K_NEAR = 0.98
# How far (normalised x) each feature slides toward the turn side at a non-frontal yaw; features standing
# further out of the face plane slide more, which is what makes the turn read as a rotation.
_DEPTH_BROW = 0.055
_DEPTH_EYE = 0.06
_DEPTH_CHEEK = 0.045
_DEPTH_BRIDGE = 0.085
_DEPTH_TIP = 0.125
_DEPTH_MOUTH = 0.075
_DEPTH_CHIN = 0.06


# ------------------------------------------------------------------------------------------------------
# Public dataclasses


@dataclass(frozen=True)
class Identity:
    """Every attribute of one synthetic person (normalised units, colours RGB 0..255).

    Built only by :func:`make_identity`, so an identity is fully described by its seed.
    """

    seed: int
    face_w: float  # half-width of the head outline
    face_top: float  # crown height above the widest row
    face_bottom: float  # chin depth below the widest row
    jaw_p: float  # super-ellipse exponent of the lower face (2 = round/oval, larger = squarer jaw)
    skin: Color
    hair_color: Color
    hair_style: str  # one of HAIR_STYLES
    hairline: float  # y of the hairline at the forehead centre
    hair_part: float  # x of the parting (short / long styles)
    hair_length: float  # y where long hair ends
    eye_color: Color
    eye_spacing: float  # x of each eye centre
    eye_w: float  # eye half-width
    eye_h: float  # upper-lid opening height
    eye_y: float
    eye_tilt: float  # lift of the outer eye corner
    brow_gap: float  # brow centre line above the eye centre
    brow_inner: float  # x of the brow's inner end
    brow_thick: float
    brow_arch: float
    brow_color: Color
    nose_y: float  # y of the nostrils
    nose_w: float  # half-width of the nose base
    mouth_y: float
    mouth_w: float  # mouth half-width
    lip_upper: float  # upper lip thickness
    lip_lower: float  # lower lip thickness
    lip_color: Color
    blush: float  # resting cheek colour strength
    ear_size: float
    glasses: bool
    glasses_round: bool
    glasses_color: Color
    beard: str  # one of BEARD_STYLES
    shirt_color: Color


@dataclass(frozen=True)
class Nuisance:
    """Image conditions that are not part of the face: background, lighting ramp and sensor noise."""

    bg_top: Color
    bg_bottom: Color  # equal to bg_top for a solid background
    light_angle: float  # direction of the brightness ramp, radians (0 = brighter to the right)
    light_strength: float  # relative brightness change from the centre to the frame edge
    noise_seed: int
    noise_sigma: float  # Gaussian noise std in 0..255 intensity levels


_PLAIN_NUISANCE = Nuisance(
    bg_top=(206.0, 212.0, 218.0),
    bg_bottom=(206.0, 212.0, 218.0),
    light_angle=0.0,
    light_strength=0.0,
    noise_seed=0,
    noise_sigma=0.0,
)


# ------------------------------------------------------------------------------------------------------
# Sampling


def _color(rgb: np.ndarray | Sequence[float]) -> Color:
    r, g, b = (float(np.clip(v, 0.0, 255.0)) for v in rgb)
    return (r, g, b)


def _mix(a: Sequence[float], b: Sequence[float], t: float) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) * (1.0 - t) + np.asarray(b, dtype=np.float64) * t


def make_identity(seed: int) -> Identity:
    """Draw one person's attributes from ``np.random.default_rng(seed)``.

    Args:
        seed: non-negative integer; the same seed always gives the same person.

    Returns:
        The frozen :class:`Identity`.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"identity seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    u = rng.uniform

    tone = float(u(0.0, 1.0))
    pos = tone * (len(_SKIN_ANCHORS) - 1)
    i = min(int(pos), len(_SKIN_ANCHORS) - 2)
    skin = _mix(_SKIN_ANCHORS[i], _SKIN_ANCHORS[i + 1], pos - i) + rng.normal(0.0, 4.0, 3)
    dark = tone > 0.6

    hair_idx = int(rng.choice(len(_HAIR_COLORS), p=(_HAIR_P_DARK if dark else _HAIR_P_LIGHT)))
    hair = np.asarray(_HAIR_COLORS[hair_idx]) * u(0.88, 1.12)
    hair_style = HAIR_STYLES[int(rng.choice(len(HAIR_STYLES), p=[0.32, 0.24, 0.16, 0.16, 0.12]))]

    eye_idx = int(rng.choice(len(_EYE_COLORS), p=(_EYE_P_DARK if dark else _EYE_P_LIGHT)))
    eye = np.asarray(_EYE_COLORS[eye_idx]) * u(0.9, 1.1)

    face_w = float(u(0.56, 0.66))
    eye_w = float(u(0.102, 0.122))
    eye_spacing = float(0.37 * face_w + u(-0.005, 0.022))
    eye_y = float(u(-0.045, -0.005))

    # Brows follow the hair, but stay visibly darker than blonde/grey hair as real brows do.
    if hair_style == "bald":
        brow = _mix(skin, (50.0, 36.0, 28.0), 0.75)
    else:
        brow = _mix(hair, skin, 0.15) * (0.78 if hair_idx >= 4 else 0.95)
    brow = brow * u(0.9, 1.05)

    lip = _mix(skin, (192.0, 78.0, 90.0), u(0.35, 0.55)) * (u(0.86, 0.96) - 0.14 * tone)
    nose_y = float(eye_y + u(0.27, 0.32))

    has_beard = rng.uniform() < 0.15
    beard = BEARD_STYLES[int(rng.integers(1, len(BEARD_STYLES)))] if has_beard else "none"
    glasses = bool(rng.uniform() < 0.2)
    frame = (
        np.array((24.0, 22.0, 22.0))
        if rng.uniform() < 0.5
        else np.array(colorsys.hsv_to_rgb(u(0.0, 1.0), u(0.3, 0.8), u(0.25, 0.7))) * 255.0
    )
    shirt = np.array(colorsys.hsv_to_rgb(u(0.0, 1.0), u(0.15, 0.75), u(0.25, 0.9))) * 255.0

    return Identity(
        seed=int(seed),
        face_w=face_w,
        face_top=float(u(0.76, 0.82)),
        face_bottom=float(u(0.66, 0.73)),
        jaw_p=float(u(2.1, 3.0)),
        skin=_color(skin),
        hair_color=_color(hair),
        hair_style=hair_style,
        hairline=float(u(-0.5, -0.41)),
        hair_part=float(u(-0.2, 0.2)),
        hair_length=float(u(0.45, 0.9)),
        eye_color=_color(eye),
        eye_spacing=eye_spacing,
        eye_w=eye_w,
        eye_h=float(u(0.038, 0.05)),
        eye_y=eye_y,
        eye_tilt=float(u(-0.006, 0.014)),
        brow_gap=float(u(0.1, 0.122)),
        brow_inner=float(u(0.06, 0.085)),
        brow_thick=float(u(0.022, 0.04)),
        brow_arch=float(u(0.008, 0.03)),
        brow_color=_color(brow),
        nose_y=nose_y,
        nose_w=float(u(0.05, 0.072)),
        mouth_y=float(nose_y + u(0.13, 0.16)),
        mouth_w=float(u(0.16, 0.2)),
        lip_upper=float(u(0.022, 0.038)),
        lip_lower=float(u(0.03, 0.05)),
        lip_color=_color(lip),
        blush=float(u(0.1, 0.3)),
        ear_size=float(u(0.9, 1.12)),
        glasses=glasses,
        glasses_round=bool(rng.uniform() < 0.5),
        glasses_color=_color(frame),
        beard=beard,
        shirt_color=_color(shirt),
    )


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    """Draw a background (solid or two-colour vertical gradient), a lighting ramp and a noise level."""
    h, s, v = rng.uniform(0.0, 1.0), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95)
    top = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0
    if rng.uniform() < 0.5:
        bottom = top.copy()
    else:
        h2 = (h + rng.uniform(-0.15, 0.15)) % 1.0
        bottom = np.array(colorsys.hsv_to_rgb(h2, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95))) * 255.0
    return Nuisance(
        bg_top=_color(top),
        bg_bottom=_color(bottom),
        light_angle=float(rng.uniform(0.0, 2.0 * math.pi)),
        light_strength=float(rng.uniform(0.0, 0.22)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
        noise_sigma=float(rng.uniform(0.0, 3.0)),
    )


# FACS prototypes on the 0..5 scale: (always-on AUs, optional AUs with their probability).
_PROTOTYPES: tuple[tuple[dict[int, float], dict[int, tuple[float, float]]], ...] = (
    ({}, {}),  # neutral
    ({6: 3.0, 12: 4.0}, {25: (2.5, 0.6), 26: (1.8, 0.2)}),  # happy
    ({1: 3.0, 4: 2.5, 15: 3.0}, {17: (2.2, 0.5)}),  # sad
    ({1: 3.5, 2: 3.5, 5: 3.0, 25: 3.5, 26: 3.5}, {}),  # surprised
    ({4: 3.5, 5: 2.5}, {17: (2.5, 0.5), 9: (1.2, 0.2)}),  # angry
    ({9: 3.5, 15: 2.0, 17: 2.5}, {4: (2.0, 0.5), 25: (1.5, 0.3)}),  # disgusted
    ({1: 3.0, 2: 2.5, 4: 2.5, 5: 3.5, 20: 3.0, 25: 3.0}, {26: (2.5, 0.4)}),  # fearful
    ({12: 2.2}, {6: (1.0, 0.2)}),  # contemptuous: AU14 is not rendered, weak AU12 stands in
)


def sample_expression(rng: np.random.Generator, aus: Sequence[int] = DISFA_AUS) -> tuple[np.ndarray, int]:
    """Draw one expression: a uniformly chosen emotion's FACS prototype, scaled and jittered.

    Args:
        rng: random generator (consumed).
        aus: AU numbers to return, in this order (each must be one of DISFA_AUS).

    Returns:
        (float32 intensities [len(aus)] in [0, 5], index of the emotion in EMOTIONS).
    """
    order = [int(a) for a in aus]
    bad = [a for a in order if a not in _AU_INDEX]
    if bad:
        raise ValueError(f"AU(s) {bad} not rendered; supported AUs are {list(DISFA_AUS)}")
    emotion = int(rng.integers(0, len(EMOTIONS)))
    base, optional = _PROTOTYPES[emotion]
    vals = np.zeros(len(DISFA_AUS), dtype=np.float64)
    scale = rng.uniform(0.55, 1.25)
    for au, v in base.items():
        vals[_AU_INDEX[au]] = v * scale + rng.normal(0.0, 0.45)
    for au, (v, p) in optional.items():
        if rng.uniform() < p:
            vals[_AU_INDEX[au]] = v * scale + rng.normal(0.0, 0.45)
    # Sparse low-level activity everywhere, as in real AU annotations, plus an occasional stray AU.
    low = rng.uniform(size=len(DISFA_AUS)) < 0.12
    vals += low * rng.uniform(0.0, 1.2, size=len(DISFA_AUS))
    if rng.uniform() < 0.25:
        vals[int(rng.integers(0, len(DISFA_AUS)))] += rng.uniform(1.0, 3.5)
    vals = np.clip(vals, 0.0, MAX_INTENSITY)
    return vals[[_AU_INDEX[a] for a in order]].astype(np.float32), emotion


# ------------------------------------------------------------------------------------------------------
# Validation


def _check_class(value: int, name: str, names: tuple[str, ...]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 2:
        raise ValueError(f"{name} must be an integer class 0..2 {names}, got {value!r}")
    return int(value)


def _au_vector(aus: np.ndarray | Mapping[int, float]) -> np.ndarray:
    """AU intensities as float64 [12] in DISFA_AUS order, validated."""
    if isinstance(aus, Mapping):
        vec = np.zeros(len(DISFA_AUS), dtype=np.float64)
        for key, value in aus.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or int(key) not in _AU_INDEX:
                raise ValueError(f"AU {key!r} is not rendered; supported AUs are {list(DISFA_AUS)}")
            vec[_AU_INDEX[int(key)]] = float(value)
    else:
        vec = np.asarray(aus, dtype=np.float64)
        if vec.shape != (len(DISFA_AUS),):
            raise ValueError(
                f"aus must hold {len(DISFA_AUS)} intensities in DISFA_AUS order {DISFA_AUS}, "
                f"got shape {vec.shape}"
            )
    bad = ~np.isfinite(vec) | (vec < 0.0) | (vec > MAX_INTENSITY)
    if bad.any():
        items = {DISFA_AUS[i]: float(vec[i]) for i in np.flatnonzero(bad)}
        raise ValueError(f"AU intensities must be finite and in [0, {MAX_INTENSITY}], got {items}")
    return vec


# ------------------------------------------------------------------------------------------------------
# Drawing primitives

_COORDS: dict[int, np.ndarray] = {}


def _coords(size: int) -> np.ndarray:
    """Pixel-centre coordinates in [-1, 1] for one axis (same for x and y), cached per size."""
    c = _COORDS.get(size)
    if c is None:
        c = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
        c.setflags(write=False)
        _COORDS[size] = c
    return c


class _Canvas:
    """Float RGB image plus helpers to paint signed-distance shapes into small windows of it."""

    __slots__ = ("img", "c", "n", "px")

    def __init__(self, img: np.ndarray, size: int):
        self.img = img
        self.c = _coords(size)
        self.n = size
        self.px = 2.0 / size

    def window(self, x0: float, x1: float, y0: float, y1: float):
        """(slices, X [1, w], Y [h, 1]) covering the box plus a pixel of margin, or None if off-image."""
        n, inv = self.n, 1.0 / self.px
        i0 = max(int((x0 + 1.0) * inv) - 1, 0)
        i1 = min(int((x1 + 1.0) * inv) + 2, n)
        j0 = max(int((y0 + 1.0) * inv) - 1, 0)
        j1 = min(int((y1 + 1.0) * inv) + 2, n)
        if i1 <= i0 or j1 <= j0:
            return None
        return (slice(j0, j1), slice(i0, i1)), self.c[None, i0:i1], self.c[j0:j1, None]

    def paint(self, sl, d: np.ndarray, color, opacity=1.0, feather: float = 0.0) -> None:
        """Blend ``color`` over the window where ``d < 0``; edges ramp over max(pixel, feather)."""
        w = self.px if feather < self.px else feather
        a = _clip01(0.5 - d * (1.0 / w))
        if not (isinstance(opacity, float) and opacity == 1.0):
            a = a * opacity
        reg = self.img[sl]
        if a.shape != reg.shape[:2]:
            a = np.broadcast_to(a, reg.shape[:2])
        reg += (color - reg) * a[..., None]


def _ellipse(X, Y, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (first-order accurate near the boundary)."""
    dx = (X - cx) * (1.0 / a)
    dy = (Y - cy) * (1.0 / b)
    k0 = np.sqrt(dx * dx + dy * dy)
    k1 = np.sqrt(dx * dx * (1.0 / a**2) + dy * dy * (1.0 / b**2))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _circle(X, Y, cx: float, cy: float, r: float) -> np.ndarray:
    dx = X - cx
    dy = Y - cy
    return np.sqrt(dx * dx + dy * dy) - r


def _seg(X, Y, ax: float, ay: float, bx: float, by: float) -> np.ndarray:
    """Unsigned distance to the segment A-B."""
    bax, bay = bx - ax, by - ay
    pax = X - ax
    pay = Y - ay
    h = _clip01((pax * bax + pay * bay) * (1.0 / max(bax * bax + bay * bay, 1e-12)))
    dx = pax - bax * h
    dy = pay - bay * h
    return np.sqrt(dx * dx + dy * dy)


_BEZIER_T: dict[int, np.ndarray] = {}


def _bezier(p0, p1, p2, n: int = 6) -> np.ndarray:
    """n points on the quadratic Bezier p0-p1-p2 (used as a polyline)."""
    t = _BEZIER_T.get(n)
    if t is None:
        t = _BEZIER_T[n] = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _strokes(
    cv: _Canvas, paths: Sequence[np.ndarray], hw: float, color, opacity: float, feather: float = 0.0
):
    """Draw polylines of half-width ``hw``. Lines thinner than a pixel are widened to one pixel with the
    opacity reduced in proportion, so fine wrinkles stay visible (faintly) at 64 px instead of aliasing."""
    if opacity <= 0.0 or not paths:
        return
    eff = max(hw, 0.5 * cv.px)
    opacity = min(opacity * hw / eff, 1.0)
    pts = np.concatenate(paths)
    m = eff + feather
    win = cv.window(pts[:, 0].min() - m, pts[:, 0].max() + m, pts[:, 1].min() - m, pts[:, 1].max() + m)
    if win is None:
        return
    sl, X, Y = win
    d = None
    for path in paths:
        for k in range(len(path) - 1):
            dk = _seg(X, Y, path[k, 0], path[k, 1], path[k + 1, 0], path[k + 1, 1])
            d = dk if d is None else np.minimum(d, dk)
    cv.paint(sl, d - eff, color, opacity, feather)


def _clip01(x):
    # np.clip's Python-level dispatch costs several microseconds per call, which adds up over the
    # hundreds of small arrays a face needs; two raw ufuncs are much cheaper.
    return np.minimum(np.maximum(x, 0.0), 1.0)


def _unit(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def _shade(rgb: Sequence[float], f: float) -> np.ndarray:
    return np.minimum(np.asarray(rgb, dtype=np.float32) * np.float32(f), np.float32(255.0))


def _smoothstep(e0: float, e1: float, x):
    t = _clip01((x - e0) * (1.0 / (e1 - e0)))
    return t * t * (3.0 - 2.0 * t)


# ------------------------------------------------------------------------------------------------------
# Scene geometry shared by the layers


class _Geo:
    """Identity + pose + AUs resolved into the quantities the layers need."""

    def __init__(self, idn: Identity, pose: int, au: np.ndarray):
        self.i = idn
        self.s = float(pose - 1)  # -1: turned to the image left, +1: to the right
        # The side the face turns toward is the far side, seen foreshortened.
        self.k_neg = _K_FAR if pose == 0 else (_K_NEAR if pose == 2 else 1.0)
        self.k_pos = _K_FAR if pose == 2 else (_K_NEAR if pose == 0 else 1.0)
        self.a = {au_num: float(au[k]) for k, au_num in enumerate(DISFA_AUS)}  # 0..1
        self.skin = np.asarray(idn.skin, dtype=np.float32)
        self.h_low_rest = idn.face_bottom
        self.h_low = idn.face_bottom + 0.085 * self.a[26]  # AU26 drops the jaw
        self.chin_y = _FACE_CY + self.h_low
        self.mouth_w_rest = idn.mouth_w * 0.5 * (self.k_neg + self.k_pos)

    def k(self, side: float) -> float:
        return self.k_pos if side > 0 else self.k_neg

    def fx(self, u: float, depth: float) -> float:
        """Image x of a frontal-face x ``u`` on a surface ``depth`` in front of the face plane."""
        return u * self.k(u) + self.s * depth

    def unwarp(self, X: np.ndarray) -> np.ndarray:
        """Frontal-face x of image x (inverse of the outline foreshortening)."""
        if self.k_neg == 1.0 and self.k_pos == 1.0:
            return X
        return X * np.where(X > 0, 1.0 / self.k_pos, 1.0 / self.k_neg).astype(np.float32)

    def head_d(self, X, Y, grow_x: float = 0.0, grow_top: float = 0.0, h_low: float | None = None):
        """Signed distance (approx.) to the head outline: an ellipse on top, a super-ellipse jaw below."""
        U = np.abs(self.unwarp(X))
        V = Y - _FACE_CY
        W = self.i.face_w + grow_x
        out = np.empty((V.shape[0], U.shape[1]), dtype=np.float32)
        split = int(np.searchsorted(V[:, 0], 0.0))
        u = U * (1.0 / W)
        for rows, b, p in (
            (slice(0, split), self.i.face_top + grow_top, 2.0),
            (slice(split, V.shape[0]), self.h_low if h_low is None else h_low, self.i.jaw_p),
        ):
            v = np.abs(V[rows]) * (1.0 / b)
            if v.shape[0] == 0:
                continue
            up = u ** (p - 1.0)
            vp = v ** (p - 1.0)
            f = up * u + vp * v - 1.0
            gu = up * (p / W)
            gv = vp * (p / b)
            out[rows] = f / np.maximum(np.sqrt(gu * gu + gv * gv), 1e-3)
        return out


# ------------------------------------------------------------------------------------------------------
# Layers


def _hair_texture(X, Y, base: np.ndarray) -> np.ndarray:
    # Fine strands (stripes bent by a slow wave) make a flat fill read as hair.
    t = 1.0 + 0.07 * np.sin(X * 70.0 + np.sin(Y * 9.0) * 3.0) + 0.05 * np.sin(Y * 23.0 + X * 6.0)
    return base * t[..., None]


def _hair_back(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    style = idn.hair_style
    if style in ("buzz", "bald"):
        return
    W = idn.face_w
    hair = np.asarray(idn.hair_color, dtype=np.float32) * 0.82  # the back of the hair lies in shadow
    bottom = idn.hair_length if style == "long" else 0.1
    win = cv.window(-W - 0.15, W + 0.15, _FACE_CY - idn.face_top - 0.1, bottom + 0.05)
    if win is None:
        return
    sl, X, Y = win
    if style == "long":
        d = _long_hair_d(g, X, Y)
    else:  # short hair stops at the sideburns
        d = np.maximum(g.head_d(X, Y, 0.06, 0.075, g.h_low_rest), Y - (idn.eye_y + 0.05))
    cv.paint(sl, d, _hair_texture(X, Y, hair))


def _long_hair_d(g: _Geo, X, Y) -> np.ndarray:
    """Silhouette of long hair: the cap, continued below the widest row by a gently flaring curtain."""
    idn = g.i
    U = np.abs(g.unwarp(X))
    cap = g.head_d(X, Y, 0.06, 0.075, g.h_low_rest)
    flare = idn.face_w + 0.06 + 0.05 * _smoothstep(_FACE_CY, _FACE_CY + 0.4, Y)
    wavy = idn.hair_length + 0.025 * np.sin(U * 21.0)
    curtain = np.maximum(np.maximum(U - flare, Y - wavy), _FACE_CY - Y)
    return np.minimum(cap, curtain)


def _ears(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    skin = g.skin
    ey = idn.eye_y + 0.1
    a, b = 0.062 * idn.ear_size, 0.122 * idn.ear_size
    for side in (-1.0, 1.0):
        far = side * g.s > 0
        # The far ear slips behind the cheek; the near one stays fully out.
        ex = side * (idn.face_w * g.k(side) - (0.06 if far else 0.012))
        win = cv.window(ex - a, ex + a, ey - b, ey + b)
        if win is None:
            continue
        sl, X, Y = win
        cv.paint(sl, _ellipse(X, Y, ex, ey, a, b), _shade(skin, 0.95))
        cv.paint(
            sl,
            _ellipse(X, Y, ex + side * 0.014, ey - 0.01, a * 0.5, b * 0.66),
            _shade(skin, 0.72),
            0.7,
            feather=0.02,
        )


def _neck(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    skin = g.skin
    nw = 0.42 * idn.face_w
    nx = g.s * 0.02
    win = cv.window(nx - nw, nx + nw, 0.1, 1.0)
    if win is not None:
        sl, X, Y = win
        d = np.maximum(np.abs(X - nx) - nw, 0.15 - Y)
        shade = (0.8 + 0.12 * _clip01((Y - 0.6) * 2.5))[..., None]
        cv.paint(sl, d, skin * shade)
        # Shadow cast by the jaw onto the neck; it follows the chin when AU26 drops it.
        cy = g.chin_y + 0.03
        cv.paint(
            sl,
            _ellipse(X, Y, g.fx(0.0, _DEPTH_CHIN) * 0.5, cy, nw * 1.1, 0.09),
            _shade(skin, 0.55),
            0.55,
            feather=0.07,
        )
    shirt = np.asarray(idn.shirt_color, dtype=np.float32)
    win = cv.window(-1.1, 1.1, 0.84, 1.0)
    if win is not None:
        sl, X, Y = win
        cv.paint(sl, _ellipse(X, Y, 0.0, 1.46, 1.4, 0.6), shirt)
        collar = _ellipse(X, Y, nx, 0.87, nw + 0.01, 0.075)
        cv.paint(sl, collar, skin * 0.86)
        cv.paint(sl, np.maximum(np.abs(collar) - 0.01, 0.87 - Y), _shade(shirt, 0.7))


def _face(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    W = idn.face_w
    win = cv.window(-W - 0.02, W + 0.02, _FACE_CY - idn.face_top - 0.02, g.chin_y + 0.02)
    if win is None:
        return
    sl, X, Y = win
    d = g.head_d(X, Y)
    # Darker towards the outline and slightly under the cheekbones: a cheap stand-in for 3-D shading.
    rim = _clip01(1.0 + d * (1.0 / 0.16))
    shade = 1.0 - 0.17 * rim * rim - 0.03 * _clip01((Y - 0.1) * 2.0)
    cv.paint(sl, d, g.skin * shade[..., None])


def _cheeks(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    a6, a12 = g.a[6], g.a[12]
    blush = _mix(idn.skin, (214.0, 96.0, 100.0), 0.5).astype(np.float32)
    for side in (-1.0, 1.0):
        cx = g.fx(side * (idn.eye_spacing + 0.05), _DEPTH_CHEEK)
        cy = idn.eye_y + 0.22 - 0.085 * a6  # AU6 lifts the cheek
        win = cv.window(cx - 0.24, cx + 0.24, cy - 0.2, cy + 0.2)
        if win is None:
            continue
        sl, X, Y = win
        cv.paint(sl, _ellipse(X, Y, cx, cy, 0.1, 0.065), blush, min(idn.blush + 0.55 * a6, 0.9), feather=0.11)
        if a6 > 0:
            # The raised cheek catches the light just under the eye.
            cv.paint(
                sl,
                _ellipse(X, Y, cx - side * 0.01, cy - 0.045, 0.075, 0.03),
                _shade(idn.skin, 1.2),
                0.6 * a6,
                feather=0.05,
            )
        if a12 > 0:
            # Smiling bunches the lower cheek beside the nasolabial fold.
            mx = g.fx(side * (g.mouth_w_rest + 0.07), _DEPTH_MOUTH)
            win2 = cv.window(mx - 0.14, mx + 0.14, idn.mouth_y - 0.2, idn.mouth_y + 0.05)
            if win2 is not None:
                sl2, X2, Y2 = win2
                cv.paint(
                    sl2,
                    _ellipse(X2, Y2, mx, idn.mouth_y - 0.07, 0.05, 0.045),
                    _shade(idn.skin, 1.1),
                    0.45 * a12,
                    feather=0.05,
                )


def _beard(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    if idn.beard == "none":
        return
    W = idn.face_w
    mx = g.fx(0.0, _DEPTH_MOUTH)
    win = cv.window(-W - 0.04, W + 0.04, idn.eye_y + 0.1, g.chin_y + 0.06)
    if win is None:
        return
    sl, X, Y = win
    inside = g.head_d(X, Y) - 0.025
    if idn.beard == "goatee":
        region = _ellipse(
            X,
            Y,
            mx,
            0.5 * (idn.nose_y + g.chin_y) + 0.04,
            idn.mouth_w + 0.05,
            0.5 * (g.chin_y - idn.nose_y) + 0.02,
        )
        top = idn.nose_y + 0.03
    else:
        region = inside
        edge = _smoothstep(idn.mouth_w + 0.02, W * 0.85, np.abs(X - mx))
        top = idn.nose_y + 0.03 - (idn.nose_y - idn.eye_y - 0.14) * edge
    d = np.maximum(np.maximum(inside, region), top - Y)
    color = _hair_texture(X, Y, np.asarray(idn.hair_color, dtype=np.float32) * 0.9)
    cv.paint(sl, d, color, 0.4 if idn.beard == "stubble" else 0.93, feather=0.03)


def _forehead(cv: _Canvas, g: _Geo) -> None:
    """AU1/AU2 horizontal forehead wrinkles (central for AU1, lateral for AU2) and AU4 glabellar furrows."""
    idn = g.i
    a1, a2, a4 = g.a[1], g.a[2], g.a[4]
    line = _shade(idn.skin, 0.55)
    by = idn.eye_y - idn.brow_gap
    cx = g.fx(0.0, _DEPTH_BROW)
    if a1 > 0 or a2 > 0:
        x0, x1 = cx - 0.36 * g.k_neg, cx + 0.36 * g.k_pos
        ys = [by - 0.1 - 0.045 * k for k in range(3)]
        win = cv.window(x0 - 0.02, x1 + 0.02, ys[-1] - 0.05, ys[0] + 0.01)
        if win is not None:
            sl, X, Y = win
            xr = (X - cx) * (1.0 / 0.36)
            d = None
            for y in ys:
                yc = y - 0.035 * (1.0 - xr * xr)  # lines arch upward over the forehead
                dk = np.abs(Y - yc)
                d = dk if d is None else np.minimum(d, dk)
            hw = max(0.004, 0.5 * cv.px)
            central = np.exp(-(xr * xr) * 4.0)
            op = np.minimum(0.75 * a1 * central + 0.75 * a2 * (1.0 - central), 0.9)
            op = op * _clip01((1.0 - np.abs(xr)) * 5.0) * (0.004 / hw)
            cv.paint(sl, d - hw, line, op)
    if a4 > 0:
        # Knotted skin between the brows, then the vertical furrows, lengthening as the brows squeeze.
        win = cv.window(cx - 0.08, cx + 0.08, by - 0.06, by + 0.1)
        if win is not None:
            sl, X, Y = win
            cv.paint(sl, _ellipse(X, Y, cx, by + 0.02, 0.035, 0.045), line, 0.3 * a4, feather=0.04)
        paths = []
        for side in (-1.0, 1.0):
            x = cx + side * (0.02 + 0.01 * (1 - a4))
            y0, y1 = by - 0.005 - 0.02 * a4, by + 0.05 + 0.025 * a4
            paths.append(_bezier((x, y0), (x + side * 0.006, 0.5 * (y0 + y1)), (x + side * 0.002, y1), 4))
        _strokes(cv, paths, 0.0045, line, 0.95 * a4)
        # Horizontal fold at the nose root as the brows squeeze down.
        _strokes(cv, [np.array([[cx - 0.03, by + 0.085], [cx + 0.03, by + 0.085]])], 0.004, line, 0.5 * a4)


def _eye(cv: _Canvas, g: _Geo, side: float, gaze: int) -> None:
    idn = g.i
    a5, a6 = g.a[5], g.a[6]
    skin = g.skin
    kx = g.k(side)
    cx = g.fx(side * idn.eye_spacing, _DEPTH_EYE)
    cy = idn.eye_y
    ew = idn.eye_w * kx
    eh = idn.eye_h
    up_h = eh * (1.0 + 1.25 * a5)  # AU5 raises the upper lid
    lo_h = 0.72 * eh * (1.0 - 0.65 * a6)  # AU6 pushes the lower lid up
    win = cv.window(cx - ew * 1.7, cx + ew * 1.7, cy - eh * 2.0 - 0.06, cy + eh + 0.07)
    if win is None:
        return
    sl, X, Y = win
    t = (X - cx) * (1.0 / ew)
    tt = _clip01(1.0 - t * t)
    base = cy - idn.eye_tilt * side * t
    # Upper lid peaks slightly toward the nose, as in real eyes.
    upper = base - up_h * tt**0.8 * (1.0 - 0.12 * side * t)
    lower = base + lo_h * tt**1.1 * (1.0 + 0.1 * side * t)
    ends = (np.abs(t) - 1.0) * ew
    d_eye = np.maximum(np.maximum(upper - Y, Y - lower), ends)

    # Socket shadow and the lid skin between the crease and the lash line.
    cv.paint(sl, _ellipse(X, Y, cx, cy - 0.012, ew * 1.3, eh * 2.3), _shade(skin, 0.86), 0.55, feather=0.05)
    crease = np.minimum(base - (eh * 1.1 + 0.024) * tt**0.6, upper - 0.007)
    lid = np.maximum(np.maximum(crease - Y, Y - upper), ends)
    cv.paint(sl, lid, _shade(skin, 0.93), 0.8)
    cv.paint(sl, np.maximum(np.abs(Y - crease) - 0.003, (np.abs(t) - 0.9) * ew), _shade(skin, 0.68), 0.55)

    # Sclera, with the caruncle at the inner corner.
    cv.paint(sl, d_eye, _SCLERA)
    cv.paint(
        sl, np.maximum(_ellipse(X, Y, cx - side * ew * 0.93, cy, ew * 0.14, eh * 0.5), d_eye), _CARUNCLE, 0.8
    )

    # Iris and pupil, clipped by the lids; the gaze slides them inside the eye.
    icx = cx + (gaze - 1) * 0.42 * ew
    icy = cy + 0.06 * eh
    r = 1.18 * idn.eye_h
    iris = np.asarray(idn.eye_color, dtype=np.float32)
    dc = _circle(X, Y, icx, icy, r)
    cv.paint(sl, np.maximum(dc, d_eye), iris)
    cv.paint(sl, np.maximum(np.abs(dc + 0.1 * r) - 0.1 * r, d_eye), iris * 0.5, 0.8)
    cv.paint(sl, np.maximum(dc + 0.57 * r, d_eye), _PUPIL)
    cv.paint(sl, np.maximum(_circle(X, Y, icx - 0.35 * r, icy - 0.4 * r, 0.2 * r), d_eye), _WHITE, 0.85)
    # The upper lid shades the top of the eyeball.
    cv.paint(sl, np.maximum(d_eye, Y - (upper + 0.4 * eh)), _PUPIL, 0.2, feather=0.02)

    # Lash line (heavier toward the outer corner) and the lower lid rim.
    lash_hw = 0.0045 + 0.0035 * _clip01(side * t)
    cv.paint(sl, np.maximum(np.abs(Y - (upper - 0.002)) - lash_hw, (np.abs(t) - 1.06) * ew), _LASH, 0.95)
    cv.paint(sl, np.maximum(np.abs(Y - (lower + 0.002)) - 0.0028, ends), _shade(skin, 0.6), 0.5)

    if a6 > 0:
        # AU6: the lower-lid bulge line and crow's feet at the outer corner.
        bulge = lower + 0.028
        cv.paint(
            sl,
            np.maximum(np.abs(Y - bulge) - max(0.0035, 0.5 * cv.px), (np.abs(t) - 0.75) * ew),
            _shade(skin, 0.55),
            0.8 * a6,
        )
        ox = cx + side * ew * 1.08
        paths = [
            np.array([[ox, cy + dy0], [ox + side * 0.055, cy + dy1]])
            for dy0, dy1 in ((-0.008, -0.03), (0.0, 0.004), (0.01, 0.035))
        ]
        _strokes(cv, paths, 0.0055, _shade(skin, 0.5), 0.95 * a6)


def _brow(cv: _Canvas, g: _Geo, side: float) -> None:
    idn = g.i
    a1, a2, a4 = g.a[1], g.a[2], g.a[4]
    by = idn.eye_y - idn.brow_gap
    xi = g.fx(side * (idn.brow_inner - 0.028 * a4), _DEPTH_BROW)  # AU4 pulls the brows together
    xo = g.fx(side * (idn.eye_spacing + idn.eye_w + 0.025), _DEPTH_BROW)
    yi = by + 0.008 - 0.085 * a1 - 0.012 * a2 + 0.038 * a4
    yo = by + 0.014 - 0.02 * a1 - 0.085 * a2 + 0.02 * a4
    arch = max(idn.brow_arch + 0.015 * a2 - 0.012 * a4, 0.0)
    th = idn.brow_thick
    x0, x1 = min(xi, xo), max(xi, xo)
    win = cv.window(x0 - 0.01, x1 + 0.01, min(yi, yo) - arch - th, max(yi, yo) + th)
    if win is None:
        return
    sl, X, Y = win
    L = xo - xi
    t = (X - xi) * (1.0 / L)
    tc = _clip01(t)
    yc = yi + (yo - yi) * tc - arch * np.sin(np.pi * tc)
    slope = ((yo - yi) - arch * np.pi * np.cos(np.pi * tc)) * (1.0 / L)
    # Thick at the head, tapering to the tail, with a rounded head.
    hh = 0.5 * th * (1.0 - 0.6 * tc) * (0.55 + 0.45 * np.sqrt(_clip01(tc * 12.0)))
    d = np.maximum((np.abs(Y - yc) - hh) / np.sqrt(1.0 + slope * slope), (np.abs(t - 0.5) - 0.5) * abs(L))
    cv.paint(sl, d, np.asarray(idn.brow_color, dtype=np.float32), 0.93, feather=0.006)


def _nose(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    a9 = g.a[9]
    skin = g.skin
    bx = g.fx(0.0, _DEPTH_BRIDGE)
    tx = g.fx(0.0, _DEPTH_TIP)
    ny = idn.nose_y - 0.028 * a9  # AU9 lifts the nostrils
    nw = idn.nose_w * (1.0 + 0.28 * a9)  # ...and flares them
    top = idn.eye_y + 0.02

    # Side walls of the bridge; in a turned face the far side becomes the nose's silhouette line.
    paths_near, paths_far = [], []
    for side in (-1.0, 1.0):
        p = _bezier(
            (bx + side * 0.042, top + 0.03),
            (bx + side * 0.048, ny - 0.12),
            (tx + side * nw * 0.75, ny - 0.06),
            5,
        )
        (paths_far if side * g.s > 0 else paths_near).append(p)
    _strokes(cv, paths_near, 0.012, _shade(skin, 0.8), 0.3, feather=0.03)
    _strokes(cv, paths_far, 0.01, _shade(skin, 0.72), 0.3 + 0.3 * abs(g.s), feather=0.02)

    win = cv.window(tx - nw - 0.06, tx + nw + 0.06, ny - 0.1, ny + 0.04)
    if win is not None:
        sl, X, Y = win
        cv.paint(sl, _circle(X, Y, tx, ny - 0.05, 0.03), _shade(skin, 1.12), 0.45, feather=0.035)
        cv.paint(sl, _ellipse(X, Y, tx, ny + 0.006, nw * 0.95, 0.022), _shade(skin, 0.78), 0.5, feather=0.025)
        ala = _shade(skin, 0.62)
        for side in (-1.0, 1.0):
            ax, ay = tx + side * nw * 0.85, ny - 0.018
            ring = np.abs(_ellipse(X, Y, ax, ay, 0.032, 0.03)) - 0.0045
            cv.paint(sl, np.maximum(ring, -(side * (X - ax)) + 0.004), ala, 0.65)
            # Nostril: a tilted dark ellipse.
            nx0, ny0 = tx + side * nw * 0.45, ny + 0.002
            ca, sa = math.cos(side * 0.35), math.sin(side * 0.35)
            dx, dy = X - nx0, Y - ny0
            xr = dx * ca + dy * sa
            yr = dy * ca - dx * sa
            cv.paint(sl, _ellipse(xr, yr, 0.0, 0.0, 0.021 * (1 + 0.25 * a9), 0.0115), _shade(skin, 0.3), 0.88)

    if a9 > 0:
        # AU9: transverse wrinkles across the bridge and diagonal "bunny lines" beside it.
        line = _shade(skin, 0.5)
        paths = [
            _bezier((bx - 0.042, top + dy), (bx, top + dy + 0.012), (bx + 0.042, top + dy), 4)
            for dy in (0.015, 0.04, 0.065)
        ]
        for side in (-1.0, 1.0):
            paths.append(np.array([[bx + side * 0.05, top + 0.0], [bx + side * 0.085, top + 0.055]]))
        _strokes(cv, paths, 0.0045, line, 0.9 * a9)


def _mouth_shape(g: _Geo):
    """Mouth centre, half-width and the AU-dependent curve parameters."""
    a = g.a
    a9, a12, a15, a17, a20, a25, a26 = a[9], a[12], a[15], a[17], a[20], a[25], a[26]
    mx = g.fx(0.0, _DEPTH_MOUTH)
    mw = g.mouth_w_rest * (1.0 + 0.14 * a12 + 0.32 * a20)  # AU12/AU20 pull the corners outward
    return {
        "mx": mx,
        "my": g.i.mouth_y,
        "mw": mw,
        "cdy": -0.085 * a12 + 0.075 * a15 + 0.012 * a20,  # corner lift (-) / drop (+)
        "lift": 0.035 * a17,  # AU17 pushes the lower lip and mouth centre up
        "up9": 0.022 * a9,
        "g_up": 0.02 * a25 + 0.012 * a26,
        "g_lo": 0.04 * a25 + 0.1 * a26,  # the jaw carries the lower lip down
        "ut": g.i.lip_upper * (1.0 - 0.45 * a20) * (1.0 - 0.15 * a12),
        "lt": g.i.lip_lower * (1.0 - 0.45 * a20) * (1.0 - 0.15 * a12) * (1.0 + 0.3 * a17),
    }


def _mouth(cv: _Canvas, g: _Geo) -> dict:
    idn = g.i
    skin = g.skin
    a12, a15, a20, a9 = g.a[12], g.a[15], g.a[20], g.a[9]
    m = _mouth_shape(g)
    mx, my, mw = m["mx"], m["my"], m["mw"]
    lip = np.asarray(idn.lip_color, dtype=np.float32)
    beard_dim = 0.4 if idn.beard in ("full", "goatee") else 1.0

    # Nasolabial folds: from the nose wings to beside the mouth corners, deeper and more curved in a smile.
    line = _shade(skin, 0.55)
    tx = g.fx(0.0, _DEPTH_TIP)
    paths = []
    for side in (-1.0, 1.0):
        p0 = (tx + side * (idn.nose_w * (1.0 + 0.28 * a9) + 0.04), idn.nose_y - 0.025 * (1 + a9))
        p2 = (mx + side * (mw + 0.05), my + 0.025 + 0.5 * m["cdy"])
        p1 = (0.5 * (p0[0] + p2[0]) + side * (0.012 + 0.03 * a12), 0.5 * (p0[1] + p2[1]))
        paths.append(_bezier(p0, p1, p2, 6))
    _strokes(cv, paths, 0.005, line, min(0.12 + 0.65 * a12 + 0.45 * a9, 0.95) * beard_dim, feather=0.01)

    # Philtrum ridges.
    ny = idn.nose_y
    for side in (-1.0, 1.0):
        _strokes(
            cv,
            [np.array([[mx + side * 0.02, ny + 0.025], [mx + side * 0.026, my - idn.lip_upper]])],
            0.004,
            _shade(skin, 0.85),
            0.35 * beard_dim,
            feather=0.01,
        )

    ymin = my - 0.08 - m["ut"] - m["up9"] - m["g_up"]
    ymax = my + 0.07 + m["g_lo"] + m["lt"]
    win = cv.window(mx - mw - 0.02, mx + mw + 0.02, ymin, ymax)
    if win is None:
        return m
    sl, X, Y = win
    t = (X - mx) * (1.0 / mw)
    tt = _clip01(1.0 - t * t)
    ends = (np.abs(t) - 1.0) * mw
    line_y = my + m["cdy"] * t * t - m["lift"] * tt
    prof = _clip01(1.0 - (t * (1.0 / 0.94)) ** 2) ** 0.7
    o_top = line_y - m["g_up"] * prof
    o_bot = line_y + m["g_lo"] * prof
    bow = 1.0 - 0.35 * np.exp(-(t * t) * (1.0 / 0.015))  # Cupid's bow dip
    ul_top = o_top - m["ut"] * tt**0.55 * bow - m["up9"] * tt
    ll_bot = o_bot + m["lt"] * tt**0.6

    cv.paint(sl, np.maximum(np.maximum(ul_top - Y, Y - o_top), ends), lip * 0.86)
    cv.paint(sl, np.maximum(np.maximum(o_bot - Y, Y - ll_bot), ends), lip)
    # Highlight on the lower lip.
    ll_mid = 0.5 * (o_bot + ll_bot)
    cv.paint(
        sl,
        np.maximum(np.abs(Y - ll_mid) - 0.3 * m["lt"] * tt, (np.abs(t) - 0.5) * mw),
        _shade(lip, 1.2),
        0.3,
        feather=0.015,
    )

    gap = m["g_up"] + m["g_lo"]
    if gap > 0:
        d_open = np.maximum(np.maximum(o_top - Y, Y - o_bot), ends)
        cv.paint(sl, d_open, _MOUTH_INSIDE)
        # Teeth show once the lips are apart enough (AU25 at higher intensity, AU26).
        vis = _unit((gap - 0.012) / 0.025)
        if vis > 0:
            teeth_h = np.minimum(0.034, 0.55 * (o_bot - o_top))
            d_teeth = np.maximum(np.maximum(d_open, Y - (o_top + teeth_h)), (np.abs(t) - 0.78) * mw)
            cv.paint(sl, d_teeth, _TEETH, vis)
            gaps = np.abs(np.abs(t) - 0.22) * mw - 0.002
            cv.paint(sl, np.maximum(d_teeth, gaps), _shade(_TEETH, 0.75), 0.6 * vis)
            low_h = np.minimum(0.018, 0.25 * (o_bot - o_top))
            d_low = np.maximum(np.maximum(d_open, (o_bot - low_h) - Y), (np.abs(t) - 0.6) * mw)
            cv.paint(sl, d_low, _shade(_TEETH, 0.85), vis * _unit((gap - 0.05) / 0.04))
        tongue_vis = _unit((gap - 0.04) / 0.05)
        if tongue_vis > 0:
            tongue = _ellipse(X, Y, mx, my + m["g_lo"] - m["lift"], mw * 0.55, 0.04)
            cv.paint(
                sl,
                np.maximum(np.maximum(tongue, d_open), (o_bot - 0.015 - m["g_lo"] * 0.35) - Y),
                _TONGUE,
                tongue_vis * 0.9,
            )
    # The line where the lips meet (hidden inside the opening once the mouth is open).
    cv.paint(sl, np.maximum(np.abs(Y - line_y) - 0.004, ends + 0.004), _shade(lip, 0.5), 0.9)
    for side in (-1.0, 1.0):
        cyc = my + m["cdy"]
        cv.paint(sl, _circle(X, Y, mx + side * mw, cyc, 0.009), _shade(skin, 0.55), 0.55, feather=0.01)

    # Corner folds: AU15 drags a line down from each corner, AU20 stretches short horizontal creases.
    for side in (-1.0, 1.0):
        cx0, cy0 = mx + side * (mw + 0.008), my + m["cdy"]
        if a15 > 0:
            _strokes(
                cv,
                [
                    _bezier(
                        (cx0, cy0 + 0.012),
                        (cx0 + side * 0.01, cy0 + 0.04),
                        (cx0 + side * 0.005, cy0 + 0.075),
                        4,
                    )
                ],
                0.0045,
                line,
                0.9 * a15,
            )
        if a20 > 0:
            _strokes(
                cv,
                [np.array([[cx0 + side * 0.01, cy0], [cx0 + side * 0.05, cy0 + 0.012]])],
                0.0045,
                line,
                0.85 * a20,
            )
    m["ll_bot_centre"] = my - m["lift"] + m["g_lo"] + m["lt"]
    return m


def _chin(cv: _Canvas, g: _Geo, m: dict) -> None:
    a17 = g.a[17]
    skin = g.skin
    cx = g.fx(0.0, _DEPTH_CHIN)
    llb = m["ll_bot_centre"]
    chin_y = g.chin_y
    # Mentolabial sulcus (the crease under the lower lip), deepened by AU17's chin push.
    sy = llb + 0.04 - 0.012 * a17
    path = _bezier((cx - 0.08, sy - 0.014), (cx, sy + 0.012), (cx + 0.08, sy - 0.014), 5)
    _strokes(cv, [path], 0.007, _shade(skin, 0.72), 0.22 + 0.6 * a17, feather=0.012)
    boss_y = 0.5 * (sy + chin_y) + 0.01 - 0.02 * a17
    win = cv.window(cx - 0.14, cx + 0.14, boss_y - 0.08, boss_y + 0.08)
    if win is None:
        return
    sl, X, Y = win
    cv.paint(sl, _ellipse(X, Y, cx, boss_y, 0.08, 0.045), _shade(skin, 1.12), 0.2 + 0.5 * a17, feather=0.04)
    if a17 > 0:
        # The "orange peel" dimpling of the chin boss.
        d = None
        for dx, dy in (
            (-0.035, -0.004),
            (0.03, -0.008),
            (-0.01, 0.016),
            (0.018, 0.02),
            (0.05, 0.012),
            (-0.055, 0.016),
        ):
            dk = _circle(X, Y, cx + dx, boss_y + dy, 0.007)
            d = dk if d is None else np.minimum(d, dk)
        cv.paint(sl, d, _shade(skin, 0.72), 0.6 * a17, feather=0.012)
        # Shadow under the bulging boss.
        cv.paint(
            sl, _ellipse(X, Y, cx, boss_y + 0.05, 0.07, 0.018), _shade(skin, 0.7), 0.5 * a17, feather=0.03
        )


def _hair_front(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    style = idn.hair_style
    W = idn.face_w
    hair = np.asarray(idn.hair_color, dtype=np.float32)
    top = _FACE_CY - idn.face_top
    if style == "bald":
        # Horseshoe of short hair on the sides and a shine on the scalp.
        win = cv.window(-W - 0.05, W + 0.05, top - 0.02, 0.15)
        if win is None:
            return
        sl, X, Y = win
        U = g.unwarp(X)
        # The fringe of hair recedes upward-outward, so its inner edge moves out toward the crown.
        inner = W * 0.8 + 0.12 * _clip01((-0.12 - Y) * 5.0)
        d = np.maximum(
            np.maximum(g.head_d(X, Y, 0.015, 0.0, g.h_low_rest), inner - np.abs(U)),
            np.maximum(-0.32 - Y, Y - (idn.eye_y + 0.08)),
        )
        cv.paint(sl, d, _mix(hair, idn.skin, 0.35).astype(np.float32), 0.75, feather=0.025)
        cv.paint(
            sl,
            _ellipse(X, Y, g.s * 0.05 - 0.1, top + 0.16, 0.16, 0.07),
            _shade(idn.skin, 1.18),
            0.4,
            feather=0.08,
        )
        return
    bottom = 0.15 if style != "long" else idn.hair_length
    win = cv.window(-W - 0.15, W + 0.15, top - 0.1, bottom + 0.06)
    if win is None:
        return
    sl, X, Y = win
    U = g.unwarp(X)
    ur = np.abs(U) * (1.0 / W)
    if style == "buzz":
        d = np.maximum(g.head_d(X, Y, 0.008, 0.01, g.h_low_rest), Y - (idn.hairline + 0.03 + 0.5 * ur**4))
        cv.paint(sl, d, _mix(hair, idn.skin, 0.3).astype(np.float32), 0.8, feather=0.012)
        return
    cap = g.head_d(X, Y, 0.05, 0.075, g.h_low_rest)
    if style != "long":
        cap = np.maximum(cap, Y - (idn.eye_y + 0.05))
    part = idn.hair_part
    if style == "fringe":
        # Bangs end well above the highest a raised brow can reach.
        edge = -0.33 + 0.018 * np.abs(np.sin(U * 17.0)) + 0.55 * ur**6
        d = np.maximum(cap, Y - edge)
    elif style == "short":
        edge = idn.hairline + 0.55 * ur**4 - 0.035 * np.exp(-((U - part) ** 2) * (1.0 / 0.01))
        d = np.maximum(cap, Y - edge)
    else:  # long: parted, framing the face with side curtains
        edge = idn.hairline + 0.04 + 0.25 * ur**2 - 0.035 * np.exp(-((U - part) ** 2) * (1.0 / 0.006))
        d = np.maximum(cap, Y - edge)
        inner = max(0.84 * W, idn.eye_spacing + idn.eye_w + 0.1)
        # The curtains' inner edge sweeps outward near the top so they blend into the hairline.
        inner_y = inner + 0.12 * (1.0 - _smoothstep(idn.hairline, _FACE_CY, Y))
        curtain = np.maximum(_long_hair_d(g, X, Y), np.maximum(inner_y - np.abs(U), idn.hairline - 0.1 - Y))
        d = np.minimum(d, curtain)
    color = _hair_texture(X, Y, hair)
    cv.paint(sl, d, color, feather=0.008)
    # Sheen band across the crown.
    cv.paint(
        sl, np.maximum(d, np.abs(Y - (top + 0.12)) - 0.03), _shade(hair, 1.35) + 12.0, 0.35, feather=0.05
    )


def _glasses(cv: _Canvas, g: _Geo) -> None:
    idn = g.i
    if not idn.glasses:
        return
    frame = np.asarray(idn.glasses_color, dtype=np.float32)
    cy = idn.eye_y + 0.014
    bh = 0.06
    edges = []
    for side in (-1.0, 1.0):
        kx = g.k(side)
        cx = g.fx(side * idn.eye_spacing, _DEPTH_EYE + 0.01)
        bw = (idn.eye_w + 0.045) * kx
        edges.append((cx - bw, cx + bw))
        win = cv.window(cx - bw - 0.02, cx + bw + 0.02, cy - bh - 0.02, cy + bh + 0.02)
        if win is None:
            continue
        sl, X, Y = win
        if idn.glasses_round:
            d = _ellipse(X, Y, cx, cy, bw, bh)
        else:
            r = 0.035
            qx = np.abs(X - cx) - (bw - r)
            qy = np.abs(Y - cy) - (bh - r)
            mx, my = np.maximum(qx, 0.0), np.maximum(qy, 0.0)
            d = np.sqrt(mx * mx + my * my) + np.minimum(np.maximum(qx, qy), 0.0) - r
        cv.paint(sl, d, np.array((225.0, 235.0, 245.0), dtype=np.float32), 0.12)
        cv.paint(sl, np.abs(d) - 0.008, frame, 0.95)
    (l0, l1), (r0, r1) = edges
    by = cy - 0.02
    paths = [
        _bezier((l1, by), (0.5 * (l1 + r0), by - 0.02), (r0, by), 4),
        np.array([[l0, by], [-idn.face_w * g.k_neg - 0.01, by + 0.02]]),
        np.array([[r1, by], [idn.face_w * g.k_pos + 0.01, by + 0.02]]),
    ]
    _strokes(cv, paths, 0.007, frame, 0.95)


def _background(size: int, nz: Nuisance) -> np.ndarray:
    c = _coords(size)
    top = np.asarray(nz.bg_top, dtype=np.float32)
    bottom = np.asarray(nz.bg_bottom, dtype=np.float32)
    t = ((c + 1.0) * 0.5)[:, None, None]
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = top + (bottom - top) * t
    return img


def _finish(img: np.ndarray, nz: Nuisance, size: int) -> np.ndarray:
    c = _coords(size)
    if nz.light_strength > 0:
        ramp = 1.0 + nz.light_strength * (
            math.cos(nz.light_angle) * c[None, :] + math.sin(nz.light_angle) * c[:, None]
        )
        img *= ramp[..., None]
    if nz.noise_sigma > 0:
        noise = np.random.default_rng(nz.noise_seed).standard_normal((size, size, 3), dtype=np.float32)
        img += noise * np.float32(nz.noise_sigma)
    np.clip(img, 0.0, 255.0, out=img)
    img += 0.5
    return img.astype(np.uint8)


# ------------------------------------------------------------------------------------------------------
# Public rendering API


def render_face(
    identity: Identity,
    pose: int,
    aus: np.ndarray | Mapping[int, float],
    gaze: int,
    nuisance: Nuisance,
    size: int,
) -> np.ndarray:
    """Render one face.

    Args:
        identity: the person (from :func:`make_identity`).
        pose: yaw class 0 (turned left), 1 (frontal), 2 (turned right).
        aus: 12 intensities in DISFA_AUS order, or ``{au_number: intensity}`` (missing AUs are 0);
            intensities in [0, MAX_INTENSITY].
        gaze: 0 (looking left), 1 (straight), 2 (right).
        nuisance: background, lighting and noise (from :func:`sample_nuisance`).
        size: output side, one of SUPPORTED_SIZES.

    Returns:
        uint8 RGB image [size, size, 3]; identical arguments always give identical pixels.
    """
    size = check_image_size(size, "size")
    pose = _check_class(pose, "pose", POSES)
    gaze = _check_class(gaze, "gaze", GAZES)
    au = _au_vector(aus) / MAX_INTENSITY
    g = _Geo(identity, pose, au)
    cv = _Canvas(_background(size, nuisance), size)
    _hair_back(cv, g)
    _ears(cv, g)
    _neck(cv, g)
    _face(cv, g)
    _cheeks(cv, g)
    _beard(cv, g)
    _forehead(cv, g)
    for side in (-1.0, 1.0):
        _eye(cv, g, side, gaze)
    for side in (-1.0, 1.0):
        _brow(cv, g, side)
    _nose(cv, g)
    m = _mouth(cv, g)
    _chin(cv, g, m)
    _hair_front(cv, g)
    _glasses(cv, g)
    return _finish(cv.img, nuisance, size)


def au_contact_sheet(
    identity: Identity,
    size: int,
    steps: int = 6,
    pose: int = 1,
    gaze: int = 1,
    nuisance: Nuisance | None = None,
) -> np.ndarray:
    """One row per AU of DISFA_AUS (labelled in a left margin), sweeping it linearly 0 -> 5 across
    ``steps`` columns with every other AU at 0.

    Returns:
        uint8 image [12 * size, size // 2 + steps * size, 3]; the margin of ``size // 2`` holds the labels.
    """
    size = check_image_size(size, "size")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    nuisance = _PLAIN_NUISANCE if nuisance is None else nuisance
    margin = size // 2
    sheet = np.full((len(DISFA_AUS) * size, margin + steps * size, 3), 255, dtype=np.uint8)
    levels = np.linspace(0.0, MAX_INTENSITY, steps)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for r, au in enumerate(DISFA_AUS):
        for c, v in enumerate(levels):
            vec = np.zeros(len(DISFA_AUS), dtype=np.float32)
            vec[r] = v
            sheet[r * size : (r + 1) * size, margin + c * size : margin + (c + 1) * size] = render_face(
                identity, pose, vec, gaze, nuisance, size
            )
        label = f"AU{au}"
        scale = 1.0
        (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
        scale = min(scale, (margin - 4) / tw)
        (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
        org = ((margin - tw) // 2, r * size + (size + th) // 2)
        cv2.putText(sheet, label, org, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet
