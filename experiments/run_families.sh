#!/usr/bin/env bash
# The model families' results (docs/results.md, "Model families"): 5 seeds in one
# program per row, then the IWAE bound on the test set, into runs/families/.
#
#   bash experiments/run_families.sh                 # both data sets, every family
#   bash experiments/run_families.sh sample          # mnist_sample only (or: fashion)
#   FAMILIES="baseline iaf" bash experiments/run_families.sh sample
#   FAMILIES="hier2 hier3 cond" bash experiments/run_families.sh   # hierarchies, conditioning
#
# The budget is small (3 epochs of Fashion-MNIST, 10 of mnist_sample's 9,000
# training digits) so that the table runs in about an hour on 2 CPU cores; the
# papers train for ~3,280 epochs. NLL: k = 1,000 importance samples, on the first
# 2,000 Fashion-MNIST test images and all 1,000 of mnist_sample's.
set -eu
cd "$(dirname "$0")/.."
GROUPS_WANTED=${1:-"sample fashion"}
FAMILIES=${FAMILIES:-"baseline iwae5 iwae5_dreg mog vamp iaf iwae50 iwae50_dreg"}
K=${K:-1000}
OUT=${OUT:-runs/families}

family_flags() {
  case $1 in
    baseline) ;;
    iwae5) echo "--config.objective=iwae --config.train_samples=5" ;;
    iwae5_dreg) echo "--config.objective=iwae --config.train_samples=5 --config.gradient_estimator=dreg" ;;
    iwae50) echo "--config.objective=iwae --config.train_samples=50" ;;
    iwae50_dreg) echo "--config.objective=iwae --config.train_samples=50 --config.gradient_estimator=dreg" ;;
    mog) echo "--config.prior=mog --config.prior_components=500" ;;
    vamp) echo "--config.prior=vamp --config.prior_components=500" ;;
    iaf) echo "--config.posterior=iaf --config.flow_steps=2" ;;
    hier2) echo "--config.stochastic_layers=2" ;;  # 20 + 10 latents
    hier3) echo "--config.stochastic_layers=3" ;;  # 20 + 10 + 5
    cond) echo "--config.conditional=True" ;;
    *) echo "unknown family $1" >&2; exit 2 ;;
  esac
}

run_one() {  # data-set name, its flags, epochs, test images
  local name=$1 data=$2 epochs=$3 examples=$4
  for family in $FAMILIES; do
    local workdir=$OUT/${name}_$family
    [ -f "$workdir/eval.json" ] && continue  # Done (delete eval.json to redo the row).
    echo "=== $workdir"
    # shellcheck disable=SC2046,SC2086
    python -m vae_jax.train --workdir="$workdir" $data --config.binarize=dynamic \
      --config.num_models=5 --config.num_epochs="$epochs" $(family_flags "$family")
    python -m vae_jax.evaluate --workdir="$workdir" --k="$K" --num_examples="$examples"
  done
}

for group in $GROUPS_WANTED; do
  case $group in
    sample) run_one sample "--config.dataset=mnist_sample" 10 1000 ;;
    fashion) run_one fashion "--config.dataset=fashion_mnist \
      --config.data_dir=/usr/share/datasets/fashion-mnist" 3 2000 ;;
    *) echo "unknown group $group (sample, fashion)" >&2; exit 2 ;;
  esac
done
