"""Tests for subpixel.layers: periodic shuffle, sub-pixel conv <-> transposed conv, ICNR."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from subpixel.layers import (
    SubpixelConv2d,
    deconv_to_subpixel,
    deconv_via_subpixel,
    icnr_,
    icnr_init,
    paper_to_torch_channel_order,
    periodic_shuffle,
    periodic_unshuffle,
    subpixel_to_deconv,
)

FAST = settings(derandomize=True, deadline=None, max_examples=100)
MEDIUM = settings(derandomize=True, deadline=None, max_examples=250)


def distinct_values(*shape: int, seed: int = 0) -> torch.Tensor:
    """A tensor whose entries are all different, so any misplacement shows."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(math.prod(shape), generator=g).to(torch.float64).reshape(shape)


def ps_reference(x: torch.Tensor, r: int) -> torch.Tensor:
    """PS straight from the ESPCN formula, with the paper's y = row, x = column:
    PS(T)[x, y, c] = T[floor(x/r), floor(y/r), C·r·mod(y, r) + C·mod(x, r) + c]."""
    b_n, c_r2, h, w = x.shape
    c_n = c_r2 // (r * r)
    t = x.tolist()
    out = [
        [
            [
                [
                    t[b][c_n * r * (yy % r) + c_n * (xx % r) + c][yy // r][xx // r]
                    for xx in range(w * r)
                ]
                for yy in range(h * r)
            ]
            for c in range(c_n)
        ]
        for b in range(b_n)
    ]
    return torch.tensor(out, dtype=x.dtype).reshape(b_n, c_n, h * r, w * r)


shapes = st.tuples(
    st.integers(1, 2),  # B
    st.integers(1, 4),  # C
    st.integers(2, 4),  # r
    st.integers(1, 6),  # H
    st.integers(1, 6),  # W
)


# --------------------------------------------------------------------------- #
# Periodic shuffle
# --------------------------------------------------------------------------- #


@FAST
@given(shapes)
def test_periodic_shuffle_matches_paper_formula(shape):
    b, c, r, h, w = shape
    x = distinct_values(b, c * r * r, h, w)
    y = periodic_shuffle(x, r)
    assert y.shape == (b, c, r * h, r * w)
    assert torch.equal(y, ps_reference(x, r))


@FAST
@given(shapes)
def test_periodic_unshuffle_round_trips(shape):
    b, c, r, h, w = shape
    lr = distinct_values(b, c * r * r, h, w, seed=1)
    hr = distinct_values(b, c, r * h, r * w, seed=2)
    assert torch.equal(periodic_unshuffle(periodic_shuffle(lr, r), r), lr)
    assert torch.equal(periodic_shuffle(periodic_unshuffle(hr, r), r), hr)
    assert periodic_unshuffle(hr, r).shape == (b, c * r * r, h, w)


@FAST
@given(shapes)
def test_paper_order_is_a_channel_permutation_of_torch_order(shape):
    b, c, r, h, w = shape
    x = distinct_values(b, c * r * r, h, w, seed=3)
    perm = paper_to_torch_channel_order(c, r)
    assert perm.dtype == torch.long
    assert torch.equal(perm.sort().values, torch.arange(c * r * r))
    assert torch.equal(periodic_shuffle(x, r), F.pixel_shuffle(x[:, perm], r))
    # The inverse permutation maps torch's order back to the paper's.
    assert torch.equal(F.pixel_shuffle(x, r), periodic_shuffle(x[:, perm.argsort()], r))
    if c == 1:
        assert torch.equal(perm, torch.arange(r * r))
        assert torch.equal(periodic_shuffle(x, r), F.pixel_shuffle(x, r))
    else:
        # The orders really differ for C > 1, so the permutation is needed.
        assert not torch.equal(periodic_shuffle(x, r), F.pixel_shuffle(x, r))


def test_periodic_shuffle_known_values_and_depth_to_space_order():
    # TF depth_to_space: out[y·r + i, x·r + j, c] = in[y, x, (i·r + j)·C + c].
    x = torch.arange(12.0).view(1, 12, 1, 1)  # C = 3, r = 2
    y = periodic_shuffle(x, 2)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert y[0, c, i, j] == (i * 2 + j) * 3 + c
    assert torch.equal(
        paper_to_torch_channel_order(3, 2), torch.tensor([0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])
    )


def test_periodic_shuffle_supports_extra_batch_dims():
    x = distinct_values(2, 3, 8, 2, 3)
    y = periodic_shuffle(x, 2)
    assert y.shape == (2, 3, 2, 4, 6)
    assert torch.equal(y[1, 2], periodic_shuffle(x[1, 2].unsqueeze(0), 2)[0])


def test_periodic_shuffle_rejects_bad_input():
    with pytest.raises(ValueError, match="divisible"):
        periodic_shuffle(torch.zeros(1, 5, 2, 2), 2)
    with pytest.raises(ValueError, match="divisible"):
        periodic_unshuffle(torch.zeros(1, 1, 3, 4), 2)
    with pytest.raises(ValueError, match="scale"):
        periodic_shuffle(torch.zeros(1, 4, 2, 2), 0)


# --------------------------------------------------------------------------- #
# SubpixelConv2d
# --------------------------------------------------------------------------- #


def test_espcn_layer_shape_and_composition():
    torch.manual_seed(0)
    layer = SubpixelConv2d(5, 3, 3, scale=3, padding=1).double()
    assert layer.conv.out_channels == 27 and layer.conv.padding == (0, 0)
    assert layer.scale == 3 and layer.crop == (0, 0) and layer.size_delta == (0, 0)
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (2, 3, 12, 18) and layer.output_size(4, 6) == (12, 18)
    expected = F.pixel_shuffle(F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1), 3)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_asymmetric_padding_and_crop():
    torch.manual_seed(0)
    layer = SubpixelConv2d(
        2, 1, (2, 3), scale=2, padding=(0, 2, 1, 0), crop=(1, 3), size_delta=(-2, -4)
    )
    x = torch.randn(1, 2, 5, 4)
    full = F.pixel_shuffle(layer.conv(F.pad(x, (0, 2, 1, 0))), 2)
    assert full.shape[-2:] == (10, 8)
    y = layer(x)
    assert y.shape[-2:] == layer.output_size(5, 4) == (8, 4)
    assert torch.equal(y, full[..., 1:9, 3:7])
    # size_delta=None keeps everything from the offset on.
    rest = SubpixelConv2d(2, 1, (2, 3), scale=2, padding=(0, 2, 1, 0), crop=(1, 3))
    assert rest.size_delta == (-1, -3)


