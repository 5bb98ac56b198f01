#!/usr/bin/env bash
# Every GPU check in one command, on a machine with one CUDA GPU, in under 9 minutes:
#
#   bash bench/gpu_check.sh [OUT_DIR]     # default: $OUT (the device tool's), else ./gpu-check
#
# 1. installs the wheels the machine lacks, carried in .whl/ (bench/gpu_wheels.sh), into a
#    virtual environment over the machine's own PyTorch;
# 2. runs `pytest -m gpu` (tests/gpu: bf16 training, packing with sdpa and flash-attn when
#    installed, the deepspeed launcher with ZeRO-2 and ZeRO-3, a real job through the API);
# 3. runs bench/train_throughput.py (gpu preset: recipe vs hand-written baseline, MFU) and
#    bench/serve_bench.py (gateway vs worker);
# and writes every figure to OUT_DIR/gpu_report.txt, each step's whole output beside it.
# Without a GPU it says so and exits 0.
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
  # A venv whose site-packages come first, then the machine's own (its PyTorch): a .pth file
  # rather than --system-site-packages, because the machine's python3 may itself be a venv,
  # whose packages a child venv's "system" site would not see. Scripts (deepspeed, uvicorn)
  # land in the venv's bin/, which the trainer's launcher and the local executor find beside
  # the interpreter.
  "$python" -m venv --without-pip /tmp/gpu-venv || exit 1
  venv_site=$(/tmp/gpu-venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  "$python" -c 'import site; print("\n".join(site.getsitepackages()))' > "$venv_site/machine.pth"
  /tmp/gpu-venv/bin/python -m pip install -q --no-index --no-deps --no-compile --ignore-installed \
    --no-cache-dir .whl/*.whl || exit 1
  python=/tmp/gpu-venv/bin/python
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 \
  | tee -a "$report"
"$python" -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "| cuda",
  torch.version.cuda, "| transformers", transformers.__version__, "| deepspeed",
  deepspeed.__version__)' 2>&1 | tail -n 1 | tee -a "$report"

# CHECKS="tests serve" runs a subset (e.g. again, after one step failed).
checks=" ${CHECKS:-tests throughput serve} "
status=0
if [[ $checks == *" tests "* ]]; then
step "pytest -m gpu"
timeout 200 "$python" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs \
  --durations=0 2>&1 | tee "$out/pytest.log" | tail -n 25 | tee -a "$report"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
fi

if [[ $checks == *" throughput "* ]]; then
step "training throughput: recipe vs baseline (gpu preset)"
timeout 200 "$python" bench/train_throughput.py --preset gpu --rows "${ROWS:-512}" \
  --json "$out/train_throughput.json" 2>&1 | tee "$out/throughput.log" | tail -n 25 \
  | tee -a "$report"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
fi

if [[ $checks == *" serve "* ]]; then
step "serving: gateway vs worker"
timeout 150 "$python" bench/serve_bench.py --requests 16 --tokens 64 --rounds 2 --restarts 3 2>&1 \
  | tee "$out/serve.log" | grep -v -e WARNING -e 'it/s' | tail -n 12 | tee -a "$report"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
fi

step "done: exit $status"
exit $status
