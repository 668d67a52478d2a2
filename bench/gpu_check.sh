#!/usr/bin/env bash
# The GPU benchmarks as one prepared script, for one device call (600 s at most):
#   bash bench/gpu_check.sh            # figures to stdout and to $OUT/gpu_bench.log when $OUT is set
# Every benchmark picks the GPU and bf16-mixed by itself. The runs go most important first, each with
# its own time limit, and none starts after BUDGET seconds, so that the whole script fits one call
# with time left to rerun it. Targets: bench/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_bench.log"
budget="${BUDGET:-480}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$log"
python -c "import torch, lightning, transformers; print(torch.__version__, lightning.__version__, transformers.__version__)" | tee -a "$log"
quiet() { grep -vE "Warning|warn\(|it/s\]|UNEXPECTED|LOAD|^Key|^---|^Notes|^$"; }
fits() {
  if (( SECONDS + $1 > budget )); then echo "### skipped (budget): ${*:2}" | tee -a "$log"; return 1; fi
  echo "### ${*:2} (limit $1 s, at ${SECONDS} s)" | tee -a "$log"
}
run() {
  local limit=$1; shift
  fits "$limit" "$@" || return 0
  timeout "$limit" python "$@" 2>&1 | quiet | tee -a "$log"
}
# A run stopped by SLURM's warning signal after its pruning event, then started again, against the
# same run uninterrupted: the final STS of both.
resume_after_event() {
  local work common
  work=$(mktemp -d)
  common=(trainer=gpu trainer.max_steps=120 "pruning.schedule=[{step:40}]" evaluate.before=false
          "evaluate.tasks=[stsb,sickr]" save_model=false logger=csv +callbacks.fault._target_=fault_probe.SignalAt)
  export PYTHONPATH=tests
  timeout 100 python train.py "${common[@]}" "output_dir=$work/whole" 2>&1 | tail -n 2 | tee -a "$log"
  SIGNAL_AT=80:SIGUSR2 timeout 100 python train.py "${common[@]}" "output_dir=$work/stopped" 2>&1 | tail -n 1 | tee -a "$log"
  timeout 100 python train.py "${common[@]}" "output_dir=$work/stopped" 2>&1 | tail -n 2 | tee -a "$log"
  python - "$work" <<'PY' | tee -a "$log"
import json, sys
from pathlib import Path
for run in ("whole", "stopped"):
    results = json.loads((Path(sys.argv[1]) / run / "results.json").read_text())
    print(f"{run}: after {results['after']}, best step {results['best_step']}")
PY
}
run 90 bench/pruned_encode.py --shape bert-base --batch-size 512 --dtype bfloat16 --repeats 30 --rounds 1 --ffn-multiple-of 1 8 64
run 90 bench/pruned_encode.py --shape minilm --batch-size 512 --dtype bfloat16 --repeats 30 --rounds 1 --ffn-multiple-of 1 64 --compile
run 70 bench/train_throughput.py --shape minilm --steps 30 --warmup 10 --rounds 1
run 90 bench/train_throughput.py --shape minilm --steps 30 --warmup 10 --rounds 1 --compile
run 70 bench/train_throughput.py --shape bert-base --batch-size 64 --steps 20 --warmup 5 --rounds 1
fits 200 "resume after a pruning event" && resume_after_event
run 40 bench/sts_eval.py --batch-size 512
run 60 bench/sts_eval.py --batch-size 512 --compile
echo "### done at ${SECONDS} s" | tee -a "$log"
