"""Quality of every shipped model against bicubic and OpenCV's dnn_superres peers.

Prints one table (PSNR/SSIM on Y under the papers' protocol, time per image) for Set5, Set14
and BSD100 at x2/x3/x4, and writes docs/quality.md, a PSNR-versus-time scatter plot
(docs/quality.png, like the first figure of the ESPCN and FSRCNN papers) and side-by-side
crops (docs/crops_x3.png: bicubic | OpenCV | ours | ground truth).

    python benchmarks/quality.py                 # everything (several minutes on 2 cores)
    python benchmarks/quality.py --quick         # Set5 at x3 only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import subpixel
from subpixel.devices import processor_name
from subpixel.errors import SubpixelError
from subpixel.evaluation import EvaluationReport, evaluate, evaluate_upscaler, resolve_dataset
from subpixel.images import read_image
from subpixel.peers import OPENCV_MODELS, opencv_upscaler
from subpixel.resize import degrade, imresize, modcrop
from subpixel.weights import bundled_weights, load_network

OPENCV_NAMES = {
    "espcn": "OpenCV ESPCN",
    "fsrcnn": "OpenCV FSRCNN",
    "fsrcnn-s": "OpenCV FSRCNN-small",
}
OURS_NAMES = {
    "espcn": "subpixel ESPCN",
    "fsrcnn": "subpixel FSRCNN",
    "fsrcnn-s": "subpixel FSRCNN-s",
    "ecbsr": "subpixel ECBSR",
}


@dataclass(frozen=True)
class Row:
    method: str
    scale: int
    dataset: str
    psnr: float
    ssim: float
    seconds: float


def measure(datasets: list[str], scales: list[int]) -> list[Row]:
    rows: list[Row] = []
    bundled = bundled_weights()
    for scale in scales:
        for dataset in datasets:
            reports: dict[str, EvaluationReport] = {}
            for architecture in OPENCV_MODELS:
                try:
                    upscale = opencv_upscaler(architecture, scale)
                except SubpixelError as error:
                    print(f"skipping OpenCV {architecture} x{scale}: {error}", file=sys.stderr)
                    continue
                reports[OPENCV_NAMES[architecture]] = evaluate_upscaler(upscale, scale, dataset)
            for (architecture, weights_scale), path in sorted(bundled.items()):
                if weights_scale == scale:
                    model = load_network(path)  # the papers' numbers: eager float32
                    reports[OURS_NAMES.get(architecture, architecture)] = evaluate(model, dataset)
            if not reports:
                bicubic_model = load_network("bicubic", scale=scale)
                reports["bicubic"] = evaluate(bicubic_model, dataset)
            first = next(iter(reports.values()))
            rows.append(
                Row(
                    "bicubic (MATLAB)",
                    scale,
                    dataset,
                    first.mean("bicubic_psnr"),
                    first.mean("bicubic_ssim"),
                    float("nan"),
                )
            )
            for method, report in reports.items():
                rows.append(
                    Row(
                        method,
                        scale,
                        dataset,
                        report.mean("psnr"),
                        report.mean("ssim"),
                        report.mean("seconds"),
                    )
                )
            print(f"measured x{scale} {dataset}", file=sys.stderr)
    return rows


def table(rows: list[Row], datasets: list[str]) -> str:
    header = "| scale | method | " + " | ".join(f"{d} PSNR / SSIM" for d in datasets)
    header += " | ms per image (Set5) |\n|---|---|" + "---|" * len(datasets) + "---|\n"
    lines = []
    methods = list(dict.fromkeys(r.method for r in rows))
    for scale in sorted({r.scale for r in rows}):
        for method in methods:
            cells = {r.dataset: r for r in rows if r.scale == scale and r.method == method}
            if not cells:
                continue
            values = " | ".join(
                f"{cells[d].psnr:.2f} / {cells[d].ssim:.4f}" if d in cells else "-"
                for d in datasets
            )
            first = cells.get(datasets[0])
            ms = "-" if first is None or np.isnan(first.seconds) else f"{first.seconds * 1000:.1f}"
            lines.append(f"| x{scale} | {method} | {values} | {ms} |")
    return header + "\n".join(lines) + "\n"


def machine() -> str:
    cpu = processor_name()
    import cv2

    return (
        f"{cpu}, {torch.get_num_threads()} threads; Python {platform.python_version()}, "
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, subpixel {subpixel.__version__}"
    )


def scatter(rows: list[Row], path: Path, dataset: str, scale: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [
        r for r in rows if r.dataset == dataset and r.scale == scale and not np.isnan(r.seconds)
    ]
    bicubic = [r for r in rows if r.dataset == dataset and r.scale == scale and np.isnan(r.seconds)]
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in chosen:
        ours = row.method.startswith("subpixel")
        axis.scatter(
            row.seconds * 1000,
            row.psnr,
            s=60,
            marker="o" if ours else "s",
            color="tab:red" if ours else "tab:gray",
        )
        axis.annotate(
            row.method,
            (row.seconds * 1000, row.psnr),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    if bicubic:
        axis.axhline(bicubic[0].psnr, color="tab:blue", lw=1, ls="--", label="bicubic (MATLAB)")
        axis.legend(loc="lower right", fontsize=8)
    axis.margins(x=0.35, y=0.15)
    axis.set(
        xscale="log",
        xlabel="milliseconds per image (CPU)",
        ylabel="PSNR on Y (dB)",
        title=f"{dataset} x{scale}: quality against time",
    )
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def crops(path: Path, scale: int, panels: list[tuple[str, str, tuple[int, int, int]]]) -> None:
    """Side-by-side crops: bicubic | OpenCV ESPCN | ours (best bundled) | ground truth."""
    ours_path = bundled_weights().get(("espcn", scale)) or bundled_weights().get(("fsrcnn", scale))
    methods: list[tuple[str, object]] = [("bicubic", lambda lr: imresize(lr, scale=scale))]
    with contextlib.suppress(SubpixelError):
        methods.append(("OpenCV ESPCN", opencv_upscaler("espcn", scale)))
    if ours_path is not None:
        model = subpixel.load_model(ours_path)
        methods.append((f"subpixel {model.card.architecture}", lambda lr: model(lr)))
    size, zoom, label_height = 96, 2, 18
    width = size * zoom * (len(methods) + 1)
    sheet = Image.new("RGB", (width, (size * zoom + label_height) * len(panels)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (dataset, name, (top, left, _)) in enumerate(panels):
        hr_full = np.asarray(read_image(resolve_dataset(dataset) / f"{name}.png").convert("RGB"))
        hr = modcrop(hr_full, scale)
        lr = degrade(hr_full, scale)
        outputs = [(label, fn(lr)) for label, fn in methods] + [("ground truth", hr)]  # type: ignore[operator]
        y = row * (size * zoom + label_height)
        for column, (label, image) in enumerate(outputs):
            crop = Image.fromarray(np.asarray(image)[top : top + size, left : left + size])
            crop = crop.resize((size * zoom, size * zoom), Image.NEAREST)
            x = column * size * zoom
            sheet.paste(crop, (x, y + label_height))
            draw.text((x + 4, y + 3), f"{label} ({name})" if column == 0 else label, fill="black")
    sheet.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["Set5", "Set14", "BSD100"])
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="Set5 at x3 only")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.scales = ["Set5"], [3]
    rows = measure(args.datasets, args.scales)
    text = table(rows, args.datasets)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    (args.out / "quality.md").write_text(
        "# Quality: subpixel against bicubic and OpenCV's dnn_superres\n\n"
        "Y PSNR (dB) / SSIM under the papers' protocol (MATLAB bicubic degradation, border "
        "crop = scale, `matlab` rounding), made by `python benchmarks/quality.py`.\n\n"
        f"Machine: {machine()}.\n\n{text}"
    )
    scatter_set = "Set14" if "Set14" in args.datasets else args.datasets[0]
    scatter_scale = 3 if 3 in args.scales else args.scales[0]
    scatter(rows, args.out / "quality.png", scatter_set, scatter_scale)
    crops(
        args.out / f"crops_x{scatter_scale}.png",
        scatter_scale,
        [("Set5", "butterfly", (80, 60, 0)), ("Set14", "zebra", (150, 200, 0))],
    )
    print(f"wrote {args.out}/quality.md, quality.png, crops_x{scatter_scale}.png", file=sys.stderr)


if __name__ == "__main__":
    main()
