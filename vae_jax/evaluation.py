"""Evaluation: one masked, chunked engine and the statistics it computes, for any family.

The examples go to the devices once, as zero-padded chunks `(C, E, H, W, C)`
sharded along E (`Chunks`), or, for a test set streamed from the host, one
chunk `(E, H, W, C)` at a time (`vae_jax.streaming.StreamedChunks`: the same
chunks, the same numbers). `over_chunks` calls one jitted statistic per chunk and
gathers per-example results for the real examples; the host checks a stop
flag between chunks, so a long evaluation stops within one chunk of Ctrl-C.
Two statistics are computed per example, for every stacked model at once, by
the family (`vae_jax.families.base`):

  * `test_statistics`: the family's `test_terms` (the per-epoch test metrics; for
    the Gaussian VAE the single-sample negative ELBO, recon and KL), chunk c
    drawing from `fold_in(key, c)`;
  * `bound_statistics`: the family's `bound_terms` with k samples (example n
    draws from `fold_in(key, n)`, so chunk sizes never change the result):
    `log_px`, a bound on log p(x), and what the family's `summarize` reads.

`evaluate` turns the second into what `vae-jax evaluate` writes to eval.json
(for the Gaussian VAE: the ELBO, -log p(x) estimated by the IWAE bound with k
samples (Burda, Grosse & Salakhutdinov 2015; papers use k = 5,000), bits per
dimension and active units).

Nothing here trains: evaluating a trained model imports no optimizer.
"""
import contextlib
import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vae_jax import data
from vae_jax import objectives
from vae_jax import parallel
from vae_jax import stacked
from vae_jax import streaming
from vae_jax.errors import Interrupted
from vae_jax.errors import UsageError
from vae_jax.families import base
from vae_jax.errors import counted
from vae_jax.errors import value_range

TEST_BINARIZE_STREAM = 4  # The key stream (under the seed) that binarises evaluation inputs.


def evaluation_inputs(images: np.ndarray, *, binarize: str, seed: int,
                      on_host: bool = False) -> np.ndarray:
  """The uint8 images (N, H, W, C) every evaluation of `images` uses.

  With `binarize=dynamic` they are binarised once, with a key fixed by the
  seed, so that epochs, runs and `python -m vae_jax.evaluate` all compare.

  Args:
    images: uint8 (N, H, W, C).
    binarize: the run's binarization; with "dynamic", binarised from a key of
      `seed`.
    seed: the run's seed.
    on_host: binarise on the host's CPU device, not the default device (for a
      streamed test set, which need not fit the devices). On a CPU-only machine
      that is the same computation; on an accelerator the same bits are
      expected (threefry is integer arithmetic, x / 255 and the comparison are
      correctly rounded) but not yet checked on one.
  """
  if binarize != "dynamic":
    return images
  key = jax.random.fold_in(jax.random.key(seed), TEST_BINARIZE_STREAM)
  on = (jax.default_device(jax.local_devices(backend="cpu")[0]) if on_host
        else contextlib.nullcontext())
  with on:
    binary = data.binarize(key, data.to_unit_interval(np.asarray(images)))
    return np.asarray(binary * 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Chunks:
  """Examples on the devices in equal chunks.

  Attributes:
    images: uint8 (C, E, H, W, C), zero-padded, sharded along E; for a
      conditional model the pair (images, int32 labels (C, E)) (`data.examples`).
    num_examples: the real examples (the first ones in order).
  """

  images: jax.Array | tuple[jax.Array, jax.Array]
  num_examples: int

  @classmethod
  def place(cls, images, size: int, mesh) -> "Chunks":
    """Cuts uint8 images (N, H, W, C) (or the pair with labels (N,)) into chunks of `size`
    (a multiple of the device count)."""
    count = len(jax.tree.leaves(images)[0])
    if count == 0:
      raise UsageError("no examples to evaluate: the split has no images")

    def place(array):
      padded = parallel.pad_to_multiple(array, size)
      chunks = padded.reshape(-1, size, *array.shape[1:])
      return parallel.put(chunks, parallel.sharded(mesh, 1, chunks.ndim))
    return cls(jax.tree.map(place, images), count)

  @property
  def size(self) -> int:
    return jax.tree.leaves(self.images)[0].shape[1]

  def __len__(self) -> int:
    return jax.tree.leaves(self.images)[0].shape[0]

  def chunk_input(self, c: int) -> jax.Array:
    """The `images` a statistic takes for chunk `c`: all chunks, which it indexes by `c`."""
    del c
    return self.images


def over_chunks(statistic, chunks: Chunks, *, stop=None, description: str | None = None
        ) -> dict[str, np.ndarray]:
  """Per-example statistics of every real example, chunk by chunk.

  Args:
    statistic: `(images, chunk index) -> dict of (N, E, ...)` arrays for N
      stacked models, jitted; `images` is what `chunks.chunk_input` gives:
      all chunks (C, E, ...) or the chunk alone (E, ...).
    chunks: the examples: `Chunks`, or any object with its `num_examples`,
      `size`, `len` and `chunk_input` (`vae_jax.streaming.StreamedChunks`).
    stop: a callable checked before each chunk (`stopping.Stopper`): True stops.
    description: show a progress bar with this label (on a terminal).

  Returns:
    dict of numpy arrays (N, num_examples, ...).

  Raises:
    Interrupted: `stop` was set.
  """
  parts = []
  with tqdm(total=chunks.num_examples, desc=description, unit="img", leave=False,
            disable=None if description else True) as bar:
    for c in range(len(chunks)):
      if stop is not None and stop():
        raise Interrupted("evaluation")
      parts.append(parallel.to_host(statistic(chunks.chunk_input(c), jnp.int32(c))))
      bar.update(min(chunks.size, chunks.num_examples - c * chunks.size))
  return {name: np.concatenate([p[name] for p in parts], axis=1)[:, :chunks.num_examples]
          for name in parts[0]}


# ----------------------------------------------------------------------------
# The statistics, for N stacked models (variables with a leading axis, one key each).


@functools.partial(jax.jit, static_argnames=("family",))
def test_statistics(family, variables, keys, images, c) -> dict[str, jax.Array]:
  """The family's per-example test terms of chunk `c`, each (N, E, ...).

  Model i draws for chunk c from `fold_in(keys[i], c)`. `images`: all chunks
  (C, E, H, W, C) or chunk c alone (E, H, W, C).
  """
  batch, labels = data.unpack(_chunk(images, c))
  x = data.to_unit_interval(batch)

  def one(variables, key):
    return family.test_terms(variables, x, labels, jax.random.fold_in(key, c))

  return stacked.over_models(one, len(keys), (0, 0))(variables, keys)


@functools.partial(jax.jit, static_argnames=("family", "k", "sample_chunk"))
def bound_statistics(family, variables, keys, images, c, *, k: int,
                     sample_chunk: int) -> dict[str, jax.Array]:
  """The family's per-example statistics of its bound with k samples, chunk `c`: each
  (N, E, ...), `log_px` among them.

  Example e of the chunk is example n = c * E + e of the data set and draws
  from `fold_in(keys[i], n)` for model i. `images`: all chunks (C, E, H, W, C)
  or chunk c alone (E, H, W, C).
  """
  batch, labels = data.unpack(_chunk(images, c))
  x = data.to_unit_interval(batch)
  size = batch.shape[0]

  def one(variables, key):
    example_keys = objectives.example_keys(key, c * size + jnp.arange(size))
    return family.bound_terms(variables, x, labels, example_keys, k, sample_chunk)

  return stacked.over_models(one, len(keys), (0, 0))(variables, keys)


def _chunk(examples, c):
  """Chunk `c` (E, ...) of the chunked examples (C, E, ...): images, or images and
  labels; or the examples themselves when they are that chunk (streamed: only chunk
  c is on the devices)."""
  if jax.tree.leaves(examples)[0].ndim == 4:
    return examples
  return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, c, keepdims=False), examples)


