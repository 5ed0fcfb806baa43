#!/usr/bin/env bash
# Issue 12's GPU checks as one command of at most 9 minutes, for a session lent a GPU machine:
#   1. the fast-path gradient test on CUDA (tests/training/test_fast_path.py -k cuda),   <= 1 min
#   2. `mmtune bench --device cuda` (all sizes and models; eager, bf16, bf16_cl; packs
#      1,2,4,8), with MMTUNE_COMPILE=0 (see below); its figures so far are kept in
#      benchmarks-cuda.partial.json if it runs out of time,                             <= 3.3 min
#   3. the reference sweep, search_spaces/reference_5epoch.yaml, 8 trials packed on the
#      GPU (--gpus-per-trial 0.125 --cpus-per-trial 2), cut at --time-budget 3m, then its
#      test split and report,                                                              <= 4 min
# First run on an H200, 2026-12-04: reports/gpu-2026-12-04/ (logs, the sweep, README.md there).
# Each step has its own timeout, and a failed step does not stop the next. Results go to DIR
# (default $OUT, the device tool's return folder), as at most 8 files:
#   summary.txt, log.txt (everything printed), benchmarks-cuda.json, benchmarks-cuda.md (or
#   benchmarks-cuda.partial.json),
#   reference-gpu.tar.gz (the experiment directory without checkpoints: unpack it into reports/).
# On the GPU machine (whose image has torch but not ray/optuna/plotly): make the wheels here first
# with `bash scripts/gpu_bundle.sh`, then
#   run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=600)
# and here: cp FILES_AT/benchmarks-cuda.json docs/; tar xzf FILES_AT/reference-gpu.tar.gz -C reports/
#
# GPU_CHECK_PYTHON names the Python that gets the wheels (default python3, the image's).
# --tiny is the dry run on CPU (about 3 minutes on 2 cores): the same three steps at CI sizes: the
# CPU gradient test, `bench --tiny --device cpu`, and the smoke space (2 trials) on CPU.
#
# --only LIST runs the named steps alone (test, diag, train, bench, decide, sweep; default
# test,bench,sweep). decide (added for the second GPU run) times the two default-size conv models at
# batch 64 in eager, bf16 and fast (bf16 + torch.compile): the rows that decide CUDA's fast-path
# defaults, with the compile's warm-up seconds beside the steady speed. DECIDE_BATCH, DECIDE_MODELS and
# DECIDE_VARIANTS change its batch (64), models (conv_tau,conv_lstm) and variants (eager,bf16,fast).
# diag and train were added after the first GPU run (2026-12-04), whose simple_lstm gradient test
# failed and whose bench timed out in torch.compile: diag is scripts/gpu_lstm_diag.py, train is
# simple_lstm trained on CUDA with and without the fast path side by side (2,000 clips, 2 epochs).
# The bench times eager, bf16 and bf16_cl with MMTUNE_COMPILE=0: compiling took 47 s per model
# and size there, so with compile the bench does not fit the device time.
#
#   bash scripts/gpu_check.sh [--tiny] [--only LIST] [DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
tiny=0
only=test,bench,sweep
while [ $# -gt 0 ]; do
  case $1 in
    --tiny) tiny=1; shift;;
    --only) only=${2:-}; shift 2;;
    *) break;;
  esac
done
for s in ${only//,/ }; do
  case $s in test|diag|train|bench|decide|sweep) ;; *) echo "gpu_check.sh: unknown step '$s' in --only; use test, diag, train, bench, decide, sweep" >&2; exit 2;; esac
done
wants() { [[ ",$only," == *",$1,"* ]]; }
dest=${1:-${OUT:-}}
if [ -z "$dest" ]; then
  echo "gpu_check.sh: no output folder: pass DIR, or set OUT (the device tool sets it)" >&2
  exit 2
fi
if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
  echo "gpu_check.sh: $dest is not empty; pass an empty or new folder (results are never overwritten)" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1

