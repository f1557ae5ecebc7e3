#!/usr/bin/env bash
# One call on a lent GPU (it reaches no registry): installs the project from carried wheels,
# then times and trains, each phase under its own time limit, writing to $OUT.
#
#   python3 -m pip download ... (see experiments/README)   # once, here: .device/wheels, .device/fashion-mnist
#   device run: bash experiments/gpu_check.sh   (carry .device)
#
# SMOKE=1 shrinks every phase to seconds (to try the script on a CPU first).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
FASHION=.device/fashion-mnist
EPOCHS=20; BENCH_EPOCHS=3; K=1000; MODELS=1,4,16,64
if [ "${SMOKE:-0}" = 1 ]; then EPOCHS=1; BENCH_EPOCHS=1; K=4; MODELS=1,2; fi

phase() {  # phase SECONDS NAME COMMAND...: runs COMMAND under a limit, logging what it prints.
  local limit=$1 name=$2; shift 2
  echo "=== $name (limit ${limit} s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | grep -v -e "^I1" -e "^W1" -e "Unable to initialize backend" | tee -a "$LOG"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}

if [ "${SMOKE:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps .device/wheels/*.whl 2>&1 | tail -1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>/dev/null \
    || python3 -m pip install -q --no-index --no-deps -e . 2>&1 | tail -1
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"; } 2>&1 | tee -a "$LOG"

TRAIN=(python3 -m vae_jax.train --config.dataset=fashion_mnist --config.data_dir=$FASHION
       --config.num_epochs=$EPOCHS --config.iwae_example_chunk=500 --config.iwae_sample_chunk=200)
keep() { cp "/tmp/$1/metrics.jsonl" "$OUT/$1_metrics.jsonl" 2>/dev/null || true; }

phase 80 "MLP epoch, 1..64 stacked models" python3 experiments/bench_train.py --data_dir=$FASHION \
  --num_models=$MODELS --baselines=false --epochs=$BENCH_EPOCHS
phase 35 "MLP epoch, bfloat16" python3 experiments/bench_train.py --data_dir=$FASHION \
  --num_models=1,16 --compute_dtype=bfloat16 --baselines=false --epochs=$BENCH_EPOCHS
phase ${CONV_BENCH_LIMIT:-40} "conv epoch" python3 experiments/bench_train.py --data_dir=$FASHION --model=conv \
  --num_models=1,5 --baselines=false --epochs=$BENCH_EPOCHS
phase 50 "MLP, 5 seeds, $EPOCHS epochs, IWAE k=$K" "${TRAIN[@]}" --workdir=/tmp/mlp5 \
  --config.num_models=5 --config.eval_iwae_every=$EPOCHS --config.eval_iwae_k=$K
keep mlp5
phase 100 "conv, 5 seeds, $EPOCHS epochs, IWAE k=$K" "${TRAIN[@]}" --workdir=/tmp/conv5 \
  --config.model=conv --config.num_models=5 --config.eval_iwae_every=$EPOCHS --config.eval_iwae_k=$K
keep conv5
for f in sample reconstruction; do
  cp "/tmp/conv5/images/model_0/${f}_$EPOCHS.png" "$OUT/conv5_$f.png" 2>/dev/null || true
done
phase 20 "MLP with TF32 products, 3 epochs" "${TRAIN[@]}" --workdir=/tmp/tf32 \
  --config.matmul_precision=tf32 --config.num_epochs=3
keep tf32
