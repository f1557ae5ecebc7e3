"""Burda, Grosse & Salakhutdinov 2015 (IWAE), one stochastic layer, on full MNIST.

    vae-jax train --workdir=runs/iwae_paper_k50 --config=iwae_paper
    vae-jax train --workdir=runs/iwae_paper_k5 --config=iwae_paper --config.train_samples=5
    vae-jax train --workdir=runs/vae_paper --config=iwae_paper --config.objective=elbo \
        --config.train_samples=1

Their architecture and budget (section 5 and appendix C): 784-200-200-50 tanh
MLPs for the encoder and the decoder (two deterministic layers), a Bernoulli
likelihood, dynamically binarized MNIST (downloaded: `dataset=mnist`), Adam with
epsilon 1e-4, batch 20, 3,280 epochs in 8 stages at 1e-3 * 10^(-i/7), K = 50 (or
5, 1), test NLL with k = 5,000. Their one-layer results: VAE 86.76, IWAE
K = 5 85.54, K = 50 84.78 nats. 3,280 epochs of 3,000 steps are about 10 million
steps: days on a CPU, hours on a GPU.
"""
import ml_collections

from vae_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.dataset = "mnist"
  config.binarize = "dynamic"
  config.hidden, config.hidden_layers, config.activation, config.latents = 200, 2, "tanh", 50
  config.objective, config.train_samples = "iwae", 50
  config.batch_size, config.num_epochs = 20, 3280
  config.learning_rate, config.lr_schedule, config.adam_eps = 1e-3, "burda", 1e-4
  config.eval_iwae_every, config.eval_iwae_k = 3280, 5000
  config.checkpoint_every_epochs = 10
  return config
