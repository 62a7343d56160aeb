"""The image pipeline's arithmetic on the network's device, for batches of frames.

``subpixel.pipeline.fastpath`` does the work around a luminance network on the CPU: on a GPU that is
20 ms of a 1080p frame around a 0.2 ms network, plus the trips of Y and its upscaled form
between host and device. Here the same steps run where the network runs, in float32 torch,
on a batch of frames that stays on the device from upload to download:

* **LR side, one matrix product.** RGB values (0..peak) times ``fastpath``'s 4 x 3 split
  matrix give Y on the network's [0, 1] scale and the three chroma terms on the output's
  0..peak scale (``fastpath._split_matrix_float64``).
* **The network once per batch**, on (B, 1, H, W) Y (or (B, 3, H, W) RGB for an RGB network).
* **Chroma (and alpha) by MATLAB bicubic as one grouped convolution.** At an integer scale r
  output phase (i, j) of LR pixel (y, x) is ``sum w[i, a] w[j, b] x[y - 2 + a, x - 2 + b]``
  (``models.bicubic.phase_weights``): a 5 x 5 kernel per phase, r^2 output channels per
  plane, interleaved by ``pixel_shuffle``. Edge pixels are replicated first, as MATLAB does.
* **HR side**: ``out_k = round(clip(g_k * Y_sr + c_k))`` (``fastpath.luma_gains``), half to
  even (``torch.round``), written into one (B, rH, rW, C) tensor of the input's type.

Gray images with a Y network go in as studio-swing Y and come back from it, and RGB networks
take the planes straight (gray as R = G = B, the mean of the three colours out), as
``subpixel.pipeline.image`` does. The results equal ``subpixel.upscale_image``'s to float rounding:
the steps are the same but the float32 sums run in another order, so a few pixels in ten
thousand may differ by one level; gray images and RGB networks, whose steps are the same
elementwise float32 operations, equal its numpy path exactly on the CPU.

Precision. The arithmetic around the network is float32 whatever the caller set up: autocast
is switched off for it, and so is TF32 (Ampere and later GPUs otherwise run float32
convolutions and matrix products with 10-bit mantissas, which would move 16-bit outputs by
tens of levels). Whether the *network* may use TF32 is the ``allow_tf32`` option (default
off: plain float32); ``tf32`` sets torch's two flags for a block and puts them back. Autocast
set by the caller (``torch.autocast("cuda", dtype=torch.float16)``) applies to the network
call only. The flags are process-wide: do not flip them from two threads at once.

16-bit. torch's ``uint16`` has little more than conversions, and those are all this module
does with it (``.to(torch.float32)`` in, ``copy_`` from float32 out), on the CPU and on CUDA.
Where frames come as ``int32`` holding 0..65535 (or a backend lacks ``uint16`` copies), pass
them as they are with ``peak=65535``: the output is ``int32`` too.

Example:
    >>> import torch
    >>> from subpixel.models import Bicubic
    >>> frames = torch.zeros(2, 4, 6, 3, dtype=torch.uint8)
    >>> upscale_frames(frames, Bicubic(3), scale=3, colour_space="y", peak=255).shape
    torch.Size([2, 12, 18, 3])
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from subpixel.bicubic import REACH, phase_weights
from subpixel.devices import resolve_device, tf32
from subpixel.errors import ImageError, ScaleError
from subpixel.pipeline.fastpath import _split_matrix_float64, luma_gains

__all__ = [
    "COLOUR_SPACES",
    "FRAME_DTYPES",
    "Network",
    "tf32",
    "upscale_frames",
    "upscale_image_on_device",
]

#: A network as this module calls it: (B, C, H, W) float32 in, (B, C, rH, rW) out.
Network = Callable[[Tensor], Tensor]

#: What a network takes: ``"y"`` (BT.601 studio-swing luminance) or ``"rgb"``.
COLOUR_SPACES = ("y", "rgb")

#: Frame types and the largest peak each can hold (int32: 16-bit values without ``uint16``).
FRAME_DTYPES: dict[torch.dtype, int] = {torch.uint8: 255, torch.uint16: 65535, torch.int32: 65535}


@contextlib.contextmanager
def _float32(device: torch.device) -> Iterator[None]:
    """Plain float32 for the arithmetic around the network: no autocast, no TF32."""
    with torch.autocast(device.type, enabled=False), tf32(False):
        yield


@functools.lru_cache(maxsize=32)
def _bicubic_kernel(scale: int, planes: int, device: torch.device) -> Tensor:
    """(planes r^2, 1, 5, 5) float32: phase (i, j)'s 2-D bicubic weights, for each plane.

    The outer product of the row and column phase weights, worked out in float64.
    """
    weights = phase_weights(scale)  # (r, 5)
    kernels = np.einsum("ia,jb->ijab", weights, weights).reshape(scale * scale, 1, 5, 5)
    return torch.from_numpy(np.tile(kernels, (planes, 1, 1, 1)).astype(np.float32)).to(device)


@functools.lru_cache(maxsize=32)
def _split(peak: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(3, 4) split matrix (transposed), (4,) offset and (1, 3, 1, 1) luma gains, float32."""
    matrix, offset = _split_matrix_float64(float(peak), float(peak))
    gains = np.asarray(luma_gains(float(peak)), np.float32).reshape(1, 3, 1, 1)
    as_tensor = functools.partial(torch.tensor, dtype=torch.float32, device=device)
    return as_tensor(matrix.T), as_tensor(offset), as_tensor(gains)


