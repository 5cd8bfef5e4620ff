#!/usr/bin/env bash
# Runs the tests that need hardware this project's CI machine lacks (AMX, AVX-512, a GPU), on a
# machine that has it, straight from a checkout (no install: the package is pure Python plus C++
# sources that accelc builds with the machine's g++). Extra arguments go to pytest.
#
#   bash tools/run_hardware_tests.sh            # every amx/avx512/gpu test
#   bash tools/run_hardware_tests.sh -k conv    # a subset
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "isa: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^(amx|avx512)' | tr '\n' ' ')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m pytest -q -rs -m "amx or avx512 or gpu" tests "$@"
