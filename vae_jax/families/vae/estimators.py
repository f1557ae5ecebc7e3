"""Training objectives from K samples per example, and their gradient estimators.

The per-sample terms, each of shape `(K, ...)` (K samples of z per example,
then the example axes):

  * `log_px_z`: log p(x | z_k), the likelihood;
  * `log_pz`: log p(z_k), the prior;
  * `log_qz`: log q(z_k | x), the posterior,

give log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), and per-example losses

  * `elbo_loss`: -(1/K) sum_k log w_k, the negative K-sample ELBO;
  * `iwae_loss`: -(logsumexp_k log w_k - log K), the negative IWAE bound
    (Burda et al. 2015).

Gradient estimators. Each is a *surrogate*: a per-example function of the
parameters whose value is the loss above and whose gradient is the
estimator, so a trainer differentiates `mean(surrogate)` as it would the loss.
They take the model through one callable

    terms(q_params, p_params, stop_posterior: bool) -> (log_px_z, log_pz, log_qz)

where `q_params` are the inference network's parameters (the encoder and the
posterior's, e.g. an IAF) and `p_params` the generative model's (the
decoder, the likelihood, the prior). `terms` must draw the same z for the
same parameter values on every call (its PRNG key is fixed by the caller),
keep z a reparameterised function of `q_params`, and, when `stop_posterior`
is True, evaluate log q(z|x) with all of q's parameters under
`jax.lax.stop_gradient` while z keeps its path: with flax, a second apply,
`posterior.log_prob(z, *encoder(x))` under `{"params": stop_gradient(q_params)}`
(for the diagonal Gaussian, stopping `mean` and `logvar` alone is the same;
for the IAF its own parameters must be stopped too).

  * `iwae`, `elbo`: the plain reparameterised gradients of the two losses.
  * `stl`: "sticking the landing" (Roeder, Wu & Duvenaud 2017): the ELBO with
    log q at stopped posterior parameters. The dropped term, the score
    E_q[grad log q] = 0, has expectation zero, so the expected gradient is the
    ELBO's, with no variance from that term (none at all when q is the true
    posterior).
  * `dreg`: doubly reparameterised IWAE (Tucker, Lawson, Gu & Maddison 2018).
    The inference network gets sum_k w~_k^2 d log w_k / d q_params, with
    w~ = softmax(log w) over K held constant and log w evaluated at stopped
    posterior parameters; the generative model gets the IWAE gradient
    sum_k w~_k d log w_k / d p_params. Its expectation is the IWAE gradient's,
    and the inference network's signal-to-noise ratio does not decay as
    1 / sqrt(K) the way IWAE's does (Rainforth et al. 2018).

DReG costs two calls of `terms` (each an encoder and a decoder pass): one with
`q_params` stopped for the generative gradient, one with `p_params` stopped
for the inference one.

Parameters shared by q and p: the VampPrior evaluates the *encoder* at its
pseudo-inputs, so log p(z) depends on the encoder's parameters directly, not
only through z. The DReG identity covers only the score of q, so that direct
dependence must keep IWAE's weight w~, not w~^2. Pass the encoder's
parameters in both trees (the copy in `p_params` used by the prior, the one in
`q_params` by q) and add the two gradients: `dreg` then weights each correctly.
STL, ELBO and IWAE give the right gradient either way.

A posterior without a `log_prob` cannot evaluate log q at stopped parameters:
`check` refuses STL and DReG for it. Both posteriors here have one; the IAF's
inverts the flow (L network passes per step), so STL and DReG with the IAF
cost about L + 1 times the flow's share of a step.
"""
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vae_jax.errors import UsageError

Terms = Callable[[Any, Any, bool], tuple[jax.Array, jax.Array, jax.Array]]

ESTIMATORS = ("elbo", "iwae", "stl", "dreg")
NEEDS_POSTERIOR_LOG_PROB = ("stl", "dreg")


def log_weights(log_px_z: jax.Array, log_pz: jax.Array, log_qz: jax.Array) -> jax.Array:
  """log w = log p(x|z) + log p(z) - log q(z|x): three `(K, ...)` -> `(K, ...)`."""
  return log_px_z + log_pz - log_qz


def elbo_loss(log_px_z: jax.Array, log_pz: jax.Array, log_qz: jax.Array) -> jax.Array:
  """The negative K-sample ELBO, -(1/K) sum_k log w_k: `(K, ...)` -> `(...)`, nats."""
  return -jnp.mean(log_weights(log_px_z, log_pz, log_qz), axis=0)


def iwae_loss(log_px_z: jax.Array, log_pz: jax.Array, log_qz: jax.Array) -> jax.Array:
  """The negative IWAE bound, -(logsumexp_k log w_k - log K): `(K, ...)` -> `(...)`, nats."""
  log_w = log_weights(log_px_z, log_pz, log_qz)
  return -(jax.nn.logsumexp(log_w, axis=0) - math.log(log_w.shape[0]))


def elbo(terms: Terms, q_params, p_params) -> jax.Array:
  """The negative ELBO `(...)` with its plain reparameterised gradient."""
  return elbo_loss(*terms(q_params, p_params, False))


