"""Where a conditional VAE puts its label, measured: how often its samples are of the asked class.

    nohup nice -n 10 python experiments/conditional_options.py > runs/conditional_options.txt &
    python experiments/conditional_options.py --options=input,every --seeds=0 --epochs=2  # quick

For each option and seed: the default config (784-400-20 MLP, Adam 1e-3, batch
128) with `conditional=True`, `dataset=mnist_sample` (8,004 training digits),
`binarize=dynamic`, trained for `--epochs` epochs (20, the default). A softmax
regression trained on the training digits (full-batch Adam, as
tests/test_conditional.py trains it) then names the class of:

  * `samples`: 50 conditional samples per class (z ~ p(z), decoded with the
    label; the pictures E[x|z, y]): the share recognised as their label,
    overall and for the worst class;
  * `swap`: each of the first 1,000 test digits' posterior means decoded with
    the next label ((y + 1) mod 10): the share read as the asked label, and as
    the digit's own (the label leaking into z: the class then comes from z).

The options:
  input        the label (one-hot) concatenated to the encoder's input and to z (the
               networks' inputs): what `conditional=True` built before issue 24
  every        ... and to the input of every decoder layer (the hidden layer and the
               output layer); the encoder as `input`
  class_prior  the label at the networks' inputs, and a learned prior per class
               p(z|y) = N(mu_y, diag sigma_y^2) (Sohn et al. 2015's conditional prior,
               one Gaussian per class), sampled from it
  every_prior  `every` with the learned class prior
Prints one line per run and a table of means over seeds (test loss: the single-sample
negative ELBO of the last epoch, -log p(x|y) bound, nats).
"""
import argparse
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import vae_jax
from vae_jax import data
from vae_jax import latent
from vae_jax import networks
from vae_jax import objectives
from vae_jax import reporting
from vae_jax.configs import default
from vae_jax.families.vae import model as model_lib

SAMPLES_PER_CLASS = 50
SWAPPED = 1000


class EveryLayerDecoder(nn.Module):
  """The MLP decoder with the label concatenated to every layer's input."""

  hidden: int
  image_shape: tuple

  @nn.compact
  def __call__(self, z, label=None):
    h = networks.with_label(z, label)
    h = nn.relu(networks.linear(self.hidden, h.shape[-1], "hidden")(h))
    h = networks.with_label(h, label)
    out = networks.linear(int(np.prod(self.image_shape)), h.shape[-1], "out")(h)
    return out.reshape(*out.shape[:-1], *self.image_shape)


class ClassPriorVAE(model_lib.VAE):
  """A conditional VAE with a learned Gaussian prior per class, p(z|y) = N(mu_y, sigma_y^2)."""

  def setup(self):
    shape = (self.num_classes, self.latents)
    self.class_means = self.param("class_means", nn.initializers.zeros, shape)
    self.class_logvars = self.param("class_logvars", nn.initializers.zeros, shape)

  def _prior_of(self, y):
    vector = self.label_vector(y, jnp.shape(y))
    return vector @ self.class_means, vector @ self.class_logvars

  def elbo_terms(self, x, key, y=None):
    mean, logvar = self.encode(x, y)
    z = objectives.reparameterize(key, mean, logvar)
    recon = -self.log_likelihood(x, self.decode(z, y))
    prior_mean, prior_logvar = self._prior_of(y)
    kl_dims = 0.5 * (prior_logvar - logvar + (jnp.exp(logvar) + (mean - prior_mean) ** 2)
                     / jnp.exp(prior_logvar) - 1.0)
    kl = jnp.sum(kl_dims, axis=-1)
    return {"recon": recon, "kl": kl, "loss": recon + kl}

  def sample_given(self, key, y):
    prior_mean, prior_logvar = self._prior_of(y)
    return prior_mean + jnp.exp(0.5 * prior_logvar) * jax.random.normal(key, prior_mean.shape)


def config_of(epochs: int, seed: int):
  config = default.get_config()
  config.update(dataset="mnist_sample", conditional=True, binarize="dynamic", num_epochs=epochs,
                seed=seed, eval_iwae_every=0, checkpoint_every_epochs=epochs)
  return config


