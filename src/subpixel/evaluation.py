"""PSNR/SSIM of a network on a folder of HR images, under the papers' protocol.

Each HR image is cropped to a multiple of the scale and degraded by MATLAB-compatible bicubic;
the network's output (quantised to 8 bits, as a saved image) is compared with the cropped HR
image on luminance with a border of ``scale`` pixels left out. MATLAB bicubic upscaling of the
same LR image is measured alongside as the reference every paper reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from subpixel.errors import ImageError
from subpixel.images import IMAGE_EXTENSIONS, read_image
from subpixel.metrics import psnr, ssim
from subpixel.paths import BENCHMARK_SETS, benchmark_hr_dir
from subpixel.resize import degrade, imresize, modcrop
from subpixel.upscaler import Upscaler, as_upscaler

__all__ = [
    "EvaluationReport",
    "ImageScore",
    "evaluate",
    "evaluate_upscaler",
    "list_images",
    "resolve_dataset",
]

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ImageScore:
    """Scores of one image: the model's, and MATLAB bicubic's on the same LR input."""

    name: str
    psnr: float
    ssim: float
    bicubic_psnr: float
    bicubic_ssim: float
    seconds: float


@dataclass(frozen=True)
class EvaluationReport:
    """Per-image scores and their means (the papers average per-image PSNR)."""

    dataset: str
    scale: int
    protocol: str
    images: list[ImageScore] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return float(np.mean([getattr(score, key) for score in self.images]))

    def to_dict(self) -> dict[str, object]:
        """Top-level ``psnr``/``ssim`` are the model's means; details are nested."""
        return {
            "psnr": self.mean("psnr"),
            "ssim": self.mean("ssim"),
            "seconds_per_image": self.mean("seconds"),
            "bicubic": {"psnr": self.mean("bicubic_psnr"), "ssim": self.mean("bicubic_ssim")},
            "dataset": self.dataset,
            "scale": self.scale,
            "protocol": self.protocol,
            "images": [score.__dict__ for score in self.images],
        }


def resolve_dataset(dataset: str | Path) -> Path:
    """A benchmark name (Set5, Set14, BSD100) or a folder of HR images -> the folder."""
    if str(dataset) in BENCHMARK_SETS:
        folder = benchmark_hr_dir(str(dataset))
        if not folder.is_dir():
            raise ImageError(f"{dataset} not found at {folder} (set SUBPIXEL_DATA)")
        return folder
    folder = Path(dataset)
    if not folder.is_dir():
        names = ", ".join(BENCHMARK_SETS)
        raise ImageError(f"dataset {str(dataset)!r} is neither a folder nor one of {names}")
    return folder


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ImageError(f"no images found in {folder}")
    return files


def _hr_array(path: Path) -> np.ndarray:
    image = read_image(path)
    if image.mode not in ("L", "RGB"):
        # Benchmarks are 8-bit; anything else is compared on its RGB rendering.
        image = image.convert("RGB")
    return np.asarray(image)


UpscaleFunction = Callable[[np.ndarray], np.ndarray]


def evaluate(
    model: Upscaler | nn.Module,
    dataset: str | Path,
    *,
    protocol: str = "matlab",
    progress: Progress | None = None,
) -> EvaluationReport:
    """Score ``model`` on a benchmark name or a folder of HR images.

    Args:
        model: an ``Upscaler`` (scored with its engine and precision) or a network (run as
            it is, eager float32: the papers' numbers); its scale is the evaluation scale.
        dataset: ``"Set5"``, ``"Set14"``, ``"BSD100"`` or a folder of HR images.
        protocol: ``"matlab"`` (Y rounded to 8 bits, the papers') or ``"float"`` (BasicSR's).
        progress: called as ``progress(done, total, name)`` after each image.
    """
    upscaler = as_upscaler(model)
    return evaluate_upscaler(
        upscaler, upscaler.scale, dataset, protocol=protocol, progress=progress
    )


def evaluate_upscaler(
    upscale: UpscaleFunction,
    scale: int,
    dataset: str | Path,
    *,
    protocol: str = "matlab",
    progress: Progress | None = None,
) -> EvaluationReport:
    """Score any function from a uint8 LR image ((H, W) or (H, W, 3)) to its x``scale`` image.

    This is how peers (OpenCV's dnn_superres, for instance) are measured on equal terms.
    """
    folder = resolve_dataset(dataset)
    files = list_images(folder)
    report = EvaluationReport(dataset=str(dataset), scale=scale, protocol=protocol)
    for done, path in enumerate(files, start=1):
        full = _hr_array(path)
        hr = modcrop(full, scale)
        lr = degrade(full, scale)
        start = time.perf_counter()
        sr = upscale(lr)
        seconds = time.perf_counter() - start
        if sr.shape != hr.shape:
            raise ImageError(f"upscaler returned {sr.shape} for {path.name}, expected {hr.shape}")
        reference = imresize(lr, scale=scale)
        report.images.append(
            ImageScore(
                name=path.stem,
                psnr=psnr(sr, hr, crop=scale, protocol=protocol),
                ssim=ssim(sr, hr, crop=scale, protocol=protocol),
                bicubic_psnr=psnr(reference, hr, crop=scale, protocol=protocol),
                bicubic_ssim=ssim(reference, hr, crop=scale, protocol=protocol),
                seconds=seconds,
            )
        )
        if progress is not None:
            progress(done, len(files), path.stem)
    return report
