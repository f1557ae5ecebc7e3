"""Evaluation as in the literature: the IWAE log-likelihood, the ELBO and active units.

`evaluate(trained, images_u8, k=5000, ...)` returns what `python -m
vae_jax.evaluate` writes to `eval.json`:

  * the ELBO (mean and standard error over examples), its recon and KL terms;
  * the negative log-likelihood -log p(x) estimated by the IWAE bound with k
    importance samples (Burda, Grosse & Salakhutdinov 2015; papers use k =
    5,000), mean and standard error, and the same in bits per dimension;
  * active units: latent i is active when Cov_x(E_q[z_i | x]) > 0.01 (Burda et
    al.), and the KL per latent dimension.

Both bounds come from the same k draws per example (`objectives.importance_terms`),
so the ELBO's Monte Carlo error is that of a k-sample mean: negligible.
"""
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from vae_jax import checkpoints
from vae_jax import data
from vae_jax import objectives

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, section 5.2.


def evaluate(trained: checkpoints.TrainedModel, images_u8: np.ndarray, *, k: int,
             key: jax.Array, sample_chunk: int = 100, example_chunk: int = 100,
             progress: bool = True) -> dict:
  """Evaluates a trained VAE on uint8 images (N, D) with k importance samples each.

  Examples are processed `example_chunk` at a time, each chunk one call of
  one compiled function (the last chunk is zero-padded, its padding dropped);
  memory is O(example_chunk * sample_chunk * D), independent of k and N.
  Example n draws from `fold_in(key, n)`, so chunk sizes do not change results.
  On a 2-core EPYC, 10,000 decoder rows per step (100 x 100) ran 1.5 times
  faster than 50,000, likely because their logits (31 MB) about fit in L3.

  Args:
    trained: the model, e.g. from `checkpoints.load`.
    images_u8: the inputs, uint8 (N, D), e.g. from `trainer.evaluation_inputs`.
    k: importance samples per example.
    key: PRNG key.
    sample_chunk: samples drawn at once per example.
    example_chunk: examples evaluated at once.
    progress: show a progress bar (on a terminal).

  Returns:
    A JSON-ready dict; see `summarize`.
  """
  images_u8 = np.asarray(images_u8).reshape(len(images_u8), -1)
  n = len(images_u8)
  if n == 0:
    raise ValueError("no examples to evaluate")
  example_chunk = min(example_chunk, n)
  start = time.perf_counter()
  parts = []
  with tqdm(total=n, desc=f"IWAE k={k}", unit="img", disable=None if progress else True) as bar:
    for offset in range(0, n, example_chunk):
      batch = _padded(images_u8[offset:offset + example_chunk], example_chunk)
      parts.append(jax.device_get(chunk_statistics(
          trained.module, trained.params, batch, key, jnp.int32(offset), k=k,
          sample_chunk=sample_chunk)))
      bar.update(min(example_chunk, n - offset))
  stats = {name: np.concatenate([p[name] for p in parts])[:n] for name in parts[0]}
  return summarize(stats, k=k, features=images_u8.shape[1], seconds=time.perf_counter() - start)


@functools.partial(jax.jit, static_argnames=("module", "k", "sample_chunk"))
def chunk_statistics(module, params, images_u8, key, offset, *, k: int,
                     sample_chunk: int) -> dict[str, jax.Array]:
  """Per-example statistics of one chunk of uint8 images (B, D).

  Example b is example `offset + b` of the data set and draws from
  `fold_in(key, offset + b)`.

  Returns:
    dict of `iwae`, `recon`, `kl` (B,) (see `objectives.importance_terms`),
    `kl_per_dimension` and `posterior_mean` (B, latents).
  """
  x = data.to_unit_interval(images_u8)
  keys = objectives.example_keys(key, offset + jnp.arange(len(x)))
  terms = objectives.importance_terms(module, params, x, keys, k, sample_chunk)
  mean, logvar = module.apply({"params": params}, x, method=module.encode)
  return {**terms, "kl_per_dimension": objectives.kl_per_dimension(mean, logvar),
          "posterior_mean": mean}


