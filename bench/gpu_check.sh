#!/usr/bin/env bash
# The GPU part of issue 6 as one prepared script, for a session lent a GPU (the `device` tool's `run`):
#   bash bench/gpu_check.sh            # figures to stdout and to $OUT/gpu_bench.log when $OUT is set
# Every benchmark picks the GPU and bf16-mixed by itself; each gets a time limit so one hang cannot
# eat the device budget.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_bench.log"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$log"
python -c "import torch, lightning, transformers; print(torch.__version__, lightning.__version__, transformers.__version__)" | tee -a "$log"
run() { echo "### $*" | tee -a "$log"; timeout 240 python "$@" 2>&1 | grep -vE "Warning|warn\(|it/s\]" | tee -a "$log"; }
run bench/train_throughput.py --shape minilm --steps 50 --warmup 10 --rounds 2
run bench/train_throughput.py --shape bert-base --steps 30 --warmup 10 --rounds 2
run bench/train_throughput.py --shape minilm --steps 50 --warmup 10 --rounds 1 --compile
run bench/train_throughput.py --shape minilm --steps 50 --warmup 10 --rounds 1 --corpus snli --bucket-batches 50
run bench/pruned_encode.py --shape bert-base --batch-size 512 --dtype bfloat16 --repeats 50 --compile
run bench/pruned_encode.py --shape minilm --batch-size 512 --dtype bfloat16 --repeats 50 --compile
run bench/scoring_cost.py --shape bert-base --steps 16
run bench/sts_eval.py --batch-size 512
run bench/sts_eval.py --batch-size 512 --compile
