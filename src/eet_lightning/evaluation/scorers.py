"""What reads AU intensities, identity and gaze off an image, independently of the EET being scored.

- `AUEstimator`: an AU-intensity regressor trained on a dataset's training split (the default AU scorer,
  in the role iARL plays in the paper); `OpenFaceAUs` reads OpenFace 2.0 CSV output instead.
- `IdentityNet` (trained on the training identities) or `FaceNetEmbedder` (facenet-pytorch
  InceptionResnetV1 with weights from a local file) give identity embeddings.
- `GazeClassifier`: gaze direction (3 classes), trained on the training split (Table VII).

The trained scorers are LightningModules trained with `train_scorer` on the pair batches of any
`EETDataModule` (both sides of a pair are used as single images); their checkpoints record their kind.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from eet_lightning.checkpoint_io import load_checkpoint
from eet_lightning.metrics import ICC31, AUIntensityMSE

SCORER_KINDS = ("au", "gaze", "identity")


class ScorerError(ValueError):
    """Bad input to a scorer (a file, a checkpoint, a CSV): one message naming it."""


# --------------------------------------------------------------------------------------------------
# trained scorers


class ScorerBackbone(nn.Module):
    """A plain CNN, unrelated to EET's networks: stride-2 conv-BN-ReLU levels down to 4x4, then global
    average pooling to a [B, 8w] feature."""

    def __init__(self, image_size: int, width: int = 16) -> None:
        super().__init__()
        if image_size < 16 or image_size & (image_size - 1):
            raise ValueError(f"scorer image_size must be a power of two >= 16, got {image_size}")
        layers, ch = [], 3
        levels = int(torch.log2(torch.tensor(image_size // 4)).item())
        for i in range(levels):
            out = width * min(2**i, 8)
            layers += [
                nn.Conv2d(ch, out, 3, 2, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, 1, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            ch = out
        self.layers = nn.Sequential(*layers)
        self.image_size = image_size
        self.out_features = ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if images.dim() != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(f"scorer input must be [B, 3, {s}, {s}] in [-1, 1], got {list(images.shape)}")
        return self.layers(images).mean((2, 3))


def _flatten_pairs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A pair batch {"a": sample, "b": sample} (or a single sample batch) -> one batch of single images."""
    if "a" in batch and "b" in batch:
        a, b = batch["a"], batch["b"]
        return {k: torch.cat([a[k], b[k]]) for k in a if k in b and isinstance(a[k], torch.Tensor)}
    return batch


class _Scorer(pl.LightningModule):
    kind = ""

    def __init__(self, image_size: int, width: int, lr: float, weight_decay: float, outputs: int) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"scorer lr must be positive, got {lr}")
        self.backbone = ScorerBackbone(image_size, width)
        self.head = nn.Linear(self.backbone.out_features, outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))

    def _cross_entropy_step(self, batch: dict[str, Any], label: str) -> torch.Tensor:
        """Training step of the classifiers: cross-entropy on the ``label`` of every image of the pairs."""
        x = _flatten_pairs(batch)
        if label not in x:
            raise ScorerError(f"the {self.kind} scorer needs a dataset with {label} labels")
        loss = F.cross_entropy(self(self._augment(x["image"])), x[label].long())
        self.log(f"train/{label}_ce", loss, prog_bar=True, batch_size=len(x[label]))
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["eet_scorer"] = self.kind

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        # small shifts and brightness changes, so that the scorer does not key on exact pixels that a
        # generator could reproduce without the expression
        if not self.training:
            return images
        shift = torch.randint(-2, 3, (2,)).tolist()
        images = torch.roll(images, shifts=shift, dims=(2, 3))
        gain = 1 + 0.1 * (torch.rand(images.shape[0], 1, 1, 1, device=images.device) - 0.5)
        return (images * gain).clamp(-1, 1)


