"""Metrics against independent references (pingouin, scikit-learn, Shrout & Fleiss) and under 2-process DDP."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
import torch
import torch.multiprocessing as mp
from sklearn.metrics import roc_curve

from eet_lightning.metrics import (
    ICC31,
    AUIntensityMSE,
    FaceVerification,
    GazeAccuracy,
    icc31,
    tar_at_far,
    verification_accuracy,
)
from metric_data import _all_metrics, _ddp_worker, _flat, _random_au_data, _verification_data

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges; their ICC(3,1) is 0.71.
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
)


def _pingouin_icc_c1(table: np.ndarray) -> float:
    n, k = table.shape
    df = pd.DataFrame(
        {"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n), "y": table.ravel()}
    )
    out = pg.intraclass_corr(df, targets="target", raters="rater", ratings="y")
    return float(out.set_index("Type").loc["ICC(C,1)", "ICC"])


def test_icc31_reproduces_shrout_fleiss_published_example() -> None:
    judges = [torch.tensor(SHROUT_FLEISS[:, j], dtype=torch.float64) for j in range(4)]
    assert float(icc31(*judges)) == pytest.approx(0.71, abs=0.005)
    metric = ICC31(num_aus=1, num_raters=4)
    metric.update(*[j[:3] for j in judges])
    metric.update(*[j[3:] for j in judges])
    assert float(metric.compute()["per_au"].reshape(-1)[0]) == pytest.approx(0.7148, abs=1e-4)
    assert float(metric.compute()["per_au"].reshape(-1)[0]) == pytest.approx(
        _pingouin_icc_c1(SHROUT_FLEISS), abs=1e-12
    )


def test_icc31_matches_pingouin_per_au_on_random_data() -> None:
    source, generated = _random_au_data()
    metric = ICC31(num_aus=5)
    for chunk in range(0, 300, 64):
        metric.update(source[chunk : chunk + 64], generated[chunk : chunk + 64])
    out = metric.compute()
    expected = [_pingouin_icc_c1(torch.stack([source[:, i], generated[:, i]], 1).numpy()) for i in range(5)]
    np.testing.assert_allclose(out["per_au"].numpy(), expected, rtol=0, atol=1e-10)
    assert float(out["mean"]) == pytest.approx(np.mean(expected), abs=1e-10)
    # more noise on the later AUs: agreement falls monotonically
    assert all(np.diff(expected) < 0)
    # identical ratings agree perfectly; a constant AU has no ICC and is left out of the mean
    same = ICC31(num_aus=2)
    same.update(
        torch.stack([source[:, 0], torch.ones(300)], 1), torch.stack([source[:, 0], torch.ones(300)], 1)
    )
    res = same.compute()
    assert float(res["per_au"][0]) == pytest.approx(1.0) and torch.isnan(res["per_au"][1])
    assert float(res["mean"]) == pytest.approx(1.0)


def test_au_mse_and_input_checks() -> None:
    source, generated = _random_au_data()
    metric = AUIntensityMSE(num_aus=5)
    metric.update(generated[:100], source[:100])
    metric.update(generated[100:], source[100:])
    out = metric.compute()
    expected = ((generated - source) ** 2).mean(0)
    torch.testing.assert_close(out["per_au"], expected)
    assert float(out["mean"]) == pytest.approx(float(expected.mean()))
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        metric.update(generated[:, :4], source[:, :4])
    with pytest.raises(ValueError, match="2 raters"):
        ICC31(num_aus=5).update(source, generated, source)


def test_tar_at_far_matches_sklearn_roc() -> None:
    a, b, same = _verification_data()
    scores = torch.nn.functional.cosine_similarity(a, b).double()
    for far in (0.01, 0.05, 0.2):
        fpr, tpr, _ = roc_curve(same.numpy(), scores.numpy(), drop_intermediate=False)
        assert tar_at_far(scores, same, far) == pytest.approx(float(tpr[fpr <= far].max()), abs=1e-12)
    # ties: several pairs on one score form one ROC point
    tied = torch.tensor([0.9, 0.9, 0.5, 0.5, 0.5, 0.1], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 1, 0, 0]).bool()
    fpr, tpr, _ = roc_curve(labels.numpy(), tied.numpy(), drop_intermediate=False)
    for far in (0.0, 0.34, 0.67, 1.0):
        assert tar_at_far(tied, labels, far) == pytest.approx(float(tpr[fpr <= far + 1e-12].max()))


def test_verification_accuracy_cross_validated_threshold() -> None:
    # separable scores: every fold's threshold separates them perfectly
    scores = torch.cat([torch.linspace(0.6, 1.0, 50), torch.linspace(-1.0, 0.4, 50)]).double()
    same = torch.cat([torch.ones(50), torch.zeros(50)]).bool()
    acc, std = verification_accuracy(scores, same)
    assert acc == 1.0 and std == 0.0
    # chance-level scores: cross-validation cannot be fooled into a high accuracy
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(2000, generator=g).double()
    labels = torch.rand(2000, generator=g) < 0.5
    acc, _ = verification_accuracy(noise, labels)
    assert 0.45 < acc < 0.56
    # against a brute-force reference with explicit folds
    a, b, same = _verification_data()
    s = torch.nn.functional.cosine_similarity(a, b).double()
    folds = torch.arange(len(s)) % 10
    expected = []
    for f in range(10):
        train, test = folds != f, folds == f
        cands = torch.cat([s[train].unique(), torch.tensor([10.0], dtype=torch.float64)])
        train_acc = torch.stack([((s[train] >= t) == same[train]).double().mean() for t in cands])
        best = cands[train_acc == train_acc.max()]
        # every threshold with the best training accuracy that lies between the same two scores acts alike
        lo = best.min()
        below = s[train][s[train] < lo]
        thr = (lo + below.max()) / 2 if below.numel() else lo - 1
        expected.append(float(((s[test] >= thr) == same[test]).double().mean()))
    assert verification_accuracy(s, same, folds)[0] == pytest.approx(np.mean(expected), abs=1e-12)
    metric = FaceVerification()
    metric.update(a, b, same, pair_index=torch.arange(len(s)))
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(np.mean(expected), abs=1e-12)
    assert 0.75 < float(out["accuracy"]) <= 1.0


def test_gaze_accuracy() -> None:
    metric = GazeAccuracy(num_classes=3)
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
    metric.update(logits, torch.tensor([0, 1, 0, 2]))
    metric.update(torch.tensor([1]), torch.tensor([1]))
    out = metric.compute()
    assert float(out["accuracy"]) == pytest.approx(3 / 5)
    torch.testing.assert_close(out["per_class"], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="target classes"):
        metric.update(torch.tensor([0]), torch.tensor([3]))


# 2-process gloo: every metric's reduced result equals the single-process result on all the data


@pytest.mark.ddp
def test_metrics_reduce_exactly_over_two_gloo_processes(tmp_path: Path) -> None:
    data, metrics = _all_metrics()
    for name, metric in metrics.items():
        metric.update(*data[name])
    single = _flat({name: metric.compute() for name, metric in metrics.items()})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    reduced = torch.load(out, weights_only=True)
    assert reduced.keys() == single.keys()
    for key in single:
        torch.testing.assert_close(reduced[key], single[key], rtol=1e-12, atol=1e-12, equal_nan=True, msg=key)
