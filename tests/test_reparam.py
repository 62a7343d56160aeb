"""Re-parameterised blocks (subpixel.reparam) and the networks built from them (ecbsr, sesr,
fsrcnn-linear): every block equals its collapsed convolution, the merged-kernel forward
equals the branch forward with the same gradients, and a network collapses into an ordinary
ESPCN or FSRCNN that saves, loads, tiles and costs like one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from subpixel import models
from subpixel.pipeline.tiling import receptive_radius
from subpixel.reparam import (
    Collapsible,
    CollapsibleLinearBlock,
    EdgeOrientedBlock,
    compose_1x1_kxk,
    pad_with_bias,
)
from subpixel.weights import card_of, describe, load_network, save_weights

FAST = settings(derandomize=True, deadline=None, max_examples=60)

Block = EdgeOrientedBlock | CollapsibleLinearBlock


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Unit-scale random values in every parameter (fresh ECB edge scales are ~1e-3, which
    would let an error in those branches hide under any tolerance)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter[0].numel() if parameter.dim() > 1 else 4
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / math.sqrt(fan_in))
    return module


def _branch_form(module: nn.Module, merged: bool) -> None:
    for block in module.modules():
        if isinstance(block, EdgeOrientedBlock | CollapsibleLinearBlock):
            block.merged = merged


@st.composite
def blocks(draw: st.DrawFn) -> tuple[Block, torch.Tensor]:
    """A random block (either kind), in float64 with random weights, and an input for it:
    channels 1..5, kernels 1..7 (ECB from 3), hidden 1..8, sizes 1..9 (a 1x1 image too)."""
    kind = draw(st.sampled_from(["ecb", "sesr"]))
    c_in, c_out = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if draw(st.booleans()):
        c_out = c_in  # the identity branch is present
    kernel = draw(st.sampled_from([3, 5, 7] if kind == "ecb" else [1, 3, 5, 7]))
    hidden, identity = draw(st.integers(1, 8)), draw(st.booleans())
    block: Block
    if kind == "ecb":
        block = EdgeOrientedBlock(c_in, c_out, kernel, hidden, identity)
    else:
        block = CollapsibleLinearBlock(c_in, c_out, kernel, hidden, identity)
    _randomise(block.double(), draw(st.integers(0, 2**16)))
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    x = torch.randn(b, c_in, h, w, generator=torch.Generator().manual_seed(h * 10 + w))
    return block, x.double()


# --------------------------------------------------------------------------- #
# Blocks
# --------------------------------------------------------------------------- #


def test_bias_padding_is_what_the_1x1_gives_on_a_zero_padded_input() -> None:
    conv = _randomise(nn.Conv2d(3, 4, 1).double(), 0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    assert conv.bias is not None
    padded = pad_with_bias(conv(x), conv.bias, 2)
    torch.testing.assert_close(padded, conv(F.pad(x, (2, 2, 2, 2))), rtol=0, atol=1e-12)
    assert torch.equal(padded[..., 2:-2, 2:-2], conv(x))  # the interior bit for bit
    assert torch.equal(padded[:, :, 0, 0], conv.bias.expand(2, 4))


def test_composed_kernel_needs_the_bias_padding_at_the_border() -> None:
    """The collapse is exact only with the 1x1's output padded by its bias: zero padding
    differs from the composed convolution exactly on the border ring."""
    first, second = (
        _randomise(nn.Conv2d(2, 3, 1).double(), 1),
        _randomise(nn.Conv2d(3, 2, 3).double(), 2),
    )
    assert first.bias is not None and second.bias is not None
    weight, bias = compose_1x1_kxk(first.weight, first.bias, second.weight, second.bias)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    collapsed = F.conv2d(x, weight, bias, padding=1)
    with_bias = second(pad_with_bias(first(x), first.bias, 1))
    with_zeros = second(F.pad(first(x), (1, 1, 1, 1)))
    torch.testing.assert_close(with_bias, collapsed, rtol=0, atol=1e-12)
    torch.testing.assert_close(with_zeros[..., 1:-1, 1:-1], collapsed[..., 1:-1, 1:-1])
    assert (with_zeros - collapsed)[..., 0, :].abs().min() > 1e-6


@FAST
@given(blocks())
def test_block_equals_its_collapsed_conv(case: tuple[Block, torch.Tensor]) -> None:
    block, x = case
    conv = block.collapse()
    assert isinstance(conv, nn.Conv2d) and isinstance(block, Collapsible)
    assert conv.kernel_size == (block.kernel_size, block.kernel_size)
    expected = block.forward_branches(x)
    assert conv(x).shape == expected.shape == (x.shape[0], block.out_channels, *x.shape[2:])
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=1e-10)


@FAST
@given(blocks())
def test_merged_forward_equals_branches_with_the_same_gradients(
    case: tuple[Block, torch.Tensor],
) -> None:
    block, x = case
    weights = torch.randn(x.shape[0], block.out_channels, *x.shape[2:], dtype=torch.float64)
    results = []
    for merged in (False, True):
        block.merged = merged
        block.zero_grad()
        source = x.clone().requires_grad_(True)
        (block(source) * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in block.named_parameters() if p.grad is not None}
        results.append((block(x).detach(), source.grad, grads))
    (y0, dx0, g0), (y1, dx1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=0, atol=1e-10)
    torch.testing.assert_close(dx1, dx0, rtol=0, atol=1e-10)
    assert g0.keys() == g1.keys() == {n for n, _ in block.named_parameters()}
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-9, atol=1e-9, msg=name)


@FAST
@given(blocks(), st.integers(0, 2**16))
def test_a_block_set_to_a_kernel_collapses_to_that_kernel(
    case: tuple[Block, torch.Tensor], seed: int
) -> None:
    """``set_collapsed`` inverts ``collapse``: the branches change so that they sum to any
    given kernel, and the branches that the ECB's plain convolution does not take over keep
    their values (none is zeroed, so every branch still learns)."""
    block, x = case
    k = block.kernel_size
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(block.out_channels, block.in_channels, k, k, generator=generator)
    bias = torch.randn(block.out_channels, generator=generator)
    weight, bias = weight.double(), bias.double()
    if isinstance(block, CollapsibleLinearBlock) and block.expand.out_channels < weight[0].numel():
        with pytest.raises(ValueError, match=r"cannot hold every .* needs hidden >= "):
            block.set_collapsed(weight, bias)
        return
    kept = "project" if isinstance(block, CollapsibleLinearBlock) else "conv."
    before = {n: p.clone() for n, p in block.named_parameters() if not n.startswith(kept)}
    block.set_collapsed(weight, bias)
    conv = block.collapse()
    torch.testing.assert_close(conv.weight, weight, rtol=0, atol=1e-9)
    torch.testing.assert_close(conv.bias, bias, rtol=0, atol=1e-9)
    expected = F.conv2d(x, weight, bias, padding=k // 2)
    torch.testing.assert_close(block.forward_branches(x), expected, rtol=0, atol=1e-9)
    for name, value in before.items():
        assert torch.equal(block.get_parameter(name), value), name
    with pytest.raises(ValueError, match="cannot set a"):
        block.set_collapsed(F.pad(weight, (1, 1, 1, 1)), bias)  # a (k+2)x(k+2) kernel


def test_fresh_float32_blocks_collapse_to_1e_5() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 16, 12, 12)
    for block in (EdgeOrientedBlock(16, 16), CollapsibleLinearBlock(16, 16, 3, 256)):
        expected = block.forward_branches(x)
        torch.testing.assert_close(block.collapse()(x), expected, rtol=1e-5, atol=1e-5)


def test_merged_forward_is_the_default_and_edge_filters_are_not_saved() -> None:
    block = EdgeOrientedBlock(4, 4)
    assert block.merged and CollapsibleLinearBlock(4, 4).merged
    assert "edge_filters" not in block.state_dict()
    assert block.edge_filters[2].tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]  # Laplacian


def test_branches_are_named_and_sum_to_the_merged_kernel() -> None:
    ecb = _randomise(EdgeOrientedBlock(2, 2, 5).double(), 3)
    assert list(ecb.branch_parameters()) == [
        "5x5",
        "1x1 -> 5x5",
        "1x1 -> sobel-x",
        "1x1 -> sobel-y",
        "1x1 -> laplacian",
        "identity",
    ]
    sesr = CollapsibleLinearBlock(2, 3, 3)
    assert list(sesr.branch_parameters()) == ["3x3 -> 1x1"]  # no identity from 2 to 3
    # The Sobel-x branch alone is its filter, scaled, after the 1x1.
    weight, _ = ecb.branch_parameters()["1x1 -> sobel-x"]
    scale, row = ecb.edge_scale[1], ecb.edge_inputs.weight[1, :, 0, 0]  # output 1
    sobel = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=torch.float64)
    expected = scale * row[:, None, None] * F.pad(sobel, (1, 1, 1, 1))
    torch.testing.assert_close(weight[1], expected, rtol=0, atol=1e-15)


def test_bad_kernel_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="odd and >= 3"):
        EdgeOrientedBlock(1, 1, 1)  # the 3x3 edge filters need room
    with pytest.raises(ValueError, match="odd"):
        CollapsibleLinearBlock(1, 1, 4)


# --------------------------------------------------------------------------- #
# Networks
# --------------------------------------------------------------------------- #

NETS = [("ecbsr", 2, 1), ("ecbsr", 3, 3), ("ecbsr", 4, 1), ("sesr", 2, 3), ("sesr", 3, 1)]


@pytest.mark.parametrize(("name", "scale", "channels"), NETS)
def test_network_collapses_into_an_equal_espcn(name: str, scale: int, channels: int) -> None:
    _, plain = _collapsed_equals_branches(name, scale, channels)
    assert type(plain) is models.ESPCN and plain.config.residual
    assert plain.config.activation == "prelu"


def _collapsed_equals_branches(name: str, scale: int, channels: int) -> tuple[nn.Module, nn.Module]:
    """A float64 network ``name`` with random weights and its collapsed form, checked to
    compute what its branches compute, run one by one and merged."""
    net = _randomise(models.build(name, scale=scale, channels=channels).double(), scale)
    lr = torch.rand(2, channels, 7, 10, dtype=torch.float64)
    plain = net.collapse()
    _branch_form(net, merged=False)
    expected = net(lr)
    assert expected.shape == (2, channels, 7 * scale, 10 * scale)
    torch.testing.assert_close(plain(lr), expected, rtol=1e-9, atol=1e-9)
    _branch_form(net, merged=True)
    torch.testing.assert_close(net(lr), expected, rtol=1e-9, atol=1e-9)
    assert isinstance(net, models.SRNetwork)
    torch.testing.assert_close(net.forward_for_training(lr), expected, rtol=1e-9, atol=1e-9)
    return net, plain


@pytest.mark.parametrize(("name", "scale", "channels"), NETS)
def test_a_network_goes_back_from_its_collapsed_form(name: str, scale: int, channels: int) -> None:
    """A fresh network loaded with another's collapsed form computes what that one does, so
    a shipped (collapsed) file can be trained further in the re-parameterised form."""
    trained = _randomise(models.build(name, scale=scale, channels=channels).double(), 1)
    fresh = models.build(name, scale=scale, channels=channels).double()
    fresh.load_collapsed(trained.collapse())
    lr = torch.rand(2, channels, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(fresh(lr), trained(lr), rtol=1e-9, atol=1e-9)
    wider = models.build(name, scale=scale, channels=channels, features=8).collapse()
    with pytest.raises(ValueError, match="into a network that collapses into"):
        fresh.load_collapsed(wider)


def test_espcn_residual_adds_the_nearest_neighbour_upsampled_input() -> None:
    config = models.ESPCNConfig(scale=3, channels=3, features=(8,), kernels=(3, 3))
    plain = models.ESPCN(config)
    residual = models.ESPCN(models.ESPCNConfig(**{**config.__dict__, "residual": True}))
    residual.load_state_dict(plain.state_dict())
    lr = torch.rand(2, 3, 5, 4)
    nearest = lr.repeat_interleave(3, -2).repeat_interleave(3, -1)  # colour by colour
    torch.testing.assert_close(residual(lr), plain(lr) + nearest, rtol=0, atol=1e-6)
    assert not models.ESPCNConfig().residual  # today's networks are unchanged


def test_collapsed_configs_and_receptive_radius() -> None:
    ecbsr = models.build("ecbsr", scale=3)
    assert ecbsr.collapse().config.features == (16,) * 5  # ECBSR-M4C16: six 3x3 convs
    assert ecbsr.collapse().config.kernels == (3,) * 6
    assert receptive_radius(ecbsr) == receptive_radius(ecbsr.collapse()) == 6
    sesr = models.build("sesr", scale=2, blocks=5, kernels=(5, 3, 5))  # SESR-M5
    assert sesr.collapse().config.kernels == (5, 3, 3, 3, 3, 3, 5)
    assert receptive_radius(sesr) == 2 + 5 + 2


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_defaults_cost_no_more_than_fsrcnn(scale: int) -> None:
    fsrcnn = models.measure_complexity(models.build("fsrcnn", scale=scale), 1)
    for name in ("ecbsr", "sesr"):
        net = models.build(name, scale=scale)
        plain = models.measure_complexity(net.collapse(), 1)
        assert 0 < plain.macs_per_pixel <= fsrcnn.macs_per_pixel, name
        assert models.measure_complexity(net, 1) == plain  # measured as it runs
        # Training adds parameters, not inference cost.
        assert sum(p.numel() for p in net.parameters()) > plain.parameters


@pytest.mark.parametrize("name", ["ecbsr", "sesr"])
def test_weights_are_saved_collapsed_and_load_as_espcn(name: str, tmp_path: Path) -> None:
    net = _randomise(models.build(name, scale=2), 7).eval()
    describe(net, name, training={"iterations": 3})
    path = save_weights(net, tmp_path / "net.safetensors")
    loaded = load_network(path)
    assert type(loaded) is models.ESPCN
    card = card_of(loaded)
    assert card.architecture == "espcn" and card.config["residual"] is True
    assert card.training["iterations"] == 3
    assert card.training["collapsed_from"] == name and card.name == name
    lr = torch.rand(1, 1, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), net(lr), rtol=1e-5, atol=1e-5)


def test_training_form_trains_and_still_collapses() -> None:
    """A few dozen Adam steps through the merged kernels learn a sharpening x2 map."""
    torch.manual_seed(0)
    net = models.build("ecbsr", scale=2, blocks=1, features=8, hidden=16).train()
    hr = torch.rand(8, 1, 24, 24)
    lr = F.avg_pool2d(hr, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = F.mse_loss(net(lr), hr)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    with torch.no_grad():
        torch.testing.assert_close(net.collapse()(lr), net(lr), rtol=1e-5, atol=1e-5)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown block"):
        models.build("ecbsr", block="rep")
    with pytest.raises(ValueError, match="ecb kernel sizes"):
        models.build("ecbsr", kernels=(1, 3, 3))


# --------------------------------------------------------------------------- #
# FSRCNN trained with collapsible linear blocks
# --------------------------------------------------------------------------- #

LINEAR_FSRCNNS = [("fsrcnn-linear", 2, 1), ("fsrcnn-linear", 4, 3), ("fsrcnn-s-linear", 3, 1)]


@pytest.mark.parametrize(("name", "scale", "channels"), LINEAR_FSRCNNS)
def test_linear_fsrcnn_collapses_into_an_equal_fsrcnn(name: str, scale: int, channels: int) -> None:
    net, plain = _collapsed_equals_branches(name, scale, channels)
    assert isinstance(net, models.LinearFSRCNN)
    assert type(plain) is models.FSRCNN and plain.config == net.config.plain()
    same_plain = models.FSRCNN(net.config.plain())
    cost = models.measure_complexity(net.float(), channels)
    assert cost == models.measure_complexity(same_plain, channels)  # the plain network's


def test_a_fresh_linear_fsrcnn_starts_as_the_plain_one_of_the_same_seed() -> None:
    torch.manual_seed(5)
    plain = models.build("fsrcnn-s", scale=3)
    torch.manual_seed(5)
    linear = models.build("fsrcnn-s-linear", scale=3)
    lr = torch.rand(1, 1, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(linear(lr), plain(lr), rtol=1e-5, atol=1e-6)
    assert models.architecture_of(linear) == "fsrcnn-linear"
    assert linear.settings() == {**plain.settings(), "hidden": 256}


def test_a_linear_fsrcnn_goes_on_from_a_plain_one() -> None:
    """``start_from`` a plain FSRCNN of its configuration (a shipped file) sets every block
    to that network's kernels; one of another configuration is refused."""
    trained = _randomise(models.build("fsrcnn-s", scale=3).double(), 3)
    linear = models.build("fsrcnn-s-linear", scale=3).double()
    linear.start_from(trained)
    lr = torch.rand(2, 1, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(linear(lr), trained(lr), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="into a network that collapses into"):
        linear.start_from(models.build("fsrcnn", scale=3).double())


def test_linear_fsrcnn_weights_are_saved_collapsed(tmp_path: Path) -> None:
    net = _randomise(models.build("fsrcnn-s-linear", scale=3), 2).eval()
    describe(net, "fsrcnn-s-linear", training={"iterations": 4})
    loaded = load_network(save_weights(net, tmp_path / "net.safetensors"))
    assert type(loaded) is models.FSRCNN
    card = card_of(loaded)
    assert card.architecture == "fsrcnn" and (card.config["d"], card.config["s"]) == (32, 5)
    assert card.training["collapsed_from"] == "fsrcnn-s-linear"
    assert card.name == "fsrcnn-s"  # its files are FSRCNN-s files
    lr = torch.rand(1, 1, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), net(lr), rtol=1e-5, atol=1e-5)


