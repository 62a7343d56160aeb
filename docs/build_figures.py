"""Build docs/theory.md and docs/figures/*.png with subpixel's own functions.

    python docs/build_figures.py                 # full sizes, into docs/ (about 2 minutes)
    python docs/build_figures.py --small -o /tmp/guide
    python docs/build_figures.py --espcn run/best.safetensors --fsrcnn fsrcnn_x3.safetensors

Weights, for each network (x3): the file given with --espcn / --fsrcnn; else the bundled
weights; else a fallback (FSRCNN: the yjn870/FSRCNN-pytorch peer weights under
$SUBPIXEL_DATA/peers; ESPCN: a training run in progress, for development only); else, with
--small, a freshly built network. theory.md names the weights it was made from.

Exits with status 1, leaving the output folder as it was, if any equivalence a figure
illustrates does not hold numerically.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from subpixel.errors import SubpixelError
from subpixel.figures import build_default_guide

ROOT = Path(__file__).resolve().parent.parent
# Used only when no ESPCN weights are bundled or given: a run being trained on this machine.
DEVELOPMENT_ESPCN = Path("/work/runs/espcn_x3/best.safetensors")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "docs", help="output folder")
    parser.add_argument("--small", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--espcn", type=Path, help="ESPCN x3 weights (.safetensors)")
    parser.add_argument("--fsrcnn", type=Path, help="FSRCNN x3 weights (.safetensors or .pth)")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "cat.png")
    args = parser.parse_args(argv)
    try:
        guide = build_default_guide(
            args.out,
            small=args.small,
            espcn=args.espcn,
            fsrcnn=args.fsrcnn,
            image=args.image,
            espcn_fallbacks=[DEVELOPMENT_ESPCN],
            progress=lambda message: print(f"... {message}", flush=True),
        )
    except SubpixelError as error:
        print(f"build_figures: error: {error}", file=sys.stderr)
        return 1
    for check in guide.checks:
        print(f"ok  {check.error:9.1e} <= {check.tolerance:.0e}  {check.name}")
    for path in guide.figures:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    print(f"wrote {guide.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
