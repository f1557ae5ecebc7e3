"""The Gaussian VAE family (`--config.family=vae`, the default): the tutorial's model and its kin.

A Gaussian latent z with any encoder and decoder (`model.VAE`), a prior
(`priors`: N(0, I), a learned mixture, the VampPrior), a posterior on the
encoder's Gaussian (`posteriors`: diagonal or IAF), L top-down layers
(`hierarchy`), labels (`conditional=True`), trained on the single-sample ELBO
with its analytic KL (the seed's), a beta-weighted, warmed-up or free-bits
version of it, or a many-sample objective with its gradient estimator
(`estimators`: ELBO, IWAE, STL, DReG). Its terms and bounds are in `objective`.

    vae-jax train --workdir=/tmp/vae                  # the tutorial's model
    vae-jax train --workdir=/tmp/vamp --config.prior=vamp --config.prior_components=50

Files: `model.py` (the flax module), `priors.py`, `posteriors.py`,
`hierarchy.py`, `estimators.py`, `objective.py`; this module holds the
family's config fields (`FIELDS`), builds the module a config describes
(`build_module`) and answers the family interface (`GaussianVAE`).
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import fields as fields_lib
from vae_jax import likelihoods
from vae_jax import networks
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.families.vae import estimators
from vae_jax.families.vae import hierarchy
from vae_jax.families.vae import objective
from vae_jax.families.vae import posteriors
from vae_jax.families.vae import priors
from vae_jax.families.vae.model import VAE
from vae_jax.families.vae.model import given
from vae_jax.errors import counted

_f = fields_lib.Field

# The family's config fields. The sweepable ones follow the core's in the sweep's order.
FIELDS = (
    _f("prior", "normal", "p(z): normal N(0, I) | mog (a learned mixture of prior_components "
       "diagonal Gaussians) | vamp (the VampPrior: the encoder's posteriors at "
       "prior_components learned pseudo-inputs)", "vae",
       choices=("normal", "mog", "vamp"), shapes=True, legacy="normal"),
    _f("prior_components", 500, "mog, vamp: mixture components (pseudo-inputs); 500 as in "
       "Tomczak & Welling 2018", "vae", low=0, strict=True, shapes=True),
    _f("posterior", "gaussian", "q(z|x): gaussian (diagonal) | iaf (inverse autoregressive flow "
       "on it, Kingma et al. 2016)", "vae", choices=("gaussian", "iaf"), shapes=True,
       legacy="gaussian"),
    _f("flow_steps", 2, "iaf: flow steps (MADE networks)", "vae", low=0, strict=True,
       shapes=True),
    _f("flow_hidden", 320, "iaf: hidden units of each MADE (at least latents)", "vae", low=0,
       strict=True, shapes=True),
    _f("stochastic_layers", 1, "Gaussian layers z_1 (next to the data) .. z_L of a top-down "
       "hierarchy (mlp or conv; ladder-VAE style, the inference path sharing the generative "
       "one); 1: the one-layer VAE", "vae", low=1, shapes=True, legacy=1),
    _f("layer_latents", (), "stochastic_layers > 1: each layer's size from the one next to the "
       "data up, its first equal to latents; empty: latents, then each half the one below",
       "vae", shapes=True, legacy=()),
    _f("residual_blocks", 1, "conv with stochastic_layers > 1: residual blocks (two 3x3 "
       "convolutions and a skip) in each cell of the bottom-up and the top-down path; 0: none",
       "vae", low=0, shapes=True, legacy=1),
    # Reported losses are always the true ELBO (beta 1, no floor).
    _f("beta", 1.0, "weight of the KL (beta-VAE)", "vae", low=0.0, sweepable=True),
    _f("kl_warmup_steps", 0, "the KL weight rises linearly from 0 to beta over these steps",
       "vae", low=0, sweepable=True),
    _f("free_bits", 0.0, "nats each latent's KL counts as at least (batch mean)", "vae",
       low=0.0, sweepable=True),
    # The training objective (estimators). Not sweepable: each changes the program.
    _f("objective", "elbo", "elbo (the negative ELBO) | iwae (the negative importance-weighted "
       "bound, Burda et al. 2015) over train_samples samples per example", "vae",
       choices=("elbo", "iwae"), legacy="elbo"),
    _f("train_samples", 1, "importance samples per example: with iwae its K; with elbo, the "
       "average of K single-sample ELBOs", "vae", low=1, legacy=1),
    _f("gradient_estimator", "reparam", "reparam | dreg (doubly reparameterised, iwae; Tucker "
       "et al. 2018) | stl (sticking the landing, elbo; Roeder et al. 2017): the inference "
       "network's gradient", "vae", choices=("reparam", "dreg", "stl"), legacy="reparam"),
)

# The network fields (the core's "model" group) and the family's: what `build_module` reads.
Settings = fields_lib.settings_class(
    "VAESettings", (*fields_lib.group("model"), *FIELDS),
    "The config fields of a Gaussian VAE: the networks, p(x|z) and the family's own.")

# p(z) and q(z|x) a config names: one line each.
PRIORS = {
    "normal": lambda s: priors.StandardNormal(s.latents),
    "mog": lambda s: priors.MixtureOfGaussians(s.latents, s.prior_components),
    "vamp": lambda s: priors.VampPrior(s.latents, s.prior_components, tuple(s.image_shape)),
}
POSTERIORS = {
    "gaussian": lambda s: posteriors.DiagonalGaussian(),
    "iaf": lambda s: posteriors.IAF(s.latents, s.flow_steps, s.flow_hidden),
}


# ----------------------------------------------------------------------------
# The module a config describes.


def check(settings, models: list[dict], *, custom_layers: int | None = None) -> None:
  """Raises UsageError naming the first setting that does not go with the others.

  Args:
    settings: a `Settings` (each field's own value already checked).
    models: each model's sweepable settings (beta, kl_warmup_steps, free_bits).
    custom_layers: the stochastic layers of a user's own module (None: the
      config builds the module, and its network fields are checked too).
  """
  if custom_layers is None:
    if settings.model == "conv":
      networks.check_conv(settings)
    if settings.conditional and settings.prior == "vamp":
      raise UsageError("conditional=True with prior=vamp is not built: the VampPrior runs the "
                       "encoder on pseudo-inputs that have no label; use prior=normal or mog")
    _check_layers(settings)
  estimator = estimators.of_config(settings.objective, settings.gradient_estimator,
                                   settings.train_samples)
  if estimator is not None and _weighted(models):
    raise UsageError(f"beta, kl_warmup_steps and free_bits weigh the single-sample ELBO's KL; "
                     f"with objective={settings.objective}, train_samples={settings.train_samples} "
                     f"and gradient_estimator={settings.gradient_estimator} they are not defined: "
                     "leave them at 1, 0 and 0")
  if any(m["free_bits"] for m in models) and (settings.prior, settings.posterior) != (
      "normal", "gaussian"):
    raise UsageError("free_bits needs the KL per latent in closed form, which only "
                     "prior=normal with posterior=gaussian has; set free_bits=0 or use those")
  layers = settings.stochastic_layers if custom_layers is None else custom_layers
  if settings.gradient_estimator in ("stl", "dreg") and layers > 1:
    raise UsageError(f"gradient_estimator={settings.gradient_estimator} is not built for "
                     f"stochastic_layers > 1 (the top-down path is shared by q and p); "
                     "use reparam")


def _check_layers(settings) -> None:
  layers, sizes = settings.stochastic_layers, tuple(settings.layer_latents)
  if sizes and (len(sizes) != layers or min(sizes) < 1 or sizes[0] != settings.latents):
    raise UsageError(f"layer_latents must give {counted(layers, 'positive size')}, the first "
                     "equal to "
                     f"latents={settings.latents} (the layer next to the data), got {sizes}")
  if layers == 1:
    return
  mlp = (("hidden_layers", settings.hidden_layers, 1), ("activation", settings.activation, "relu"))
  for name, value, fits in (("prior", settings.prior, "normal"),
                            ("posterior", settings.posterior, "gaussian"),
                            ("conditional", settings.conditional, False),
                            *(mlp if settings.model == "mlp" else ())):
    if value != fits:
      raise UsageError(f"stochastic_layers={layers} is built for {name}={fits} only, "
                       f"not {name}={value}")


def _weighted(models: list[dict]) -> bool:
  """Whether some model trains on the weighted ELBO (beta != 1, a warm-up or free bits)."""
  return any(m["beta"] != 1 or m["kl_warmup_steps"] or m["free_bits"] for m in models)


def build_module(settings) -> VAE:
  """The VAE a config describes (checked by `check`)."""
  dtype = None if settings.compute_dtype == "float32" else jnp.dtype(settings.compute_dtype)
  image_shape = tuple(settings.image_shape)
  likelihood = likelihoods.from_settings(settings)
  if settings.stochastic_layers > 1:
    return hierarchy.from_architecture(settings, dtype, likelihood)
  if settings.model == "conv":
    encoder = networks.ConvEncoder(tuple(settings.conv_features), settings.latents, dtype)
    decoder = networks.ConvDecoder(tuple(settings.conv_features), image_shape, dtype)
  else:
    depth = dict(layers=settings.hidden_layers, activation=settings.activation)
    encoder = networks.MLPEncoder(settings.hidden, settings.latents, dtype, **depth)
    hidden = 0 if settings.decoder == "linear" else settings.hidden
    decoder = networks.MLPDecoder(hidden, image_shape, dtype, **depth)
  if settings.conditional and settings.num_classes < 1:
    raise UsageError("conditional=True needs num_classes, which a run resolves from the "
                     "data's labels")
  return VAE(encoder, decoder, settings.latents, image_shape, likelihood,
             PRIORS[settings.prior](settings), POSTERIORS[settings.posterior](settings),
             settings.num_classes if settings.conditional else 0)


def from_config(config, image_shape=None) -> VAE:
  """The VAE a config describes (its network and family fields), for images of
  `image_shape` (H, W, C) (default: the config's); checked as a run checks it."""
  overrides = {} if image_shape is None else {"image_shape": tuple(image_shape)}
  settings = fields_lib.settings_of(Settings, config, **overrides)
  check(settings, [{"beta": 1.0, "kl_warmup_steps": 0, "free_bits": 0.0}])
  return build_module(settings)


def init_params(module: VAE, key: jax.Array) -> dict:
  """A VAE's initial parameters, drawn from `key` as a run draws model 0's."""
  return GaussianVAE(module).init(key)["params"]


def _qualified(cls: type) -> str:
  return f"{cls.__module__}.{cls.__qualname__}"


def signature(module: VAE) -> dict[str, str]:
  """What config.json records of a user-defined VAE, so that `load` can tell another
  class, network, likelihood, prior or posterior from the one it was trained with."""
  part = lambda m, default, cls: default if type(m) is cls else _qualified(type(m))
  return {"vae_class": _qualified(type(module)),
          "network": f"{type(module.encoder).__name__}/{type(module.decoder).__name__}",
          "likelihood": likelihoods.NAMES.get(type(module.likelihood))
                        or _qualified(type(module.likelihood)),
          "prior": part(module.prior, "normal", priors.StandardNormal),
          "posterior": part(module.posterior, "gaussian", posteriors.DiagonalGaussian)}


# ----------------------------------------------------------------------------
# The family.


@dataclasses.dataclass(frozen=True)
class GaussianVAE(base.Family):
  """The family interface of a `VAE` (see `vae_jax.families.base`).

  Attributes:
    module: the VAE (built from the config, or the user's).
    estimator: a many-sample objective of `estimators` (elbo, iwae, stl, dreg)
      with `train_samples` samples per example; None: the single-sample ELBO
      with its analytic KL where it has one (the seed's).
    train_samples: K of the estimator.
    weighted: some model trains on the weighted ELBO (beta != 1, a KL warm-up
      or free bits), which then reports `train_objective` beside `train_loss`.
  """

  module: VAE
  estimator: str | None = None
  train_samples: int = 1
  weighted: bool = False

  name = "vae"
  fields = FIELDS
  settings_type = Settings
  bound_metric = "iwae_nll"
  labels = {"kl": "KL", "iwae_nll": "IWAE NLL", "nll": "NLL (IWAE)"}
  signature_fields = ("vae_class", "network", "likelihood", "prior", "posterior", "latents",
                      "conditional", "stochastic_layers", "layer_latents")

  @classmethod
  def check(cls, settings, models: list[dict]) -> None:
    check(settings, models)

  @classmethod
  def build(cls, settings, models: list[dict], module: VAE | None = None,
            parent=None) -> "GaussianVAE":
    """The family of a resolved config's `Settings` and its models' sweepable settings;
    `module`: a user's own VAE instead of the one the config describes."""
    del parent  # One stage.
    custom = None if module is None else getattr(module, "stochastic_layers", 1)
    check(settings, models, custom_layers=custom)
    return cls(module=module if module is not None else build_module(settings),
               estimator=estimators.of_config(settings.objective, settings.gradient_estimator,
                                              settings.train_samples),
               train_samples=settings.train_samples, weighted=_weighted(models))

  @property
  def capabilities(self) -> frozenset[str]:
    can = {base.Capability.BOUND, base.Capability.SAMPLE, base.Capability.LATENT}
    if isinstance(self.module, hierarchy.HierarchicalVAE):
      can.add(base.Capability.LAYERS)
    if self.module.num_classes:
      can.add(base.Capability.LABELS)
    return frozenset(can)

  @property
  def latents(self) -> int:
    return self.module.latents

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.module.image_shape)

  @property
  def num_classes(self) -> int:
    return self.module.num_classes

  def signature(self) -> dict:
    module = self.module
    return {**signature(module), "latents": module.latents,
            "conditional": bool(module.num_classes),
            "stochastic_layers": getattr(module, "stochastic_layers", 1),
            "layer_latents": tuple(getattr(module, "layer_latents", ()))}

  # Training.

  def init(self, key, frozen=None):
    del frozen
    init_key, sample_key = jax.random.split(key)
    dummy = jnp.zeros((1, *self.module.image_shape), jnp.float32)
    labels = given(jnp.zeros((1,), jnp.int32) if self.module.num_classes else None)
    return {"params": self.module.init(init_key, dummy, sample_key,
                                       method=type(self.module).initialize, **labels)["params"]}

  def loss(self, variables, batch, key, step, hyper):
    """The mean negative ELBO (`loss`) of the batch; with `weighted`, the weighted
    objective (`objective`) is minimised; with an estimator, its surrogate."""
    x, y, params = batch["x"], batch.get("y"), variables["params"]
    if self.estimator is not None:
      value = self._surrogate(params, x, key, y)
      return value, {"loss": value}, {}
    terms = objective.negative_elbo(self.module, params, x, key, y)
    loss = jnp.mean(terms["loss"])
    if not self.weighted:
      return loss, {"loss": loss}, {}
    weight = objective.kl_weight(step, hyper["beta"], hyper["kl_warmup_steps"])
    minimised = objective.weighted_objective(terms, weight, hyper["free_bits"])
    return minimised, {"loss": loss, "objective": minimised}, {}

  def _surrogate(self, params, x, key, y):
    """The batch's mean surrogate loss of the many-sample estimator: q's and p's
    parameters split (`estimators.split_params`) so each gets its estimator's gradient."""
    terms = estimators.vae_terms(self.module, x, key, self.train_samples, y)
    q, p = estimators.split_params(params, getattr(self.module.prior, "uses_encoder", False))
    return jnp.mean(estimators.surrogate(self.estimator, terms, q, p))

  def schedules(self, step, hyper):
    if not self.weighted:
      return {}
    return {"kl_weight": float(objective.kl_weight(jnp.float32(step), hyper["beta"],
                                                   hyper["kl_warmup_steps"]))}

  # Evaluation.

  def test_terms(self, variables, x, y, key):
    """The single-sample negative ELBO's `loss`, `recon`, `kl` (E,) and for a hierarchy
    `kl_per_layer` (E, L)."""
    terms = objective.negative_elbo(self.module, variables["params"], x, key, y)
    return {name: terms[name] for name in ("loss", "recon", "kl", "kl_per_layer") if name in terms}

  def bound_terms(self, variables, x, y, keys, k, sample_chunk):
    """`log_px`, the IWAE bound, the k-sample ELBO's `recon` and `kl` (see
    `objective.importance_terms`), `kl_per_dimension` and `posterior_mean` (E, L); for a
    hierarchy `kl_per_layer` (E, L) at one draw of the layers above per example (from
    `fold_in(keys[e], k)`) and `layer_means` (E, n_1 + ... + n_L)."""
    module, params = self.module, variables["params"]
    apply = lambda *args, **kw: module.apply({"params": params}, *args, **kw)
    terms = objective.importance_terms(module, params, x, keys, k, sample_chunk, y)
    mean, logvar = apply(x, method=module.encode, **given(y))
    kl_dims = apply(mean, logvar, method=module.kl_per_dimension)
    if kl_dims is None:  # No closed form: the per-latent split is not defined.
      kl_dims = jnp.full(mean.shape, jnp.nan, mean.dtype)
    stats = {"log_px": terms["iwae"], "recon": terms["recon"], "kl": terms["kl"],
             "kl_per_dimension": kl_dims, "posterior_mean": mean}
    if isinstance(module, hierarchy.HierarchicalVAE):
      layer_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, k)
      stats["kl_per_layer"] = apply(x, layer_keys, method=module.kl_per_layer)
      stats["layer_means"] = apply(x, method=module.posterior_means)
    return stats

  def summarize(self, stats, *, k, features):
    """The evaluate record: the ELBO, -log p(x) by the IWAE bound, bits/dim, active units.

    Returns:
      dict: `num_examples`, `k`; `elbo`, `elbo_stderr`, `recon`, `kl` (nats, the
      ELBO = -(recon + kl) is a lower bound on log p(x)); `nll`, `nll_stderr`
      (-log p_k(x), an upper bound on -log p(x)); `bits_per_dim` = nll / (D ln 2)
      (a discrete likelihood's bits for the logistic likelihood and for binary
      data; for grey levels under a Bernoulli or Gaussian it is not one);
      `active_units`, `latents`, `unit_activity` (Cov_x E_q[z_i] per latent;
      latent i is active when it exceeds 0.01, Burda et al. 2015);
      `kl_per_dimension` (mean over examples; None without a closed-form KL:
      another prior or posterior than the seed's, or a hierarchy); for a
      hierarchy `kl_per_layer` (mean over examples, layer 1 first) and
      `active_units_per_layer`; `conditional`: whether every log p(x) above is
      log p(x|y). The other latent statistics of a hierarchy are those of z_1.
    """
    stats = {name: np.asarray(v, np.float64) for name, v in stats.items()}
    elbo = -(stats["recon"] + stats["kl"])
    nll = -stats["log_px"]
    activity = unit_activity(stats["posterior_mean"])
    layers = {} if "kl_per_layer" not in stats else {
        "kl_per_layer": stats["kl_per_layer"].mean(axis=0).tolist(),
        "active_units_per_layer": active_units_per_layer(stats["layer_means"],
                                                         self.module.layer_latents)}
    return {
        "num_examples": len(nll), "k": k,
        "elbo": float(elbo.mean()), "elbo_stderr": base.standard_error(elbo),
        "recon": float(stats["recon"].mean()), "kl": float(stats["kl"].mean()),
        "nll": float(nll.mean()), "nll_stderr": base.standard_error(nll),
        "bits_per_dim": float(nll.mean() / (features * math.log(2))),
        "active_units": int(np.sum(activity > ACTIVE_UNIT_THRESHOLD)),
        "latents": len(activity), "unit_activity": activity.tolist(),
        "kl_per_dimension": (None if np.isnan(stats["kl_per_dimension"]).any()
                             else stats["kl_per_dimension"].mean(axis=0).tolist()),
        **layers, "conditional": bool(self.module.num_classes),
    }

  def figures(self, variables, x, y, key):
    """`reconstruction`: x over its posterior-mean reconstructions (2, R); `sample`: 64
    prior samples (8, 8), sample i of a conditional model of class i mod K; and for a
    conditional model `class_grid` (K, 10): row k decodes 10 prior draws with label k."""
    def run(m):
      mean, _ = m.encode(x, **given(y))
      z = m.sample_prior(key, NUM_SAMPLES)
      if y is None:
        return m.mean_image(m.decode(mean)), m.mean_image(m.decode(z))
      classes = jnp.arange(m.num_classes)
      grid_codes = jnp.broadcast_to(z[:GRID_COLUMNS], (len(classes), GRID_COLUMNS, z.shape[-1]))
      grid_labels = jnp.broadcast_to(classes[:, None], grid_codes.shape[:2])
      return (m.mean_image(m.decode(mean, y=y)),
              m.mean_image(m.decode(z, y=jnp.arange(NUM_SAMPLES) % len(classes))),
              m.mean_image(m.decode(grid_codes, y=grid_labels)))
    recon, samples, *grid = self.module.apply({"params": variables["params"]}, method=run)
    side = math.isqrt(NUM_SAMPLES)
    figures = {"reconstruction": jnp.stack([x, recon]),
               "sample": samples.reshape(side, side, *samples.shape[1:])}
    if grid:
      figures["class_grid"] = grid[0]
    return figures

  # Describing a run.

  def describe(self, params) -> str:
    """One line: the networks, the latents, the likelihood and the parameter count."""
    module = self.module
    shape = "x".join(map(str, module.image_shape))
    nets = f"{type(module.encoder).__name__}/{type(module.decoder).__name__}"
    condition = f", conditional on {module.num_classes} classes" if module.num_classes else ""
    sizes = getattr(module, "layer_latents", ())
    latents = (f"{len(sizes)} stochastic layers of {'/'.join(map(str, sizes))} latents"
               if len(sizes) > 1 else f"{module.latents} latents")
    return (f"VAE {nets}, {shape} images, {latents}{condition} "
            f"({type(module.likelihood).__name__}, {base.parameter_count(params):,} parameters)")

  def signature_differences(self, config) -> list[str]:
    # Runs before the families moved recorded the modules' old paths.
    moved = {f"vae_jax.{name}.": f"vae_jax.families.vae.{name}." for name in (
        "model", "priors", "posteriors", "hierarchy")}
    values = {k: v for k, v in config.items()}
    for k, v in values.items():
      for old, new in moved.items():
        if isinstance(v, str) and v.startswith(old):
          values[k] = new + v[len(old):]
    return super().signature_differences(values)

  def data_warnings(self, num_train: int) -> list[str]:
    prior = self.module.prior
    if isinstance(prior, priors.VampPrior) and prior.components > num_train:
      return [(f"prior_components={prior.components:,} exceeds the {num_train:,} training "
               "images: every step encodes each pseudo-input, so an epoch is that much slower "
               "for no gain; use fewer --config.prior_components")]
    return []

  def settings_text(self) -> str:
    """The family, prior, posterior, objective with its samples and gradient estimator, in
    short: `family vae, prior VampPrior(K=50), posterior IAF(T=2), objective iwae K=5,
    estimator dreg`."""
    module = self.module
    estimator = self.estimator or "elbo"
    objective = "iwae" if estimator in ("iwae", "dreg") else "elbo"
    gradient = estimator if estimator in ("dreg", "stl") else "reparam"
    if isinstance(module, hierarchy.HierarchicalVAE):  # Each layer's prior and posterior.
      prior, posterior = "top-down over the layers", "top-down (ladder)"
    else:
      prior, posterior = _short(module.prior), _short(module.posterior)
    return (f"family {self.name}, prior {prior}, posterior {posterior}, "
            f"objective {objective} K={self.train_samples}, "
            f"estimator {gradient}")


