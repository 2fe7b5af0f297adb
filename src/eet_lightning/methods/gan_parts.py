"""Networks and losses that the GANimation and StarGAN baselines share (plain PyTorch, no Lightning).

Both papers use the same image-to-image generator (StarGAN's; GANimation adds an attention head) and the
same PatchGAN critic with an auxiliary head (StarGAN: domain logits; GANimation: AU regression), trained
with the WGAN-GP loss. The sizes follow their papers at 128 px: ``width`` 64 channels after the first
convolution, two down-sampling and two up-sampling convolutions, six residual blocks; the critic halves the
resolution ``critic_layers`` times (6 at 128 px, leaving 2 x 2).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv3x3-IN-ReLU-conv3x3-IN, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(channels, affine=True, track_running_stats=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(channels, affine=True, track_running_stats=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditionalTrunk(nn.Module):
    """The shared generator body: the image and its condition vector (replicated over the image) ->
    features at full resolution with ``width`` channels. Heads are the methods' own."""

    def __init__(self, condition_dim: int, width: int = 64, residual_blocks: int = 6) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        layers: list[nn.Module] = [
            nn.Conv2d(3 + condition_dim, width, 7, 1, 3, bias=False),
            nn.InstanceNorm2d(width, affine=True, track_running_stats=False),
            nn.ReLU(inplace=True),
        ]
        c = width
        for _ in range(2):  # down-sampling
            layers += [
                nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
                nn.InstanceNorm2d(2 * c, affine=True, track_running_stats=False),
                nn.ReLU(inplace=True),
            ]
            c *= 2
        layers += [ResidualBlock(c) for _ in range(residual_blocks)]
        for _ in range(2):  # up-sampling
            layers += [
                nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                nn.InstanceNorm2d(c // 2, affine=True, track_running_stats=False),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        self.body = nn.Sequential(*layers)
        self.out_channels = c

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``image`` [B, 3, H, W] in [-1, 1], ``condition`` [B, condition_dim]."""
        c = condition.to(image.dtype)[:, :, None, None].expand(-1, -1, *image.shape[2:])
        return self.body(torch.cat([image, c], dim=1))


class PatchCritic(nn.Module):
    """PatchGAN critic: ``layers`` 4x4 stride-2 convolutions with leaky ReLU (0.01), then a 3x3 convolution
    scoring each patch (``[B, 1, h, w]``, no sigmoid: a WGAN critic) and an auxiliary head, a convolution
    over the whole last map, giving ``aux_dim`` values per image (StarGAN's domain logits, GANimation's AU
    regression)."""

    def __init__(self, image_size: int, aux_dim: int, width: int = 64, layers: int | None = None) -> None:
        super().__init__()
        if layers is None:  # down to 2 x 2 as the papers' 6 layers at 128 px
            layers = max(1, image_size.bit_length() - 2)
        if image_size % (2**layers):
            raise ValueError(f"critic: {layers} halvings do not divide the image size {image_size}")
        mods: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.01)]
        c = width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.01)]
            c *= 2
        self.body = nn.Sequential(*mods)
        k = image_size // 2**layers
        self.patch = nn.Conv2d(c, 1, 3, 1, 1, bias=False)
        self.aux = nn.Conv2d(c, aux_dim, k, bias=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(image)
        return self.patch(h), self.aux(h).flatten(1)


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss E[D(fake)] - E[D(real)] (Arjovsky et al. 2017; the GP term is `gradient_penalty`)."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss -E[D(fake)]."""
    return -fake_scores.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad_x D(x)||_2 - 1)^2] at x on random points between real and
    (detached) fake images; the critic's first output is its score."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)[0]
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()