def summarize(stats: dict[str, np.ndarray], *, k: int, features: int, seconds: float) -> dict:
  """The evaluation record from per-example statistics (see `chunk_statistics`).

  Returns:
    dict: `num_examples`, `k`; `elbo`, `elbo_stderr`, `recon`, `kl` (nats,
    the ELBO = -(recon + kl) is a lower bound on log p(x)); `nll`, `nll_stderr`
    (-log p_k(x), an upper bound on -log p(x)); `bits_per_dim` = nll / (D ln 2)
    (for a Gaussian likelihood a density on [0, 1] pixels, not a discrete
    likelihood); `active_units`, `latents`, `unit_activity` (Cov_x E_q[z_i] per
    latent); `kl_per_dimension` (mean over examples); `seconds`.
  """
  stats = {name: np.asarray(v, np.float64) for name, v in stats.items()}
  elbo = -(stats["recon"] + stats["kl"])
  nll = -stats["iwae"]
  activity = unit_activity(stats["posterior_mean"])
  return {
      "num_examples": len(nll), "k": k,
      "elbo": float(elbo.mean()), "elbo_stderr": standard_error(elbo),
      "recon": float(stats["recon"].mean()), "kl": float(stats["kl"].mean()),
      "nll": float(nll.mean()), "nll_stderr": standard_error(nll),
      "bits_per_dim": float(nll.mean() / (features * math.log(2))),
      "active_units": int(np.sum(activity > ACTIVE_UNIT_THRESHOLD)),
      "latents": len(activity), "unit_activity": activity.tolist(),
      "kl_per_dimension": stats["kl_per_dimension"].mean(axis=0).tolist(),
      "seconds": seconds,
  }


def unit_activity(posterior_means: np.ndarray) -> np.ndarray:
  """Cov_x(E_q[z_i | x]) for each latent i: the variance over examples of (N, L) means."""
  return np.var(np.asarray(posterior_means, np.float64), axis=0)


def standard_error(values: np.ndarray) -> float | None:
  """The standard error of the mean of (N,) values; None (JSON null) when N < 2."""
  if len(values) < 2:
    return None
  return float(np.std(values, ddof=1) / math.sqrt(len(values)))


@functools.partial(jax.jit, static_argnames=("model", "k", "rows"))
def iwae_nll_on_chunks(model, params, chunks, mask, key, *, k: int,
                       rows: int) -> tuple[jax.Array, jax.Array]:
  """Mean and standard error of -log p_k(x) over the masked examples of device chunks.

  What training logs every `eval_iwae_every` epochs. The chunks may be
  sharded over devices along E. Example (c, e) is example c * E + e and draws
  from `fold_in(key, c * E + e)`, as in `evaluate`.

  Args:
    model: the VAE (static).
    chunks: uint8 (C, E, D) images, zero-padded; `mask` (C, E) marks the real ones.
    k: importance samples per example (static).
    rows: decoder rows per step (static): E * sample chunk stays within it,
      which bounds memory at O(rows * D).
  """
  num_chunks, size = chunks.shape[:2]
  sample_chunk = max(1, rows // size)

  def body(_, inputs):
    c, batch = inputs
    keys = objectives.example_keys(key, c * size + jnp.arange(size))
    x = data.to_unit_interval(batch)
    return None, objectives.iwae_bound(model, params, x, keys, k, sample_chunk)

  _, bounds = jax.lax.scan(body, None, (jnp.arange(num_chunks), chunks))
  count = jnp.sum(mask)
  nll = -jnp.sum(bounds * mask) / count
  variance = jnp.sum(((-bounds - nll) * mask) ** 2) / jnp.maximum(count - 1, 1)
  return nll, jnp.sqrt(variance / count)


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
  """`batch` with zero rows appended up to `size` rows: one compiled shape."""
  if len(batch) == size:
    return batch
  return np.concatenate([batch, np.zeros((size - len(batch), batch.shape[1]), batch.dtype)])
