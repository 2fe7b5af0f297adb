"""Loss functions of EET (Explicit Facial Expression Transfer, Shao et al., IEEE TIP 2021).

Every function is a small pure function on tensors (no modules, no state), one per equation of
section III-B / III-C of the paper. Notation follows the paper:

* ``m``: number of AUs, ``l``: maximum AU intensity (intensities lie in ``[0, l]``),
* ``n``: number of identities, ``v``: number of poses,
* ``B``: batch size.

All losses return a scalar tensor in the dtype and on the device of the (floating point) score /
prediction input. Invalid shapes, dtypes or integer targets out of range raise ``ValueError`` with a
message naming the offending argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "discretize_intensities",
    "multiclass_discrimination_loss",
    "au_discrimination_loss",
    "identity_discrimination_loss",
    "confusion_loss",
    "au_confusion_loss",
    "identity_confusion_loss",
    "au_occurrence_threshold",
    "au_occurrence_weights",
    "au_intensity_loss",
    "attribute_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "reconstruction_loss",
    "mask_size_loss",
    "total_variation_loss",
    "flow_size_loss",
]


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _check_tensor(x: object, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_floating(x: Tensor, name: str) -> None:
    _check_tensor(x, name)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got dtype {x.dtype}")


def _check_ndim(x: Tensor, ndim: int, name: str, layout: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {tuple(x.shape)}")


def _check_shape(x: Tensor, expected: tuple[int, ...], name: str, layout: str) -> None:
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {layout} = {tuple(expected)}, got shape {tuple(x.shape)}")


def _check_nonempty_batch(x: Tensor, name: str) -> None:
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")


def _check_max_intensity(max_intensity: int) -> None:
    if isinstance(max_intensity, bool) or not isinstance(max_intensity, int) or max_intensity < 1:
        raise ValueError(f"max_intensity must be an int >= 1, got {max_intensity!r}")


def _check_class_targets(targets: Tensor, num_classes: int, name: str) -> Tensor:
    """Check that ``targets`` is an integer tensor with values in ``[0, num_classes)``; return it as int64."""
    _check_tensor(targets, name)
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(
            f"{name} must be an integer (int64) tensor of class indices, got dtype {targets.dtype}"
        )
    if targets.numel() > 0:
        t_min = int(targets.min())
        t_max = int(targets.max())
        if t_min < 0 or t_max >= num_classes:
            raise ValueError(
                f"{name} must contain class indices in [0, {num_classes}), got values in [{t_min}, {t_max}]"
            )
    return targets.long()


# --------------------------------------------------------------------------------------------------
# III-B.1 multi-class adversarial training (eqs. 1-4)
# --------------------------------------------------------------------------------------------------


def discretize_intensities(aus: Tensor, max_intensity: int = 5) -> Tensor:
    r"""Eq. 1: discretize AU intensities to integer levels.

    .. math::
        u_{i_d} = \lfloor u_i \rceil \in \{0, \dots, l\}

    Rounds to the nearest integer with halves rounded **up** (``floor(x + 0.5)``, so 0.5 -> 1 and
    2.5 -> 3; not banker's rounding), then clamps to ``[0, l]``.

    Args:
        aus: AU intensities of any shape (typically ``[B, m]``), real valued, nominally in ``[0, l]``.
        max_intensity: ``l``, the maximum intensity level.

    Returns:
        int64 tensor of the same shape with values in ``{0, ..., l}``.
    """
    _check_tensor(aus, "aus")
    _check_max_intensity(max_intensity)
    if aus.dtype == torch.bool or aus.is_complex():
        raise ValueError(f"aus must be a real valued tensor, got dtype {aus.dtype}")
    if not aus.is_floating_point():
        return aus.long().clamp(0, max_intensity)
    if bool(torch.isnan(aus).any()):
        raise ValueError("aus contains NaN values; cannot discretize AU intensities")
    return torch.floor(aus + 0.5).clamp(0, max_intensity).long()


def multiclass_discrimination_loss(scores: Tensor, targets: Tensor) -> Tensor:
    r"""Eq. 2 / eq. 4: multi-class (LSGAN-style) discrimination loss.

    .. math::
        \mathcal{L}^{(D)} = \mathbb{E}\Big[\frac{1}{KC}\sum_{k=1}^{K}\sum_{q=0}^{C-1}
            \mathbb{1}_{[q \neq t_k]} (D^{(k,q)})^2 + \mathbb{1}_{[q = t_k]} (D^{(k,q)} - 1)^2\Big]

    i.e. the discriminator is pushed to output 1 for the true class of each group and 0 elsewhere.
    For ``D_u`` (eq. 2): ``K = m`` AUs, ``C = l + 1`` intensity levels. For ``D_d`` (eq. 4): ``K = 1``,
    ``C = n`` identities.

    Args:
        scores: discriminator outputs, ``[B, K, C]``, floating point.
        targets: int64 class indices ``[B, K]`` with values in ``[0, C)``.

    Returns:
        scalar loss (mean over the batch), in ``scores.dtype``.
    """
    _check_floating(scores, "scores")
    _check_ndim(scores, 3, "scores", "[B, K, C]")
    _check_nonempty_batch(scores, "scores")
    batch, groups, classes = scores.shape
    _check_tensor(targets, "targets")
    _check_shape(targets, (batch, groups), "targets", "[B, K]")
    targets = _check_class_targets(targets, classes, "targets")
    return _multiclass_mse(scores, targets)


def _multiclass_mse(scores: Tensor, targets: Tensor) -> Tensor:
    """Unchecked core of eqs. 2 / 4: ``mean((scores - onehot(targets))^2)`` over ``[B, K, C]``."""
    onehot = F.one_hot(targets.to(scores.device), scores.shape[-1]).to(scores.dtype)
    # every sample has the same K*C entries, so the batch mean of the per-sample mean is the global mean
    return (scores - onehot).pow(2).mean()


def au_discrimination_loss(du_scores: Tensor, aus: Tensor, max_intensity: int = 5) -> Tensor:
    r"""Eq. 2: AU intensity discrimination loss :math:`\mathcal{L}_u^{(D)}` of ``D_u``.

    .. math::
        \mathcal{L}_u^{(D)} = \mathbb{E}\Big[\frac{1}{m(l+1)}\sum_{i=1}^{m}\sum_{q=0}^{l}
            \mathbb{1}_{[q \neq u_{i_d}]} (D_u^{(i,q)})^2
            + \mathbb{1}_{[q = u_{i_d}]} (D_u^{(i,q)} - 1)^2\Big]

    Args:
        du_scores: flat ``D_u`` output ``[B, m * (l + 1)]`` (AU-major: entry ``i * (l + 1) + q``
            is level ``q`` of AU ``i``).
        aus: AU intensities ``[B, m]`` in ``[0, l]``, discretized with eq. 1.
        max_intensity: ``l``.

    Returns:
        scalar loss in ``du_scores.dtype``.
    """
    _check_max_intensity(max_intensity)
    _check_floating(du_scores, "du_scores")
    _check_tensor(aus, "aus")
    _check_ndim(aus, 2, "aus", "[B, m]")
    batch, num_aus = aus.shape
    levels = max_intensity + 1
    _check_shape(du_scores, (batch, num_aus * levels), "du_scores", "[B, m * (l + 1)]")
    _check_nonempty_batch(du_scores, "du_scores")
    targets = discretize_intensities(aus, max_intensity)
    return _multiclass_mse(du_scores.reshape(batch, num_aus, levels), targets)


def identity_discrimination_loss(dd_scores: Tensor, identity: Tensor) -> Tensor:
    r"""Eq. 4: identity discrimination loss :math:`\mathcal{L}_d^{(D)}` of ``D_d``.

    .. math::
        \mathcal{L}_d^{(D)} = \mathbb{E}\Big[\frac{1}{n}\sum_{j=1}^{n}
            \mathbb{1}_{[j \neq d]} (D_d^{(j)})^2 + \mathbb{1}_{[j = d]} (D_d^{(j)} - 1)^2\Big]

    Args:
        dd_scores: ``D_d`` output ``[B, n]``.
        identity: int64 identity labels ``[B]`` in ``[0, n)``.

    Returns:
        scalar loss in ``dd_scores.dtype``.
    """
    _check_floating(dd_scores, "dd_scores")
    _check_ndim(dd_scores, 2, "dd_scores", "[B, n]")
    _check_tensor(identity, "identity")
    _check_shape(identity, (dd_scores.shape[0],), "identity", "[B]")
    _check_nonempty_batch(dd_scores, "dd_scores")
    identity = _check_class_targets(identity, dd_scores.shape[1], "identity")
    return _multiclass_mse(dd_scores.unsqueeze(1), identity.unsqueeze(1))


def confusion_loss(scores: Tensor, num_classes: int) -> Tensor:
    r"""Eq. 3 (and its identity analogue): multi-class confusion loss for the encoders.

    .. math::
        \mathcal{L}^{(E)} = \mathbb{E}\Big[\frac{1}{KC}\sum_{k=1}^{K}\sum_{q=0}^{C-1}
            \big(D^{(k,q)} - \tfrac{1}{C}\big)^2\Big]

    The encoder is trained so that the (frozen) discriminator outputs the uniform value ``1 / C``
    for every class.

    Args:
        scores: discriminator outputs ``[B, K, C]`` or ``[B, C]`` (then ``K = 1``).
        num_classes: ``C``; must equal ``scores.shape[-1]``.

    Returns:
        scalar loss in ``scores.dtype``.
    """
    _check_floating(scores, "scores")
    if scores.ndim not in (2, 3):
        raise ValueError(f"scores must have shape [B, K, C] or [B, C], got shape {tuple(scores.shape)}")
    _check_nonempty_batch(scores, "scores")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if scores.shape[-1] != num_classes:
        raise ValueError(
            f"scores last dim must equal num_classes = {num_classes}, got shape {tuple(scores.shape)}"
        )
    return (scores - 1.0 / num_classes).pow(2).mean()


def au_confusion_loss(du_scores: Tensor, num_aus: int, max_intensity: int = 5) -> Tensor:
    r"""Eq. 3: AU intensity confusion loss :math:`\mathcal{L}_u^{(E)}` for ``E_f``.

    .. math::
        \mathcal{L}_u^{(E)} = \mathbb{E}\Big[\frac{1}{m(l+1)}\sum_{i=1}^{m}\sum_{q=0}^{l}
            \big(D_u^{(i,q)} - \tfrac{1}{l+1}\big)^2\Big]

    Args:
        du_scores: flat ``D_u`` output ``[B, m * (l + 1)]``.
        num_aus: ``m``.
        max_intensity: ``l``.

    Returns:
        scalar loss in ``du_scores.dtype``.
    """
    _check_max_intensity(max_intensity)
    if isinstance(num_aus, bool) or not isinstance(num_aus, int) or num_aus < 1:
        raise ValueError(f"num_aus must be an int >= 1, got {num_aus!r}")
    _check_floating(du_scores, "du_scores")
    _check_ndim(du_scores, 2, "du_scores", "[B, m * (l + 1)]")
    levels = max_intensity + 1
    _check_shape(du_scores, (du_scores.shape[0], num_aus * levels), "du_scores", "[B, m * (l + 1)]")
    return confusion_loss(du_scores.reshape(du_scores.shape[0], num_aus, levels), levels)


def identity_confusion_loss(dd_scores: Tensor) -> Tensor:
    r"""Identity confusion loss :math:`\mathcal{L}_d^{(E)}` for ``E_r`` (analogue of eq. 3, after eq. 4).

    .. math::
        \mathcal{L}_d^{(E)} = \mathbb{E}\Big[\frac{1}{n}\sum_{j=1}^{n}
            \big(D_d^{(j)} - \tfrac{1}{n}\big)^2\Big]

    Args:
        dd_scores: ``D_d`` output ``[B, n]``.

    Returns:
        scalar loss in ``dd_scores.dtype``.
    """
    _check_floating(dd_scores, "dd_scores")
    _check_ndim(dd_scores, 2, "dd_scores", "[B, n]")
    return confusion_loss(dd_scores, dd_scores.shape[1])


# --------------------------------------------------------------------------------------------------
# III-B.2 AU and attribute constraints (eqs. 5, 7)
# --------------------------------------------------------------------------------------------------


def au_occurrence_threshold(max_intensity: float = 5) -> float:
    """An AU occurs when its intensity is strictly greater than this: ``(l - 1) / 2`` (eq. 5; 2 on DISFA's
    0-5 scale)."""
    return (max_intensity - 1) / 2.0


def au_occurrence_weights(aus: Tensor, max_intensity: int = 5, eps: float | None = None) -> Tensor:
    r"""Eq. 5 weights: inverse AU occurrence rates, normalised to sum to one.

    .. math::
        o_i = \frac{1}{N}\sum_{s=1}^{N} \mathbb{1}_{[u_i^{(s)} > (l - 1)/2]}, \qquad
        w_i = \frac{1 / o_i}{\sum_{q=1}^{m} 1 / o_q}

    An intensity strictly greater than ``(l - 1) / 2`` counts as an occurrence.

    Args:
        aus: AU intensities of the whole training set ``[N, m]``.
        max_intensity: ``l``.
        eps: if given, occurrence rates are clamped to ``>= eps`` (so never-occurring AUs get a large
            but finite weight); if ``None``, an AU that never occurs raises ``ValueError``.

    Returns:
        float32 tensor ``[m]`` (on ``aus.device``) summing to 1.
    """
    _check_tensor(aus, "aus")
    _check_max_intensity(max_intensity)
    _check_ndim(aus, 2, "aus", "[N, m]")
    if aus.shape[0] == 0 or aus.shape[1] == 0:
        raise ValueError(f"aus must have at least one sample and one AU, got shape {tuple(aus.shape)}")
    if aus.dtype == torch.bool or aus.is_complex():
        raise ValueError(f"aus must be a real valued tensor, got dtype {aus.dtype}")
    values = aus.to(torch.float64)
    if bool(torch.isnan(values).any()):
        bad = torch.isnan(values).any(dim=0).nonzero().flatten().tolist()
        raise ValueError(f"aus contains NaN values (AU column indices {bad})")
    if eps is not None and not eps > 0:
        raise ValueError(f"eps must be > 0 or None, got {eps!r}")
    threshold = au_occurrence_threshold(max_intensity)
    occurrence = (values > threshold).to(torch.float64).mean(dim=0)
    if eps is None:
        never = (occurrence == 0).nonzero().flatten().tolist()
        if never:
            raise ValueError(
                f"AU column index {never[0]} never occurs (no intensity > {threshold}) in aus "
                f"(never-occurring AU column indices: {never}); pass eps to clamp its occurrence rate"
            )
    else:
        occurrence = occurrence.clamp_min(float(eps))
    inverse = occurrence.reciprocal()
    return (inverse / inverse.sum()).to(torch.float32)


def au_intensity_loss(
    pred_normalized: Tensor, aus: Tensor, weights: Tensor, max_intensity: int = 5
) -> Tensor:
    r"""Eq. 5: weighted AU intensity estimation loss :math:`\mathcal{L}_u`.

    .. math::
        \mathcal{L}_u = \mathbb{E}\Big[\sum_{i=1}^{m} w_i \big(u_i - \hat{u}_i\, l\big)^2\Big]

    Args:
        pred_normalized: predicted normalised intensities ``[B, m]`` in ``[0, 1]`` (sigmoid outputs
            of ``E_r``).
        aus: ground-truth intensities ``[B, m]`` in ``[0, l]``.
        weights: AU weights ``[m]`` (see :func:`au_occurrence_weights`).
        max_intensity: ``l``.

    Returns:
        scalar loss (mean over the batch) in ``pred_normalized.dtype``.
    """
    _check_max_intensity(max_intensity)
    _check_floating(pred_normalized, "pred_normalized")
    _check_ndim(pred_normalized, 2, "pred_normalized", "[B, m]")
    _check_nonempty_batch(pred_normalized, "pred_normalized")
    _check_tensor(aus, "aus")
    _check_shape(aus, tuple(pred_normalized.shape), "aus", "[B, m]")
    if aus.dtype == torch.bool or aus.is_complex():
        raise ValueError(f"aus must be a real valued tensor, got dtype {aus.dtype}")
    _check_tensor(weights, "weights")
    _check_shape(weights, (pred_normalized.shape[1],), "weights", "[m]")
    if weights.dtype == torch.bool or weights.is_complex():
        raise ValueError(f"weights must be a real valued tensor, got dtype {weights.dtype}")
    dtype, device = pred_normalized.dtype, pred_normalized.device
    target = aus.to(device=device, dtype=dtype)
    w = weights.to(device=device, dtype=dtype)
    squared = (target - pred_normalized * max_intensity).pow(2)
    return (squared * w).sum(dim=1).mean()


def attribute_loss(
    identity_logits: Tensor,
    pose_logits: Tensor,
    identity: Tensor,
    pose: Tensor,
    lambda_p: float = 1.0,
) -> Tensor:
    r"""Eq. 7: attribute constraint loss :math:`\mathcal{L}_c` (identity + pose classification).

    .. math::
        \mathcal{L}_c = -\mathbb{E}\Big[\sum_{j=1}^{n}\mathbb{1}_{[j=d]}\log\sigma(C^{d(j)})
            + \lambda_p \sum_{k=1}^{v}\mathbb{1}_{[k=p]}\log\sigma(C^{p(k)})\Big]

    with :math:`\sigma` the softmax, i.e. cross entropy on identity plus ``lambda_p`` times cross
    entropy on pose. With ``lambda_p == 0`` the pose term is skipped entirely (``pose_logits`` and
    ``pose`` are then neither validated nor used, so e.g. a single pose class is fine).

    Args:
        identity_logits: ``C``'s identity output ``[B, n]`` (pre-softmax).
        pose_logits: ``C``'s pose output ``[B, v]`` (pre-softmax).
        identity: int64 identity labels ``[B]`` in ``[0, n)``.
        pose: int64 pose labels ``[B]`` in ``[0, v)``.
        lambda_p: weight of the pose term, ``>= 0``.

    Returns:
        scalar loss (mean over the batch) in ``identity_logits.dtype``.
    """
    if not lambda_p >= 0:
        raise ValueError(f"lambda_p must be >= 0, got {lambda_p!r}")
    _check_floating(identity_logits, "identity_logits")
    _check_ndim(identity_logits, 2, "identity_logits", "[B, n]")
    _check_nonempty_batch(identity_logits, "identity_logits")
    batch = identity_logits.shape[0]
    _check_tensor(identity, "identity")
    _check_shape(identity, (batch,), "identity", "[B]")
    identity = _check_class_targets(identity, identity_logits.shape[1], "identity")
    loss = _nll(identity_logits, identity)
    if lambda_p == 0:
        return loss
    _check_floating(pose_logits, "pose_logits")
    _check_ndim(pose_logits, 2, "pose_logits", "[B, v]")
    _check_shape(pose_logits, (batch, pose_logits.shape[1]), "pose_logits", "[B, v]")
    _check_tensor(pose, "pose")
    _check_shape(pose, (batch,), "pose", "[B]")
    pose = _check_class_targets(pose, pose_logits.shape[1], "pose")
    return loss + lambda_p * _nll(pose_logits, pose).to(loss.dtype)


def _nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Batch mean of ``-log softmax(logits)[label]``, computed in ``logits.dtype``."""
    log_prob = torch.log_softmax(logits, dim=1)
    return -log_prob.gather(1, labels.to(logits.device).unsqueeze(1)).mean()


# --------------------------------------------------------------------------------------------------
# III-C full objective (eqs. 8-10)
# --------------------------------------------------------------------------------------------------


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    r"""LSGAN form of eq. 8 / eq. 10 for the discriminator side.

    .. math::
        \mathcal{L}_D = \mathbb{E}\big[(D(\text{real}) - 1)^2\big] + \mathbb{E}\big[D(\text{fake})^2\big]

    For eq. 8 (``D_sc``) "real" is the self-reconstruction :math:`\check{I}` and "fake" the swapped image
    :math:`\dot{I}`; for eq. 10 (``D_g``) "real" is the input image :math:`I` and "fake" :math:`\dot{I}`.
    Scores may have any (non-empty) shape, e.g. ``[B, 1]`` or a patch map; each term is an
    element-wise mean.

    Args:
        real_scores: discriminator output on real samples.
        fake_scores: discriminator output on fake samples.

    Returns:
        scalar loss in ``real_scores.dtype``.
    """
    _check_floating(real_scores, "real_scores")
    _check_floating(fake_scores, "fake_scores")
    _check_nonempty_batch(real_scores, "real_scores")
    _check_nonempty_batch(fake_scores, "fake_scores")
    if real_scores.device != fake_scores.device:
        raise ValueError(
            f"real_scores and fake_scores must be on the same device, got {real_scores.device} "
            f"and {fake_scores.device}"
        )
    return (real_scores - 1.0).pow(2).mean() + fake_scores.pow(2).mean().to(real_scores.dtype)


def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    r"""LSGAN form of eq. 8 / eq. 10 for the generator side (encoders and ``G``).

    .. math::
        \mathcal{L}_G = \mathbb{E}\big[(D(\text{fake}) - 1)^2\big]

    Args:
        fake_scores: discriminator output on generated samples (any non-empty shape).

    Returns:
        scalar loss in ``fake_scores.dtype``.
    """
    _check_floating(fake_scores, "fake_scores")
    _check_nonempty_batch(fake_scores, "fake_scores")
    return (fake_scores - 1.0).pow(2).mean()


def reconstruction_loss(self_reconstruction: Tensor, cross_reconstruction: Tensor, image: Tensor) -> Tensor:
    r"""Eq. 9: reconstruction loss :math:`\mathcal{L}_r`.

    .. math::
        \mathcal{L}_r = \mathbb{E}\big[\|\check{I} - I\|_1 + \|\hat{I} - I\|_1\big]

    implemented as the per-pixel mean L1 of each term, summed:
    ``mean|self_reconstruction - image| + mean|cross_reconstruction - image|``.

    Args:
        self_reconstruction: :math:`\check{I} = G(f_r, f_f)`, ``[B, C, H, W]`` (any shape equal to ``image``).
        cross_reconstruction: cross-cycle reconstruction :math:`\hat{I}`, same shape as ``image``.
        image: input image :math:`I`.

    Returns:
        scalar loss in ``image.dtype``.
    """
    _check_floating(image, "image")
    _check_nonempty_batch(image, "image")
    _check_floating(self_reconstruction, "self_reconstruction")
    _check_floating(cross_reconstruction, "cross_reconstruction")
    layout = "same as image"
    _check_shape(self_reconstruction, tuple(image.shape), "self_reconstruction", layout)
    _check_shape(cross_reconstruction, tuple(image.shape), "cross_reconstruction", layout)
    target = image
    self_term = (self_reconstruction.to(target.dtype) - target).abs().mean()
    cross_term = (cross_reconstruction.to(target.dtype) - target).abs().mean()
    return self_term + cross_term


def mask_size_loss(mask: Tensor) -> Tensor:
    r"""Size of G's attention mask (GANimation's :math:`\mathbb{E}\|A\|_1`, not in EET's paper): the mean
    mask value, so that G changes only the pixels the expression needs and the base shows elsewhere.

    Args:
        mask: ``[B, 1, H, W]`` in ``[0, 1]`` (1: G's colour, 0: the base image).

    Returns:
        scalar loss in ``mask.dtype``.
    """
    _check_floating(mask, "mask")
    _check_ndim(mask, 4, "mask", "[B, 1, H, W]")
    _check_nonempty_batch(mask, "mask")
    return mask.mean()


def total_variation_loss(x: Tensor) -> Tensor:
    r"""Mean squared total variation :math:`\mathbb{E}[(x_{i+1,j} - x_{i,j})^2] + \mathbb{E}[(x_{i,j+1} -
    x_{i,j})^2]` of ``[B, C, H, W]`` maps (GANimation's smoothness term on the attention mask, taken as
    means so that its weight does not depend on the image size).

    Returns:
        scalar loss in ``x.dtype``.
    """
    _check_floating(x, "x")
    _check_ndim(x, 4, "x", "[B, C, H, W]")
    _check_nonempty_batch(x, "x")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"x must be at least 2 x 2 pixels, got shape {tuple(x.shape)}")
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


def flow_size_loss(flow: Tensor) -> Tensor:
    r"""Size of G's flow field (not in EET's paper): the mean length of the per-pixel displacement, so that
    a warping G moves only what the expression moves and leaves the rest of the image in place.

    Args:
        flow: ``[B, 2, H, W]`` displacements (x, y) in grid_sample's units, where [-1, 1] spans the image.

    Returns:
        scalar loss in ``flow.dtype``.
    """
    _check_floating(flow, "flow")
    _check_ndim(flow, 4, "flow", "[B, 2, H, W]")
    _check_nonempty_batch(flow, "flow")
    if flow.shape[1] != 2:
        raise ValueError(f"flow must have 2 channels (x, y), got shape {tuple(flow.shape)}")
    return flow.square().sum(1).add(1e-12).sqrt().mean()
