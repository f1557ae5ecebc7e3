"""Invariants of the core maths and the epoch engine that mutation testing found unguarded:
each test names the mistake it catches."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import epoch
from vae_jax import likelihoods
from vae_jax import objectives
from vae_jax import parallel
from vae_jax import fields
from vae_jax import schema
from vae_jax import stacked
from vae_jax import train_state
from vae_jax.configs import tiny
from vae_jax.errors import UsageError
from vae_jax.families import vae as vae_family
from vae_jax.families.vae import objective as vae_objective
from conftest import vae_training  # pylint: disable=wrong-import-order


# ----------------------------------------------------------------------------
# Objectives.


@pytest.mark.parametrize("loc, log_scale", [(0.5, -3.0), (0.02, -5.0), (0.9, 0.5), (-2.0, -1.0)])
def test_the_discretized_logistic_is_a_distribution_over_the_256_values(loc, log_scale):
  """Its 256 probabilities sum to 1 and each is the logistic's mass over its bin (the
  edge bins open), computed here in float64 from the CDF."""
  x = jnp.arange(256, dtype=jnp.float32) / 255
  log_p = np.asarray(objectives.discretized_logistic_log_prob(x, loc, log_scale), np.float64)
  np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-5)
  cdf = lambda t: 1 / (1 + np.exp(-(t - loc) / np.exp(log_scale)))
  edges = np.concatenate([[-np.inf], (np.arange(255) + 0.5) / 255, [np.inf]])
  mass = cdf(edges[1:]) - cdf(edges[:-1])
  big = mass > 1e-6  # Where float64 differences of CDFs are accurate.
  np.testing.assert_allclose(np.exp(log_p[big]), mass[big], rtol=1e-4)


def test_the_discretized_logistic_stays_finite_far_from_its_mass():
  x = jnp.array([0.0, 0.5, 1.0])
  for loc, log_scale in ((40.0, -6.0), (-40.0, -6.0), (0.5, -12.0)):
    assert np.isfinite(objectives.discretized_logistic_log_prob(x, loc, log_scale)).all()


def test_the_kl_weight_rises_linearly_over_the_warm_up_then_stays_at_beta():
  weight = lambda step, beta, warmup: float(vae_objective.kl_weight(
      jnp.float32(step), jnp.float32(beta), jnp.int32(warmup)))
  assert [weight(s, 2.0, 100) for s in (0, 25, 50, 100, 250)] == [0.0, 0.5, 1.0, 2.0, 2.0]
  assert weight(0, 0.5, 0) == 0.5 and weight(7, 0.5, 0) == 0.5


def test_the_weighted_objective_weighs_the_kl_and_floors_each_latent_at_free_bits():
  recon = jnp.array([10.0, 20.0])
  kl_dims = jnp.array([[0.1, 2.0, 0.0], [0.3, 4.0, 1.0]])  # Batch means 0.2, 3.0, 0.5.
  terms = {"recon": recon, "kl_per_dimension": kl_dims, "kl": kl_dims.sum(-1)}
  objective = lambda weight, free_bits: float(vae_objective.weighted_objective(
      terms, jnp.float32(weight), jnp.float32(free_bits)))
  np.testing.assert_allclose(objective(1.0, 0.0), 15.0 + 3.7, rtol=1e-6)  # The mean -ELBO.
  np.testing.assert_allclose(objective(0.5, 0.0), 15.0 + 0.5 * 3.7, rtol=1e-6)
  np.testing.assert_allclose(objective(1.0, 1.0), 15.0 + 1.0 + 3.0 + 1.0, rtol=1e-6)


def test_gaussian_densities_and_the_kl_match_their_formulas():
  z, mean, logvar = jnp.array([0.3, -1.0]), jnp.array([0.1, 0.5]), jnp.array([0.2, -0.7])
  var = np.exp(np.asarray(logvar, np.float64))
  expected = np.sum(-0.5 * (np.asarray(z - mean, np.float64) ** 2 / var + np.log(2 * np.pi * var)))
  np.testing.assert_allclose(objectives.gaussian_log_density(z, mean, logvar), expected, rtol=1e-6)
  kl = 0.5 * (var + np.asarray(mean, np.float64) ** 2 - 1 - np.asarray(logvar, np.float64))
  np.testing.assert_allclose(objectives.kl_per_dimension(mean, logvar), kl, rtol=1e-6)
  np.testing.assert_allclose(objectives.gaussian_kl(mean, logvar), kl.sum(), rtol=1e-6)


def test_log_mean_exp_reduces_the_last_axis_by_default():
  a = jax.random.normal(jax.random.key(0), (2, 3, 4))
  np.testing.assert_allclose(objectives.log_mean_exp(a), objectives.log_mean_exp(a, axis=2))
  assert objectives.log_mean_exp(a).shape == (2, 3)


@pytest.mark.parametrize("k, sample_chunk", [(1, None), (7, None), (7, 3), (7, 7), (10, 4),
                                             (10, 100)])
def test_sample_chunks_cover_k_in_equal_chunks_no_larger_than_asked(k, sample_chunk):
  num_chunks, chunk = objectives.sample_chunking(k, sample_chunk)
  assert type(num_chunks) is int and type(chunk) is int  # Static shapes of the scan.
  assert num_chunks * chunk >= k > (num_chunks - 1) * chunk  # No chunk only of padding.
  assert chunk <= min(sample_chunk or k, k)
  assert num_chunks * chunk - k < num_chunks  # At most one padded sample per chunk.
  with pytest.raises(ValueError, match="k must be >= 1"):
    objectives.sample_chunking(0, sample_chunk)


def _small_vae(likelihood="bernoulli"):
  config = tiny.get_config()
  config.hidden, config.latents, config.likelihood = 16, 3, likelihood
  module = vae_family.from_config(config, (4, 4, 1))
  # Jitted: run op by op, the initialisers compile dozens of small programs.
  return module, jax.jit(vae_family.init_params, static_argnums=0)(module, jax.random.key(3))


def test_the_iwae_bound_lies_above_the_elbo_of_the_same_samples():
  """Burda et al.'s theorem 1, by a margin an untrained model makes large: a bound
  that averaged log weights instead of weights would sit at the ELBO."""
  module, params = _small_vae()
  x = jax.random.uniform(jax.random.key(4), (5, 4, 4, 1))
  terms = vae_objective.importance_terms(module, params, x, jax.random.key(5), 64)
  assert float(jnp.min(terms["iwae"] + terms["recon"] + terms["kl"])) > 0.05


def test_the_elbo_defaults_to_one_sample():
  module, params = _small_vae()
  x = jax.random.uniform(jax.random.key(4), (3, 4, 4, 1))
  np.testing.assert_array_equal(vae_objective.elbo(module, params, x, jax.random.key(5)),
                                vae_objective.elbo(module, params, x, jax.random.key(5), 1))


def test_per_example_keys_follow_the_example_not_its_batch():
  module, params = _small_vae()
  x = jax.random.uniform(jax.random.key(4), (6, 4, 4, 1))
  key = jax.random.key(5)
  whole = vae_objective.iwae_bound(module, params, x, key, 4)
  keys = objectives.example_keys(key, jnp.arange(6))
  np.testing.assert_allclose(vae_objective.iwae_bound(module, params, x[3:], keys[3:], 4), whole[3:],
                             rtol=1e-5)
  with pytest.raises(ValueError, match="expected one key or 6 keys"):
    vae_objective.iwae_bound(module, params, x, keys[:2], 4)


# ----------------------------------------------------------------------------
# Models.


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
def test_the_negative_elbo_is_the_likelihoods_score_plus_the_analytic_kl(likelihood):
  module, params = _small_vae(likelihood)
  x = jnp.round(jax.random.uniform(jax.random.key(6), (3, 4, 4, 1)) * 255) / 255

  @jax.jit
  def both(params, x, key):  # One compiled program: eager ops compile one by one.
    terms = vae_objective.negative_elbo(module, params, x, key)
    outputs, mean, logvar = module.apply({"params": params}, x, key)
    log_lik = module.apply({"params": params}, x, outputs, method=module.log_likelihood)
    images = module.apply({"params": params}, outputs, method=module.mean_image)
    return terms, log_lik, objectives.gaussian_kl(mean, logvar), images

  terms, log_lik, kl, images = both(params, x, jax.random.key(7))
  np.testing.assert_allclose(terms["recon"], -log_lik, rtol=1e-6)
  np.testing.assert_allclose(terms["kl"], kl, rtol=1e-6)
  np.testing.assert_allclose(terms["loss"], terms["recon"] + terms["kl"], rtol=1e-6)
  assert images.shape == x.shape
  if likelihood != "gaussian":  # A Gaussian's mean is any real; figures clip it.
    assert 0 <= float(images.min()) and float(images.max()) <= 1


@pytest.mark.parametrize("features", [(4, 8), (2, 4, 8)])
def test_the_conv_vae_maps_images_to_their_own_shape(features):
  config = tiny.get_config()
  config.model, config.latents, config.conv_features = "conv", 3, features
  module = vae_family.from_config(config, (8, 16, 1))
  # Shapes only: jax.eval_shape traces without compiling.
  params = jax.eval_shape(lambda: vae_family.init_params(module, jax.random.key(0)))
  outputs, mean, logvar = jax.eval_shape(lambda p: module.apply(
      {"params": p}, jnp.zeros((2, 8, 16, 1)), jax.random.key(1)), params)
  assert outputs.shape == (2, 8, 16, 1) and mean.shape == logvar.shape == (2, 3)
  n, last = len(features), features[-1]
  smallest = (8 >> n) * (16 >> n) * last  # The feature map after n halvings.
  encoder = {name: p["kernel"].shape for name, p in params["encoder"].items()}
  channels = (1, *features)
  assert encoder == {**{f"conv{i}": (3, 3, channels[i], channels[i + 1]) for i in range(n)},
                     "stats": (smallest, 6)}
  decoder = {name: p["kernel"].shape for name, p in params["decoder"].items()}
  widths = (*reversed(features), 1)  # Back up to one channel, 3x3 each.
  assert decoder == {"project": (3, smallest),
                     **{f"deconv{i}": (3, 3, widths[i], widths[i + 1]) for i in range(n)}}


@pytest.mark.parametrize("field, value, message", [
    ("image_shape", (6, 8, 1), "divisible by 4; the images are 6x8"),
    ("decoder", "linear", "decoder=linear is an option of model=mlp only"),
    ("conv_features", (), "conv_features must be positive"),
    ("conv_features", (4, 0), "conv_features must be positive"),
])
def test_impossible_conv_models_are_refused(field, value, message):
  settings = vae_family.Settings(model="conv", conv_features=(4, 8), image_shape=(8, 8, 1))
  settings = dataclasses.replace(settings, **{field: value})
  with pytest.raises(UsageError, match=message):
    vae_family.check(settings, [])


@pytest.mark.parametrize("field, value", [("model", "resnet"), ("decoder", "deep"),
                                          ("likelihood", "poisson"), ("logistic_scale", "image"),
                                          ("compute_dtype", "float16")])
def test_unknown_model_choices_are_refused_naming_the_choices(field, value):
  config = tiny.get_config()
  config[field] = value
  with pytest.raises(UsageError, match=f"unknown {field} '{value}'; choose one of "):
    schema.check(config)


def test_the_conv_decoder_ends_without_a_relu():
  """Its last transposed convolution gives logits, which must be free to be negative."""
  config = tiny.get_config()
  config.model, config.latents, config.conv_features = "conv", 3, (2, 4)
  module = vae_family.from_config(config, (8, 8, 1))
  params = jax.jit(vae_family.init_params, static_argnums=0)(module, jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (16, 3))
  logits = jax.jit(lambda p, z: module.apply({"params": p}, z, method=module.decode))(params, z)
  assert float(logits.min()) < 0 < float(logits.max())


def test_the_config_builds_what_it_names():
  config = tiny.get_config()
  config.likelihood, config.decoder = "gaussian", "linear"
  module = vae_family.from_config(config, (4, 4, 1))
  assert isinstance(module.likelihood, likelihoods.Gaussian)
  assert module.decoder.hidden == 0 and module.encoder.dtype is None  # float32: flax's default.
  config.likelihood, config.compute_dtype = "logistic", "bfloat16"
  module = vae_family.from_config(config, (4, 4, 1))
  assert isinstance(module.likelihood, likelihoods.DiscretizedLogistic)
  assert module.encoder.dtype == jnp.bfloat16 and module.decoder.dtype == jnp.bfloat16
  config.likelihood = "bernoulli"
  assert isinstance(vae_family.from_config(config, (4, 4, 1)).likelihood, likelihoods.Bernoulli)


def test_the_family_settings_defaults_are_the_default_configs():
  """What a config.json without a field (an older run's) is read with."""
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  assert fields.settings_of(vae_family.Settings, default.get_config()) == vae_family.Settings()


def test_only_fields_that_fix_shapes_make_another_model():
  from vae_jax import schema  # pylint: disable=g-import-not-at-top
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  same = dict(config.to_dict(), obs_scale=0.3, compute_dtype="bfloat16", learning_rate=0.1,
              conv_features=[32, 64])  # As config.json gives it back: a list.
  assert schema.differences(config, same) == []
  other = dict(config.to_dict(), latents=5, likelihood="gaussian")
  assert schema.differences(config, other) == ["latents 20 vs 5",
                                               "likelihood 'bernoulli' vs 'gaussian'"]
  assert schema.differences({}, dict(num_models=3)) == ["num_models 1 vs 3"]  # Older files.


def test_layers_start_like_pytorchs_linear():
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels and biases: the tutorial's init."""
  module, params = _small_vae()  # 16 pixels, 16 hidden units, 3 latents.
  kernel = np.asarray(params["encoder"]["hidden"]["kernel"])
  assert kernel.shape == (16, 16)
  bound = 1 / math.sqrt(16)
  assert -bound <= kernel.min() < -0.8 * bound and 0.8 * bound < kernel.max() <= bound
  bias = np.asarray(params["decoder"]["out"]["bias"])  # Fan-in: 16 hidden units.
  assert 0.5 / math.sqrt(16) < np.abs(bias).max() <= 1 / math.sqrt(16)
  stats = np.asarray(params["encoder"]["stats"]["kernel"])  # Fan-in 16, 2 x 3 outputs.
  assert np.abs(stats).max() <= 1 / math.sqrt(16)


# ----------------------------------------------------------------------------
# The step and the epoch.


def _state(config, model, num_models=1, **family):
  return vae_training(config, model, num_models, **family)


def test_the_weighted_step_with_beta_1_and_no_free_bits_is_the_plain_step():
  config = tiny.get_config()
  config.hidden, config.latents = 16, 3
  model = vae_family.from_config(config, (4, 4, 1))
  state, plain, settings = _state(config, model)
  weighted = dataclasses.replace(plain, family=dataclasses.replace(plain.family, weighted=True))
  batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 4, 4, 1)), jnp.uint8)
  step = jax.jit(train_state.step_one, static_argnums=(0,))
  one, s = stacked.index(state, 0), stacked.index(settings, 0)
  a, metrics_a = step(plain, one, batch, jax.random.key(1), s)
  b, metrics_b = step(weighted, one, batch, jax.random.key(1), s)
  np.testing.assert_allclose(metrics_b["objective"], metrics_a["loss"], rtol=1e-6)
  # The two objectives round differently, and Adam's first step is lr * sign(gradient),
  # so compare each array as a whole (as test_parallel does): a wrongly weighted KL moves
  # whole arrays by far more than 1e-4.
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    assert np.linalg.norm(x - y) <= 1e-4 * np.linalg.norm(x)
  assert int(a.step) == 1 and bool(a.alive)


