"""Scorers, pair lists and image errors of `eet_lightning.evaluation` (fast: no trained EET)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1

from eet_lightning.evaluation import protocols as P
from eet_lightning.evaluation.scorers import FaceNetEmbedder, ScorerError, load_scorer, read_openface
from eet_lightning.evaluation.synthetic import PSNR_CAP, image_errors


def test_facenet_embedder_loads_local_weights_and_rejects_bad_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=False).eval()
    state = net.state_dict()
    # released files carry the classifier of the training identities; it is dropped on load
    state["logits.weight"], state["logits.bias"] = torch.zeros(5, 512), torch.zeros(5)
    torch.save(state, tmp_path / "facenet.pt")
    embedder = FaceNetEmbedder(tmp_path / "facenet.pt")
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    emb = embedder.embed(images)
    assert emb.shape == (2, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    with torch.no_grad():
        expected = net(torch.nn.functional.interpolate(images, size=(160, 160), mode="bilinear"))
    torch.testing.assert_close(emb, torch.nn.functional.normalize(expected, dim=1), atol=1e-5, rtol=1e-4)
    with pytest.raises(ScorerError, match="needs --face-weights"):
        FaceNetEmbedder(None)
    with pytest.raises(ScorerError, match="no such file"):
        FaceNetEmbedder(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ScorerError, match="not a readable"):
        FaceNetEmbedder(tmp_path / "garbage.pt")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ScorerError, match="does not load into InceptionResnetV1"):
        FaceNetEmbedder(tmp_path / "other.pt")


def _openface_csv(path: Path, frames: int, success: list[int] | None = None, aus=(1, 2, 4)) -> None:
    header = ["frame", " face_id", " timestamp", " confidence", " success"] + [f" AU{a:02d}_r" for a in aus]
    lines = [",".join(header)]
    for f in range(frames):
        ok = 1 if success is None else success[f]
        lines.append(
            ", ".join(
                [str(f + 1), "0", f"{f * 0.04:.3f}", "0.98", str(ok)] + [f"{f + a / 10:.2f}" for a in aus]
            )
        )
    path.write_text("\n".join(lines) + "\n")


def test_openface_csv_import(tmp_path: Path) -> None:
    names = ["real_000002.png", "eet_expression_000000.png", "real_000001.png"]
    csv_path = tmp_path / "of.csv"
    _openface_csv(csv_path, 3)
    table = read_openface(csv_path, names, [1, 4])
    # FeatureExtraction -fdir numbers the sorted files: eet_..., real_000001, real_000002
    torch.testing.assert_close(table["eet_expression_000000.png"], torch.tensor([0.1, 0.4]))
    torch.testing.assert_close(table["real_000002.png"], torch.tensor([2.1, 2.4]))
    with pytest.raises(ScorerError, match=r"lacks the AU intensity column\(s\) \['AU12_r'\]"):
        read_openface(csv_path, names, [1, 12])
    _openface_csv(csv_path, 2)
    with pytest.raises(ScorerError, match="does not cover the 3 exported images: 1 exported image"):
        read_openface(csv_path, names, [1, 4])
    _openface_csv(csv_path, 3, success=[1, 0, 1])
    with pytest.raises(ScorerError, match="OpenFace failed on 1"):
        read_openface(csv_path, names, [1, 4])
    assert set(read_openface(csv_path, names, [1, 4], skip_failed=True)) == {names[0], names[1]}
    # a file-name column instead of frames, and a folder of per-image CSVs
    (tmp_path / "named.csv").write_text(
        "file,AU01_r\n" + "\n".join(f"x/{n},{i}" for i, n in enumerate(names)) + "\n"
    )
    assert float(read_openface(tmp_path / "named.csv", names, [1])["real_000001.png"]) == 2.0
    folder = tmp_path / "per_image"
    folder.mkdir()
    for i, n in enumerate(names):
        (folder / f"{Path(n).stem}.csv").write_text(f"face, AU01_r\n0, {i}\n")
    assert float(read_openface(folder, names, [1])["eet_expression_000000.png"]) == 1.0


def test_load_scorer_checks_the_kind(tmp_path: Path) -> None:
    torch.save({"eet_stage": 2, "state_dict": {}}, tmp_path / "stage2.ckpt")
    with pytest.raises(ScorerError, match="stage-2 EET checkpoint; expected a 'au' scorer"):
        load_scorer(tmp_path / "stage2.ckpt", "au")
    torch.save({"eet_scorer": "gaze", "state_dict": {}}, tmp_path / "gaze.ckpt")
    with pytest.raises(ScorerError, match="is a 'gaze' scorer"):
        load_scorer(tmp_path / "gaze.ckpt", "identity")
    with pytest.raises(ScorerError, match="no such checkpoint"):
        load_scorer(tmp_path / "none.ckpt", "au")


def test_pair_lists_follow_the_protocols(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    identity = np.repeat(np.arange(7), 12)  # 7 test subjects, as RaFD
    gaze = rng.integers(0, 3, size=len(identity))
    expr = P.expression_pairs(identity, partners=5, seed=3)
    assert len(expr["row"]) == 2 * 5 * len(identity)  # both swapped images of each of 5 x 84 pairs
    assert (identity[expr["target"]] != identity[expr["source"]]).all()
    np.testing.assert_array_equal(expr["target"][0::2], expr["source"][1::2])
    np.testing.assert_array_equal(np.repeat(np.arange(len(identity)), 5), expr["target"][0::2])
    again = P.expression_pairs(identity, partners=5, seed=3)
    np.testing.assert_array_equal(expr["source"], again["source"])
    assert not np.array_equal(expr["source"], P.expression_pairs(identity, 5, seed=4)["source"])
    ident = P.identity_pairs(identity, per_kind=50, seed=0)
    same = ident["same"].astype(bool)
    assert same.sum() == 50 and (~same).sum() == 50
    assert (identity[ident["real"]][same] == identity[ident["target"]][same]).all()
    assert (ident["real"][same] != ident["target"][same]).all()
    assert (identity[ident["real"]][~same] != identity[ident["target"]][~same]).all()
    donors = identity[ident["source"]]
    assert (donors != identity[ident["target"]]).all() and (donors != identity[ident["real"]]).all()
    gz = P.gaze_pairs(identity, gaze, partners=5, seed=0)
    assert (gaze[gz["target"]] != gaze[gz["source"]]).all()
    assert (identity[gz["target"]] != identity[gz["source"]]).all()
    faces = P.FaceSet.from_arrays(
        np.zeros((len(identity), 8, 8, 3), np.uint8), identity, [f"img{i}.png" for i in range(len(identity))]
    )
    path = P.write_pairs(tmp_path / "pairs" / "gaze.csv", gz, faces)
    back = P.read_pairs(path)
    for key in gz:
        np.testing.assert_array_equal(back[key], gz[key])
    assert "target_name" in path.read_text().splitlines()[0]
    with pytest.raises(P.ProtocolError, match="at least 2 subjects"):
        P.expression_pairs(np.zeros(5, dtype=int), 1, 0)
    with pytest.raises(P.ProtocolError, match="lacks 3 of the 3 images of the gaze pair list"):
        (tmp_path / "gen").mkdir()
        P.check_generated(tmp_path / "gen", "gaze", np.arange(3))


def test_image_errors_known_answers() -> None:
    truth = torch.zeros(2, 3, 32, 32)
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[:, 8:16, 8:24] = True
    same = image_errors(truth.clone(), truth, mask)
    assert float(same["whole_l1"].max()) == 0 and float(same["au_region_psnr"].min()) == PSNR_CAP
    torch.testing.assert_close(same["whole_ssim"], torch.ones(2))
    shifted = truth.clone()
    shifted[:, :, 8:16, 8:24] += 0.2  # 0.1 in [0, 1] units, only inside the region
    err = image_errors(shifted, truth, mask)
    torch.testing.assert_close(err["au_region_l1"], torch.full((2,), 0.1))
    torch.testing.assert_close(err["whole_l1"], torch.full((2,), 0.1 * 128 / 1024))
    torch.testing.assert_close(err["au_region_psnr"], torch.full((2,), 20.0))
    assert float(err["au_region_ssim"].max()) < float(err["whole_ssim"].min()) < 1