def test_linear_fsrcnn_needs_blocks_wide_enough_for_every_kernel() -> None:
    with pytest.raises(ValueError, match=r"hidden must be >= 108"):
        models.build("fsrcnn-linear", hidden=100)  # the 3x3 mapping layers: 12 x 9
    with pytest.raises(ValueError, match=r"hidden must be >= 75"):
        models.build("fsrcnn-s-linear", channels=3, hidden=64)  # the 5x5 RGB layer
    models.build("fsrcnn-s-linear", hidden=45)  # FSRCNN-s: 5 x 9


@pytest.mark.parametrize("name", ["fsrcnn-s-linear", "ecbsr"])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_merged_kernels_follow_the_layout_the_network_was_moved_to(
    name: str, layout: torch.memory_format
) -> None:
    """A network moved to channels-last runs every merged kernel channels-last, as its plain
    convolutions would, so activations and their gradients keep one layout throughout (the
    first 1-channel layer included, whose sizes leave both layouts contiguous)."""
    net = models.build(name, scale=3).to(memory_format=layout)  # type: ignore[call-overload]
    x = torch.rand(2, 1, 12, 12).contiguous(memory_format=layout)
    outputs: list[bool] = []

    def record(_module: nn.Module, _inputs: object, out: torch.Tensor) -> None:
        outputs.append(
            out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        )

    for module in net.modules():
        if isinstance(module, CollapsibleLinearBlock | EdgeOrientedBlock):
            module.register_forward_hook(record)
    net(x)
    assert outputs and outputs == [layout == torch.channels_last] * len(outputs)


@pytest.mark.parametrize(("form", "model"), sorted(models.TRAINING_FORMS.items()))
def test_a_training_form_collapses_into_the_network_of_its_model(form: str, model: str) -> None:
    collapsed = models.build(form, scale=3).collapse()
    plain = models.build(model, scale=3)
    assert type(collapsed) is type(plain) and collapsed.settings() == plain.settings()