class AUEstimator(_Scorer):
    """AU intensities [B, m] in [0, l] from an image; an independent network trained with MSE."""

    kind = "au"

    def __init__(
        self,
        aus: list[int],
        image_size: int = 64,
        max_intensity: int = 5,  # l
        width: int = 16,  # channels of the first level
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__(image_size, width, lr, weight_decay, len(aus))
        self.save_hyperparameters()
        self.aus = [int(a) for a in aus]
        self.val_icc = ICC31(len(self.aus))
        self.val_mse = AUIntensityMSE(len(self.aus))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.backbone(images))) * self.hparams.max_intensity

    @torch.no_grad()
    def predict_aus(self, images: torch.Tensor) -> torch.Tensor:
        return self(images.to(self.device, torch.float32))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = _flatten_pairs(batch)
        pred = self(self._augment(x["image"]))
        loss = F.mse_loss(pred / self.hparams.max_intensity, x["aus"] / self.hparams.max_intensity)
        self.log("train/au_mse", loss * self.hparams.max_intensity**2, prog_bar=True, batch_size=len(pred))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = _flatten_pairs(batch)
        pred = self(x["image"])
        self.val_icc.update(x["aus"], pred)
        self.val_mse.update(pred, x["aus"])

    def on_validation_epoch_end(self) -> None:
        self.log("val/icc", self.val_icc.compute()["mean"].float(), prog_bar=True)
        self.log("val/mse", self.val_mse.compute()["mean"].float())
        self.val_icc.reset()
        self.val_mse.reset()


