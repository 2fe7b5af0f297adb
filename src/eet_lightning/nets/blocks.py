"""Building blocks of Table I: conv-norm-PReLU, the up-sampling residual block, spectral norm."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

Norm = Literal["bn", "in", "none"]


def _matrix_layout(weight: torch.Tensor, dim: int) -> tuple[torch.Tensor, list[int]]:
    """``weight`` as a batch of matrices ``[A, rows, C]`` in its own memory order (no copy for contiguous
    or channels-last tensors), rows along ``dim``, and the order of the other axes in that view."""
    order = sorted(range(weight.dim()), key=lambda d: (-weight.stride(d), d))
    mem = weight.permute(order)
    if not mem.is_contiguous():  # an unusual layout: one copy
        mem = mem.contiguous()
    pos = order.index(dim)
    batch = math.prod(mem.shape[:pos])
    return mem.reshape(batch, weight.shape[dim], -1), [d for d in order if d != dim]


def _matrix_products(
    weight: torch.Tensor, dim: int, u: torch.Tensor | None, v: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(M^T u, M v)`` for the matrix ``M = weight.transpose(0, dim).flatten(1)`` of spectral norm, computed
    on the weight where it lies in memory (``M`` itself would be a copy of the weight for a transposed
    convolution, or for any channels-last weight). A product whose vector is None is skipped."""
    mats, others = _matrix_layout(weight, dim)
    natural = [d for d in range(weight.dim()) if d != dim]  # the column order of M
    mv = mtu = None
    if v is not None:
        to_mem = [natural.index(d) for d in others]
        v_mem = v.view([weight.shape[d] for d in natural]).permute(to_mem).reshape(mats.shape[0], -1)
        mv = torch.bmm(mats, v_mem.unsqueeze(-1)).sum(0).squeeze(-1)
    if u is not None:
        mtu = torch.matmul(u, mats).view([weight.shape[d] for d in others])  # [A, C] in memory order
        mtu = mtu.permute([others.index(d) for d in natural]).reshape(-1)
    return mtu, mv


def _power_iteration(
    weight: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int, update: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(u, v, sigma)``, fp32: one power iteration from ``u`` when ``update``, then
    ``sigma = u^T M v``. Call without autograd or autocast."""
    w = weight.float()
    u, v = u.float(), v.float()
    if update:
        mtu, _ = _matrix_products(w, dim, u, None)
        v = F.normalize(mtu, dim=0, eps=1e-12)
        _, wv = _matrix_products(w, dim, None, v)
        u = F.normalize(wv, dim=0, eps=1e-12)
    else:
        _, wv = _matrix_products(w, dim, None, v)
    return u, v, torch.dot(u, wv)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a, b>`` in fp32: one dot product over the memory when both share a dense layout."""
    fa, fb = _flat(a), _flat(b)
    if fa is not None and fb is not None and a.stride() == b.stride():
        return torch.dot(fa.float(), fb.float())
    return (a.float() * b.float()).sum()


def _rank_one_shapes(shape: torch.Size, dim: int) -> tuple[list[int], list[int]]:
    """Shapes that broadcast ``u`` along ``dim`` and ``v`` along the other axes of a weight."""
    u_shape = [shape[d] if d == dim else 1 for d in range(len(shape))]
    v_shape = [1 if d == dim else shape[d] for d in range(len(shape))]
    return u_shape, v_shape


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """A dense tensor as a flat view in memory order (None if it has gaps or overlaps)."""
    mem = t.permute(sorted(range(t.dim()), key=lambda d: (-t.stride(d), d)))
    return mem.view(-1) if mem.is_contiguous() else None


class _SpectralNormalize(torch.autograd.Function):
    """``W / sigma`` with ``sigma = u^T M v`` (M: W as a matrix with rows along ``dim``), after one power
    iteration that updates ``u`` and ``v`` when ``update``. Returns the normalized weight and the vectors.

    The same function autograd would differentiate through (``u`` and ``v`` are constants, as in torch's
    spectral norm), with its gradient written in two passes over the weight:
    ``dL/dW = G / sigma - (<G, W> / sigma^2) u v^T``, instead of the several temporaries of the
    division's and the matrix-vector product's generic backward.
    """

    @staticmethod
    def forward(ctx, weight, u, v, dim: int, update: bool):  # type: ignore[override]
        with torch.no_grad(), torch.autocast(weight.device.type, enabled=False):
            u, v, sigma = _power_iteration(weight, u, v, dim, update)
            out = weight / sigma.to(weight.dtype)
        ctx.dim = dim
        ctx.save_for_backward(weight, u, v, sigma)
        ctx.mark_non_differentiable(u, v)
        return out, u, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_u, _grad_v):  # type: ignore[override]
        weight, u, v, sigma = ctx.saved_tensors
        inner = _inner(grad, weight)
        out = grad / sigma.to(grad.dtype)
        u_shape, v_shape = _rank_one_shapes(weight.shape, ctx.dim)
        # -<G, W> / sigma^2 folded into the (small) v factor: one in-place pass, no host sync
        coeff = v.view(v_shape) * (-inner / (sigma * sigma))
        out.addcmul_(u.view(u_shape).to(out.dtype), coeff.to(out.dtype))
        return out, None, None, None, None