# ----------------------------------------------------------------------------
# What the trainer logs and the evaluate command reports.


def test_metrics(family, variables, keys, chunks: Chunks, *, stop=None) -> list[dict]:
  """The mean over the test examples of each of the family's test terms, per model: a
  float64 scalar, or an array for a term with more axes (e.g. a hierarchy's
  `kl_per_layer`); `Family.epoch_metrics` makes the record of them."""
  stats = over_chunks(functools.partial(test_statistics, family, variables, keys), chunks,
                      stop=stop)
  return [{name: np.mean(v[i], axis=0, dtype=np.float64) for name, v in stats.items()}
          for i in range(len(keys))]


def bound_nll(family, variables, keys, chunks: Chunks, *, k: int, sample_chunk: int,
              stop=None, description: str | None = None) -> list[tuple[float, float]]:
  """(mean, standard error) of -log p_k(x), the family's bound, over the examples, per model."""
  stats = over_chunks(functools.partial(bound_statistics, family, variables, keys, k=k,
                                        sample_chunk=sample_chunk), chunks, stop=stop,
                      description=description)
  return [(float(-np.mean(b, dtype=np.float64)), base.standard_error(-b))
          for b in stats["log_px"]]


def evaluate(trained, images_u8: np.ndarray, *, k: int, key: jax.Array,
             sample_chunk: int = 100, example_chunk: int = 100, progress: bool = True,
             stop=None, labels: np.ndarray | None = None, streamed: bool = False) -> dict:
  """Evaluates one trained model on uint8 images (N, H, W, C) with k importance samples each.

  Memory is O(example_chunk * sample_chunk * D), independent of k and N;
  chunk sizes change speed and memory, never results. On a 2-core EPYC,
  10,000 decoder rows per step (100 x 100) ran 1.5 times faster than 50,000.

  Args:
    trained: a `TrainedModel` (e.g. from `vae_jax.load`) of a family with a bound on
      log p(x).
    images_u8: the inputs, e.g. from `evaluation_inputs`.
    k: importance samples per example.
    key: PRNG key; example n draws from `fold_in(key, n)`.
    sample_chunk: samples drawn at once per example.
    example_chunk: examples evaluated at once (rounded up to a multiple of the device count).
    progress: show a progress bar (on a terminal).
    stop: see `over_chunks`.
    labels: int (N,) labels of the images, for a conditional model (and only for
      one): the bounds are then on log p(x | y).
    streamed: read the images from the host a chunk at a time
      (`vae_jax.streaming.StreamedChunks`: for a memmap or lazy records larger
      than device memory); the same results.

  Returns:
    A JSON-ready dict: the family's `summarize` record (for the Gaussian VAE the
    ELBO, the NLL by the IWAE bound, bits/dim, active units, ...) and `seconds`.

  Raises:
    UsageError: the family has no bound on log p(x); labels missing for a
      conditional model, given to an unconditional one, or not one per image in
      0 .. num_classes - 1.
  """
  family = trained.family
  family.require(base.Capability.BOUND, "evaluate")
  images_u8 = images_u8 if streamed else np.asarray(images_u8)
  num_classes = family.num_classes
  if streamed and num_classes:
    raise UsageError("a conditional model is evaluated on device-resident data only; "
                     "its test set would be streamed")
  examples = images_u8 if streamed else _with_labels(images_u8, labels, num_classes)
  mesh = parallel.make_mesh()
  size = min(example_chunk, len(images_u8)) if len(images_u8) else example_chunk
  size = -(-size // mesh.size) * mesh.size
  chunks = (streaming.StreamedChunks(images_u8, size, mesh) if streamed
            else Chunks.place(examples, size, mesh))
  start = time.perf_counter()
  statistic = functools.partial(bound_statistics, family, stacked.stack(trained.variables),
                                key[None], k=k, sample_chunk=sample_chunk)
  try:
    stats = over_chunks(statistic, chunks, stop=stop,
                        description=f"IWAE k={k}" if progress else None)
  finally:
    if streamed:
      chunks.close()
  record = family.summarize(stacked.index(stats, 0), k=k,
                            features=math.prod(images_u8.shape[1:]))
  return {**record, "seconds": time.perf_counter() - start}


def _with_labels(images: np.ndarray, labels, num_classes: int):
  """`images`, or (images, labels) for a conditional model, checked."""
  if not num_classes:
    if labels is not None:
      raise UsageError("labels given, but the model is not conditional")
    return images
  if labels is None:
    raise UsageError(f"the model is conditional on {num_classes} classes: pass the images' labels")
  labels = np.asarray(labels)
  if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
    raise UsageError(f"expected {counted(len(images), 'integer label')}, one per image; got "
                     f"{labels.dtype} of shape {labels.shape}")
  if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
    raise UsageError(f"labels must lie in 0 .. {num_classes - 1}; got "
                     f"{value_range(labels.min(), labels.max())}")
  return images, labels.astype(np.int32)


# ----------------------------------------------------------------------------
# Names of the Gaussian-VAE-only engine before families (deprecated; one release).


def __getattr__(name: str):
  from vae_jax.families import vae as vae_family  # pylint: disable=g-import-not-at-top
  old = {
      "elbo_statistics": lambda model, params, keys, images, c: test_statistics(
          vae_family.GaussianVAE(model), {"params": params}, keys, images, c),
      "importance_statistics": lambda model, params, keys, images, c, **kw: _renamed(
          bound_statistics(vae_family.GaussianVAE(model), {"params": params}, keys, images, c,
                           **kw)),
      "test_elbo": lambda model, params, keys, chunks, **kw: [
          {k: float(v) if np.ndim(v) == 0 else v.tolist() for k, v in m.items()}
          for m in test_metrics(vae_family.GaussianVAE(model), {"params": params}, keys, chunks,
                                **kw)],
      "iwae_nll": lambda model, params, keys, chunks, **kw: bound_nll(
          vae_family.GaussianVAE(model), {"params": params}, keys, chunks, **kw),
      "unit_activity": vae_family.unit_activity,
      "active_units_per_layer": vae_family.active_units_per_layer,
      "standard_error": base.standard_error,
      "ACTIVE_UNIT_THRESHOLD": vae_family.ACTIVE_UNIT_THRESHOLD,
  }
  if name not in old:
    raise AttributeError(f"module 'vae_jax.evaluation' has no attribute {name!r}")
  import warnings  # pylint: disable=g-import-not-at-top
  warnings.warn(f"vae_jax.evaluation.{name} is the Gaussian VAE's: see vae_jax.families.vae and "
                "the family-generic test_statistics, bound_statistics, test_metrics, bound_nll",
                DeprecationWarning, stacklevel=2)
  return old[name]


def _renamed(stats: dict) -> dict:
  """The bound's statistics under their names before families: `iwae` for `log_px`."""
  return {("iwae" if k == "log_px" else k): v for k, v in stats.items()}