class GazeClassifier(_Scorer):
    """Gaze direction logits [B, classes] (the renderer's and RaFD's 3: left, straight, right)."""

    kind = "gaze"

    def __init__(
        self,
        image_size: int = 64,
        num_classes: int = 3,
        width: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__(image_size, width, lr, weight_decay, num_classes)
        self.save_hyperparameters()

    @torch.no_grad()
    def predict_gaze(self, images: torch.Tensor) -> torch.Tensor:
        return self(images.to(self.device, torch.float32)).argmax(1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._cross_entropy_step(batch, "gaze")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x = _flatten_pairs(batch)
        acc = (self(x["image"]).argmax(1) == x["gaze"]).float().mean()
        self.log("val/gaze_acc", acc, prog_bar=True, batch_size=len(x["gaze"]))


class IdentityNet(_Scorer):
    """Identity classifier over the training subjects; its pooled feature, L2-normalized, is the
    embedding used for verification on unseen subjects."""

    kind = "identity"

    def __init__(
        self,
        num_identities: int,
        image_size: int = 64,
        width: int = 16,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__(image_size, width, lr, weight_decay, num_identities)
        self.save_hyperparameters()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(images.to(self.device, torch.float32)), dim=1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._cross_entropy_step(batch, "identity")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pass  # validation subjects are unseen: verification is measured by the identity protocol


SCORER_CLASSES: dict[str, type[_Scorer]] = {
    "au": AUEstimator,
    "gaze": GazeClassifier,
    "identity": IdentityNet,
}


@dataclass
class ScorerOptions:
    """Training settings of a scorer (the scorer's own config, apart from EET's)."""

    max_epochs: int = 4
    limit_train_batches: int | float | None = None
    width: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str = "scorer options") -> ScorerOptions:
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ScorerError(f"{where}: unknown option(s) {sorted(unknown)}; known: {sorted(asdict(cls()))}")
        opts = cls(**values)
        if opts.max_epochs < 1 or opts.width < 1:
            raise ScorerError(f"{where}: max_epochs and width must be >= 1")
        return opts


def train_scorer(
    kind: str,
    datamodule: Any,
    out_path: str | Path,
    options: ScorerOptions | None = None,
    progress: bool = False,
) -> Path:
    """Train the scorer of ``kind`` on the datamodule's training split and save it to ``out_path``."""
    if kind not in SCORER_KINDS:
        raise ScorerError(f"scorer kind must be one of {SCORER_KINDS}, got {kind!r}")
    opts = options or ScorerOptions()
    pl.seed_everything(opts.seed, workers=True, verbose=False)
    info = datamodule.info
    common = dict(
        image_size=datamodule.image_size, width=opts.width, lr=opts.lr, weight_decay=opts.weight_decay
    )
    if kind == "au":
        module: _Scorer = AUEstimator(aus=list(info.aus), max_intensity=info.max_intensity, **common)
    elif kind == "gaze":
        module = GazeClassifier(**common)
    else:
        module = IdentityNet(num_identities=info.num_identities, **common)
    out_path = Path(out_path)
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=opts.max_epochs,
        limit_train_batches=opts.limit_train_batches,
        limit_val_batches=0 if kind == "identity" else None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(out_path.parent),
    )
    trainer.fit(module, datamodule=datamodule)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    trainer.save_checkpoint(tmp)
    tmp.replace(out_path)  # never leave a half-written scorer behind
    return out_path


def load_scorer(path: str | Path, kind: str, map_location: str | torch.device = "cpu") -> _Scorer:
    """Load a scorer checkpoint written by `train_scorer`, checking that it is of ``kind``."""
    path = Path(path)
    what = {"au": "AU estimator", "gaze": "gaze classifier", "identity": "identity model"}[kind]
    try:  # tensors and plain values only: nothing in the file runs
        ckpt = load_checkpoint(path, what)
    except (OSError, ValueError) as err:
        raise ScorerError(str(err)) from None
    found = ckpt.get("eet_scorer") if isinstance(ckpt, dict) else None
    if found != kind:
        other = (
            f"a {found!r} scorer"
            if found
            else (
                f"a stage-{ckpt['eet_stage']} EET checkpoint"
                if isinstance(ckpt, dict) and "eet_stage" in ckpt
                else "not a scorer checkpoint"
            )
        )
        raise ScorerError(
            f"{what}: {path} is {other}; expected a {kind!r} scorer from 'eet-evaluate train-scorer'"
        )
    cls = SCORER_CLASSES[kind]
    module = cls(**ckpt["hyper_parameters"])
    module.load_state_dict(ckpt["state_dict"])
    return module.to(map_location).eval()


# --------------------------------------------------------------------------------------------------
# FaceNet identity embeddings from a local weights file


class FaceNetEmbedder(nn.Module):
    """facenet-pytorch InceptionResnetV1 embeddings [B, 512] (L2-normalized) from local weights.

    ``weights`` is a state dict file such as facenet-pytorch's ``20180402-114759-vggface2.pt``; nothing is
    downloaded. Images in [-1, 1] are resized to the network's 160 px (its own input standardization
    (x - 127.5) / 128 is within 0.4% of ours).
    """

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        if not weights:
            raise ScorerError(
                "identity scoring needs --face-weights FILE: a facenet-pytorch InceptionResnetV1 state dict "
                "(for instance 20180402-114759-vggface2.pt), or --identity-model from 'eet-evaluate train-scorer'"
            )
        path = Path(weights)
        if not path.is_file():
            raise ScorerError(f"--face-weights: no such file: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ScorerError(f"--face-weights: {path} is not a readable PyTorch state dict ({err})") from err
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ScorerError(f"--face-weights: {path} does not hold a state dict")
        net = InceptionResnetV1(pretrained=None, classify=False)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).splitlines()[0] if str(err) else ""
            raise ScorerError(
                f"--face-weights: {path} does not load into InceptionResnetV1 ({first[:200]})"
            ) from err
        self.net = net.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        if x.shape[-1] != 160:
            x = F.interpolate(x, size=(160, 160), mode="bilinear", align_corners=False)
        return F.normalize(self.net(x), dim=1)


# --------------------------------------------------------------------------------------------------
# OpenFace CSV import

NAME_COLUMNS = ("file", "filename", "input", "image", "path", "name")


def read_openface(
    path: str | Path, names: list[str], aus: list[int], skip_failed: bool = False
) -> dict[str, torch.Tensor]:
    """AU intensities that OpenFace 2.0 wrote for the exported images ``names`` (file names).

    ``path`` is either one CSV (FeatureExtraction -fdir output, whose 1-based ``frame`` column counts the
    folder's images in sorted order, or any CSV with a file-name column such as ``file``) or a folder of
    per-image CSVs (FaceLandmarkImg output, ``<image stem>.csv``). Columns ``AU{nn}_r`` for every AU in
    ``aus`` must be present; header spaces are ignored. Rows with ``success`` 0 count as missing unless
    ``skip_failed``, in which case those images are left out. Every other image of ``names`` must be covered.
    """
    path = Path(path)
    rows: dict[str, dict[str, str]] = {}
    if path.is_dir():
        for csv_path in sorted(path.glob("*.csv")):
            table = _read_csv(csv_path)
            if table:
                rows[csv_path.stem] = table[0]
        by_stem = {Path(n).stem: n for n in names}
        rows = {by_stem.get(k, k): v for k, v in rows.items()}
    elif path.is_file():
        table = _read_csv(path)
        if not table:
            raise ScorerError(f"--openface: {path} has no rows")
        header = set(table[0])
        name_col = next((c for c in NAME_COLUMNS if c in header), None)
        if name_col is not None:
            by_stem = {Path(n).stem: n for n in names}
            for row in table:
                stem = Path(row[name_col]).stem
                rows[by_stem.get(stem, stem)] = row
        elif "frame" in header:
            ordered = sorted(names)
            for row in table:
                try:
                    k = int(float(row["frame"])) - 1
                except ValueError as err:
                    raise ScorerError(f"--openface: {path}: bad frame number {row['frame']!r}") from err
                if not 0 <= k < len(ordered):
                    raise ScorerError(
                        f"--openface: {path}: frame {k + 1} is outside the {len(ordered)} exported images"
                    )
                rows[ordered[k]] = row
        else:
            raise ScorerError(
                f"--openface: {path} has neither a file-name column {NAME_COLUMNS} nor a 'frame' column"
            )
    else:
        raise ScorerError(f"--openface: no such file or folder: {path}")
    if not rows:
        raise ScorerError(f"--openface: {path} holds no OpenFace rows")
    columns = [f"AU{a:02d}_r" for a in aus]
    some = next(iter(rows.values()))
    missing_cols = [c for c in columns if c not in some]
    if missing_cols:
        raise ScorerError(f"--openface: {path} lacks the AU intensity column(s) {missing_cols}")
    out: dict[str, torch.Tensor] = {}
    failed: list[str] = []
    for name in names:
        row = rows.get(name)
        if row is None:
            continue
        if "success" in row and row["success"].strip() in ("0", "0.0"):
            failed.append(name)
            continue
        try:
            out[name] = torch.tensor([float(row[c]) for c in columns], dtype=torch.float32)
        except ValueError as err:
            raise ScorerError(f"--openface: {path}: a non-numeric AU value for {name} ({err})") from err
    absent = [n for n in names if n not in rows]
    if absent or (failed and not skip_failed):
        parts = []
        if absent:
            parts.append(f"{len(absent)} exported image(s) have no row (first: {', '.join(absent[:3])})")
        if failed and not skip_failed:
            parts.append(
                f"OpenFace failed on {len(failed)} (first: {', '.join(failed[:3])}; --openface-skip-failed leaves them out)"
            )
        raise ScorerError(
            f"--openface: {path} does not cover the {len(names)} exported images: " + "; ".join(parts)
        )
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [h.strip() for h in next(reader, [])]
            return [dict(zip(header, (v.strip() for v in row))) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ScorerError(f"--openface: cannot read {path} ({err})") from err
