"""Face detection and alignment: MTCNN's five landmarks mapped onto a fixed template by a similarity
transform, and the inverse warp that puts an aligned crop back into the photo it came from.

    aligner = FaceAligner(size=256)
    face = aligner.align(photo)               # FaceAlignment, or None when no face is found
    face.crop                                 # uint8 [256, 256, 3] RGB, eyes on the template
    face.matrix                               # [2, 3] photo -> crop (cv2.warpAffine convention)
    back, mask = warp_back(edited_crop, face.matrix, photo.shape)   # crop -> photo frame

Images are uint8 RGB arrays [H, W, 3] throughout. Landmarks are (x, y) pixel coordinates in the order
MTCNN gives them: the eye on the image's left, the eye on the image's right, the nose tip, the mouth
corner on the image's left, the mouth corner on the image's right. The MTCNN weights ship inside the
facenet-pytorch package; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# The ArcFace 112 x 112 five-point template (insightface), the usual reference for face crops.
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
# Template positions of the five landmarks in unit crop coordinates (x right, y down, [0, 1]): ArcFace's
# shrunk by 0.8 about (0.5, 0.64) and moved up to (0.5, 0.58), so the crop keeps the forehead, the chin,
# some hair and background (eye distance 0.25 of the crop): the generator redraws the whole face.
FACE_TEMPLATE: np.ndarray = (_ARCFACE_112 / 112.0 - np.array([0.5, 0.64])) * 0.8 + np.array([0.5, 0.58])
FACE_TEMPLATE.setflags(write=False)


def template_landmarks(size: int) -> np.ndarray:
    """The template's five landmarks in pixel coordinates of a ``size`` x ``size`` crop: float64 [5, 2].

    Pixel centres sit at integer coordinates (cv2's convention), so unit coordinate u maps to u * size - 0.5.
    """
    return FACE_TEMPLATE * float(size) - 0.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation, no reflection) taking ``src`` points
    onto ``dst`` points (Umeyama 1991). Both float [K, 2] with K >= 2; returns float64 [2, 3]."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two equal [K, 2] point sets with K >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("the source landmarks coincide; no similarity transform is defined")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a rotation, never a reflection
        sign[1, 1] = -1.0
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(sig) @ sign) / var_s)
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = scale * rot
    out[:, 2] = mu_d - scale * rot @ mu_s
    return out


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (x, y) points [K, 2] through an affine [2, 3] matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix)[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """The inverse of an affine [2, 3] matrix (crop -> photo for an alignment's ``matrix``)."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


@dataclass(frozen=True)
class FaceAlignment:
    """One aligned face and everything needed to map between the photo and the crop."""

    crop: np.ndarray  # uint8 [size, size, 3] RGB: the aligned face
    matrix: np.ndarray  # float64 [2, 3]: photo pixel (x, y) -> crop pixel (cv2.warpAffine convention)
    landmarks: np.ndarray  # float64 [5, 2]: the five landmarks in photo coordinates
    box: np.ndarray  # float64 [4]: detector box x1, y1, x2, y2 in photo coordinates (landmark hull if none)
    score: float  # detector probability (1.0 when the landmarks were given)

    @property
    def size(self) -> int:
        return int(self.crop.shape[0])

    @property
    def inverse(self) -> np.ndarray:
        """float64 [2, 3]: crop pixel -> photo pixel."""
        return invert_transform(self.matrix)

    @property
    def crop_landmarks(self) -> np.ndarray:
        """The five landmarks in crop coordinates (close to ``template_landmarks(size)``)."""
        return apply_transform(self.matrix, self.landmarks)

    def template_error(self) -> float:
        """Mean distance in crop pixels between the mapped landmarks and the template."""
        return float(np.linalg.norm(self.crop_landmarks - template_landmarks(self.size), axis=1).mean())


def align_to_template(
    image: np.ndarray,
    landmarks: np.ndarray,
    size: int,
    box: np.ndarray | None = None,
    score: float = 1.0,
) -> FaceAlignment:
    """Warp ``image`` so that its five ``landmarks`` land on the template of a ``size`` x ``size`` crop."""
    image = as_rgb(image)
    landmarks = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = similarity_transform(landmarks, template_landmarks(size))
    crop = cv2.warpAffine(
        image, matrix, (int(size), int(size)), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if box is None:
        box = np.concatenate([landmarks.min(0), landmarks.max(0)])
    return FaceAlignment(
        crop=crop,
        matrix=matrix,
        landmarks=landmarks,
        box=np.asarray(box, dtype=np.float64).reshape(4),
        score=float(score),
    )


def warp_back(
    crop: np.ndarray, matrix: np.ndarray, image_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Put a (possibly edited) aligned crop back into the photo frame it was cut from.

    Args:
        crop: [S, S, C] array, the aligned crop or a same-sized edit of it (any dtype cv2 warps).
        matrix: the alignment's photo -> crop matrix [2, 3] (``FaceAlignment.matrix``).
        image_shape: shape of the photo; only height and width are used.

    Returns:
        (warped, mask): ``warped`` has the photo's height and width and the crop's channels and dtype;
        ``mask`` is float32 [H, W] in [0, 1], the coverage of the crop in the photo (1 inside, 0 outside,
        fractional on the border), ready for blending ``photo * (1 - mask) + warped * mask``.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    inverse = invert_transform(matrix)
    warped = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    ones = np.ones(crop.shape[:2], dtype=np.float32)
    mask = cv2.warpAffine(ones, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return warped, np.clip(mask, 0.0, 1.0)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] RGB from a grayscale [H, W] / [H, W, 1], RGB or RGBA (alpha dropped) uint8 array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"images must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got {image.shape}")
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


@dataclass(frozen=True)
class Detection:
    """One face found by MTCNN, in photo coordinates."""

    box: np.ndarray  # float64 [4] x1, y1, x2, y2
    landmarks: np.ndarray  # float64 [5, 2]
    score: float


class FaceAligner:
    """MTCNN (facenet-pytorch, bundled weights) + similarity alignment to ``FACE_TEMPLATE``.

    When a photo holds several faces, the largest one above ``min_score`` is aligned.
    """

    def __init__(
        self,
        size: int = 256,  # side of the square aligned crop
        device: str = "cpu",  # torch device for MTCNN
        min_face_size: int = 20,  # smallest face MTCNN looks for, in pixels of the detection image
        min_score: float = 0.9,  # detections below this probability are ignored
        max_detect_side: int = 1024,  # larger photos are shrunk for detection only (the crop is full-res)
    ) -> None:
        if int(size) < 16:
            raise ValueError(f"the crop size must be at least 16 pixels, got {size}")
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {min_score}")
        from facenet_pytorch import MTCNN  # heavy import, only when detection is wanted

        self.size = int(size)
        self.min_score = float(min_score)
        self.max_detect_side = int(max_detect_side)
        self.mtcnn = MTCNN(
            image_size=self.size, min_face_size=int(min_face_size), keep_all=True, device=device
        )

    def _scale(self, shape: tuple[int, ...]) -> float:
        return min(1.0, self.max_detect_side / float(max(shape[0], shape[1])))

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """All faces of each image, largest first. Same-sized images are detected in one MTCNN batch."""
        rgb = [as_rgb(im) for im in images]
        out: list[list[Detection]] = [[] for _ in rgb]
        groups: dict[tuple[int, int], list[int]] = {}
        for k, im in enumerate(rgb):
            groups.setdefault(im.shape[:2], []).append(k)
        for shape, idx in groups.items():
            scale = self._scale(shape)
            batch = [rgb[k] for k in idx]
            if scale < 1.0:
                dsize = (max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale)))
                batch = [cv2.resize(im, dsize, interpolation=cv2.INTER_AREA) for im in batch]
            boxes, probs, points = self.mtcnn.detect(np.stack(batch), landmarks=True)
            for k, b, p, pts in zip(idx, boxes, probs, points, strict=True):
                out[k] = self._detections(b, p, pts, scale)
        return out

    def _detections(self, boxes, probs, points, scale: float) -> list[Detection]:
        if boxes is None or points is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2) / scale
        keep = [k for k in range(len(probs)) if probs[k] >= self.min_score]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep.sort(key=lambda k: -area[k])
        return [Detection(box=boxes[k], landmarks=points[k], score=float(probs[k])) for k in keep]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in one image, largest first (empty when there is none)."""
        return self.detect_batch([image])[0]

    def align_batch(self, images: list[np.ndarray]) -> list[FaceAlignment | None]:
        """The largest face of each image aligned to the template, or None where no face was found."""
        out: list[FaceAlignment | None] = []
        for image, found in zip(images, self.detect_batch(images), strict=True):
            if not found:
                out.append(None)
                continue
            best = found[0]
            out.append(align_to_template(image, best.landmarks, self.size, best.box, best.score))
        return out

    def align(self, image: np.ndarray) -> FaceAlignment | None:
        """The largest face of ``image`` aligned to the template, or None when no face is found."""
        return self.align_batch([image])[0]
