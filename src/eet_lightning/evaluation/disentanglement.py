"""How disentangled a trained EET is, measured on held-out synthetic identities.

Two kinds of evidence, both on identities never seen in training:

1. Linear probes on the two features of Ef and Er (flattened [C, 4, 4]). A linear read-out that recovers
   a label from a feature shows that the feature carries it in a form the generator can use too:

   - f_f -> AU intensities (ridge regression, R^2 per AU): f_f is meant to be AU-free, so low is good.
     The fit and the score use different identities, so R^2 measures AU knowledge that transfers across
     people rather than memorised faces.
   - f_r -> AU intensities: the contrast, f_r is the AU-related feature and should score high.
   - f_r -> identity (one-vs-all ridge classifier, accuracy): f_r should not tell people apart, so low
     is good. Identities must appear on both sides of the split here (a classifier cannot name a person
     it never saw), so the split is by image within each identity.
   - f_f -> identity: the contrast, should be high.

   Each score is given beside chance: R^2 of predicting the training mean (about 0, a little below), and
   for identity 1 / number of identities and the share of the most common training identity.

2. The change the swap makes in the AU region against the true change: for a pair (target A, source B)
   with the exact truth (A rendered with B's AUs and gaze), delta_model = swap - A and delta_true = truth
   - A over the pixels where A rendered with its own and with B's AUs differ. The cosine between them says
   whether the swap moves the expression the right way, ||delta_model|| / ||delta_true|| by how much
   (1 and 1 is a perfect transfer; a swap that copies the target gives size 0). The target's
   self-reconstruction minus the target is the reference: it should not point towards the true change.

The probes are ridge regressions fitted in closed form with numpy (no scikit-learn at run time), each with
the ridge that cross-validation within its own training half picks (never looking at the test half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from eet_lightning.evaluation.synthetic import _to_model, synthetic_faces

# Ridge penalties tried, as fractions of the mean non-zero eigenvalue of the standardized Gram matrix. With
# flattened [C, 4, 4] features (C * 16 dimensions for a few hundred faces) a fixed small ridge interpolates
# the training half, and its test R^2 falls far below chance (-4.6 on the tiny test model's f_f at 0.01, -0.04
# at 10): it would then measure overfitting, not what the feature knows. So by default each probe picks its
# ridge by cross-validation within its training half.
RIDGE_GRID = tuple(10.0**k for k in range(-3, 4))
CV_FOLDS = 5


# -------------------------------------------------------------------------------------------- splits


def split_by_identity(identity: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices with no identity on both sides: the identities shuffled, half of them
    (rounded up) train. For probes whose score must not come from recognising a person."""
    identity = np.asarray(identity).reshape(-1)
    people = np.unique(identity)
    if len(people) < 2:
        raise ValueError(f"a split by identity needs at least 2 identities, got {len(people)}")
    people = np.random.default_rng([seed, 0]).permutation(people)
    train_people = people[: math.ceil(len(people) / 2)]
    in_train = np.isin(identity, train_people)
    return np.flatnonzero(in_train), np.flatnonzero(~in_train)


