#!/usr/bin/env bash
# Recipe training on a lent GPU: `subpixel train --recipe R --device cuda` for each recipe,
# side by side (four small runs kept an H200 busy), each cut at $LIMIT seconds so the call
# returns inside the device tool's 10 minutes; the run folders (config, log, curves,
# checkpoint: `subpixel train --resume` goes on from there on any machine) come back under
# $OUT/runs, for `subpixel bundle` here.
#
# The training sets are 87 MB of PNG (58 MB as lossless WebP), more than one call can carry
# beside the repository (64 MiB in all), so they come in two calls made back to back (the
# machine keeps ignored folders between calls while it stays warm): benchmarks/gpu_session.sh
# first, carrying .gpudata with T91, Set5 and the video, then this script, carrying
# .gpudata-train with General100 and BSDS200 as lossless WebP (the same pixels; about 52 MB),
# which it moves beside T91. Prepare here, in the repository root (both ignored by
# .git/info/exclude):
#
#   mkdir -p .gpudata/benchmark && cp -r ../shared/data/benchmark/Set5 .gpudata/benchmark/
#   python3 - <<'PY'
#   from pathlib import Path
#   from PIL import Image
#   for name in ("General100", "BSDS200"):
#       out = Path(".gpudata-train") / name
#       out.mkdir(parents=True, exist_ok=True)
#       for png in sorted(Path("../shared/data/train", name).glob("*.png")):
#           Image.open(png).save(out / (png.stem + ".webp"), lossless=True, method=4)
#   PY
#
# then run `RECIPES="espcn-x3 fsrcnn-s-x3" bash benchmarks/gpu_recipes.sh` carrying
# .gpudata-train. QUICK=1 runs each recipe for a few steps on whatever device there is, to
# try the script on a CPU.
set -uo pipefail
OUT=${OUT:-out/gpu-recipes}
DATA=${GPU_DATA:-.gpudata}
RECIPES=${RECIPES:-espcn-x2 espcn-x3 espcn-x4 fsrcnn-s-x3}
LIMIT=${LIMIT:-540}
mkdir -p "$OUT/runs" "$DATA/train"
export PYTHONUNBUFFERED=1 PYTHONPATH=src SUBPIXEL_DATA="$DATA"
if [ -d .gpudata-train ]; then
    for set in .gpudata-train/*; do
        rm -rf "$DATA/train/$(basename "$set")"
        mv "$set" "$DATA/train/"
    done
fi
for set in T91 General100 BSDS200; do
    if [ ! -d "$DATA/train/$set" ]; then
        echo "gpu_recipes: $DATA/train/$set is missing (was the machine given back between" \
            "the two calls?)" | tee "$OUT/error.txt"
        exit 1
    fi
done
if [ "${QUICK:-0}" = 1 ]; then
    device=cpu options=(--iterations 40 --warmup 10 --val-every 20 --batch-size 4)
else
    device=cuda options=()
fi
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
} 2>&1 | tee "$OUT/machine.txt"
for recipe in $RECIPES; do
    timeout --signal=TERM "$LIMIT" python3 -m subpixel train --recipe "$recipe" \
        --device "$device" "${options[@]}" --out "$OUT/runs/$recipe" \
        >"$OUT/$recipe.log" 2>&1 &
done
wait
for recipe in $RECIPES; do
    echo "== $recipe: $(tail -n 1 "$OUT/runs/$recipe/log.csv" 2>/dev/null || echo 'no log')"
done | tee -a "$OUT/machine.txt"
date -u | tee -a "$OUT/machine.txt"
