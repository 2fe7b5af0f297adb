"""Face detection + alignment: the similarity fit against known answers, MTCNN on a real photograph,
and the inverse warp back into the photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eet_lightning.data.faces import (
    FACE_TEMPLATE,
    FaceAligner,
    align_to_template,
    apply_transform,
    as_rgb,
    similarity_transform,
    template_landmarks,
    warp_back,
)

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # MTCNN's small convolutions run faster on one thread than on a busy pool
    yield FaceAligner(size=256)
    torch.set_num_threads(threads)


def test_similarity_transform_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)
    np.testing.assert_allclose(apply_transform(m, src), dst, atol=1e-9)


def test_similarity_transform_never_reflects() -> None:
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), src[:1].repeat(5, 0))


def test_template_is_upright_and_symmetric() -> None:
    t = template_landmarks(256)
    assert t[0, 0] < t[2, 0] < t[1, 0] and t[0, 1] < t[2, 1] < t[3, 1]
    assert abs((FACE_TEMPLATE[0, 0] + FACE_TEMPLATE[1, 0]) / 2 - 0.5) < 0.005
    assert 0.2 < FACE_TEMPLATE[1, 0] - FACE_TEMPLATE[0, 0] < 0.3  # room for the whole head


def test_mtcnn_aligns_a_real_photograph(aligner: FaceAligner) -> None:
    photo = skimage_data.astronaut()  # 512 x 512 RGB, one face
    face = aligner.align(photo)
    assert face is not None and face.score > 0.99
    assert face.crop.shape == (256, 256, 3) and face.crop.dtype == np.uint8
    eyes = np.linalg.norm(face.crop_landmarks[:2] - template_landmarks(256)[:2], axis=1)
    assert eyes.max() < 6.0, eyes  # the eyes land within a few pixels of the template
    # independent check: MTCNN run again on the crop finds the eyes at the template positions
    again = aligner.detect(face.crop)
    assert again, "no face found in the aligned crop"
    eyes_again = np.linalg.norm(again[0].landmarks[:2] - template_landmarks(256)[:2], axis=1)
    assert eyes_again.max() < 6.0, eyes_again
    # the photo's face is much larger than in the crop's template: the box is in photo coordinates
    assert face.box[0] < face.landmarks[0, 0] < face.landmarks[1, 0] < face.box[2]


def test_warp_back_returns_the_crop_to_the_photo(aligner: FaceAligner) -> None:
    photo = skimage_data.astronaut()
    face = aligner.align(photo)
    back, mask = warp_back(face.crop, face.matrix, photo.shape)
    assert back.shape == photo.shape and mask.shape == photo.shape[:2]
    inside = mask > 0.999
    assert inside.sum() > 0.05 * inside.size
    err = np.abs(back[inside].astype(int) - photo[inside].astype(int)).mean()
    assert err < 4.0, err  # two bilinear resamplings, nothing else
    assert mask[0, -1] == 0 and mask[-1, -1] == 0  # far from the face: untouched
    np.testing.assert_allclose(apply_transform(face.inverse, face.crop_landmarks), face.landmarks, atol=1e-6)


def test_no_face_gives_none_and_gray_rgba_are_converted(aligner: FaceAligner) -> None:
    assert aligner.align(np.full((200, 240, 3), 128, np.uint8)) is None
    photo = skimage_data.astronaut()
    gray = photo.mean(2).astype(np.uint8)
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert as_rgb(gray).shape == (512, 512, 3)
    assert aligner.align(gray) is not None and aligner.align(rgba) is not None
    with pytest.raises(ValueError, match="uint8"):
        as_rgb(photo.astype(np.float32))


def test_align_to_given_landmarks_puts_them_on_the_template() -> None:
    photo = skimage_data.astronaut()
    marks = template_landmarks(128) * 1.5 + np.array([30.0, 40.0])
    face = align_to_template(photo, marks, 128)
    np.testing.assert_allclose(face.crop_landmarks, template_landmarks(128), atol=1e-6)
    assert face.template_error() < 1e-6
