"""The prior stage of the discrete families (`vae_jax/families/discrete/prior.py`) and
`vae-jax train-prior`: on a tiny FSQ model whose every code grid can be enumerated
(levels 2,2: K = 4 codes, a 1 x 2 grid: 16 grids), the two-stage bound
-log p(x | z_q(x)) - log p_prior(z_q(x)) against a computation by hand, against the
exact -log p(x) of the two-stage model by enumeration, and the refusals. The prior
network's own maths: tests/test_code_prior.py."""
import itertools
import math

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

import vae_jax
from conftest import run_module
from vae_jax import data
from vae_jax import reporting
from vae_jax import train
from vae_jax.errors import UsageError
from vae_jax.families.discrete import code_prior
from vae_jax.families.discrete import prior as prior_lib

LEVELS = (2, 2)
PRIOR = {"num_epochs": 1, "prior_width": 8, "prior_layers": 1, "prior_heads": 2}


@pytest.fixture(scope="module")
def fsq_workdir(tmp_path_factory):
  """An FSQ model (1 epoch on 300 digits) and its prior (1 epoch) in DIR and DIR/prior."""
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  x = data.load_idx_dir(data.SAMPLE_DIR).test.images[:400, ..., 0]
  folder = tmp_path_factory.mktemp("fsq")
  np.savez(folder / "digits.npz", x_train=x[:300], x_test=x[300:])
  config = tiny.get_config()
  config.update(data_dir=str(folder / "digits.npz"), family="fsq", fsq_levels=LEVELS,
                code_positions=2, hidden=16, num_epochs=1, batch_size=50, eval_batch_size=100,
                chunks_per_epoch=1)
  workdir = folder / "run"
  train.train_and_evaluate(config, workdir, verbose=False)
  train.train_stage(workdir, "prior", PRIOR, verbose=False)
  return workdir


def bernoulli_log_prob(x, logits):
  """log p(x | logits) summed over the pixels, in float64 numpy."""
  x, logits = np.asarray(x, np.float64), np.asarray(logits, np.float64)
  return np.sum(x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits), axis=(1, 2, 3))


@pytest.mark.slow
def test_two_stage_bound_by_hand_and_against_the_exact_likelihood(fsq_workdir):
  model = vae_jax.load(fsq_workdir / "prior")
  family, frozen = model.family, model.variables[prior_lib.FROZEN]
  images_u8 = data.load(model.config).test.images
  x = np.asarray(data.to_unit_interval(images_u8))
  codes = np.asarray(family.encode_codes(model.variables, x))  # (100, 1, 2)
  grids = np.array(list(itertools.product(range(4), repeat=2)), np.int32).reshape(16, 1, 2)

  # The prior by hand: each position's log-softmax of the logits, picked and summed.
  logits = np.asarray(family.prior.apply({"params": model.params}, grids,
                                         method=code_prior.CodePrior.logits), np.float64)
  log_conditionals = logits - logsumexp(logits, axis=-1, keepdims=True)
  log_prior = np.take_along_axis(log_conditionals, grids[..., None], -1).sum(axis=(1, 2, 3))
  assert logsumexp(log_prior) == pytest.approx(0.0, abs=1e-5)  # A distribution over grids.
  # p(x | c) for every grid c: the decoder's Bernoulli logits of the FSQ codes of c.
  decoder_logits = family.parent.module.apply(
      frozen, grids, method=lambda m, c: m.decoder(m.quantizer.embed(c)))
  log_px_given = np.stack([bernoulli_log_prob(x, np.broadcast_to(l, x.shape))
                           for l in np.asarray(decoder_logits)], axis=1)  # (100, 16)
  index = codes[:, 0, 0] * 4 + codes[:, 0, 1]  # The row of each image's grid in `grids`.
  bound = -(log_px_given[np.arange(100), index] + log_prior[index])
  exact = -logsumexp(log_px_given + log_prior, axis=1)  # -log sum_c p(c) p(x | c).

  result = vae_jax.evaluate(model, images_u8, k=1, key=jax.random.key(0), progress=False)
  assert result["k"] == 1 and result["num_examples"] == 100
  assert result["nll"] == pytest.approx(bound.mean(), rel=1e-5)
  assert result["recon"] + result["prior_nll"] == pytest.approx(result["nll"], rel=1e-6)
  assert result["prior_nll"] == pytest.approx(-log_prior[index].mean(), rel=1e-5)
  assert result["bits_per_dim"] == pytest.approx(result["nll"] / (784 * math.log(2)), rel=1e-9)
  assert result["uniform_prior_nll"] == pytest.approx(result["recon"] + 2 * math.log(4), rel=1e-9)
  assert np.all(exact <= bound + 1e-4)  # A bound on the two-stage model's -log p(x) ...
  gap = bound - exact  # ... whose gap is what the other 15 grids contribute.
  others = log_px_given + log_prior - (-bound)[:, None]
  others[np.arange(100), index] = -np.inf
  np.testing.assert_allclose(gap, np.log1p(np.exp(logsumexp(others, axis=1))), atol=1e-3)
  # More importance samples change nothing: the encoder is deterministic.
  again = vae_jax.evaluate(model, images_u8, k=8, key=jax.random.key(1), progress=False)
  assert again["nll"] == result["nll"] and again["k"] == 1
  # The epoch's test record is the same bound on the same test set.
  row = reporting.read_metrics(fsq_workdir / "prior")[-1]
  assert row["test_nll_bound"] == pytest.approx(result["nll"], rel=1e-5)
  assert row["test_loss"] == pytest.approx(result["prior_nll"], rel=1e-5)


