#!/usr/bin/env bash
# One device call: data generation speed, the efficiency benchmark, training throughput, and (time permitting)
# LRA-lite training runs. Used through the workplace's device tool; outputs go to $OUT (results/ once copied back).
#   STAGES="gen bench throughput" RUNS="listops:softmax:0 listops:nalaformer:0" bash scripts/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG="$OUT/session.log"
exec > >(tee -a "$LOG") 2>&1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
DATA=/tmp/lra_data
STAGES=${STAGES:-"gen bench throughput runs"}
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
echo "== $(date -Is) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
python3 -c "import torch, lightning, hydra, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__, 'cuda', torch.version.cuda)"

for stage in $STAGES; do
  case $stage in
  gen)
    echo "== [$(elapsed)s] ListOps 96K/2K/2K (official settings)"
    /usr/bin/time -f "listops wall %e s, cpu %U s" python3 -m lra.data listops --out $DATA --workers "$(nproc)"
    echo "== [$(elapsed)s] Pathfinder-32 hard ${PF_IMAGES:-200000} images"
    /usr/bin/time -f "pathfinder wall %e s, cpu %U s" python3 -m lra.data pathfinder --out $DATA \
      --num-images "${PF_IMAGES:-200000}" --workers "$(nproc)" | tail -3
    ;;
  bench)
    echo "== [$(elapsed)s] bench"
    timeout "${BENCH_TIMEOUT:-260}" python3 -m lra.bench --budget-seconds "${BENCH_BUDGET:-220}" --out "$OUT/bench.csv"
    ;;
  throughput)
    echo "== [$(elapsed)s] throughput"
    for att in ${TP_ATTENTIONS:-nalaformer softmax}; do
      timeout "${TP_TIMEOUT:-200}" python3 -m lra.throughput task=listops experiment=lra_lite attention=$att \
        data_dir=$DATA --steps "${TP_STEPS:-300}" --settings "${TP_SETTINGS:-baseline,bf16,bf16+fused_adamw+workers,bf16+fused_adamw+workers+compile}" \
        --out "$OUT/throughput.csv" 2>&1 | grep -vE "Warning|warn" | tail -8
    done
    ;;
  runs)
    for spec in ${RUNS:-}; do
      IFS=: read -r task att seed <<<"$spec"
      echo "== [$(elapsed)s] run $task $att seed $seed"
      timeout "${RUN_TIMEOUT:-300}" python3 run.py task=$task attention=$att seed=$seed experiment=lra_lite \
        data_dir=$DATA results_dir="$OUT" checkpoint_dir=/tmp/ckpt num_workers=4 trainer.enable_progress_bar=false \
        ${RUN_EXTRA:-} 2>&1 | grep -E "test_acc=|Error|error|resum" | tail -3
    done
    ;;
  esac
done
echo "== done in $(elapsed)s"
