#!/usr/bin/env bash
# The GPU measurements of one lent-device session, as one prepared command.
#
# Results (plain text) go under $OUT. Runs on a CUDA machine whose python3 holds torch and
# numpy/Pillow/safetensors/tqdm/tifffile (nothing is fetched there); PyAV and pypng travel
# as wheels. Prepare here, in the repository root (both folders ignored by .git/info/exclude):
#
#   printf '/.whl/\n/.gpudata/\n' >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl av==18.1.0 \
#       pypng==0.20220715.0
#   mkdir -p .gpudata/video .gpudata/train
#   cp ../shared/data/video/slow_traffic_small.mp4 .gpudata/video/
#   cp -r ../shared/data/train/T91 .gpudata/train/
#
# then run `bash benchmarks/gpu_session.sh` with `.whl` and `.gpudata` carried (about 58 MB
# with the tracked files). QUICK=1 shrinks every step to try the script on a CPU.
set -uo pipefail
OUT=${OUT:-out/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:src
else
    export PYTHONPATH=src
fi
DATA=${GPU_DATA:-.gpudata}
if [ "${QUICK:-0}" = 1 ]; then
    pipeline=(--repeats 2 --batch 2 --width 64 --height 36)
    frames=4 batches="1 2" train=(--seconds 1 --repeats 1 --warmup 2 --batch-size 8)
    workload=64x36 runs=2 gpu_batch=2
    exactness=(--batch 2 --width 40 --height 24 --networks espcn-x3)
else
    pipeline=(--repeats 20 --batch 8)
    frames=300 batches="1 8 32" train=(--seconds 10 --repeats 3 --batch-size 256)
    workload=1080p runs=20 gpu_batch=8
    exactness=(--batch 8)
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.txt"

# 1. Image frames host to host: the default path (upscale_batch), the device pipeline in
#    float32/float16/bfloat16, the network alone; batch 1 and 8 (#22's frames/s bars).
python3 benchmarks/device_pipeline.py "${pipeline[@]}" 2>&1 | tee "$OUT/device_pipeline.txt"

# 2. Video x3 end to end (benchmarks/video_speed.py: FSRCNN-s and ESPCN beside the bicubic
#    floor, the network alone), the networks on the GPU, frames in batches.
for batch in $batches; do
    SUBPIXEL_DATA="$DATA" python3 benchmarks/video_speed.py --presets ultrafast \
        --frames "$frames" --batch "$batch" --out "$OUT/video-batch$batch" 2>&1 \
        | tee "$OUT/video-batch$batch.txt"
done

# 3. Training steps per second on the device (#24's 100 M LR pixels/s for FSRCNN x3).
python3 benchmarks/train_speed.py --no-loader --patch-size 32 --networks fsrcnn-x3,espcn-x3 \
    --data "$DATA/train/T91" "${train[@]}" 2>&1 | tee "$OUT/train_speed.txt"

# 4. benchmarks/speed.py with its GPU section (the same rows as step 1, with the device's
#    matmul peaks and each network's share of them), beside the CPU's torch rows: the
#    speed.md to keep as docs/speed-gpu.md.
python3 benchmarks/speed.py --networks espcn-x3,fsrcnn-x3,fsrcnn-s-x3 --workloads "$workload" \
    --engines torch,torch-channels-last --no-quality --runs "$runs" --gpu-batch "$gpu_batch" \
    --out "$OUT/speed" 2>&1 | tail -5 | tee "$OUT/speed.txt"
# 5. Exactness on the device (#22): a batch against its frames, tiles 17/37/97 against the
#    whole image, the device against the CPU, in output bytes (the README states only what
#    this measured).
python3 benchmarks/device_exactness.py "${exactness[@]}" 2>&1 | tee "$OUT/exactness.txt"
date -u | tee -a "$OUT/machine.txt"