def test_subpixel_conv_rejects_bad_geometry():
    with pytest.raises(ValueError, match="reaches past"):
        SubpixelConv2d(1, 1, 3, scale=2, padding=1, crop=(1, 0), size_delta=(0, 0))
    with pytest.raises(ValueError, match="non-negative"):
        SubpixelConv2d(1, 1, 3, scale=2, padding=(-1, 0, 0, 0))
    with pytest.raises(ValueError, match="too small"):
        SubpixelConv2d(1, 1, 3, scale=2)(torch.zeros(1, 1, 2, 5))


# --------------------------------------------------------------------------- #
# Transposed convolution <-> sub-pixel convolution
# --------------------------------------------------------------------------- #


def random_deconv(
    c_in, c_out, k, r, p, op, bias=True, dtype=torch.float64, seed=0
) -> nn.ConvTranspose2d:
    torch.manual_seed(seed)
    deconv = nn.ConvTranspose2d(
        c_in, c_out, k, stride=r, padding=p, output_padding=op, bias=bias, dtype=dtype
    )
    with torch.no_grad():
        # Nonzero border taps (so round trips are exact), scaled so outputs are
        # O(1): float32 rounding is then comparable with the 1e-5 tolerances.
        kh, kw = deconv.kernel_size
        deconv.weight.normal_(std=(c_in * max(1, kh * kw // (r * r))) ** -0.5)
        if bias:
            deconv.bias.normal_()
    return deconv


def assert_same_weights(a: nn.ConvTranspose2d, b: nn.ConvTranspose2d) -> None:
    assert (a.kernel_size, a.stride, a.padding, a.output_padding) == (
        b.kernel_size,
        b.stride,
        b.padding,
        b.output_padding,
    )
    assert torch.equal(a.weight, b.weight)
    assert (a.bias is None) == (b.bias is None)
    if a.bias is not None:
        assert torch.equal(a.bias, b.bias)


@st.composite
def deconv_cases(draw):
    r = draw(st.sampled_from([2, 3, 4]))
    kernel = st.one_of(st.sampled_from([r, 2 * r, 3 * r, 9, 5, 7]), st.integers(1, 10))
    kh = draw(kernel)
    kw = kh if draw(st.booleans()) else draw(kernel)
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    oph, opw = draw(st.integers(0, r - 1)), draw(st.integers(0, r - 1))
    c_in, c_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    assume((h - 1) * r - 2 * ph + kh + oph >= 1 and (w - 1) * r - 2 * pw + kw + opw >= 1)
    bias = draw(st.booleans())
    return r, (kh, kw), (ph, pw), (oph, opw), c_in, c_out, (h, w), bias


@MEDIUM
@given(deconv_cases(), st.integers(0, 2**16))
def test_deconv_to_subpixel_is_exact(case, seed):
    r, k, p, op, c_in, c_out, (h, w), bias = case
    deconv = random_deconv(c_in, c_out, k, r, p, op, bias, seed=seed)
    sub = deconv_to_subpixel(deconv)
    assert sub.scale == r and sub.conv.out_channels == c_out * r * r
    # The LR kernel is the smallest possible, ceil(K / r).
    assert sub.conv.kernel_size == (-(-k[0] // r), -(-k[1] // r))
    x = torch.randn(
        2, c_in, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    expected = deconv(x)
    assert sub.output_size(h, w) == tuple(expected.shape[-2:])
    torch.testing.assert_close(sub(x), expected, rtol=1e-10, atol=1e-12)

    back = subpixel_to_deconv(sub)
    assert_same_weights(back, deconv)


@FAST
@given(deconv_cases(), st.integers(0, 2**16))
def test_deconv_to_subpixel_float32(case, seed):
    r, k, p, op, c_in, c_out, (h, w), bias = case
    deconv = random_deconv(c_in, c_out, k, r, p, op, bias, dtype=torch.float32, seed=seed)
    sub = deconv_to_subpixel(deconv)
    assert sub.conv.weight.dtype == torch.float32
    x = torch.randn(1, c_in, h, w, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(sub(x), deconv(x), rtol=1e-5, atol=1e-5)


@MEDIUM
@given(deconv_cases(), st.integers(0, 2**16))
def test_deconv_via_subpixel_has_the_deconvolutions_output_and_gradients(case, seed):
    r, k, p, op, c_in, c_out, (h, w), bias = case
    deconv = random_deconv(c_in, c_out, k, r, p, op, bias, seed=seed)
    x = torch.randn(
        2, c_in, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
    )
    expected = deconv(x)
    upstream = torch.randn(expected.shape, dtype=torch.float64)
    expected_grads = torch.autograd.grad(expected, list(deconv.parameters()), upstream)
    output = deconv_via_subpixel(deconv, x)
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(output, list(deconv.parameters()), upstream)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("r", [2, 3, 4])
def test_deconv_via_subpixel_on_channels_last_features_as_fsrcnn_trains(r):
    # FSRCNN trains channels-last on CPU; the input's gradient feeds the layers before.
    deconv = random_deconv(56, 1, 9, r, 4, r - 1, dtype=torch.float32, seed=r)
    deconv = deconv.to(memory_format=torch.channels_last)
    x = torch.randn(4, 56, 17, 13, generator=torch.Generator().manual_seed(r))
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    expected = deconv(x)
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(r + 1))
    wanted = torch.autograd.grad(expected, [x, *deconv.parameters()], upstream)
    output = deconv_via_subpixel(deconv, x)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad(output, [x, *deconv.parameters()], upstream)
    for mine, theirs in zip(got, wanted, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("r", "lr_kernel", "padding", "crop"),
    [
        (2, 5, (2, 2, 2, 2), (0, 0)),
        (3, 3, (1, 2, 1, 2), (1, 1)),
        (4, 3, (1, 1, 1, 1), (0, 0)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fsrcnn_deconv(r, lr_kernel, padding, crop, dtype):
    # FSRCNN's last layer: 56 -> 1 channels, 9x9, padding 4, output_padding r - 1,
    # so that the output is exactly r·H x r·W.
    deconv = random_deconv(56, 1, 9, r, 4, r - 1, dtype=dtype, seed=r)
    sub = deconv_to_subpixel(deconv)
    assert sub.conv.kernel_size == (lr_kernel, lr_kernel)
    assert sub.padding == padding and sub.crop == crop and sub.size_delta == (0, 0)
    x = torch.randn(2, 56, 7, 6, dtype=dtype, generator=torch.Generator().manual_seed(0))
    y = sub(x)
    assert y.shape == (2, 1, 7 * r, 6 * r)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(y, deconv(x), rtol=tol, atol=tol)
    assert_same_weights(subpixel_to_deconv(sub), deconv)


@st.composite
def subpixel_cases(draw):
    r = draw(st.sampled_from([2, 3, 4]))
    lh, lw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    pad = tuple(draw(st.integers(0, 4)) for _ in range(4))  # left, right, top, bottom
    top, left = draw(st.integers(0, 2 * r)), draw(st.integers(0, 2 * r))
    full_dh = r * (pad[2] + pad[3] - lh + 1)
    full_dw = r * (pad[0] + pad[1] - lw + 1)
    dh = full_dh - top - draw(st.integers(0, 2 * r))
    dw = full_dw - left - draw(st.integers(0, 2 * r))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    assume(r * h + dh >= 1 and r * w + dw >= 1)
    assume(h + pad[2] + pad[3] >= lh and w + pad[0] + pad[1] >= lw)
    c_in, c_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return r, (lh, lw), pad, (top, left), (dh, dw), c_in, c_out, (h, w), draw(st.booleans())


@MEDIUM
@given(subpixel_cases(), st.integers(0, 2**16))
def test_subpixel_to_deconv_is_exact(case, seed):
    r, k, pad, crop, delta, c_in, c_out, (h, w), bias = case
    torch.manual_seed(seed)
    sub = SubpixelConv2d(c_in, c_out, k, r, pad, crop, delta, bias=bias, dtype=torch.float64)
    if bias:
        with torch.no_grad():  # a single transposed conv needs equal phase biases
            sub.conv.bias.copy_(torch.randn(c_out, dtype=torch.float64).repeat_interleave(r * r))
    deconv = subpixel_to_deconv(sub)
    assert deconv.stride == (r, r)
    assert min(deconv.padding) >= 0 and all(0 <= o < r for o in deconv.output_padding)
    x = torch.randn(2, c_in, h, w, dtype=torch.float64)
    y = sub(x)
    torch.testing.assert_close(deconv(x), y, rtol=1e-10, atol=1e-12)

    # subpixel -> deconv -> subpixel gives the same function (the geometry may
    # be normalised) and the same deconv again.
    again = deconv_to_subpixel(deconv)
    torch.testing.assert_close(again(x), y, rtol=1e-10, atol=1e-12)
    assert_same_weights(subpixel_to_deconv(again), deconv)


@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_espcn_layer_is_a_kr_by_kr_deconv(r, k):
    # The paper's equivalence: an LR conv (C_out·r², C_in, k, k) + PS is a
    # stride-r transposed conv with a (C_in, C_out, k·r, k·r) kernel.
    torch.manual_seed(k * 10 + r)
    sub = SubpixelConv2d(6, 2, k, r, padding=k // 2, dtype=torch.float64)
    with torch.no_grad():
        sub.conv.bias.copy_(torch.randn(2, dtype=torch.float64).repeat_interleave(r * r))
    deconv = subpixel_to_deconv(sub)
    assert deconv.weight.shape == (6, 2, k * r, k * r)
    assert deconv.padding == (r * (k // 2),) * 2 and deconv.output_padding == (0, 0)
    x = torch.randn(1, 6, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(deconv(x), sub(x), rtol=1e-10, atol=1e-12)
    # Converting back reproduces the very same layer, weights included.
    again = deconv_to_subpixel(deconv)
    assert (again.padding, again.crop, again.size_delta) == (sub.padding, sub.crop, sub.size_delta)
    assert torch.equal(again.conv.weight, sub.conv.weight)
    assert torch.equal(again.conv.bias, sub.conv.bias)


def test_subpixel_to_deconv_rejects_phase_dependent_bias():
    sub = SubpixelConv2d(3, 2, 3, scale=2, padding=1)
    with torch.no_grad():
        sub.conv.bias.copy_(torch.arange(8.0))
    with pytest.raises(ValueError, match="bias"):
        subpixel_to_deconv(sub)
    sub.conv.bias = None
    assert subpixel_to_deconv(sub).bias is None


def test_subpixel_to_deconv_rejects_non_plain_conv():
    sub = SubpixelConv2d(3, 1, 3, scale=2, padding=1)
    sub.conv = nn.Conv2d(3, 4, 3, dilation=2)
    with pytest.raises(ValueError, match="plain Conv2d"):
        subpixel_to_deconv(sub)


def test_leading_zero_taps_instead_of_negative_padding():
    # Left/top padding >= kernel size: the first HR rows see only padding. The
    # naive transposed-conv padding would be negative; zero taps absorb it.
    torch.manual_seed(0)
    sub = SubpixelConv2d(2, 1, 1, scale=2, padding=(3, 0, 3, 0), bias=False, dtype=torch.float64)
    deconv = subpixel_to_deconv(sub)
    assert deconv.padding == (0, 0) and deconv.kernel_size == (8, 8)
    assert torch.all(deconv.weight[..., :6, :] == 0) and torch.all(deconv.weight[..., :, :6] == 0)
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(deconv(x), sub(x), rtol=1e-12, atol=1e-12)


def test_deconv_to_subpixel_rejects_unsupported():
    with pytest.raises(ValueError, match="stride"):
        deconv_to_subpixel(nn.ConvTranspose2d(1, 1, 4, stride=(2, 3)))
    with pytest.raises(ValueError, match="groups"):
        deconv_to_subpixel(nn.ConvTranspose2d(2, 2, 4, stride=2, groups=2))
    with pytest.raises(ValueError, match="dilation"):
        deconv_to_subpixel(nn.ConvTranspose2d(1, 1, 4, stride=2, dilation=2))


# --------------------------------------------------------------------------- #
# ICNR
# --------------------------------------------------------------------------- #


def block_deviation(y: torch.Tensor, r: int) -> float:
    """Largest difference between an HR pixel and the top-left pixel of its r x r block."""
    b, c, hh, ww = y.shape
    blocks = y.reshape(b, c, hh // r, r, ww // r, r)
    return float((blocks - blocks[:, :, :, :1, :, :1]).abs().max().detach())


@pytest.mark.parametrize("r", [2, 3, 4])
@pytest.mark.parametrize(("c_in", "c_out"), [(1, 1), (3, 3), (8, 2), (16, 3)])
def test_icnr_gives_blockwise_constant_output(r, c_in, c_out):
    torch.manual_seed(r * 100 + c_in)
    x = torch.randn(2, c_in, 6, 5)
    conv = nn.Conv2d(c_in, c_out * r * r, 3, padding=1)
    # Control: a plainly initialised layer has different values inside a block,
    # so the check below is able to fail.
    assert block_deviation(F.pixel_shuffle(conv(x), r), r) > 1e-3
    icnr_init(conv, r)
    assert torch.all(conv.bias == 0)
    y = F.pixel_shuffle(conv(x), r)
    assert y.abs().max() > 1e-2  # not trivially constant
    assert block_deviation(y, r) < 1e-6

    layer = SubpixelConv2d(c_in, c_out, 3, r, padding=1)
    icnr_init(layer)
    assert block_deviation(layer(x), r) < 1e-6


def test_icnr_is_nearest_upsampled_deconv_kernel():
    # ICNR's sub-pixel layer equals a transposed conv whose k·r kernel is the
    # (flipped) sub-kernel upsampled by nearest neighbour.
    r = 3
    layer = SubpixelConv2d(4, 2, 3, r, padding=1, dtype=torch.float64)
    icnr_init(layer, r, init=nn.init.normal_)
    sub_kernel = layer.conv.weight[:: r * r]  # (C_out, C_in, 3, 3)
    expected = sub_kernel.flip(-2, -1).repeat_interleave(r, -2).repeat_interleave(r, -1)
    assert torch.equal(subpixel_to_deconv(layer).weight, expected.transpose(0, 1))


def test_icnr_errors_and_return_value():
    w = torch.empty(12, 2, 3, 3)
    assert icnr_(w, 2) is w
    with pytest.raises(ValueError, match="multiple"):
        icnr_(torch.empty(6, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="required"):
        icnr_init(nn.Conv2d(2, 8, 3))
    with pytest.raises(ValueError, match="disagrees"):
        icnr_init(SubpixelConv2d(2, 1, 3, 2, padding=1), 3)