def _short(part) -> str:
  """A prior or posterior in a few characters: `VampPrior(K=50)`, `IAF(T=2)`."""
  if isinstance(part, (priors.MixtureOfGaussians, priors.VampPrior)):
    return f"{type(part).__name__}(K={part.components})"
  if isinstance(part, posteriors.IAF):
    return f"IAF(T={part.steps})"
  if isinstance(part, priors.StandardNormal):
    return "N(0,I)"
  if isinstance(part, posteriors.DiagonalGaussian):
    return "diagonal Gaussian"
  return type(part).__name__


ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, section 5.2.
NUM_SAMPLES = 64  # Prior samples in each epoch's figure (a square number).
GRID_COLUMNS = 10  # Samples per class in a conditional model's class grid.


def active_units_per_layer(means: np.ndarray, layer_latents: tuple[int, ...]) -> list[int]:
  """Active units of each layer of a hierarchy from its posterior means (N, sum of sizes)."""
  bounds = np.cumsum(layer_latents)[:-1]
  return [int(np.sum(unit_activity(m) > ACTIVE_UNIT_THRESHOLD))
          for m in np.split(np.asarray(means), bounds, axis=-1)]


def unit_activity(posterior_means: np.ndarray) -> np.ndarray:
  """Cov_x(E_q[z_i | x]) for each latent i: the variance over examples of (N, L) means."""
  return np.var(np.asarray(posterior_means, np.float64), axis=0)
