#!/usr/bin/env bash
# One device call: data generation speed, the efficiency benchmark, training throughput, and (time permitting)
# LRA-lite training runs. Used through the workplace's device tool; outputs go to $OUT (results/ once copied back).
#   STAGES="gen bench throughput" RUNS="listops:softmax:0 listops:nalaformer:0" bash scripts/gpu_session.sh
# pruns: RUNS in parallel (PER_GPU per GPU), each cut at DEADLINE seconds into the call; a run cut short resumes
# from its last checkpoint when a later call starts it again (see CKPT below).
# WORKERS: loader processes per run (default 0: lite batches are small and read in place in ~0.2 ms; on the H200
# bf16 ran 62.9 steps/s in-process vs 53.1 with 4 workers and fused AdamW together, not yet separated).
# A second instance beside this one (a probe on one GPU, OUT=$OUT/probe) sets SEND_CACHE=0: one copy of the compile
# cache comes back, from the main instance.
set -uo pipefail
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG="$OUT/session.log"
exec > >(tee -a "$LOG") 2>&1
# The GPU image lacks hydra (and, since session 20, fla): carry their wheels in .whl (git-ignored), made here with
#   pip download --no-deps --only-binary=:all: -d .whl hydra-core==1.3.8 omegaconf==2.3.1 fla-core==0.6.0
#   pip wheel --no-deps antlr4-python3-runtime==4.9.3 -w .whl
# (fla-core: flash-linear-attention's ops alone, for the benchmark's fla_chunk_linear reference; needs einops, triton.)
if ! python3 -c "import hydra" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  # Instances started together (a probe beside the runs) install once, under a lock, not over each other's files.
  lock=(); command -v flock >/dev/null && lock=(flock -w 300 /tmp/site.lock)
  "${lock[@]}" bash -c 'PYTHONPATH=/tmp/site python3 -c "import hydra" 2>/dev/null || python3 -m pip install -q --no-index \
    --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl' \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
