"""Conditional VAEs (`conditional=True`): the label reaches both networks, flows through
training, evaluation, the figures and the latent API, and a classifier trained here
recognises the class of the conditional samples."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import vae_jax
from vae_jax import data
from vae_jax import epoch
from vae_jax import evaluation
from vae_jax import parallel
from vae_jax import train
from vae_jax.configs import tiny
from vae_jax.errors import UsageError

from conftest import run_module
from vae_jax.families import vae as vae_family

IMAGE = (8, 8, 1)


def _module(model: str, classes: int = 3) -> vae_jax.VAE:
  config = ml_collections.ConfigDict({**tiny.get_config().to_dict(), "num_classes": classes})
  config.update(model=model, conditional=True, hidden=16, latents=2, conv_features=(4,))
  return vae_family.from_config(config, IMAGE)


@pytest.mark.slow
@pytest.mark.parametrize("model, first_layer", [("mlp", ("hidden", 64)),
                                                 ("conv", ("conv0", 1))])
def test_the_label_reaches_the_encoder_and_the_decoder(model, first_layer, key):
  module = _module(model)

  @jax.jit  # One compilation: op by op this takes seconds.
  def run(key):
    params = vae_family.init_params(module, key)
    x = jax.random.uniform(key, (5, *IMAGE))
    encode = lambda y: module.apply({"params": params}, x, jnp.full(5, y), method="encode")[0]
    decode = lambda y: module.apply({"params": params}, jnp.ones((5, 2)), jnp.full(5, y),
                                    method="decode")
    return params, (encode(0), encode(2)), (decode(0), decode(2))

  params, encoded, decoded = run(key)
  layer, inputs = first_layer
  assert params["encoder"][layer]["kernel"].shape[-2] == inputs + 3  # 3 classes, one-hot.
  decoder_layer = "hidden" if model == "mlp" else "project"
  assert params["decoder"][decoder_layer]["kernel"].shape[0] == 2 + 3  # z and the label.
  assert not np.allclose(*encoded) and not np.allclose(*decoded)
  with pytest.raises(ValueError, match="pass the labels"):
    module.apply({"params": params}, jnp.zeros((1, *IMAGE)), method="encode")


def test_labels_stay_with_their_images_through_the_shuffle_and_the_chunks(key):
  mesh = parallel.make_mesh()
  index = np.arange(250)
  images = np.broadcast_to((index % 251).astype(np.uint8)[:, None, None, None], (250, *IMAGE))
  examples = epoch.place_training_set((np.ascontiguousarray(images), index.astype(np.int32)),
                                      mesh)
  sharding = tuple(parallel.sharded(mesh, 1, n) for n in (5, 2))
  batch_images, batch_labels = epoch.shuffle_batches(
      examples, key[None], num_examples=250, batch_size=32, sharding=sharding)
  assert batch_labels.shape == (7, 32) and len(set(np.asarray(batch_labels).ravel())) == 224
  np.testing.assert_array_equal(np.asarray(batch_images)[..., 0, 0, 0], batch_labels % 251)
  chunks = evaluation.Chunks.place((images, index % 3), 100, mesh)
  chunk_images, chunk_labels = (np.asarray(a) for a in chunks.images)
  assert chunk_labels.shape == (3, 100) and chunks.num_examples == 250
  np.testing.assert_array_equal(chunk_images[..., 0, 0, 0] % 3, chunk_labels)


def _npz(tmp_path, labels: bool):
  images = (np.random.default_rng(0).random((300, *IMAGE)) * 255).astype(np.uint8)
  extra = {"y_train": np.arange(300) % 3, "y_test": np.arange(50) % 3} if labels else {}
  np.savez(tmp_path / "data.npz", x_train=images, x_test=images[:50], **extra)
  return str(tmp_path / "data.npz")


@pytest.mark.slow
@pytest.mark.parametrize("change, says", [
    (dict(labels=False), "conditional=True needs a label for every image, and data has no "
                         "labels"),
    (dict(data_placement="stream"), "reads the labels with the device-resident training set"),
    (dict(prior="vamp", prior_components=4), "conditional=True with prior=vamp is not built"),
])
def test_what_conditioning_cannot_do_is_refused_in_one_line(change, says, tiny_config,
                                                            tmp_path):
  change = dict(change)
  tiny_config.update(dataset="", data_dir=_npz(tmp_path, change.pop("labels", True)),
                     conditional=True, batch_size=50, num_epochs=1, **change)
  with pytest.raises(UsageError, match=says):
    train.train_and_evaluate(tiny_config, tmp_path / "run", verbose=False)


@pytest.mark.slow
def test_the_command_line_says_so_when_the_data_has_no_labels(tmp_path):
  result = run_module("vae_jax.train", f"--workdir={tmp_path / 'run'}", "--config=tiny",
                      f"--config.data_dir={_npz(tmp_path, labels=False)}",
                      "--config.conditional=True")
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().count("\n") == 0 and "has no labels" in result.stderr


# ----------------------------------------------------------------------------
# A conditional model trained on real digits.

# The cheapest run found whose samples a softmax regression reliably recognises
# (seeds 0-2: mean 0.97, worst class 0.72; 4 latents or hidden 64 fell to 0.2-0.8):
# few latents leave the class to the label, a higher learning rate and a smaller
# batch give 2 epochs enough steps (500).
CONDITIONAL_RUN = dict(conditional=True, hidden=128, latents=2, batch_size=32,
                       learning_rate=3e-3, num_epochs=2, eval_iwae_every=0)
SAMPLES_PER_CLASS = 100
# "In most cases": each class's samples are recognised as that class more often than not,
# and 80% of all of them. A classifier guessing by chance gets 10%; one that saw only
# the samples' mean image gets at most 10% per class once the label is ignored.
CLASS_THRESHOLD, MEAN_THRESHOLD = 0.5, 0.8


@pytest.fixture(scope="module")
def conditional_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("conditional")
  config = tiny.get_config()
  config.update(**CONDITIONAL_RUN)
  train.train_and_evaluate(config, workdir, verbose=False)
  return workdir


def softmax_regression(images: np.ndarray, labels: np.ndarray, classes: int = 10,
                       steps: int = 300):
  """Multinomial logistic regression on flattened pixels in [0, 1], full-batch Adam."""
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
  predict = jax.jit(lambda p, x: jnp.argmax(x.reshape(len(x), -1) @ p[0] + p[1], axis=-1))
  return lambda pictures: np.asarray(predict(params, jnp.asarray(pictures, jnp.float32)))


@pytest.mark.slow
def test_a_classifier_recognises_the_class_of_conditional_samples(conditional_workdir):
  model = vae_jax.load(conditional_workdir)
  dataset = data.load(model.config)
  classify = softmax_regression(dataset.train.images / np.float32(255), dataset.train.labels)
  assert np.mean(classify(dataset.test.images / np.float32(255)) == dataset.test.labels) > 0.85
  classes = np.repeat(np.arange(10), SAMPLES_PER_CLASS)
  samples = vae_jax.sample(model, jax.random.key(1), len(classes), labels=classes)
  accuracy = np.bincount(classes, weights=classify(samples) == classes) / SAMPLES_PER_CLASS
  assert accuracy.min() > CLASS_THRESHOLD and accuracy.mean() > MEAN_THRESHOLD, accuracy
  assert (conditional_workdir / "images" / "class_grid_2.png").is_file()


@pytest.mark.slow
def test_the_bound_is_on_log_p_x_given_the_true_label(conditional_workdir):
  model = vae_jax.load(conditional_workdir)
  test = data.load(model.config).test
  images, labels = test.images[:200], test.labels[:200]
  given = vae_jax.evaluate(model, images, k=20, key=jax.random.key(0), labels=labels,
                           progress=False)
  wrong = vae_jax.evaluate(model, images, k=20, key=jax.random.key(0),
                           labels=(labels + 1) % 10, progress=False)
  assert given["conditional"] and given["nll"] < wrong["nll"] - 5
  assert given["nll"] <= -given["elbo"] + 1e-3  # The IWAE bound is the tighter one.
  with pytest.raises(UsageError, match="pass the images' labels"):
    vae_jax.evaluate(model, images, k=2, key=jax.random.key(0), progress=False)


@pytest.mark.slow
def test_the_latent_api_takes_labels(conditional_workdir):
  model = vae_jax.load(conditional_workdir)
  key = jax.random.key(0)
  sixes = vae_jax.sample(model, key, 4, labels=6)
  assert sixes.shape == (4, 28, 28)
  # The same key draws the same codes: only the class changes between rows.
  assert not np.allclose(sixes, vae_jax.sample(model, key, 4, labels=0))
  test = data.load(model.config).test
  zeros, ones = test.images[test.labels == 0][:2], test.images[test.labels == 1][:2]
  moving = vae_jax.interpolate(model, zeros, ones, 5, labels=(0, 1))
  kept = vae_jax.interpolate(model, zeros, ones, 5, labels=(0, 1), path_labels=(0, 0))
  assert moving.shape == kept.shape == (2, 5, 28, 28)
  np.testing.assert_allclose(moving[:, 0], kept[:, 0], atol=1e-6)  # Both start as a 0 ...
  assert not np.allclose(moving[:, -1], kept[:, -1])  # ... and end as a 1, or as a 0.
  for bad, says in [(lambda: vae_jax.sample(model, key, 2), "pass labels="),
                    (lambda: vae_jax.sample(model, key, 2, labels=10), r"lie in 0 \.\. 9"),
                    (lambda: vae_jax.sample(model, key, 2, labels=[1, 2, 3]), "2 labels")]:
    with pytest.raises(ValueError, match=says):
      bad()


@pytest.mark.slow
def test_sample_draws_one_class_from_the_command_line(conditional_workdir, tmp_path):
  result = run_module("vae_jax", "sample", f"--workdir={conditional_workdir}", "--label=6",
                      "--num=9", f"--out={tmp_path}")
  assert result.returncode == 0, result.stderr
  assert "of class 6" in result.stdout and (tmp_path / "samples_6.png").is_file()
