#!/usr/bin/env bash
# GPU checks of the CUDA backend: the gpu-marked tests, then bench/bench_cuda.py. Run from the repo root
# on a machine with an NVIDIA GPU:   bash tools/run_gpu_checks.sh
# The product-path benchmark (ONNX BERT-base b1/b32 and ResNet-50 b1/b64 through accelc.compile and the
# DLPack runtime, vs eager and torch.compile) is a second command of its own (< 10 minutes):
#                                    bash tools/run_gpu_checks.sh onnx [bf16|fp16]
# (the compute dtype of accelc and of the torch peers; bf16 by default)
# Baselines, accelc alone: BERT b1/b32 with every GEMM on CUTLASS 2.x (ACCELC_CUDA_GEMM=sm80, the baseline
# of the sm_90a GEMMs) and ResNet-50 b64 with NCHW convolutions (ACCELC_CUDA_LAYOUT=nchw):
#                                    bash tools/run_gpu_checks.sh sm80
# Everything a session with 15 device-minutes needs, in one call of at most ~12.5 minutes (each part has
# its own time limit and reports what it finished): the GPU tests (numerics), then the goal table with
# BERT-base b1/b32 in bf16 and ResNet-50 b1/b64 in fp16 (the dtype that meets its cosine goal):
#                                    bash tools/run_gpu_checks.sh goals
# Carried wheels (e.g. nvidia-cutlass for the headers) in .whl/ are installed into /tmp/site first.
# Results go to $OUT (if set) as pytest.txt and bench.json / bench.txt. Whole run: < 9 minutes.
set -uo pipefail
export PYTHONPATH="${PWD}${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="${PYTHONPATH}:/tmp/site"
fi
OUT_DIR="${OUT:-/tmp/accelc_gpu_checks}"
mkdir -p "$OUT_DIR"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/accelc_cache}"
nvidia-smi -L | tee "$OUT_DIR/gpu.txt"
if [ "${1:-}" = "onnx" ]; then
  dtype="${2:-bf16}"
  timeout 580 python3 bench/bench_cuda.py --cases onnx_bert_b1,onnx_bert_b32,resnet50_b1,resnet50_b64 \
    --dtype "$dtype" --budget-s 560 --out "$OUT_DIR/bench_onnx_$dtype.json" 2>&1 | tee "$OUT_DIR/bench_onnx_$dtype.txt"
  exit "${PIPESTATUS[0]}"
fi
if [ "${1:-}" = "goals" ]; then
  echo "== gpu tests"
  timeout 240 python3 -X faulthandler -m pytest -q -rs -m gpu tests/test_backend_cuda.py 2>&1 | tee "$OUT_DIR/pytest.txt"
  rc=${PIPESTATUS[0]}
  echo "== BERT-base, bf16"
  timeout 250 python3 bench/bench_cuda.py --cases onnx_bert_b1,onnx_bert_b32 --dtype bf16 --budget-s 235 \
    --out "$OUT_DIR/bench_bert_bf16.json" 2>&1 | tee "$OUT_DIR/bench_bert_bf16.txt"
  b1=${PIPESTATUS[0]}
  echo "== ResNet-50, fp16"
  timeout 250 python3 bench/bench_cuda.py --cases resnet50_b1,resnet50_b64 --dtype fp16 --budget-s 235 \
    --out "$OUT_DIR/bench_resnet_fp16.json" 2>&1 | tee "$OUT_DIR/bench_resnet_fp16.txt"
  b2=${PIPESTATUS[0]}
  echo "tests rc=$rc bench rc=$b1/$b2; results in $OUT_DIR"
  exit $(( rc != 0 ? rc : (b1 != 0 ? b1 : b2) ))
fi
if [ "${1:-}" = "sm80" ]; then
  timeout 500 python3 bench/bench_cuda.py --cases bert_b1_sm80,bert_b32_sm80,resnet50_b64_nchw --budget-s 480 \
    --out "$OUT_DIR/bench_sm80.json" 2>&1 | tee "$OUT_DIR/bench_sm80.txt"
  exit "${PIPESTATUS[0]}"
fi
echo "== gpu tests"
timeout 300 python3 -X faulthandler -m pytest -q -rs -m "gpu or not gpu" tests/test_backend_cuda.py -k "not compile_for_every_arch" \
  2>&1 | tee "$OUT_DIR/pytest.txt"
rc=${PIPESTATUS[0]}
echo "== benchmarks"
# each bench case runs in its own process (a crash is reported, the next case still runs); the script keeps
# itself inside --budget-s (215 s), the timeout is only a backstop
timeout 240 python3 bench/bench_cuda.py --budget-s 215 --out "$OUT_DIR/bench.json" 2>&1 | tee "$OUT_DIR/bench.txt"
brc=${PIPESTATUS[0]}
echo "tests rc=$rc bench rc=$brc; results in $OUT_DIR"
exit $(( rc != 0 ? rc : brc ))
