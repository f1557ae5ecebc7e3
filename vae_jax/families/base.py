"""The model-family interface: what training, evaluation and the latent API ask of a family.

A family is a frozen dataclass (hashable, so jitted functions take it as a
static argument) built from a resolved config by `from_config`. It holds its
flax module and answers, for ONE model (the trainer maps over stacked models):

  * training: `init` (the variables: `params` and any non-gradient collection,
    e.g. an EMA codebook) and `loss(variables, batch, key, step, hyper)` ->
    (the scalar to minimise, a dict of metrics, the non-gradient collections
    after the step). The trainer sums the metrics over the epoch (each of any
    shape) and writes `train_NAME` for each, through `epoch_metrics`; it never
    looks inside them.
  * evaluation: `test_terms` (per-example metrics of the test set, written
    as `test_NAME` every epoch) and, with the `BOUND` capability, `bound_terms`
    (per-example statistics of a bound on log p(x) with k samples: `log_px`
    and whatever `summarize` turns into an `evaluate` record).
  * what it can do beyond training, declared in `capabilities` (never probed):
    a command or function that needs one the family lacks refuses in one line
    naming it (`require`).

Variables are flax's: `{"params": ..., "COLLECTION": ...}`. Only `params` get
gradients and an optimizer; the other collections are the family's
non-gradient state, returned by `loss` and carried, checkpointed and restored
by the trainer. Parameters may form several groups, each with its own
optimizer settings (`parameter_groups`, e.g. an adversarial discriminator).
`loss` returns ONE scalar whose gradient with respect to each group is that
group's gradient: a family whose groups have different objectives composes them
with `jax.lax.stop_gradient` (`loss_g1(p1, sg(p2)) + loss_g2(sg(p1), p2)`).

A family may train in more than one stage (`stages`, e.g. a prior fitted on a
trained encoder's codes): each later stage is a family of its own, built with
the trained family of the stage before (`parent`) and trained in a folder of
the first stage's workdir (`vae_jax.train.train_stage`); its `init` receives
that stage's trained variables as `frozen`, which it keeps, unchanged, in its
own non-gradient state (so a checkpoint of the stage holds everything it needs).
"""
import dataclasses
import math
from typing import Any, ClassVar

import jax
import numpy as np

from vae_jax.errors import UsageError

Variables = dict[str, Any]


class Capability:
  """What a family can do beyond training; each a string a family lists in `capabilities`."""

  BOUND = "a bound on log p(x)"  # `bound_terms`: evaluate, the per-epoch NLL bound.
  SAMPLE = "samples"  # `sample`: draws x ~ p(x) (from a prior over the latents).
  LATENT = "continuous latent codes"  # encode/decode: interpolation, traversals, maps, explorer.
  CODES = "discrete codes"  # encode_codes, decode_codes, ...: a grid of code indices.
  LAYERS = "stochastic layers"  # A hierarchy: per-layer terms, reconstruct_keeping, from_top.
  LABELS = "labels"  # Conditional on a label: every read of x or decode of z takes y.


