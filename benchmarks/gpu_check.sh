#!/usr/bin/env bash
# One GPU check, <= 5 minutes on one GPU, one report:
#   1. the test suite's device-independent part on the accelerator (tests/test_sharding.py
#      needs 8 devices and stays on CPU; conftest's JAX_PLATFORMS=cpu default is overridden);
#   2. the epoch benchmark (benchmarks/ncf_epoch.py, ML-1M shape, batch 256, all cases);
#   3. the throughput benchmark (benchmarks/throughput.py): MLPerf NeuMF on the ML-20M shape
#      at batch 2^20, float32 and bfloat16;
#   4. time to quality (benchmarks/time_to_quality.py): the paper's NeuMF-8 and the fast recipe
#      on the ML-100K files, fresh processes from process start to HR@10 >= 0.58, warm cache.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # default OUT_DIR: $OUT, else /tmp/gpu_check
#   DRY_RUN=1 bash benchmarks/gpu_check.sh /tmp/x   # on CPU, tiny sizes: checks the plumbing
#
# Needs a CUDA build of JAX in the Python it runs ($PYTHON, default .venv/bin/python, else
# python3): pip install -e '.[test]' 'jax[cuda12]'. It stops at once when JAX sees no GPU.
# Each step has its own time limit (timeout), so one slow step cannot eat the others' share;
# a step that fails or times out is reported and the next one still runs.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-/tmp/gpu_check}}"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
DRY_RUN="${DRY_RUN:-0}"
REPORT="$OUT_DIR/gpu_check.md"
mkdir -p "$OUT_DIR"

if [ "$DRY_RUN" = 1 ]; then
  PLATFORM=cpu
  TESTS=(tests/test_metrics.py)
  EPOCH_ARGS=(--shape=ml-100k --models=gmf-32 --adam=lazy --layouts=shuffled --reps=1)
  TP_ARGS=(--shapes=ml-1m --batch_sizes=4096 --target_samples=4096 --reps=1 --eval=sampled
           --sampled_eval_users=256)
  LIMITS=(120 120 120 120)
  TTQ_ARGS=(--seeds=0 --cache=cold --extra=--epochs=1 --target=0.0)
else
  PLATFORM=cuda
  TESTS=(tests --ignore=tests/test_sharding.py)
  EPOCH_ARGS=(--shape=ml-1m --batch_size=256 --reps=2)
  # 4 steps of 2^20 rows per timed call; the evaluation cases at the script's defaults.
  TP_ARGS=(--shapes=ml-20m --batch_sizes=1048576 --target_samples=4194304 --reps=3)
  LIMITS=(120 75 45 60)  # s: tests, epochs, each throughput dtype, each time to quality (<= 405)
  TTQ_ARGS=(--seeds=0,1 --cache=warm)
fi
export JAX_PLATFORMS="$PLATFORM"

{
  echo "# GPU check"
  echo
  echo "git $(git rev-parse --short HEAD 2>/dev/null)$(git status --porcelain 2>/dev/null | grep -q . && echo +dirty), $(date -u +%FT%TZ), dry_run=$DRY_RUN"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  "$PYTHON" -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())" 2>&1 | tail -1
  echo '```'
} > "$REPORT"

if [ "$DRY_RUN" != 1 ] && ! "$PYTHON" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "JAX sees no GPU: install a CUDA build (pip install 'jax[cuda12]') into $PYTHON" | tee -a "$REPORT"
  exit 1
fi

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, append its tail to the report
  local name=$1 limit=$2
  shift 2
  local log="$OUT_DIR/$name.log" start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local status="ok"
  [ "$rc" = 124 ] && status="TIMED OUT after ${limit}s"
  [ "$rc" != 0 ] && [ "$rc" != 124 ] && status="FAILED (rc $rc)"
  {
    echo
    echo "## $name: $status, $((SECONDS - start)) s"
    echo
    echo "    $*"
    echo
    echo '```'
    tail -n "${TAIL:-40}" "$log"
    echo '```'
  } >> "$REPORT"
}

step tests "${LIMITS[0]}" "$PYTHON" -m pytest -q -x -p no:cacheprovider "${TESTS[@]}"
step ncf_epoch "${LIMITS[1]}" "$PYTHON" -m benchmarks.ncf_epoch "${EPOCH_ARGS[@]}"
for dtype in float32 bfloat16; do
  step "throughput_$dtype" "${LIMITS[2]}" "$PYTHON" -m benchmarks.throughput --models=neumf \
    --dtype="$dtype" --out_dir="$OUT_DIR/throughput_$dtype" "${TP_ARGS[@]}"
done
for flagfile in ml100k_neumf ml100k_neumf_fast; do
  step "time_to_quality_$flagfile" "${LIMITS[3]}" "$PYTHON" -m benchmarks.time_to_quality \
    --flagfile_override="experiments/configs/$flagfile.flags" --workdir="$OUT_DIR/ttq_$flagfile" \
    --out="$OUT_DIR/ttq_$flagfile.md" --json_out="$OUT_DIR/ttq_$flagfile.json" "${TTQ_ARGS[@]}"
done
echo "report: $REPORT"
