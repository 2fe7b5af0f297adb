"""The disentanglement report: probes and the swap-change agreement against known answers, and the script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge, RidgeClassifier
from sklearn.metrics import r2_score

from eet_lightning.evaluation.disentanglement import (
    RIDGE_GRID,
    RidgeProbe,
    delta_agreement,
    group_folds,
    probe_identity,
    probe_regression,
    r2_per_column,
    select_ridge,
    split_by_identity,
    split_within_identity,
    swap_agreement,
)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "disentanglement.py"


def _script():
    spec = importlib.util.spec_from_file_location("disentanglement_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------- probes


@pytest.mark.parametrize(("n", "d"), [(60, 12), (20, 50)])  # the primal and the dual solve
def test_ridge_probe_matches_scikit_learn(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    x[:, 3] = 2.5  # a constant feature must not break the standardization
    y = rng.normal(size=(n, 3))
    probe = RidgeProbe.fit(x, y, ridge=0.05)
    xs = (x - probe.mean) / probe.scale
    reference = Ridge(alpha=probe.penalty).fit(xs, y)
    x_new = rng.normal(size=(7, d))
    np.testing.assert_allclose(
        probe.predict(x_new), reference.predict((x_new - probe.mean) / probe.scale), rtol=1e-7, atol=1e-9
    )
    # the relative penalty: 0.05 of the mean non-zero eigenvalue of the standardized Gram matrix
    assert probe.penalty == pytest.approx(0.05 * n * (d - 1) / min(n, d))


def test_r2_per_column_matches_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(30, 4))
    prediction = truth + rng.normal(scale=[0.1, 1, 3, 0], size=(30, 4))
    np.testing.assert_allclose(
        r2_per_column(prediction, truth), r2_score(truth, prediction, multioutput="raw_values")
    )
    truth[:, 2] = 1.0
    assert np.isnan(r2_per_column(prediction, truth)[2])  # R^2 is undefined for a constant target


def _labelled_faces(seed: int, people: int = 8, per_person: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    identity = np.repeat(np.arange(people) + 100, per_person)
    aus = rng.uniform(0, 5, size=(len(identity), 4))
    return identity, aus


def test_au_probe_on_a_linear_and_a_random_feature() -> None:
    identity, aus = _labelled_faces(2)
    rng = np.random.default_rng(3)
    linear = aus @ rng.normal(size=(4, 24)) + 1e-3 * rng.normal(size=(len(aus), 24))
    random = rng.normal(size=(len(aus), 8))
    train, test = split_by_identity(identity, seed=0)
    knows = probe_regression(linear, aus, train, test)
    blind = probe_regression(random, aus, train, test)
    assert knows["r2"].shape == (4,) and knows["r2"].min() > 0.99 and knows["r2_mean"] > 0.99
    assert abs(blind["r2_mean"]) < 0.1 and np.all(blind["r2"] < 0.1)
    # chance is predicting the training mean: at most 0, close to it
    assert blind["chance_r2_mean"] == knows["chance_r2_mean"]
    assert -0.1 < knows["chance_r2_mean"] <= 0
    assert knows["train_faces"] + knows["test_faces"] == len(aus)


def test_identity_probe_on_a_linear_and_a_random_feature() -> None:
    identity, _ = _labelled_faces(4, people=5, per_person=80)
    rng = np.random.default_rng(5)
    onehot = (identity[:, None] == np.unique(identity)[None]).astype(float)
    linear = onehot @ rng.normal(size=(5, 16)) + 0.05 * rng.normal(size=(len(identity), 16))
    random = rng.normal(size=(len(identity), 8))
    train, test = split_within_identity(identity, seed=0)
    knows = probe_identity(linear, identity, train, test)
    blind = probe_identity(random, identity, train, test)
    assert knows["accuracy"] == 1.0 and knows["chance"] == pytest.approx(0.2)
    assert abs(blind["accuracy"] - 0.2) < 0.08
    assert knows["majority"] == pytest.approx(0.2)  # 40 test faces of each of the 5 people
    # the same decisions as scikit-learn's one-vs-all ridge classifier on the standardized features
    classes = np.unique(identity)
    probe = RidgeProbe.fit(
        random[train], np.eye(5)[np.searchsorted(classes, identity[train])], blind["ridge"]
    )
    reference = RidgeClassifier(alpha=probe.penalty)
    reference.fit((random[train] - probe.mean) / probe.scale, identity[train])
    expected = (reference.predict((random[test] - probe.mean) / probe.scale) == identity[test]).mean()
    assert blind["accuracy"] == pytest.approx(expected)


def test_cross_validated_ridge() -> None:
    identity, aus = _labelled_faces(8, people=6, per_person=10)
    rng = np.random.default_rng(9)
    folds = group_folds(identity, 4, seed=0)
    assert len(folds) == 4
    for fit_rows, val_rows in folds:  # every row validated once, no person on both sides
        assert not set(identity[fit_rows]) & set(identity[val_rows])
    assert sorted(np.concatenate([v for _, v in folds])) == list(range(len(identity)))
    # the errors of the whole grid from one SVD per fold are those of fitting each ridge on each fold
    x = rng.normal(size=(len(aus), 90))
    x[:, :4] += aus
    grid = (1e-2, 1.0, 100.0)
    _, errors = select_ridge(x, aus, folds, grid)
    weight = 1 / aus.var(0)
    for g, ridge in enumerate(grid):
        expected = sum(
            (((RidgeProbe.fit(x[f], aus[f], ridge).predict(x[v]) - aus[v]) ** 2) * weight).sum()
            for f, v in folds
        )
        assert errors[g] == pytest.approx(expected, rel=1e-8)
    # a clean linear read-out wants the least shrinkage, a random wide feature the most
    linear = aus @ rng.normal(size=(4, 24))
    assert select_ridge(linear, aus, folds)[0] == RIDGE_GRID[0]
    assert select_ridge(rng.normal(size=(len(aus), 200)), aus, folds)[0] == RIDGE_GRID[-1]
    with pytest.raises(ValueError, match="at least 2 groups"):
        group_folds(np.zeros(5), 4, seed=0)


def test_splits() -> None:
    identity = np.array([7, 7, 7, 7, 3, 3, 3, 9, 9, 5])
    train, test = split_by_identity(identity, seed=0)
    assert not set(identity[train]) & set(identity[test])
    assert sorted(np.concatenate([train, test])) == list(range(len(identity)))
    assert len(set(identity[train])) == 2 and len(set(identity[test])) == 2
    train, test = split_within_identity(identity, seed=0)
    assert sorted(np.concatenate([train, test])) == list(range(len(identity)))
    assert set(identity[test]) == {7, 3, 9}  # 5 has one image: it can only be trained on
    assert set(identity[train]) == {7, 3, 9, 5}
    assert np.bincount(identity[test], minlength=10)[[3, 5, 7, 9]].tolist() == [
        1,
        0,
        2,
        1,
    ]  # floor(n/2) of each person's
    with pytest.raises(ValueError, match="at least 2 identities"):
        split_by_identity(np.zeros(5, dtype=int), seed=0)


# ------------------------------------------------------------------------------------- swap change


def test_delta_agreement_known_answers() -> None:
    rng = np.random.default_rng(6)
    true = torch.from_numpy(rng.normal(size=(4, 3, 6, 6)))
    region = torch.zeros(4, 6, 6, dtype=torch.bool)
    region[:, 1:4, 2:5] = True
    model = true.clone()
    model[1] = -true[1]  # opposite
    model[2] = 0  # no change
    model[3] = 2 * true[3]
    model[:, :, 0, 0] = 100.0  # outside the region: ignored
    cosine, size = delta_agreement(model, true, region)
    np.testing.assert_allclose(cosine, [1, -1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(size, [1, 1, 0, 2], atol=1e-12)
    # an orthogonal change, by hand: 1 in one channel against 1 in another
    a, b = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    a[0, 0, 0, 0], b[0, 1, 0, 0], b[0, 1, 1, 1] = 1, 1, 1
    cosine, size = delta_agreement(a, b, torch.ones(1, 2, 2, dtype=torch.bool))
    assert cosine[0] == 0 and size[0] == pytest.approx(1 / np.sqrt(2))
    # no region, or no true change in it: undefined
    cosine, size = delta_agreement(model[:1], torch.zeros_like(true[:1]), region[:1])
    assert np.isnan(cosine[0]) and np.isnan(size[0])
    with pytest.raises(ValueError, match="region"):
        delta_agreement(model, true, region[:, :3])


class _SwapsInOnlyTheSource:
    """A stand-in model whose swap is the source and whose reconstruction is the input."""

    device = torch.device("cpu")

    def transfer(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return b.clone(), a.clone()

    def reconstruct(self, a: torch.Tensor) -> torch.Tensor:
        return a.clone()


def test_swap_agreement_bookkeeping() -> None:
    rng = np.random.default_rng(7)
    target = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    source = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    aus_only = target.copy()
    aus_only[:, 8:12, 4:10] = source[:, 8:12, 4:10]  # the AU region: 24 pixels (fewer where equal)
    aus_only[4] = target[4]  # a pair whose AUs change nothing
    truth = aus_only.copy()
    truth[:, 0:3, 0:16] = source[:, 0:3, 0:16]  # a gaze change outside the region
    out = swap_agreement(_SwapsInOnlyTheSource(), target, source, truth, aus_only, batch_size=2)
    # in the AU region the source is the truth: the swap's change is the true change
    np.testing.assert_allclose(out["swapped"]["cosine"][:4], 1, atol=1e-6)
    np.testing.assert_allclose(out["swapped"]["size"][:4], 1, atol=1e-6)
    np.testing.assert_allclose(out["target_self"]["size"][:4], 0)
    np.testing.assert_allclose(out["target_self"]["cosine"][:4], 0)
    assert np.isnan(out["swapped"]["cosine"][4]) and out["region_pixels"][4] == 0
    assert 20 <= out["region_pixels"][:4].min() and out["region_pixels"].max() <= 24


# ------------------------------------------------------------------------------------- the script


def test_disentanglement_script_end_to_end(tiny_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report" / "disentanglement.json"
    args = ["--ckpt", str(tiny_run / "stage2" / "last.ckpt"), "--config", str(tiny_run / "config.yaml")]
    assert _script().main([*args, "--faces", "16", "--seed", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for line in ("f_f -> AUs", "f_r -> AUs", "f_r -> identity", "f_f -> identity", "swapped", "target_self"):
        assert line in printed
    result = json.loads(out.read_text())  # strict JSON: no NaN
    assert result["faces"] == 16 and result["pairs"] == 8 and result["ckpt"].endswith("last.ckpt")
    assert 2 <= result["identities"] <= 3  # the tiny config holds out 3 identities
    probes = result["probes"]
    assert set(probes) == {
        "au_free_to_aus",
        "au_related_to_aus",
        "au_related_to_identity",
        "au_free_to_identity",
    }
    for key in ("au_free_to_aus", "au_related_to_aus"):
        assert set(probes[key]["r2"]) == {f"AU{a}" for a in result["aus"]}
        assert probes[key]["train_faces"] + probes[key]["test_faces"] == 16
        assert probes[key]["chance_r2_mean"] <= 0
    for key in ("au_related_to_identity", "au_free_to_identity"):
        r = probes[key]
        assert r["chance"] == pytest.approx(1 / r["classes"]) and 0 <= r["accuracy"] <= 1
    swap = result["swap"]
    assert swap["pairs"] == 8 and len(swap["swapped"]["cosine"]) == 8
    for name in ("swapped", "target_self"):
        finite = [c for c in swap[name]["cosine"] if c is not None]
        assert len(finite) == swap["pairs_with_au_region"] > 0
        assert all(-1 <= c <= 1 for c in finite)
        assert swap[name]["size_mean"] > 0
    assert all(r["ridge"] in RIDGE_GRID for r in probes.values()) and result["ridge"] == "cross-validated"
    # a fixed ridge reaches every probe; the same seed gives the same faces and the same swap scores
    again = tmp_path / "again.json"
    assert _script().main([*args, "--faces", "16", "--seed", "2", "--ridge", "10", "--out", str(again)]) == 0
    fixed = json.loads(again.read_text())
    assert fixed["ridge"] == 10 and all(r["ridge"] == 10 for r in fixed["probes"].values())
    assert fixed["swap"] == swap


def test_disentanglement_script_bad_input(tiny_run: Path, tmp_path: Path, capsys) -> None:
    config = str(tiny_run / "config.yaml")
    ckpt = str(tiny_run / "stage2" / "last.ckpt")
    out = tmp_path / "out.json"
    missing = tmp_path / "missing.ckpt"
    assert _script().main(["--ckpt", str(missing), "--config", config, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("disentanglement: error:") and str(missing) in err and "Traceback" not in err
    assert _script().main(["--ckpt", ckpt, "--config", config, "--faces", "7"]) == 2
    assert "--faces must be an even number" in capsys.readouterr().err
    assert _script().main(["--ckpt", ckpt, "--config", config, "--ridge", "-1"]) == 2
    assert "--ridge must be 'cv' or a number > 0" in capsys.readouterr().err
    not_synthetic = tmp_path / "folder.yaml"
    not_synthetic.write_text("data:\n  class_path: eet_lightning.datamodules.FolderDataModule\n")
    assert _script().main(["--ckpt", ckpt, "--config", str(not_synthetic)]) == 2
    assert "does not train on the synthetic faces" in capsys.readouterr().err
    assert _script().main(["--ckpt", ckpt, "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    assert not out.exists()