def module_of(option: str, shape=(28, 28, 1)):
  """None for the config's own network (`input`), else the option's module."""
  if option == "input":
    return None
  encoder = networks.MLPEncoder(400, 20)
  decoder = (EveryLayerDecoder(400, shape) if option.startswith("every")
             else networks.MLPDecoder(400, shape))
  cls = ClassPriorVAE if option.endswith("prior") else model_lib.VAE
  return cls(encoder, decoder, 20, shape, num_classes=10)


def softmax_regression(images, labels, classes=10, steps=300):
  """As tests/test_conditional.py: multinomial logistic regression, full-batch Adam."""
  x = jnp.asarray(images.reshape(len(images), -1), jnp.float32)
  tx = optax.adam(0.05)

  def loss(p):
    logits = x @ p[0] + p[1]
    return (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            + 1e-4 * jnp.sum(p[0] ** 2))

  @jax.jit
  def fit(p):
    def step(_, carry):
      p, s = carry
      updates, s = tx.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, updates), s
    return jax.lax.fori_loop(0, steps, step, (p, tx.init(p)))[0]

  params = fit((jnp.zeros((x.shape[1], classes)), jnp.zeros(classes)))
  return lambda pictures: np.asarray(jnp.argmax(
      jnp.asarray(pictures, jnp.float32).reshape(len(pictures), -1) @ params[0] + params[1], -1))


def samples_of(model, option, key, classes):
  if not option.endswith("prior"):
    return np.asarray(vae_jax.sample(model, key, len(classes), labels=classes))
  module = model.module

  def run(m):
    z = m.sample_given(key, jnp.asarray(classes))
    return m.mean_image(m.decode(z, jnp.asarray(classes)))
  return np.asarray(module.apply(model.variables, method=run))[..., 0]


def measure(option: str, seed: int, epochs: int, classify, dataset) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    vae_jax.train_and_evaluate(config_of(epochs, seed), workdir, module=module_of(option),
                               verbose=False)
    seconds = time.perf_counter() - start
    model = vae_jax.load(workdir, module=module_of(option))
    test_loss = reporting.read_metrics(workdir)[-1]["test_loss"]
  classes = np.repeat(np.arange(10), SAMPLES_PER_CLASS)
  pictures = samples_of(model, option, jax.random.key(100 + seed), classes)
  hits = classify(pictures) == classes
  per_class = np.bincount(classes, weights=hits) / SAMPLES_PER_CLASS
  x, y = dataset.test.images[:SWAPPED], dataset.test.labels[:SWAPPED]
  means = latent.encode(model, x, y)[0]
  asked = (y + 1) % 10
  swapped = classify(np.asarray(latent.decode(model, means, labels=asked)))
  return {"option": option, "seed": seed, "samples": float(hits.mean()),
          "worst": float(per_class.min()), "swap_asked": float(np.mean(swapped == asked)),
          "swap_own": float(np.mean(swapped == y)), "test_loss": test_loss, "seconds": seconds}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--options", default="input,every,class_prior,every_prior")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--epochs", type=int, default=20)
  args = parser.parse_args()
  dataset = data.load(data.settings(config_of(1, 0)))
  classify = softmax_regression(dataset.train.images / np.float32(255), dataset.train.labels)
  accuracy = np.mean(classify(dataset.test.images / np.float32(255)) == dataset.test.labels)
  print(f"classifier: {accuracy:.3f} of the {len(dataset.test.labels)} test digits", flush=True)
  rows = []
  for option in args.options.split(","):
    for seed in map(int, args.seeds.split(",")):
      rows.append(measure(option, seed, args.epochs, classify, dataset))
      print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in rows[-1].items()), flush=True)
  print(f"\nmeans over seeds {args.seeds}, {args.epochs} epochs:")
  print("| option | samples recognised | worst class | swapped: asked | swapped: own | "
        "test loss |")
  print("|---|---|---|---|---|---|")
  for option in args.options.split(","):
    mine = [r for r in rows if r["option"] == option]
    mean = lambda k: np.mean([r[k] for r in mine])
    print(f"| {option} | {mean('samples'):.1%} | {mean('worst'):.1%} | "
          f"{mean('swap_asked'):.1%} | {mean('swap_own'):.1%} | {mean('test_loss'):.2f} |")


if __name__ == "__main__":
  main()
