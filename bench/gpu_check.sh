#!/usr/bin/env bash
# The GPU part of issue 6 as one prepared script, for a session lent a GPU (the `device` tool's `run`):
#   bash bench/gpu_check.sh            # figures to stdout and to $OUT/gpu_bench.log when $OUT is set
# Every benchmark picks the GPU and bf16-mixed by itself. The runs go most important first, each with
# its own time limit, and none starts after BUDGET seconds, so that the whole script fits one device
# call (600 s at most) with time left to rerun it.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_bench.log"
budget="${BUDGET:-480}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$log"
python -c "import torch, lightning, transformers; print(torch.__version__, lightning.__version__, transformers.__version__)" | tee -a "$log"
run() {
  local limit=$1; shift
  if (( SECONDS + limit > budget )); then echo "### skipped (budget): $*" | tee -a "$log"; return; fi
  echo "### $* (limit ${limit} s, at ${SECONDS} s)" | tee -a "$log"
  timeout "$limit" python "$@" 2>&1 | grep -vE "Warning|warn\(|it/s\]|UNEXPECTED|LOAD|^Key|^---|^Notes|^$" | tee -a "$log"
}
run 70 bench/train_throughput.py --shape minilm --steps 30 --warmup 10 --rounds 1
run 70 bench/train_throughput.py --shape bert-base --steps 20 --warmup 5 --rounds 1
run 70 bench/train_throughput.py --shape minilm --steps 30 --warmup 10 --rounds 1 --corpus snli --bucket-batches 50
run 90 bench/pruned_encode.py --shape minilm --batch-size 512 --dtype bfloat16 --repeats 30 --rounds 1 --compile
run 90 bench/pruned_encode.py --shape bert-base --batch-size 512 --dtype bfloat16 --repeats 30 --rounds 1 --compile
run 40 bench/sts_eval.py --batch-size 512
run 40 bench/scoring_cost.py --shape bert-base --steps 16
run 60 bench/train_throughput.py --shape minilm --steps 30 --warmup 10 --rounds 1 --compile
run 60 bench/sts_eval.py --batch-size 512 --compile
echo "### done at ${SECONDS} s" | tee -a "$log"
