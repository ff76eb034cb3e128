#!/usr/bin/env bash
# The one prepared GPU run (docs/gpu.md): the GPU tests, then the whole GPU benchmark; everything lands under $OUT.
#
#   On the development machine, once:   make gpu-carry      (ignored folders to carry: artifacts/gpu_site, the
#                                                            Qwen vocabulary folder; artifacts/golden; the tokenizer)
#   On a fresh H200 (PyTorch CUDA + Triton, no TensorRT / onnxruntime-gpu), from the repository root:
#       OUT=/some/dir bash scripts/gpu_run.sh                 # tests + full benchmark, 0.5B geometry, ~6-8 min
#       OUT=/some/dir bash scripts/gpu_run.sh --quick         # tests + benchmark smoke sizes (~2 min)
#   On a CPU, the dry run of every part that runs without CUDA:
#       OUT=/tmp/dry bash scripts/gpu_run.sh --cpu-dry-run    # interpreter tests, tiny benchmark, CUDA rungs skipped
#
# Files under $OUT (7, two levels at most): env.txt, tests.log, bench.log, status.txt, bench/gpu.json, bench/gpu.md,
# bench/gpu_fastpath.png. Exit code: 0 when both steps passed, else the first failing step's code.
set -uo pipefail
OUT=${OUT:-artifacts/gpu_run}
PY=${PY:-python3}
MODE=${1:-full}
mkdir -p "$OUT/bench"
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The vocabulary folder (find_spec only, never imported) so synthetic checkpoints get the real tokenizer.
[ -d artifacts/gpu_site/dashscope ] && export PYTHONPATH="$PWD/artifacts/gpu_site:$PYTHONPATH"
[ -f artifacts/golden/expected.npz ] && export MVGPT_GOLDEN_DIR="$PWD/artifacts/golden"
BENCH_ARGS=(--out "$OUT/bench" --preset 0.5b --device cuda --checkpoint-dir /tmp/mvgpt_gpu_run/0.5b)
TEST_TIMEOUT=300 BENCH_TIMEOUT=480
case "$MODE" in
  full) ;;
  --quick) BENCH_ARGS+=(--quick); BENCH_TIMEOUT=300 ;;
  --cpu-dry-run)
    export TRITON_INTERPRET=1  # the Triton tests run the kernels in Triton's interpreter
    [ -x .venv/bin/python ] && PY=.venv/bin/python
    BENCH_ARGS=(--out "$OUT/bench" --preset tiny --device cpu --quick --checkpoint-dir checkpoints/tiny)
    TEST_TIMEOUT=600 BENCH_TIMEOUT=900 ;;
  *) echo "usage: OUT=DIR bash scripts/gpu_run.sh [--quick|--cpu-dry-run]" >&2; exit 2 ;;
esac
[ -f artifacts/gpu_tokenizer/tokenizer.json ] && BENCH_ARGS+=(--tokenizer-dir artifacts/gpu_tokenizer)

{
  date -u +%FT%TZ; echo "mode $MODE; $PY"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  "$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', \
torch.version.cuda, torch.cuda.is_available(), 'transformers', transformers.__version__)" 2>&1
  "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
  git log -1 --format='commit %H %s' 2>&1
} > "$OUT/env.txt"
cat "$OUT/env.txt"

# 1. The GPU tests: compiled Triton kernels against the reference (and the golden tokens), CUDA graphs against eager,
#    the whole fast path against the reference. -rs prints every skip's reason.
timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_triton_scan.py \
  tests/runtime/test_torch_fastpath.py 2>&1 | tee "$OUT/tests.log"
tests_rc=${PIPESTATUS[0]}

# 2. The whole GPU benchmark (stage table, curves, decode, sessions, fast-path ladder, scan, numerics, goals).
timeout "$BENCH_TIMEOUT" "$PY" -m benchmarks.gpu "${BENCH_ARGS[@]}" 2>&1 | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

echo "tests rc=$tests_rc bench rc=$bench_rc ($(date -u +%FT%TZ))" | tee "$OUT/status.txt"
[ "$tests_rc" -ne 0 ] && exit "$tests_rc"
exit "$bench_rc"
