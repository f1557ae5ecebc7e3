"""A tiny VAE with a pluggable prior and posterior, where log p(x) is computable by quadrature.

Four Bernoulli pixels, 2 latents, a fixed random decoder and an encoder whose
q is kept wide (variance 1.1 to 2.0, means within +-0.5): then p(z) / q(z|x)
stays bounded or square-integrable for every prior here, the importance
weights have finite variance, and the IWAE estimate converges at the
1 / sqrt(k) rate its standard error assumes.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vae_jax import likelihoods
from vae_jax.families.vae import posteriors
from vae_jax.families.vae import priors

IMAGE = (2, 2, 1)
L = 2
X = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0]], np.float32).reshape(-1, *IMAGE)


class TinyEncoder(nn.Module):
  """x (..., H, W, C) -> mean in (-0.5, 0.5), logvar in log_var +- 0.3, each (..., L)."""

  log_var: float = math.log(1.5)

  @nn.compact
  def __call__(self, x):
    a = nn.Dense(2 * L, kernel_init=nn.initializers.normal(1.0))(x.reshape(*x.shape[:-3], -1))
    mean, b = jnp.split(a, 2, axis=-1)
    return 0.5 * jnp.tanh(mean), self.log_var + 0.3 * jnp.tanh(b)


class TinyDecoder(nn.Module):
  """z (..., L) -> logits (..., H, W, C), one tanh layer; weights large enough that
  p(x|z) varies with z by a few nats (so the posterior is not the prior)."""

  @nn.compact
  def __call__(self, z):
    h = jnp.tanh(nn.Dense(8, kernel_init=nn.initializers.normal(1.5))(z))
    out = nn.Dense(math.prod(IMAGE), kernel_init=nn.initializers.normal(1.5))(h)
    return out.reshape(*out.shape[:-1], *IMAGE)


class Tiny(nn.Module):
  """The VAE of the integration to come: encoder, decoder, prior, posterior submodules."""

  prior: nn.Module
  posterior: nn.Module
  encoder_log_var: float = math.log(1.5)

  def setup(self):
    self.encoder = TinyEncoder(self.encoder_log_var)
    self.decoder = TinyDecoder()
    self.likelihood = likelihoods.Bernoulli()

  def encode(self, x):
    return self.encoder(x)

  def log_likelihood(self, x, z):
    """log p(x|z): x (..., H, W, C), z (..., L) broadcasting -> (...)."""
    return self.likelihood.log_prob(x, self.decoder(z))

  def log_prior(self, z):
    return self.prior.log_prob(z, self.encode)

  def log_joint(self, x, z):
    return self.log_likelihood(x, z) + self.log_prior(z)

  def draw(self, key, x, k: int):
    """k draws per example: z (k, B, L) and log q(z|x) (k, B)."""
    mean, logvar = self.encode(x)
    mean, logvar = (jnp.broadcast_to(a, (k, *a.shape)) for a in (mean, logvar))
    return self.posterior.sample(key, mean, logvar)

  def log_posterior(self, x, z):
    """log q(z|x) at given z (k, B, L) -> (k, B), through the posterior's log_prob."""
    return self.posterior.log_prob(z, *self.encode(x))

  def terms(self, key, x, k: int):
    """(log p(x|z), log p(z), log q(z|x)), each (k, B)."""
    z, log_q = self.draw(key, x, k)
    return self.log_likelihood(x, z), self.log_prior(z), log_q

  def initialize(self, x, key):
    return self.terms(key, x, 1)


PRIORS = {"normal": lambda: priors.StandardNormal(L),
          "mog": lambda: priors.MixtureOfGaussians(L, 3),
          "vamp": lambda: priors.VampPrior(L, 3, IMAGE)}
# Kingma et al.'s gate bias of 2 (sigmoid 0.88): a flow that contracts z, compensated by
# a wider encoder (variance 2.4 instead of 1.5) so that q stays wider than the posterior.
POSTERIORS = {"gaussian": (posteriors.DiagonalGaussian, math.log(1.5)),
              "iaf": (lambda: posteriors.IAF(L, steps=2, hidden=8, gate_bias=2.0), math.log(2.4))}


def apply(model, method, static_argnums=()):
  """`model.apply` of `method` as a jitted function of (params, *args): one compilation
  instead of one per operation (the tests' time went to eager dispatch)."""
  run = lambda params, *args: model.apply({"params": params}, *args, method=method)
  return jax.jit(run, static_argnums=static_argnums)


def perturb(params, key, scale: float, gate_scale: float | None = None):
  """params + N(0, scale^2) noise on every leaf, N(0, gate_scale^2) on the IAF's gate
  kernels and none on its gate biases.

  Parameters away from their initialisation: the mixture's and the flow's start
  too close to N(0, I) and the identity to test much. Gates that vary strongly
  with z make q(z|x) collapse in places and the importance weights heavy-tailed
  (then no IWAE estimate at any practical k is near log p(x)), so the gates
  move less than the shifts.
  """
  gate_scale = scale if gate_scale is None else gate_scale
  flat = traverse_util.flatten_dict(params)
  noisy = {}
  for i, (path, a) in enumerate(sorted(flat.items())):
    gate = len(path) > 1 and path[-2] == "gate"
    size = (0.0 if path[-1] == "bias" else gate_scale) if gate else scale
    noisy[path] = a + size * jax.random.normal(jax.random.fold_in(key, i), a.shape, a.dtype)
  return traverse_util.unflatten_dict(noisy)


