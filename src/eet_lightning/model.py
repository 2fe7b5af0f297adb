"""`EETModel`: a trained EET as a user meets it (load a stage-2 checkpoint, swap expressions).

Every method that takes images accepts

- float tensors in [-1, 1], one image [3, S, S] or a batch [B, 3, S, S];
- PIL images, uint8 numpy arrays [H, W, 3] (or [N, H, W, 3]) and paths to image files;
- a list of single images of the kinds above;

and returns images of the kind it was given (a path gives back a PIL image). Images other than tensors may
be any square size: they are resized to the model's S x S and come back at S x S. They must be aligned
face crops; for whole photos use `eet_lightning.data.faces.FaceAligner` or the `eet-transfer` command.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from eet_lightning.aus import DISFA_AUS
from eet_lightning.checkpoint_io import read_checkpoint
from eet_lightning.data.faces import as_rgb
from eet_lightning.data.images import read_rgb
from eet_lightning.nets import ArchConfig, AUFreeEncoder, AURelatedEncoder, FeatureEncoder, Generator
from eet_lightning.nets.fuse import fuse_for_inference
from eet_lightning.nets.kernels.prepack import PrepackedWeight
from eet_lightning.pixels import to_model_range, to_uint8
from eet_lightning.variants import variant_flags

# Graded transfer: 0 keeps the target's own expression, 1 is the swap, above 1 exaggerates it; far above,
# G is fed features it never saw and paints saturated noise (strength 1e6 did), so it stops at twice the swap.
MAX_STRENGTH = 2.0
INFERENCE_PARTS = ("encoder", "au_free_encoder", "au_related_encoder", "generator")

ImageInput = torch.Tensor | np.ndarray | Image.Image | str | Path | Sequence[Any]
_Restore = Callable[[torch.Tensor], Any]


class EETModel(nn.Module):
    """E, Ef, Er and G of a trained EET; nothing of the discriminators or of training.

    >>> model = EETModel.load_from_checkpoint("runs/synthetic/stage2/last.ckpt")   # doctest: +SKIP
    >>> a_with_b, b_with_a = model.transfer(image_a, image_b)                      # doctest: +SKIP
    >>> mouth_only, _ = model.transfer(image_a, image_b, aus=[12, 25, 26])         # doctest: +SKIP
    >>> half_way, _ = model.transfer(image_a, image_b, strength=0.5)               # doctest: +SKIP
    """

    def __init__(
        self,
        arch: ArchConfig | dict[str, Any],
        aus: Sequence[int] = DISFA_AUS,
        variant: str = "eet",  # the Table II variant the checkpoint was trained as (for messages)
    ) -> None:
        super().__init__()
        self.arch = ArchConfig.coerce(arch)
        self.aus = [int(a) for a in aus]
        self.variant = variant
        self.encoder = FeatureEncoder(self.arch)
        self.au_free_encoder = AUFreeEncoder(self.arch)
        self.au_related_encoder = AURelatedEncoder(self.arch)
        self.generator = Generator(self.arch)

    @classmethod
    def load_from_checkpoint(
        cls,
        path: str | Path,
        map_location: str | torch.device | None = None,
        fuse: bool = True,
        compile: bool = False,  # noqa: A002  (torch.compile, see compile_for_inference)
    ) -> EETModel:
        """Build from a stage-2 checkpoint alone (it is self-contained), move it to ``map_location`` (CPU
        when None) and switch to eval mode.

        ``fuse`` (default) rewrites the networks into their inference form (`eet_lightning.nets.fuse`:
        spectral and batch norm folded into the convolutions; on CPU, convolution weights kept in
        oneDNN's layout after the first call, which holds a second copy of them): the same outputs up
        to float rounding, faster. The checkpoint file is not touched;
        ``fuse=False`` keeps the training form (e.g. to read the weights as they were trained).
        ``compile``: `compile_for_inference` as well (needs ``fuse``).
        """
        ckpt = read_checkpoint(path, 2, "EETModel.load_from_checkpoint")
        hp = ckpt["hyper_parameters"]
        variant = hp.get("variant", "eet")
        arch = ArchConfig.coerce(hp["arch"])
        arch.multi_branch = variant_flags(variant)["multi_branch"]
        model = cls(arch, hp["aus"], variant=variant)
        state = {k: v for k, v in ckpt["state_dict"].items() if k.split(".")[0] in INFERENCE_PARTS}
        model.load_state_dict(state, strict=True)
        if map_location is not None:
            model.to(map_location)
        model.eval()
        if compile and not fuse:
            raise ValueError("EETModel.load_from_checkpoint: compile=True needs fuse=True")
        if fuse:
            model.fuse()
        return model.compile_for_inference() if compile else model

    def fuse(self) -> EETModel:
        """Rewrite into the inference form in place (see ``load_from_checkpoint``); needs eval mode."""
        fuse_for_inference(self.eval())
        return self

    def compile_for_inference(self) -> EETModel:
        """Run `transfer`'s networks (E, Ef, Er, G in one graph) through ``torch.compile`` with inductor's
        weight freezing: the weights become constants, prepacked and fused with the layers after them.
        Call it on a fused model whose weights will not change. The first `transfer` of each batch shape
        compiles (5-20 s on a 2-core CPU; it needs the C++ compiler inductor uses); after that, on this
        CPU, 16 pairs at the quick-start size took 42 ms against 58 ms fused, and one pair at 256 px 281 ms
        against 329 ms (see docs/speed.md). The same outputs up to float rounding. Returns ``self``."""
        if self.training:
            raise ValueError("compile_for_inference needs a model in eval mode (call .eval() first)")
        for layer in self.modules():  # inductor's freezing prepacks the weights itself
            if isinstance(layer, PrepackedWeight):
                layer.prepacked = False
        self._networks = torch.compile(self._networks_eager, dynamic=False, options={"freezing": True})
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def multi_branch(self) -> bool:
        """True when Er has one branch per AU (EET); False for EET-Single."""
        return self.au_related_encoder.multi_branch

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

    def _check(self, images: torch.Tensor, name: str) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        s = self.arch.image_size
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
        s = self.arch.image_size
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

    # ------------------------------------------------------------------ features

    @torch.no_grad()
    def encode(self, images: ImageInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (AU-related f_r, AU-free f_f), each [B, C, 4, 4] on the model's device."""
        x, _ = self._prepare(images, "images")
        feature = self.encoder(x)
        au_related, _ = self.au_related_encoder(feature)
        return au_related, self.au_free_encoder(feature)

    @torch.no_grad()
    def encode_branches(self, images: ImageInput) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (Er's per-branch features f_{r_i} [B, K, C, 4, 4], AU-free f_f [B, C, 4, 4]).

        K = m branches in the order of ``self.aus`` (EET), or 1 for EET-Single; f_r is their mean (eq. 6).
        """
        x, _ = self._prepare(images, "images")
        feature = self.encoder(x)
        branches, _ = self.au_related_encoder.forward_branches(feature)
        return branches, self.au_free_encoder(feature)

    def branch_weights(self, aus: Iterable[int] | None = None, strength: float = 1.0) -> torch.Tensor:
        """How far each Er branch moves from the target's own feature to the source's: [K] floats.

        ``strength`` on the branches of ``aus`` (all AUs when None), 0 on the others.
        """
        if (
            isinstance(strength, bool)
            or not isinstance(strength, (int, float))
            or not math.isfinite(strength)
        ):
            raise ValueError(f"strength must be a finite number, got {strength!r}")
        if not 0 <= strength <= MAX_STRENGTH:
            raise ValueError(
                f"strength must be from 0 (the target's own expression) to {MAX_STRENGTH:g} (1: the source's, "
                f"above 1 exaggerated), got {strength}"
            )
        if aus is None:
            selected = set(self.aus)
        else:
            selected = set(self.check_aus(aus))
        if not self.multi_branch:
            if selected != set(self.aus):
                raise ValueError(
                    f"selective transfer (aus={sorted(selected)}) needs one Er branch per AU, but this "
                    f"model is EET-Single (variant {self.variant!r}) with one branch for all AUs; "
                    "transfer all AUs (aus=None) and use strength instead"
                )
            return torch.full((1,), float(strength), device=self.device)
        return torch.tensor(
            [float(strength) if au in selected else 0.0 for au in self.aus], device=self.device
        )

    @staticmethod
    def mix_au_related(own: torch.Tensor, other: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """f_r = (1/K) sum_i ((1 - w_i) f_{r_i}^own + w_i f_{r_i}^other) (eq. 6 with per-branch weights).

        ``own``/``other`` are per-branch features [B, K, C, 4, 4]; ``weights`` is [K]. All weights 0 give
        the own f_r, all 1 the other's: the plain swap.
        """
        w = weights.to(own.dtype).view(1, -1, 1, 1, 1)
        return ((1 - w) * own + w * other).mean(dim=1)

    @property
    def needs_base(self) -> bool:
        """Whether G edits a base image (``arch.generator_output: composite`` or ``generator_skip``), so
        that `decode` needs the image whose expression changes."""
        return self.arch.generator_needs_base

    @torch.no_grad()
    def decode(
        self, au_related: torch.Tensor, au_free: torch.Tensor, base: ImageInput | None = None
    ) -> torch.Tensor:
        """G(f_r, f_f): images [B, 3, S, S] in [-1, 1]. ``base``: the images G edits (the ones whose f_f
        this is), needed when `needs_base`; ignored otherwise."""
        return self.decode_with_maps(au_related, au_free, base)[0]

    @torch.no_grad()
    def decode_with_maps(
        self, au_related: torch.Tensor, au_free: torch.Tensor, base: ImageInput | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`decode` and G's maps: ``mask`` [B, 1, S, S] in [0, 1] (1: G's colour, 0: the base kept) for a
        painting G, ``flow`` [B, 2, S, S] (see `Generator.forward_with_maps`) for a warping one."""
        fr, ff = au_related.to(self.device), au_free.to(self.device)
        if not self.needs_base:
            return self.generator.forward_with_maps(fr, ff)
        if base is None:
            raise ValueError(
                f"decode: this model's G edits a base image (generator_output "
                f"{self.arch.generator_output!r}, generator_skip {self.arch.generator_skip}); pass base="
            )
        x, _ = self._prepare(base, "base")
        if x.shape[0] != fr.shape[0]:
            raise ValueError(f"decode: {x.shape[0]} base images for {fr.shape[0]} features")
        return self.generator.forward_with_maps(fr, ff, x, self.encoder(x))

    # ------------------------------------------------------------------ what users call

    @torch.no_grad()
    def predict_aus(self, images: ImageInput) -> torch.Tensor:
        """AU intensities in [0, l] read by Er, [B, m] in the order of ``self.aus`` ([m] for one image).

        On the input tensor's device; on the CPU for PIL images, arrays and paths.
        """
        x, _ = self._prepare(images, "images")
        _, au_pred = self.au_related_encoder(self.encoder(x))
        au = au_pred * self.arch.max_intensity
        device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
        single = _is_single(images)
        return (au[0] if single else au).to(device)

    @torch.no_grad()
    def transfer(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        aus: Iterable[int] | None = None,
        strength: float = 1.0,
    ) -> tuple[Any, Any]:
        """(A with B's expression, B with A's expression), each of the kind its input was given as.

        Args:
            image_a, image_b: as many images on each side (see the module docstring for the kinds).
            aus: move only these AUs' expression (selective transfer): their Er branch features are taken
                from the other image before averaging (eq. 6), the others stay the image's own. None: all.
                An empty list gives the self-reconstructions. Needs a multi-branch (EET) model.
            strength: graded transfer; each moved branch feature is (1 - strength) * own + strength *
                other's: 0 keeps the own expression, 1 is the plain swap, above 1 exaggerates.
        """
        weights = self.branch_weights(aus, strength)
        a, b, restore_a, restore_b = self._prepare_pair(image_a, image_b)
        out_a, out_b = self._networks(a, b, weights.to(a.device))
        return restore_a(out_a), restore_b(out_b)

    def _networks_eager(
        self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`transfer` on prepared tensors: (A with B's expression, B with A's), moved by ``weights``."""
        return self.generator(*self._swap_inputs(a, b, weights)).chunk(2)

    def _swap_inputs(
        self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """G's inputs for [A with B's expression; B with A's]: (f_r, f_f, base images, E's base features)."""
        x = torch.cat([a, b])
        feature = self.encoder(x)
        branches, _ = self.au_related_encoder.forward_branches(feature)
        ff = self.au_free_encoder(feature)
        br_a, br_b = branches.chunk(2)
        fr_a = self.mix_au_related(br_a, br_b, weights)  # A's own, moved towards B's
        fr_b = self.mix_au_related(br_b, br_a, weights)
        return torch.cat([fr_a, fr_b]), ff, x, feature

    # `compile_for_inference` replaces this with a compiled copy
    _networks = _networks_eager

    @torch.no_grad()
    def transfer_maps(
        self,
        image_a: ImageInput,
        image_b: ImageInput,
        aus: Iterable[int] | None = None,
        strength: float = 1.0,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """G's maps for `transfer` with the same arguments, for each side: ``mask`` [B, 1, S, S] in [0, 1]
        (where the output takes G's colour, 1, or keeps its input, 0) for a painting G, ``flow``
        [B, 2, S, S] (x, y displacements; [-1, 1] spans the image) for a warping one. Float tensors on the
        model's device, for every kind of input. Needs a G that edits its input (`needs_base`)."""
        if self.arch.generator_output == "image":
            raise ValueError(
                "transfer_maps: this model's G draws the whole image (arch.generator_output 'image'); only "
                "a G that edits its input (composite, warp, warp_composite) has masks or flows"
            )
        weights = self.branch_weights(aus, strength)
        a, b, _, _ = self._prepare_pair(image_a, image_b)
        _, maps = self.generator.forward_with_maps(*self._swap_inputs(a, b, weights.to(a.device)))
        halves = {k: v.chunk(2) for k, v in maps.items()}
        return {k: v[0] for k, v in halves.items()}, {k: v[1] for k, v in halves.items()}

    @torch.no_grad()
    def reconstruct(self, images: ImageInput) -> Any:
        """Self-reconstruction G(f_r, f_f) of each image, of the kind it was given as."""
        x, restore = self._prepare(images, "images")
        feature = self.encoder(x)
        au_related, _ = self.au_related_encoder(feature)
        return restore(self.generator(au_related, self.au_free_encoder(feature), x, feature))


def _is_single(images: ImageInput) -> bool:
    """Whether an input is one image (as opposed to a batch or a list)."""
    if isinstance(images, torch.Tensor):
        return images.dim() == 3
    if isinstance(images, np.ndarray):
        return images.ndim != 4
    return not isinstance(images, (list, tuple))


def _as_kind(image: np.ndarray, kind: str) -> Image.Image | np.ndarray:
    return Image.fromarray(image) if kind == "pil" else image
