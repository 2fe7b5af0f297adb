"""The paper's evaluation protocols (section IV-C2): seeded pair lists and their scoring.

A protocol draws pairs from a `FaceSet` (the test images of a dataset) and writes the pair list to disk
as CSV, one generated image per row, so that images another method produced for the same rows can be
scored beside EET's (``eet-evaluate --generated DIR``, files ``DIR/<protocol>/<row:06d>.png``).

- expression (Tables II-IV): each test image with ``partners`` random images of other subjects (DISFA 1,
  RaFD 5); both swapped images of a pair are generated, so a pair gives two rows (target, source).
  Scored by ICC(3,1) and MSE per AU between the AUs of the real source and of the generated target.
- identity (Tables V, VI): same- and different-subject pairs (real, other); ``other`` is replaced by
  the generated ``other`` with the expression of a random image of a third subject ("donor").
  Scored by face verification (accuracy, TAR@FAR=1%) between the real and the generated image.
- gaze (Table VII): each test image with ``partners`` images of other subjects with another gaze;
  scored by whether the generated target shows the source's gaze.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from eet_lightning.datamodules.base import EvaluationSettings
from eet_lightning.metrics import ICC31, AUIntensityMSE, FaceVerification, GazeAccuracy
from eet_lightning.pixels import to_model_range

PROTOCOLS = ("expression", "identity", "gaze")


class ProtocolError(ValueError):
    """Bad input to a protocol (a pair list, a folder of generated images): one message naming it."""


def protocol_settings(data: Any) -> dict[str, Any]:
    """The protocol sizes a DataModule declares (its class's ``evaluation_settings``), as the dict
    `build_pairs` takes; one that declares none (a DataModule of the user's own) gets the defaults."""
    return asdict(getattr(data, "evaluation_settings", None) or EvaluationSettings())


@dataclass
class FaceSet:
    """Test images a protocol draws from: labels in memory, images loaded by index on demand."""

    identity: np.ndarray  # int64 [N] subject
    names: list[str]  # [N] stable name of each image (its path for real data)
    load: Callable[[np.ndarray], torch.Tensor]  # indices -> images [n, 3, H, W] in [-1, 1]
    aus: np.ndarray | None = None  # float [N, m] labels where known
    gaze: np.ndarray | None = None  # int64 [N] where known
    truth: dict[tuple[int, int], Callable[[], np.ndarray]] = field(default_factory=dict)
    emotion: np.ndarray | None = None  # int64 [N] class of EMOTIONS where every image has one

    def __len__(self) -> int:
        return len(self.identity)

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        identity: np.ndarray,
        names: list[str],
        aus: np.ndarray | None = None,
        gaze: np.ndarray | None = None,
        emotion: np.ndarray | None = None,
    ) -> FaceSet:
        """From uint8 images [N, H, W, 3] in memory (the synthetic faces, small test sets)."""

        def load(idx: np.ndarray) -> torch.Tensor:
            return to_model_range(images[np.asarray(idx)])

        return cls(np.asarray(identity, dtype=np.int64), list(names), load, aus, gaze, emotion=emotion)

    @classmethod
    def from_labels(cls, labels: Any, load: Callable[[np.ndarray], torch.Tensor]) -> FaceSet:
        """From labels read without decoding an image (``identity`` [N], ``paths`` [N] and where known
        ``aus`` [N, m], ``gaze`` [N]; a manifest DataModule's ``test_labels()``) and a loader of images by
        row (its ``load_test_images``): the real-data protocols. Images are only read when scored."""
        identity = np.asarray(labels.identity, dtype=np.int64).reshape(-1)
        n = len(identity)
        if n == 0:
            raise ProtocolError("the test split has no images")
        names = [str(p) for p in labels.paths]
        aus = None if getattr(labels, "aus", None) is None else np.asarray(labels.aus, dtype=np.float32)
        gaze = None if getattr(labels, "gaze", None) is None else np.asarray(labels.gaze, dtype=np.int64)
        emotion = getattr(labels, "emotion", None)
        emotion = None if emotion is None else np.asarray(emotion, dtype=np.int64)
        for what, value in (("paths", names), ("aus", aus), ("gaze", gaze), ("emotion", emotion)):
            if value is not None and len(value) != n:
                raise ProtocolError(f"the test labels have {n} identities but {len(value)} {what}")
        return cls(identity, names, load, aus, gaze, emotion=emotion)

    @classmethod
    def from_samples(cls, dataset: Any) -> FaceSet:
        """From a map-style dataset whose items are single sample dicts (``image``, ``identity`` and where
        known ``aus``, ``gaze``, ``path``). This decodes every image once to collect the labels: a
        DataModule with ``test_labels()`` and ``load_test_images()`` uses `from_labels` instead."""
        meta = [dataset[i] for i in range(len(dataset))]
        if not meta or "image" not in meta[0] or "identity" not in meta[0]:
            raise ProtocolError("the test set must yield sample dicts with 'image' and 'identity'")
        identity = np.array([int(m["identity"]) for m in meta], dtype=np.int64)
        names = [str(m.get("path", f"image{i:06d}")) for i, m in enumerate(meta)]
        aus = np.stack([np.asarray(m["aus"], dtype=np.float32) for m in meta]) if "aus" in meta[0] else None
        gaze = np.array([int(m["gaze"]) for m in meta], dtype=np.int64) if "gaze" in meta[0] else None
        emotion = (
            np.array([int(m["emotion"]) for m in meta], dtype=np.int64) if "emotion" in meta[0] else None
        )

        def load(idx: np.ndarray) -> torch.Tensor:
            return torch.stack([torch.as_tensor(dataset[int(i)]["image"]).float() for i in idx])

        return cls(identity, names, load, aus, gaze, emotion=emotion)


# --------------------------------------------------------------------------------------------------
# pair lists


def _other_subject(
    rng: np.random.Generator, identity: np.ndarray, of: int, mask: np.ndarray | None = None
) -> int:
    ok = identity != identity[of]
    if mask is not None:
        ok &= mask
    candidates = np.flatnonzero(ok)
    if candidates.size == 0:
        raise ProtocolError(
            f"test image {of} has no partner of another subject{' with another gaze' if mask is not None else ''}"
        )
    return int(rng.choice(candidates))


def expression_pairs(identity: np.ndarray, partners: int, seed: int) -> dict[str, np.ndarray]:
    """Each image with ``partners`` random images of other subjects; both directions of every pair.
    Rows 2k and 2k+1 are pair k: (target a, source b) and (target b, source a)."""
    if len(np.unique(identity)) < 2:
        raise ProtocolError("the expression protocol needs test images of at least 2 subjects")
    rng = np.random.default_rng([seed, 11])
    a, b = [], []
    for i in range(len(identity)):
        for _ in range(partners):
            a.append(i)
            b.append(_other_subject(rng, identity, i))
    a, b = np.asarray(a), np.asarray(b)
    pair = np.repeat(np.arange(len(a)), 2)
    target = np.stack([a, b], 1).ravel()
    source = np.stack([b, a], 1).ravel()
    return {"row": np.arange(len(target)), "pair": pair, "target": target, "source": source}


def identity_pairs(identity: np.ndarray, per_kind: int, seed: int) -> dict[str, np.ndarray]:
    """``per_kind`` same-subject and as many different-subject pairs (real, target); the target is
    generated with the expression of a donor of a third subject."""
    rng = np.random.default_rng([seed, 12])
    subjects = np.unique(identity)
    if len(subjects) < 3:
        raise ProtocolError("the identity protocol needs test images of at least 3 subjects")
    by_subject = {int(s): np.flatnonzero(identity == s) for s in subjects}
    multi = [s for s, idx in by_subject.items() if len(idx) >= 2]
    if not multi:
        raise ProtocolError("the identity protocol needs a subject with at least 2 test images")
    real, target, same = [], [], []
    for _ in range(per_kind):
        s = multi[int(rng.integers(len(multi)))]
        i, j = rng.choice(by_subject[s], size=2, replace=False)
        real.append(int(i)), target.append(int(j)), same.append(1)
    for _ in range(per_kind):
        i = int(rng.integers(len(identity)))
        real.append(i), target.append(_other_subject(rng, identity, i)), same.append(0)
    donor = [_other_subject(rng, identity, t, (identity != identity[r])) for r, t in zip(real, target)]
    n = len(real)
    return {
        "row": np.arange(n),
        "real": np.asarray(real),
        "target": np.asarray(target),
        "source": np.asarray(donor),
        "same": np.asarray(same),
    }


def gaze_pairs(identity: np.ndarray, gaze: np.ndarray, partners: int, seed: int) -> dict[str, np.ndarray]:
    """Each image with ``partners`` images of other subjects whose gaze differs (one row each)."""
    rng = np.random.default_rng([seed, 13])
    target, source = [], []
    for i in range(len(identity)):
        for _ in range(partners):
            target.append(i)
            source.append(_other_subject(rng, identity, i, gaze != gaze[i]))
    return {"row": np.arange(len(target)), "target": np.asarray(target), "source": np.asarray(source)}


def build_pairs(protocol: str, faces: FaceSet, settings: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    for key in ("expression_partners", "identity_pairs"):
        if int(settings.get(key, 1)) < 1:
            raise ProtocolError(f"protocol setting {key} must be at least 1, got {settings[key]}")
    if int(seed) < 0:
        raise ProtocolError(f"the seed of the pair lists must be at least 0, got {seed}")
    if protocol == "expression":
        return expression_pairs(faces.identity, int(settings["expression_partners"]), seed)
    if protocol == "identity":
        return identity_pairs(faces.identity, int(settings["identity_pairs"]), seed)
    if protocol == "gaze":
        if faces.gaze is None:
            raise ProtocolError("the gaze protocol needs a dataset with gaze labels (RaFD, synthetic)")
        return gaze_pairs(faces.identity, faces.gaze, max(1, int(settings["gaze_partners"])), seed)
    raise ProtocolError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")


def write_pairs(path: Path, pairs: dict[str, np.ndarray], faces: FaceSet) -> Path:
    """The pair list as CSV: the index columns and the image names they point to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(pairs)
    named = [c for c in ("real", "target", "source") if c in pairs]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + [f"{c}_name" for c in named])
        for k in range(len(pairs["row"])):
            w.writerow([int(pairs[c][k]) for c in cols] + [faces.names[int(pairs[c][k])] for c in named])
    tmp.replace(path)
    return path


def read_pairs(path: Path) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ProtocolError(f"cannot read pair list {path} ({err})") from err
    if not rows:
        raise ProtocolError(f"pair list {path} is empty")
    cols = [c for c in rows[0] if not c.endswith("_name")]
    return {c: np.array([int(r[c]) for r in rows]) for c in cols}


def generated_path(folder: Path, protocol: str, row: int) -> Path:
    return folder / protocol / f"{row:06d}.png"


def check_generated(folder: Path, protocol: str, rows: np.ndarray) -> None:
    """Every row of the pair list must have its image in the folder; one error lists what is missing."""
    if not folder.is_dir():
        raise ProtocolError(f"--generated: no such folder: {folder}")
    missing = [int(r) for r in rows if not generated_path(folder, protocol, int(r)).is_file()]
    if missing:
        first = ", ".join(str(generated_path(folder, protocol, r).relative_to(folder)) for r in missing[:3])
        raise ProtocolError(
            f"--generated: {folder} lacks {len(missing)} of the {len(rows)} images of the {protocol} pair "
            f"list (first: {first})"
        )


def load_generated(folder: Path, protocol: str, rows: np.ndarray, size: int) -> torch.Tensor:
    images = []
    for r in rows:
        path = generated_path(folder, protocol, int(r))
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    raise ProtocolError(
                        f"--generated: {path} is {im.size[0]}x{im.size[1]}, expected {size}x{size}"
                    )
                images.append(np.asarray(im))
        except OSError as err:
            raise ProtocolError(f"--generated: cannot read {path} ({err})") from err
    # contiguous like the dataset's images, so the same pixels score the same from either
    return to_model_range(np.stack(images))


# --------------------------------------------------------------------------------------------------
# scoring

Generate = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]
"""(target images, source images, row numbers) -> target with the source's expression, [n, 3, H, W]."""


def source_labels(model: Any, faces: FaceSet) -> dict[str, np.ndarray] | None:
    """The labels of every face that a conditional model (GANimation: ``aus``, StarGAN: ``emotion``) is given
    as the source's expression, where ``faces`` has them all; None for a model that reads the source image
    (EET) or when the faces lack them."""
    out = {}
    for kind in getattr(model, "condition_labels", ()):
        values = getattr(faces, kind, None)
        if values is None:
            return None
        out[kind] = values
    return out or None


def model_generator(
    model: Any, pairs: dict[str, np.ndarray] | None = None, labels: dict[str, np.ndarray] | None = None
) -> Generate:
    """Any method's transfer for one direction (`TransferModel.swap`): the target with the source's
    expression. With ``labels`` (per face, `source_labels`) and the ``pairs`` the rows come from, a
    conditional model is given the source's labels instead of reading them from the source image."""
    source_of = None if labels is None or pairs is None else dict(zip(pairs["row"].tolist(), pairs["source"]))

    def generate(target: torch.Tensor, source: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        given = None
        if source_of is not None:
            idx = np.array([source_of[int(r)] for r in rows])
            given = {k: torch.from_numpy(np.asarray(v[idx])) for k, v in labels.items()}
        return model.swap(target.to(model.device), source.to(model.device), given).cpu()

    return generate


def folder_generator(folder: Path, protocol: str, size: int) -> Generate:
    def generate(target: torch.Tensor, source: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return load_generated(folder, protocol, rows, size)

    return generate


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    if int(batch_size) < 1:
        raise ProtocolError(f"the batch size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


class AUReader:
    """Reads AU intensities either with a network (``predict_aus(images)``) or from a table of values
    keyed by exported file name (OpenFace). Keys: ``real_<index>`` and ``<method>_<protocol>_<row>``."""

    def __init__(self, estimator: Any = None, table: dict[str, torch.Tensor] | None = None) -> None:
        if (estimator is None) == (table is None):
            raise ValueError("AUReader needs either an estimator or a table")
        self.estimator, self.table = estimator, table

    @property
    def needs_images(self) -> bool:
        return self.estimator is not None

    def __call__(self, images: torch.Tensor | None, keys: list[str]) -> torch.Tensor:
        if self.estimator is not None:
            return self.estimator.predict_aus(images).double().cpu()
        return torch.stack([self.table[k] for k in keys]).double()

    def available(self, keys: list[str]) -> np.ndarray:
        if self.table is None:
            return np.ones(len(keys), dtype=bool)
        return np.array([k in self.table for k in keys])


def export_key(method: str, protocol: str, row: int) -> str:
    return f"{method}_{protocol}_{row:06d}"


def score_expression(
    pairs: dict[str, np.ndarray],
    faces: FaceSet,
    methods: dict[str, Generate],
    reader: AUReader,
    num_aus: int,
    batch_size: int = 32,
    tick: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """ICC(3,1) and MSE per AU between the AUs (as ``reader`` reads them) of the real source and of each
    method's generated target; "unchanged target" (no transfer at all) is the floor a method must beat."""
    icc = {m: ICC31(num_aus) for m in [*methods, "unchanged_target"]}
    mse = {m: AUIntensityMSE(num_aus) for m in icc}
    label_icc = ICC31(num_aus) if faces.aus is not None and reader.needs_images else None
    label_mse = AUIntensityMSE(num_aus) if label_icc is not None else None
    for sl in _batches(len(pairs["row"]), batch_size):
        t_idx, s_idx, rows = pairs["target"][sl], pairs["source"][sl], pairs["row"][sl]
        needs = reader.needs_images
        target = faces.load(t_idx) if needs else None
        source = faces.load(s_idx) if needs else None
        keep = reader.available([f"real_{i:06d}" for i in s_idx])
        keep &= reader.available([f"real_{i:06d}" for i in t_idx])
        for m in methods:
            keep &= reader.available([export_key(m, "expression", int(r)) for r in rows])
        au_source = reader(source, [f"real_{i:06d}" for i in s_idx]) if keep.any() else None
        if au_source is None:
            tick(len(rows))
            continue
        k = torch.from_numpy(keep)
        au_target = reader(target, [f"real_{i:06d}" for i in t_idx])
        icc["unchanged_target"].update(au_source[k], au_target[k])
        mse["unchanged_target"].update(au_target[k], au_source[k])
        if label_icc is not None:
            labels = torch.from_numpy(faces.aus[s_idx]).double()
            label_icc.update(labels, au_source)
            label_mse.update(au_source, labels)
        for m, generate in methods.items():
            images = generate(target, source, rows) if needs else None
            au_gen = reader(images, [export_key(m, "expression", int(r)) for r in rows])
            icc[m].update(au_source[k], au_gen[k])
            mse[m].update(au_gen[k], au_source[k])
        tick(len(rows))
    out: dict[str, Any] = {"rows": int(len(pairs["row"])), "methods": {}}
    for m in icc:
        if float(mse[m].n) == 0:
            continue
        ci, ms = icc[m].compute(), mse[m].compute()
        out["methods"][m] = {
            "icc": ci["per_au"].reshape(-1).tolist(),
            "icc_mean": float(ci["mean"]),
            "mse": ms["per_au"].reshape(-1).tolist(),
            "mse_mean": float(ms["mean"]),
            "rows_scored": int(mse[m].n),
        }
    if label_icc is not None:  # how well the scorer itself reads the real images' labels
        ci, ms = label_icc.compute(), label_mse.compute()
        out["scorer_on_real"] = {
            "icc": ci["per_au"].reshape(-1).tolist(),
            "icc_mean": float(ci["mean"]),
            "mse": ms["per_au"].reshape(-1).tolist(),
            "mse_mean": float(ms["mean"]),
        }
    return out


def score_identity(
    pairs: dict[str, np.ndarray],
    faces: FaceSet,
    methods: dict[str, Generate],
    embedder: Any,
    batch_size: int = 32,
    tick: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Verification between each real image and the generated image of its partner; "real" uses the
    partner's real image (the upper bound of Tables V, VI)."""
    metrics = {m: FaceVerification() for m in ["real", *methods]}
    for sl in _batches(len(pairs["row"]), batch_size):
        rows = pairs["row"][sl]
        real = faces.load(pairs["real"][sl])
        target = faces.load(pairs["target"][sl])
        source = faces.load(pairs["source"][sl])
        same = torch.from_numpy(pairs["same"][sl]).bool()
        e_real = embedder.embed(real).cpu()
        metrics["real"].update(e_real, embedder.embed(target).cpu(), same, torch.from_numpy(rows))
        for m, generate in methods.items():
            metrics[m].update(
                e_real, embedder.embed(generate(target, source, rows)).cpu(), same, torch.from_numpy(rows)
            )
        tick(len(rows))
    return {
        "rows": int(len(pairs["row"])),
        "methods": {m: {k: float(v) for k, v in metric.compute().items()} for m, metric in metrics.items()},
    }


def score_gaze(
    pairs: dict[str, np.ndarray],
    faces: FaceSet,
    methods: dict[str, Generate],
    classifier: Any,
    batch_size: int = 32,
    tick: Callable[[int], None] = lambda n: None,
) -> dict[str, Any]:
    """Share of generated targets whose predicted gaze is the source's gaze label; "real" scores the
    classifier on the real source images (Table VII's "Real")."""
    if faces.gaze is None:
        raise ProtocolError("the gaze protocol needs gaze labels")
    metrics = {m: GazeAccuracy() for m in ["real", *methods]}
    for sl in _batches(len(pairs["row"]), batch_size):
        rows = pairs["row"][sl]
        target, source = faces.load(pairs["target"][sl]), faces.load(pairs["source"][sl])
        expected = torch.from_numpy(faces.gaze[pairs["source"][sl]])
        metrics["real"].update(classifier.predict_gaze(source).cpu(), expected)
        for m, generate in methods.items():
            metrics[m].update(classifier.predict_gaze(generate(target, source, rows)).cpu(), expected)
        tick(len(rows))
    return {
        "rows": int(len(pairs["row"])),
        "methods": {m: {"accuracy": float(metric.compute()["accuracy"])} for m, metric in metrics.items()},
    }
