#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one call of the device tool (steps limited to 9 minutes in all):
# keyframe throughput of base (SDPA, static KV cache, torch.compile; batches 1, 16, 64) and large against the
# naive loop, what a second task on a keyframe costs, fine-tuning images/s and `streamer find`'s keyframes/s.
#   here:   bench/gpu_wheels.sh
#   device: run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=590); its logs come back.
set -u
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
step() {  # seconds, log name, command...
  local limit=$1 name=$2
  shift 2
  timeout "$limit" "$@" 2>&1 | grep -v "Writing model shards" | tee "$out/$name.log"
}
step 270 throughput_base python3 bench/model_throughput.py --model base --variants sdpa static compile \
  --batches 1,16,64 --calls 3 --naive-calls 3 --json "$out/throughput_base.json"
step 100 throughput_large python3 bench/model_throughput.py --model large --batches 1,16,64 --calls 3 \
  --naive-calls 3 --json "$out/throughput_large.json"
step 60 shared_features python3 bench/shared_features.py --frames 5
step 90 finetune_speed python3 bench/finetune_speed.py --batch 8 16
step 20 find_speed python3 bench/find_speed.py --keyframes 64 --batch 16