DATA=${DATA:-/tmp/lra_data}
EXPERIMENT=${EXPERIMENT:-lra_lite}  # tests/test_gpu_session.py runs the stages on CPU with experiment=smoke
# Checkpoints live inside the repo copy (same absolute path on every machine), so a run longer than one call or one
# session continues on a fresh machine: the end of this script copies unfinished runs' checkpoints to $OUT/ckpt;
# put them back under checkpoints/device/ here (scripts/unpack_device.sh) and commit them: checkpoints/device/ckpt/ is
# tracked (.gitignore), so the next call and the next session's fresh checkout have them. Name checkpoints/device
# in the next call's carry only for its ignored compile cache.
CKPT=${CKPT:-$PWD/checkpoints/device}
STAGES=${STAGES:-"gen bench throughput runs"}
# Compiled kernels persist across calls: Inductor's and Triton's on-disk caches live under $CKPT and go back with the
# checkpoints (below; scripts/unpack_device.sh puts them where the next call carries them). Each run's start under
# trainer.compile left its GPU idle for 50-80 s (session 15's dmon), ~25 s of it a cold compile of what an earlier
# call had compiled already (~7 s warm); on the CPU a warm cache took a smoke run's compile from ~40 s to ~5 s.
# On the GPU it outgrows the carry: 189 MB after one call of two attentions (session 16), 280 MB after three, so it
# comes back only when small (CACHE_MAX_MB); calls made back to back on a warm machine reuse it in place (~34 s less
# per ListOps run start, session 16).
CACHE=${COMPILE_CACHE:-$CKPT/compile_cache}
export TORCHINDUCTOR_CACHE_DIR=$CACHE/inductor TRITON_CACHE_DIR=$CACHE/triton
# Generator processes: every core the script may use. Not `nproc`, which answers OMP_NUM_THREADS when that is set:
# a call that set it for its training runs generated its data on 3 of 16 cores (session 13: 154 s instead of ~40).
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")
start=$(date +%s)
stamp=$(mktemp /tmp/gpu_session_start.XXXXXX)  # runs that finish after this send their best checkpoint back
trained_all=0  # the runs and scaling stages: every run folder under $CKPT is this instance's (see own_runs below)
elapsed() { echo $(( $(date +%s) - start )); }
# Seconds a run started now may take: up to DEADLINE seconds into the call (default 550: a run killed then may take
# 15 s more to die, and packing needs some, inside the tool's 600 s limit), and at most RUN_TIMEOUT if set. (A fixed
# 300 s default once cut four runs that needed 330.)
time_left() {
  local left=$(( ${DEADLINE:-550} - $(elapsed) ))
  [ -n "${RUN_TIMEOUT:-}" ] && [ "$left" -gt "$RUN_TIMEOUT" ] && left=$RUN_TIMEOUT
  echo "$left"
}
echo "== $(date -Is) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
# MPS=1: CUDA's Multi-Process Service, so that runs sharing a GPU run their kernels side by side rather than taking
# turns (time-slicing: five graph-replaying runs on one H200 did 22% less work together than one alone, session 13,
# though each run's kernels fill a small part of the 132 SMs). A machine without it goes on time-sliced.
# Session 14: five runs on an H200 did ~37% more work per second under MPS than time-sliced, but two runs stopped
# making progress after another run ended (cause not established): opt-in until that is understood.
if [ "${MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then
    echo "== MPS on"; trap 'echo quit | nvidia-cuda-mps-control' EXIT
  else
    echo "== MPS not available here: runs that share a GPU take turns on it"; unset CUDA_MPS_PIPE_DIRECTORY
  fi
fi
python3 -c "import torch, lightning, hydra, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, 'hydra', hydra.__version__, 'cuda', torch.version.cuda)"

for stage in $STAGES; do
  case $stage in
  gen)
    echo "== [$(elapsed)s] ListOps 96K/2K/2K (official settings), data generated on $CORES cores"
    if [ "${LISTOPS:-1}" = 0 ]; then echo "skipped (LISTOPS=0)"; elif [ -e $DATA/listops-1000/basic_test.tsv ]; then
      echo "already here (warm machine)"; else
      /usr/bin/time -f "listops wall %e s, cpu %U s" python3 -m lra.data listops --out $DATA --workers "$CORES"
    fi
    # Pathfinder-32 (PF_IMAGES, default 200,000; 0 = none) and Path-X, 128x128 (PX_IMAGES, default 0), both hard
    # unless PF_DIFFICULTY names others ("hard easy": also curv_baseline, for a diagnostic run).
    # A partly written set is completed, not redone (the generator skips finished batches).
    for spec in "32:${PF_IMAGES:-200000}" "128:${PX_IMAGES:-0}"; do
      IFS=: read -r res num <<<"$spec"
      [ "$num" = 0 ] && continue
      echo "== [$(elapsed)s] Pathfinder ${res}x$res ${PF_DIFFICULTY:-hard}, $num images"
      /usr/bin/time -f "pathfinder$res wall %e s, cpu %U s" python3 -m lra.data pathfinder --out $DATA \
        --resolution "$res" --num-images "$num" --workers "$CORES" --difficulty ${PF_DIFFICULTY:-hard} | tail -2
    done
    # Generator variants at 32x32 for diagnostics, PF_VARIANTS="DIFFICULTY:NAME:FIELD=V;FIELD=V ..." (written to
    # pathfinder32/NAME, run with task.path=pathfinder32/NAME), e.g. "easy:easy-nodistract:num_distractor_snakes=0".
    for spec in ${PF_VARIANTS:-}; do
      IFS=: read -r diff name sets <<<"$spec"
      echo "== [$(elapsed)s] Pathfinder 32x32 variant $name ($diff, $sets), ${PF_IMAGES:-200000} images"
      # shellcheck disable=SC2046
      python3 -m lra.data pathfinder --out $DATA --resolution 32 --num-images "${PF_IMAGES:-200000}" \
        --workers "$CORES" --difficulty "$diff" --name "$name" $(for s in ${sets//;/ }; do echo "--set $s"; done) | tail -2
    done
    ;;
  probe)
    echo "== [$(elapsed)s] NaLa kernel probe (correctness on the GPU, then speed)"
    timeout "${PROBE_TIMEOUT:-240}" python3 scripts/nala_kernel_probe.py ${PROBE_ARGS:-} 2>&1 | tee "$OUT/probe.txt"
    ;;
  bench)
    # Rows merge into a copy of the committed results/bench/<device>.csv (same key replaced, others kept).
    echo "== [$(elapsed)s] bench ${BENCH_ARGS:-}"
    mkdir -p "$OUT/bench"; cp -n results/bench/*.csv "$OUT/bench/" 2>/dev/null
    timeout "${BENCH_TIMEOUT:-260}" python3 -m lra.bench --budget-seconds "${BENCH_BUDGET:-220}" --out "$OUT/bench" \
      ${BENCH_ARGS:-}
    ;;
  bench2)
    echo "== [$(elapsed)s] bench ${BENCH2_ARGS:-}"
    timeout "${BENCH2_TIMEOUT:-200}" python3 -m lra.bench --budget-seconds "${BENCH2_BUDGET:-160}" --out "$OUT/bench" \
      ${BENCH2_ARGS:-}
    ;;
  throughput)
    echo "== [$(elapsed)s] throughput"
    # An entry may carry overrides after commas (an A/B of one attention): nystromformer,attention.conv_impl=triton
    for spec in ${TP_ATTENTIONS:-nalaformer softmax}; do
      att=${spec%%,*}; own=; [[ "$spec" == *,* ]] && own=${spec#*,}
      # shellcheck disable=SC2086
      timeout "${TP_TIMEOUT:-200}" python3 -m lra.throughput task=${TP_TASK:-listops} experiment=lra_lite attention=$att ${own//,/ } \
        data_dir=$DATA --steps "${TP_STEPS:-300}" --settings "${TP_SETTINGS:-baseline,bf16,bf16+fused_adamw+workers,bf16+fused_adamw+workers+compile}" \
        --out "$OUT/throughput.csv" ${TP_ARGS:-} 2>&1 | grep -vE "Warning|warn" | tail -${TP_TAIL:-8}
    done
    ;;
  graphs)
    # Which attentions train under CUDA graphs. Session 11: linear and performer segfaulted in an inductor CPU kernel
    # (one shared cached kernel) handed a GPU pointer; session 10: nalaformer failed with tensors in the graph pool
    # not tracked as outputs. Each attention x variant is a short run of its own (a crash ends only it), with
    # inductor's output code in its log: a CPU kernel (cpp_fused_*) in a GPU model names the op that crashed.
    # GRAPH_VARIANTS: NAME:OVERRIDE,OVERRIDE ... (default: dynamic shapes as run.py compiles, then static).
    mkdir -p "$OUT/graphs"
    for att in ${GRAPH_ATTENTIONS:-linear performer nalaformer softmax}; do
      for variant in ${GRAPH_VARIANTS:-dynamic:trainer.compile_dynamic=true static:trainer.compile_dynamic=false}; do
        vname=${variant%%:*}; over=${variant#*:}; log="$OUT/graphs/$att-$vname.log"
        left=$(time_left); [ "$left" -gt "${GRAPH_TIMEOUT:-150}" ] && left=${GRAPH_TIMEOUT:-150}
        [ "$left" -lt 30 ] && echo "== no time left for graphs $att $vname" && continue
        # shellcheck disable=SC2086
        TORCH_LOGS=output_code timeout -k 15 "$left" python3 run.py task=${GRAPH_TASK:-pathfinder} attention=$att seed=0 \
          experiment=$EXPERIMENT data_dir=$DATA results_dir="$OUT/graphs" checkpoint_dir="$OUT/graphs/ckpt" \
          num_workers=0 trainer.enable_progress_bar=false trainer.max_steps=${GRAPH_STEPS:-200} \
          trainer.val_check_interval=${GRAPH_STEPS:-200} trainer.limit_val_batches=4 trainer.limit_test_batches=4 \
          trainer.compile=true trainer.compile_mode=reduce-overhead ${over//,/ } >"$log" 2>&1
        rc=$?
        kernels=$(grep -oE "cpp_fused_[A-Za-z0-9_]+" "$log" | sort -u | tr '\n' ' ')
        echo "== [$(elapsed)s] graphs $att $vname rc=$rc $(grep -oE "test_acc=[0-9.]+" "$log" | tail -1) cpu kernels: ${kernels:-none}"
        grep -m3 -E "Segmentation|Error|Detected" "$log"
      done
    done
    rm -rf "$OUT/graphs/ckpt"
    ;;
  pruns)
    # Many small runs at once: run eagerly, a 2-layer LRA-lite model leaves the GPU idle most of each step
    # (launch-bound), so PER_GPU runs share each GPU. Under CUDA graphs one run keeps the GPU busy (session 13: five
    # at once did 22% less work per second than one alone), so use PER_GPU=1 there. Each run logs to $OUT/logs/; rows go to $OUT/runs.jsonl (appends are locked).
    # GPUS (e.g. "1") keeps them on some GPUs, so that another script instance can time kernels on the others.
    read -ra gpus <<<"$(echo "${GPUS:-$(seq -s ' ' 0 $(($(nvidia-smi -L | wc -l) - 1)))}" | tr ',' ' ')"
    ngpu=${#gpus[@]}; per=${PER_GPU:-4}; pids=(); slot_pid=(); mkdir -p "$OUT/logs"
    echo "== [$(elapsed)s] parallel runs: GPUs ${gpus[*]} x $per"
    # A spec may carry overrides of its own after a fourth colon, comma-separated (a diagnostic variant):
    #   pathfinder:softmax:0:task.path=pathfinder32/curv_baseline,model.optim.lr=1e-3
    # and may end in @N to run on GPU N only (one of GPUS): e.g. one attention's five tasks on GPU 0, others on 1.
    for spec in ${RUNS:-}; do
      pin=; [[ "$spec" == *@* ]] && { pin=${spec##*@}; spec=${spec%@*}; }
      if [ -n "$pin" ] && [[ " ${gpus[*]} " != *" $pin "* ]]; then
        echo "== $spec@$pin: GPU $pin is not among GPUS (${gpus[*]}); name one of those after @"; continue
      fi
      IFS=: read -r task att seed own <<<"$spec"
      # The next run takes the first free slot (slot s runs on GPU s mod ngpu), so a GPU whose run ended early gets
      # the next one, not the GPU next in turn (round robin once put two runs on one GPU and left the other idle).
      slot=
      while [ -z "$slot" ]; do
        for ((s = 0; s < ngpu * per; s++)); do
          [ -n "$pin" ] && [ "${gpus[$((s % ngpu))]}" != "$pin" ] && continue
          if [ -z "${slot_pid[$s]:-}" ] || ! kill -0 "${slot_pid[$s]}" 2>/dev/null; then slot=$s; break; fi
        done
        [ -z "$slot" ] && sleep 2
      done
      # MIN_LEFT: start no run with fewer seconds left than this. A run cut at the end of a session's last call
      # resumes only if its git-ignored checkpoint survives into the next session's checkout, which it may not
      # (session 16's checkout had lost session 15's): set it to a run's length in that call.
      left=$(time_left); [ "$left" -lt "${MIN_LEFT:-30}" ] && echo "== no time left for $spec" && continue
      name=$task-$att-$seed; [ -n "$own" ] && name=$name-$(echo "$own" | md5sum | cut -c1-6)
      gpu=${gpus[$((slot % ngpu))]}; echo "CUDA_VISIBLE_DEVICES=$gpu $spec" >"$OUT/logs/$name.log"
      echo "== [$(elapsed)s] start $spec on GPU $gpu"
      # A spec may name its own protocol (pathfinder:polaformer:0:experiment=lra_sky); Hydra takes one value per group.
      exp=$EXPERIMENT; [[ ",$own," =~ ,experiment=([^,]*), ]] && { exp=${BASH_REMATCH[1]}; own=$(echo ",$own," | sed -E 's/,experiment=[^,]*,/,/; s/^,//; s/,$//'); }
      # skip_finished: a spec that finished in an earlier call on this warm machine is not trained again (session 18
      # trained one twice, 415 s of GPU); SKIP_FINISHED=false trains it afresh.
      # timeout -k 15: a run sent SIGTERM while it compiled outlived the deadline, and the call's 600 s (session 19).
      ( prun() { CUDA_VISIBLE_DEVICES=$gpu timeout -k 15 "$1" python3 run.py task=$task attention=$att seed=$seed \
          experiment=$exp data_dir=$DATA results_dir="$OUT" checkpoint_dir=$CKPT/ckpt num_workers=${WORKERS:-0} \
          trainer.enable_progress_bar=false skip_finished=${SKIP_FINISHED:-true} "${@:2}" >>"$OUT/logs/$name.log" 2>&1; }
        args=" ${RUN_EXTRA:-} ${own//,/ } "  # the spec's own overrides last: they win
        # Evaluation batches default to large ones here (the protocol's batch is the training one; the result is the
        # same, tested): session 15's ListOps runs, left at 32, spent 36 of 99 s validating. These sizes ran on the
        # H200 for every attention (sessions 12-14); EVAL_BATCH=N (all runs), =train (the training batch), RUN_EXTRA or
        # the spec choose otherwise.
        if [[ "$args" != *" task.eval_batch_size="* ]]; then
          case ${EVAL_BATCH:-$task} in
            listops | text) args+="task.eval_batch_size=256 " ;;
            retrieval) args+="task.eval_batch_size=128 " ;;
            pathfinder | image) args+="task.eval_batch_size=1024 " ;;
            [0-9]*) args+="task.eval_batch_size=$EVAL_BATCH " ;;
          esac
        fi
        # A compiled run validates through a compile of its own (trainer.compile_eval): Pathfinder cosformer spent
        # 0.19 s per validation with it against 0.32-0.36 s eager (session 19; validation was 18-25% of a Pathfinder
        # run); COMPILE_EVAL=0, RUN_EXTRA or the spec choose otherwise.
        if [[ "$args" == *" trainer.compile=true "* && "$args" != *" trainer.compile_eval="* ]] && [ "${COMPILE_EVAL:-1}" = 1 ]; then
          args+="trainer.compile_eval=true "
        fi
        # shellcheck disable=SC2086
        prun "$left" $args; rc=$?  # before any $(...) below, which would reset it
        # A run that fails under trainer.compile (a CUDA-graph error ended one in session 9; linear and performer
        # segfaulted in an inductor kernel under CUDA graphs in session 11) goes on eager from its last
        # checkpoint, rather than leaving the GPU idle for the rest of the call; compile in RUN_EXTRA or in the spec.
        # (124: cut at the deadline; 137: killed 15 s after that, timeout -k)
        if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -ne 137 ] && [[ "$args" == *" trainer.compile=true "* ]] \
          && [ "${RETRY_EAGER:-1}" = 1 ]; then
          left=$(time_left); echo "== [$(elapsed)s] $spec rc=$rc under compile: again eager" | tee -a "$OUT/logs/$name.log"
          # shellcheck disable=SC2086
          [ "$left" -ge 30 ] && { prun "$left" $(echo "$args" | sed -E 's/ trainer\.compile(_mode|_eval)?=[^ ]*//g'); rc=$?; }
        fi
        echo "== [$(elapsed)s] $spec rc=$rc $(grep -oE "test_acc=[0-9.]+" "$OUT/logs/$name.log" | tail -1)" ) &
      pids+=($!); slot_pid[$slot]=$!
      # STAGGER: seconds between starts. Runs started together load data and compile at once on the same cores:
      # nine took 175 s before the first GPU work (session 14), one alone 25-55 s.
      [ "${STAGGER:-0}" -gt 0 ] && sleep "$STAGGER"
    done
    # Never a bare `wait` (nor one with an empty list): it would also wait for the log's `tee`, forever.
    [ ${#pids[@]} -gt 0 ] && wait "${pids[@]}"
    ;;
  scaling)
    trained_all=1
    # Issue 9: the same ListOps lra_lite run on 1 GPU and on 2 GPUs with DDP at the same global batch (32 = 2 x 16),
    # one after the other so neither shares the machine. Rows go to $OUT/scaling/runs.jsonl. Their checkpoints
    # ($CKPT/ckpt_scaling) are not among those git tracks (.gitignore): a scaling run is minutes, and one cut at a
    # session's end starts again in the next.
    for spec in ${SCALING:-1:32 2:16}; do
      IFS=: read -r ndev batch <<<"$spec"
      echo "== [$(elapsed)s] scaling: $ndev GPU(s), batch $batch per GPU"
      extra="trainer.devices=$ndev"; [ "$ndev" -gt 1 ] && extra="trainer=ddp trainer.devices=$ndev"
      left=$(time_left); [ "$left" -lt 30 ] && echo "== no time left for scaling $spec" && continue
      /usr/bin/time -f "wall %e s" timeout -k 15 "$left" python3 run.py task=listops \
        attention=${SCALING_ATTENTION:-softmax} seed=0 experiment=$EXPERIMENT task.batch_size=$batch $extra \
        data_dir=$DATA results_dir="$OUT/scaling" checkpoint_dir=$CKPT/ckpt_scaling num_workers=${WORKERS:-0} \
        trainer.enable_progress_bar=false ${RUN_EXTRA:-} 2>&1 | grep -E "test_acc=|Error|error|wall " | tail -4
    done
    ;;
  runs)
    trained_all=1
    for spec in ${RUNS:-}; do
      IFS=: read -r task att seed <<<"$spec"
      echo "== [$(elapsed)s] run $task $att seed $seed"
      left=$(time_left); [ "$left" -lt "${MIN_LEFT:-30}" ] && echo "== no time left for $spec" && continue
      timeout -k 15 "$left" python3 run.py task=$task attention=$att seed=$seed experiment=$EXPERIMENT \
        data_dir=$DATA results_dir="$OUT" checkpoint_dir=$CKPT/ckpt num_workers=${WORKERS:-0} \
        trainer.enable_progress_bar=false ${RUN_EXTRA:-} 2>&1 | grep -E "test_acc=|Error|error|resum" | tail -3
    done
    ;;
  esac
