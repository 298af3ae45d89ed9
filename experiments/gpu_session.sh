#!/usr/bin/env bash
# One GPU session's checks, run from the repository root on a machine with a CUDA GPU:
#   DROPPICK_DATA=DIR OUT=DIR bash experiments/gpu_session.sh [SECONDS]
# DIR/fashion-mnist holds the four IDX files; results land in $OUT. SECONDS (default 540) is
# the wall-clock budget of the whole script: each step gets a timeout, the Fashion-MNIST GPU
# report gets what is left, and the report's runs are archived even when a step fails.
set -u
BUDGET=${1:-540}
mkdir -p "$OUT"
scratch=$(mktemp -d)  # the checks' run directories: a rerun on the same machine starts clean
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
tiny="--dataset fashion-mnist --model resnet20 --train-samples 2000 --test-samples 500 --epochs 3 --warmup 1
      --interval 1 --keep 0.5 --reuse-at 3 --lr-milestones 3 --device cuda --no-progress"

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/checks.log, never abort
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s) ===" >>"$OUT/checks.log"
    timeout -k 10 "$limit" "$@" >>"$OUT/checks.log" 2>&1
    echo "=== $name: exit $? ===" >>"$OUT/checks.log"
}

{ date -u; nvidia-smi -L; $py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } \
    >"$OUT/checks.log" 2>&1
# CUDA paths the CPU suite only reaches through stand-ins: fp16 with its GradScaler, bf16,
# channels_last, and the nccl process group (one rank).
step "train fp16 + channels_last" 60 $py -m droppick.cli train $tiny --amp fp16 --channels-last --out "$scratch/fp16"
step "train bf16" 60 $py -m droppick.cli train $tiny --amp bf16 --out "$scratch/bf16"
step "torchrun nccl, 1 rank" 60 $py -m torch.distributed.run --nproc_per_node=1 -m droppick.cli train $tiny \
    --out "$scratch/nccl"
step "bench trainer_speed cuda" 120 bash -c "cd bench && $py trainer_speed.py --device cuda"
left=$((BUDGET - SECONDS - 20))  # 20 s to archive
if [ "$left" -gt 60 ]; then
    step "fashion-mnist gpu report" "$left" $py experiments/fashion_mnist_gpu.py --out /tmp/fashion-mnist-gpu \
        --budget-minutes "$(awk "BEGIN {print ($left - 30) / 60}")"
fi
$py experiments/fashion_mnist_gpu.py --out /tmp/fashion-mnist-gpu --report-only >>"$OUT/checks.log" 2>&1
# A run cut off by the time limit has no checkpoints in the archive, so it could not resume: leave it out.
for run in /tmp/fashion-mnist-gpu/runs/*/; do [ -f "$run/summary.json" ] || rm -rf "$run"; done
tar czf "$OUT/fashion-mnist-gpu.tar.gz" --exclude='*.pt' --exclude='*.pt.sha256' -C /tmp fashion-mnist-gpu
