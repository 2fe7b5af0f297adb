"""`EETModel`: a trained EET as a user meets it (load a stage-2 checkpoint, swap expressions).

Input and output handling (tensors, PIL images, arrays, paths, lists) is `TransferModel`'s, shared with
the other methods' models (see `eet_lightning.methods.inference`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from eet_lightning.aus import DISFA_AUS
from eet_lightning.checkpoint_io import read_checkpoint, training_data
from eet_lightning.methods.inference import MAX_STRENGTH, ImageInput, Labels, TransferModel, check_strength
from eet_lightning.nets import (
    ArchConfig,
    AttributeClassifier,
    AUFreeEncoder,
    AURelatedEncoder,
    FeatureEncoder,
    Generator,
)
from eet_lightning.nets.fuse import fuse_for_inference
from eet_lightning.nets.kernels.prepack import PrepackedWeight
from eet_lightning.variants import variant_flags

# E, Ef, Er and G transfer; C (the identity and pose classifier of stage 1) gives the quality report its
# identity features. Checkpoints always hold C; exports written before it was kept do not (then None).
INFERENCE_PARTS = ("encoder", "au_free_encoder", "au_related_encoder", "generator", "attribute_classifier")
__all__ = ["INFERENCE_PARTS", "MAX_STRENGTH", "EETModel"]


def branch_weights(model: Any, aus: Iterable[int] | None, strength: float) -> list[float]:
    """How far each Er branch of ``model`` (an EET: `EETModel`, or its ONNX export) moves from the target's
    own feature to the source's: ``strength`` on the branches of ``aus`` (all AUs when None), 0 on the
    others; one value for EET-Single, which refuses selective transfer. ``model`` gives ``aus``,
    ``multi_branch``, ``variant`` and ``check_aus``."""
    strength = check_strength(strength)
    selected = set(model.aus) if aus is None else set(model.check_aus(aus))
    if not model.multi_branch:
        if selected != set(model.aus):
            raise ValueError(
                f"selective transfer (aus={sorted(selected)}) needs one Er branch per AU, but this "
                f"model is EET-Single (variant {model.variant!r}) with one branch for all AUs; "
                "transfer all AUs (aus=None) and use strength instead"
            )
        return [float(strength)]
    return [float(strength) if au in selected else 0.0 for au in model.aus]


class EETModel(TransferModel):
    """E, Ef, Er and G of a trained EET; nothing of the discriminators or of training.

    >>> model = EETModel.load_from_checkpoint("runs/synthetic/stage2/last.ckpt")   # doctest: +SKIP
    >>> a_with_b, b_with_a = model.transfer(image_a, image_b)                      # doctest: +SKIP
    >>> mouth_only, _ = model.transfer(image_a, image_b, aus=[12, 25, 26])         # doctest: +SKIP
    >>> half_way, _ = model.transfer(image_a, image_b, strength=0.5)               # doctest: +SKIP
    """

    method = "eet"
    final_stage = 2
    parts = INFERENCE_PARTS
    optional_parts = ("attribute_classifier",)
    selective = True
    identity_source = "EET's identity classifier C (its pooled features of E's feature map)"

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
        self.attribute_classifier: AttributeClassifier | None = AttributeClassifier(self.arch)
        self.image_size = self.arch.image_size
        self.max_intensity = self.arch.max_intensity

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
        ckpt = read_checkpoint(path, 2, "EETModel.load_from_checkpoint", method="eet")
        model = cls.from_checkpoint(ckpt, map_location, fuse=fuse, compile=compile)
        model.training_data = training_data(ckpt)
        return model

    @classmethod
    def from_checkpoint(
        cls,
        ckpt: dict[str, Any],
        map_location: str | torch.device | None = None,
        fuse: bool = True,
        compile: bool = False,  # noqa: A002
    ) -> EETModel:
        """`load_from_checkpoint` on a checkpoint dict already read."""
        hp = ckpt["hyper_parameters"]
        variant = hp.get("variant", "eet")
        arch = ArchConfig.coerce(hp["arch"])
        arch.multi_branch = variant_flags(variant)["multi_branch"]
        model = cls(arch, hp["aus"], variant=variant)
        model._load_parts(ckpt, map_location)
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
    def multi_branch(self) -> bool:
        """True when Er has one branch per AU (EET); False for EET-Single."""
        return self.au_related_encoder.multi_branch

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
        weights = branch_weights(self, aus, strength)
        return torch.tensor(weights, device=self.device)

    def check_transfer_options(self, aus: Iterable[int] | None, strength: float) -> None:
        self.branch_weights(aus, strength)  # selective transfer also needs one Er branch per AU

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

    def _predict_aus_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """AU intensities in [0, l] read by Er."""
        _, au_pred = self.au_related_encoder(self.encoder(x))
        return au_pred * self.arch.max_intensity

    def _read_tensors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Er's AU intensities and C's pooled features from one pass of E."""
        feature = self.encoder(x)
        _, au_pred = self.au_related_encoder(feature)
        ident = (
            None
            if self.attribute_classifier is None
            else self.attribute_classifier.layers(feature).mean(dim=(2, 3))
        )
        return au_pred * self.arch.max_intensity, ident

    def _identity_tensors(self, x: torch.Tensor) -> torch.Tensor | None:
        """C's pooled features of E(x) (what its identity head reads), or None without C."""
        if self.attribute_classifier is None:
            return None
        return self.attribute_classifier.layers(self.encoder(x)).mean(dim=(2, 3))

    def _transfer_tensors(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        aus: list[int] | None,
        strength: float,
        labels_a: Labels | None,
        labels_b: Labels | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Selective (``aus``: their Er branch features are taken from the other image before averaging,
        eq. 6; the others stay the image's own; an empty list gives the self-reconstructions) and graded
        (each moved branch feature is (1 - strength) * own + strength * other's) transfer."""
        weights = self.branch_weights(aus, strength)
        return self._networks(a, b, weights.to(a.device))

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

    def _reconstruct_tensors(self, x: torch.Tensor) -> torch.Tensor:
        """Self-reconstruction G(f_r, f_f) of each image."""
        feature = self.encoder(x)
        au_related, _ = self.au_related_encoder(feature)
        return self.generator(au_related, self.au_free_encoder(feature), x, feature)
