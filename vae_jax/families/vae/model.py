"""The Gaussian VAE: an encoder q(z|x), a decoder and a likelihood p(x|z), a prior and a posterior.

Images are `(..., H, W, C)` floats in [0, 1]. `VAE` composes any flax encoder
(images -> mean, logvar of shape (..., latents)) with any decoder (z ->
distribution parameters of shape (..., H, W, C)), one of the likelihoods in
`vae_jax.likelihoods`, a prior p(z) (`priors`: N(0, I), a mixture, the
VampPrior, or yours) and a posterior family on the encoder's Gaussian
(`posteriors`: the diagonal Gaussian or IAF). The networks a config names are
in `vae_jax.networks`; `vae_jax.families.vae.build` puts a VAE together from a
config.

A conditional VAE (`num_classes` > 0) gives the encoder and the decoder each
example's label as a vector (`VAE.label_vector`: one-hot for integer labels):
the networks are called as `encoder(x, label)` and `decoder(z, label)`,
label (..., num_classes) float32 with the leading axes of x or z.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import likelihoods
from vae_jax import objectives
from vae_jax.families.vae import posteriors
from vae_jax.families.vae import priors
from vae_jax.networks import at_least_float32

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # The encoder's log-variance is held in this range.


def given(y: jax.Array | None) -> dict:
  """`y=y` as keyword arguments when there are labels, else none: so that an
  unconditional VAE (or a user's subclass written before labels) is called as always."""
  return {} if y is None else {"y": y}


class VAE(nn.Module):
  """A VAE: any encoder, any decoder, one likelihood; a prior and a posterior family.

  The model computes its own terms (`elbo_terms`, `log_weights`, `kl_per_dimension`,
  and the per-sample `draw`, `log_q_at`, `log_px_at`, `log_prior` of the
  many-sample estimators), which the family's objective and evaluation ask for, so
  that a subclass, or another `prior` or `posterior`, changes them here and
  `test_recon`/`test_kl` keep their meaning.

  Attributes:
    encoder: images (..., H, W, C) in [0, 1] -> (mean, logvar), each (..., latents).
    decoder: z (..., latents) -> distribution parameters (..., H, W, C).
    latents: dimension of z.
    image_shape: (H, W, C) of one image; `train_and_evaluate` fills it from the data.
    likelihood: a module of `vae_jax.likelihoods` scoring x under the decoder's outputs.
    prior: p(z), a module with the protocol of `priors` (`log_prob`, `sample`,
      and `kl_per_dimension` where KL(q || p) has a closed form); None (the
      default) is `priors.StandardNormal(latents)`, N(0, I).
    posterior: q(z|x) given the encoder's (mean, logvar), a module with the
      protocol of `posteriors` (`transform`, and `log_prob` where it is
      cheap); None (the default) is `posteriors.DiagonalGaussian()`.
    num_classes: K > 0 makes the VAE conditional on labels 0 .. K - 1:
      q(z|x, y) and p(x|z, y), with p(z) the prior's. Every method that reads x
      or decodes z then takes the labels `y` (..., int, or (..., K) float
      vectors, `label_vector`), and the encoder and the decoder are called as
      `encoder(x, label)`, `decoder(z, label)` with label (..., K) float32.
      0: unconditional, the networks called without a label.
  """

  encoder: nn.Module
  decoder: nn.Module
  latents: int
  image_shape: tuple[int, int, int] | None = None
  likelihood: nn.Module = dataclasses.field(default_factory=likelihoods.Bernoulli)
  prior: nn.Module | None = None
  posterior: nn.Module | None = None
  num_classes: int = 0

  def __post_init__(self):
    # The defaults are the modules themselves (parameter-free, so the parameters are
    # the same), set here because they need `latents`.
    if self.prior is None:
      object.__setattr__(self, "prior", priors.StandardNormal(self.latents, parent=None))
    if self.posterior is None:
      object.__setattr__(self, "posterior", posteriors.DiagonalGaussian(parent=None))
    super().__post_init__()

  @property
  def analytic_kl(self) -> bool:
    """Whether KL(q(z|x) || p(z)) has a closed form per latent: a diagonal Gaussian
    posterior with a prior that gives one (N(0, I) does; mixtures do not)."""
    return (isinstance(self.posterior, posteriors.DiagonalGaussian)
            and hasattr(self.prior, "kl_per_dimension"))

  def __call__(self, x: jax.Array, key: jax.Array, y: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Decoder outputs (..., H, W, C) for one z ~ q(z|x), and q's mean and logvar (..., L)."""
    mean, logvar = self.encode(x, **given(y))
    return self.decode(objectives.reparameterize(key, mean, logvar), **given(y)), mean, logvar

  def label_vector(self, y: jax.Array | None, lead: tuple[int, ...]) -> jax.Array | None:
    """What the networks get for labels `y`: None for an unconditional model; else
    (*lead, K) float32: one-hot for integer labels (...), a given (..., K) float
    vector as it is (a mix of classes, as interpolation between labels uses),
    broadcast to the leading axes `lead` of the network's input."""
    if not self.num_classes:
      if y is not None:
        raise ValueError("this VAE is not conditional (num_classes=0); it takes no labels")
      return None
    if y is None:
      raise ValueError(f"this VAE is conditional on {self.num_classes} classes; pass the labels y")
    y = jnp.asarray(y)
    vector = (jax.nn.one_hot(y, self.num_classes) if jnp.issubdtype(y.dtype, jnp.integer)
              else y.astype(jnp.float32))
    return jnp.broadcast_to(vector, (*lead, self.num_classes))

  def encode(self, x: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """x (..., H, W, C) (and labels y (...) of a conditional model) -> mean, logvar
    (..., latents), float32 or wider.

    The log-variance is held in [LOGVAR_MIN, LOGVAR_MAX]: a standard deviation
    between 3e-7 and 2e4, far outside what a trained encoder gives (so the
    seed's numbers are unchanged), but short of the exp overflows and divisions
    by zero that turn a run's losses into NaN.
    """
    label = self.label_vector(y, x.shape[:-3])
    mean, logvar = self.encoder(x) if label is None else self.encoder(x, label)
    logvar = jnp.clip(at_least_float32(logvar), LOGVAR_MIN, LOGVAR_MAX)
    return at_least_float32(mean), logvar

  def decode(self, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """z (..., latents) (and labels y of a conditional model) -> distribution
    parameters (..., H, W, C), float32 or wider."""
    label = self.label_vector(y, z.shape[:-1])
    return at_least_float32(self.decoder(z) if label is None else self.decoder(z, label))

  def log_likelihood(self, x: jax.Array, outputs: jax.Array) -> jax.Array:
    """log p(x|z) in nats, summed over pixels: (..., H, W, C) twice -> (...)."""
    return self.likelihood.log_prob(x, outputs)

  def mean_image(self, outputs: jax.Array) -> jax.Array:
    """E[x|z] in [0, 1] from decoder outputs."""
    return self.likelihood.mean(outputs)

  def initialize(self, x: jax.Array, key: jax.Array, **labels) -> jax.Array:
    """Touches every submodule, so that `init` creates all parameters.

    `init_params` calls the model's own `initialize`: a subclass with more
    submodules (a learned prior, a flow) overrides it or `elbo_terms`.
    """
    return self.elbo_terms(x, key, **labels)["loss"]

  # The terms training and evaluation ask the model for.

  def sample_posterior(self, key: jax.Array, mean: jax.Array, logvar: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
    """z ~ q(z|x) (..., L) and log q(z|x) (...), from one standard-normal draw of z's shape."""
    return self.posterior.transform(jax.random.normal(key, mean.shape, mean.dtype), mean, logvar)

  def log_posterior(self, z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log q(z|x) summed over latents: (..., L) -> (...)."""
    return self.posterior.log_prob(z, mean, logvar)

  def log_prior(self, z: jax.Array) -> jax.Array:
    """log p(z) summed over latents: (..., L) -> (...)."""
    return self.prior.log_prob(z, encode=self.encode)

  def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
    """num draws z ~ p(z): (num, latents); with N(0, I), `temperature` scales them
    (other priors have temperature 1 only)."""
    z = self.prior.sample(key, num, encode=self.encode)
    if temperature == 1.0:
      return z
    if not isinstance(self.prior, priors.StandardNormal):
      raise ValueError(f"temperature applies to Gaussian priors; {type(self.prior).__name__} "
                       "samples at temperature 1 only")
    return temperature * z

  def kl_per_dimension(self, mean: jax.Array, logvar: jax.Array) -> jax.Array | None:
    """KL(q(z|x) || p(z)) per latent (..., L) where it has a closed form, else None."""
    return self.prior.kl_per_dimension(mean, logvar) if self.analytic_kl else None

  def elbo_terms(self, x: jax.Array, key: jax.Array, y: jax.Array | None = None
                 ) -> dict[str, jax.Array]:
    """The single-sample negative ELBO of each example, split into its terms.

    Args:
      x: images (B, H, W, C) in [0, 1].
      key: the key of the one draw of z per example.
      y: labels (B,), for a conditional model only.

    Returns:
      dict of (B,) arrays in nats: `loss` = `recon` + `kl`, `recon` = -log p(x|z),
      `kl` = KL(q(z|x) || p(z)), analytic where the families allow, else its
      one-sample estimate log q(z|x) - log p(z); and `kl_per_dimension` (B, L)
      where the KL is analytic (free bits need it).
    """
    mean, logvar = self.encode(x, **given(y))
    z, log_q = self.sample_posterior(key, mean, logvar)
    recon = -self.log_likelihood(x, self.decode(z, **given(y)))
    kl_dims = self.kl_per_dimension(mean, logvar)
    terms = {"recon": recon}
    if kl_dims is not None:
      terms["kl_per_dimension"] = kl_dims
      terms["kl"] = jnp.sum(kl_dims, axis=-1)
    else:
      if isinstance(self.posterior, posteriors.DiagonalGaussian):
        # Its closed form again, here rather than the draw's: the same value, and the
        # order of operations the seed's programs had, which XLA rounds alike.
        log_q = self.log_posterior(z, mean, logvar)
      terms["kl"] = log_q - self.log_prior(z)
    terms["loss"] = recon + terms["kl"]
    return terms

  def log_weights(self, x: jax.Array, mean: jax.Array, logvar: jax.Array, keys: jax.Array,
                  index: jax.Array, y: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """log p(x, z) - log q(z|x) and log p(x|z) for samples `index` (C,) of each example.

    Sample s of example b draws from `fold_in(keys[b], s)`, so results do not
    depend on how the samples are chunked.

    Args:
      x: images (B, H, W, C); mean, logvar: the encoder's (B, L); keys: (B,);
      y: labels (B,) of a conditional model.

    Returns:
      Two (B, C) arrays.
    """
    (batch, latents), count = mean.shape, len(index)
    draw = lambda key, s: jax.random.normal(jax.random.fold_in(key, s), (latents,), mean.dtype)
    # One vmap over the (example, sample) pairs: compiles about twice as fast as two nested.
    eps = jax.vmap(draw)(jnp.repeat(keys, count), jnp.tile(index, batch))
    eps = eps.reshape(batch, count, latents)
    z, log_q = self.posterior.transform(eps, mean[:, None], logvar[:, None])
    # All (example, sample) pairs through the decoder at once: one large matmul.
    label = self.label_vector(None if y is None else jnp.asarray(y)[:, None], (batch, count))
    label = None if label is None else label.reshape(batch * count, -1)
    outputs = self.decode(z.reshape(batch * count, latents), **given(label))
    outputs = outputs.reshape(batch, count, *outputs.shape[1:])
    log_lik = self.log_likelihood(x[:, None], outputs)
    return log_lik + self.log_prior(z) - log_q, log_lik

  # The per-sample terms of the many-sample objectives (`vae_jax.estimators`).

  def draw(self, x: jax.Array, key: jax.Array, num_samples: int, y: jax.Array | None = None
           ) -> tuple[jax.Array, jax.Array]:
    """K draws z ~ q(z|x) per example, reparameterised: z (K, B, L) and log q(z|x) (K, B)."""
    mean, logvar = self.encode(x, **given(y))
    eps = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    return self.posterior.transform(eps, mean, logvar)

  def log_q_at(self, x: jax.Array, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """log q(z|x) of given z (K, B, L) for images x (B, ...): (K, B)."""
    mean, logvar = self.encode(x, **given(y))
    return self.log_posterior(z, mean, logvar)

  def log_px_at(self, x: jax.Array, z: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """log p(x|z) of z (K, B, L): (K, B); all K * B codes through the decoder at once."""
    num, batch, latents = z.shape
    label = self.label_vector(y, (num, batch))
    label = None if label is None else label.reshape(num * batch, -1)
    outputs = self.decode(z.reshape(num * batch, latents), **given(label))
    return self.log_likelihood(x, outputs.reshape(num, batch, *outputs.shape[1:]))

  def kl(self, mean: jax.Array, logvar: jax.Array) -> jax.Array | None:
    """The analytic KL(q(z|x) || p(z)) summed over latents (...), or None."""
    kl_dims = self.kl_per_dimension(mean, logvar)
    return None if kl_dims is None else jnp.sum(kl_dims, axis=-1)
