#!/usr/bin/env bash
# The README's CPU results, one command per row, into runs/ (about 40 minutes on 2 cores).
#
#   bash experiments/run_results.sh            # everything
#   bash experiments/run_results.sh fashion    # one group: fashion, beta, logistic, sample, folder, bf16, rgb
#
# Needs Debian's dataset-fashion-mnist. The convolutional model's rows come from
# experiments/gpu_check.sh (20 epochs of conv on 2 CPU cores take about an hour a seed).
set -eu
cd "$(dirname "$0")/.."
FASHION=(--config.dataset=fashion_mnist --config.data_dir=/usr/share/datasets/fashion-mnist)
train() { python -m vae_jax.train "$@"; }
evaluate() { python -m vae_jax.evaluate "$@"; }
want() { [ $# -eq 0 ] || [[ " $* " == *" $GROUP "* ]]; }
run_group() {
  GROUP=$1; shift
  want "$@" || return 0
  echo "=== $GROUP"
  "group_$GROUP"
}

group_fashion() {  # The tutorial's model, 5 seeds in one program, IWAE k = 1,000 after epoch 20.
  train --workdir=runs/fashion_mlp5 "${FASHION[@]}" --config.num_models=5 \
    --config.eval_iwae_every=20 --config.eval_iwae_k=1000
}
group_beta() {  # beta 0.5, 1, 4: recon, KL, active units, samples side by side.
  train --workdir=runs/fashion_beta "${FASHION[@]}" --config.sweep.beta=0.5,1,4 \
    --config.sweep.seed=0
  evaluate --workdir=runs/fashion_beta --k=100
  python experiments/side_by_side.py runs/fashion_beta --epoch=20 \
    --out=experiments/figures/fashion_beta_samples.png
}
group_logistic() {  # The discretised logistic: a likelihood of the 8-bit data.
  train --workdir=runs/fashion_logistic "${FASHION[@]}" --config.likelihood=logistic
  evaluate --workdir=runs/fashion_logistic --k=1000
}
group_sample() {  # mnist_sample, 5 seeds.
  train --workdir=runs/sample_mlp5 --config.dataset=mnist_sample --config.num_models=5 \
    --config.eval_iwae_every=20 --config.eval_iwae_k=1000
}
group_folder() {  # mnist_sample exported to PNG files trains like its IDX files.
  python experiments/make_image_folder.py --out=runs/mnist_sample_png
  train --workdir=runs/sample_from_png --config.dataset=mnist_sample_png \
    --config.data_dir=runs/mnist_sample_png
  train --workdir=runs/sample_from_idx --config.dataset=mnist_sample
}
group_bf16() {  # bfloat16 products against float32, 10 epochs of Fashion-MNIST.
  train --workdir=runs/fashion_f32 "${FASHION[@]}" --config.num_epochs=10
  train --workdir=runs/fashion_bf16 "${FASHION[@]}" --config.num_epochs=10 \
    --config.compute_dtype=bfloat16
}
group_rgb() {  # Colour: mnist_sample's digits tinted, the MLP on 28x28x3.
  python experiments/make_image_folder.py --out=runs/mnist_sample_rgb --colour
  train --workdir=runs/sample_rgb --config.dataset=coloured_digits \
    --config.data_dir=runs/mnist_sample_rgb
}

for group in fashion beta logistic sample folder bf16 rgb; do
  run_group "$group" "$@"
done
