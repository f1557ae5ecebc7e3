"""The IWAE bound and `python -m vae_jax.evaluate`: exactness on a linear-Gaussian VAE,
monotonicity in k, chunk-size invariance, active units, the CLI and the training hook."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_module
from vae_jax import evaluation
from vae_jax import likelihoods
from vae_jax import objectives
from vae_jax import reporting
from vae_jax import train
from vae_jax.configs import tiny
from vae_jax import networks
from vae_jax.families import vae as vae_family
import vae_jax
from vae_jax.families.vae import objective as vae_objective

EVAL_FIELDS = {"workdir", "dataset", "split", "binarize", "likelihood", "family", "step", "seed",
               "num_examples", "k", "elbo", "elbo_stderr", "recon", "kl", "nll", "nll_stderr",
               "bits_per_dim", "active_units", "latents", "unit_activity", "kl_per_dimension",
               "seconds", "conditional"}


def test_log_mean_exp_is_stable_and_exact():
  log_mean_exp = jax.jit(objectives.log_mean_exp, static_argnames="axis")
  a = np.array([[1e4, 1e4 - math.log(3), -np.inf], [-1e4, -1e4, -1e4]], np.float32)
  # Naively exp(1e4) overflows and exp(-1e4) underflows to 0 (log 0 = -inf).
  np.testing.assert_allclose(log_mean_exp(a, axis=1), [1e4 + math.log(4 / 9), -1e4], rtol=1e-7)
  assert log_mean_exp(np.full((2, 3), -np.inf, np.float32), axis=1).tolist() == [-np.inf] * 2
  small = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
  np.testing.assert_allclose(log_mean_exp(small, axis=0),
                             np.log(np.mean(np.exp(small), axis=0)), rtol=1e-6)


# ----------------------------------------------------------------------------
# A linear-Gaussian VAE, where log p(x) is known exactly.

D, L, OBS_SCALE = 5, 2, 0.6


class LinearGaussian:
  """p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I), and a VAE whose encoder is close to
  the true posterior but deliberately imperfect: its mean is shifted by half a
  posterior standard deviation and its variance, the same in every direction,
  is 1.5 times the posterior's largest, ignoring the posterior's correlation.
  A wider q keeps the importance weights bounded (so the IWAE estimate
  converges at the 1/sqrt(k) rate), while the ELBO misses log p(x) by ~2.6 nats.
  """

  def __init__(self, seed: int = 0, num_x: int = 8):
    rng = np.random.default_rng(seed)
    self.w, self.b = rng.normal(size=(D, L)), rng.normal(size=D)
    self.posterior_cov = np.linalg.inv(np.eye(L) + self.w.T @ self.w / OBS_SCALE**2)
    self.gain = self.posterior_cov @ self.w.T / OBS_SCALE**2  # E[z|x] = gain (x - b).
    self.q_shift = 0.5 * np.sqrt(np.diag(self.posterior_cov))
    self.q_var = np.full(L, 1.5 * np.linalg.eigvalsh(self.posterior_cov).max())
    self.x = (rng.normal(size=(num_x, L)) @ self.w.T + self.b
              + OBS_SCALE * rng.normal(size=(num_x, D)))
    shape = (1, 1, D)  # x as a 1 x 1 image of D channels.
    self.model = vae_jax.VAE(networks.MLPEncoder(2 * D, L), networks.MLPDecoder(0, shape),
                               latents=L, image_shape=shape,
                               likelihood=likelihoods.Gaussian(OBS_SCALE))

  def params(self) -> dict:
    """float64 parameters (call under jax.enable_x64). The encoder's ReLU layer
    computes [relu(x), relu(-x)], which the next layer turns back into x, so the
    encoder mean is exactly linear in x."""
    f = lambda a: jnp.asarray(a, jnp.float64)
    stats_kernel = np.hstack([np.vstack([self.gain.T, -self.gain.T]), np.zeros((2 * D, L))])
    stats_bias = np.concatenate([self.q_shift - self.gain @ self.b, np.log(self.q_var)])
    return {"encoder": {"hidden": {"kernel": f(np.hstack([np.eye(D), -np.eye(D)])),
                                   "bias": f(np.zeros(2 * D))},
                        "stats": {"kernel": f(stats_kernel), "bias": f(stats_bias)}},
            "decoder": {"out": {"kernel": f(self.w.T), "bias": f(self.b)}}}

  def log_px(self) -> np.ndarray:
    """log N(x; b, W W^T + s^2 I) per x, float64."""
    cov = self.w @ self.w.T + OBS_SCALE**2 * np.eye(D)
    d = self.x - self.b
    quad = np.einsum("nd,nd->n", d, np.linalg.solve(cov, d.T).T)
    return -0.5 * (quad + np.linalg.slogdet(cov)[1] + D * math.log(2 * math.pi))

  def elbo(self) -> np.ndarray:
    """The exact ELBO of the encoder above: E_q log p(x|z) - KL(q || p(z))."""
    mean = (self.x - self.b) @ self.gain.T + self.q_shift
    residual = self.x - mean @ self.w.T - self.b
    expected_sq = np.sum(residual**2, axis=1) + np.trace(self.w @ np.diag(self.q_var) @ self.w.T)
    log_lik = -0.5 * expected_sq / OBS_SCALE**2 - 0.5 * D * math.log(2 * math.pi * OBS_SCALE**2)
    kl = 0.5 * np.sum(self.q_var + mean**2 - 1 - np.log(self.q_var), axis=1)
    return log_lik - kl


@pytest.fixture(scope="module")
def linear_gaussian():
  return LinearGaussian()


@pytest.mark.slow
def test_iwae_converges_to_the_exact_log_likelihood(linear_gaussian):
  lg = linear_gaussian
  exact = lg.log_px()
  with jax.enable_x64():
    params, x = lg.params(), jnp.asarray(lg.x).reshape(-1, 1, 1, D)
    iwae = np.asarray(vae_objective.iwae_bound(lg.model, params, x, jax.random.key(0), 20_000, 2_000))
    elbo = np.asarray(vae_objective.elbo(lg.model, params, x, jax.random.key(1), 20_000))
  # Tolerance: with bounded weights, log p_k(x) has bias -V/(2k) and standard
  # deviation sqrt(V/k), V = Var(w)/E[w]^2. For this model V ~ 1.3 (measured:
  # the k = 256 estimate varies by 0.07 nats across seeds), so at k = 20,000
  # the bias is 3e-5 nats and the standard deviation 0.008: 0.05 is 6 of them.
  # It is 50 times smaller than the ELBO gap, so a wrong weight (a missing log q,
  # a log k off) or a wrong sample could not pass.
  np.testing.assert_allclose(iwae, exact, atol=0.05)
  # The 20,000-sample ELBO agrees with its closed form (Monte Carlo error ~0.01 nats).
  np.testing.assert_allclose(elbo, lg.elbo(), atol=0.05)
  assert np.all(lg.elbo() < exact - 2.0)


@pytest.mark.slow
def test_bound_rises_with_k_on_average(linear_gaussian):
  lg = linear_gaussian
  replicas = 400  # Each x 400 times, each copy with its own key: 400 seeds.
  with jax.enable_x64():
    params = lg.params()
    x = jnp.repeat(jnp.asarray(lg.x), replicas, axis=0).reshape(-1, 1, 1, D)
    bounds = {k: np.asarray(vae_objective.iwae_bound(lg.model, params, x, jax.random.key(2), k))
              for k in (1, 8, 64)}
  exact = np.repeat(lg.log_px(), replicas)
  ks = sorted(bounds)
  for small, large in zip(ks, ks[1:]):
    # Sample s of an example is the same draw for every k, so the paired
    # difference has a small standard error; the rise is >= 9 of them here.
    rise = bounds[large] - bounds[small]
    assert rise.mean() > 3 * rise.std() / math.sqrt(len(rise)), (small, large)
  for k in ks:  # A lower bound on log p(x): below it on average.
    gap = bounds[k] - exact
    assert gap.mean() < 3 * gap.std() / math.sqrt(len(gap)), k


DEAD = [1, 3]


@pytest.fixture(scope="module")
def dead_latent_results():
  """A VAE with latents 1 and 3 dead, evaluated twice with different chunk sizes."""
  key = jax.random.key(0)
  config = tiny.get_config()
  config.hidden, config.latents = 32, 5
  model = vae_family.from_config(config, (8, 8, 1))
  params = vae_family.init_params(model, key)
  stats = params["encoder"]["stats"]
  kernel = 3.0 * stats["kernel"]  # Means that vary well above the 0.01 threshold...
  kernel = kernel.at[:, DEAD].set(0.0)  # ...except these, which ignore x.
  params = {**params, "encoder": {**params["encoder"], "stats": {**stats, "kernel": kernel}}}
  trained = vae_jax.TrainedModel(vae_family.GaussianVAE(model), params, None, 0)
  images = np.asarray(jax.random.randint(key, (50, 8, 8, 1), 0, 256), np.uint8)
  run = lambda example_chunk, sample_chunk: evaluation.evaluate(
      trained, images, k=7, key=key, sample_chunk=sample_chunk, example_chunk=example_chunk,
      progress=False)
  # Whole: one call, one sample chunk. Chunked: 4 calls of 16 (14 padded
  # examples), 3 sample chunks of 3 (2 padded samples); streamed: the same chunks read
  # from the host one at a time.
  streamed = evaluation.evaluate(trained, images, k=7, key=key, sample_chunk=3,
                                 example_chunk=16, progress=False, streamed=True)
  return run(50, 7), run(16, 3), streamed


@pytest.mark.slow
def test_results_do_not_depend_on_chunk_sizes(dead_latent_results):
  """Equal up to float32 rounding. Each example's statistics come from programs of
  other shapes (16 or 50 examples, 3 or 7 samples at once), which may sum in another
  order on another CPU: they agree to a few float32 ulps of their size (~46 nats,
  ulp 4e-6). Their means then agree to ~3e-7 relative (seen: 3e-9 on an AVX-512
  CPU); we allow 1e-5. A standard error measures a spread of ~0.8 nats over values
  of 46, so the same ulps move it by up to ~2e-5 relative (seen: 5e-7); we allow
  2e-4. A real mistake moves them more: one example left out or counted twice,
  1.4e-4 to 2e-2 for the means and 2e-3 to 6e-3 for the standard errors; other
  draws (keys per chunk instead of per example), 5e-4 and 4e-2.
  """
  whole, chunked, _ = dead_latent_results
  assert whole["num_examples"] == chunked["num_examples"] == 50
  for name in ("elbo", "nll", "recon", "kl", "unit_activity", "kl_per_dimension"):
    np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-5, atol=1e-9)
  for name in ("elbo_stderr", "nll_stderr"):
    np.testing.assert_allclose(chunked[name], whole[name], rtol=2e-4)


def test_streamed_examples_give_the_placed_chunks_results_bit_for_bit(dead_latent_results):
  _, chunked, streamed = dead_latent_results
  untimed = lambda r: {k: v for k, v in r.items() if k != "seconds"}
  assert untimed(streamed) == untimed(chunked)


def test_active_units_ignore_dead_latents(dead_latent_results):
  result, _, _ = dead_latent_results
  activity = np.asarray(result["unit_activity"])
  assert result["active_units"] == 3 and result["latents"] == 5
  assert np.all(activity[DEAD] < 1e-10) and np.all(np.delete(activity, DEAD) > 0.01)
  assert len(result["kl_per_dimension"]) == 5
  np.testing.assert_allclose(sum(result["kl_per_dimension"]), result["kl"], rtol=1e-5)


@pytest.mark.slow
def test_cli_writes_eval_json(trained_workdir, tmp_path):
  out = tmp_path / "eval.json"
  result = run_module("vae_jax.evaluate", f"--workdir={trained_workdir}", "--k=8",
                      f"--out={out}")
  assert result.returncode == 0, result.stderr
  record = json.loads(out.read_text())
  assert EVAL_FIELDS <= record.keys()
  assert record["dataset"] == "mnist_sample" and record["split"] == "test"
  assert record["k"] == 8 and record["step"] == 250 and record["num_examples"] > 1000
  # The k-sample bound is tighter than the ELBO; both are near the training log's loss.
  assert 0 < -record["elbo"] - record["nll"] < 20
  last = reporting.read_metrics(trained_workdir)[-1]
  assert abs(-record["elbo"] - last["test_loss"]) < 2.0
  np.testing.assert_allclose(record["bits_per_dim"], record["nll"] / (784 * math.log(2)))
  assert f"wrote {out}" in result.stdout and "NLL (IWAE)" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (("--k=0",), "--k"),
    (("--split=validation",), "--split"),
    (("--step=7",), "no checkpoint at step 7"),
])
def test_cli_bad_input_exits_2(trained_workdir, args, message):
  result = run_module("vae_jax.evaluate", f"--workdir={trained_workdir}", *args)
  assert result.returncode == 2
  assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_without_a_checkpoint_exits_2(tmp_path):
  result = run_module("vae_jax.evaluate", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "no trained model" in result.stderr


@pytest.mark.slow
def test_training_logs_the_iwae_bound(tmp_path):
  config = tiny.get_config()
  config.num_epochs, config.eval_iwae_every, config.eval_iwae_k = 3, 2, 4
  train.train_and_evaluate(config, tmp_path, verbose=False)
  records = reporting.read_metrics(tmp_path)
  # Every second epoch, and the last one.
  assert ["test_iwae_nll" in r for r in records] == [False, True, True]
  for r in records[1:]:
    assert r["iwae_k"] == 4 and 0 < r["test_iwae_nll"] < r["test_loss"]
  events = list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
  assert any(b"test_iwae_nll" in path.read_bytes() for path in events)


def test_labels_of_a_conditional_evaluation_are_checked_in_words():
  from vae_jax.errors import UsageError  # pylint: disable=g-import-not-at-top
  images = np.zeros((1, 2, 2, 1), np.uint8)
  with pytest.raises(UsageError, match=r"^labels must lie in 0 \.\. 9; got 11$"):
    evaluation._with_labels(images, np.array([11]), 10)
  with pytest.raises(UsageError, match=r"^expected 1 integer label, one per image; got int64 "):
    evaluation._with_labels(images, np.array([1, 2]), 10)