def iwae(terms: Terms, q_params, p_params) -> jax.Array:
  """The negative IWAE bound `(...)` with its plain reparameterised gradient."""
  return iwae_loss(*terms(q_params, p_params, False))


def stl(terms: Terms, q_params, p_params) -> jax.Array:
  """Sticking the landing: the negative ELBO `(...)`, log q at stopped posterior parameters.

  For p_params the gradient is the ELBO's (log q does not depend on them).
  """
  return elbo_loss(*terms(q_params, p_params, True))


def dreg(terms: Terms, q_params, p_params) -> jax.Array:
  """Doubly reparameterised IWAE: the negative IWAE bound `(...)` with DReG's gradients.

  Value: `iwae_loss`. Gradient: IWAE's for `p_params`; for `q_params`
  -sum_k stop_gradient(w~_k^2) d log w_k (log q at stopped posterior
  parameters, z reparameterised).
  """
  stop = jax.lax.stop_gradient
  generative = iwae_loss(*terms(stop(q_params), p_params, False))
  log_w = log_weights(*terms(q_params, stop(p_params), True))
  weights = stop(jax.nn.softmax(log_w, axis=0))
  inference = -jnp.sum(weights**2 * log_w, axis=0)
  # Zero in value, DReG's inference gradient in derivative.
  return generative + (inference - stop(inference))


def surrogate(estimator: str, terms: Terms, q_params, p_params) -> jax.Array:
  """The per-example surrogate loss `(...)` of `estimator`, one of `ESTIMATORS`."""
  functions = {"elbo": elbo, "iwae": iwae, "stl": stl, "dreg": dreg}
  if estimator not in functions:
    raise UsageError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
  return functions[estimator](terms, q_params, p_params)


def check(estimator: str, posterior) -> None:
  """Raises UsageError if `estimator` needs a log_prob that `posterior` lacks (STL, DReG on IAF)."""
  if estimator not in ESTIMATORS:
    raise UsageError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
  if estimator in NEEDS_POSTERIOR_LOG_PROB and not hasattr(posterior, "log_prob"):
    raise UsageError(f"estimator={estimator} evaluates log q(z|x) at stopped parameters, which "
                     f"posterior {type(posterior).__name__} cannot (no log_prob); use iwae or elbo")


# ----------------------------------------------------------------------------
# For `vae_jax.VAE`: its parameters split into q's and p's, and its `terms`.

INFERENCE = ("encoder", "posterior")  # q's parameters; the rest are p's.


def split_params(params: dict, prior_uses_encoder: bool) -> tuple[dict, dict]:
  """(q_params, p_params) of a VAE's parameters; with a prior that runs the encoder
  (the VampPrior) p gets its own copy of the encoder's (see the module docstring)."""
  q = {name: value for name, value in params.items() if name in INFERENCE}
  p = {name: value for name, value in params.items() if name not in INFERENCE}
  if prior_uses_encoder:
    p["encoder"] = params["encoder"]
  return q, p


def merge_grads(q_grads: dict, p_grads: dict) -> dict:
  """The parameters' gradient from q's and p's parts (the encoder's two copies added)."""
  grads = {**p_grads, **q_grads}
  if "encoder" in q_grads and "encoder" in p_grads:
    grads["encoder"] = jax.tree.map(jnp.add, q_grads["encoder"], p_grads["encoder"])
  return grads


def vae_terms(model, x: jax.Array, key: jax.Array, num_samples: int,
              y: jax.Array | None = None) -> Terms:
  """The `terms(q_params, p_params, stop_posterior)` of a `vae_jax.VAE` on images x
  (B, H, W, C) in [0, 1] (and labels y (B,) of a conditional model), with
  `num_samples` draws per example from `key`: three (K, B)."""
  cls = type(model)
  labels = {} if y is None else {"y": y}

  def terms(q_params, p_params, stop_posterior: bool):
    params = {**p_params, **q_params}  # q's encoder draws z; p's copy serves the prior.
    z, log_qz = model.apply({"params": params}, x, key, num_samples, method=cls.draw, **labels)
    if stop_posterior:  # Every parameter of q stopped; z keeps its path.
      log_qz = model.apply({"params": jax.lax.stop_gradient(params)}, x, z, method=cls.log_q_at,
                           **labels)
    log_px_z = model.apply({"params": params}, x, z, method=cls.log_px_at, **labels)
    log_pz = model.apply({"params": p_params}, z, method=cls.log_prior)
    return log_px_z, log_pz, log_qz

  return terms


def of_config(objective: str, gradient_estimator: str, train_samples: int) -> str | None:
  """The estimator a config's objective fields name, or None for the seed's single-sample
  ELBO with its analytic KL (the default, computed by `VAE.elbo_terms`).

  Raises:
    UsageError: an estimator that does not go with the objective.
  """
  name = {("elbo", "reparam"): "elbo", ("elbo", "stl"): "stl", ("iwae", "reparam"): "iwae",
          ("iwae", "dreg"): "dreg"}.get((objective, gradient_estimator))
  if name is None:
    fits = "iwae" if gradient_estimator == "dreg" else "elbo"
    raise UsageError(f"gradient_estimator={gradient_estimator} goes with objective={fits}, "
                     f"not {objective}")
  return None if name == "elbo" and train_samples == 1 else name