@pytest.mark.parametrize("field, value, weighted", [
    (None, None, False), ("beta", 4.0, True), ("beta", 0.0, True), ("kl_warmup_steps", 10, True),
    ("free_bits", 0.5, True), ("learning_rate", 0.01, False)])
def test_the_step_weighs_the_kl_exactly_when_a_setting_asks_for_it(field, value, weighted):
  """Otherwise it minimises the plain negative ELBO (and logs no train_objective)."""
  config = tiny.get_config()
  if field:
    config[field] = value
  models = [{n: config[n] for n in schema.sweepable()}]
  settings = fields.settings_of(vae_family.Settings, config)
  assert vae_family.GaussianVAE.build(settings, models).weighted is weighted


def test_the_kl_warm_up_starts_from_the_reconstruction_alone():
  config = tiny.get_config()
  config.hidden, config.latents, config.kl_warmup_steps = 16, 3, 10
  model = vae_family.from_config(config, (4, 4, 1))
  state, step, settings = _state(config, model)
  assert step.family.weighted
  batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 4, 4, 1)), jnp.uint8)
  _, metrics = jax.jit(train_state.step_one, static_argnums=(0,))(
      step, stacked.index(state, 0), batch, jax.random.key(1), stacked.index(settings, 0))
  # At step 0 the KL weighs nothing: the objective is the mean reconstruction term.
  x = batch.astype(jnp.float32) / 255
  z_key, _ = jax.random.split(jax.random.key(1))
  terms = vae_objective.negative_elbo(model, stacked.index(state, 0).params, x, z_key)
  np.testing.assert_allclose(metrics["objective"], jnp.mean(terms["recon"]), rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], jnp.mean(terms["loss"]), rtol=1e-5)