def _split_planes(rgb: Tensor, matrix: Tensor, offset: Tensor) -> Tensor:
    """(B, H, W, 3) RGB -> (B, 4, H, W): Y and the three chroma terms (``_split``'s matrix).

    Each term is the same sum, r m0 + g m1 + b m2 + offset, element by element: a matrix
    product would sum in an order that depends on how many rows it gets (BLAS blocks them),
    so a frame's values, and at times its bytes, would depend on its batch and its layout.
    """
    red, green, blue = rgb.unbind(-1)
    terms = [
        red * matrix[0, k] + green * matrix[1, k] + blue * matrix[2, k] + offset[k]
        for k in range(matrix.shape[1])
    ]
    return torch.stack(terms, dim=1)


def _divide(values: Tensor, divisor: float) -> Tensor:
    # A divisor held in a 1-element tensor, not a Python number: torch may divide by a
    # number as a multiplication by its reciprocal (one more rounding than numpy's ``/``).
    return values / torch.full((1,), divisor, dtype=values.dtype, device=values.device)


def _standard(planes: Tensor) -> Tensor:
    """A copy in the standard (B, C, H, W) layout. ``contiguous()`` is not enough: one
    plane cut from (B, H, W, C) counts as contiguous yet has channels-last strides, and
    convolutions then take other kernels (other float sums) than for a plain tensor."""
    return planes.clone(memory_format=torch.contiguous_format)


def _bicubic(planes: Tensor, scale: int) -> Tensor:
    """MATLAB bicubic by an integer ``scale``: (B, P, H, W) float32 -> (B, P, rH, rW)."""
    count = planes.shape[1]
    padded = F.pad(planes, (REACH, REACH, REACH, REACH), mode="replicate")
    kernel = _bicubic_kernel(scale, count, planes.device)
    phases = F.conv2d(padded, kernel, groups=count)  # (B, P r^2, H, W)
    return F.pixel_shuffle(phases, scale)


def _run(network: Network, lr: Tensor, scale: int, allow_tf32: bool) -> Tensor:
    """(B, C, H, W) float32 -> network -> (B, C, rH, rW) float32, shape checked."""
    with tf32(allow_tf32):
        sr = network(lr)
    batch, channels, height, width = lr.shape
    expected = (batch, channels, scale * height, scale * width)
    if tuple(sr.shape) != expected:
        raise ScaleError(
            f"the network turned {tuple(lr.shape)} into {tuple(sr.shape)}, expected {expected}"
            f" at scale {scale}"
        )
    return sr.float()


