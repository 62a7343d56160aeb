from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from subpixel import models
from subpixel.errors import ImageError
from subpixel.layers import SubpixelConv2d, deconv_to_subpixel
from subpixel.pipeline.tiling import (
    TilingError,
    estimate_tile_memory,
    receptive_radius,
    run_tiled,
    tile_for_memory,
)
from subpixel.upscaler import upscale_array
from subpixel.weights import describe

FAST = settings(derandomize=True, deadline=None, max_examples=25)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    # Hundreds of tiny tiles: worker threads only add overhead (and stall when the cores are
    # busy), so run these tests on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NAMES = ("espcn", "espcn-7", "fsrcnn", "fsrcnn-s", "fsrcnn-subpixel", "srcnn", "srcnn-915")
TILES = (1, 2, 3, 5, 7, 16, 1000)


def _build(name: str, scale: int, channels: int = 1) -> nn.Module:
    """A network with random weights, in float64 so that tiled and untiled runs agree to
    ~1e-15 and any missing context (~1e-2) stands out; float32 is checked separately."""
    torch.manual_seed(0)
    if name == "fsrcnn-subpixel":
        net = models.fsrcnn_to_subpixel(models.build("fsrcnn", scale=scale, channels=channels))
    else:
        net = models.build(name, scale=scale, channels=channels)
    for module in net.modules():
        # Random biases and a visible deconvolution, so every tap matters.
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and module.bias is not None:
            nn.init.uniform_(module.bias, -0.2, 0.2)
        if isinstance(module, nn.ConvTranspose2d):
            nn.init.normal_(module.weight, std=0.05)
    return net.double().eval()


