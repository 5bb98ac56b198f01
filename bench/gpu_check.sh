#!/usr/bin/env bash
# Every GPU check in one command, on a machine with one CUDA GPU, in about 8 minutes:
#
#   bash bench/gpu_check.sh [OUT_DIR]     # default: $OUT (the device tool's), else ./gpu-check
#
# 1. installs the wheels the machine lacks, carried in .whl/ (bench/gpu_wheels.sh), into a
#    virtual environment over the machine's own PyTorch;
# 2. runs `pytest -m gpu` (tests/gpu: bf16 training, packing with sdpa and flash-attn when
#    installed, the deepspeed launcher with ZeRO-2 and ZeRO-3, a real job through the API);
# 3. runs bench/train_throughput.py (gpu preset: recipe vs hand-written baseline, MFU) and
#    bench/serve_bench.py (gateway vs worker);
# and writes every figure to OUT_DIR/gpu_report.txt. Without a GPU it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
report="$out/gpu_report.txt"
: > "$report"
say() { printf '%s\n' "$*" | tee -a "$report"; }
step() { say ""; say "== $* ($(date -u +%H:%M:%S))"; }

python=${PYTHON:-python3}
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
  say "gpu_check: no CUDA GPU here (torch.cuda.is_available() is false, or no torch):"
  say "nothing was measured. Run it on a machine with one GPU."
  exit 0
fi

step "environment"
if compgen -G ".whl/*.whl" >/dev/null; then
  # Over the machine's PyTorch: its scripts (deepspeed, uvicorn) go to the venv's bin/, which
  # the trainer's launcher and the local executor find beside the interpreter.
  "$python" -m venv --system-site-packages /tmp/gpu-venv || exit 1
  /tmp/gpu-venv/bin/python -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir .whl/*.whl || exit 1
  python=/tmp/gpu-venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 \
  | tee -a "$report"
"$python" -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "| cuda",
  torch.version.cuda, "| transformers", transformers.__version__, "| deepspeed",
  deepspeed.__version__)' 2>&1 | tail -n 1 | tee -a "$report"

status=0
step "pytest -m gpu"
timeout 300 "$python" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs 2>&1 \
  | tail -n 20 | tee -a "$report"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "training throughput: recipe vs baseline (gpu preset)"
timeout 240 "$python" bench/train_throughput.py --preset gpu \
  --json "$out/train_throughput.json" 2>&1 | tail -n 25 | tee -a "$report"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "serving: gateway vs worker"
timeout 150 "$python" bench/serve_bench.py --rounds 2 --restarts 3 2>&1 \
  | grep -v -e WARNING -e 'it/s' | tail -n 12 | tee -a "$report"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "done: exit $status"
exit $status
