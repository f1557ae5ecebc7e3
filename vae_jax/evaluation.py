"""Evaluation: one masked, chunked engine and the statistics it computes.

The examples go to the devices once, as zero-padded chunks `(C, E, H, W, C)`
sharded along E (`Chunks`), or, for a test set streamed from the host, one
chunk `(E, H, W, C)` at a time (`vae_jax.streaming.StreamedChunks`: the same
chunks, the same numbers). `over_chunks` calls one jitted statistic per chunk and
gathers per-example results for the real examples; the host checks a stop
flag between chunks, so a long evaluation stops within one chunk of Ctrl-C.
Two statistics are computed per example, for every stacked model at once:

  * `elbo_statistics`: the single-sample negative ELBO, recon and KL (the
    per-epoch test loss; z for chunk c drawn from `fold_in(key, c)`);
  * `importance_statistics`: the IWAE bound with k samples, the k-sample
    ELBO's terms, the KL per latent and the posterior mean (example n draws
    from `fold_in(key, n)`, so chunk sizes never change the result).

`evaluate` turns the second into what `python -m vae_jax.evaluate` writes to
eval.json: the ELBO, the negative log-likelihood -log p(x) estimated by the
IWAE bound (Burda, Grosse & Salakhutdinov 2015; papers use k = 5,000), bits
per dimension and active units (latent i is active when Cov_x E_q[z_i|x] > 0.01).
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

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, section 5.2.
TEST_BINARIZE_STREAM = 4  # The key stream (under the seed) that binarises evaluation inputs.


def evaluation_inputs(images: np.ndarray, config, *, on_host: bool = False) -> np.ndarray:
  """The uint8 images (N, H, W, C) every evaluation of `images` uses.

  With `binarize=dynamic` they are binarised once, with a key fixed by the
  seed, so that epochs, runs and `python -m vae_jax.evaluate` all compare.

  Args:
    images: uint8 (N, H, W, C).
    config: reads `binarize` and `seed`.
    on_host: binarise on the host's CPU device, not the default device (for a
      streamed test set, which need not fit the devices). On a CPU-only machine
      that is the same computation; on an accelerator the same bits are
      expected (threefry is integer arithmetic, x / 255 and the comparison are
      correctly rounded) but not yet checked on one.
  """
  if config.binarize != "dynamic":
    return images
  key = jax.random.fold_in(jax.random.key(config.seed), TEST_BINARIZE_STREAM)
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
# The statistics, for N stacked models (params with a leading axis, one key each).


@functools.partial(jax.jit, static_argnames=("model",))
def elbo_statistics(model, params, keys, images, c) -> dict[str, jax.Array]:
  """Single-sample negative ELBO terms of chunk `c`: `loss`, `recon`, `kl`, each (N, E),
  and for a hierarchy `kl_per_layer` (N, E, L).

  Model i draws z for chunk c from `fold_in(keys[i], c)`. `images`: all chunks
  (C, E, H, W, C) or chunk c alone (E, H, W, C).
  """
  batch, labels = data.unpack(_chunk(images, c))
  x = data.to_unit_interval(batch)

  def one(params, key):
    terms = objectives.negative_elbo(model, params, x, jax.random.fold_in(key, c), labels)
    return {name: terms[name] for name in ("loss", "recon", "kl", "kl_per_layer") if name in terms}

  return stacked.over_models(one, len(keys), (0, 0))(params, keys)


@functools.partial(jax.jit, static_argnames=("model", "k", "sample_chunk"))
def importance_statistics(model, params, keys, images, c, *, k: int,
                          sample_chunk: int) -> dict[str, jax.Array]:
  """Per-example statistics of chunk `c` with k importance samples, each (N, E, ...).

  Example e of the chunk is example n = c * E + e of the data set and draws
  from `fold_in(keys[i], n)` for model i. `images`: all chunks (C, E, H, W, C)
  or chunk c alone (E, H, W, C).

  Returns:
    `iwae`, `recon`, `kl` (see `objectives.importance_terms`), `kl_per_dimension`
    and `posterior_mean` (N, E, latents); for a hierarchy (`vae_jax.hierarchy`)
    `kl_per_layer` (N, E, L), the analytic KL of each layer at one draw of the
    layers above (from `fold_in(example key, k)`), layer 1 (next to the data) first,
    and `layer_means` (N, E, n_1 + ... + n_L), every layer's posterior mean.
  """
  batch, labels = data.unpack(_chunk(images, c))
  x = data.to_unit_interval(batch)
  size = batch.shape[0]

  def one(params, key):
    example_keys = objectives.example_keys(key, c * size + jnp.arange(size))
    terms = objectives.importance_terms(model, params, x, example_keys, k, sample_chunk, labels)
    mean, logvar = model.apply({"params": params}, x, method=model.encode,
                               **({} if labels is None else {"y": labels}))
    kl_dims = model.apply({"params": params}, mean, logvar, method=model.kl_per_dimension)
    if kl_dims is None:  # No closed form: the per-latent split is not defined.
      kl_dims = jnp.full(mean.shape, jnp.nan, mean.dtype)
    stats = {**terms, "kl_per_dimension": kl_dims, "posterior_mean": mean}
    if hasattr(model, "kl_per_layer"):  # A hierarchy: one draw per example, keyed by it.
      layer_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(example_keys, k)
      stats["kl_per_layer"] = model.apply({"params": params}, x, layer_keys,
                                          method=model.kl_per_layer)
      stats["layer_means"] = model.apply({"params": params}, x, method=model.posterior_means)
    return stats

  return stacked.over_models(one, len(keys), (0, 0))(params, keys)


def _chunk(examples, c):
  """Chunk `c` (E, ...) of the chunked examples (C, E, ...): images, or images and
  labels; or the examples themselves when they are that chunk (streamed: only chunk
  c is on the devices)."""
  if jax.tree.leaves(examples)[0].ndim == 4:
    return examples
  return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, c, keepdims=False), examples)


# ----------------------------------------------------------------------------
# What the trainer logs and the evaluate command reports.


def test_elbo(model, params, keys, chunks: Chunks, *, stop=None) -> list[dict]:
  """The mean single-sample negative ELBO (`loss`), `recon` and `kl` per model, and for a
  hierarchy `kl_per_layer` (a list, layer 1 first)."""
  stats = over_chunks(functools.partial(elbo_statistics, model, params, keys), chunks, stop=stop)
  mean = lambda v: np.mean(v, axis=0, dtype=np.float64)
  return [{name: float(mean(v[i])) if v.ndim == 2 else mean(v[i]).tolist()
           for name, v in stats.items()} for i in range(len(keys))]


def iwae_nll(model, params, keys, chunks: Chunks, *, k: int, sample_chunk: int,
             stop=None, description: str | None = None) -> list[tuple[float, float]]:
  """(mean, standard error) of -log p_k(x) over the examples, per model."""
  stats = over_chunks(functools.partial(importance_statistics, model, params, keys, k=k,
                                sample_chunk=sample_chunk), chunks, stop=stop,
              description=description)
  return [(float(-np.mean(b, dtype=np.float64)), standard_error(-b)) for b in stats["iwae"]]


def evaluate(trained, images_u8: np.ndarray, *, k: int, key: jax.Array,
             sample_chunk: int = 100, example_chunk: int = 100, progress: bool = True,
             stop=None, labels: np.ndarray | None = None, streamed: bool = False) -> dict:
  """Evaluates one trained VAE on uint8 images (N, H, W, C) with k importance samples each.

  Memory is O(example_chunk * sample_chunk * D), independent of k and N;
  chunk sizes change speed and memory, never results. On a 2-core EPYC,
  10,000 decoder rows per step (100 x 100) ran 1.5 times faster than 50,000.

  Args:
    trained: a `TrainedModel` (e.g. from `vae_jax.load`).
    images_u8: the inputs, e.g. from `evaluation_inputs`.
    k: importance samples per example.
    key: PRNG key; example n draws from `fold_in(key, n)`.
    sample_chunk: samples drawn at once per example.
    example_chunk: examples evaluated at once (rounded up to a multiple of the device count).
    progress: show a progress bar (on a terminal).
    stop: see `run`.
    labels: int (N,) labels of the images, for a conditional model (and only for
      one): the bounds are then on log p(x | y).
    streamed: read the images from the host a chunk at a time
      (`vae_jax.streaming.StreamedChunks`: for a memmap or lazy records larger
      than device memory); the same results.

  Returns:
    A JSON-ready dict; see `summarize`.

  Raises:
    UsageError: labels missing for a conditional model, given to an
      unconditional one, or not one per image in 0 .. num_classes - 1.
  """
  images_u8 = images_u8 if streamed else np.asarray(images_u8)
  num_classes = getattr(trained.module, "num_classes", 0)
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
  statistic = functools.partial(importance_statistics, trained.module,
                                stacked.stack(trained.params), key[None], k=k,
                                sample_chunk=sample_chunk)
  try:
    stats = over_chunks(statistic, chunks, stop=stop,
                        description=f"IWAE k={k}" if progress else None)
  finally:
    if streamed:
      chunks.close()
  return summarize(stacked.index(stats, 0), k=k, features=math.prod(images_u8.shape[1:]),
                   seconds=time.perf_counter() - start, conditional=labels is not None,
                   layer_latents=getattr(trained.module, "layer_latents", ()))


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
    raise UsageError(f"expected {len(images)} integer labels, one per image; got "
                     f"{labels.dtype} of shape {labels.shape}")
  if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
    raise UsageError(f"labels must lie in 0 .. {num_classes - 1}; got {labels.min()} .. "
                     f"{labels.max()}")
  return images, labels.astype(np.int32)


def summarize(stats: dict[str, np.ndarray], *, k: int, features: int, seconds: float,
              conditional: bool = False, layer_latents: tuple[int, ...] = ()) -> dict:
  """The evaluation record from one model's per-example statistics (`importance_statistics`).

  Returns:
    dict: `num_examples`, `k`; `elbo`, `elbo_stderr`, `recon`, `kl` (nats,
    the ELBO = -(recon + kl) is a lower bound on log p(x)); `nll`, `nll_stderr`
    (-log p_k(x), an upper bound on -log p(x)); `bits_per_dim` = nll / (D ln 2)
    (a discrete likelihood's bits for the logistic likelihood and for binary
    data; for grey levels under a Bernoulli or Gaussian it is not one);
    `active_units`, `latents`, `unit_activity` (Cov_x E_q[z_i] per latent);
    `kl_per_dimension` (mean over examples; None without a closed-form KL:
    another prior or posterior than the seed's, or a hierarchy); for a hierarchy
    `kl_per_layer` (mean over examples, layer 1 first) and `active_units_per_layer`
    (of `layer_latents`, the sizes); `seconds`; `conditional`: whether the model is
    conditional, when every log p(x) above is log p(x|y) (the ELBO and the IWAE
    bound given the image's label). The other latent statistics of a hierarchy
    are those of z_1 (its `encode`).
  """
  stats = {name: np.asarray(v, np.float64) for name, v in stats.items()}
  elbo = -(stats["recon"] + stats["kl"])
  nll = -stats["iwae"]
  activity = unit_activity(stats["posterior_mean"])
  layers = {} if "kl_per_layer" not in stats else {
      "kl_per_layer": stats["kl_per_layer"].mean(axis=0).tolist(),
      "active_units_per_layer": active_units_per_layer(stats["layer_means"], layer_latents)}
  return {
      "num_examples": len(nll), "k": k,
      "elbo": float(elbo.mean()), "elbo_stderr": standard_error(elbo),
      "recon": float(stats["recon"].mean()), "kl": float(stats["kl"].mean()),
      "nll": float(nll.mean()), "nll_stderr": standard_error(nll),
      "bits_per_dim": float(nll.mean() / (features * math.log(2))),
      "active_units": int(np.sum(activity > ACTIVE_UNIT_THRESHOLD)),
      "latents": len(activity), "unit_activity": activity.tolist(),
      "kl_per_dimension": (None if np.isnan(stats["kl_per_dimension"]).any()
                           else stats["kl_per_dimension"].mean(axis=0).tolist()),
      **layers, "seconds": seconds, "conditional": conditional,
  }


def active_units_per_layer(means: np.ndarray, layer_latents: tuple[int, ...]) -> list[int]:
  """Active units of each layer of a hierarchy from its posterior means (N, sum of sizes)."""
  bounds = np.cumsum(layer_latents)[:-1]
  return [int(np.sum(unit_activity(m) > ACTIVE_UNIT_THRESHOLD))
          for m in np.split(np.asarray(means), bounds, axis=-1)]


def unit_activity(posterior_means: np.ndarray) -> np.ndarray:
  """Cov_x(E_q[z_i | x]) for each latent i: the variance over examples of (N, L) means."""
  return np.var(np.asarray(posterior_means, np.float64), axis=0)


def standard_error(values: np.ndarray) -> float | None:
  """The standard error of the mean of (N,) values; None (JSON null) when N < 2."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return None
  return float(np.std(values, ddof=1) / math.sqrt(len(values)))
