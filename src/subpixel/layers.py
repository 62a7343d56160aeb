"""Sub-pixel convolution layers and their exact link to transposed convolution.

Two papers by Shi et al. (2016) are the basis of this module:

* ESPCN, "Real-Time Single Image and Video Super-Resolution Using an Efficient
  Sub-Pixel Convolutional Neural Network": all convolutions run in LR space and
  the last layer produces ``C·r²`` channels that a *periodic shuffle* (PS)
  rearranges into an ``r``-times larger image.
* "Is the deconvolution layer the same as a convolutional layer?": a stride-``r``
  transposed convolution ("deconvolution") equals an LR-space convolution with
  ``r²`` times as many outputs followed by PS. Each HR pixel phase
  ``(o mod r)`` only ever sees one sub-lattice of the transposed kernel's taps.

The module provides:

* :func:`periodic_shuffle` / :func:`periodic_unshuffle`: PS with the paper's
  channel order (the order TensorFlow's ``depth_to_space`` uses), and
  :func:`paper_to_torch_channel_order` to relate it to ``F.pixel_shuffle``.
* :class:`SubpixelConv2d`: pad -> LR conv -> ``pixel_shuffle`` -> crop, general
  enough to represent *any* stride-``r`` transposed convolution exactly.
* :func:`deconv_to_subpixel` / :func:`subpixel_to_deconv`: exact conversions
  between the two.
* :func:`icnr_` / :func:`icnr_init`: ICNR initialisation (Aitken et al. 2017,
  "Checkerboard artifact free sub-pixel convolution").

Conventions: tensors are NCHW; "phase" means the position ``(i, j)`` of an HR
pixel inside its ``r x r`` block (``i`` = row, ``j`` = column); torch's
``pixel_shuffle`` reads channel ``c·r² + i·r + j`` for colour ``c`` and phase
``(i, j)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SubpixelConv2d",
    "deconv_to_subpixel",
    "deconv_via_subpixel",
    "icnr_",
    "icnr_init",
    "paper_to_torch_channel_order",
    "periodic_shuffle",
    "periodic_unshuffle",
    "subpixel_to_deconv",
]


# --------------------------------------------------------------------------- #
# Periodic shuffle
# --------------------------------------------------------------------------- #


def _check_scale(scale: int) -> int:
    # bool is an int subclass; True as a scale factor is almost surely a bug.
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    return scale


def periodic_shuffle(x: Tensor, scale: int) -> Tensor:
    """Periodic shuffle (PS) exactly as defined in the ESPCN paper.

    The paper defines, channel-last,
    ``PS(T)[x, y, c] = T[floor(x/r), floor(y/r), C·r·mod(y, r) + C·mod(x, r) + c]``.
    Taking the paper's ``y`` as the row and ``x`` as the column, the HR pixel at
    row ``Y``, column ``X`` of colour ``c`` reads LR channel
    ``C·(r·(Y mod r) + (X mod r)) + c``: the phase varies slowest and the colour
    fastest. This is TensorFlow's ``depth_to_space`` order; torch's
    ``F.pixel_shuffle`` uses ``c·r² + i·r + j`` (colour slowest) instead, see
    :func:`paper_to_torch_channel_order`.

    Args:
        x: Tensor of shape ``(*, C·r², H, W)``.
        scale: Upscaling factor ``r >= 1``.

    Returns:
        Tensor of shape ``(*, C, r·H, r·W)``.

    Raises:
        ValueError: If ``x`` has fewer than 3 dims or its channel count is not
            a multiple of ``r²``.

    Example:
        >>> x = torch.arange(8.0).view(1, 8, 1, 1)  # C = 2, r = 2
        >>> periodic_shuffle(x, 2)[0, 0]  # colour 0 reads channels 0, 2, 4, 6
        tensor([[0., 2.],
                [4., 6.]])
    """
    r = _check_scale(scale)
    if x.dim() < 3:
        raise ValueError(f"expected a tensor of shape (*, C*r^2, H, W), got {tuple(x.shape)}")
    *batch, c_in, h, w = x.shape
    if c_in % (r * r):
        raise ValueError(f"channel count {c_in} is not divisible by scale^2 = {r * r}")
    c = c_in // (r * r)
    # Split channels as (phase row i, phase col j, colour c): phase slowest.
    t = x.reshape(-1, r, r, c, h, w)
    # (N, i, j, c, H, W) -> (N, c, H, i, W, j); merging (H, i) and (W, j) puts
    # phase i at row H·r + i, i.e. Y mod r = i, as the formula requires.
    t = t.permute(0, 3, 4, 1, 5, 2)
    return t.reshape(*batch, c, h * r, w * r)


def periodic_unshuffle(x: Tensor, scale: int) -> Tensor:
    """Inverse of :func:`periodic_shuffle` (the paper's channel order).

    Args:
        x: Tensor of shape ``(*, C, r·H, r·W)``.
        scale: Downscaling factor ``r >= 1``.

    Returns:
        Tensor of shape ``(*, C·r², H, W)`` such that
        ``periodic_shuffle(periodic_unshuffle(x, r), r) == x``.

    Raises:
        ValueError: If ``x`` has fewer than 3 dims or its spatial size is not a
            multiple of ``r``.

    Example:
        >>> x = torch.randn(1, 3, 4, 6)
        >>> torch.equal(periodic_shuffle(periodic_unshuffle(x, 2), 2), x)
        True
    """
    r = _check_scale(scale)
    if x.dim() < 3:
        raise ValueError(f"expected a tensor of shape (*, C, r*H, r*W), got {tuple(x.shape)}")
    *batch, c, hr_h, hr_w = x.shape
    if hr_h % r or hr_w % r:
        raise ValueError(f"spatial size {(hr_h, hr_w)} is not divisible by scale {r}")
    h, w = hr_h // r, hr_w // r
    # Exactly the inverse view/permute of periodic_shuffle.
    t = x.reshape(-1, c, h, r, w, r)  # (N, c, H, i, W, j)
    t = t.permute(0, 3, 5, 1, 2, 4)  # (N, i, j, c, H, W)
    return t.reshape(*batch, r * r * c, h, w)


def paper_to_torch_channel_order(channels: int, scale: int) -> Tensor:
    """Channel permutation from the paper's PS order to torch's ``pixel_shuffle``.

    ``periodic_shuffle(x, r) == F.pixel_shuffle(x[:, perm], r)`` for
    ``perm = paper_to_torch_channel_order(C, r)``. Torch reads colour ``c`` at
    phase ``s = i·r + j`` from channel ``c·r² + s``; the paper from
    ``C·s + c``; hence ``perm[c·r² + s] = C·s + c``. For ``C = 1`` the two
    orders coincide and ``perm`` is the identity. The inverse permutation
    (torch -> paper) is ``perm.argsort()``.

    Args:
        channels: Number of output colour channels ``C`` (after the shuffle).
        scale: Upscaling factor ``r``.

    Returns:
        A ``torch.long`` index tensor of length ``C·r²``.

    Example:
        >>> paper_to_torch_channel_order(2, 2)
        tensor([0, 2, 4, 6, 1, 3, 5, 7])
    """
    r = _check_scale(scale)
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    # arange viewed as (phase s, colour c) holds C·s + c; reading it colour-major
    # lists it at position c·r² + s.
    return torch.arange(channels * r * r).view(r * r, channels).t().reshape(-1)


# --------------------------------------------------------------------------- #
# Sub-pixel convolution
# --------------------------------------------------------------------------- #


def _pair(v: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return (int(v[0]), int(v[1]))


class SubpixelConv2d(nn.Module):
    """LR-space convolution followed by a sub-pixel shuffle (ESPCN's last layer).

    ``forward`` computes::

        zero-pad (left, right, top, bottom)
        -> Conv2d(in_channels, out_channels·r², kernel_size, stride 1, no padding)
        -> F.pixel_shuffle(r)          # torch channel order c·r² + i·r + j
        -> crop rows [top, top + r·H + dh), cols [left, left + r·W + dw)

    where ``H x W`` is the LR *input* size and ``(dh, dw) = size_delta``. The
    output size is thus ``(r·H + dh, r·W + dw)``: the size rule of a stride-``r``
    transposed convolution, ``(H - 1)·r - 2p + K + output_padding``, is
    ``r·H + (K - r - 2p + output_padding)``, so any such layer fits this form.
    The asymmetric padding and the crop offset are what let the module place
    the HR grid at any sub-pixel shift relative to the LR grid, which is needed
    to represent every transposed convolution exactly (see
    :func:`deconv_to_subpixel`).

    The plain ESPCN layer is ``SubpixelConv2d(c_in, c_out, 3, r, padding=1)``:
    "same" padding, no crop, output ``(r·H, r·W)``.

    Args:
        in_channels: LR input channels.
        out_channels: HR output channels (the conv has ``out_channels·r²``).
        kernel_size: LR kernel size, int or ``(kh, kw)``.
        scale: Upscaling factor ``r >= 1``.
        padding: Zero padding of the LR input; an int for all sides or
            ``(left, right, top, bottom)`` as in ``F.pad``.
        crop: ``(top, left)`` offset of the output window in the shuffled HR
            map, in HR pixels. ``None`` means ``(0, 0)``.
        size_delta: ``(dh, dw)`` so that the output is ``(r·H + dh, r·W + dw)``.
            ``None`` keeps everything from the crop offset to the end of the
            shuffled map.
        bias: Whether the conv has a bias.
        device: Parameter device.
        dtype: Parameter dtype.

    Attributes:
        conv: The ``nn.Conv2d`` (``out_channels·r²`` outputs, ``padding=0``).
        scale: The factor ``r``.
        padding: ``(left, right, top, bottom)``.
        crop: ``(top, left)``.
        size_delta: ``(dh, dw)``.

    Raises:
        ValueError: On negative padding or crop, or a crop window that would
            reach past the end of the shuffled map.

    Example:
        >>> layer = SubpixelConv2d(64, 3, kernel_size=3, scale=3, padding=1)
        >>> layer(torch.randn(2, 64, 10, 12)).shape
        torch.Size([2, 3, 30, 36])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        scale: int,
        padding: int | tuple[int, int, int, int] = 0,
        crop: tuple[int, int] | None = None,
        size_delta: tuple[int, int] | None = None,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        r = _check_scale(scale)
        kh, kw = _pair(kernel_size, "kernel_size")
        if isinstance(padding, int):
            padding = (padding,) * 4
        if len(padding) != 4:
            raise ValueError(f"padding must be an int or (left, right, top, bottom), got {padding}")
        pad = tuple(int(p) for p in padding)
        if min(pad) < 0:
            raise ValueError(f"padding must be non-negative, got {pad}")
        top, left = (0, 0) if crop is None else _pair(crop, "crop")
        if top < 0 or left < 0:
            raise ValueError(f"crop offset must be non-negative, got {(top, left)}")

        # The shuffled map is r·(H + pad_t + pad_b - kh + 1) tall, i.e.
        # r·H + full_dh: its size rule has the same form as the output's.
        full_dh = r * (pad[2] + pad[3] - kh + 1)
        full_dw = r * (pad[0] + pad[1] - kw + 1)
        if size_delta is None:
            size_delta = (full_dh - top, full_dw - left)
        dh, dw = _pair(size_delta, "size_delta")
        # Checking here (independent of H) rather than in forward turns a silent
        # short crop into an early, clear error.
        if top + dh > full_dh or left + dw > full_dw:
            raise ValueError(
                f"crop window (offset {(top, left)}, size r*H{dh:+d} x r*W{dw:+d}) reaches past "
                f"the shuffled map (size r*H{full_dh:+d} x r*W{full_dw:+d}); add bottom/right "
                "padding or shrink size_delta"
            )

        self.scale = r
        self.padding: tuple[int, int, int, int] = pad  # type: ignore[assignment]
        self.crop: tuple[int, int] = (top, left)
        self.size_delta: tuple[int, int] = (dh, dw)
        self._full_delta = (full_dh, full_dw)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels * r * r,
            (kh, kw),
            padding=0,
            bias=bias,
            device=device,
            dtype=dtype,
        )

    @property
    def in_channels(self) -> int:
        """LR input channels."""
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        """HR output channels (after the shuffle)."""
        return self.conv.out_channels // (self.scale * self.scale)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """HR output size for an LR input of ``height x width``.

        Example:
            >>> SubpixelConv2d(1, 1, 3, scale=2, padding=1).output_size(5, 7)
            (10, 14)
        """
        return (self.scale * height + self.size_delta[0], self.scale * width + self.size_delta[1])

    def forward(self, x: Tensor) -> Tensor:
        """Apply pad -> conv -> pixel_shuffle -> crop to ``(N, C_in, H, W)``."""
        h, w = x.shape[-2:]
        out_h, out_w = self.output_size(h, w)
        kh, kw = self.conv.kernel_size
        pl, pr, pt, pb = self.padding
        if out_h < 1 or out_w < 1 or h + pt + pb < kh or w + pl + pr < kw:
            raise ValueError(f"input size {(h, w)} is too small for {self!r}")
        if any(self.padding):
            x = F.pad(x, self.padding)
        y = F.pixel_shuffle(self.conv(x), self.scale)
        top, left = self.crop
        # Skip the slice in the common uncropped case (it would be a no-op view).
        if (top, left) != (0, 0) or self.size_delta != self._full_delta:
            y = y[..., top : top + out_h, left : left + out_w]
        return y

    def extra_repr(self) -> str:
        kh, kw = self.conv.kernel_size
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size=({kh}, {kw}), "
            f"scale={self.scale}, padding={self.padding}, crop={self.crop}, "
            f"size_delta={self.size_delta}, bias={self.conv.bias is not None}"
        )


# --------------------------------------------------------------------------- #
# Transposed convolution <-> sub-pixel convolution
# --------------------------------------------------------------------------- #
#
# 1-D derivation (the 2-D case is separable). A stride-r transposed conv is
#     y[o] = sum_i x[i] · W[o + p - r·i]        (taps outside [0, K) are zero),
# with output length (H - 1)·r - 2p + K + op = r·H + delta.
# SubpixelConv2d computes, with left pad P_b, LR kernel V of length L, crop c0:
#     y[o] = u[o + c0],   u[r·q + phi] = sum_t x[q + t - P_b] · V_phi[t].
# Substituting i = q + t - P_b gives V_phi[t] = W[phi + r·(P_b - t) + p - c0]:
# every LR tap t of phase phi is one transposed-conv tap. We choose
#     D = floor((K - 1) / r),  P' = min(floor(p / r), D),
#     c0 = p - r·P',  P_b = D - P',  L = D + 1 = ceil(K / r),
# so that the tap index becomes  k = phi + r·(D - t)  (independent of p), all
# taps k in [0, K) are covered by t in [0, L), and c0, P_b >= 0. L = ceil(K/r)
# is the smallest possible: some phase owns ceil(K/r) taps, spaced r apart.
#
# It is convenient to lay the r·L sub-kernel taps out in one "full" transposed
# kernel of length r·L with index j = phi + r·(L - 1 - t): for the choice above
# j == k, so the full kernel is just W zero-padded at the end.


@dataclass(frozen=True)
class _Geometry1d:
    lr_kernel: int  # L
    pad_before: int  # P_b
    pad_after: int
    crop: int  # c0
    size_delta: int  # output length = r·H + size_delta


def _geometry_from_deconv(k: int, p: int, op: int, r: int) -> _Geometry1d:
    d = (k - 1) // r
    p_lr = min(p // r, d)
    crop = p - r * p_lr
    pad_before = d - p_lr
    lr_kernel = d + 1
    delta = k - r - 2 * p + op
    # Smallest pad_after with r·(H + P_b + P_a - L + 1) >= c0 + r·H + delta.
    need = -(-(crop + delta) // r) + lr_kernel - 1 - pad_before
    return _Geometry1d(lr_kernel, pad_before, max(0, need), crop, delta)


def _full_to_phase_kernel(w_full: Tensor, r: int) -> Tensor:
    """(C_in, C_out, r·Lh, r·Lw) full kernel -> (C_out·r², C_in, Lh, Lw) conv weight."""
    c_in, c_out, fh, fw = w_full.shape
    lh, lw = fh // r, fw // r
    # Full index j = t'·r + phi with t' = L - 1 - t: split, then flip t' -> t.
    t = w_full.reshape(c_in, c_out, lh, r, lw, r)
    t = t.permute(1, 3, 5, 0, 2, 4)  # (C_out, phi_y, phi_x, C_in, t'_y, t'_x)
    t = t.flip(-2, -1)
    return t.reshape(c_out * r * r, c_in, lh, lw)


def _phase_to_full_kernel(w_conv: Tensor, r: int) -> Tensor:
    """Exact inverse of :func:`_full_to_phase_kernel`."""
    c_out_r2, c_in, lh, lw = w_conv.shape
    c_out = c_out_r2 // (r * r)
    t = w_conv.reshape(c_out, r, r, c_in, lh, lw).flip(-2, -1)
    t = t.permute(3, 0, 4, 1, 5, 2)  # (C_in, C_out, t'_y, phi_y, t'_x, phi_x)
    return t.reshape(c_in, c_out, lh * r, lw * r)


def _deconv_geometry(deconv: nn.ConvTranspose2d) -> tuple[int, _Geometry1d, _Geometry1d]:
    """The scale and per-axis sub-pixel geometry of a stride-``r`` transposed convolution."""
    sh, sw = deconv.stride
    if sh != sw:
        raise ValueError(f"stride must be equal in both dims, got {deconv.stride}")
    if deconv.groups != 1:
        raise ValueError(f"groups must be 1, got {deconv.groups}")
    if tuple(deconv.dilation) != (1, 1):
        raise ValueError(f"dilation must be 1, got {deconv.dilation}")
    if deconv.padding_mode != "zeros":
        raise ValueError(f"padding_mode must be 'zeros', got {deconv.padding_mode!r}")
    kh, kw = deconv.kernel_size
    gy = _geometry_from_deconv(kh, int(deconv.padding[0]), deconv.output_padding[0], sh)
    gx = _geometry_from_deconv(kw, int(deconv.padding[1]), deconv.output_padding[1], sh)
    return sh, gy, gx


def _phase_parameters(
    deconv: nn.ConvTranspose2d, r: int, gy: _Geometry1d, gx: _Geometry1d
) -> tuple[Tensor, Tensor | None]:
    """The sub-pixel convolution's weight and bias, as differentiable functions of the
    transposed convolution's own parameters."""
    kh, kw = deconv.kernel_size
    # With our geometry the full kernel is W zero-padded at the end (j == k).
    w_full = F.pad(deconv.weight, (0, r * gx.lr_kernel - kw, 0, r * gy.lr_kernel - kh))
    # pixel_shuffle channel c·r² + s is colour c for every phase s.
    bias = None if deconv.bias is None else deconv.bias.repeat_interleave(r * r)
    return _full_to_phase_kernel(w_full, r), bias


def deconv_via_subpixel(deconv: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``deconv(x)`` computed in its sub-pixel form: an LR-space convolution and a shuffle.

    The sub-pixel weights are rearranged from ``deconv``'s own parameters on every call, so
    gradients flow to them: training can run the faster form while the layer, its state dict
    and its optimiser state stay those of the transposed convolution. Taps that the
    rearrangement pads with zeros (kernels that are not a multiple of ``r``) stay zero.

    Example:
        >>> deconv = nn.ConvTranspose2d(8, 1, 9, stride=3, padding=4, output_padding=2)
        >>> x = torch.randn(2, 8, 5, 5)
        >>> torch.allclose(deconv_via_subpixel(deconv, x), deconv(x), atol=1e-5)
        True
    """
    r, gy, gx = _deconv_geometry(deconv)
    weight, bias = _phase_parameters(deconv, r, gy, gx)
    if x.is_contiguous(memory_format=torch.channels_last):
        # Else oneDNN hands back x's gradient in the other layout, and the layers before
        # (PReLU) then mix layouts, 10x slower there.
        weight = weight.contiguous(memory_format=torch.channels_last)
    h, w = x.shape[-2:]
    # The convolution pads by the larger side on both (its own padding: no padded copy of
    # ``x`` to fill and differentiate, 1.2-1.8x faster steps of this layer on CPU); the
    # extra LR rows and columns this adds before ``x`` move the crop by r each.
    py, px = max(gy.pad_before, gy.pad_after), max(gx.pad_before, gx.pad_after)
    y = F.pixel_shuffle(F.conv2d(x, weight, bias, padding=(py, px)), r)
    top = gy.crop + r * (py - gy.pad_before)
    left = gx.crop + r * (px - gx.pad_before)
    return y[..., top : top + r * h + gy.size_delta, left : left + r * w + gx.size_delta]


def deconv_to_subpixel(deconv: nn.ConvTranspose2d) -> SubpixelConv2d:
    """Convert a stride-``r`` transposed convolution into an exact :class:`SubpixelConv2d`.

    Any kernel size (including sizes that are not multiples of ``r``, e.g.
    FSRCNN's 9x9 at ``r = 2, 3, 4``), padding and ``output_padding < r`` are
    supported. The LR kernel is ``ceil(K / r)`` per dim, the smallest possible;
    phases with fewer taps get zeros. The bias is repeated ``r²`` times.

    Args:
        deconv: ``nn.ConvTranspose2d`` with stride ``(r, r)``, ``groups=1``,
            ``dilation=1``.

    Returns:
        A new module on the deconv's device/dtype whose output equals
        ``deconv(x)`` for every valid input (up to float rounding).

    Raises:
        ValueError: For unequal strides, groups != 1 or dilation != 1.

    Example:
        >>> deconv = nn.ConvTranspose2d(56, 1, 9, stride=3, padding=4, output_padding=2)
        >>> sub = deconv_to_subpixel(deconv)
        >>> sub.conv.weight.shape, sub.padding, sub.crop
        (torch.Size([9, 56, 3, 3]), (1, 2, 1, 2), (1, 1))
        >>> x = torch.randn(1, 56, 5, 5)
        >>> torch.allclose(sub(x), deconv(x), atol=1e-5)
        True
    """
    r, gy, gx = _deconv_geometry(deconv)
    weight = deconv.weight
    module = SubpixelConv2d(
        deconv.in_channels,
        deconv.out_channels,
        (gy.lr_kernel, gx.lr_kernel),
        r,
        padding=(gx.pad_before, gx.pad_after, gy.pad_before, gy.pad_after),
        crop=(gy.crop, gx.crop),
        size_delta=(gy.size_delta, gx.size_delta),
        bias=deconv.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        phase_weight, phase_bias = _phase_parameters(deconv, r, gy, gx)
        module.conv.weight.copy_(phase_weight)
        if phase_bias is not None:
            assert module.conv.bias is not None  # built with bias=True above
            module.conv.bias.copy_(phase_bias)
    return module


def _deconv_from_geometry(
    r: int, lr_kernel: int, pad_before: int, crop: int, delta: int, lo: int, hi: int
) -> tuple[int, int, int, int]:
    """1-D transposed-conv geometry for a sub-pixel layer.

    The full kernel index j (length r·L) corresponds to the transposed-conv tap
    k = j + m0 + p - c0 with m0 = r·(P_b - L + 1). Only full taps lo..hi are
    nonzero and kept. ``a`` leading zero taps may be prepended (which raises
    both p and output_padding by one each) and ``b`` trailing ones appended
    (lowering output_padding by one); that is enough to always reach p >= 0
    and 0 <= output_padding < r.

    Returns:
        ``(kernel_size, padding, output_padding, a)``.
    """
    m_lo, m_hi = r * (pad_before - lr_kernel + 1) + lo, r * (pad_before - lr_kernel + 1) + hi
    a = max(0, m_lo - crop)  # p = c0 - m_lo + a must be >= 0
    op = delta + r + 2 * crop - m_lo - m_hi - 1 + a  # from r·H + delta = (H-1)·r - 2p + K + op
    if op < 0:
        a, op = a - op, 0
    b = max(0, op - (r - 1))
    op -= b
    return hi - lo + 1 + a + b, crop - m_lo + a, op, a


def subpixel_to_deconv(module: SubpixelConv2d) -> nn.ConvTranspose2d:
    """Convert a :class:`SubpixelConv2d` into an exact ``nn.ConvTranspose2d``.

    This inverts :func:`deconv_to_subpixel` exactly (bit-identical weights, for
    kernels whose border taps are not all zero) and also converts layers built
    directly, e.g. ESPCN's ``SubpixelConv2d(c_in, c_out, k, r, padding=(k-1)//2)``
    becomes a transposed conv with kernel ``k·r`` (the paper's
    ``(C_in, C_out, k·r, k·r)`` equivalence), padding ``r·(k-1)//2`` and
    ``output_padding = 0`` (for odd ``k``).

    Border rows/columns of the transposed kernel that are zero for every
    channel pair are trimmed, so the result is the smallest equivalent
    transposed conv. Geometry never forces a negative padding: where the
    sub-pixel layer's output starts before any input tap reaches it (e.g. left
    padding >= kernel size), leading zero taps are added instead.

    Args:
        module: The sub-pixel layer (its ``conv`` must have stride 1, dilation
            1, groups 1, zero ``padding`` and ``padding_mode='zeros'``).

    Returns:
        A new ``nn.ConvTranspose2d`` (stride ``r``) on the module's device/dtype
        whose output equals ``module(x)`` for every valid input.

    Raises:
        ValueError: If the bias differs between the ``r²`` phases of a colour
            channel (a transposed conv has one bias per output channel), or if
            ``module.conv`` is not a plain stride-1 convolution.

    Example:
        >>> layer = SubpixelConv2d(8, 3, 3, scale=2, padding=1)
        >>> with torch.no_grad():
        ...     _ = layer.conv.bias.copy_(torch.arange(3.0).repeat_interleave(4))
        >>> deconv = subpixel_to_deconv(layer)
        >>> deconv.weight.shape, deconv.padding, deconv.output_padding
        (torch.Size([8, 3, 6, 6]), (2, 2), (0, 0))
        >>> x = torch.randn(1, 8, 4, 5)
        >>> torch.allclose(deconv(x), layer(x), atol=1e-5)
        True
    """
    conv = module.conv
    if (
        tuple(conv.stride) != (1, 1)
        or tuple(conv.dilation) != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
        or isinstance(conv.padding, str)
        or any(conv.padding)
    ):
        raise ValueError(
            "module.conv must be a plain Conv2d (stride 1, dilation 1, groups 1, padding 0); "
            f"got {conv!r}"
        )
    r = module.scale
    c_out = module.out_channels
    bias = None
    if conv.bias is not None:
        per_phase = conv.bias.detach().view(c_out, r * r)
        if not torch.equal(per_phase, per_phase[:, :1].expand_as(per_phase)):
            raise ValueError(
                "cannot express this SubpixelConv2d as a single ConvTranspose2d: its bias "
                f"differs between the {r * r} sub-pixel phases of an output channel, but a "
                "transposed convolution has one bias per output channel"
            )
        bias = per_phase[:, 0]

    with torch.no_grad():
        w_full = _phase_to_full_kernel(conv.weight.detach(), r)
    lh, lw = conv.kernel_size
    pl, _, pt, _ = module.padding
    top, left = module.crop
    dh, dw = module.size_delta

    def nonzero_span(dims: tuple[int, ...], length: int) -> tuple[int, int]:
        # Trim only taps that are zero for all channel pairs; all-zero -> keep all.
        idx = (w_full != 0).any(dim=dims).nonzero().flatten()
        return (int(idx[0]), int(idx[-1])) if idx.numel() else (0, length - 1)

    lo_y, hi_y = nonzero_span((0, 1, 3), r * lh)
    lo_x, hi_x = nonzero_span((0, 1, 2), r * lw)
    kh, ph, oph, ay = _deconv_from_geometry(r, lh, pt, top, dh, lo_y, hi_y)
    kw, pw, opw, ax = _deconv_from_geometry(r, lw, pl, left, dw, lo_x, hi_x)

    weight = conv.weight
    deconv = nn.ConvTranspose2d(
        conv.in_channels,
        c_out,
        (kh, kw),
        stride=r,
        padding=(ph, pw),
        output_padding=(oph, opw),
        bias=bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        deconv.weight.zero_()
        deconv.weight[:, :, ay : ay + hi_y - lo_y + 1, ax : ax + hi_x - lo_x + 1] = w_full[
            :, :, lo_y : hi_y + 1, lo_x : hi_x + 1
        ]
        if bias is not None:
            assert deconv.bias is not None  # built with bias=True above
            deconv.bias.copy_(bias)
    return deconv


# --------------------------------------------------------------------------- #
# ICNR initialisation
# --------------------------------------------------------------------------- #


def icnr_(
    weight: Tensor,
    scale: int,
    init: Callable[[Tensor], object] = nn.init.kaiming_normal_,
) -> Tensor:
    """ICNR initialisation (Aitken et al. 2017), in place.

    A sub-pixel conv whose ``r²`` phase kernels are identical produces, after
    ``pixel_shuffle``, the same value at every phase of an ``r x r`` block: it
    is nearest-neighbour upsampling of a single LR convolution and therefore
    free of checkerboard artifacts at initialisation. ICNR draws one
    ``(C_out, C_in, kh, kw)`` sub-kernel with ``init`` and copies it to all
    phases in torch's channel order ``c·r² + s``.

    Args:
        weight: Conv weight of shape ``(C_out·r², C_in, kh, kw)``.
        scale: Upscaling factor ``r``.
        init: In-place initialiser applied to the sub-kernel. The default
            (Kaiming normal) sees the same fan-in as the full kernel.

    Returns:
        ``weight`` itself.

    Raises:
        ValueError: If ``weight.shape[0]`` is not a multiple of ``r²``.

    Example:
        >>> conv = nn.Conv2d(4, 3 * 4, 3, padding=1)
        >>> _ = icnr_(conv.weight, 2)
        >>> torch.equal(conv.weight[0], conv.weight[3])  # colour 0, phases 0 and 3
        True
    """
    r = _check_scale(scale)
    n = weight.shape[0]
    if n % (r * r):
        raise ValueError(f"weight has {n} output channels, not a multiple of scale^2 = {r * r}")
    sub = torch.empty((n // (r * r), *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(r * r, dim=0))
    return weight


def icnr_init(
    module: SubpixelConv2d | nn.Conv2d,
    scale: int | None = None,
    init: Callable[[Tensor], object] = nn.init.kaiming_normal_,
) -> None:
    """Initialise a sub-pixel layer by ICNR and zero its bias.

    A zero bias is trivially equal across the ``r²`` phases, which keeps the
    initial output blockwise constant (and the layer convertible by
    :func:`subpixel_to_deconv`).

    Args:
        module: A :class:`SubpixelConv2d`, or the ``nn.Conv2d`` that feeds a
            ``pixel_shuffle``.
        scale: Upscaling factor; defaults to ``module.scale`` for a
            :class:`SubpixelConv2d` and is required for a plain ``nn.Conv2d``.
        init: Initialiser for the sub-kernel, see :func:`icnr_`.

    Raises:
        ValueError: If ``scale`` is missing for a plain conv or disagrees with
            ``module.scale``.

    Example:
        >>> layer = SubpixelConv2d(16, 1, 3, scale=4, padding=1)
        >>> icnr_init(layer)
        >>> y = layer(torch.randn(1, 16, 5, 5))
        >>> bool((y - y[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1))
        ...      .abs().max() < 1e-6)
        True
    """
    if isinstance(module, SubpixelConv2d):
        if scale is not None and scale != module.scale:
            raise ValueError(f"scale {scale} disagrees with module.scale {module.scale}")
        conv, r = module.conv, module.scale
    else:
        if scale is None:
            raise ValueError("scale is required when initialising a plain nn.Conv2d")
        conv, r = module, scale
    icnr_(conv.weight, r, init)
    if conv.bias is not None:
        with torch.no_grad():
            conv.bias.zero_()