def _measured_radius(net: nn.Module, channels: int, scale: int, size: int = 31) -> int:
    """Perturb the centre pixel and see how far (in LR pixels) the output changes."""
    centre = size // 2
    lr = torch.rand(1, channels, size, size, dtype=torch.float64)
    bumped = lr.clone()
    bumped[0, :, centre, centre] += 0.25
    with torch.no_grad():
        changed = (net(bumped) - net(lr)).abs().amax(dim=(0, 1)) > 0
    rows, cols = torch.nonzero(changed, as_tuple=True)
    # Far from the border, so the field is not cut off: it must fit well inside the probe.
    assert rows.min() > 0 and rows.max() < scale * size - 1
    return int(max((rows // scale - centre).abs().max(), (cols // scale - centre).abs().max()))


@pytest.mark.parametrize(("name", "scale"), list(itertools.product((*NAMES, "bicubic"), (2, 3, 4))))
def test_receptive_radius_matches_a_brute_force_measurement(name: str, scale: int) -> None:
    channels = 3 if scale == 3 else 1
    net = models.Bicubic(scale) if name == "bicubic" else _build(name, scale, channels)
    torch.manual_seed(scale)  # the probe image
    assert receptive_radius(net) == _measured_radius(net, channels, scale)


def test_receptive_radius_of_the_built_in_networks() -> None:
    # The numbers the docstring and README quote, per scale 2, 3, 4.
    expected = {
        "espcn": [4, 4, 4],
        "espcn-7": [8, 8, 8],
        "fsrcnn": [8, 8, 7],
        "fsrcnn-s": [5, 5, 4],
        "srcnn": [6, 4, 4],
        "srcnn-915": [5, 4, 3],
        "bicubic": [2, 2, 2],
    }
    for name, radii in expected.items():
        assert [receptive_radius(models.build(name, scale=s)) for s in (2, 3, 4)] == radii


@st.composite
def chains(draw: st.DrawFn) -> tuple[nn.Module, int]:
    """A random chain of convolutions (any kernel and dilation, "same" padding) and an upsampler."""
    layers: list[nn.Module] = []
    width = 2
    for _ in range(draw(st.integers(0, 3))):
        kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        layers += [nn.Conv2d(width, 3, kernel, dilation=dilation, padding="same"), nn.PReLU()]
        width = 3
    scale = draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["shuffle", "deconv", "subpixel"]))
    if kind == "shuffle":
        k = draw(st.sampled_from([1, 3, 5]))
        layers += [nn.Conv2d(width, scale * scale, k, padding=k // 2), nn.PixelShuffle(scale)]
    else:
        # Output (H - 1) s - 2p + k + op must be s H: k - s + op = 2p.
        k = draw(st.integers(scale, 3 * scale + 2))
        op = draw(st.integers(0, scale - 1))
        assume((k - scale + op) % 2 == 0)
        deconv = nn.ConvTranspose2d(
            width, 1, k, stride=scale, padding=(k - scale + op) // 2, output_padding=op
        )
        layers.append(deconv_to_subpixel(deconv) if kind == "subpixel" else deconv)
    return nn.Sequential(*layers).double(), scale


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@FAST
@given(chains(), st.integers(0, 2**16))
def test_receptive_radius_of_random_chains_matches_brute_force(
    chain: tuple[nn.Module, int], seed: int
) -> None:
    net, scale = chain
    torch.manual_seed(seed)
    assert receptive_radius(net) == _measured_radius(net, 2, scale, size=41)


def _image(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((height, width, channels), dtype=np.float64).astype(np.float32)


def _assert_tiled_equals_untiled(net: nn.Module, planes: np.ndarray, **options: object) -> None:
    has_alpha = planes.shape[-1] in (2, 4)
    whole = upscale_array(planes, net, has_alpha=has_alpha, **options)  # type: ignore[arg-type]
    for tile in TILES:
        tiled = upscale_array(planes, net, has_alpha=has_alpha, tile=tile, **options)  # type: ignore[arg-type]
        assert tiled.shape == whole.shape
        assert np.abs(tiled - whole).max() <= 1e-6, f"tile {tile}"


# Every network at every scale, each in three layouts across the scales: a Y network on RGB +
# alpha (network, bicubic chroma, bicubic alpha), a Y network on gray, an RGB network on RGB.
LAYOUTS = ("y-rgba", "y-gray", "rgb")
CASES = [
    (name, scale, LAYOUTS[(i + scale) % 3])
    for i, name in enumerate((*NAMES, "bicubic"))
    for scale in (2, 3, 4)
]


@pytest.mark.parametrize(("name", "scale", "layout"), CASES)
def test_tiled_equals_untiled_for_every_tile_size(name: str, scale: int, layout: str) -> None:
    channels = 3 if layout == "rgb" else 1
    if name == "bicubic":
        net = models.build("bicubic", scale=scale, channels=channels)
        describe(net, "bicubic")
    else:
        net = _build(name, scale, channels)
    # Big enough for tiles of 1 and 2 that see real neighbours on every side.
    size = 2 * receptive_radius(net) + 5
    planes = _image(size, size + 2, {"y-rgba": 4, "y-gray": 1, "rgb": 3}[layout])
    _assert_tiled_equals_untiled(net, planes)


@pytest.mark.parametrize("name", ["espcn", "espcn-7"])
def test_tiled_equals_untiled_in_float32(name: str) -> None:
    # With the paper's initialisation, in float32: only oneDNN's rounding, which depends on
    # the tensor width, separates the two.
    torch.manual_seed(0)
    net = models.build(name, scale=3).eval()
    describe(net, name)
    _assert_tiled_equals_untiled(net, _image(21, 19, 3))


@pytest.mark.parametrize(("scale", "native"), [(2.5, 2), (1.5, 2), (1, 2), (3.7, 4), (5, 3)])
def test_tiled_equals_untiled_at_non_native_scales(scale: float, native: int) -> None:
    net = _build("espcn", native)
    _assert_tiled_equals_untiled(net, _image(10, 9, 4, seed=3), scale=scale)


def test_tiled_equals_untiled_with_alpha_through_the_network() -> None:
    _assert_tiled_equals_untiled(_build("fsrcnn-s", 3), _image(8, 10, 2), alpha="network")


def test_progress_reports_every_tile() -> None:
    net = _build("espcn", 2)
    calls: list[tuple[int, int]] = []
    upscale_array(_image(10, 13, 3), net, tile=4, progress=lambda *c: calls.append(c))
    assert calls == [(done, 12) for done in range(1, 13)]  # 3 rows x 4 columns of tiles
    calls.clear()
    upscale_array(_image(10, 13, 3), net, progress=lambda *c: calls.append(c))
    assert calls == [(1, 1)]


def test_a_memory_ceiling_that_forces_tiles_gives_the_exact_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The ceiling is the whole process's: what it holds (here said to be 1 MiB) and the
    # finished output come first, the tiles get the rest.
    monkeypatch.setattr("subpixel.pipeline.image.resident_memory", lambda: 2**20)
    net = _build("fsrcnn", 3)
    planes = _image(24, 30, 3)
    budget = estimate_tile_memory(net, 3, 7)
    assert tile_for_memory(net, 3, budget) == 7
    assert estimate_tile_memory(net, 3, 8) > budget
    ceiling = 2**20 + 72 * 90 * 3 * 4 + budget  # held + float32 output + one tile of 7
    calls: list[tuple[int, int]] = []
    tiled = upscale_array(planes, net, max_memory=ceiling, progress=lambda *c: calls.append(c))
    assert calls[-1] == (20, 20)  # 4 x 5 tiles of 7
    assert np.abs(tiled - upscale_array(planes, net)).max() <= 1e-6


def test_bigger_budgets_give_bigger_tiles_and_estimates_grow_with_the_tile() -> None:
    net = models.build("espcn", scale=3)
    tiles = [tile_for_memory(net, 3, 2**k) for k in range(24, 32)]
    assert tiles == sorted(tiles) and tiles[0] < tiles[-1]
    for tile in tiles:
        assert estimate_tile_memory(net, 3, tile) <= 2 ** (24 + tiles.index(tile))
    # A non-native scale needs more memory per LR pixel than the native one.
    assert tile_for_memory(net, 3, 2**28, scale=6) < tile_for_memory(net, 3, 2**28)


def test_bad_tiles_and_budgets_are_refused() -> None:
    net = _build("espcn", 2)
    planes = _image(5, 5, 1)
    for tile in (0, -3, 2.5, True):
        with pytest.raises(TilingError, match="tile"):
            upscale_array(planes, net, tile=tile)  # type: ignore[arg-type]
    with pytest.raises(TilingError, match="not both"):
        upscale_array(planes, net, tile=4, max_memory=2**30)
    with pytest.raises(ImageError, match="does not fit a memory ceiling of 0 MiB"):
        upscale_array(planes, net, max_memory=1000)
    with pytest.raises(TilingError, match="radius"):
        run_tiled(lambda x: x, planes, 1, lambda *a: None, tile=2, radius=-1)


def test_layers_that_cannot_be_tiled_are_refused() -> None:
    class Interpolating(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, lr: torch.Tensor) -> torch.Tensor:
            return nn.functional.interpolate(self.conv(lr), scale_factor=2)

    with pytest.raises(TilingError, match="not done by a module"):
        receptive_radius(Interpolating())
    with pytest.raises(TilingError, match="AvgPool2d"):
        receptive_radius(nn.Sequential(nn.AvgPool2d(3, 1, 1), nn.Conv2d(1, 1, 3, padding=1)))
    with pytest.raises(TilingError, match="circular"):
        receptive_radius(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"))
    with pytest.raises(TilingError, match="strided"):
        receptive_radius(nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.PixelShuffle(2)))


def test_a_lopsided_sub_pixel_layer_is_measured_and_tiled_exactly() -> None:
    # More padding on the right and bottom than on the left and top, and a crop: the window
    # reaches 1 LR pixel one way and 3 the other; the radius is the larger.
    torch.manual_seed(0)
    layer = SubpixelConv2d(2, 1, 4, scale=2, padding=(1, 3, 1, 3), crop=(1, 1), size_delta=(0, 0))
    layer.double()
    assert receptive_radius(layer) == _measured_radius(layer, 2, 2) == 3
    lr = np.random.default_rng(0).random((13, 11, 2))

    def upscale(crop: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
        with torch.no_grad():
            return layer(tensor)[0].numpy().transpose(1, 2, 0)

    whole = upscale(lr)
    out = np.empty_like(whole, dtype=np.float32)
    written = np.empty(whole.shape[:2], int)

    def write(rows: slice, cols: slice, block: np.ndarray) -> None:
        out[rows, cols] = block
        written[rows, cols] += 1

    for tile in (1, 2, 4):
        out.fill(np.nan)
        written.fill(0)
        run_tiled(upscale, lr, 2, write, tile=tile, radius=3)
        assert np.all(written == 1)  # every output pixel exactly once
        assert np.abs(out - whole).max() <= 1e-6