def build(prior: str, posterior: str, seed: int = 0):
  """The tiny model and its parameters: the prior's perturbed by N(0, 0.5^2), the IAF's
  shift networks by N(0, 1) and its gate kernels by N(0, 0.3^2)."""
  make_posterior, log_var = POSTERIORS[posterior]
  model = Tiny(PRIORS[prior](), make_posterior(), log_var)
  key = jax.random.key(seed)
  init = jax.jit(lambda key: model.init(key, X, key, method=Tiny.initialize)["params"])
  params = init(key)
  if "prior" in params:
    params["prior"] = perturb(params["prior"], jax.random.fold_in(key, 1), 0.5)
  if "posterior" in params:
    params["posterior"] = perturb(params["posterior"], jax.random.fold_in(key, 2), 1.0, 0.3)
  return model, params


def quadrature_log_px(model, params, radius: float = 10.0, n: int = 201) -> np.ndarray:
  """log p(x) = log of the integral of p(x|z) p(z) over z, per example of X, in float64.

  A Riemann sum on an n x n grid over [-radius, radius]^2: the integrand is
  smooth with Gaussian tails of standard deviation >= 1, for which the sum's
  error falls like exp(-2 pi^2 sigma^2 / h^2), negligible at h = 0.1, and the
  mass beyond 10 (7 standard deviations of the widest VampPrior component)
  is below 1e-10.
  """
  axis = np.linspace(-radius, radius, n)
  grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, L)
  log_joint = apply(model, Tiny.log_joint)(params, X[:, None], jnp.asarray(grid, jnp.float32)[None])
  cell = (axis[1] - axis[0]) ** L
  log_joint = np.asarray(log_joint, np.float64)
  peak = log_joint.max(axis=1, keepdims=True)
  return np.log(np.sum(np.exp(log_joint - peak), axis=1) * cell) + peak[:, 0]


def importance_estimates(model, params, key, k: int) -> dict[str, np.ndarray]:
  """The k-sample IWAE and ELBO estimates per example of X, with their standard errors.

  `iwae` = log mean_k w_k; by the delta method its standard error is
  std(w) / (mean(w) sqrt(k)), and its bias -se^2 / 2 is negligible beside it.
  `share` is the largest normalised weight: a standard error estimated from
  weights dominated by one sample would mean nothing.
  """
  terms = apply(model, Tiny.terms, static_argnums=3)(params, key, X, k)
  log_w = np.asarray(terms[0] + terms[1] - terms[2], np.float64)  # (k, B)
  w = np.exp(log_w - log_w.max(axis=0))
  return {"iwae": np.log(w.mean(axis=0)) + log_w.max(axis=0),
          "iwae_se": w.std(axis=0) / w.mean(axis=0) / math.sqrt(k),
          "share": w.max(axis=0) / w.sum(axis=0),
          "elbo": log_w.mean(axis=0), "elbo_se": log_w.std(axis=0) / math.sqrt(k)}


def check_bounds_against_quadrature(model, params, key, k: int = 20_000) -> None:
  """IWAE at k = 20,000 within 4 standard errors of the quadrature's log p(x), the ELBO
  below it by more than 10 of its own.

  4 standard errors: the estimate is nearly normal at this k (the largest weight
  is < 5% of the sum), so a correct model fails one comparison with probability
  6e-5. A wrong log q, log p or log K moves it by tenths of a nat or more, tens of
  standard errors (about 0.02 nats here). The ELBO misses log p(x) by 1 to 3 nats
  (KL(q || posterior)), so a test that the IWAE agrees could not pass with q = p(z|x).
  """
  exact = quadrature_log_px(model, params)
  est = importance_estimates(model, params, key, k)
  assert np.all(est["share"] < 0.05), est["share"]
  assert np.all(est["iwae_se"] < 0.05), est["iwae_se"]
  np.testing.assert_array_less(np.abs(est["iwae"] - exact), 4 * est["iwae_se"])
  np.testing.assert_array_less(est["elbo"] + 10 * est["elbo_se"], exact)


def split_params(params, prior: str) -> tuple[dict, dict]:
  """(q_params, p_params) for `vae_jax.estimators`: the encoder and posterior, then the
  decoder and prior; the VampPrior's encoder goes in both (see `estimators`)."""
  q = {name: params[name] for name in ("encoder", "posterior") if name in params}
  p = {name: params[name] for name in ("decoder", "prior") if name in params}
  if prior == "vamp":
    p["encoder"] = params["encoder"]
  return q, p


def estimator_terms(model, key, k: int, prior_encoder_in_p: bool = True):
  """The `terms(q_params, p_params, stop_posterior)` callable of `vae_jax.estimators` for
  the examples X with k fixed draws each: three (k, B) arrays. z and log q come from q's
  encoder, log p(z) from p's (the VampPrior's copy), or from q's with
  `prior_encoder_in_p=False` (the mistake `estimators` warns of, to show it matters)."""

  def terms(q_params, p_params, stop_posterior: bool):
    z, log_q = model.apply({"params": {**p_params, **q_params}}, key, X, k, method=Tiny.draw)
    if stop_posterior:  # All of q's parameters stopped; z keeps its path.
      stopped = jax.lax.stop_gradient({**p_params, **q_params})
      log_q = model.apply({"params": stopped}, X, z, method=Tiny.log_posterior)
    log_px_z = model.apply({"params": p_params}, X, z, method=Tiny.log_likelihood)
    prior_params = p_params if prior_encoder_in_p else {**p_params, **q_params}
    log_pz = model.apply({"params": prior_params}, z, method=Tiny.log_prior)
    return log_px_z, log_pz, log_q

  return terms