@pytest.mark.slow
def test_samples_are_decoded_prior_draws(fsq_workdir):
  model = vae_jax.load(fsq_workdir / "prior")
  key = jax.random.key(3)
  pictures = vae_jax.sample(model, key, 5, temperature=0.5)
  codes = model.family.sample_codes(model.variables, key, 5, 0.5)
  assert codes.shape == (5, 1, 2) and 0 <= int(codes.min()) and int(codes.max()) < 4
  np.testing.assert_allclose(pictures, vae_jax.decode(model, codes), atol=1e-6)
  np.testing.assert_array_equal(pictures, vae_jax.sample(model, key, 5, temperature=0.5))


@pytest.mark.slow
def test_prior_stage_refusals(fsq_workdir, tmp_path):
  with pytest.raises(UsageError, match="no trained model in .* train the first stage"):
    train.train_stage(tmp_path / "empty", "prior", PRIOR, verbose=False)
  with pytest.raises(UsageError, match="code_positions fixes the shapes"):
    train.train_stage(fsq_workdir, "prior", {"code_positions": 3}, verbose=False)
  with pytest.raises(UsageError, match="prior_width=9 is not divisible by prior_heads=2"):
    train.train_stage(fsq_workdir, "prior", {**PRIOR, "prior_width": 9}, verbose=False)
  first = vae_jax.load(fsq_workdir)
  with pytest.raises(UsageError, match="only with its prior over codes: .*train-prior"):
    vae_jax.evaluate(first, np.zeros((2, 28, 28, 1), np.uint8), k=1, key=jax.random.key(0))
  # (The first stage trained further: tests/test_family_interface.py, for any stage.)


def test_train_prior_takes_overrides_not_a_config_nor_a_sweep(capsys):
  from vae_jax.commands import train_prior  # pylint: disable=g-import-not-at-top
  assert train_prior.given_fields(["--workdir=w", "--config.num_epochs=3", "--config.prior_width",
                                   "8"]) == ["num_epochs", "prior_width"]
  for arg, says in (("--config=tiny", "train-prior takes --config.FIELD=VALUE overrides"),
                    ("--config.sweep.seed=0,1", "the models of a later stage are those of")):
    with pytest.raises(SystemExit) as exit_:
      train_prior.given_fields([arg])
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("command, args, says", [
    ("train-prior", ("--config.num_epochs=1",), "family vae has no training stage 'prior'"),
    ("explore", (), "the explorer needs continuous latent codes, which family fsq does not have"),
])
def test_commands_refuse_in_one_line(fsq_workdir, request, command, args, says):
  vae = "family vae" in says  # The session's tiny Gaussian VAE (conftest.trained_workdir).
  workdir = request.getfixturevalue("trained_workdir") if vae else fsq_workdir
  result = run_module("vae_jax", command, f"--workdir={workdir}", *args)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), lines
