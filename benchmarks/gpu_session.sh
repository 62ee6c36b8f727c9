#!/usr/bin/env bash
# One time-boxed GPU session for issue 12 (BiWKV Triton kernels): GPU tests, BiWKV benchmark
# (ours vs the official CUDA kernel), codec benchmark (LALIC vs ELIC). Everything goes to $OUT
# (at most 8 files come back: session.log, tests.log, biwkv_gpu.log/.json, codec.log/.json).
#
# Prepare on the CPU machine (it reaches the package registry; the GPU machine does not),
# in the checkout's root, once:
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_34_x86_64 -d .whl compressai==1.2.8
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl pytorch-msssim
#   mkdir -p .gpu_inputs/kodak && cp -r ../shared/reference/official_cuda .gpu_inputs/ \
#       && cp ../shared/data/kodak/kodim23.png .gpu_inputs/kodak/
#   grep -qx '/.gpu_inputs/' .git/info/exclude || echo '/.gpu_inputs/' >> .git/info/exclude
#
# (.whl/ is in .gitignore.) Then, with the device tool:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".gpu_inputs"], timeout_s=600)
# The script stops itself after GPU_SESSION_SECONDS (default 540 s) so that the 600 s call
# returns with its files; 15 minutes of device time cover one start (1-2 min), this call and
# a rerun of one section if needed.
#
# On a CPU (a check of the script, not a measurement): SMOKE=1 bash benchmarks/gpu_session.sh
# runs the Python parts with --smoke under TRITON_INTERPRET=1 and collects the GPU tests
# without running them.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
BUDGET=${GPU_SESSION_SECONDS:-540}
OUT=${OUT:-/tmp/gpu_session_out}
mkdir -p "$OUT"
LOG="$OUT/session.log"
: > "$LOG"

say() { echo "[$(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }

# seconds left for a section: its planned length, capped by what the budget leaves
slot() {
    local want=$1 left=$((BUDGET - SECONDS - 10))
    if [ "$left" -lt "$want" ]; then want=$left; fi
    if [ "$want" -lt 1 ]; then want=1; fi
    echo "$want"
}

section() {  # section NAME PLANNED_SECONDS LOGFILE command...
    local name=$1 want=$2 logfile=$3
    shift 3
    local t
    t=$(slot "$want")
    if [ $((BUDGET - SECONDS)) -lt 20 ]; then
        say "$name: skipped (time budget spent)"
        return 0
    fi
    say "$name: start (timeout ${t}s): $*"
    timeout --signal=TERM --kill-after=5 "$t" "$@" > "$logfile" 2>&1
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        say "$name: TIMED OUT after ${t}s (partial output in $(basename "$logfile"))"
    else
        say "$name: exit $rc"
    fi
    tail -n 40 "$logfile" >> "$LOG"
}

# ---- environment ---------------------------------------------------------------------------
if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    mkdir -p /tmp/site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        >> "$LOG" 2>&1 && say "wheels installed into /tmp/site: $(ls .whl | tr '\n' ' ')"
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    say "no .whl/ folder: compressai must already be importable for the codec benchmark"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
IMAGE_ARGS=()
if [ -f .gpu_inputs/kodak/kodim23.png ]; then IMAGE_ARGS=(--image .gpu_inputs/kodak/kodim23.png); fi
OFFICIAL_ARGS=()
if [ -d .gpu_inputs/official_cuda ]; then OFFICIAL_ARGS=(--official-src .gpu_inputs/official_cuda); fi

{
    echo "git: $(git log --oneline -1 2>/dev/null || echo 'not a git checkout')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
    "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'gpu', torch.cuda.is_available() and torch.cuda.get_device_name())" 2>&1
    command -v nvcc > /dev/null && nvcc --version | tail -n 1
} >> "$LOG" 2>&1

if [ "$SMOKE" = "1" ]; then
    export TRITON_INTERPRET=1
    section "tests (collect only, smoke)" 120 "$OUT/tests.log" \
        "$PYTHON" -m pytest -q --collect-only tests/test_biwkv_triton.py
    section "biwkv_gpu (smoke)" 600 "$OUT/biwkv_gpu.log" \
        "$PYTHON" -W ignore benchmarks/biwkv_gpu.py --smoke --skip-sweep --json "$OUT/biwkv_gpu.json"
    section "codec --device cuda (smoke)" 600 "$OUT/codec.log" \
        "$PYTHON" benchmarks/codec.py --device cuda --smoke "${IMAGE_ARGS[@]}" --json "$OUT/codec.json"
    say "smoke session done"
    exit 0
fi

unset TRITON_INTERPRET
# 1. BiWKV: issue-12 shapes, T sweep, accuracy of the compiled kernels vs the float64
#    reference (the official kernel builds in the background meanwhile)
section "biwkv_gpu" 240 "$OUT/biwkv_gpu.log" \
    "$PYTHON" benchmarks/biwkv_gpu.py "${OFFICIAL_ARGS[@]}" --repeats 7 --json "$OUT/biwkv_gpu.json"
# 2. the tests (GPU tests on the compiled kernels; the interpreter tests in a subprocess)
section "tests" 150 "$OUT/tests.log" \
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_biwkv_triton.py
# 3. codec: LALIC vs ELIC on the GPU
section "codec --device cuda" 120 "$OUT/codec.log" \
    "$PYTHON" benchmarks/codec.py --device cuda "${IMAGE_ARGS[@]}" --repeats 3 --json "$OUT/codec.json"
# 4. with time left: channel block / warps sweep at (1, 98304, 96) (tune.log, tune.json)
if [ $((BUDGET - SECONDS)) -gt 80 ]; then
    section "biwkv_gpu --only-tune" 70 "$OUT/tune.log" \
        "$PYTHON" benchmarks/biwkv_gpu.py --only-tune --repeats 3 --json "$OUT/tune.json"
fi
say "session done"
