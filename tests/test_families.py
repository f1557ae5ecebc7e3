"""The model families a config names, trained end to end on the tiny config: a learned
mixture prior, the VampPrior and the IAF posterior (their maths: test_priors.py,
test_posteriors.py, test_estimators.py)."""
import jax
import pytest

import vae_jax
from vae_jax import model as model_lib
from vae_jax import reporting
from vae_jax import train
from vae_jax.errors import UsageError

FAMILIES = {
    "mog": {"prior": "mog", "prior_components": 5},
    "vamp": {"prior": "vamp", "prior_components": 10},
    "iaf": {"posterior": "iaf", "flow_steps": 2, "flow_hidden": 16},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_trains_evaluates_samples_and_reloads(tiny_config, tmp_path, name):
  tiny_config.update(num_epochs=1, eval_iwae_every=1, **FAMILIES[name])
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
  arch = model_lib.Architecture(prior="vamp", prior_components=3, posterior="iaf",
                                flow_steps=1, flow_hidden=8)
  vae = model_lib.from_config(arch.__dict__ | {"image_shape": (28, 28, 1)}, (28, 28, 1))
  assert type(vae.prior).__name__ == "VampPrior" and type(vae.posterior).__name__ == "IAF"
  assert set(model_lib.PRIORS) == set(vae_jax.schema.choices("prior"))
  assert set(model_lib.POSTERIORS) == set(vae_jax.schema.choices("posterior"))


def test_free_bits_need_a_closed_form_kl(tiny_config, tmp_path):
  tiny_config.update(prior="mog", free_bits=0.5)
  with pytest.raises(UsageError, match="free_bits needs the KL per latent in closed form"):
    train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