def test_an_epoch_draws_each_real_example_at_most_once_and_never_the_padding():
  """10 real examples padded to 12 (the zero padding for the devices): batches of 4
  hold 8 distinct real ones, in another order for another key."""
  images = np.arange(1, 13, dtype=np.uint8).reshape(12, 1, 1, 1)
  images[10:] = 0  # Padding.
  mesh = parallel.make_mesh()
  sharding = parallel.sharded(mesh, 1, 5)
  draw = lambda key: np.asarray(epoch.shuffle_batches(
      jnp.asarray(images), jax.random.key(key)[None], num_examples=10, batch_size=4,
      sharding=sharding)).ravel()
  first, second = draw(0), draw(1)
  for drawn in (first, second):
    assert len(drawn) == 8 and len(set(drawn)) == 8 and set(drawn) <= set(range(1, 11))
  assert list(first) != list(second)


def test_independent_orders_give_each_model_its_own_permutation():
  images = np.arange(1, 11, dtype=np.uint8).reshape(10, 1, 1, 1)
  mesh = parallel.make_mesh()
  keys = jnp.stack([jax.random.key(0), jax.random.key(1)])
  shuffle = lambda keys, ndim: np.asarray(epoch.shuffle_batches(
      jnp.asarray(images), keys, num_examples=10, batch_size=4,
      sharding=parallel.sharded(mesh, ndim - 4, ndim)))
  both = shuffle(keys, 6)
  assert both.shape == (2, 2, 4, 1, 1, 1)
  for i in range(2):
    np.testing.assert_array_equal(both[i], shuffle(keys[i:i + 1], 5))
  assert not np.array_equal(both[0], both[1])


