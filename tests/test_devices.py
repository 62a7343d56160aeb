from __future__ import annotations

from pathlib import Path

import pytest
import torch

from subpixel.devices import processor_name, resolve_device
from subpixel.errors import DeviceError, SubpixelError
from subpixel.weights import load_network


def _pretend_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_cpu_and_auto_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, 0)
    for name in ("cpu", "CPU", "cpu:0", "auto", torch.device("cpu")):
        assert resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "tpu", "meta", ""])
def test_unknown_names_are_refused_with_the_choices(name: str) -> None:
    with pytest.raises(DeviceError, match=r"unknown device; choose auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)
    assert issubclass(DeviceError, SubpixelError)


def test_cuda_on_a_cpu_build_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, 0)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError) as info:
            resolve_device(name)
        build = f"torch {torch.__version__} is a CPU build"
        assert str(info.value) == f"{name}: no CUDA device is available ({build})"


def test_cuda_devices_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"^cuda:2: no such CUDA device; .* cuda:0 to cuda:1$"):
        resolve_device("cuda:2")


def test_mps_where_there_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"^mps: no MPS device is available"):
        resolve_device("mps")


def test_load_model_checks_the_device_before_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    _pretend_cuda(monkeypatch, 0)
    with pytest.raises(DeviceError, match=r"^gpu: unknown device"):
        load_network("espcn", device="gpu")
    with pytest.raises(DeviceError, match=r"^cuda: no CUDA device"):
        load_network("espcn", device="cuda")


def test_train_checks_the_device_before_making_the_run_folder(tmp_path: Path) -> None:
    from subpixel.training import TrainConfig, train

    out = tmp_path / "run"
    with pytest.raises(DeviceError, match=r"^gpu: unknown device"):
        train(TrainConfig(data=(str(tmp_path),), val=None), out, device="gpu")
    assert not out.exists()


def test_the_processor_is_named_with_its_generation() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in cpuinfo.read_text().splitlines())
        if key.strip() in ("model name", "cpu family", "model")
    )
    name = processor_name("cpu")
    assert name.startswith(fields.get("model name", ""))
    if "cpu family" in fields:
        assert name.endswith(f"(family {fields['cpu family']}, model {fields['model']})")