@dataclasses.dataclass(frozen=True)
class ParameterGroup:
  """Parameters with their own optimizer settings.

  Attributes:
    name: the group's name (in metrics and messages).
    keys: the top-level names of `params` in the group.
    adam: the group's Adam settings over the run's, as (name, value) pairs:
      `learning_rate`, `b1`, `b2`, `eps`.
  """

  name: str
  keys: tuple[str, ...]
  adam: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class Family:
  """The base of every family; see the module docstring for the protocol.

  Class attributes (declared by each family):
    name: what `--config.family=NAME` selects.
    fields: the config fields it reads beyond the core's (`vae_jax.fields.Field`s
      declared in its module; `vae_jax.schema` adds them to the config).
    settings_type: the frozen dataclass of the fields `build` takes: the core's
      network fields and its own (`vae_jax.fields.settings_class`).
    stages: its training stages after the first: name -> the family class that
      trains it (built with `parent`, the trained family of the stage before).
    bound_metric: the per-epoch record of `bound_terms`, `test_NAME` (the
      negative mean of `log_px`), with `_stderr`.
    labels: short names of its metrics on the terminal (e.g. `{"kl": "KL"}`).
    headline: its main test metric: shown first, and the best of several models
      is the one lowest in it.
    signature_fields: the config fields `signature` records for a user's own module
      (their values there are the module's parts, not the config's choices).
  """

  name: ClassVar[str] = ""
  fields: ClassVar[tuple] = ()
  settings_type: ClassVar[type] = type(None)
  stages: ClassVar[dict[str, type["Family"]]] = {}
  bound_metric: ClassVar[str] = "nll_bound"
  labels: ClassVar[dict[str, str]] = {}
  headline: ClassVar[str] = "loss"
  signature_fields: ClassVar[tuple[str, ...]] = ()

  @property
  def capabilities(self) -> frozenset[str]:
    """The `Capability` values of this family (of this instance: a conditional model
    takes labels, a hierarchy has layers)."""
    return frozenset()

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images the family's module takes."""
    raise NotImplementedError

  @property
  def num_classes(self) -> int:
    """K of a family conditional on labels 0 .. K - 1 (capability LABELS); 0 otherwise."""
    return 0

  def signature(self) -> dict:
    """The config fields a user's own module decides (its class, its parts, its
    latents), which config.json records so that `load` can tell another module from
    the one a run trained; {} for none."""
    return {}

  def signature_differences(self, config) -> list[str]:
    """'field recorded vs this module's' for each `signature` value a run's config.json
    records otherwise (lists and tuples compare alike)."""
    same = lambda a, b: (tuple(a) if isinstance(a, (list, tuple)) else a) == (
        tuple(b) if isinstance(b, (list, tuple)) else b)
    return [f"{k} {config[k]} vs {v}" for k, v in self.signature().items()
            if k in config and not same(config[k], v)]

  def can(self, capability: str) -> bool:
    return capability in self.capabilities

  def require(self, capability: str, what: str) -> None:
    """Raises UsageError when the family lacks `capability`, which `what` needs."""
    if capability not in self.capabilities:
      raise UsageError(f"{what} needs {capability}, which family {self.name} does not have")

  @classmethod
  def check(cls, settings, models: list[dict]) -> None:
    """Raises UsageError when the family's settings do not go together (before any data
    is read: `settings.image_shape` is then None)."""
    del settings, models

  @classmethod
  def build(cls, settings, models: list[dict], module=None,
            parent: "Family | None" = None) -> "Family":
    """The family of a resolved config's `settings_type` instance, for stacked models
    with the sweepable settings `models` (one dict each: static choices, such as
    whether any model weighs its KL, may depend on them); `module`: a user's own
    flax module instead of the one the settings describe; `parent`: for a later
    stage, the family of the stage before."""
    raise NotImplementedError

  # Training.

  def init(self, key: jax.Array, frozen: Variables | None = None) -> Variables:
    """The initial variables of one model, drawn from `key`; `frozen`: a later stage's
    trained variables of the stage before."""
    raise NotImplementedError

  def loss(self, variables: Variables, batch: dict, key: jax.Array, step: jax.Array,
           hyper: dict) -> tuple[jax.Array, dict, Variables]:
    """One batch's objective.

    Args:
      variables: the model's variables (params and non-gradient collections).
      batch: `x` float32 (B, H, W, C) in [0, 1], and `y` int32 (B,) where the
        family takes labels.
      key: the step's key.
      step: the 0-based step (int32 scalar).
      hyper: the model's sweepable settings (traced scalars), by field name.

    Returns:
      (the scalar to minimise, its metrics by name: scalars, or arrays such as code
      counts that `epoch_metrics` turns into numbers, the non-gradient collections
      after the step: `{}` for a family without any).
    """
    raise NotImplementedError

  def variable_shapes(self, frozen=None):
    """The shapes of one model's variables (`init`'s), without running it; `frozen`: for
    a later stage, the shapes of the stage before's variables."""
    return jax.eval_shape(lambda key, given: self.init(key, given), jax.random.key(0), frozen)

  def parameter_groups(self) -> tuple[ParameterGroup, ...]:
    """Groups of parameters with their own optimizer; () for one group with the run's."""
    return ()

  def epoch_metrics(self, means: dict[str, np.ndarray]) -> dict[str, Any]:
    """What an epoch's record holds of the metrics (`train_NAME`, `test_NAME`), from
    their means: over the epoch's steps (of `loss`'s metrics) or over the test examples
    (of `test_terms`). Default: each mean, a float or a list; a family may turn a mean
    into another number (e.g. mean code counts into a perplexity) or leave one out."""
    return {name: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()
            for name, v in means.items()}

  def schedules(self, step, hyper: dict) -> dict[str, Any]:
    """Values the objective uses at `step` (a KL weight, a capacity), recorded each epoch."""
    del step, hyper
    return {}

  # Evaluation.

  def test_terms(self, variables: Variables, x: jax.Array, y: jax.Array | None,
                 key: jax.Array) -> dict[str, jax.Array]:
    """Per-example test metrics of images x (E, H, W, C): each (E,) or (E, ...)."""
    raise NotImplementedError

  def bound_terms(self, variables: Variables, x: jax.Array, y: jax.Array | None,
                  keys: jax.Array, k: int, sample_chunk: int) -> dict[str, jax.Array]:
    """Per-example statistics of a bound on log p(x) with k samples (capability BOUND).

    Example e draws from `keys[e]` only, so that chunking never changes a result.
    Returns `log_px` (E,), a lower bound on log p(x) (log p(x|y) with labels),
    and what `summarize` reads.
    """
    raise NotImplementedError

  def summarize(self, stats: dict, *, k: int, features: int) -> dict:
    """The `evaluate` record (JSON-ready) of one model's per-example `bound_terms`."""
    raise NotImplementedError

  def figures(self, variables: Variables, x: jax.Array, y: jax.Array | None,
              key: jax.Array) -> dict[str, jax.Array]:
    """Each epoch's figures: name -> a grid of images (rows, cols, H, W, C) in [0, 1]
    (`images/NAME_EPOCH.png`); x: a few test images (R, H, W, C) (y: their labels)."""
    del variables, x, y, key
    return {}

  # Discrete codes (capability CODES): what the latent API calls on a family whose latent
  # is a grid of code indices (`vae_jax.families.discrete`).

  @property
  def code_grid(self) -> tuple[int, int]:
    """(h, w): the positions of one image's codes (CODES)."""
    raise NotImplementedError

  @property
  def num_codes(self) -> int:
    """K: codes are indices in [0, K) (CODES)."""
    raise NotImplementedError

  def encode_codes(self, variables: Variables, x: jax.Array) -> jax.Array:
    """The code indices of images x (N, H, W, C) in [0, 1]: int32 (N, h, w) (CODES)."""
    raise NotImplementedError

  def decode_codes(self, variables: Variables, codes: jax.Array) -> jax.Array:
    """E[x | codes] of int codes (..., h, w): images (..., H, W, C) in [0, 1] (CODES)."""
    raise NotImplementedError

  def encoder_outputs(self, variables: Variables, x: jax.Array) -> jax.Array:
    """The encoder's continuous outputs before quantisation: (N, h, w, D) (CODES)."""
    raise NotImplementedError

  def decode_outputs(self, variables: Variables, z: jax.Array) -> jax.Array:
    """Encoder outputs (..., h, w, D), quantised, decoded: images (..., H, W, C) (CODES)."""
    raise NotImplementedError

  def sample_codes(self, variables: Variables, key: jax.Array, num: int,
                   temperature: float = 1.0) -> jax.Array:
    """num code grids drawn from the family's prior over codes: int32 (num, h, w) (CODES
    and SAMPLE)."""
    raise NotImplementedError

  # Describing a run.

  def describe(self, params) -> str:
    """One line for the start of a run: the networks, the latents, the parameter count."""
    raise NotImplementedError

  def settings_text(self) -> str:
    """What sets this model and its objective apart from the defaults, in a few words."""
    return f"family {self.name}"

  def data_warnings(self, num_train: int) -> list[str]:
    """Warning lines (without "warning: ") about settings that fit the data badly (`num_train`
    training images), said once at the start of a run; none by default."""
    del num_train
    return []


def parameter_count(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def standard_error(values) -> float | None:
  """The standard error of the mean of (N,) values; None (JSON null) when N < 2."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return None
  return float(np.std(values, ddof=1) / math.sqrt(len(values)))
