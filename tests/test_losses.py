"""Known-answer tests for eet_lightning.losses (EET eqs. 1-10)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from eet_lightning.losses import (
    attribute_loss,
    au_confusion_loss,
    au_discrimination_loss,
    au_intensity_loss,
    au_occurrence_weights,
    confusion_loss,
    discretize_intensities,
    identity_confusion_loss,
    identity_discrimination_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    multiclass_discrimination_loss,
    reconstruction_loss,
)


def scalar(value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype)


# --------------------------------------------------------------------------------------------------
# eq. 1 discretize_intensities
# --------------------------------------------------------------------------------------------------


def test_discretize_rounds_halves_up_and_clamps() -> None:
    aus = torch.tensor([[0.5, 2.5, 4.49, 5.7], [-0.3, 1.49, 0.0, 3.5]])
    # floor(x + 0.5): 0.5->1, 2.5->3 (not banker's 2), 4.49->4, 5.7->6->clamp 5,
    #                 -0.3->0, 1.49->1, 0.0->0, 3.5->4 (not banker's 4 either way)
    expected = torch.tensor([[1, 3, 4, 5], [0, 1, 0, 4]], dtype=torch.int64)
    out = discretize_intensities(aus, max_intensity=5)
    assert out.dtype == torch.int64
    assert_close(out, expected)


def test_discretize_small_max_intensity_clamps_to_l() -> None:
    # l = 1: 0.49->0, 0.5->1, 1.2->1, 2.0->clamp 1
    out = discretize_intensities(torch.tensor([0.49, 0.5, 1.2, 2.0]), max_intensity=1)
    assert_close(out, torch.tensor([0, 1, 1, 1]))


def test_discretize_nan_raises() -> None:
    with pytest.raises(ValueError, match="aus"):
        discretize_intensities(torch.tensor([1.0, float("nan")]))


# --------------------------------------------------------------------------------------------------
# eqs. 2 / 4 multiclass_discrimination_loss
# --------------------------------------------------------------------------------------------------


def test_multiclass_discrimination_known_answer() -> None:
    # B=1, K=2, C=2, scores [[0.5, 0.5], [1, 0]], targets [[0], [1]] -> onehot [[1, 0], [0, 1]]
    # squared errors: 0.25 + 0.25 + 1 + 1 = 2.5 ; / (K*C = 4) = 0.625
    scores = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])
    targets = torch.tensor([[0, 1]])
    assert_close(multiclass_discrimination_loss(scores, targets), scalar(0.625))


def test_multiclass_discrimination_batch_mean() -> None:
    # sample 0 as above -> 0.625 ; sample 1 perfect ([1,0] with t=0, [0,1] with t=1) -> 0
    # batch mean = 0.3125
    scores = torch.tensor([[[0.5, 0.5], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])
    targets = torch.tensor([[0, 1], [0, 1]])
    assert_close(multiclass_discrimination_loss(scores, targets), scalar(0.3125))


def test_multiclass_discrimination_perfect_is_zero() -> None:
    targets = torch.tensor([[0, 3, 5], [2, 2, 1]])
    scores = F.one_hot(targets, 6).float()
    assert_close(multiclass_discrimination_loss(scores, targets), scalar(0.0))


def test_multiclass_discrimination_gradcheck() -> None:
    scores = torch.tensor(
        [[[0.3, -0.2, 0.9], [0.1, 0.4, 0.2]], [[0.7, 0.05, -0.3], [1.2, 0.0, 0.6]]],
        dtype=torch.float64,
        requires_grad=True,
    )
    targets = torch.tensor([[2, 0], [1, 1]])
    assert torch.autograd.gradcheck(lambda s: multiclass_discrimination_loss(s, targets), (scores,))


# --------------------------------------------------------------------------------------------------
# eq. 2 au_discrimination_loss
# --------------------------------------------------------------------------------------------------


def test_au_discrimination_known_answer_l1() -> None:
    # B=1, m=2, l=1: flat du_scores [0.5, 0.5, 1, 0] -> [[0.5, 0.5], [1, 0]]
    # aus [0.4, 0.6] -> eq.1 -> [0, 1]; same as the multiclass example: 2.5 / 4 = 0.625
    du = torch.tensor([[0.5, 0.5, 1.0, 0.0]])
    aus = torch.tensor([[0.4, 0.6]])
    assert_close(au_discrimination_loss(du, aus, max_intensity=1), scalar(0.625))


def test_au_discrimination_known_answer_l2() -> None:
    # B=1, m=1, l=2: scores [0.2, 0.3, 0.5], aus 1.5 -> level 2 -> onehot [0, 0, 1]
    # 0.04 + 0.09 + 0.25 = 0.38 ; / 3 = 0.12666...
    du = torch.tensor([[0.2, 0.3, 0.5]])
    aus = torch.tensor([[1.5]])
    assert_close(au_discrimination_loss(du, aus, max_intensity=2), scalar(0.38 / 3))


def test_au_discrimination_perfect_is_zero() -> None:
    # m=2, l=5: aus [2.5, 0.2] -> levels [3, 0]
    aus = torch.tensor([[2.5, 0.2]])
    du = torch.zeros(1, 12)
    du[0, 3] = 1.0  # AU 0, level 3
    du[0, 6 + 0] = 1.0  # AU 1, level 0
    assert_close(au_discrimination_loss(du, aus), scalar(0.0))


# --------------------------------------------------------------------------------------------------
# eq. 4 identity_discrimination_loss
# --------------------------------------------------------------------------------------------------


def test_identity_discrimination_known_answer() -> None:
    # B=2, n=3: sample 0 scores [0.9, 0.1, 0], d=0: 0.01 + 0.01 + 0    = 0.02 -> /3
    #           sample 1 scores [0.2, 0.2, 0.6], d=2: 0.04 + 0.04 + 0.16 = 0.24 -> /3
    # mean over batch: (0.02 + 0.24) / 6 = 0.043333...
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.2, 0.6]])
    identity = torch.tensor([0, 2])
    assert_close(identity_discrimination_loss(scores, identity), scalar(0.26 / 6))


def test_identity_discrimination_perfect_is_zero() -> None:
    identity = torch.tensor([4, 0, 1])
    assert_close(identity_discrimination_loss(F.one_hot(identity, 5).float(), identity), scalar(0.0))


# --------------------------------------------------------------------------------------------------
# eq. 3 confusion losses
# --------------------------------------------------------------------------------------------------


def test_confusion_loss_known_answer_2d() -> None:
    # B=1, C=4, scores [1, 0, 0, 0], target 1/4: 0.75^2 + 3 * 0.25^2 = 0.5625 + 0.1875 = 0.75 ; /4 = 0.1875
    assert_close(confusion_loss(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), 4), scalar(0.1875))


def test_confusion_loss_known_answer_3d() -> None:
    # B=1, K=2, C=2, scores [[1, 0], [0.5, 0.5]], target 1/2: 0.25 + 0.25 + 0 + 0 = 0.5 ; /4 = 0.125
    assert_close(confusion_loss(torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]), 2), scalar(0.125))


def test_confusion_loss_uniform_is_zero() -> None:
    assert_close(confusion_loss(torch.full((3, 4, 6), 1.0 / 6), 6), scalar(0.0))
    assert_close(confusion_loss(torch.full((2, 5), 0.2), 5), scalar(0.0))


def test_au_confusion_known_answer() -> None:
    # m=2, l=1: flat [1, 0, 0.5, 0.5] -> [[1, 0], [0.5, 0.5]] -> 0.125 (as above)
    assert_close(
        au_confusion_loss(torch.tensor([[1.0, 0.0, 0.5, 0.5]]), num_aus=2, max_intensity=1), scalar(0.125)
    )


def test_au_confusion_uniform_is_zero() -> None:
    # m=3, l=5: every entry 1/6
    assert_close(au_confusion_loss(torch.full((2, 18), 1.0 / 6), num_aus=3), scalar(0.0))


def test_identity_confusion_known_answer() -> None:
    # n=4: sample 0 [1, 0, 0, 0] -> 0.1875 (as above); sample 1 uniform 0.25 -> 0 ; mean = 0.09375
    scores = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert_close(identity_confusion_loss(scores), scalar(0.09375))


def test_confusion_gradcheck() -> None:
    scores = torch.tensor([[[0.3, -0.2, 0.9]], [[0.1, 0.4, 0.2]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: confusion_loss(s, 3), (scores,))


# --------------------------------------------------------------------------------------------------
# eq. 5 au_occurrence_weights and au_intensity_loss
# --------------------------------------------------------------------------------------------------


def test_au_occurrence_weights_known_answer() -> None:
    # l=5 -> occurrence iff intensity > 2 (strictly)
    aus = torch.tensor(
        [
            [3.0, 0.0, 2.5],
            [0.0, 1.0, 5.0],
            [2.0, 4.0, 0.0],
            [5.0, 0.0, 2.01],
        ]
    )
    # col 0: 3, 5 occur (2 does not)   -> o = 2/4 = 0.5  -> 1/o = 2
    # col 1: 4 occurs                  -> o = 1/4        -> 1/o = 4
    # col 2: 2.5, 5, 2.01 occur        -> o = 3/4        -> 1/o = 4/3
    # sum = 22/3 ; w = [2, 4, 4/3] * 3/22 = [3/11, 6/11, 2/11]
    w = au_occurrence_weights(aus)
    assert w.dtype == torch.float32
    assert w.shape == (3,)
    assert_close(w, torch.tensor([3 / 11, 6 / 11, 2 / 11]))
    assert_close(w.sum(), scalar(1.0))


def test_au_occurrence_weights_threshold_depends_on_l() -> None:
    # l=1 -> occurrence iff intensity > 0
    # col 0: [1, 0, 0, 0] -> o = 1/4 -> 4 ; col 1: [1, 1, 0, 1] -> o = 3/4 -> 4/3 ; sum 16/3
    # w = [4 * 3/16, 4/3 * 3/16] = [0.75, 0.25]
    aus = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    assert_close(au_occurrence_weights(aus, max_intensity=1), torch.tensor([0.75, 0.25]))


def test_au_occurrence_weights_never_occurring_raises_with_index() -> None:
    aus = torch.tensor([[3.0, 2.0, 4.0], [0.0, 1.0, 5.0]])  # column 1 never > 2
    with pytest.raises(ValueError, match="index 1"):
        au_occurrence_weights(aus)


def test_au_occurrence_weights_eps_clamps() -> None:
    # col 0: o = 1/2 -> 2 ; col 1: o = 0 -> clamped to 0.1 -> 10 ; w = [2/12, 10/12] = [1/6, 5/6]
    aus = torch.tensor([[3.0, 2.0], [0.0, 1.0]])
    assert_close(au_occurrence_weights(aus, eps=0.1), torch.tensor([1 / 6, 5 / 6]))


def test_au_occurrence_weights_nan_raises() -> None:
    with pytest.raises(ValueError, match="NaN"):
        au_occurrence_weights(torch.tensor([[3.0, float("nan")], [4.0, 3.0]]))


def test_au_intensity_loss_known_answer() -> None:
    # B=2, m=2, l=5, w = [0.25, 0.75]
    # sample 0: pred*l = [1, 2.5], aus [1, 3] -> diffs [0, 0.5]  -> 0.25*0 + 0.75*0.25 = 0.1875
    # sample 1: pred*l = [5, 0],   aus [4, 1] -> diffs [-1, 1]   -> 0.25*1 + 0.75*1    = 1.0
    # mean = 1.1875 / 2 = 0.59375
    pred = torch.tensor([[0.2, 0.5], [1.0, 0.0]])
    aus = torch.tensor([[1.0, 3.0], [4.0, 1.0]])
    weights = torch.tensor([0.25, 0.75])
    assert_close(au_intensity_loss(pred, aus, weights), scalar(0.59375))


def test_au_intensity_loss_perfect_is_zero() -> None:
    aus = torch.tensor([[0.0, 2.5, 5.0]])
    assert_close(au_intensity_loss(aus / 5, aus, torch.full((3,), 1 / 3)), scalar(0.0))


def test_au_intensity_loss_gradcheck() -> None:
    pred = torch.tensor([[0.2, 0.7, 0.4], [0.9, 0.1, 0.5]], dtype=torch.float64, requires_grad=True)
    aus = torch.tensor([[1.0, 3.0, 0.0], [4.5, 0.0, 2.0]], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: au_intensity_loss(p, aus, weights), (pred,))


# --------------------------------------------------------------------------------------------------
# eq. 7 attribute_loss
# --------------------------------------------------------------------------------------------------


def test_attribute_loss_known_answer() -> None:
    # identity logits [0, 0] -> softmax [1/2, 1/2], d=0 -> -log(1/2) = ln 2
    # pose logits [ln 3, 0] -> softmax [3/4, 1/4], p=1 -> -log(1/4) = ln 4 = 2 ln 2
    # lambda_p = 0.5 -> ln 2 + 0.5 * 2 ln 2 = 2 ln 2
    id_logits = torch.tensor([[0.0, 0.0]])
    pose_logits = torch.tensor([[math.log(3.0), 0.0]])
    out = attribute_loss(id_logits, pose_logits, torch.tensor([0]), torch.tensor([1]), lambda_p=0.5)
    assert_close(out, scalar(2 * math.log(2.0)))


def test_attribute_loss_batch_mean() -> None:
    # sample 0: identity [0, 0], d=0 -> ln 2 ; sample 1: identity [ln 3, 0], d=0 -> -log(3/4) = ln(4/3)
    # lambda_p = 0 -> mean = (ln 2 + ln(4/3)) / 2 = ln(8/3) / 2
    id_logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    out = attribute_loss(
        id_logits, torch.zeros(2, 1), torch.tensor([0, 0]), torch.zeros(2, dtype=torch.long), 0.0
    )
    assert_close(out, scalar(math.log(8 / 3) / 2))


def test_attribute_loss_matches_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    id_logits = torch.randn(4, 5, generator=gen)
    pose_logits = torch.randn(4, 3, generator=gen)
    identity = torch.tensor([0, 4, 2, 2])
    pose = torch.tensor([1, 0, 2, 1])
    expected = F.cross_entropy(id_logits, identity) + 0.3 * F.cross_entropy(pose_logits, pose)
    assert_close(attribute_loss(id_logits, pose_logits, identity, pose, lambda_p=0.3), expected)


def test_attribute_loss_lambda_zero_skips_pose() -> None:
    # single pose class and an out-of-range pose label: the pose term must not even be looked at
    id_logits = torch.tensor([[0.0, 0.0]])
    out = attribute_loss(id_logits, torch.tensor([[7.0]]), torch.tensor([1]), torch.tensor([5]), lambda_p=0.0)
    assert_close(out, scalar(math.log(2.0)))


def test_attribute_loss_gradcheck() -> None:
    id_logits = torch.tensor([[0.3, -1.2, 0.5], [0.0, 0.8, -0.4]], dtype=torch.float64, requires_grad=True)
    pose_logits = torch.tensor([[0.1, 0.2], [-0.5, 0.9]], dtype=torch.float64, requires_grad=True)
    identity = torch.tensor([2, 1])
    pose = torch.tensor([0, 1])
    assert torch.autograd.gradcheck(
        lambda a, b: attribute_loss(a, b, identity, pose, lambda_p=0.7), (id_logits, pose_logits)
    )


# --------------------------------------------------------------------------------------------------
# eqs. 8 / 10 LSGAN and eq. 9 reconstruction
# --------------------------------------------------------------------------------------------------


def test_lsgan_discriminator_known_answer() -> None:
    # real [0.5, 1] -> mean((r-1)^2) = (0.25 + 0) / 2 = 0.125
    # fake [0.5, 0] -> mean(f^2)     = (0.25 + 0) / 2 = 0.125 ; total 0.25
    real = torch.tensor([[0.5], [1.0]])
    fake = torch.tensor([[0.5], [0.0]])
    assert_close(lsgan_discriminator_loss(real, fake), scalar(0.25))


def test_lsgan_discriminator_perfect_is_zero() -> None:
    assert_close(lsgan_discriminator_loss(torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)), scalar(0.0))


def test_lsgan_generator_known_answer() -> None:
    # fake [0.5, 0] -> ((−0.5)^2 + (−1)^2) / 2 = (0.25 + 1) / 2 = 0.625
    assert_close(lsgan_generator_loss(torch.tensor([[0.5], [0.0]])), scalar(0.625))
    assert_close(lsgan_generator_loss(torch.ones(3, 1)), scalar(0.0))


def test_reconstruction_known_answer() -> None:
    # image zeros [1,1,2,2]; self [[1,0],[0,0]] -> mean L1 0.25 ;
    # cross [[0.5,0.5],[-0.5,0.5]] -> mean L1 0.5 ; total 0.75
    image = torch.zeros(1, 1, 2, 2)
    self_rec = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    cross_rec = torch.tensor([[[[0.5, 0.5], [-0.5, 0.5]]]])
    assert_close(reconstruction_loss(self_rec, cross_rec, image), scalar(0.75))
    assert_close(reconstruction_loss(image, image, image), scalar(0.0))


def test_gan_and_reconstruction_gradcheck() -> None:
    real = torch.tensor([[0.3], [0.8]], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([[0.1], [-0.4]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lsgan_discriminator_loss, (real, fake))
    assert torch.autograd.gradcheck(lsgan_generator_loss, (fake,))
    image = torch.tensor([[[[0.1, 0.9], [0.4, 0.6]]]], dtype=torch.float64)
    self_rec = torch.tensor([[[[0.3, 0.5], [0.2, 0.7]]]], dtype=torch.float64, requires_grad=True)
    cross_rec = torch.tensor([[[[0.0, 1.0], [0.8, 0.1]]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, c: reconstruction_loss(s, c, image), (self_rec, cross_rec))


# --------------------------------------------------------------------------------------------------
# dtypes / devices
# --------------------------------------------------------------------------------------------------


def _all_losses(dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    kw = {"dtype": dtype, "device": device}
    aus = torch.tensor([[1.0, 3.0], [4.0, 0.0]], device=device)
    return {
        "multiclass": multiclass_discrimination_loss(
            torch.rand(2, 2, 6, **kw), torch.tensor([[1, 3], [0, 5]])
        ),
        "au_disc": au_discrimination_loss(torch.rand(2, 12, **kw), aus),
        "id_disc": identity_discrimination_loss(torch.rand(2, 3, **kw), torch.tensor([0, 2])),
        "confusion": confusion_loss(torch.rand(2, 3, **kw), 3),
        "au_conf": au_confusion_loss(torch.rand(2, 12, **kw), num_aus=2),
        "id_conf": identity_confusion_loss(torch.rand(2, 3, **kw)),
        "au_int": au_intensity_loss(torch.rand(2, 2, **kw), aus, au_occurrence_weights(aus)),
        "attr": attribute_loss(
            torch.rand(2, 3, **kw), torch.rand(2, 2, **kw), torch.tensor([0, 2]), torch.tensor([1, 0])
        ),
        "lsgan_d": lsgan_discriminator_loss(torch.rand(2, 1, **kw), torch.rand(2, 1, **kw)),
        "lsgan_g": lsgan_generator_loss(torch.rand(2, 1, **kw)),
        "rec": reconstruction_loss(
            torch.rand(2, 3, 4, 4, **kw), torch.rand(2, 3, 4, 4, **kw), torch.rand(2, 3, 4, 4, **kw)
        ),
    }


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_losses_keep_input_dtype(dtype: torch.dtype) -> None:
    for name, loss in _all_losses(dtype, "cpu").items():
        assert loss.dtype == dtype, name
        assert loss.ndim == 0, name
        assert torch.isfinite(loss.float()), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_on_cuda_with_cpu_targets() -> None:
    for name, loss in _all_losses(torch.float32, "cuda").items():
        assert loss.device.type == "cuda", name
    assert au_occurrence_weights(torch.tensor([[3.0], [0.0]], device="cuda")).device.type == "cuda"


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------

_ERROR_CASES = {
    "multiclass_scores_2d": (
        lambda: multiclass_discrimination_loss(torch.rand(2, 3), torch.zeros(2, 1).long()),
        "scores",
    ),
    "multiclass_targets_shape": (
        lambda: multiclass_discrimination_loss(torch.rand(2, 2, 3), torch.zeros(2, 3).long()),
        r"targets must have shape \[B, K\] = \(2, 2\), got shape \(2, 3\)",
    ),
    "multiclass_targets_float": (
        lambda: multiclass_discrimination_loss(torch.rand(1, 2, 3), torch.zeros(1, 2)),
        "targets must be an integer",
    ),
    "multiclass_targets_too_big": (
        lambda: multiclass_discrimination_loss(torch.rand(1, 2, 3), torch.tensor([[0, 3]])),
        r"targets must contain class indices in \[0, 3\)",
    ),
    "multiclass_targets_negative": (
        lambda: multiclass_discrimination_loss(torch.rand(1, 2, 3), torch.tensor([[-1, 0]])),
        "targets",
    ),
    "au_disc_bad_width": (
        lambda: au_discrimination_loss(torch.rand(2, 11), torch.rand(2, 2)),
        r"du_scores must have shape \[B, m \* \(l \+ 1\)\] = \(2, 12\)",
    ),
    "au_disc_aus_1d": (lambda: au_discrimination_loss(torch.rand(2, 12), torch.rand(2)), "aus"),
    "id_disc_label_range": (
        lambda: identity_discrimination_loss(torch.rand(2, 3), torch.tensor([0, 3])),
        "identity",
    ),
    "id_disc_label_shape": (
        lambda: identity_discrimination_loss(torch.rand(2, 3), torch.tensor([[0], [1]])),
        "identity",
    ),
    "id_disc_label_float": (
        lambda: identity_discrimination_loss(torch.rand(2, 3), torch.tensor([0.0, 1.0])),
        "identity",
    ),
    "confusion_num_classes": (lambda: confusion_loss(torch.rand(2, 3), 4), "num_classes"),
    "confusion_4d": (lambda: confusion_loss(torch.rand(2, 1, 1, 3), 3), "scores"),
    "au_conf_bad_width": (lambda: au_confusion_loss(torch.rand(2, 12), num_aus=3), "du_scores"),
    "weights_1d": (lambda: au_occurrence_weights(torch.rand(5)), "aus"),
    "weights_eps": (lambda: au_occurrence_weights(torch.full((2, 2), 3.0), eps=0.0), "eps"),
    "intensity_aus_shape": (
        lambda: au_intensity_loss(torch.rand(2, 3), torch.rand(2, 2), torch.rand(3)),
        "aus",
    ),
    "intensity_weights_shape": (
        lambda: au_intensity_loss(torch.rand(2, 3), torch.rand(2, 3), torch.rand(2)),
        "weights",
    ),
    "intensity_pred_int": (
        lambda: au_intensity_loss(torch.ones(2, 3, dtype=torch.long), torch.rand(2, 3), torch.rand(3)),
        "pred_normalized",
    ),
    "attr_identity_range": (
        lambda: attribute_loss(
            torch.rand(2, 3), torch.rand(2, 2), torch.tensor([0, 5]), torch.tensor([0, 1])
        ),
        "identity",
    ),
    "attr_pose_range": (
        lambda: attribute_loss(
            torch.rand(2, 3), torch.rand(2, 2), torch.tensor([0, 1]), torch.tensor([0, 2])
        ),
        "pose",
    ),
    "attr_pose_batch": (
        lambda: attribute_loss(
            torch.rand(2, 3), torch.rand(3, 2), torch.tensor([0, 1]), torch.tensor([0, 1])
        ),
        "pose_logits",
    ),
    "attr_negative_lambda": (
        lambda: attribute_loss(
            torch.rand(1, 3), torch.rand(1, 2), torch.tensor([0]), torch.tensor([0]), -1.0
        ),
        "lambda_p",
    ),
    "rec_shape": (
        lambda: reconstruction_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 4)),
        "cross_reconstruction",
    ),
    "rec_self_shape": (
        lambda: reconstruction_loss(torch.rand(2, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)),
        "self_reconstruction",
    ),
    "lsgan_empty": (lambda: lsgan_generator_loss(torch.rand(0, 1)), "fake_scores"),
    "lsgan_int": (
        lambda: lsgan_discriminator_loss(torch.ones(2, 1, dtype=torch.long), torch.rand(2, 1)),
        "real_scores",
    ),
}


@pytest.mark.parametrize("case", sorted(_ERROR_CASES))
def test_invalid_inputs_raise_value_error(case: str) -> None:
    fn, pattern = _ERROR_CASES[case]
    with pytest.raises(ValueError, match=pattern):
        fn()