def test_each_stacked_model_runs_exactly_its_own_single_model_loop():
  """Two models with their own seeds, data orders and step keys, in one program:
  model i ends as it would alone (up to vmap's batched matrix products)."""
  config = tiny.get_config()
  config.hidden, config.latents = 16, 3
  model = vae_family.from_config(config, (4, 4, 1))
  state, step, settings = _state(config, model, num_models=2)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.integers(0, 256, (2, 3, 8, 4, 4, 1)), jnp.uint8)  # (N, S, B, ...)
  step_keys = jnp.stack([jax.random.key(10), jax.random.key(11)])
  chunk = jax.jit(epoch.train_chunk, static_argnums=(0,), static_argnames="num_steps")
  stack, metrics = chunk(step, state, images, step_keys, settings, 0, num_steps=3)
  assert metrics["loss"].shape == (2, 3)
  for i in range(2):
    alone, alone_metrics = chunk(step, stacked.stack(stacked.index(state, i)),
                                 images[i], step_keys[i:i + 1], stacked.stack(
                                     stacked.index(settings, i)), 0, num_steps=3)
    np.testing.assert_allclose(metrics["loss"][i], alone_metrics["loss"][0], rtol=1e-5)
    for x, y in zip(jax.tree.leaves(stacked.index(stack.params, i)), jax.tree.leaves(alone.params)):
      assert np.linalg.norm(x - y[0]) <= 1e-4 * np.linalg.norm(x)

