#!/usr/bin/env bash
# docs/results.md's disentanglement rows: each family with two values of its main weight,
# 3 seeds each, in one program per family (6 stacked models), on shapes2d, then every metric.
#
#   bash experiments/run_disentangle.sh [OUT]      # default runs/disentangle; ~10 CPU-minutes
#   python experiments/summarize_disentangle.py runs/disentangle
#
# The CPU budget: a 2048-image train_subset, 8 epochs of batch 64 (256 steps), an MLP of
# 64 hidden units and 10 latents, FactorVAE's discriminator 6 x 256 (not the paper's
# 6 x 1000), AnnealedVAE's capacity reached at step 128, the metrics at 0.05 of
# disentanglement_lib's numbers of points.
# disentanglement_lib's budget (300,000 steps at batch 64) on a GPU: see docs/results.md.
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-runs/disentangle}
COMMON=(--config.dataset=shapes2d --config.train_subset=2048 --config.test_fraction=0.002
        --config.hidden=64 --config.latents=10 --config.batch_size=64 --config.num_epochs=8
        --config.eval_iwae_every=0 --config.sweep.seed=0,1,2)
train() { vae-jax train "$@"; }
train --workdir="$OUT/betatc" "${COMMON[@]}" --config.family=betatc --config.sweep.tc_beta=1,6
train --workdir="$OUT/factorvae" "${COMMON[@]}" --config.family=factorvae \
  --config.sweep.tc_gamma=10,40 --config.discriminator_hidden=256
train --workdir="$OUT/dipvae" "${COMMON[@]}" --config.family=dipvae --config.dip_type=i \
  --config.sweep.lambda_od=1,10
train --workdir="$OUT/annealed" "${COMMON[@]}" --config.family=annealed \
  --config.sweep.capacity_max=5,25 --config.capacity_steps=128
for f in betatc factorvae dipvae annealed; do
  vae-jax disentanglement --workdir="$OUT/$f" --scale=0.05
done