def split_within_identity(identity: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices with every identity's images shuffled and half of them (rounded down) in test:
    every test identity has training images, as a classifier of identities needs. An identity with one
    image goes to train only."""
    identity = np.asarray(identity).reshape(-1)
    rng = np.random.default_rng([seed, 1])
    test = np.zeros(len(identity), dtype=bool)
    for person in np.unique(identity):
        idx = rng.permutation(np.flatnonzero(identity == person))
        test[idx[: len(idx) // 2]] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


# -------------------------------------------------------------------------------------------- probes


@dataclass
class RidgeProbe:
    """A ridge regression on standardized features: predict(x) = ((x - mean) / scale) @ weight + bias.

    ``penalty`` is the lambda of ||y - X w||^2 + lambda ||w||^2 actually used (X standardized)."""

    mean: np.ndarray  # [d] training feature means
    scale: np.ndarray  # [d] training feature standard deviations (1 where a feature is constant)
    weight: np.ndarray  # [d, k]
    bias: np.ndarray  # [k] the training target means
    penalty: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, ridge: float) -> RidgeProbe:
        """Fit on features ``x`` [n, d] and targets ``y`` [n, k] (or [n]).

        ``ridge`` is relative: lambda = ridge * trace(X^T X) / min(n, d), the mean non-zero eigenvalue of
        the Gram matrix, so that one value means the same shrinkage whatever the feature width and the
        number of faces. With more features than faces (the usual case for flattened [C, 4, 4] features)
        the solve is in the n x n dual form.
        """
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        x, y, mean, scale, xs, bias, yc = _standardize(x, y)
        n, d = x.shape
        trace = float(np.einsum("ij,ij->", xs, xs))
        if trace == 0:
            return cls(mean, scale, np.zeros((d, y.shape[1])), bias, 0.0)
        penalty = ridge * trace / min(n, d)
        if d <= n:
            weight = np.linalg.solve(xs.T @ xs + penalty * np.eye(d), xs.T @ yc)
        else:
            weight = xs.T @ np.linalg.solve(xs @ xs.T + penalty * np.eye(n), yc)
        return cls(mean, scale, weight, bias, penalty)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return ((x - self.mean) / self.scale) @ self.weight + self.bias


def _standardize(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(x, y as float64 2-D, feature mean, scale, standardized x, target mean, centred y)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64)
    y = y.reshape(len(y), -1)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"a probe needs as many feature rows as targets (>= 2), got {len(x)}, {len(y)}")
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale == 0] = 1.0  # a constant feature carries nothing; centring makes it 0
    bias = y.mean(0)
    return x, y, mean, scale, (x - mean) / scale, bias, y - bias


def group_folds(groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds (fit rows, validation rows) with no group on both sides: the groups shuffled
    and dealt round-robin into min(folds, number of groups) folds. Groups are identities for a probe that
    must generalise across people, the rows themselves (``np.arange(n)``) otherwise."""
    groups = np.asarray(groups).reshape(-1)
    unique = np.random.default_rng([seed, 2]).permutation(np.unique(groups))
    k = min(folds, len(unique))
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 groups, got {len(unique)}")
    out = []
    for f in range(k):
        val = np.isin(groups, unique[f::k])
        out.append((np.flatnonzero(~val), np.flatnonzero(val)))
    return out


def select_ridge(
    x: np.ndarray,
    y: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    grid: tuple[float, ...] = RIDGE_GRID,
) -> tuple[float, np.ndarray]:
    """The ``grid`` value (relative ridge, as in `RidgeProbe.fit`) with the least validation error over
    ``folds``, and the errors [len(grid)].

    The error is the squared error summed over the validation rows of every fold, each target column
    divided by its variance so that every AU (or identity) counts alike. One SVD per fold gives the whole
    grid: with X = U S V^T the ridge prediction is X_val V diag(s / (s^2 + lambda)) U^T y.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    var = y.var(0)
    weight = np.where(var > 0, 1 / np.where(var > 0, var, 1), 0.0)
    errors = np.zeros(len(grid))
    for fit_rows, val_rows in folds:
        _, _, mean, scale, xs, bias, yc = _standardize(x[fit_rows], y[fit_rows])
        u, sv, vt = np.linalg.svd(xs, full_matrices=False)
        projected = ((x[val_rows] - mean) / scale) @ vt.T  # [n_val, r]
        coef = u.T @ yc  # [r, k]
        trace = float((sv**2).sum())
        for g, ridge in enumerate(grid):
            shrink = sv / (sv**2 + ridge * trace / min(xs.shape)) if trace > 0 else np.zeros_like(sv)
            residual = y[val_rows] - (projected @ (shrink[:, None] * coef) + bias)
            errors[g] += float(((residual**2) * weight).sum())
    return float(grid[int(np.argmin(errors))]), errors


def r2_per_column(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column, 1 - SS_res / SS_tot around the truth's own mean (as
    scikit-learn's ``r2_score(..., multioutput="raw_values")``); NaN where the truth is constant."""
    prediction = np.asarray(prediction, dtype=np.float64).reshape(len(prediction), -1)
    truth = np.asarray(truth, dtype=np.float64).reshape(len(truth), -1)
    ss_res = ((truth - prediction) ** 2).sum(0)
    ss_tot = ((truth - truth.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)


def _fit_probe(
    x: np.ndarray, y: np.ndarray, ridge: float | None, groups: np.ndarray | None, seed: int
) -> tuple[RidgeProbe, float]:
    """`RidgeProbe.fit` with ``ridge``, or with the ridge `select_ridge` picks over folds of ``groups``
    (each row its own group when None, or when there is a single group)."""
    if ridge is None:
        if groups is None or len(np.unique(groups)) < 2:
            groups = np.arange(len(x))
        ridge, _ = select_ridge(x, y, group_folds(groups, CV_FOLDS, seed))
    return RidgeProbe.fit(x, y, ridge), ridge


def probe_regression(
    features: np.ndarray,
    targets: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    ridge: float | None = None,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a ridge probe on the ``train`` rows, score R^2 per target column on the ``test`` rows.

    ``ridge`` None: chosen by cross-validation on the ``train`` rows with folds by ``groups`` [N] (pass
    the identities so that the choice, like the score, rewards what generalises across people).
    Returns ``r2`` and ``chance_r2`` (predicting the training mean) per column as arrays with NaN where
    the test targets are constant, their means over the other columns, the ridge used and the row counts.
    """
    features = np.asarray(features).reshape(len(features), -1)
    targets = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    if len(test) == 0:
        raise ValueError("the probe's test split is empty")
    probe, ridge = _fit_probe(
        features[train], targets[train], ridge, None if groups is None else np.asarray(groups)[train], seed
    )
    r2 = r2_per_column(probe.predict(features[test]), targets[test])
    chance = r2_per_column(np.broadcast_to(probe.bias, targets[test].shape), targets[test])
    return {
        "r2": r2,
        "r2_mean": _nanmean(r2),
        "chance_r2": chance,
        "chance_r2_mean": _nanmean(chance),
        "ridge": ridge,
        "train_faces": len(train),
        "test_faces": len(test),
    }


def probe_identity(
    features: np.ndarray,
    identity: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    ridge: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """One-vs-all ridge classifier (ridge regression on one-hot identities, argmax) fitted on the ``train``
    rows and scored by accuracy on the ``test`` rows; ``ridge`` None: chosen by cross-validation over
    the ``train`` rows (folds by image).

    ``chance`` is 1 / the number of training identities; ``majority`` the test accuracy of always naming
    the most common training identity. Accuracy is NaN when the test split is empty.
    """
    features = np.asarray(features).reshape(len(features), -1)
    identity = np.asarray(identity).reshape(-1)
    classes, counts = np.unique(identity[train], return_counts=True)
    result: dict[str, Any] = {
        "classes": len(classes),
        "chance": 1.0 / len(classes) if len(classes) else float("nan"),
        "train_faces": len(train),
        "test_faces": len(test),
    }
    if len(test) == 0 or len(classes) == 0:
        return {**result, "accuracy": float("nan"), "majority": float("nan")}
    onehot = (identity[train, None] == classes[None, :]).astype(np.float64)
    probe, ridge = _fit_probe(features[train], onehot, ridge, None, seed)
    predicted = classes[probe.predict(features[test]).argmax(1)]
    majority = classes[counts.argmax()]
    return {
        **result,
        "ridge": ridge,
        "accuracy": float((predicted == identity[test]).mean()),
        "majority": float((identity[test] == majority).mean()),
    }


# -------------------------------------------------------------------------------------------- swap


def delta_agreement(
    delta_model: np.ndarray | torch.Tensor,
    delta_true: np.ndarray | torch.Tensor,
    region: np.ndarray | torch.Tensor,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, over the ``region`` pixels and all channels: the cosine between the two changes and the
    relative size ||delta_model|| / ||delta_true||.

    ``delta_model``, ``delta_true`` [n, C, H, W]; ``region`` bool [n, H, W]. Both values are NaN for an
    image with an empty region or no true change in it; a model change of zero gives size 0 and cosine 0
    (it moved nothing, so nothing the right way).
    """
    dm = torch.as_tensor(delta_model, dtype=torch.float64)
    dt = torch.as_tensor(delta_true, dtype=torch.float64, device=dm.device)
    mask = torch.as_tensor(region, device=dm.device).bool()
    if dm.shape != dt.shape or dm.dim() != 4 or mask.shape != (dm.shape[0], *dm.shape[2:]):
        raise ValueError(
            f"deltas must share one [n, C, H, W] shape and the region be [n, H, W], got "
            f"{tuple(dm.shape)}, {tuple(dt.shape)}, {tuple(mask.shape)}"
        )
    m = mask[:, None].to(dm.dtype)
    dm, dt = dm * m, dt * m
    dot = (dm * dt).sum((1, 2, 3))
    norm_m = dm.pow(2).sum((1, 2, 3)).sqrt()
    norm_t = dt.pow(2).sum((1, 2, 3)).sqrt()
    valid = norm_t > 0
    nan = torch.full_like(dot, float("nan"))
    cosine = torch.where(valid, dot / (norm_m * norm_t).clamp(min=1e-300), nan)
    size = torch.where(valid, norm_m / norm_t.clamp(min=1e-300), nan)
    return cosine.cpu().numpy(), size.cpu().numpy()


@torch.no_grad()
def swap_agreement(
    model: Any,
    target: np.ndarray,
    source: np.ndarray,
    truth: np.ndarray,
    aus_only: np.ndarray,
    batch_size: int = 50,
) -> dict[str, np.ndarray]:
    """Per pair `delta_agreement` of the swap ``model.transfer(target, source)[0]`` and of the target's
    self-reconstruction ``model.reconstruct(target)``, against truth - target, over the AU region (where
    the target and ``aus_only``, the target rendered with the source's AUs alone, differ; as in
    `eet_lightning.evaluation.synthetic.score_transfer`).

    Images are uint8 [N, H, W, 3]; returns ``{"swapped": {"cosine", "size"}, "target_self": {...}}`` of
    float arrays [N] and ``region_pixels`` [N].
    """
    if not (target.shape == source.shape == truth.shape == aus_only.shape) or target.ndim != 4:
        raise ValueError(
            f"target, source, truth and aus_only must share one [N, H, W, 3] shape, got {target.shape}, "
            f"{source.shape}, {truth.shape}, {aus_only.shape}"
        )
    region = np.any(target != aus_only, axis=-1)
    parts: dict[str, dict[str, list[np.ndarray]]] = {
        c: {"cosine": [], "size": []} for c in ("swapped", "target_self")
    }
    device = model.device
    for start in range(0, len(target), batch_size):
        sl = slice(start, start + batch_size)
        a, b, t = (_to_model(x[sl], device) for x in (target, source, truth))
        mask = torch.from_numpy(region[sl]).to(device)
        candidates = {"swapped": model.transfer(a, b)[0], "target_self": model.reconstruct(a)}
        for name, image in candidates.items():
            cosine, size = delta_agreement(image.clamp(-1, 1) - a, t - a, mask)
            parts[name]["cosine"].append(cosine)
            parts[name]["size"].append(size)
    out: dict[str, Any] = {c: {k: np.concatenate(v) for k, v in d.items()} for c, d in parts.items()}
    out["region_pixels"] = region.reshape(len(region), -1).sum(1)
    return out


# -------------------------------------------------------------------------------------------- together


@torch.no_grad()
def encode_features(model: Any, images: np.ndarray, batch_size: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """(f_r, f_f) of uint8 images [N, H, W, 3], each flattened to float64 [N, C * 4 * 4]."""
    related, free = [], []
    for start in range(0, len(images), batch_size):
        fr, ff = model.encode(_to_model(images[start : start + batch_size], model.device))
        related.append(fr.flatten(1).double().cpu().numpy())
        free.append(ff.flatten(1).double().cpu().numpy())
    return np.concatenate(related), np.concatenate(free)


def score_disentanglement(
    model: Any,
    data: Any,
    num_pairs: int,
    seed: int,
    ridge: float | None = None,
    batch_size: int = 50,
) -> dict[str, Any]:
    """All the measures on ``num_pairs`` held-out pairs of a `SyntheticDataModule` (pair seed ``seed``):
    the probes on their 2 * num_pairs A and B faces, the swap agreement on (target A, source B).

    ``ridge`` None: each probe picks its own by cross-validation on its training half (see `RIDGE_GRID`).
    Returns a JSON-serializable dict (NaN written as None); `format_report` prints it.
    """
    if num_pairs < 2:
        raise ValueError(f"the probes need at least 2 held-out pairs (4 faces), got {num_pairs}")
    faces, _, extras = synthetic_faces(data, num_pairs, seed)
    images, identity, aus = extras["images"], faces.identity, faces.aus
    au_names = [f"AU{a}" for a in data.aus]
    fr, ff = encode_features(model, images, batch_size)

    by_identity = split_by_identity(identity, seed)
    within_identity = split_within_identity(identity, seed)
    probes: dict[str, Any] = {}
    for name, feature in (("au_free_to_aus", ff), ("au_related_to_aus", fr)):
        r = probe_regression(feature, aus, *by_identity, ridge=ridge, groups=identity, seed=seed)
        r["r2"] = dict(zip(au_names, r["r2"].tolist()))
        r["chance_r2"] = dict(zip(au_names, r["chance_r2"].tolist()))
        r["split"] = "by identity"
        r["train_identities"] = len(np.unique(identity[by_identity[0]]))
        r["test_identities"] = len(np.unique(identity[by_identity[1]]))
        probes[name] = r
    for name, feature in (("au_related_to_identity", fr), ("au_free_to_identity", ff)):
        probes[name] = probe_identity(feature, identity, *within_identity, ridge=ridge, seed=seed)
        probes[name]["split"] = "by image within identity"

    # (target A, source B): the A halves of the pair list; rows 2k of the truth are A with B's AUs and gaze
    target, source = images[:num_pairs], images[num_pairs:]
    agreement = swap_agreement(
        model, target, source, extras["truth"][0::2], extras["aus_only"][0::2], batch_size
    )
    has_region = agreement["region_pixels"] > 0
    swap: dict[str, Any] = {"pairs": num_pairs, "pairs_with_au_region": int(has_region.sum())}
    for name in ("swapped", "target_self"):
        cosine, size = agreement[name]["cosine"], agreement[name]["size"]
        swap[name] = {
            "cosine_mean": _nanmean(cosine),
            "cosine_median": _nanmedian(cosine),
            "size_mean": _nanmean(size),
            "size_median": _nanmedian(size),
            "cosine": cosine.tolist(),
            "size": size.tolist(),
        }
    result = {
        "faces": int(len(images)),
        "pairs": num_pairs,
        "identities": int(len(np.unique(identity))),
        "seed": seed,
        "aus": [int(a) for a in data.aus],
        "ridge": "cross-validated" if ridge is None else ridge,
        "ridge_grid": list(RIDGE_GRID),
        "feature_dims": {"au_related": int(fr.shape[1]), "au_free": int(ff.shape[1])},
        "probes": probes,
        "swap": swap,
    }
    return _json_safe(result)


def format_report(result: dict[str, Any]) -> str:
    """A few lines: each probe's score beside chance, then the swap's agreement with the true change."""
    p, s = result["probes"], result["swap"]
    lines = [
        f"{result['faces']} held-out faces of {result['identities']} identities "
        f"({result['pairs']} pairs); probe ridge: {result['ridge']}",
        f"{'probe':<28}{'score':>8}{'chance':>9}{'ridge':>8}  expected",
    ]
    for key, label, hint in (
        ("au_free_to_aus", "f_f -> AUs (mean R^2)", "low (disentangled)"),
        ("au_related_to_aus", "f_r -> AUs (mean R^2)", "high"),
    ):
        r = p[key]
        lines.append(
            f"{label:<28}{_fmt(r['r2_mean']):>8}{_fmt(r['chance_r2_mean']):>9}{_ridge(r):>8}  {hint}"
        )
    for key, label, hint in (
        ("au_related_to_identity", "f_r -> identity (accuracy)", "low (disentangled)"),
        ("au_free_to_identity", "f_f -> identity (accuracy)", "high"),
    ):
        r = p[key]
        lines.append(
            f"{label:<28}{_fmt(r['accuracy']):>8}{_fmt(r['chance']):>9}{_ridge(r):>8}  {hint}; "
            f"majority class {_fmt(r['majority'])}, {r['test_faces']} test faces"
        )
    lines.append(
        f"AU-region change vs the true change ({s['pairs_with_au_region']} of {s['pairs']} pairs "
        "with an AU region; perfect = cosine 1, size 1):"
    )
    for name in ("swapped", "target_self"):
        r = s[name]
        lines.append(
            f"  {name:<12} cosine mean {_fmt(r['cosine_mean'])} median {_fmt(r['cosine_median'])}   "
            f"size mean {_fmt(r['size_mean'])} median {_fmt(r['size_median'])}"
        )
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- helpers


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def _nanmedian(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else float("nan")


def _ridge(probe: dict[str, Any]) -> str:
    return "-" if probe.get("ridge") is None else f"{probe['ridge']:g}"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _json_safe(value: Any) -> Any:
    """NaN and infinities -> None (strict JSON has no NaN), numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
