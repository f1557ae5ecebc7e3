"""Tomczak & Welling 2018 (VampPrior), the one-layer VAE, on full MNIST.

    vae-jax train --workdir=runs/vamp_paper --config=vampprior_paper
    vae-jax train --workdir=runs/vamp_paper_normal --config=vampprior_paper \
        --config.prior=normal          # their standard-prior baseline

Their architecture and budget (section 4): encoder and decoder MLPs of two
gated layers of 300 units (GatedDense: (W x + b) * sigmoid(V x + c)), 40
latents, K = 500 pseudo-inputs, dynamically binarized MNIST (downloaded:
`dataset=mnist`), Adam at 5e-4, batch 100, the KL warmed up over 100 epochs, at
most 2,000 epochs (they stop early after 50 epochs without improvement on a
validation set; this config trains the full budget), test NLL with k = 5,000.
Their one-layer result: 85.57 nats (pythae's reproduction: 85.79), against about
1 to 3 nats more with the standard prior.
"""
import ml_collections

from vae_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = "mnist"
  config.binarize = "dynamic"
  config.hidden, config.hidden_layers, config.activation, config.latents = 300, 2, "gated", 40
  config.prior, config.prior_components = "vamp", 500
  config.batch_size, config.num_epochs, config.learning_rate = 100, 2000, 5e-4
  config.kl_warmup_steps = 100 * 600  # 100 epochs of MNIST's 60,000 training images.
  config.eval_iwae_every, config.eval_iwae_k = 2000, 5000
  config.checkpoint_every_epochs = 10
  return config