done
# The run folders this instance's own runs wrote (each run logs "checkpoints in DIR"): only these travel back, not
# those of another instance sharing $CKPT, which may be mid-write (session 19: a data-only instance beside the
# training one sent back copies that came back stale). The runs and scaling stages keep no logs: every folder.
own_runs() {
  if [ "$trained_all" = 1 ]; then
    for d in "$CKPT"/*/*/; do [ -d "$d" ] && echo "${d%/}"; done
  else
    grep -hoE "checkpoints in [^)]+" "$OUT"/logs/*.log 2>/dev/null | sed 's/^checkpoints in //' | sort -u
  fi
}
# Unfinished runs (a finished run deletes its last.ckpt) travel back, best.ckpt with them (the final test uses it),
# and their learning curve so far. So do the best checkpoints of runs that finished in this call (~2 MB each at lite
# size, up to BEST_MAX_MB in all; BEST_BACK=0 leaves them here), so that `python -m lra.ablate` can read what a
# finished run learned (session 19 could read only a cut run's); scripts/unpack_device.sh puts those in
# checkpoints/best/, outside what calls carry.
sent_kb=0
while read -r run_dir; do
  rel=${run_dir#"$CKPT"/}
  if [ -e "$run_dir/last.ckpt" ]; then
    mkdir -p "$OUT/ckpt/$rel" && cp "$run_dir"/*.ckpt "$OUT/ckpt/$rel/" && echo "== unfinished, checkpoint kept: $rel"
    cp "$run_dir"/curve.csv "$OUT/ckpt/$rel/" 2>/dev/null  # the learning curve so far travels with it
    continue
  fi
  [ "$run_dir/finished.json" -nt "$stamp" ] || continue
  # Every run that finished in this call says so (a few bytes), best checkpoint or not: unpacking then drops its
  # folder from the resume checkpoints that git tracks.
  mkdir -p "$OUT/finished/$rel" && cp "$run_dir/finished.json" "$OUT/finished/$rel/"
  [ "${BEST_BACK:-1}" = 1 ] && [ -e "$run_dir/best.ckpt" ] || continue
  kb=$(du -k "$run_dir/best.ckpt" | cut -f1)
  if [ $((sent_kb + kb)) -gt $((${BEST_MAX_MB:-24} * 1024)) ]; then
    echo "== finished, best checkpoint left here: $rel (over BEST_MAX_MB=${BEST_MAX_MB:-24})"; continue
  fi
  sent_kb=$((sent_kb + kb))
  mkdir -p "$OUT/best/$rel" && cp "$run_dir/best.ckpt" "$run_dir/finished.json" "$OUT/best/$rel/" \
    && echo "== finished, best checkpoint sent back: $rel"
done < <(own_runs)
rm -f "$stamp"
# The compile cache goes back whole (it began as the carried one), unless it outgrew what a call may carry.
if [ -d "$CACHE" ] && [ "${SEND_CACHE:-1}" = 1 ]; then
  mb=$(du -sm "$CACHE" | cut -f1)
  if [ "$mb" -le "${CACHE_MAX_MB:-24}" ]; then
    cp -r "$CACHE" "$OUT/compile_cache" && echo "== compile cache sent back ($mb MB)"
  else
    echo "== compile cache not sent back: $mb MB > CACHE_MAX_MB=${CACHE_MAX_MB:-24} (the carry holds 64 MiB in all)"
  fi
fi
# The device tool returns at most 8 files, 16 MiB each, 2 folders deep: everything but this log goes back as one
# gzipped tar in 15 MiB parts (out.tgz.00, .01, ...). Here: cat out.tgz.* | tar xzf - -C <dest>
# (scripts/unpack_device.sh does that, and moves unfinished runs' checkpoints where the next call carries them).
echo "== done in $(elapsed)s"
entries=$(cd "$OUT" && ls -A | grep -vx "session.log" || true)  # nothing but the log: nothing to pack
if [ -n "$entries" ]; then
  (cd "$OUT" && tar czf - $entries | split -b 15M -d -a 2 - out.tgz. && rm -rf $entries \
    && echo "== packed: $(ls out.tgz.* | tr '\n' ' ')($(du -cb out.tgz.* | tail -1 | cut -f1) bytes)")
fi
