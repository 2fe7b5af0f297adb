"""Shapes of every network of Table I at 64, 128 and 256 px, the parameter count, Er's branches."""

from __future__ import annotations

import pytest
import torch

from eet_lightning.nets import (
    ArchConfig,
    AttributeClassifier,
    AUFreeEncoder,
    AURelatedEncoder,
    FeatureDiscriminator,
    FeatureEncoder,
    Generator,
    ImageDiscriminator,
    count_parameters,
)
from eet_lightning.nets.kernels.spectral_norm import SNConv2d, SNConvTranspose2d


@pytest.mark.parametrize("size", [64, 128, 256])
def test_every_module_shape(size: int) -> None:
    torch.manual_seed(0)
    width = 0.25 if size == 64 else 0.125  # reduced width: the shapes do not depend on it
    a = ArchConfig(image_size=size, width=width, num_aus=12, num_identities=7, num_poses=3)
    x = torch.rand(2, 3, size, size) * 2 - 1
    f = FeatureEncoder(a)(x)
    assert f.shape == (2, a.feature_channels, size // 4, size // 4) and a.feature_channels == a.ch(64)
    ff = AUFreeEncoder(a)(f)
    fr, u = AURelatedEncoder(a)(f)
    c = a.ch(1024)
    assert ff.shape == fr.shape == (2, c, 4, 4)
    assert u.shape == (2, 12) and ((u > 0) & (u < 1)).all()
    identity_logits, pose_logits = AttributeClassifier(a)(f)
    assert identity_logits.shape == (2, 7) and pose_logits.shape == (2, 3)
    assert FeatureDiscriminator(a, 12 * 6)(ff).shape == (2, 72)
    assert FeatureDiscriminator(a, 7)(fr).shape == (2, 7)
    img = Generator(a)(fr, ff)
    assert img.shape == (2, 3, size, size) and img.abs().max() <= 1
    assert ImageDiscriminator(a)(img).shape == (2,)


def test_paper_parameter_count() -> None:
    # Table I at 256 px, width 1, n = 67, v = 5, m = 12, l = 5: our count is 255.25 M with all nine nets.
    a = ArchConfig(image_size=256, width=1.0, num_aus=12, num_identities=67, num_poses=5)
    with torch.device("meta"):  # no memory, no init time
        nets = [
            FeatureEncoder(a),
            AttributeClassifier(a),
            AUFreeEncoder(a),
            AURelatedEncoder(a),
            Generator(a),
            FeatureDiscriminator(a, 72),
            FeatureDiscriminator(a, 67),
            ImageDiscriminator(a),
            ImageDiscriminator(a),
        ]
    total = sum(count_parameters(n) for n in nets)
    assert total == 255_254_879
    # the 12 Er branches alone are 75.3 M
    assert count_parameters(nets[3]) == 75_284_028


def test_spectral_norm_placement() -> None:
    a = ArchConfig(image_size=64, width=0.125, num_identities=3, num_poses=1)

    def sn_count(m: torch.nn.Module) -> int:
        return sum(isinstance(x, (SNConv2d, SNConvTranspose2d)) for x in m.modules())

    assert sn_count(FeatureEncoder(a)) == 0 and sn_count(AttributeClassifier(a)) == 0  # BN nets, no SN
    assert sn_count(AUFreeEncoder(a)) == 2  # two stride-2 levels at 64 px
    assert sn_count(AURelatedEncoder(a)) == 2 * 12
    assert sn_count(Generator(a)) == 4 * 3 + 1  # 4 UpRes blocks x 3 deconvs + the 1x1 output deconv
    assert sn_count(ImageDiscriminator(a)) == 4 + 2
    no_er = ArchConfig(
        image_size=64, width=0.125, num_identities=3, num_poses=1, au_encoder_spectral_norm=False
    )
    assert sn_count(AURelatedEncoder(no_er)) == 0 and sn_count(AUFreeEncoder(no_er)) == 2
    no_g = ArchConfig(
        image_size=64, width=0.125, num_identities=3, num_poses=1, generator_spectral_norm=False
    )
    assert sn_count(Generator(no_g)) == 0 and sn_count(ImageDiscriminator(no_g)) == 4 + 2


def test_au_related_encoder_mean_of_branches_and_single_variant() -> None:
    torch.manual_seed(0)
    a = ArchConfig(image_size=64, width=0.125, num_aus=4, num_identities=3, num_poses=1)
    er = AURelatedEncoder(a).eval()
    f = torch.randn(3, a.feature_channels, 16, 16)
    branches, u = er.forward_branches(f)
    assert branches.shape == (3, 4, a.ch(1024), 4, 4)
    fr, u2 = er(f)
    torch.testing.assert_close(fr, branches.mean(1))  # eq. 6
    torch.testing.assert_close(u, u2)
    # each AU head reads its own branch only: perturbing branch 2's weights moves only AU 2
    with torch.no_grad():
        er.heads[2].bias += 1.0
    _, u3 = er(f)
    changed = (u3 - u).abs().amax(0) > 1e-6
    assert changed.tolist() == [False, False, True, False]
    single = AURelatedEncoder(
        ArchConfig(image_size=64, width=0.125, num_aus=4, num_identities=3, num_poses=1, multi_branch=False)
    )
    assert len(single.branches) == 1
    fr_s, u_s = single(f)
    assert fr_s.shape == fr.shape and u_s.shape == (3, 4)


def test_encoder_width_sizes_e_alone() -> None:
    a = ArchConfig(image_size=64, width=0.125, encoder_width=1.0, num_identities=3, num_poses=1)
    f = FeatureEncoder(a)(torch.zeros(1, 3, 64, 64))
    assert f.shape == (1, 64, 16, 16)
    assert AUFreeEncoder(a)(f).shape == (1, a.ch(1024), 4, 4)
    assert AttributeClassifier(a)(f)[0].shape == (1, 3)
    with pytest.raises(ValueError, match="encoder_width"):
        ArchConfig(encoder_width=-1)


def test_translation_norm_switch() -> None:
    paper = ArchConfig(image_size=64, width=0.125, num_identities=3, num_poses=1)
    bn = ArchConfig(image_size=64, width=0.125, num_identities=3, num_poses=1, translation_norm="bn")

    def kinds(module: torch.nn.Module) -> set[str]:
        return {
            kind
            for m in module.modules()
            for kind, cls in (("in", torch.nn.InstanceNorm2d), ("bn", torch.nn.BatchNorm2d))
            if isinstance(m, cls)
        }

    for net in (AUFreeEncoder, AURelatedEncoder, Generator):
        assert kinds(net(paper)) == {"in"}
        assert kinds(net(bn)) == {"bn"}
    # the discriminators keep instance norm either way
    assert kinds(ImageDiscriminator(bn)) == {"in"}
    with pytest.raises(ValueError, match="translation_norm"):
        ArchConfig(translation_norm="ln")


def test_bad_arch_values() -> None:
    with pytest.raises(ValueError, match="image_size"):
        ArchConfig(image_size=100)
    with pytest.raises(ValueError, match="width"):
        ArchConfig(width=0)
    with pytest.raises(ValueError, match="num_identities"):
        ArchConfig(num_identities=0)
    with pytest.raises(ValueError, match="unknown arch"):
        ArchConfig.coerce({"image_size": 64, "depth": 3})
    with pytest.raises(ValueError, match=r"\[B, 3, 64, 64\]"):
        FeatureEncoder(ArchConfig(image_size=64, width=0.125))(torch.zeros(1, 3, 128, 128))


def test_spectral_norm_matches_torch_and_pickles() -> None:
    import pickle

    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    ours = SNConvTranspose2d(6, 4, 3, 2, 1, 1)
    ref = spectral_norm(torch.nn.ConvTranspose2d(6, 4, 3, 2, 1, 1), dim=1)
    with torch.no_grad():
        ref.parametrizations.weight.original.copy_(ours.weight)
        ref.bias.copy_(ours.bias)
    x = torch.randn(2, 6, 5, 5)
    for _ in range(30):  # both power iterations converge to the largest singular value
        ours(x), ref(x)
    sigma = torch.linalg.matrix_norm(ours.weight.detach().transpose(0, 1).flatten(1), ord=2)
    torch.testing.assert_close(
        ours.normalized_weight().detach(), ours.weight.detach() / sigma, rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
    clone = pickle.loads(pickle.dumps(ours))
    torch.testing.assert_close(clone(x), ours(x))
    assert set(ours.state_dict()) == {"weight", "bias", "sn_u", "sn_v"}


def test_spectral_norm_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    a = ArchConfig(image_size=64, width=0.125, num_identities=3, num_poses=1)
    g = Generator(a).eval()
    fr, ff = torch.randn(2, a.ch(1024), 4, 4), torch.randn(2, a.ch(1024), 4, 4)
    full = g(fr, ff)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = g(fr, ff)
    assert low.shape == full.shape and (low.float() - full).abs().max() < 0.05
