"""The core config fields, declared once, and the `Field` that declares every field.

A field is one `Field`: its default, help, allowed values, whether it fixes
the parameter shapes (`shapes`), whether it can be swept per model
(`sweepable`), its value for a `config.json` written before it existed
(`legacy`). The core's fields are here (data, network, training, optimizer,
models, evaluation, output); each model family declares its own in its module
(`vae_jax.families`), and `vae_jax.schema` puts them together into the config
(defaults, checks, `--help`, the settings each part of a run takes).

This module imports nothing of vae_jax but its errors, so the data readers can
read their fields' declarations without importing any model code.
"""
import dataclasses
from typing import Any

from vae_jax.errors import UsageError

_UNSET = object()
_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               tuple: "a list of integers"}


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field.

  Attributes:
    name: the key, as in `--config.NAME=VALUE`.
    default: its value in the default config (the PyTorch tutorial's model).
    help: one line for `--help` and the docs.
    group: data | model (the networks and p(x|z)) | training | optimizer (what
      `vae_jax.optim` builds the optax transformation from) | models | evaluation |
      output; a family's own fields: the family's name.
    choices: the allowed values, for a field that names one of several.
    low, high: bounds; `strict` makes them exclusive (`> low`, `< high`).
    shapes: the field decides the parameter shapes (or what a checkpoint holds):
      a workdir restores only into a config that agrees on it.
    sweepable: `--config.sweep.NAME=a,b,c` gives each stacked model its own
      value; such a field becomes a traced per-model setting of the step.
    legacy: its value for a config.json written before the field existed
      (by default `default`).
    hint: said after the bound in the error, e.g. "(0 keeps the size)".
    host_only: a sweepable field the host consumes (the seed builds the keys),
      not a traced setting of the step.
    resolved: filled in by the run (from the data or the user's network) and
      written to config.json; not a field of the default config.
    required: every config.json has held it: one without it was edited by hand,
      and is refused rather than given the default (it fixes parameter shapes).
  """

  name: str
  default: Any
  help: str
  group: str
  choices: tuple = ()
  low: float | None = None
  high: float | None = None
  strict: bool = False
  shapes: bool = False
  sweepable: bool = False
  legacy: Any = _UNSET
  hint: str = ""
  resolved: bool = False
  host_only: bool = False
  required: bool = False

  @property
  def kind(self) -> type:
    return type(self.default)

  def has_kind(self, value) -> bool:
    """Whether `value` has the field's type: an int for an int field (not a bool), a
    number for a float one, a list or tuple of ints for a tuple one."""
    kind = self.kind
    if kind is bool:
      return isinstance(value, bool)
    if kind is int:
      return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
      return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is tuple:
      return isinstance(value, (tuple, list)) and all(
          isinstance(v, int) and not isinstance(v, bool) for v in value)
    return isinstance(value, kind)

  @property
  def legacy_value(self) -> Any:
    return self.default if self.legacy is _UNSET else self.legacy

  def check(self, value) -> None:
    """Raises UsageError when `value` is not of the field's type or not allowed."""
    if not self.has_kind(value):
      raise UsageError(f"{self.name} must be {_KIND_NAMES.get(self.kind, self.kind.__name__)}, "
                       f"got {value!r}")
    if self.choices and value not in self.choices:
      raise UsageError(f"unknown {self.name} {value!r}; choose one of "
                       f"{', '.join(map(str, self.choices))}")
    if self.low is not None and self.high is not None:
      inside = self.low < value < self.high if self.strict else self.low <= value <= self.high
      if not inside:
        brackets = "()" if self.strict else "[]"
        raise UsageError(f"{self.name} must lie in {brackets[0]}{self.low:g}, {self.high:g}"
                         f"{brackets[1]}{self.hint}, got {value}")
    elif self.low is not None and not (value > self.low if self.strict else value >= self.low):
      relation = ">" if self.strict else ">="
      raise UsageError(f"{self.name} must be {relation} {self.low:g}{self.hint}, got {value}")


def _f(name, default, help_text, group, **options) -> Field:
  return Field(name, default, help_text, group, **options)


# The declarations, in the order --help shows them. The sweepable fields' order is
# the sweep's (its Cartesian product varies the last one fastest): keep it.
FIELDS: dict[str, Field] = {f.name: f for f in [
    # Data.
    _f("dataset", "", "mnist | fashion_mnist (downloaded) | mnist_sample (shipped) | shapes2d "
       "(dSprites' factor grid, rendered) | "
       "tfds:NAME; with data_dir, a name of your own for the results (a known data set's "
       "name only where data_dir holds that data set, else the data's own). Empty: mnist, or "
       "mnist_sample when no mirror is reachable (so that the first command works on any "
       "machine); with "
       "data_dir, the data's own name", "data"),
    _f("data_dir", "", "IDX files, one .npz (or the file itself), or PNG/JPEG images; empty: "
       "the dataset by name", "data"),
    _f("cache_dir", "", "where mnist and fashion_mnist are downloaded to; empty: "
       "$VAE_JAX_CACHE or ~/.cache/vae_jax", "data"),
    _f("tfds_data_dir", "", "where tfds keeps prepared data (dataset=tfds:NAME); empty: its "
       "default", "data"),
    _f("test_fraction", 0.1, "share of the images held out for testing when the input has no "
       "test split, drawn with a fixed seed (not `seed`), so every run tests on the same images",
       "data", low=0.0, high=1.0, strict=True),
    _f("image_size", 0, "S > 0: centre-crop every image to a square, resize to S x S; 0: keep",
       "data", low=0, hint=" (0 keeps the size)"),
    _f("train_subset", 0, "N > 0: train on a fixed random subset of N training images (drawn "
       "with a fixed seed, not `seed`), for quick runs on any data; the test split stays whole; "
       "0: all", "data", low=0, hint=" (0 keeps every image)"),
    _f("folder_cache", "auto", "image folders: auto (decode those of 10,000 images or more "
       "once into an .npy cache, reused while the folder is unchanged) | always | never",
       "data", choices=("auto", "always", "never")),
    _f("data_placement", "auto", "device: the training set in device memory (the fastest "
       "epoch) | stream: read batch by batch from the host (a memmap), for data larger than "
       "device memory | auto: device when it fits device_data_budget, else stream", "data",
       choices=("auto", "device", "stream")),
    _f("device_data_budget", 0.0, "GiB of device memory the training set may take with "
       "data_placement=auto (counting its shuffled copy); 0: the device's free memory (host "
       "memory for CPU devices)", "data", low=0.0),
    _f("binarize", "none", "none: grey levels as targets; dynamic: a Bernoulli draw per step",
       "data", choices=("none", "dynamic")),
    # Model: the network and p(x|z).
    _f("family", "vae", "the model family (vae_jax.families; `vae-jax train --help` lists "
       "them): vae, the Gaussian VAE", "model", shapes=True, legacy="vae"),
    _f("image_shape", (28, 28, 1), "(H, W, C) of the images, from the data", "model",
       shapes=True, resolved=True, required=True),
    _f("model", "mlp", "mlp (the tutorial's) | conv (the Keras/TensorFlow tutorials')", "model",
       choices=("mlp", "conv"), shapes=True, required=True),
    _f("hidden", 400, "mlp: hidden units of the encoder and decoder", "model", low=0,
       strict=True, shapes=True, required=True),
    _f("hidden_layers", 1, "mlp: hidden layers of the encoder and of the decoder", "model",
       low=0, strict=True, shapes=True, legacy=1),
    _f("activation", "relu", "mlp: relu | tanh | gated (GatedDense, the VampPrior paper's)",
       "model", choices=("relu", "tanh", "gated"), shapes=True, legacy="relu"),
    _f("latents", 20, "dimension of z", "model", low=0, strict=True, shapes=True, required=True),
    _f("conv_features", (32, 64), "conv: channels of the stride-2 convolutions", "model",
       shapes=True, required=True),
    _f("decoder", "mlp", "mlp | linear (the mlp model without the decoder's hidden layer)",
       "model", choices=("mlp", "linear"), shapes=True, required=True),
    _f("likelihood", "bernoulli", "bernoulli | gaussian | logistic (8-bit discretised)", "model",
       choices=("bernoulli", "gaussian", "logistic"), shapes=True, required=True),
    _f("obs_scale", 1.0, "gaussian: the fixed standard deviation, or its initial value when "
       "learned; logistic: the initial scale", "model", low=0.0, strict=True),
    _f("learn_obs_scale", False, "gaussian: learn the scale", "model", shapes=True, required=True),
    _f("conditional", False, "give the encoder and the decoder each example's label (one-hot; "
       "a conditional VAE: q(z|x,y), p(x|z,y), p(z) as set by prior); needs data with labels",
       "model", shapes=True, legacy=False),
    _f("num_classes", 0, "conditional: labels 0 .. num_classes - 1, from the data", "model",
       shapes=True, resolved=True, legacy=0),
    _f("logistic_scale", "channel", "logistic: one learned scale per channel | pixel", "model",
       choices=("channel", "pixel"), shapes=True, required=True),
    # Optimisation.
    _f("stage", "", "the training stage of a family that trains in more than one (a prior "
       "fitted on a trained encoder's codes); empty: the first", "training", resolved=True,
       legacy=""),
    _f("parent_step", 0, "a later stage's: the checkpoint step of the stage before, whose "
       "variables it was trained with (frozen)", "training", resolved=True, legacy=0),
    _f("train_size", 0, "the number of training images (after train_subset), from the data: "
       "what an estimate over the training set weighs by (beta-TCVAE's log q(z))", "training",
       resolved=True, legacy=0),
    _f("num_epochs", 20, "epochs to train (a rerun with more trains further)", "training",
       low=0, strict=True),
    _f("batch_size", 128, "examples per step, over all devices", "training", low=0,
       strict=True),
    _f("optimizer", "adam", "adam | adamw (decoupled weight decay)", "optimizer",
       choices=("adam", "adamw")),
    _f("seed", 0, "the seed of model 0; model i uses seed + i unless seeds are swept",
       "training", sweepable=True, host_only=True),
    _f("learning_rate", 1e-3, "the peak learning rate", "training", low=0.0, strict=True,
       sweepable=True),
    _f("weight_decay", 0.0, "adamw only", "optimizer", low=0.0),
    _f("lr_schedule", "constant", "constant | cosine (to 0 at the last step) | burda (the IWAE "
       "paper's: 8 stages, stage i taking 3^i/3280 of the run at 10^(-i/7) times the rate)",
       "optimizer", choices=("constant", "cosine", "burda")),
    _f("adam_eps", 1e-8, "Adam's epsilon (the IWAE paper's: 1e-4)", "optimizer", low=0.0,
       strict=True, legacy=1e-8),
    _f("warmup_steps", 0, "linear learning-rate warm-up", "optimizer", low=0),
    _f("skip_threshold", 0.0, "skip an update whose gradient norm is non-finite or above this "
       "many times its running level (an average over about 100 steps, from step 20 on), as "
       "VDVAE does; skips are counted in metrics.jsonl; 0: off", "optimizer", low=0.0),
    _f("grad_clip_norm", 0.0, "clip gradients to this global norm; 0: off", "optimizer",
       low=0.0),
    _f("matmul_precision", "float32", "precision of matrix products: float32 everywhere, so "
       "results agree across CPU, GPU and TPU; default | tf32 | bf16 trade accuracy for speed "
       "on accelerators", "training", choices=("float32", "default", "tf32", "bf16")),
    _f("compute_dtype", "float32", "float32 | bfloat16 activations and products; parameters "
       "stay float32", "model", choices=("float32", "bfloat16")),
    # Several models in one program.
    _f("num_models", 1, "models in one program (vmapped): model i uses seed + i", "models",
       low=1, shapes=True, legacy=1),
    _f("independent_data_order", False, "each model sees the data in its own order", "models"),
    _f("model_mapping", "auto", "how num_models > 1 share the program: vmap (batched products) | "
       "sequential (one after another, each the single-model program: N x one model's time) | "
       "auto (sequential on CPU, vmap on GPU and TPU)", "models",
       choices=("auto", "vmap", "sequential"), legacy="vmap"),
    # Evaluation and output.
    _f("eval_batch_size", 1000, "test examples per evaluation step", "evaluation", low=0,
       strict=True),
    _f("eval_iwae_every", 0, "epochs between IWAE bounds on the test set; 0: never",
       "evaluation", low=0),
    _f("eval_iwae_k", 1000, "importance samples of the IWAE bound", "evaluation", low=0,
       strict=True),
    # 100 x 100 decoder rows per step ran 1.5x faster than 500 x 100 on a 2-core CPU.
    _f("iwae_sample_chunk", 100, "importance samples drawn at once per example (speed and "
       "memory, never results)", "evaluation", low=0, strict=True),
    _f("iwae_example_chunk", 100, "examples at once in the IWAE bound (speed and memory, never "
       "results)", "evaluation", low=0, strict=True),
    _f("disentanglement_every", 0, "epochs between the disentanglement metrics of every model "
       "(vae_jax.disentanglement_eval), written to metrics.jsonl as disentanglement_NAME; needs "
       "data with known factors (shapes2d, dSprites); 0: never", "evaluation", low=0),
    _f("disentanglement_scale", 1.0, "share of disentanglement_lib's numbers of points "
       "(disentanglement.Sizes) the per-epoch metrics draw: 1 is theirs; less is quicker and "
       "noisier", "evaluation", low=0.0, strict=True),
    _f("checkpoint_every_epochs", 1, "epochs between checkpoints (and after the last)",
       "output", low=0, strict=True),
    _f("keep_checkpoints", 3, "checkpoints kept in the workdir", "output", low=0, strict=True),
    _f("chunks_per_epoch", 10, "the epoch runs as about this many lax.scan calls; progress, "
       "non-finite checks and Ctrl-C act between them", "output", low=0, strict=True),
]}


def group(name: str, fields: dict[str, Field] | None = None) -> tuple[Field, ...]:
  """The fields of one group (of the core's by default), in declaration order."""
  return tuple(f for f in (FIELDS if fields is None else fields).values() if f.group == name)


def choices(name: str) -> tuple:
  """The allowed values of core field `name`."""
  return FIELDS[name].choices


def settings_class(name: str, fields, doc: str = "") -> type:
  """A frozen dataclass with one attribute per field (its default the field's): the
  settings a part of a run takes, hashable so jitted functions can take it as static."""
  cls = dataclasses.make_dataclass(
      name, [(f.name, f.kind, dataclasses.field(default=_frozen(f.default))) for f in fields],
      frozen=True)
  cls.__doc__ = doc or f"The config fields {', '.join(f.name for f in fields)}."
  return cls


def settings_of(cls: type, config, **overrides):
  """An instance of a `settings_class` from a config (or any object with the attributes),
  each missing field at its default; lists become tuples."""
  names = [f.name for f in dataclasses.fields(cls)]
  get = (lambda n: config[n]) if hasattr(config, "keys") else (lambda n: getattr(config, n))
  has = (lambda n: n in config) if hasattr(config, "keys") else (lambda n: hasattr(config, n))
  values = {n: _frozen(get(n)) for n in names if has(n)}
  return cls(**{**values, **overrides})


def _frozen(value):
  """Lists (JSON gives them back) as tuples: hashable, and equal to the config's tuples."""
  return tuple(value) if isinstance(value, list) else value
