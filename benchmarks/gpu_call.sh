#!/usr/bin/env bash
# Part III at the papers' sizes plus unetr-bench, in ONE call of at most 9 minutes on one H100/H200.
#
#   OUT=/some/folder bash benchmarks/gpu_call.sh              # on the GPU machine (SCALE=gpu)
#   SCALE=smoke OUT=/tmp/rehearsal bash benchmarks/gpu_call.sh  # the rehearsal on a CPU
#
# 1. wheels of what the machine lacks (benchmarks/gpu-wheels.txt), from .whl/ when it is there;
# 2. chapters 8, 9, 10 executed at $SCALE by the book's runner: executed notebooks and
#    results/<chapter>.json under $OUT (data and runs under runs/, data/ of this checkout);
# 3. unetr-bench (ours against MONAI, forward + backward on CUDA) into $OUT/bench.json.
# At most 8 files come back from a call: 3 notebooks, 3 results files, bench.json and the log.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${SCALE:-gpu}"
OUT="${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_call.log") 2>&1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -m ipykernel install --user --name python3 > /dev/null 2>&1 || true
started=$(date +%s)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU (rehearsal)"
python3 -m unetr_lib.book run --scale "$SCALE" --out "$OUT" --chapters 08_training 09_evaluation 10_ablations
echo "chapters 8-10: $(( $(date +%s) - started )) s"
if [ "$SCALE" = smoke ]; then
    python3 -m unetr_lib.bench --device cpu --small --repeats 2 --json "$OUT/bench.json" --overwrite
else
    python3 -m unetr_lib.bench --device cuda --repeats 5 --json "$OUT/bench.json" --overwrite
fi
echo "all: $(( $(date +%s) - started )) s"
rm -rf "$OUT/work"  # the smoke run's data and runs stay behind; only the 8 result files travel
