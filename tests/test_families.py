"""The model families a config names, trained end to end on the tiny config: a learned
mixture prior, the VampPrior and the IAF posterior (their maths: test_priors.py,
test_posteriors.py, test_estimators.py)."""
import jax
import pytest

import vae_jax
from vae_jax import reporting
from vae_jax import schema
from vae_jax import sweep
from vae_jax import train
from vae_jax.errors import UsageError
from vae_jax.families import vae as vae_family

FAMILIES = {
    "mog": {"prior": "mog", "prior_components": 5},
    "vamp": {"prior": "vamp", "prior_components": 10},
    "iaf": {"posterior": "iaf", "flow_steps": 2, "flow_hidden": 16},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_trains_evaluates_samples_and_reloads(tiny_config, tmp_path, name):
  tiny_config.update(num_epochs=1, eval_iwae_every=1, eval_iwae_k=4, batch_size=256,
                     **FAMILIES[name])
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  row = reporting.read_metrics(tmp_path)[-1]
  # No closed-form KL: test_kl is the estimate log q - log p, and recon + kl the ELBO.
  assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"], rel=1e-6)
  assert row["test_kl"] > 0 and row["test_iwae_nll"] <= row["test_loss"] + 1e-3
  model = vae_jax.load(tmp_path)  # Rebuilt from config.json alone.
  part = "prior" if "prior" in FAMILIES[name] else "posterior"
  assert part in model.params
  assert vae_jax.sample(model, jax.random.key(0), 3).shape == (3, 28, 28)
  result = vae_jax.evaluate(model, vae_jax.data.load(model.config).test.images[:20], k=8,
                            key=jax.random.key(0), progress=False)
  assert result["nll"] <= -result["elbo"] + 1e-3


def test_each_family_is_one_registration():
  settings = vae_family.Settings(prior="vamp", prior_components=3, posterior="iaf",
                                 flow_steps=1, flow_hidden=8)
  vae = vae_family.build_module(settings)
  assert type(vae.prior).__name__ == "VampPrior" and type(vae.posterior).__name__ == "IAF"
  assert set(vae_family.PRIORS) == set(vae_jax.schema.choices("prior"))
  assert set(vae_family.POSTERIORS) == set(vae_jax.schema.choices("posterior"))


@pytest.mark.slow
def test_free_bits_need_a_closed_form_kl(tiny_config, tmp_path):
  tiny_config.update(prior="mog", free_bits=0.5)
  with pytest.raises(UsageError, match="free_bits needs the KL per latent in closed form"):
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)


# ----------------------------------------------------------------------------
# The objective: --config.objective, train_samples, gradient_estimator.


def _tiny_vae_state(config, key):
  module = vae_family.from_config(config, (28, 28, 1))
  return module, vae_family.init_params(module, key)


@pytest.mark.slow
def test_the_iwae_objective_is_the_bound_from_first_principles(tiny_config, key):
  """The step's loss with objective=iwae, K samples: -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)
  computed here from the encoder, the decoder and the three densities by hand."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vae_jax import estimators, objectives  # pylint: disable=g-import-not-at-top
  module, params = _tiny_vae_state(tiny_config, key)
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  draw_key, k = jax.random.key(2), 7
  terms = estimators.vae_terms(module, x, draw_key, k)
  q, p = estimators.split_params(params, False)
  ours = estimators.iwae_loss(*terms(q, p, False))
  mean, logvar = module.apply({"params": params}, x, method=module.encode)
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(draw_key, (k, *mean.shape))
  logits = module.apply({"params": params}, z.reshape(-1, z.shape[-1]), method=module.decode)
  log_px = -objectives.binary_cross_entropy_with_logits(
      logits.reshape(k, 6, 28, 28, 1), x).sum(axis=(-3, -2, -1))
  log_w = (log_px + objectives.gaussian_log_density(z, 0.0, 0.0)
           - objectives.gaussian_log_density(z, mean, logvar))
  np.testing.assert_allclose(ours, -objectives.log_mean_exp(log_w, axis=0), rtol=1e-5)


@pytest.mark.slow
def test_dregs_decoder_gradient_is_iwaes(tiny_config, key):
  """DReG changes the inference network's gradient only (Tucker et al. 2018)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vae_jax import estimators  # pylint: disable=g-import-not-at-top
  module, params = _tiny_vae_state(tiny_config, key)
  x = jax.random.uniform(jax.random.key(1), (6, 28, 28, 1))
  terms = estimators.vae_terms(module, x, jax.random.key(2), 5)
  q, p = estimators.split_params(params, False)
  grad = lambda name: jax.grad(lambda p: estimators.surrogate(name, terms, q, p).mean())(p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               grad("dreg")["decoder"], grad("iwae")["decoder"])


