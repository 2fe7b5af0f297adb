"""`TransferModel`: what every method's trained model offers a user (load, transfer, reconstruct, read AUs).

The inference half of the method contract (the training half is `eet_lightning.methods.training`). A
method's model subclass builds its networks from a checkpoint (`from_checkpoint`) and implements the tensor
forms (`_transfer_tensors`, `_reconstruct_tensors`, `_predict_aus_tensors`); this base turns every kind of
image a user has into tensors and back.

Every method that takes images accepts

- float tensors in [-1, 1], one image [3, S, S] or a batch [B, 3, S, S];
- PIL images, uint8 numpy arrays [H, W, 3] (or [N, H, W, 3]) and paths to image files;
- a list of single images of the kinds above;

and returns images of the kind it was given (a path gives back a PIL image). Images other than tensors may
be any square size: they are resized to the model's S x S and come back at S x S. They must be aligned
face crops; for whole photos use `eet_lightning.data.faces.FaceAligner` or the `eet-transfer` command.

Nothing here imports Lightning or a training module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from eet_lightning.checkpoint_io import read_checkpoint, training_data
from eet_lightning.data.faces import as_rgb
from eet_lightning.data.images import read_rgb
from eet_lightning.pixels import to_model_range, to_uint8

# Graded transfer: 0 keeps the target's own expression, 1 is the swap, above 1 exaggerates it; far above,
# a generator is fed inputs it never saw and paints saturated noise (EET at strength 1e6 did), so it stops
# at twice the swap.
MAX_STRENGTH = 2.0

ImageInput = torch.Tensor | np.ndarray | Image.Image | str | Path | Sequence[Any]
Labels = dict[str, torch.Tensor]
_Restore = Callable[[torch.Tensor], Any]


class TransferModel(nn.Module):
    """Base of every method's inference model. Subclasses set the class attributes, build themselves in
    `from_checkpoint` and implement the three tensor forms."""

    method: ClassVar[str] = ""  # the checkpoint's ``eet_method``
    final_stage: ClassVar[int] = 1  # the stage whose checkpoint holds the trained model
    parts: ClassVar[tuple[str, ...]] = ()  # top-level weights kept for inference (and by eet-export)
    # parts of `parts` that a checkpoint or export may lack (written before they were kept); the model is
    # then built without them (``None``) and does without what they give
    optional_parts: ClassVar[tuple[str, ...]] = ()
    # label kinds `transfer` can take instead of reading the source ("aus", "emotion"); empty for EET,
    # which reads the expression from the source image itself
    condition_labels: ClassVar[tuple[str, ...]] = ()
    # whether `transfer` takes ``aus=`` (move only these AUs)
    selective: ClassVar[bool] = False

    image_size: int
    aus: list[int]
    max_intensity: int = 5
    # what the model was trained on (`eet_lightning.checkpoint_io.training_data`); set by the loaders
    training_data: dict[str, Any] = {"dataset": "unknown", "kind": "unknown"}  # noqa: RUF012

    # ------------------------------------------------------------------ loading

    @classmethod
    def load_from_checkpoint(
        cls, path: str | Path, map_location: str | torch.device | None = None, **options: Any
    ) -> TransferModel:
        """Build from the method's final checkpoint (or eet-export's weights), on ``map_location`` (CPU when
        None), in eval mode. The file is read with `read_checkpoint`: nothing in it can run code."""
        ckpt = read_checkpoint(
            path, cls.final_stage, f"{cls.__name__}.load_from_checkpoint", method=cls.method
        )
        model = cls.from_checkpoint(ckpt, map_location, **options)
        model.training_data = training_data(ckpt)
        return model

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], map_location: str | torch.device | None = None, **options: Any
    ) -> TransferModel:
        """Build from a checkpoint dict already read (``hyper_parameters``, ``state_dict``)."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_checkpoint")

    @classmethod
    def checked_hparams(
        cls, ckpt: dict[str, Any], options: dict[str, Any], required: Sequence[str]
    ) -> dict[str, Any]:
        """The checkpoint's hyper-parameters, holding ``required``, for a model with no fused or compiled
        form: ``options`` may hold ``fuse`` (accepted for symmetry with EET, nothing to fold) and not
        ``compile=True``. ValueError naming the class otherwise."""
        where = f"{cls.__name__}.from_checkpoint"
        unknown = sorted(set(options) - {"fuse", "compile"})
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}")
        if options.get("compile"):
            raise ValueError(f"{where}: compile=True is not available for {cls.method or cls.__name__}")
        hp = ckpt["hyper_parameters"]
        missing = [k for k in required if k not in hp]
        if missing:
            raise ValueError(f"{where}: the checkpoint's hyper-parameters lack {missing}")
        return hp

    def _load_parts(self, ckpt: dict[str, Any], map_location: str | torch.device | None) -> None:
        """Load the checkpoint's weights of `parts` (strictly), move to ``map_location``, eval mode."""
        present = {k.split(".")[0] for k in ckpt["state_dict"]}
        for name in self.optional_parts:
            if name not in present:
                setattr(self, name, None)
        state = {k: v for k, v in ckpt["state_dict"].items() if k.split(".")[0] in self.parts}
        self.load_state_dict(state, strict=True)
        if map_location is not None:
            self.to(map_location)
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ what subclasses implement

    def _transfer_tensors(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        aus: list[int] | None,
        strength: float,
        labels_a: Labels | None,
        labels_b: Labels | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(A with B's expression, B with A's) on prepared tensors [B, 3, S, S] in [-1, 1]. ``labels_x``:
        the side's labels (keys of `condition_labels`) to condition on instead of reading its image."""
        raise NotImplementedError

    def _reconstruct_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """Each image regenerated with its own expression."""
        raise NotImplementedError

    def _predict_aus_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """AU intensities in [0, l], [B, m], as the model reads them."""
        raise NotImplementedError(f"{type(self).__name__} does not read AU intensities")

    @property
    def reads_aus(self) -> bool:
        """Whether `predict_aus` works (the subclass implements `_predict_aus_tensors`)."""
        return type(self)._predict_aus_tensors is not TransferModel._predict_aus_tensors

    # the network whose features `identity_features` returns, for reports (None: the model has none)
    identity_source: ClassVar[str | None] = None

    def _identity_tensors(self, x: torch.Tensor) -> torch.Tensor | None:
        """Identity-bearing features [B, D] of prepared images, or None when the model has no network that
        tells people apart (the base's answer)."""
        return None

    def _read_tensors(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(`_predict_aus_tensors` or None, `_identity_tensors`) of prepared images; a subclass whose two
        share a network overrides it to run that network once."""
        return (self._predict_aus_tensors(x) if self.reads_aus else None), self._identity_tensors(x)

    @torch.no_grad()
    def read_faces(self, images: ImageInput) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`predict_aus` and `identity_features` of the same images in one call, on the CPU: (AU intensities
        [B, m] or None for a model that reads none, unit identity features [B, D] or None)."""
        x, _ = self._prepare(images, "images")
        aus, feats = self._read_tensors(x)
        if feats is not None:
            feats = torch.nn.functional.normalize(feats.float().flatten(1), dim=1).cpu()
        return (None if aus is None else aus.float().cpu()), feats

    @torch.no_grad()
    def identity_features(self, images: ImageInput) -> torch.Tensor | None:
        """L2-normalised identity features [B, D] (on the CPU) of images of any accepted kind, from the
        model's own identity network (`identity_source`), or None when it has none: the cosine similarity of
        two rows says how alike the model finds the two faces' identities."""
        x, _ = self._prepare(images, "images")
        feats = self._identity_tensors(x)
        if feats is None:
            return None
        return torch.nn.functional.normalize(feats.float().flatten(1), dim=1).cpu()

    # ------------------------------------------------------------------ what users call

    @torch.no_grad()
    def transfer(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        aus: Iterable[int] | None = None,
        strength: float = 1.0,
        labels_a: Labels | None = None,
        labels_b: Labels | None = None,
    ) -> tuple[Any, Any]:
        """(A with B's expression, B with A's expression), each of the kind its input was given as.

        Args:
            image_a, image_b: as many images on each side (see the module docstring for the kinds).
            aus: move only these AUs' expression (selective transfer; models with ``selective``). None: all.
            strength: graded transfer: 0 keeps the own expression, 1 is the plain swap, above 1 exaggerates
                (up to ``MAX_STRENGTH``).
            labels_a, labels_b: for a conditional model (GANimation, StarGAN), each side's labels
                (``{"aus": [B, m]}`` intensities in [0, l], ``{"emotion": [B]}`` class indices) to use as
                the condition instead of what the model reads on that side's image.
        """
        self.check_transfer_options(aus, strength)
        strength = float(strength)
        selected = None if aus is None else self.check_aus(aus)
        a, b, restore_a, restore_b = self._prepare_pair(image_a, image_b)
        la = self.check_labels(labels_a, a.shape[0], "labels_a")
        lb = self.check_labels(labels_b, b.shape[0], "labels_b")
        out_a, out_b = self._transfer_tensors(a, b, selected, strength, la, lb)
        return restore_a(out_a), restore_b(out_b)

    def check_transfer_options(self, aus: Iterable[int] | None, strength: float) -> None:
        """ValueError naming the problem when `transfer` cannot take ``aus`` and ``strength``."""
        check_strength(strength)
        if aus is None:
            return
        if not self.selective:
            shown = list(aus) if isinstance(aus, Iterable) and not isinstance(aus, (str, bytes)) else aus
            raise ValueError(
                f"selective transfer (aus={shown}) is not available for {type(self).__name__} "
                f"(method {self.method!r}); transfer all AUs (aus=None) and use strength instead"
            )
        self.check_aus(aus)

    @torch.no_grad()
    def swap(
        self, target: torch.Tensor, source: torch.Tensor, source_labels: Labels | None = None
    ) -> torch.Tensor:
        """One direction on tensors: ``target`` [B, 3, S, S] in [-1, 1] with the expression of ``source``
        (or of ``source_labels`` for a conditional model), on the model's device, clamped to [-1, 1]."""
        a, b = self._check(target, "target"), self._check(source, "source")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"target and source must hold as many images, got {a.shape[0]} and {b.shape[0]}")
        lb = self.check_labels(source_labels, b.shape[0], "source_labels")
        out, _ = self._transfer_tensors(a, b, None, 1.0, None, lb)
        return out.clamp(-1, 1)

    @torch.no_grad()
    def reconstruct(self, images: ImageInput) -> Any:
        """Each image regenerated with its own expression, of the kind it was given as."""
        x, restore = self._prepare(images, "images")
        return restore(self._reconstruct_tensors(x))

    @torch.no_grad()
    def predict_aus(self, images: ImageInput) -> torch.Tensor:
        """AU intensities in [0, l] as the model reads them, [B, m] in the order of ``self.aus`` ([m] for
        one image). On the input tensor's device; on the CPU for PIL images, arrays and paths."""
        x, _ = self._prepare(images, "images")
        au = self._predict_aus_tensors(x)
        device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        return (au[0] if _is_single(images) else au).to(device)

    # ------------------------------------------------------------------ inputs and outputs

    def check_aus(self, aus: Iterable[int]) -> list[int]:
        """AU numbers as ints, each one of ``self.aus``; ValueError naming the first that is not."""
        if isinstance(aus, (str, bytes)) or not isinstance(aus, Iterable):
            raise ValueError(f"aus must be a list of AU numbers such as [6, 12], got {aus!r}")
        out = []
        for au in aus:
            if isinstance(au, bool) or not isinstance(au, (int, np.integer)):
                raise ValueError(f"aus must be AU numbers (integers) such as [6, 12], got {au!r}")
            if int(au) not in self.aus:
                raise ValueError(f"AU {int(au)} is not one of this model's AUs {self.aus}")
            out.append(int(au))
        return out

    def check_labels(self, labels: Labels | None, count: int, name: str) -> Labels | None:
        """Labels for a conditional transfer: a dict of known kinds, each one value per image, finite."""
        if labels is None:
            return None
        if not self.condition_labels:
            raise ValueError(
                f"{name}: {type(self).__name__} reads the expression from the images and takes no labels"
            )
        if not isinstance(labels, dict) or not labels:
            raise ValueError(f"{name} must be a dict such as {{{self.condition_labels[0]!r}: tensor}}")
        out = {}
        for key, value in labels.items():
            if key not in self.condition_labels:
                raise ValueError(
                    f"{name}: {key!r} is not a condition of this model ({list(self.condition_labels)})"
                )
            t = torch.as_tensor(value)
            if t.shape[:1] != (count,):
                raise ValueError(f"{name}[{key!r}]: one value per image ({count}), got shape {list(t.shape)}")
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise ValueError(f"{name}[{key!r}] holds NaN or infinite values")
            out[key] = t.to(self.device)
        return out

    def _check(self, images: torch.Tensor, name: str) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        s = self.image_size
        if images.dim() != 4 or images.shape[1:] != (3, s, s):
            raise ValueError(
                f"{name} must be [B, 3, {s}, {s}] or [3, {s}, {s}] in [-1, 1], got {list(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"{name} must be a float tensor in [-1, 1], got dtype {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.01 or hi > 1.01:
            raise ValueError(f"{name} must hold values in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return images.to(self.device, torch.float32)

    def _square(self, image: np.ndarray, name: str) -> np.ndarray:
        s = self.image_size
        h, w = image.shape[:2]
        if (h, w) == (s, s):
            return image
        if h != w:
            raise ValueError(
                f"{name} must be a square aligned face crop ({s} x {s} for this model), got {w} x {h}; "
                "align photos with eet_lightning.data.faces.FaceAligner or use eet-transfer"
            )
        return cv2.resize(image, (s, s), interpolation=cv2.INTER_AREA if h > s else cv2.INTER_CUBIC)

    def _one_image(self, image: Any, name: str) -> tuple[np.ndarray, str]:
        """A single non-tensor image -> (uint8 [S, S, 3], kind it came as)."""
        if isinstance(image, (str, Path)):
            return self._square(read_rgb(image), name), "pil"
        if isinstance(image, Image.Image):
            return self._square(np.asarray(image.convert("RGB"), dtype=np.uint8), name), "pil"
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise ValueError(
                    f"{name}: numpy images must be uint8 [H, W, 3], got dtype {image.dtype} "
                    "(give float images as tensors in [-1, 1])"
                )
            try:
                rgb = as_rgb(image)
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
            return self._square(rgb, name), "array"
        raise ValueError(
            f"{name} must be a tensor in [-1, 1], a PIL image, a uint8 numpy array, a path or a list of "
            f"these, got {type(image).__name__}"
        )

    def _prepare(self, images: ImageInput, name: str) -> tuple[torch.Tensor, _Restore]:
        """Any accepted input -> ([B, 3, S, S] on the model's device, function giving outputs its kind)."""
        if isinstance(images, torch.Tensor):
            x = self._check(images, name)
            single, device = images.dim() == 3, images.device
            return x, lambda out: (out[0] if single else out).to(device)
        if isinstance(images, np.ndarray) and images.ndim == 4:
            if images.dtype != np.uint8 or images.shape[-1] != 3:
                raise ValueError(
                    f"{name}: a batch of images must be uint8 [N, H, W, 3], got {images.dtype} "
                    f"{list(images.shape)}"
                )
            arr = np.stack([self._square(im, name) for im in images])
            return to_model_range(arr, self.device), lambda out: to_uint8(out)
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError(f"{name} is an empty list")
            if any(isinstance(im, torch.Tensor) for im in images):
                if not all(isinstance(im, torch.Tensor) for im in images):
                    raise ValueError(f"{name}: a list may not mix tensors with other kinds of images")
                tensors = [self._check(im, f"{name}[{k}]") for k, im in enumerate(images)]
                if any(t.shape[0] != 1 for t in tensors):
                    raise ValueError(f"{name}: a list may hold single images only, not batches")
                devices = [im.device for im in images]
                return torch.cat(tensors), lambda out: [o.to(d) for o, d in zip(out, devices)]
            parts = [self._one_image(im, f"{name}[{k}]") for k, im in enumerate(images)]
            x = to_model_range(np.stack([p[0] for p in parts]), self.device)
            kinds = [p[1] for p in parts]
            return x, lambda out: [_as_kind(t, k) for t, k in zip(to_uint8(out), kinds)]
        arr, kind = self._one_image(images, name)
        return to_model_range(arr[None], self.device), lambda out: _as_kind(to_uint8(out)[0], kind)

    def _prepare_pair(
        self, image_a: ImageInput, image_b: ImageInput
    ) -> tuple[torch.Tensor, torch.Tensor, _Restore, _Restore]:
        """Both sides of a transfer prepared (`_prepare`); as many images on each side."""
        a, restore_a = self._prepare(image_a, "image_a")
        b, restore_b = self._prepare(image_b, "image_b")
        if a.shape[0] != b.shape[0]:
            raise ValueError(
                f"image_a and image_b must hold as many images, got {a.shape[0]} and {b.shape[0]}"
            )
        return a, b, restore_a, restore_b


def check_strength(strength: Any) -> float:
    """A graded-transfer strength: a finite number in [0, MAX_STRENGTH]."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
        raise ValueError(f"strength must be a finite number, got {strength!r}")
    if not 0 <= strength <= MAX_STRENGTH:
        raise ValueError(
            f"strength must be from 0 (the target's own expression) to {MAX_STRENGTH:g} (1: the source's, "
            f"above 1 exaggerated), got {strength}"
        )
    return float(strength)


def _is_single(images: ImageInput) -> bool:
    """Whether an input is one image (as opposed to a batch or a list)."""
    if isinstance(images, torch.Tensor):
        return images.dim() == 3
    if isinstance(images, np.ndarray):
        return images.ndim != 4
    return not isinstance(images, (list, tuple))


def _as_kind(image: np.ndarray, kind: str) -> Image.Image | np.ndarray:
    return Image.fromarray(image) if kind == "pil" else image
