"""Posteriors q(z|x) built on the encoder's Gaussian: the diagonal Gaussian itself and IAF.

Each posterior is a flax module with (what `VAE` calls)

  * `transform(eps, mean, logvar) -> (z, log_q)`: z `(..., L)` from standard-normal
    noise `eps` of z's shape, given the encoder's `mean`, `logvar` `(..., L)`
    (reparameterised: z is a differentiable function of them), and `log_q`
    `(...)`, the exact log-density of that z under q, in nats;
  * `log_prob(z, mean, logvar) -> (...)`: log q at any z, what the STL and DReG
    estimators need (`estimators`). The Gaussian's is its density; the IAF's
    inverts the flow, L sequential network passes per step, so it costs L times
    a draw. A posterior without `log_prob` is refused STL and DReG;
  * `sample(key, mean, logvar) -> (z, log_q)`: `transform` of a fresh draw.

Inverse autoregressive flow (Kingma et al. 2016). Starting from
z_0 = mean + sigma * eps, each of T steps computes, with a masked
autoregressive network (MADE, Germain et al. 2015) whose outputs m_i, s_i
depend only on z_{<i} and a context h,

    sigma = sigmoid(s),   z <- sigma * z + (1 - sigma) * m,

the numerically stable gated form of the paper. Its Jacobian dz'/dz is
triangular with diagonal sigma, so log|det| = sum_i log sigma_i exactly and

    log q(z_T | x) = log N(z_0; mean, diag(exp(logvar))) - sum_t sum_i log sigma_{t,i}.

Odd steps are autoregressive in the reversed order of the latents, so that
each coordinate can depend on every other after two steps; z itself is never
permuted, so a flow near the identity maps z_0 to about z_0. The context h is
the encoder's (mean, logvar) concatenated, `(..., 2 L)`: any encoder works
unchanged (the paper uses an extra encoder output instead).

References:
  Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), Improved
  variational inference with inverse autoregressive flow, NeurIPS.
  Germain, Gregor, Murray & Larochelle (2015), MADE: masked autoencoder for
  distribution estimation, ICML.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import objectives


class DiagonalGaussian(nn.Module):
  """q(z|x) = N(mean, diag(exp(logvar))): the seed's posterior, drawn exactly as before."""

  def sample(self, key: jax.Array, mean: jax.Array,
             logvar: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z = mean + exp(logvar / 2) * eps (`model.reparameterize`, bit for bit) and log q(z).

    Args:
      key: a PRNG key.
      mean, logvar: `(..., L)`.

    Returns:
      z `(..., L)` and log q(z|x) `(...)`.
    """
    z = objectives.reparameterize(key, mean, logvar)
    return z, self.log_prob(z, mean, logvar)

  def transform(self, eps: jax.Array, mean: jax.Array,
                logvar: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z = mean + exp(logvar / 2) * eps for standard-normal `eps` `(..., L)`, and log q(z)."""
    z = mean + jnp.exp(0.5 * logvar) * eps
    return z, self.log_prob(z, mean, logvar)

  def log_prob(self, z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))): `(..., L)` three times -> `(...)`."""
    return objectives.gaussian_log_density(z, mean, logvar)


def made_degrees(latents: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
  """MADE degrees: inputs and outputs 1..L; hidden units (j mod L), in 0..L-1.

  A hidden unit of degree d sees the inputs of degree <= d; an output of
  degree i sees the hidden units of degree < i. Degree 0 sees no input (only
  the context), which is all the first output may see; cycling the degrees
  covers every one as soon as hidden >= L.
  """
  return np.arange(1, latents + 1), np.arange(hidden) % latents


class MaskedDense(nn.Module):
  """A dense layer whose kernel is multiplied by a fixed 0/1 mask `(in, out)`."""

  mask: np.ndarray
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, self.mask.shape)
    bias = self.param("bias", self.bias_init, self.mask.shape[1:])
    return x @ (kernel * jnp.asarray(self.mask, kernel.dtype)) + bias


class MADE(nn.Module):
  """One autoregressive network: z `(..., L)`, context `(..., C)` -> (m, s), each `(..., L)`.

  m_i and s_i depend on z_1..z_{i-1} and the context only. The output layers
  start at zero weights, with s's bias at `gate_bias`: at initialisation
  m = 0 and sigmoid(s) = sigmoid(gate_bias) for every input.
  """

  latents: int
  hidden: int
  gate_bias: float

  @nn.compact
  def __call__(self, z: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    degree_in, degree_hidden = made_degrees(self.latents, self.hidden)
    to_hidden = (degree_in[:, None] <= degree_hidden[None, :]).astype(np.float32)
    to_out = (degree_hidden[:, None] < degree_in[None, :]).astype(np.float32)
    h = MaskedDense(to_hidden, name="hidden")(z) + nn.Dense(self.hidden, name="context")(context)
    h = nn.elu(h)
    zeros = nn.initializers.zeros
    m = MaskedDense(to_out, kernel_init=zeros, name="shift")(h)
    s = MaskedDense(to_out, kernel_init=zeros,
                    bias_init=nn.initializers.constant(self.gate_bias), name="gate")(h)
    return m, s


class IAF(nn.Module):
  """Inverse autoregressive flow on the diagonal Gaussian: T gated MADE steps.

  At initialisation every step is z <- sigmoid(gate_bias) * z, close to the
  identity (the default 4.0 gives 0.982 per step); Kingma et al. use a gate
  bias of +1 or +2, a stronger initial contraction, with faster-moving gates
  (their slope sigma (1 - sigma) is 0.018 at 4.0 but 0.10 at 2.0).

  Attributes:
    latents: L.
    steps: T, the number of flow steps.
    hidden: the width of each MADE's hidden layer (at least L, so that every
      degree has a unit).
    gate_bias: the initial s.
  """

  latents: int
  steps: int
  hidden: int
  gate_bias: float = 4.0

  def setup(self):
    self.made = [MADE(self.latents, self.hidden, self.gate_bias, name=f"step{t}")
                 for t in range(self.steps)]

  def _gates(self, t: int, z: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Step t's (m, s) at its input z; odd steps are autoregressive in the reversed order."""
    if t % 2 == 0:
      return self.made[t](z, context)
    m, s = self.made[t](z[..., ::-1], context)
    return m[..., ::-1], s[..., ::-1]

  def flow(self, z: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The T steps on z_0 `(..., L)` with context `(..., C)`.

    Returns:
      z_T `(..., L)` and log|det dz_T / dz_0| `(...)`.
    """
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for t in range(self.steps):
      m, s = self._gates(t, z, context)
      z = jax.nn.sigmoid(s) * z + jax.nn.sigmoid(-s) * m  # 1 - sigmoid(s) = sigmoid(-s).
      log_det = log_det + jnp.sum(jax.nn.log_sigmoid(s), axis=-1)
    return z, log_det

  def inverse(self, z: jax.Array, context: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z_0 = flow^-1(z_T) and the forward log|det dz_T / dz_0| `(...)` at it.

    Each step y = sigma(s) x + sigma(-s) m is inverted by L passes of
    x <- (y - sigma(-s) m) / sigma(s), with (m, s) computed at the previous x:
    pass j makes the j-th coordinate in the step's order exact, since (m, s)_j
    depend on the earlier ones only. So the last pass's s is already the
    forward step's, and the result is the inverse as a function of z_T (its
    derivatives are the inverse's). Cost: T L network passes, against T for `flow`.
    """
    log_det = jnp.zeros(z.shape[:-1], z.dtype)
    for t in reversed(range(self.steps)):
      x = z
      for _ in range(self.latents):
        m, s = self._gates(t, x, context)
        x = (z - jax.nn.sigmoid(-s) * m) / jax.nn.sigmoid(s)
      log_det = log_det + jnp.sum(jax.nn.log_sigmoid(s), axis=-1)
      z = x
    return z, log_det

  def sample(self, key: jax.Array, mean: jax.Array,
             logvar: jax.Array) -> tuple[jax.Array, jax.Array]:
    """z_T through the flow from z_0 = `model.reparameterize(key, mean, logvar)`, and log q(z_T|x).

    Args:
      key: a PRNG key.
      mean, logvar: `(..., L)`, the encoder's outputs (also the flow's context).

    Returns:
      z_T `(..., L)` and log q(z_T|x) `(...)`, exact by the change of variables.
    """
    z0 = objectives.reparameterize(key, mean, logvar)
    z, log_det = self.flow(z0, jnp.concatenate([mean, logvar], axis=-1))
    return z, objectives.gaussian_log_density(z0, mean, logvar) - log_det

  def transform(self, eps: jax.Array, mean: jax.Array,
                logvar: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`sample` from given standard-normal noise `eps` `(..., L)`: z_T and log q(z_T|x)."""
    z0 = mean + jnp.exp(0.5 * logvar) * eps
    z, log_det = self.flow(z0, jnp.concatenate([mean, logvar], axis=-1))
    return z, objectives.gaussian_log_density(z0, mean, logvar) - log_det

  def log_prob(self, z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log q(z|x) at any z `(..., L)`, by inverting the flow (`inverse`): `(...)`.

    L times the cost of `sample`'s flow; what STL and DReG need, with this
    module's parameters and (mean, logvar) under stop_gradient.
    """
    z0, log_det = self.inverse(z, jnp.concatenate([mean, logvar], axis=-1))
    return objectives.gaussian_log_density(z0, mean, logvar) - log_det