@pytest.mark.slow
@pytest.mark.parametrize("fields, says", [
    ({"objective": "elbo", "gradient_estimator": "dreg"}, "dreg goes with objective=iwae"),
    ({"objective": "iwae", "gradient_estimator": "stl"}, "stl goes with objective=elbo"),
    ({"objective": "iwae", "train_samples": 5, "beta": 2.0}, "they are not defined"),
    ({"train_samples": 0}, "train_samples must be >= 1"),
])
def test_objectives_that_do_not_combine_are_refused_in_one_line(tiny_config, tmp_path, fields,
                                                                says):
  tiny_config.update(**fields)
  with pytest.raises(UsageError, match=says):
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  assert not tmp_path.joinpath("checkpoints").exists()


@pytest.mark.slow
def test_iwae_training_with_dreg_runs_and_reports_the_bound(tiny_config, tmp_path):
  from vae_jax.configs import default  # pylint: disable=g-import-not-at-top
  from vae_jax import fields  # pylint: disable=g-import-not-at-top
  settings = fields.settings_of(vae_family.Settings, default.get_config())
  assert vae_family.GaussianVAE.build(settings, [dict(learning_rate=1e-3, beta=1.0,
                                                      kl_warmup_steps=0, free_bits=0.0)],
                                      ).estimator is None  # The seed's: the one-sample ELBO.
  tiny_config.update(num_epochs=1, objective="iwae", train_samples=5, gradient_estimator="dreg",
                     eval_iwae_every=1)
  train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  row = reporting.read_metrics(tmp_path)[-1]
  assert row["train_loss"] > 0 and row["test_iwae_nll"] <= row["test_loss"] + 1e-3


@pytest.mark.parametrize("fields, says", [
    ({}, ("family vae, prior N(0,I), posterior diagonal Gaussian, objective elbo K=1, "
          "estimator reparam")),
    ({"prior": "vamp", "prior_components": 50, "posterior": "iaf", "objective": "iwae",
      "train_samples": 5, "gradient_estimator": "dreg"},
     "family vae, prior VampPrior(K=50), posterior IAF(T=2), objective iwae K=5, estimator dreg"),
    ({"prior": "mog", "train_samples": 3, "gradient_estimator": "stl"},
     ("family vae, prior MixtureOfGaussians(K=500), posterior diagonal Gaussian, objective "
      "elbo K=3, estimator stl")),
    ({"stochastic_layers": 2, "layer_latents": [4, 2]},
     ("family vae, prior top-down over the layers, posterior top-down (ladder), objective "
      "elbo K=1, estimator reparam")),
])
def test_the_settings_a_run_names_first(tiny_config, fields, says):
  """What the first line of a run says after the networks: every setting of the model and
  the objective, in short."""
  tiny_config.update(fields)
  tiny_config.image_shape = (28, 28, 1)
  family = schema.build_family(tiny_config, sweep.model_settings(tiny_config))
  assert family.settings_text() == says


@pytest.mark.slow
def test_a_run_says_what_it_does_and_a_rerun_where_it_resumes(tiny_config, tmp_path, capsys):
  tiny_config.train_subset, tiny_config.num_epochs = 640, 1  # 10 steps per epoch.
  train.train_and_evaluate(tiny_config, tmp_path)
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == f"reading the data (mnist_sample) for {tmp_path} ..."
  assert lines[1] == "compiling the training step (640 training images of mnist_sample read) ..."
  assert ("(Bernoulli, 102,040 parameters); family vae, prior N(0,I), posterior diagonal "
          "Gaussian, objective elbo K=1, estimator reparam; 640 training images of mnist_sample "
          "(on the device), 10 steps of 64 per epoch") in lines[2]
  tiny_config.num_epochs = 2
  train.train_and_evaluate(tiny_config, tmp_path)
  assert capsys.readouterr().out.splitlines()[1] == "resuming from step 10 (epoch 2 of 2)"


def test_more_vampprior_components_than_training_images_is_a_warning(tiny_config):
  tiny_config.update({"prior": "vamp", "prior_components": 100, "image_shape": (28, 28, 1)})
  family = schema.build_family(tiny_config, sweep.model_settings(tiny_config))
  assert family.data_warnings(100) == []
  assert family.data_warnings(99) == [(
      "prior_components=100 exceeds the 99 training images: every step encodes each "
      "pseudo-input, so an epoch is that much slower for no gain; use fewer "
      "--config.prior_components")]
  tiny_config.prior = "mog"
  assert schema.build_family(tiny_config, sweep.model_settings(tiny_config)).data_warnings(9) == []


@pytest.mark.slow
def test_the_sizes_of_one_stochastic_layer_are_counted_in_words(tiny_config, tmp_path):
  tiny_config.layer_latents = [4, 2]
  with pytest.raises(UsageError, match=r"layer_latents must give 1 positive size, the first"):
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