def output_numel(layer: nn.Module, x: torch.Tensor) -> int:
    """Number of elements a (transposed) convolution ``layer`` makes from a 4-d ``x``."""
    k, s, p, d = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if layer.transposed:
        op = layer.output_padding
        size = [(x.shape[2 + i] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i in (0, 1)]
    else:
        size = [(x.shape[2 + i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in (0, 1)]
    return x.shape[0] * layer.out_channels * size[0] * size[1]


def _whole_kernel(layer: nn.Module, x: torch.Tensor) -> bool:
    """A (non-transposed) convolution whose kernel covers its whole unpadded input: one matrix product."""
    return (
        not getattr(layer, "transposed", False)
        and layer.padding == (0, 0)
        and layer.groups == 1
        and layer.dilation == (1, 1)
        and x.dim() == 4
        and tuple(x.shape[2:]) == tuple(layer.kernel_size)
    )


def _as_matrices(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Input and weight of a whole-kernel convolution as ``[N, K]`` and ``[out, K]`` matrices, flattened
    in the weight's memory order (channels-last or contiguous) so that neither is copied; and whether
    that order was channels-last."""
    last = (
        weight.dim() == 4
        and not weight.is_contiguous()
        and weight.is_contiguous(memory_format=torch.channels_last)
    )
    if last:
        x, weight = x.permute(0, 2, 3, 1), weight.permute(0, 2, 3, 1)
    return x.reshape(x.shape[0], -1), weight.reshape(weight.shape[0], -1), last


def _from_matrix(m: torch.Tensor, like: torch.Tensor, last: bool) -> torch.Tensor:
    """Undo `_as_matrices` for a gradient shaped like ``like``."""
    if not last:
        return m.view(like.shape)
    n, c, h, w = like.shape
    return m.view(n, h, w, c).permute(0, 3, 1, 2)


def _conv_raw(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``layer``'s convolution (or transposed convolution) of ``x`` with ``weight``, without bias."""
    if _whole_kernel(layer, x):
        xm, wm, _ = _as_matrices(x, weight)
        return torch.mm(xm, wm.t())[:, :, None, None]
    return torch.ops.aten.convolution(
        x, weight, None, layer.stride, layer.padding, layer.dilation, layer.transposed,
        layer.output_padding, layer.groups,
    )  # fmt: skip


def _conv_raw_backward(
    layer: nn.Module, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `_conv_raw` with respect to its input and weight (None where not needed)."""
    if _whole_kernel(layer, x):
        xm, wm, last = _as_matrices(x, weight)
        gm = grad.reshape(grad.shape[0], -1)
        grad_x = _from_matrix(torch.mm(gm, wm), x, last) if need_x else None
        grad_w = _from_matrix(torch.mm(gm.t(), xm), weight, last) if need_w else None
        return grad_x, grad_w
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, layer.stride, layer.padding, layer.dilation, layer.transposed,
        layer.output_padding, layer.groups, [need_x, need_w, False],
    )  # fmt: skip
    return grad_x, grad_w


class _SNConvolution(torch.autograd.Function):
    """A spectrally normalized convolution ``conv(x, W / sigma) + b`` computed as
    ``conv(x, W) / sigma + b``: the same values, without writing ``W / sigma`` (a copy of the weight) at
    every call. For Table I's deep levels the output is a small fraction of the weight (a 2048 x 1024 x
    3 x 3 kernel on 4 x 4 maps: 75 MB of weight, 0.5 MB of output), so the weight-sized passes of
    `_SpectralNormalize` (the division forward, two passes backward) become output-sized ones. Gradient:
    ``dL/dx = conv_x(g / sigma)``, ``dL/dW = conv_W(g / sigma) - (<g, y - b> / sigma) u v^T``.

    Under autocast the convolution runs in the autocast dtype, as it would otherwise; sigma stays fp32.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, u, v, layer, update: bool):  # type: ignore[override]
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        with torch.no_grad(), torch.autocast(device, enabled=False):
            u, v, sigma = _power_iteration(weight, u, v, layer._sn_dim, update)
            xc, wc = x.to(dtype), weight.to(dtype)
            scaled = _conv_raw(layer, xc, wc).div_(sigma.to(dtype))  # conv(x, W) / sigma, in place
            out = scaled if bias is None else scaled + bias.to(dtype).view(1, -1, 1, 1)
        ctx.layer = layer
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(xc, wc, scaled, u, v, sigma)
        ctx.mark_non_differentiable(u, v)
        return out, u, v

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_u, _grad_v):  # type: ignore[override]
        xc, wc, scaled, u, v, sigma = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        grad = grad.to(wc.dtype)
        grad_x, grad_w = _conv_raw_backward(ctx.layer, grad / sigma.to(grad.dtype), xc, wc, need_x, need_w)
        if grad_w is not None:
            grad_w = grad_w.to(w_dtype)
            u_shape, v_shape = _rank_one_shapes(grad_w.shape, ctx.layer._sn_dim)
            # -(<g, y - b> / sigma) u v^T folded into the small v factor: one in-place pass, no host sync
            coeff = v.view(v_shape) * (-_inner(grad, scaled) / sigma)
            grad_w.addcmul_(u.view(u_shape).to(w_dtype), coeff.to(w_dtype))
        grad_b = grad.sum((0, 2, 3)).to(b_dtype) if need_b else None
        grad_x = grad_x.to(x_dtype) if grad_x is not None else None
        return grad_x, grad_w, grad_b, None, None, None, None


class _SpectralNormMixin:
    """Spectral normalization (Miyato et al., the paper's [36]): the layer uses W / sigma(W), with sigma
    estimated by one power iteration per training forward pass, as torch's own implementation does.

    Written here rather than taken from ``torch.nn.utils.parametrizations`` because parametrized modules
    cannot be pickled, and ``ddp_spawn`` and notebooks' multiprocessing pickle the model; and because its
    backward (`_SpectralNormalize`) takes two passes over the weight where autograd's generic one takes
    several (the weights of Table I's 4x4 levels are tens of MB each). The state dict is plain:
    ``weight`` (the unnormalized W), ``bias``, ``sn_u``, ``sn_v``.
    """

    weight: torch.Tensor
    training: bool

    def _init_spectral_norm(self, out_dim: int) -> None:
        self._sn_dim = out_dim  # 0 for Conv2d, 1 for ConvTranspose2d
        mat = self._weight_matrix(self.weight.detach())
        u = F.normalize(torch.randn(mat.shape[0]), dim=0, eps=1e-12)
        v = F.normalize(torch.randn(mat.shape[1]), dim=0, eps=1e-12)
        with torch.no_grad():
            for _ in range(15):  # start from a converged estimate
                v = F.normalize(mat.t() @ u, dim=0, eps=1e-12)
                u = F.normalize(mat @ v, dim=0, eps=1e-12)
        self.register_buffer("sn_u", u)
        self.register_buffer("sn_v", v)

    def _weight_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        if self._sn_dim != 0:
            weight = weight.transpose(0, self._sn_dim)
        return weight.flatten(1)

    def _keep_vectors(self, u: torch.Tensor, v: torch.Tensor) -> None:
        # the vectors saved for backward are new tensors, so the next forward's update leaves them alone
        if self.training:
            with torch.no_grad():
                self.sn_u.copy_(u)
                self.sn_v.copy_(v)

    def normalized_weight(self) -> torch.Tensor:
        # sigma in fp32 even under autocast (bf16/fp16 matmuls would mix dtypes and lose precision)
        out, u, v = _SpectralNormalize.apply(self.weight, self.sn_u, self.sn_v, self._sn_dim, self.training)
        self._keep_vectors(u, v)
        return out

    # Divide the convolution's output by sigma instead of the weight (`_SNConvolution`) where the output
    # is no larger than the weight; False always normalizes the weight (the straightforward form).
    scale_output = True

    def spectral_conv(self, x: torch.Tensor, conv) -> torch.Tensor:
        """The layer's output: ``conv(x, W / sigma, bias)``, by `_SNConvolution` when that is cheaper."""
        if (
            self.scale_output
            and x.dim() == 4
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and output_numel(self, x) <= self.weight.numel()
        ):
            out, u, v = _SNConvolution.apply(
                x, self.weight, self.bias, self.sn_u, self.sn_v, self, self.training
            )
            self._keep_vectors(u, v)
            return out
        return conv(x, self.normalized_weight(), self.bias)


def conv2d(
    layer: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``layer``'s convolution with the given weight. A kernel that covers the whole unpadded input (the
    4x4 -> 1x1 and 1x1 -> 1x1 layers ending Dsc and Dg) is one matrix product: the same sums, without
    the convolution kernels' per-call weight reordering (at Table I's size that layer's weight is 134 MB)."""
    if not _whole_kernel(layer, x):
        return layer._conv_forward(x, weight, bias)
    xm, wm, _ = _as_matrices(x, weight)
    return F.linear(xm, wm, bias)[:, :, None, None]


_PREPACK_OPS: bool | None = None


def _prepack_ops() -> bool:
    """Whether this torch build has oneDNN's convolution ops on prepacked weights."""
    global _PREPACK_OPS
    if _PREPACK_OPS is None:
        try:
            ops = torch.ops.mkldnn
            _PREPACK_OPS = torch.backends.mkldnn.is_available() and all(
                hasattr(ops, name)
                for name in (
                    "_reorder_convolution_weight",
                    "_convolution_pointwise",
                    "_reorder_convolution_transpose_weight",
                    "_convolution_transpose_pointwise",
                )
            )
        except (AttributeError, RuntimeError):
            _PREPACK_OPS = False
    return _PREPACK_OPS


class _PrepackedWeight:
    """Inference on CPU with the weight kept in oneDNN's own blocked layout.

    torch's CPU convolution reorders a plain weight into oneDNN's layout at every call: for the deep
    levels of Table I at one pair (4 x 4 or 8 x 8 maps, weights of 20-75 MB) that reorder reads and
    writes the whole weight, and the layer is bound by memory traffic, not arithmetic (a 2048 -> 1024 3x3
    deconvolution at 4 x 4: 16.5 ms plain, 8.1 ms prepacked). With ``prepacked`` (set by
    `fuse_for_inference`), a no-gradient fp32 CPU call whose output is no larger than the weight uses a
    reordered copy made once per weight version and input shape (one pair at 256 px: 0.35 -> 0.30 s).
    The parameter, the state dict and every other path are unchanged; the copy (as large as the weight)
    is not part of the state and is rebuilt after ``.to()``, a weight update or a new input shape.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    padding_mode: str
    prepacked = False

    def _use_prepacked(self, x: torch.Tensor) -> bool:
        params = [self.weight] + ([self.bias] if self.bias is not None else [])
        return (
            self.prepacked
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype == self.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)))
            and not torch.is_autocast_enabled("cpu")
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and _prepack_ops()
            # where the weight outweighs the output (the deep levels, small batches); layers bound by
            # arithmetic ran slower prepacked: 16 pairs at 256 px took ~4.9 s with every layer prepacked
            # and ~4.5 s with none
            and self.weight.numel() >= output_numel(self, x)
        )

    def _packed(self, x: torch.Tensor) -> torch.Tensor:
        key = (self.weight.data_ptr(), self.weight._version, tuple(x.shape))
        cached = self.__dict__.get("_packed_cache")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = (key, self._pack(self.weight.detach(), list(x.shape)))
            self.__dict__["_packed_cache"] = cached
        return cached[1]

    def __getstate__(self) -> dict:  # copies and pickles leave the oneDNN copy behind
        state = dict(super().__getstate__())  # type: ignore[misc]
        state.pop("_packed_cache", None)
        return state


class Conv2d(_PrepackedWeight, nn.Conv2d):
    """nn.Conv2d (same parameters and state dict) with `conv2d`'s whole-kernel shortcut and, for
    inference, `_PrepackedWeight`."""

    def _pack(self, weight: torch.Tensor, input_size: list[int]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, self.padding, self.stride, self.dilation, self.groups, input_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _whole_kernel(self, x) and self._use_prepacked(x):
            return torch.ops.mkldnn._convolution_pointwise(
                x, self._packed(x), self.bias, self.padding, self.stride, self.dilation, self.groups,
                "none", [], "",
            )  # fmt: skip
        return conv2d(self, x, self.weight, self.bias)


class ConvTranspose2d(_PrepackedWeight, nn.ConvTranspose2d):
    """nn.ConvTranspose2d (same parameters and state dict) with, for inference, `_PrepackedWeight`."""

    def _pack(self, weight: torch.Tensor, input_size: list[int]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_transpose_weight(
            weight, self.padding, self.output_padding, self.stride, self.dilation, self.groups, input_size
        )

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and self._use_prepacked(x):
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, self._packed(x), self.bias, self.padding, self.output_padding, self.stride,
                self.dilation, self.groups, "none", [], "",
            )  # fmt: skip
        return super().forward(x, output_size)


class SNConv2d(_SpectralNormMixin, nn.Conv2d):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_spectral_norm(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral_conv(x, lambda x, w, b: conv2d(self, x, w, b))


class SNConvTranspose2d(_SpectralNormMixin, nn.ConvTranspose2d):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_spectral_norm(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral_conv(
            x,
            lambda x, w, b: F.conv_transpose2d(
                x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation
            ),
        )


class _PReLUFunction(torch.autograd.Function):
    """``F.prelu`` with a backward written in vectorized CPU kernels.

    aten's CPU PReLU backward runs one scalar loop with two outputs (the input's gradient and a
    full-size tensor of the weight's per-element terms, summed afterwards): on 1 M floats it takes
    about 3 ms on a 2-core CPU, where a copy takes 0.06 ms. Here the input's gradient is
    ``lerp(threshold_backward(g, x, 0), g, a)`` (g where x > 0, a * g elsewhere) and the weight's
    ``sum(g * min(x, 0))`` over every axis but the channels, taken as ``<g - threshold_backward(g, x, 0),
    x>`` (one dot product for a single slope): about 0.6 ms for the same tensor.
    """

    @staticmethod
    def forward(ctx, x, weight):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        if grad.stride() != x.stride():  # mixed layouts take a strided path 10-35x slower: one copy
            grad = torch.empty_like(x).copy_(grad)
        per_channel = weight.numel() > 1
        shape = [1] * x.dim()
        if per_channel:
            shape[1] = weight.numel()
        a = weight.view(shape).to(grad.dtype)
        positive = torch.ops.aten.threshold_backward(grad, x, 0)  # g where x > 0, else 0
        grad_x = torch.lerp(positive, grad, a) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            # sum(g * min(x, 0)) as the products of x with g where x <= 0: the same terms
            negative = grad - positive
            flat_n, flat_x = _flat(negative), _flat(x)
            if per_channel:
                grad_w = (negative * x).sum([d for d in range(x.dim()) if d != 1])
            elif flat_n is not None and flat_x is not None and negative.stride() == x.stride():
                grad_w = torch.dot(flat_n, flat_x).reshape(weight.shape)  # one pass, nothing written
            else:
                grad_w = (negative * x).sum().reshape(weight.shape)
            grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w


def prelu(x: torch.Tensor, weight: torch.Tensor, fast_backward: bool = True) -> torch.Tensor:
    """``F.prelu(x, weight)``; on CPU, when a gradient is needed, through `_PReLUFunction`'s backward
    (the same values; ``fast_backward=False`` keeps aten's)."""
    if (
        fast_backward
        and x.device.type == "cpu"
        and x.dim() >= 2
        and torch.is_grad_enabled()
        and (x.requires_grad or weight.requires_grad)
    ):
        return _PReLUFunction.apply(x, weight)
    return F.prelu(x, weight)


class PReLU(nn.PReLU):
    """nn.PReLU (same parameter and state dict) whose CPU backward is `_PReLUFunction`'s.
    ``fast_backward = False`` gives aten's own (the straightforward form of the benchmark)."""

    fast_backward = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prelu(x, self.weight, self.fast_backward)


def conv(in_ch: int, out_ch: int, k: int, s: int, p: int, sn: bool, bias: bool = True) -> nn.Conv2d:
    """Conv2d, spectrally normalized when ``sn``."""
    return (SNConv2d if sn else Conv2d)(in_ch, out_ch, k, s, p, bias=bias)


def deconv(in_ch: int, out_ch: int, k: int, s: int, p: int, op: int, sn: bool) -> nn.ConvTranspose2d:
    """ConvTranspose2d (Table I's DeConv), spectrally normalized when ``sn``."""
    return (SNConvTranspose2d if sn else ConvTranspose2d)(in_ch, out_ch, k, s, p, op)


def same_layout(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out`` in ``x``'s memory format when ``x`` is channels-last. torch's instance norm returns
    contiguous tensors whatever its input; in a channels-last network every element-wise op after it
    would then mix layouts, and on CPU such ops take a strided path that is 10-35x slower."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d (same parameters and state dict) that keeps a channels-last input's layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return same_layout(super().forward(x), x)


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "in":
        # Affine IN: the paper does not say; affine keeps per-channel scale learnable as BN does.
        return InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Conv(out, k, s, p) -> norm -> PReLU, the row type of Table I."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # Conv(k1, ...): output channels
        kernel_size: int,  # k2
        stride: int,  # k3
        padding: int,  # k4
        norm: Norm,  # BN in E and C, IN elsewhere, none on the last layers of some heads
        activation: bool = True,  # PReLU after the norm
        sn: bool = False,  # spectral norm on the conv
    ) -> None:
        layers: list[nn.Module] = [
            conv(in_channels, out_channels, kernel_size, stride, padding, sn, bias=norm != "bn"),
            norm_layer(norm, out_channels),
        ]
        if activation:
            layers.append(PReLU())
        super().__init__(*layers)


class UpResBlock(nn.Module):
    """UpRes(x) of Table I: sum of DeConv(x,3,1,1,0)-IN-PReLU-DeConv(x,3,2,1,1) and DeConv(x,3,2,1,1),
    followed by IN and PReLU (the G column lists ``UpRes(x), IN, PReLU``). Doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int, sn: bool, norm: Norm = "in") -> None:
        super().__init__()
        self.main = nn.Sequential(
            deconv(in_channels, out_channels, 3, 1, 1, 0, sn),
            norm_layer(norm, out_channels),
            PReLU(),
            deconv(out_channels, out_channels, 3, 2, 1, 1, sn),
        )
        self.shortcut = deconv(in_channels, out_channels, 3, 2, 1, 1, sn)
        self.post = nn.Sequential(norm_layer(norm, out_channels), PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.main(x) + self.shortcut(x))


def stacked_layer(layers: list[nn.Module], x: torch.Tensor, groups: int, first: bool) -> torch.Tensor:
    """Apply K parallel layers of one kind (one per branch) to ``x`` holding their inputs side by side.

    ``first``: ``layers`` are convolutions, run as one call (``groups`` 1 when every branch reads the same
    ``x``, K when each reads its own channels). Otherwise they are per-channel layers (batch or instance
    norm, PReLU, identity) over the K branches' concatenated channels. Parameters and running statistics
    stay in the per-branch layers; batch norm's running statistics are updated there as each layer's own
    forward would.
    """
    head = layers[0]
    if first:
        weight = torch.cat(
            [m.normalized_weight() if isinstance(m, _SpectralNormMixin) else m.weight for m in layers]
        )
        bias = torch.cat([m.bias for m in layers]) if head.bias is not None else None
        return F.conv2d(x, weight, bias, head.stride, head.padding, head.dilation, groups)
    if isinstance(head, nn.Identity):
        return x
    channels = x.shape[1] // len(layers)
    if isinstance(head, nn.PReLU):
        return prelu(
            x, torch.cat([m.weight.expand(channels) for m in layers]), getattr(head, "fast_backward", True)
        )
    affine = [torch.cat([getattr(m, n) for m in layers]) if head.affine else None for n in ("weight", "bias")]
    if isinstance(head, nn.InstanceNorm2d) and not head.track_running_stats:
        return same_layout(F.instance_norm(x, weight=affine[0], bias=affine[1], eps=head.eps), x)
    if isinstance(head, nn.BatchNorm2d) and head.track_running_stats and head.momentum is not None:
        mean = torch.cat([m.running_mean for m in layers])
        var = torch.cat([m.running_var for m in layers])
        out = F.batch_norm(x, mean, var, *affine, head.training, head.momentum, head.eps)
        if head.training:  # F.batch_norm updated the concatenated copies: hand them back
            with torch.no_grad():
                for i, m in enumerate(layers):
                    m.running_mean.copy_(mean[i * channels : (i + 1) * channels])
                    m.running_var.copy_(var[i * channels : (i + 1) * channels])
                    m.num_batches_tracked.add_(1)
        return out
    raise TypeError(f"no side-by-side form for {type(head).__name__} layers")


def check_shape(x: torch.Tensor, channels: int, size: int | None, what: str) -> None:
    """Fail early with the module's name when a tensor of the wrong shape is fed in."""
    if x.dim() != 4 or x.shape[1] != channels or (size is not None and tuple(x.shape[2:]) != (size, size)):
        want = f"[B, {channels}, {size}, {size}]" if size is not None else f"[B, {channels}, H, W]"
        raise ValueError(f"{what} expects a tensor of shape {want}, got {list(x.shape)}")
