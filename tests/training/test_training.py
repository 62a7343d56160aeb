from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import subpixel
from subpixel import models
from subpixel.cli import main
from subpixel.devices import processor_name
from subpixel.training import (
    Progress,
    RunError,
    TrainConfig,
    TrainingView,
    build_network,
    compute_loss,
    distilled_targets,
    make_optimizer,
    prepare_for_training,
    train,
)
from subpixel.training.bundle import bundle_run
from subpixel.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from subpixel.training.ema import WeightAverage
from subpixel.training.losses import charbonnier_loss
from subpixel.training.recipes import RECIPES, recipe
from subpixel.training.records import Session, read_log, read_sessions, write_sessions
from subpixel.training.schedule import Schedule
from subpixel.weights import card_of, load_network


def _smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Smooth random colour fields, so networks have something learnable.
    base = rng.random((h // 8 + 2, w // 8 + 2, 3))
    big = np.kron(base, np.ones((8, 8, 1)))[:h, :w]
    noise = rng.random((h, w, 3)) * 0.1
    return ((big * 0.9 + noise) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    train_dir, val_dir = root / "train", root / "val"
    train_dir.mkdir()
    val_dir.mkdir()
    for i in range(4):
        Image.fromarray(_smooth_image(rng, 60, 72)).save(train_dir / f"t{i}.png")
    for i in range(2):
        Image.fromarray(_smooth_image(rng, 36, 36)).save(val_dir / f"v{i}.png")
    return train_dir, val_dir


def _config(folders: tuple[Path, Path], **overrides: object) -> TrainConfig:
    train_dir, val_dir = folders
    options: dict[str, object] = {
        "model": "espcn",
        "scale": 2,
        "data": (str(train_dir),),
        "val": str(val_dir),
        "iterations": 30,
        "batch_size": 4,
        "patch_size": 8,
        "patches_per_image": 8,
        "val_every": 10,
        "workers": 0,
        "lr": 1e-3,
        "model_options": {"features": (8, 4)},
    }
    options.update(overrides)
    return TrainConfig(**options)  # type: ignore[arg-type]


def test_unshuffled_targets_give_the_same_loss_and_gradients(folders: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    lr, hr = torch.rand(3, 1, 6, 7), torch.rand(3, 1, 18, 21)
    results = []
    for unshuffled in (False, True):
        config = _config(folders, scale=3, unshuffled_targets=unshuffled)
        net = build_network(config)
        loss = compute_loss(TrainingView(net), lr, hr, config)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_trains_through_the_subpixel_form_with_the_same_output_and_gradients(
    folders: tuple[Path, Path], scale: int
) -> None:
    config = _config(folders, model="fsrcnn", scale=scale, model_options={"d": 8, "s": 4, "m": 1})
    reference = build_network(config).double()
    network = prepare_for_training(build_network(config).double(), "cpu")
    assert network.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    lr = torch.rand(3, 1, 6, 7, dtype=torch.float64)
    expected, output = reference(lr), TrainingView(network)(lr)
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-12)
    upstream = torch.randn(expected.shape, dtype=torch.float64)
    expected.backward(upstream)
    output.backward(upstream)
    for (name, got), want in zip(network.named_parameters(), reference.parameters(), strict=True):
        assert got.grad is not None, name
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-9, atol=1e-12, msg=name)
    # The weights keep the deconvolution's form, so checkpoints and bundles are unchanged.
    assert isinstance(network.deconv, torch.nn.ConvTranspose2d)


def test_loss_border_leaves_out_exactly_the_outputs_padding_reaches(
    folders: tuple[Path, Path],
) -> None:
    torch.manual_seed(0)
    lr, hr = torch.rand(2, 1, 14, 15), torch.rand(2, 1, 42, 45)
    base = _config(folders, scale=3, patch_size=14)
    net = build_network(base)
    radius = 4  # espcn 5-3-3
    # The full image the patch was cut from: the interior outputs of the patch equal those
    # of the same pixels computed with real neighbours instead of zero padding.
    context = torch.rand(2, 1, 24, 25)
    context[..., 5:19, 5:20] = lr
    with torch.no_grad():
        inside = net(context)[
            ..., 15 + 3 * radius : 57 - 3 * radius, 15 + 3 * radius : 60 - 3 * radius
        ]
        expected = torch.mean((inside - hr[..., 12:-12, 12:-12]) ** 2)
    losses = []
    for unshuffled in (False, True):
        config = dataclasses.replace(base, loss_border=radius, unshuffled_targets=unshuffled)
        with torch.no_grad():
            losses.append(compute_loss(TrainingView(net), lr, hr, config))
    torch.testing.assert_close(losses[0], expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses[1], expected, rtol=1e-5, atol=0)
    with torch.no_grad():
        full = compute_loss(TrainingView(net), lr, hr, base)
    assert not torch.isclose(full, expected, rtol=1e-3)
    with pytest.raises(ValueError, match="loss_border"):
        dataclasses.replace(base, loss_border=7)


def test_output_layer_trains_ten_times_slower_and_head_only_freezes_the_trunk(
    folders: tuple[Path, Path],
) -> None:
    config = _config(folders, model="fsrcnn-s", model_options={})
    net = build_network(config)
    optimizer = make_optimizer(net, config)
    trunk, head = optimizer.param_groups
    assert head["lr"] == pytest.approx(trunk["lr"] * 0.1)
    assert {id(p) for p in head["params"]} == {id(p) for p in net.deconv.parameters()}

    frozen = dataclasses.replace(config, train_only="head")
    net = build_network(frozen)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = make_optimizer(net, frozen)
    for _ in range(3):
        optimizer.zero_grad()
        compute_loss(
            TrainingView(net), torch.rand(2, 1, 8, 8), torch.rand(2, 1, 16, 16), frozen
        ).backward()
        optimizer.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("deconv"))
    assert not torch.equal(before["deconv.weight"], after["deconv.weight"])


def test_schedules(folders: tuple[Path, Path]) -> None:
    step = Schedule(_config(folders, schedule="step", step_size=10, step_gamma=0.5))
    assert [step.factor(i) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    cosine = Schedule(_config(folders, schedule="cosine", iterations=100, min_lr=1e-5))
    assert cosine.factor(0) == pytest.approx(1.0)
    assert cosine.factor(100) == pytest.approx(0.01)
    plateau = Schedule(_config(folders, schedule="plateau", plateau_every=2, plateau_mu=0.1))
    for loss in (1.0, 1.0, 0.5, 0.5):  # windows 1.0 then 0.5: a 50% improvement, keep
        plateau.observe(loss)
    assert plateau.factor(0) == 1.0
    for loss in (0.49, 0.49):  # 2% < mu: lower by plateau_factor
        plateau.observe(loss)
    assert plateau.factor(0) == pytest.approx(0.1)
    restored = Schedule(plateau.config)
    restored.load_state_dict(plateau.state_dict())
    assert restored.state_dict() == plateau.state_dict()


def test_warmup_rises_linearly_then_the_cosine_anneals_over_the_rest(
    folders: tuple[Path, Path],
) -> None:
    config = _config(folders, schedule="cosine", iterations=110, warmup=10, min_lr=1e-5)
    schedule = Schedule(config)
    assert [schedule.factor(i) for i in range(10)] == pytest.approx(
        [(i + 1) / 10 for i in range(10)]
    )
    assert schedule.factor(10) == pytest.approx(1.0)
    assert schedule.factor(60) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through the cosine
    assert schedule.factor(110) == pytest.approx(0.01)
    constant = Schedule(dataclasses.replace(config, schedule="constant"))
    assert [constant.factor(i) for i in (0, 4, 9, 50)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="warmup"):
        dataclasses.replace(config, warmup=110)
    # Losses fed in sums decide the plateau rule as when fed one by one.
    one, many = (Schedule(_config(folders, schedule="plateau", plateau_every=2)) for _ in "ab")
    for loss in (1.0, 1.0, 0.9999, 0.9999):
        one.observe(loss)
    many.observe_sum(2.0, 2)
    many.observe_sum(0.9999, 1)
    many.observe_sum(0.9999, 1)
    assert one.state_dict() == many.state_dict() and one.factor(0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="across the end"):
        many.observe_sum(3.0, 3)


def test_charbonnier_loss_value(folders: tuple[Path, Path]) -> None:
    output = torch.tensor([[[[0.5, 0.2], [0.0, 1.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[0.2, 0.2], [0.4, 0.0]]]], dtype=torch.float64)
    eps = 0.4  # residuals 0.3, 0, -0.4, 1 -> sqrt(r^2 + 0.16) = 0.5, 0.4, sqrt(0.32), sqrt(1.16)
    want = (0.5 + 0.4 + 0.32**0.5 + 1.16**0.5) / 4
    assert charbonnier_loss(output, target, eps).item() == pytest.approx(want, rel=1e-12)
    # The loop's loss is that of the network's output.
    config = _config(folders, loss="charbonnier", charbonnier_eps=0.01)
    net = build_network(config)
    lr, hr = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        got = compute_loss(TrainingView(net), lr, hr, config)
        residual = net(lr).double() - hr.double()
        expected = torch.sqrt(residual**2 + 1e-4).mean()
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)


def test_weight_average_update_maths() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    average = WeightAverage(net, decay=0.9)
    # d = min(0.9, (1 + n) / (10 + n)): 2/11, 3/12, then 0.9 from step 80 on.
    decays = [average.decay_at(n) for n in (1, 2, 79, 80, 10**6)]
    assert decays == [2 / 11, 3 / 12, 80 / 89, 0.9, 0.9]
    expected = [p.detach().double().clone() for p in net.parameters()]
    for step in (1, 2, 80, 81):
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.add_(torch.randn_like(parameter))
            net[1].running_mean.fill_(step)
        average.update(net, step)
        d = min(0.9, (1 + step) / (10 + step))
        weights = [p.detach().double() for p in net.parameters()]
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights, strict=True)]
    for got, want in zip(average.network.parameters(), expected, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
        assert not got.requires_grad
    assert torch.equal(average.network[1].running_mean, net[1].running_mean)  # buffers copied
    assert not torch.allclose(average.network[0].weight, net[0].weight)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_checkpoint_restores_the_optimizer_exactly(
    folders: tuple[Path, Path], tmp_path: Path, optimizer: str, layout: torch.memory_format
) -> None:
    """Also for a channels-last network (FSRCNN trains so on CPU), whose moments the
    checkpoint holds contiguous: each must go back beside its own parameter value."""
    config = _config(folders, optimizer=optimizer)
    batches = [(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 16, 16)) for _ in range(4)]

    def step(net: torch.nn.Module, opt: torch.optim.Optimizer, i: int) -> None:
        opt.zero_grad()
        compute_loss(TrainingView(net), *batches[i], config).backward()
        opt.step()

    net = build_network(config).to(memory_format=layout)  # type: ignore[call-overload]
    opt = make_optimizer(net, config)
    step(net, opt, 0)
    step(net, opt, 1)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, net, opt, TrainingState(2, {}, None, None, 1.5))
    step(net, opt, 2)
    step(net, opt, 3)

    other = build_network(dataclasses.replace(config, seed=99)).to(memory_format=layout)  # type: ignore[call-overload]
    other_opt = make_optimizer(other, config)
    state = load_checkpoint(path, other, other_opt)
    assert state.iteration == 2
    step(other, other_opt, 2)
    step(other, other_opt, 3)
    for key, value in net.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