# Python: the wheels of scripts/gpu_bundle.sh over the machine's python3 (or $GPU_CHECK_PYTHON),
# else this checkout's .venv.
if [ -d .whl ] && [ -f .whl/ray-slim.tar.xz ]; then
  PY=${GPU_CHECK_PYTHON:-python3}
  site=$(mktemp -d /tmp/mmtune-site-XXXX)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
    || { echo "gpu_check.sh: installing .whl/*.whl failed; remake them with scripts/gpu_bundle.sh" >&2; exit 2; }
  xz -dc .whl/ray-slim.tar.xz | tar xf - -C "$site"
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
elif [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  echo "gpu_check.sh: no Python with mmtune's packages: make .whl with scripts/gpu_bundle.sh, or .venv with make" >&2
  exit 2
fi

if [ $tiny = 1 ]; then
  device=cpu
  test_args=(-k cpu)
  bench_args=(--tiny --device cpu)
  train_args=(--device cpu --train-size 64 --val-size 32 --test-size 32 --epochs 1)
  sweep_args=(--space search_spaces/smoke.yaml --samples 2 --cpus-per-trial 1 --time-budget 2m)
  decide_args=(--tiny --device cpu --models conv_tau --variants eager,fast --pack 1)
  t_test=300; t_bench=240; t_sweep=420; t_diag=120; t_train=300; t_decide=240
else
  device=cuda
  if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check.sh: torch sees no CUDA device here; for a CPU dry run use --tiny" >&2
    exit 2
  fi
  test_args=(-k cuda)
  bench_args=(--device cuda --variants eager,bf16,bf16_cl --steps 30 --warmup 5 --budget-s 4 --pack 1,2,4,8
              --pack-seconds 5)
  decide_args=(--device cuda --models "${DECIDE_MODELS:-conv_tau,conv_lstm}" --sizes default
               --batch-size "${DECIDE_BATCH:-64}" --variants "${DECIDE_VARIANTS:-eager,bf16,fast}"
               --steps 40 --warmup 5 --budget-s 6 --pack 1 --pack-size default --pack-seconds 5)
  train_args=(--device cuda --train-size 2000 --val-size 500 --test-size 500 --epochs 2)
  sweep_args=(--space search_spaces/reference_5epoch.yaml --gpus-per-trial 0.125 --cpus-per-trial 2
              --time-budget 3m)
  t_test=90; t_bench=260; t_sweep=240; t_diag=60; t_train=120; t_decide=200
fi

mkdir -p "$dest"
work=$(mktemp -d /tmp/mmtune-gpu-check-XXXX)
export work
log=$dest/log.txt
summary=$dest/summary.txt
train_both() {  # train_both CMD...: CMD with the fast path and with --no-fast, side by side
  "$@" --out "$work/train-fast" >"$work/train-fast.log" 2>&1 &
  local p=$!
  "$@" --no-fast --out "$work/train-fp32" >"$work/train-fp32.log" 2>&1
  local r=$?
  wait $p || r=1
  return $r
}
export -f train_both
say() { echo "$*" | tee -a "$summary"; }
step() {  # step NAME SECONDS CMD...: run CMD under a timeout, log it, record its exit status
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  echo "== $name (at most ${secs} s): $*" | tee -a "$log"
  timeout --kill-after=20 "$secs" "$@" >>"$log" 2>&1
  local rc=$?
  say "$name: exit $rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (timed out)')"
}

say "gpu_check.sh $([ $tiny = 1 ] && echo --tiny) on $(hostname), device $device, $(date -u +%FT%TZ)"
$PY - >>"$summary" 2>&1 <<'PY'
import torch
print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
PY
if wants test; then
  step "fast-path gradient test" $t_test $PY -m pytest -q -rA -p no:cacheprovider tests/training/test_fast_path.py \
    "${test_args[@]}"
  grep -E "^(PASSED|FAILED|ERROR)" "$log" | sed 's/^/  /' >>"$summary"
fi
if wants diag; then
  step "simple_lstm gradient diagnosis" $t_diag $PY scripts/gpu_lstm_diag.py --device $device
  grep -E "^seed|^  max" "$log" | sed 's/^/  /' >>"$summary"
fi
if wants train; then  # the sweep's simple_lstm config (trial fcccf5b0 of the first GPU run), fast and fp32 at once
  lstm=(--model simple_lstm --set dense1=1024 --set dense2=256 --set hidden=1024 --lr 0.0036 --weight-decay 4.5e-6
        --batch-size 32 --seed 0)
  step "simple_lstm train, fast and fp32" $t_train bash -c 'train_both "$@"' _ $PY -m mmtune train "${lstm[@]}" \
    "${train_args[@]}"
  for v in fast fp32; do
    cat "$work/train-$v.log" >>"$log"
    tr '\r' '\n' <"$work/train-$v.log" | grep -E "train_loss .*val mse_frame|test mse_frame" | sed "s/^/  $v: /" \
      >>"$summary"
  done
fi
if wants bench; then
  MMTUNE_COMPILE=$([ $tiny = 1 ] && echo "" || echo 0) step "bench" $t_bench $PY -m mmtune bench "${bench_args[@]}" \
    --out "$work/benchmarks-$device.md" --json "$work/benchmarks-$device.json"
  cp "$work/benchmarks-$device.md" "$work/benchmarks-$device.json" "$work/benchmarks-$device.partial.json" \
    "$dest"/ 2>/dev/null
fi
if wants decide; then  # compile on (the default): its warm-up seconds are the compile's cost
  step "bench at batch 64 (decide)" $t_decide $PY -m mmtune bench "${decide_args[@]}" \
    --out "$work/decide-$device.md" --json "$work/decide-$device.json"
  cp "$work/decide-$device.md" "$work/decide-$device.json" "$work/decide-$device.partial.json" "$dest"/ 2>/dev/null
fi
if wants sweep; then
  step "reference sweep" $t_sweep $PY run_search.py "${sweep_args[@]}" --seed 0 --storage "$work/experiments" \
    --name reference-gpu
  if [ -d "$work/experiments/reference-gpu" ]; then
    tar czf "$dest/reference-gpu.tar.gz" -C "$work/experiments" --exclude='checkpoint_*' --exclude='*.pt' \
      reference-gpu
    say "reference sweep: $(du -h "$dest/reference-gpu.tar.gz" | cut -f1) packed (no checkpoints)"
  fi
  grep -E "best|test mse|trials" "$log" | tail -8 | sed 's/^/  /' >>"$summary"
fi
ls "$dest" | sed 's/^/  returned: /' >>"$summary"
cat "$summary"
