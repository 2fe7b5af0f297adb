"""Spectral normalization (Miyato et al.) with hand-written backward passes: the normalized weight
(`SpectralNormalize`), the convolution scaled on its output (`SNConvolution`), and the layers using them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from eet_lightning.nets.kernels.layout import (
    as_matrices,
    conv2d,
    flat,
    from_matrix,
    output_numel,
    whole_kernel,
)


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
    fa, fb = flat(a), flat(b)
    if fa is not None and fb is not None and a.stride() == b.stride():
        return torch.dot(fa.float(), fb.float())
    return (a.float() * b.float()).sum()


def _rank_one_shapes(shape: torch.Size, dim: int) -> tuple[list[int], list[int]]:
    """Shapes that broadcast ``u`` along ``dim`` and ``v`` along the other axes of a weight."""
    u_shape = [shape[d] if d == dim else 1 for d in range(len(shape))]
    v_shape = [1 if d == dim else shape[d] for d in range(len(shape))]
    return u_shape, v_shape


class SpectralNormalize(torch.autograd.Function):
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


def _conv_raw(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``layer``'s convolution (or transposed convolution) of ``x`` with ``weight``, without bias."""
    if whole_kernel(layer, x):
        xm, wm, _ = as_matrices(x, weight)
        return torch.mm(xm, wm.t())[:, :, None, None]
    return torch.ops.aten.convolution(
        x, weight, None, layer.stride, layer.padding, layer.dilation, layer.transposed,
        layer.output_padding, layer.groups,
    )  # fmt: skip


def _conv_raw_backward(
    layer: nn.Module, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of `_conv_raw` with respect to its input and weight (None where not needed)."""
    if whole_kernel(layer, x):
        xm, wm, last = as_matrices(x, weight)
        gm = grad.reshape(grad.shape[0], -1)
        grad_x = from_matrix(torch.mm(gm, wm), x, last) if need_x else None
        grad_w = from_matrix(torch.mm(gm.t(), xm), weight, last) if need_w else None
        return grad_x, grad_w
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, layer.stride, layer.padding, layer.dilation, layer.transposed,
        layer.output_padding, layer.groups, [need_x, need_w, False],
    )  # fmt: skip
    return grad_x, grad_w


class SNConvolution(torch.autograd.Function):
    """A spectrally normalized convolution ``conv(x, W / sigma) + b`` computed as
    ``conv(x, W) / sigma + b``: the same values, without writing ``W / sigma`` (a copy of the weight) at
    every call. For Table I's deep levels the output is a small fraction of the weight (a 2048 x 1024 x
    3 x 3 kernel on 4 x 4 maps: 75 MB of weight, 0.5 MB of output), so the weight-sized passes of
    `SpectralNormalize` (the division forward, two passes backward) become output-sized ones. Gradient:
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


class SpectralNormMixin:
    """Spectral normalization (Miyato et al., the paper's [36]): the layer uses W / sigma(W), with sigma
    estimated by one power iteration per training forward pass, as torch's own implementation does.

    Written here rather than taken from ``torch.nn.utils.parametrizations`` because parametrized modules
    cannot be pickled, and ``ddp_spawn`` and notebooks' multiprocessing pickle the model; and because its
    backward (`SpectralNormalize`) takes two passes over the weight where autograd's generic one takes
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
        out, u, v = SpectralNormalize.apply(self.weight, self.sn_u, self.sn_v, self._sn_dim, self.training)
        self._keep_vectors(u, v)
        return out

    def spectral_conv(self, x: torch.Tensor, conv) -> torch.Tensor:
        """The layer's output: ``conv(x, W / sigma, bias)``. Where the output is no larger than the weight,
        by `SNConvolution`, which divides the convolution's output by sigma instead of the weight."""
        if (
            x.dim() == 4
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and output_numel(self, x) <= self.weight.numel()
        ):
            out, u, v = SNConvolution.apply(
                x, self.weight, self.bias, self.sn_u, self.sn_v, self, self.training
            )
            self._keep_vectors(u, v)
            return out
        return conv(x, self.normalized_weight(), self.bias)


class SNConv2d(SpectralNormMixin, nn.Conv2d):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_spectral_norm(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spectral_conv(x, lambda x, w, b: conv2d(self, x, w, b))


class SNConvTranspose2d(SpectralNormMixin, nn.ConvTranspose2d):
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
