"""Reading and writing image files with errors that name the file.

Grayscale, palette, 16-bit and RGBA images are converted to 8-bit RGB (alpha dropped), never rejected;
an unreadable or truncated file raises `ImageReadError` naming it. Writes are atomic.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES: frozenset[str] = frozenset({".avi", ".mp4", ".mov", ".mkv", ".wmv", ".mpg", ".mpeg"})


# The most pixels an image may have: PIL's own decompression-bomb limit (89.5 M pixels, e.g. 9,459 x 9,459).
# A file declaring more is refused from its header before anything is decoded: a few kilobytes of PNG can
# declare gigabytes of pixels. Photos from 61-megapixel cameras pass.
MAX_IMAGE_PIXELS: int = Image.MAX_IMAGE_PIXELS or 89_478_485


class ImageReadError(ValueError):
    """An image file that cannot be decoded (missing, not an image, truncated, too many pixels)."""


def _read_error(path: Path, err: BaseException) -> ImageReadError:
    """What went wrong opening or decoding ``path``, as one `ImageReadError` naming it."""
    if isinstance(err, ImageReadError):
        return err
    if isinstance(err, FileNotFoundError):
        return ImageReadError(f"{path}: image file not found")
    if isinstance(err, IsADirectoryError):
        return ImageReadError(f"{path}: is a folder, not an image file")
    if isinstance(err, UnidentifiedImageError):
        return ImageReadError(f"{path}: not a readable image")
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageReadError(
            f"{path}: more pixels than the {MAX_IMAGE_PIXELS:,} an image may have (a decompression bomb, or a "
            "photo to downscale first)"
        )
    return ImageReadError(f"{path}: cannot decode the image ({err})")  # PIL: truncated or corrupt data


_READ_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def _open_checked(path: Path) -> Image.Image:
    """The image at ``path`` opened lazily (header only) and refused when it declares more than
    `MAX_IMAGE_PIXELS`: a few kilobytes of PNG can declare gigabytes of pixels. Raises `ImageReadError`."""
    try:
        with warnings.catch_warnings():
            # PIL warns between its limit and twice it and raises above; both are refused here
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except _READ_ERRORS as err:
        raise _read_error(path, err) from err
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageReadError(
            f"{path}: {w} x {h} pixels is more than the {MAX_IMAGE_PIXELS:,} an image may have "
            "(a decompression bomb, or a photo to downscale first)"
        )
    return im


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header of the image at ``path``, refusing what `read_rgb` refuses before
    decoding (raises `ImageReadError` naming the file); truncated pixel data is only found by decoding."""
    with _open_checked(Path(path)) as im:
        return im.size


def read_rgb(path: str | Path) -> np.ndarray:
    """The image at ``path`` as uint8 RGB [H, W, 3]; raises `ImageReadError` naming the file."""
    path = Path(path)
    with _open_checked(path) as im:
        try:
            im.load()  # decodes everything now, so a truncated file fails here and not later
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                return np.repeat((arr / peak * 255.0).round().astype(np.uint8)[:, :, None], 3, axis=2)
            if im.mode != "RGB":
                im = (
                    im.convert("RGBA").convert("RGB")
                    if "A" in im.mode or im.mode == "P"
                    else im.convert("RGB")
                )
            return np.asarray(im, dtype=np.uint8).copy()
        except _READ_ERRORS as err:
            raise _read_error(path, err) from err


def write_image_atomic(path: Path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write uint8 RGB ``image`` to ``path`` (format from the suffix) through a temporary file in the
    same folder, so that ``path`` is either absent or complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if suffix in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(image[:, :, ::-1]), params)
    if not ok:
        raise OSError(f"{path}: could not encode the image")
    write_bytes_atomic(path, buf.tobytes())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        usual_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def usual_permissions(path: str | Path) -> None:
    """Atomic writes go through private temporary files (mode 0600); give outputs the mode a plain
    ``open()`` would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_training_image(path: str | Path) -> np.ndarray:
    """Fast read of a prepared crop (always 8-bit RGB JPEG/PNG written by eet-prepare): uint8 [H, W, 3]."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{path}: cannot read the prepared image (missing or corrupt)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
