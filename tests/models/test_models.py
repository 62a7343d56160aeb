from __future__ import annotations

import pytest
import torch
from torch import nn

from subpixel import models
from subpixel.models import ESPCN, FSRCNN, ESPCNConfig, FSRCNNConfig


@pytest.mark.parametrize("name", sorted(models.BUILDERS))
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_network_maps_lr_to_r_times_the_size(name: str, scale: int, channels: int) -> None:
    net = models.build(name, scale=scale, channels=channels)
    out = net(torch.rand(2, channels, 7, 5))
    assert out.shape == (2, channels, 7 * scale, 5 * scale)


def test_espcn_is_the_papers_configuration() -> None:
    net = ESPCN(ESPCNConfig(scale=3))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 64, 5),
        (64, 32, 3),
        (32, 9, 3),
    ]
    assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == 2


def test_seven_layer_espcn_is_a_config_of_the_same_class() -> None:
    net = models.build("espcn-7", scale=2)
    assert type(net) is ESPCN
    assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == 6
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == 7
    out = net(torch.randn(1, 1, 6, 6) * 10)
    assert out.min() >= 0.0 and out.max() <= 1.0  # sigmoid output


@pytest.mark.parametrize(("name", "dsm"), [("fsrcnn", (56, 12, 4)), ("fsrcnn-s", (32, 5, 1))])
def test_fsrcnn_layers(name: str, dsm: tuple[int, int, int]) -> None:
    d, s, m = dsm
    net = models.build(name, scale=3)
    convs = [x for x in net.body if isinstance(x, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == (
        [(1, d, 5), (d, s, 1)] + [(s, s, 3)] * m + [(s, d, 1)]
    )
    assert sum(isinstance(x, nn.PReLU) for x in net.body) == m + 3
    deconv = net.deconv
    assert isinstance(deconv, nn.ConvTranspose2d)
    assert (deconv.kernel_size, deconv.stride) == ((9, 9), (3, 3))


def _phase_balanced_deconv(net: FSRCNN) -> None:
    """A 9x9 kernel whose r x r taps starting at the centre are 1: each LR pixel fills
    the r x r HR block at (r*i, r*j), every phase sums the same, so constants stay constant."""
    r = net.config.scale
    with torch.no_grad():
        net.deconv.weight.zero_()
        net.deconv.weight[:, :, 4 : 4 + r, 4 : 4 + r] = 1.0 / net.config.d
        net.deconv.bias.zero_()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_deconvolution_alignment(scale: int) -> None:
    torch.manual_seed(0)
    net = FSRCNN(FSRCNNConfig(scale=scale)).eval()
    _phase_balanced_deconv(net)
    # A constant image stays constant away from the borders (the body sees 6 LR pixels out).
    with torch.no_grad():
        out = net(torch.full((1, 1, 24, 24), 0.5))[0, 0]
    margin = 8 * scale
    interior = out[margin:-margin, margin:-margin]
    assert torch.allclose(interior, interior.mean().expand_as(interior), atol=1e-6)
    # An impulse at LR (i, j) lands on the HR block starting at (r*i, r*j) (documented).
    features = torch.zeros(1, net.config.d, 6, 6)
    features[:, :, 2, 3] = 1.0
    hr = net.deconv(features)[0, 0]
    rows, cols = torch.nonzero(hr, as_tuple=True)
    assert (rows.min().item(), cols.min().item()) == (2 * scale, 3 * scale)
    assert (rows.max().item(), cols.max().item()) == (3 * scale - 1, 4 * scale - 1)


@pytest.mark.parametrize("name", ["espcn", "fsrcnn", "fsrcnn-s", "srcnn"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shifting_the_input_by_one_lr_pixel_shifts_the_output_by_r(name: str, scale: int) -> None:
    torch.manual_seed(1)
    net = models.build(name, scale=scale).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        out = net(x)
        shifted = net(torch.roll(x, shifts=1, dims=-1))
    # Away from the borders (where padding differs), shifted == out moved right by r.
    margin = 8 * scale
    a = shifted[..., margin:-margin, margin + scale : -margin]
    b = out[..., margin:-margin, margin : -margin - scale]
    assert torch.allclose(a, b, atol=1e-5)


def test_fsrcnn_sub_pixel_form_gives_the_same_output() -> None:
    torch.manual_seed(2)
    for scale in (2, 3, 4):
        net = models.build("fsrcnn", scale=scale).eval()
        with torch.no_grad():
            net.deconv.weight.normal_()  # the N(0, 0.001) init would make the check too easy
            fast = models.fsrcnn_to_subpixel(net)
            x = torch.rand(2, 1, 9, 11)
            assert not isinstance(fast.deconv, nn.ConvTranspose2d)
            expected = net(x)
            # float32 sums of 56 x 81 terms in another order: tolerance relative to the output
            tolerance = 1e-5 * float(expected.abs().max())
            torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=tolerance)


def _conv_macs(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_complexity_matches_counts_by_hand(scale: int) -> None:
    r2 = scale * scale
    espcn = models.measure_complexity(models.build("espcn", scale=scale), channels=1)
    lr_macs = _conv_macs(1, 64, 5) + _conv_macs(64, 32, 3) + _conv_macs(32, r2, 3)
    assert espcn.macs_per_pixel == pytest.approx(lr_macs / r2)
    assert espcn.parameters == lr_macs + 64 + 32 + r2

    fsrcnn = models.measure_complexity(models.build("fsrcnn", scale=scale), channels=1)
    body = _conv_macs(1, 56, 5) + _conv_macs(56, 12, 1) + 4 * _conv_macs(12, 12, 3) + 56 * 12
    assert fsrcnn.macs_per_pixel == pytest.approx((body + 56 * 81) / r2)

    srcnn = models.measure_complexity(models.build("srcnn", scale=scale), channels=1)
    hr_macs = _conv_macs(1, 64, 9) + _conv_macs(64, 32, 5) + _conv_macs(32, 1, 5)
    assert srcnn.macs_per_pixel == pytest.approx(hr_macs + 4 + 4 / scale)


def test_espcn_x3_at_1080p_is_about_5_2_gmac() -> None:
    cost = models.measure_complexity(models.build("espcn", scale=3), channels=1)
    assert cost.macs_per_pixel * 1920 * 1080 == pytest.approx(5.21e9, rel=0.01)


def test_bad_names_and_options_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown model"):
        models.build("edsr")
    with pytest.raises(ValueError, match="bad options"):
        models.build("espcn", width=3)
    with pytest.raises(ValueError, match="channels"):
        models.build("fsrcnn", channels=2)
    with pytest.raises(ValueError, match="odd"):
        models.build("espcn", kernels=(4, 3, 3))


def test_bicubic_model_matches_matlab_imresize_in_float() -> None:
    import numpy as np

    from subpixel.resize import imresize

    rng = np.random.default_rng(3)
    image = rng.random((9, 13))
    for scale in (2, 3, 4):
        ours = models.build("bicubic", scale=scale)(torch.from_numpy(image)[None, None])[0, 0]
        np.testing.assert_allclose(ours.numpy(), imresize(image, scale=scale), atol=1e-12)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize(("donor_scale", "scale"), [(2, 4), (2, 6), (3, 3), (1, 3)])
def test_espcn_at_a_multiple_of_its_scale_is_its_output_upsampled_by_nearest(
    donor_scale: int, scale: int, residual: bool
) -> None:
    """x4 from x2: each new phase copies the donor phase it lies in, so the output is the
    donor's output upsampled twice by nearest neighbour, for every weight."""
    torch.manual_seed(scale + donor_scale)
    config = ESPCNConfig(scale=donor_scale, channels=3, activation="prelu", residual=residual)
    donor = ESPCN(config).eval()
    with torch.no_grad():
        for parameter in donor.parameters():
            parameter.normal_()
    copy = donor.at_scale(scale)
    assert copy.config == ESPCNConfig(**{**config.__dict__, "scale": scale})
    lr = torch.rand(2, 3, 7, 9)
    with torch.no_grad():
        expected = nn.functional.interpolate(donor(lr), scale_factor=scale // donor_scale)
        torch.testing.assert_close(copy(lr), expected, rtol=0, atol=1e-5)
    assert not copy.training


def test_espcn_at_a_coarser_scale_takes_the_phase_each_new_one_lies_in() -> None:
    donor = ESPCN(ESPCNConfig(scale=4, channels=1))
    copy = donor.at_scale(3)
    # new phase (i, j) of 3 lies in donor phase (4i // 3, 4j // 3): rows 0, 1, 2
    rows = [0, 1, 2]
    index = [r * 4 + c for r in rows for c in rows]
    assert torch.equal(copy.subpixel.weight, donor.subpixel.weight[index])
    assert copy.subpixel.bias is not None and donor.subpixel.bias is not None
    assert torch.equal(copy.subpixel.bias, donor.subpixel.bias[index])


def test_start_from_takes_another_scale_but_not_another_shape() -> None:
    x4 = ESPCN(ESPCNConfig(scale=4))
    x4.start_from(ESPCN(ESPCNConfig(scale=2)))
    with pytest.raises(RuntimeError):
        x4.start_from(ESPCN(ESPCNConfig(scale=2, features=(32, 16))))