def _check_frames(frames: Tensor, scale: int, colour_space: str, peak: int) -> None:
    if frames.dtype not in FRAME_DTYPES:
        names = ", ".join(str(dtype).removeprefix("torch.") for dtype in FRAME_DTYPES)
        raise ImageError(f"frames must be {names}, got {frames.dtype}")
    if frames.dim() != 4 or frames.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"frames must be (B, H, W, C) with C in 1..4, got {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise ImageError(f"frames are empty: {tuple(frames.shape)}")
    if colour_space not in COLOUR_SPACES:
        raise ValueError(f"colour_space must be one of {COLOUR_SPACES}, got {colour_space!r}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ScaleError(f"scale must be a positive integer (the network's), got {scale!r}")
    most = FRAME_DTYPES[frames.dtype]
    if isinstance(peak, bool) or not isinstance(peak, int) or not 1 <= peak <= most:
        raise ImageError(f"peak must be an integer in 1..{most} for {frames.dtype}, got {peak!r}")


def upscale_frames(
    frames: Tensor,
    network: Network,
    *,
    scale: int,
    colour_space: str,
    peak: int,
    allow_tf32: bool = False,
) -> Tensor:
    """Upscale a batch of integer frames on their device; returns (B, rH, rW, C), same type.

    Args:
        frames: (B, H, W, C) ``uint8``, ``uint16`` or ``int32`` values in 0..``peak``, on the
            network's device. C is 1 (gray) or 3 (RGB), plus a last alpha plane (2 or 4);
            alpha is upscaled by MATLAB bicubic.
        network: (B, C, H, W) float32 in [0, 1] -> (B, C, rH, rW), C = 1 for a Y network,
            3 for an RGB one (a ``subpixel.load_model`` network, or one in ``torch.autocast``
            or compiled). Called once per batch.
        scale: the network's integer scale r.
        colour_space: ``"y"`` (BT.601 studio-swing luminance network) or ``"rgb"``.
        peak: the largest value: 255 for 8 bits, 65535 for 16 bits.
        allow_tf32: let the network's float32 convolutions and matrix products use TF32 on
            CUDA (``tf32``); the arithmetic around it never does.

    Raises:
        ImageError: frames of another type or shape, or a peak they cannot hold.
        ScaleError: a scale that is not a positive integer, or a network output of another
            size than r times its input.
        ValueError: an unknown ``colour_space``.

    Example:
        >>> import torch
        >>> from subpixel.models import Bicubic
        >>> frames = torch.full((1, 2, 2, 1), 200, dtype=torch.uint8)
        >>> upscale_frames(frames, Bicubic(2), scale=2, colour_space="y", peak=255).unique()
        tensor([200], dtype=torch.uint8)
    """
    _check_frames(frames, scale, colour_space, peak)
    batch, height, width, channels = frames.shape
    colours = 3 if channels >= 3 else 1
    has_alpha = channels in (2, 4)
    device = frames.device
    with torch.inference_mode():
        with _float32(device):
            values = frames.to(torch.float32)  # (B, H, W, C)
            shape = (batch, channels, scale * height, scale * width)
            out = torch.empty(shape, dtype=torch.float32, device=device)
            bicubic: list[Tensor] = []  # (B, 1 or 3, H, W) planes for the bicubic
            if colours == 3 and colour_space == "y":
                matrix, offset, gains = _split(peak, device)
                stacked = _split_planes(values[..., :3], matrix, offset)  # (B, 4, H, W)
                lr = _standard(stacked[:, :1])
                bicubic.append(stacked[:, 1:])  # the chroma terms, on the 0..peak scale
            else:
                lr = values[..., :colours].permute(0, 3, 1, 2) * (1.0 / peak)
                if colour_space == "y":  # gray as studio-swing Y, as R = G = B would give
                    lr = _divide(16.0 + 219.0 * lr, 255.0)
                elif colours == 1:  # an RGB network sees gray as R = G = B
                    lr = lr.expand(-1, 3, -1, -1)
                lr = _standard(lr)
            if has_alpha:
                bicubic.append(values[..., -1:].permute(0, 3, 1, 2) * (1.0 / peak))
            planes = _bicubic(torch.cat(bicubic, dim=1), scale) if bicubic else None

        sr = _run(network, lr, scale, allow_tf32)  # under the caller's autocast, if any

        with _float32(device):
            if colours == 3 and colour_space == "y":
                assert planes is not None
                torch.mul(sr, gains, out=out[:, :3])
                out[:, :3] += planes[:, :3]
            elif colour_space == "y":
                # Back from studio-swing Y: (Y 255 - 16) / 219 on the 0..peak scale.
                torch.mul(sr, (255.0 / 219.0) * peak, out=out[:, :1])
                out[:, :1] += (-16.0 / 219.0) * peak
            elif colours == 1:  # the mean of the RGB network's three colours
                mean = _divide(sr[:, :1] + sr[:, 1:2] + sr[:, 2:], 3.0)
                torch.mul(mean, float(peak), out=out[:, :1])
            else:
                torch.mul(sr, float(peak), out=out[:, :3])
            if has_alpha:
                assert planes is not None
                torch.mul(planes[:, -1:], float(peak), out=out[:, -1:])
            out.round_().clamp_(0, peak)  # half to even, as np.rint
            result = torch.empty(
                (batch, scale * height, scale * width, channels), dtype=frames.dtype, device=device
            )
            result.permute(0, 3, 1, 2).copy_(out)
    return result


def upscale_image_on_device(
    array: np.ndarray,
    network: Network,
    *,
    scale: int,
    colour_space: str,
    device: str | torch.device,
    allow_tf32: bool = False,
) -> np.ndarray:
    """One uint8/uint16 (H, W) or (H, W, C) image through ``upscale_frames`` on ``device``.

    One upload, one batch of one, one download; the result has the input's type and layout
    ((rH, rW) for (H, W)). ``network`` must already be on ``device`` (a name as
    ``subpixel.devices.resolve_device`` takes it).

    Raises:
        ImageError: an array of another type or shape.
        DeviceError: a device this machine does not have.

    Example:
        >>> import numpy as np
        >>> from subpixel.models import Bicubic
        >>> image = np.zeros((4, 6, 3), np.uint8)
        >>> upscale_image_on_device(image, Bicubic(2), scale=2, colour_space="y",
        ...                         device="cpu").shape
        (8, 12, 3)
    """
    target = resolve_device(device)
    original = np.asarray(array)
    peaks = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
    if original.dtype not in peaks:
        raise ImageError(f"arrays must be uint8 or uint16, got {original.dtype}")
    image = original[..., None] if original.ndim == 2 else original
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"arrays must be (H, W) or (H, W, C) with C in 1..4, got {original.shape}")
    frames = torch.from_numpy(np.ascontiguousarray(image))[None].to(target)
    out = upscale_frames(
        frames,
        network,
        scale=scale,
        colour_space=colour_space,
        peak=peaks[original.dtype],
        allow_tf32=allow_tf32,
    )
    result = out[0].cpu().numpy()
    return result.reshape(result.shape[:2]) if original.ndim == 2 else result