def test_a_run_writes_its_files_and_loadable_weights(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(_config(folders), out, cache_dir=tmp_path / "cache")
    assert result.iteration == 30
    for name in (
        "config.json",
        "checkpoint.safetensors",
        "best.safetensors",
        "last.safetensors",
        "log.csv",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    saved = TrainConfig.load(out / "config.json")
    assert saved.precision in ("float32", "bfloat16")  # "auto" made concrete
    assert saved == dataclasses.replace(_config(folders), precision=saved.precision)
    rows = read_log(out / "log.csv")
    assert [r.iteration for r in rows if r.val_psnr is not None] == [10, 20, 30]
    model = load_network(out / "best.safetensors")
    assert model.card.training["iterations"] == result.best_iteration
    assert model.card.training["precision"] == saved.precision
    assert model.card.metrics
    with pytest.raises(subpixel.SubpixelError, match="already holds a run"):
        train(_config(folders), out, cache_dir=tmp_path / "cache")

    # Bundling records the whole config and fresh metrics in the card.
    bundled = tmp_path / "espcn_x2.safetensors"
    assert main(["bundle", str(out), "-o", str(bundled), "--datasets", str(folders[1])]) == 0
    card = load_network(bundled).card
    assert TrainConfig(**card.training["config"]) == saved
    assert card.training["best_iteration"] == result.best_iteration
    assert set(card.metrics[str(folders[1])]) == {"psnr", "ssim", "bicubic_psnr"}
    assert "averaged_with" not in card.training

    # Averaged with another checkpoint: the mean weights, and the card says what went in.
    averaged = tmp_path / "averaged.safetensors"
    first = tmp_path / "first.safetensors"
    other = load_network(out / "best.safetensors")
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(0.5)
    subpixel.save_weights(other, first, card=load_network(bundled).card)
    argv = ["bundle", str(out), "-o", str(averaged), "--datasets", str(folders[1])]
    assert main([*argv, "--average-with", str(first)]) == 0
    card = load_network(averaged).card
    assert card.training["averaged_with"] == [
        {"file": f"{tmp_path.name}/first.safetensors", "iteration": result.best_iteration}
    ]
    tensors = [load_file(f) for f in (out / "best.safetensors", first, averaged)]
    for key, mean in tensors[2].items():
        assert torch.allclose(mean, (tensors[0][key] + tensors[1][key]) / 2), key
    assert card.metrics[str(folders[1])]["psnr"] != pytest.approx(
        load_network(bundled).card.metrics[str(folders[1])]["psnr"], abs=1e-6
    )


_KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from subpixel.training import TrainConfig, train
    config = TrainConfig.from_json(open(sys.argv[1]).read())
    def progress(p):
        if p.iteration == int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)
    train(config, sys.argv[2], cache_dir=sys.argv[3], resume=len(sys.argv) > 5, progress=progress)
    """
)


@pytest.mark.parametrize(
    ("schedule", "options"),
    [
        ("plateau", {}),  # batches cut on the device (the default)
        ("cosine", {"ema_decay": 0.9, "warmup": 5, "loss": "charbonnier"}),
        ("plateau", {"data_on_device": False}),  # the DataLoader
    ],
)
def test_a_run_killed_mid_way_resumes_to_the_same_weights(
    folders: tuple[Path, Path], tmp_path: Path, schedule: str, options: dict[str, object]
) -> None:
    config = _config(
        folders,
        iterations=40,
        schedule=schedule,
        plateau_every=3,
        plateau_mu=0.5,
        workers=1,
        **options,
    )
    cache = tmp_path / "cache"
    straight = train(config, tmp_path / "straight", cache_dir=cache)

    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_RUN)
    run = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, str(script), str(config_file), str(run), str(cache), "25"], check=False
    )
    assert killed.returncode == -9  # SIGKILL, after the checkpoint at 20
    assert max(r.iteration for r in read_log(run / "log.csv")) == 20
    resumed = train(config, run, cache_dir=cache, resume=True)
    assert resumed.iteration == straight.iteration == 40
    for name in ("last.safetensors", "checkpoint.safetensors"):  # with the average, if any
        a = load_file(str(tmp_path / "straight" / name))
        b = load_file(str(run / name))
        assert a.keys() == b.keys()
        # Not the global RNG: a DataLoader draws its workers' seed from it at every start.
        for key in (k for k in a if not k.startswith("rng.")):
            assert torch.equal(a[key], b[key]), key
    assert [r.iteration for r in read_log(run / "log.csv")] == [
        r.iteration for r in read_log(tmp_path / "straight" / "log.csv")
    ]
    # The killed process's share ends at its last checkpoint; the resumed one takes over.
    sessions = read_sessions(run / "sessions.json")
    assert [(s.first_iteration, s.last_iteration) for s in sessions] == [(0, 20), (20, 40)]
    assert all(s.command is None and s.seconds > 0 for s in sessions)  # called from Python


class _Stop(Exception):
    pass


def _stop_at(iteration: int) -> Callable[[Progress], None]:
    def progress(p: Progress) -> None:
        if p.iteration == iteration:
            raise _Stop

    return progress


def test_a_run_initialised_from_a_file_resumes_without_that_file(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    train(_config(folders, iterations=10), tmp_path / "donor", cache_dir=cache)
    donor = tmp_path / "donor.safetensors"
    shutil.copy(tmp_path / "donor" / "best.safetensors", donor)
    config = _config(folders, iterations=20, init_from=str(donor))
    train(config, tmp_path / "straight", cache_dir=cache)
    with pytest.raises(_Stop):
        train(config, tmp_path / "run", cache_dir=cache, progress=_stop_at(15))
    # The checkpoint (iteration 10) holds the weights: the donor is not needed again.
    donor.unlink()
    resumed = train(config, tmp_path / "run", cache_dir=cache, resume=True)
    assert resumed.iteration == 20
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "run" / "last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_fsrcnn_scale_transfer_trains_only_the_deconvolution(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    base = _config(folders, model="fsrcnn-s", model_options={}, scale=3, iterations=10)
    train(base, tmp_path / "x3", cache_dir=tmp_path / "cache")
    x2 = dataclasses.replace(base, scale=2, init_from=str(tmp_path / "x3"), train_only="head")
    train(x2, tmp_path / "x2", cache_dir=tmp_path / "cache")
    donor = load_network(tmp_path / "x3" / "best.safetensors").state_dict()
    child = load_network(tmp_path / "x2" / "last.safetensors")
    assert child.card.scale == 2
    for key, value in child.state_dict().items():
        same = torch.equal(value, donor[key])
        assert same != key.startswith("deconv"), key

    # The two share a trunk: one file holds both heads, and one trunk run serves both.
    multi = tmp_path / "fsrcnn-s_multi.safetensors"
    x3_file, x2_file = tmp_path / "x3" / "best.safetensors", tmp_path / "x2" / "last.safetensors"
    assert main(["combine", str(x3_file), str(x2_file), "-o", str(multi)]) == 0
    combined = load_network(multi)
    assert combined.card.architecture == "fsrcnn-multiscale"
    lr = torch.rand(1, 1, 9, 7)
    with torch.no_grad():
        outputs = combined.forward_all(lr)
        for scale, path in ((3, x3_file), (2, x2_file)):
            single = load_network(path)
            torch.testing.assert_close(outputs[scale], single(lr), rtol=0, atol=0)
            head = load_network(multi, scale=scale)
            assert (head.card.architecture, head.card.scale) == ("fsrcnn", scale)
            torch.testing.assert_close(head(lr), single(lr), rtol=0, atol=0)
    # Networks whose trunks differ are refused.
    other = dataclasses.replace(base, seed=7)
    train(other, tmp_path / "other", cache_dir=tmp_path / "cache")
    other_file = tmp_path / "other" / "best.safetensors"
    assert (
        main(["combine", str(x2_file), str(other_file), "-o", str(tmp_path / "bad.safetensors")])
        == 1
    )


def _cli_train(model: str, folders: tuple[Path, Path], every: int, *common: str) -> list[str]:
    """``subpixel train`` of a tiny ``model`` x2 run on the test folders: two validations."""
    train_dir, val_dir = folders
    args = ["train", "--model", model, "--scale", "2", "--data", str(train_dir)]
    args += ["--val", str(val_dir), "--iterations", str(2 * every), "--val-every", str(every)]
    return [*args, "--batch-size", "2", "--patch-size", "8", "--workers", "0", *common]


def test_cli_train_with_model_options_bundles_the_network_it_trained(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --model-option reaches the builder and the record; the bundle is that network,
    # collapsed: an ECBSR of 2 blocks of 8 features is an ESPCN-class net of 3 hidden layers.
    out = tmp_path / "run"
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    args = _cli_train("ecbsr", folders, 1, *common)
    assert main([*args, "--model-option", "blocks=2", "--model-option", "features=8"]) == 0
    assert TrainConfig.load(out / "config.json").model_options == {"blocks": 2, "features": 8}
    config = card_of(bundle_run(out, tmp_path / "b.safetensors", datasets=())).config
    assert config["features"] == [8, 8, 8]
    assert main(["train", "--resume", "--model-option", "blocks=3", *common]) == 1
    assert "drop --model-option" in capsys.readouterr().err
    bad_run = _cli_train("ecbsr", folders, 1, "--out", str(tmp_path / "bad"))
    for bad in ("blocks", "blocks=2 x", "colour=red"):
        assert main([*bad_run, "--model-option", bad]) == 1
        error = capsys.readouterr().err
        assert len(error.strip().splitlines()) == 1 and "--model-option" in error, error
    assert not (tmp_path / "bad").exists()


def test_cli_train_and_resume(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_dir, _ = folders
    out = tmp_path / "run"
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    args = _cli_train("fsrcnn-s", folders, 3, *common)
    assert main(args) == 0
    assert main(["train", "--resume", "--iterations", "9", *common]) == 0
    assert TrainConfig.load(out / "config.json").iterations == 9
    assert read_log(out / "log.csv")[-1].iteration == 9
    # Each process's share is on record, with the command that started it.
    first, second = read_sessions(out / "sessions.json")
    assert first.command == shlex.join(["subpixel", *args])
    assert second.command == shlex.join(
        ["subpixel", "train", "--resume", "--iterations", "9", *common]
    )
    assert (first.first_iteration, first.last_iteration) == (0, 6)
    assert (second.first_iteration, second.last_iteration) == (6, 9)
    assert first.machine == processor_name("cpu") and first.processes == 1
    assert first.threads == torch.get_num_threads() and first.torch == torch.__version__
    bundled = bundle_run(out, tmp_path / "bundled.safetensors", datasets=())
    assert [s["command"] for s in card_of(bundled).training["sessions"]] == [
        first.command,
        second.command,
    ]
    assert main(["train", "--resume", "--lr", "0.1", *common]) == 1
    assert "drop --lr" in capsys.readouterr().err
    (out / "sessions.json").write_text("not json")  # damaged: one line, nothing trained
    assert main(["train", "--resume", "--iterations", "12", *common]) == 1
    error = capsys.readouterr().err
    assert "sessions.json is not a record of training sessions" in error
    assert len(error.strip().splitlines()) == 1
    assert read_log(out / "log.csv")[-1].iteration == 9
    assert (
        main(
            [
                "train",
                "--model",
                "bicubic",
                "--data",
                str(train_dir),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 1
    )
    assert models.build("fsrcnn-s")  # the registry is untouched by training


def _launcher_errors(stderr: str) -> str:
    """What a failed ``torchrun`` said: each process's own error comes first, the launcher's
    summary last."""
    return stderr if len(stderr) <= 6000 else f"{stderr[:3000]}\n...\n{stderr[-3000:]}"


def test_data_parallel_run_with_two_processes_and_resume(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    train_dir, val_dir = folders
    out = tmp_path / "ddp"
    # On the CPU wherever it runs: two processes on a one-GPU machine would be refused.
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "subpixel.cli",
        "train",
    ]
    first = [
        *launch,
        "--model",
        "espcn",
        "--scale",
        "2",
        "--data",
        str(train_dir),
        "--val",
        str(val_dir),
        "--iterations",
        "4",
        "--val-every",
        "2",
        "--batch-size",
        "4",
        "--patch-size",
        "8",
        "--workers",
        "0",
        *common,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(first, capture_output=True, text=True, check=False, env=environment)
    assert done.returncode == 0, _launcher_errors(done.stderr)
    again = [*launch, "--resume", "--iterations", "6", *common]
    done = subprocess.run(again, capture_output=True, text=True, check=False, env=environment)
    assert done.returncode == 0, _launcher_errors(done.stderr)
    assert [r.iteration for r in read_log(out / "log.csv") if r.val_psnr] == [2, 4, 6]
    assert load_network(out / "last.safetensors").card.training["iterations"] == 6


def test_data_parallel_on_the_cpu_of_a_machine_with_a_gpu_uses_gloo(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    # The process group's backend follows the training device, not the machine: NCCL takes
    # no CPU tensors (and this CPU build of torch has none).
    script = tmp_path / "cpu_run.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, torch
            torch.cuda.is_available = lambda: True  # as on a machine with a GPU
            from subpixel.training import TrainConfig, train
            config = TrainConfig.from_json(open(sys.argv[1]).read())
            train(config, sys.argv[2], cache_dir=sys.argv[3], device="cpu")
            """
        )
    )
    config_file = tmp_path / "config.json"
    config_file.write_text(_config(folders, iterations=2, val=None).to_json())
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    arguments = [str(script), str(config_file), str(tmp_path / "run"), str(tmp_path / "cache")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, "2", *arguments], capture_output=True, text=True, check=False, env=environment
    )
    assert done.returncode == 0, _launcher_errors(done.stderr)
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_cuda_processes_beyond_the_node_s_gpus_are_refused(
    folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    # As on a machine with one GPU (this one may have none).
    monkeypatch.setattr("subpixel.training.loop.resolve_device", lambda name: torch.device(name))
    with pytest.raises(RunError, match="no GPU of its own"):
        train(_config(folders), tmp_path / "run", cache_dir=tmp_path / "cache", device="cuda")


class _SplitHead(torch.nn.Module):
    """An ESPCN whose sub-pixel convolution trains as two parallel ones, summed: the
    simplest re-parameterised network; ``collapse()`` adds them into one."""

    def __init__(self, scale: int = 3, channels: int = 1, **options: object) -> None:
        super().__init__()
        self.body = models.ESPCN(models.ESPCNConfig(scale=scale, channels=channels, **options))  # type: ignore[arg-type]
        head = self.body.subpixel
        self.extra = torch.nn.Conv2d(head.in_channels, head.out_channels, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.body.features(lr)
        return self.body.shuffle(self.body.subpixel(features) + self.extra(features))

    def collapse(self) -> models.ESPCN:
        plain = models.ESPCN(self.body.config)
        plain.load_state_dict(self.body.state_dict())
        with torch.no_grad():
            plain.subpixel.weight += self.extra.weight
            plain.subpixel.bias += self.extra.bias
        return plain


def test_a_collapsible_network_is_validated_and_saved_collapsed_with_its_average(
    folders: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(models.BUILDERS, "split-espcn", _SplitHead)
    config = _config(
        folders, model="split-espcn", head_lr_scale=1.0, ema_decay=0.5, iterations=10, val_every=5
    )
    out = tmp_path / "run"
    train(config, out, cache_dir=tmp_path / "cache")
    checkpoint = load_file(str(out / "checkpoint.safetensors"))
    # The checkpoint keeps the training form, its weights and their average apart.
    assert "model.extra.weight" in checkpoint and "average.extra.weight" in checkpoint
    assert not torch.equal(checkpoint["model.extra.weight"], checkpoint["average.extra.weight"])
    average = _SplitHead(scale=2, features=(8, 4))
    average.load_state_dict(
        {k.removeprefix("average."): v for k, v in checkpoint.items() if k.startswith("average.")}
    )
    # last holds the average, collapsed: a plain ESPCN that loads without the training form.
    last = load_network(out / "last.safetensors")
    assert last.card.architecture == "espcn" and isinstance(last, models.ESPCN)
    assert last.card.training["collapsed_from"] == "split-espcn"
    assert last.card.training["ema_decay"] == 0.5
    for key, value in average.collapse().state_dict().items():
        assert torch.equal(last.state_dict()[key], value), key
    lr = torch.rand(1, 1, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(last(lr), average(lr), rtol=1e-5, atol=1e-6)
    assert load_network(out / "best.safetensors").card.metrics
    bundled = tmp_path / "bundled.safetensors"
    assert main(["bundle", str(out), "-o", str(bundled), "--datasets", str(folders[1])]) == 0
    bundled_card = load_network(bundled).card
    assert bundled_card.architecture == "espcn"
    assert bundled_card.training["collapsed_from"] == "split-espcn"
    # With an output layer unknown, the head cannot train at its own rate.
    with pytest.raises(RunError, match="head_lr_scale 1"):
        make_optimizer(_SplitHead(), dataclasses.replace(config, head_lr_scale=0.1))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_are_complete_modern_configs(name: str) -> None:
    config = recipe(name)
    assert TrainConfig.from_json(config.to_json()) == config
    # Named for the file it makes (a re-parameterised FSRCNN-s is shipped as FSRCNN-s).
    assert name == f"{config.model.removesuffix('-linear')}-x{config.scale}"
    assert config.model in models.BUILDERS
    assert [Path(d).parts[-2:] for d in config.data] == [
        ("train", "T91"),
        ("train", "General100"),
        ("train", "BSDS200"),
    ]
    assert config.data_on_device and config.val == "Set5"
    # An L1-type loss, but MSE for ESPCN and FSRCNN-s (ahead on the CPU, docs/training).
    mse = ("espcn", "fsrcnn-s", "fsrcnn-s-linear")
    assert config.loss == ("mse" if config.model in mse else "charbonnier")
    assert config.ema_decay >= 0.99
    assert config.schedule == "cosine" and 0 < config.warmup < config.iterations // 10
    assert 24 <= config.patch_size <= 48 and config.batch_size >= 128
    # Sized for minutes on one GPU: at most 0.6 M LR pixels a step, 50,000 steps.
    assert config.batch_size * config.patch_size**2 <= 600_000
    assert config.iterations <= 50_000
    with pytest.raises(KeyError, match="espcn-x3"):
        recipe("nope")


def test_cli_recipe_with_overrides(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_dir, val_dir = folders
    out = tmp_path / "run"
    common = ["--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    overrides = ["--data", str(train_dir), "--val", str(val_dir), "--iterations", "3"]
    overrides += ["--val-every", "3", "--batch-size", "2", "--patch-size", "8", "--warmup", "1"]
    overrides += ["--downscale-augment", "--no-data-on-device", "--workers", "0"]
    assert main(["train", "--recipe", "espcn-x2", *overrides, *common]) == 0
    want = dataclasses.replace(
        recipe("espcn-x2"),
        data=(str(train_dir),),
        val=str(val_dir),
        iterations=3,
        val_every=3,
        batch_size=2,
        patch_size=8,
        warmup=1,
        downscale_augment=(),
        data_on_device=False,
        workers=0,
    )
    saved = TrainConfig.load(out / "config.json")
    assert saved == dataclasses.replace(want, precision=saved.precision)
    assert saved.precision in ("float32", "bfloat16")
    assert load_network(out / "best.safetensors").card.training["ema_decay"] == 0.999
    capsys.readouterr()
    assert main(["train", "--resume", "--recipe", "espcn-x2", *common]) == 1
    assert "drop --recipe" in capsys.readouterr().err
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path / "other")]) == 1
    assert "unknown recipe 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["espcn", "espcn_x2"])
def test_init_from_takes_a_bundled_model(name: str, folders: tuple[Path, Path]) -> None:
    config = _config(folders, model_options={}, init_from=name)
    network = build_network(config)
    bundled = load_network("espcn", scale=2).state_dict()
    state = network.state_dict()
    assert state.keys() == bundled.keys()
    for key, value in bundled.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_init_from_a_bundled_ecbsr_trains_on_from_its_collapsed_weights(
    scale: int, folders: tuple[Path, Path]
) -> None:
    """A shipped ECBSR file holds the collapsed ESPCN; the run's ECBSR takes it in its
    re-parameterised form and starts as the shipped network."""
    config = _config(folders, model="ecbsr", scale=scale, model_options={}, init_from="ecbsr")
    network = build_network(config).eval()
    shipped = load_network("ecbsr", scale=scale).eval()
    lr = torch.rand(1, 1, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(network(lr), shipped(lr), rtol=1e-5, atol=1e-5)
    assert all(bool(p.abs().max() > 0) for p in network.parameters())


def test_a_linear_fsrcnn_s_run_starts_from_the_shipped_file_and_resumes_exactly(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    """``fsrcnn-s-linear`` takes the shipped (plain) FSRCNN-s as its start, trains in its
    block form, writes plain FSRCNN-s weights that name the form, and resumes exactly."""
    config = _config(
        folders,
        model="fsrcnn-s-linear",
        scale=3,
        model_options={},
        init_from="fsrcnn-s",
        iterations=12,
        val_every=6,
        ema_decay=0.9,
    )
    network = build_network(config).eval()
    shipped = load_network("fsrcnn-s", scale=3).eval()
    lr = torch.rand(1, 1, 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(network(lr), shipped(lr), rtol=1e-5, atol=1e-5)
    cache = tmp_path / "cache"
    train(config, tmp_path / "straight", cache_dir=cache)
    with pytest.raises(_Stop):
        train(config, tmp_path / "run", cache_dir=cache, progress=_stop_at(9))
    train(config, tmp_path / "run", cache_dir=cache, resume=True)
    a = load_file(str(tmp_path / "straight" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))
    for key in (k for k in a if not k.startswith("rng.")):
        assert torch.equal(a[key], b[key]), key
    trained = load_network(tmp_path / "run" / "last.safetensors")
    assert type(trained) is models.FSRCNN and trained.config == shipped.config
    assert trained.card.training["collapsed_from"] == "fsrcnn-s-linear"
    assert trained.card.name == "fsrcnn-s"  # an FSRCNN-s file, trained re-parameterised
    assert not torch.equal(trained.deconv.weight, shipped.deconv.weight)  # it trained


@pytest.mark.parametrize("model", ["espcn", "ecbsr"])
def test_init_from_the_bundled_x2_starts_an_x4_run_at_its_output_upsampled(
    model: str, folders: tuple[Path, Path]
) -> None:
    """The recipe's "x4 started from x2": every layer but the sub-pixel one is x2's, and each
    x4 phase copies the x2 phase it lies in."""
    config = _config(folders, model=model, scale=4, model_options={}, init_from=f"{model}_x2")
    network = build_network(config).eval()
    x2 = load_network(model, scale=2).eval()
    lr = torch.rand(1, 1, 11, 13)
    with torch.no_grad():
        expected = torch.nn.functional.interpolate(x2(lr), scale_factor=2)
        torch.testing.assert_close(network(lr), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("init_from", "message"),
    [
        ("espcn_x9", r"not a run folder, a weights file or a bundled model \(.*espcn_x2, "),
        ("nothing-here", r"a name without _xN takes the run's scale, x2"),
        ("fsrcnn-s_x3", r"cannot initialise espcn from .*fsrcnn-s_x3.*: it holds fsrcnn-s"),
    ],
)
def test_init_from_anything_else_is_refused_before_the_run_folder_is_made(
    init_from: str, message: str, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    from subpixel.training import RunError

    config = _config(folders, model_options={}, init_from=init_from)
    with pytest.raises(RunError, match=message):
        train(config, tmp_path / "run", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "run").exists()


def test_cli_init_from_an_unknown_name_lists_what_it_takes(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", str(folders[0]), "--out", str(out), "--init-from", "espcnn"]
    assert main([*argv, "--device", "cpu"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("subpixel: error: cannot initialise from 'espcnn': ")
    assert "espcn_x3" in line and "fsrcnn_x2" in line
    assert not out.exists()


def test_a_run_without_validation_names_the_weights_it_wrote(
    folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "espcn", "--scale", "2", "--data", str(folders[0])]
    argv += ["--val", "none", "--iterations", "2", "--batch-size", "2", "--patch-size", "8"]
    assert main([*argv, "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"{out}: 2 iterations (no validation); weights in {out / 'last.safetensors'}"
    assert (out / "last.safetensors").is_file() and not (out / "best.safetensors").exists()


def test_sessions_past_the_checkpoint_are_cut_to_it(tmp_path: Path) -> None:
    """A process killed between writing the sessions and the checkpoint: on resume its
    share is what the checkpoint holds, and a session that checkpointed nothing is dropped."""
    path = tmp_path / "sessions.json"
    spans = [(0, 20), (20, 30), (30, 30)]
    write_sessions(
        path,
        [Session("subpixel train", "cpu", "cpu", 2, 1, "2.13.0", a, b, 1.0) for a, b in spans],
    )
    assert [(s.first_iteration, s.last_iteration) for s in read_sessions(path)] == spans
    kept = read_sessions(path, iteration=25)
    assert [(s.first_iteration, s.last_iteration) for s in kept] == [(0, 20), (20, 25)]
    path.write_text("[{")
    with pytest.raises(ValueError, match=r"sessions\.json is not a record of training sessions"):
        read_sessions(path)


def test_distilled_targets_move_the_hr_patch_towards_the_teacher() -> None:
    teacher = torch.nn.Upsample(scale_factor=2, mode="nearest")
    lr, hr = torch.rand(2, 1, 4, 5), torch.rand(2, 1, 8, 10)
    taught = teacher(lr)
    for weight in (0.25, 0.5, 1.0):
        expected = (1 - weight) * hr + weight * taught
        got = distilled_targets(teacher, lr, hr, weight)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
        assert not got.requires_grad


def test_a_run_with_a_teacher_trains_towards_it_and_resumes_exactly(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    config = _config(folders, iterations=20, teacher="espcn", teacher_weight=1.0)
    train(config, tmp_path / "straight", cache_dir=cache)
    assert TrainConfig.load(tmp_path / "straight" / "config.json").teacher == "espcn"
    with pytest.raises(_Stop):
        train(config, tmp_path / "run", cache_dir=cache, progress=_stop_at(15))
    train(config, tmp_path / "run", cache_dir=cache, resume=True)
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    # Against the same run without the teacher, the weights differ: the targets did.
    alone = train(_config(folders, iterations=20), tmp_path / "alone", cache_dir=cache)
    assert alone.iteration == 20
    c = load_file(str(tmp_path / "alone" / "last.safetensors"))
    assert not all(torch.equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize(
    ("teacher", "message"),
    [
        ("espcn_x3", r"the teacher .*espcn_x3.* is x3 with 1 channels; the run is x2 with 1"),
        ("nothing-here", r"not a run folder, a weights file or a bundled model"),
    ],
)
def test_a_teacher_of_another_scale_or_none_is_refused_before_the_run_folder_is_made(
    teacher: str, message: str, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(RunError, match=message):
        train(_config(folders, teacher=teacher), tmp_path / "run", cache_dir=tmp_path / "c")
    assert not (tmp_path / "run").exists()


def test_teacher_weight_must_lie_in_the_unit_interval(folders: tuple[Path, Path]) -> None:
    for weight in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="teacher_weight"):
            _config(folders, teacher="espcn", teacher_weight=weight)
