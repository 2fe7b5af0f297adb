"""One stage-2 step (generator losses and backward, then discriminator losses and backward) on fixed
inputs, and the comparison two computations of it must pass: shared by the equivalence and CUDA tests."""

from __future__ import annotations

import torch

from eet_lightning.stage2 import Stage2Module

Results = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]


def stage2_inputs(
    batch: int = 4, identities: int = 5, poses: int = 3, seed: int = 1
) -> dict[str, torch.Tensor]:
    """Stacked [A; B] inputs as `Stage2Module.pair_inputs` makes them (12 DISFA AUs), on CPU."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(batch, 3, 64, 64, generator=gen) * 2 - 1,
        "aus": torch.rand(batch, 12, generator=gen) * 5,
        "identity": torch.randint(identities, (batch,), generator=gen),
        "pose": torch.randint(poses, (batch,), generator=gen),
    }


def _gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().cpu().clone() for k, p in module.named_parameters() if p.grad is not None}


def stage2_step(m: Stage2Module, inputs: dict[str, torch.Tensor]) -> Results:
    """(losses, generator-step gradients, discriminator-step gradients) of one step, all on CPU."""
    r = m._rounds(inputs["image"])
    g = m.generator_losses(inputs, r)
    g["total_g"].backward()
    gen = _gradients(m)
    m.zero_grad()
    d = m.discriminator_losses(inputs, r)
    d["total_d"].backward()
    disc = _gradients(m)
    m.zero_grad()
    return {k: v.detach().cpu() for k, v in {**g, **d}.items()}, gen, disc


def assert_stage2_results_close(got: Results, want: Results) -> None:
    """The same losses (1e-4), and each gradient tensor within 1e-3 of its norm.

    Plus a float-rounding scale: a conv bias right before instance norm has a true gradient of zero, so
    both computations give rounding noise there, of the order of 1e-6 of the step's largest gradient.
    Compared as whole tensors: two computations may round differently (spectral norm on the output or on
    the weight, another device), and where a pre-activation is within rounding of PReLU's kink one
    element's gradient takes the other slope."""
    assert got[0].keys() == want[0].keys()
    for key in want[0]:
        torch.testing.assert_close(got[0][key], want[0][key], rtol=1e-4, atol=1e-5, msg=key)
    for g, w in zip(got[1:], want[1:]):
        assert g.keys() == w.keys() and w
        scale = max(float(t.abs().max()) for t in w.values())
        for key in w:
            assert g[key].shape == w[key].shape
            error = float((g[key] - w[key]).norm())
            assert error <= 1e-3 * float(w[key].norm()) + 1e-5 * scale, (key, error, float(w[key].norm()))
