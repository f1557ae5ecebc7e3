"""An autoregressive prior over a grid of code indices: a small causal transformer.

The second stage of a VQ-VAE or FSQ model: fitted by maximum likelihood on the
codes the frozen encoder gives the training set, then sampled position by
position and decoded. Codes `(B, H', W')` in [0, K) are read in raster order
(row by row), c_1 .. c_N with N = H' W', and

    log p(c) = sum_p log p(c_p | c_<p),

each factor a softmax over the K codes computed from the codes before p only.

Why a transformer and not a gated PixelCNN (van den Oord et al. 2016):

  * exact conditioning on the whole past, by construction: the input is the
    sequence shifted right by a start token and attention is masked to earlier
    positions, one mask; a PixelCNN needs vertical and horizontal stacks with
    shifted, masked kernels to avoid the blind spot, and sees all of c_<p only
    once its depth covers the grid;
  * any grid: the MLP encoder's M positions (a 1 x M grid) as well as the conv
    encoder's H' x W', where a PixelCNN is built for two dimensions;
  * the same cost on CPU at these sizes: at 7 x 7 positions the sequence is 49
    tokens, attention over it is a few percent of the dense layers, and a
    64-wide, 3-layer transformer costs about what a 64-channel, 10-layer gated
    PixelCNN does per position;
  * sampling is N sequential steps either way; here each step runs one token
    through the layers against cached keys and values (`sample`), where a
    PixelCNN reruns the whole network on the grid per position;
  * less code: dense layers, layer norm and one attention.

Pre-layer-norm blocks (attention, then a 4x GELU MLP), learned position
embeddings, no dropout: the model is deterministic given its parameters.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Attention(nn.Module):
  """Multi-head self-attention over `(..., N, F)`, each position attending to itself and
  earlier ones (`mask` (N, N) bool, or a row of it for one query)."""

  features: int
  heads: int

  def setup(self):
    self.qkv = nn.Dense(3 * self.features, name="qkv")
    self.out = nn.Dense(self.features, name="out")

  def project(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """x `(..., T, F)` -> queries, keys, values `(..., T, heads, F / heads)`."""
    qkv = self.qkv(x).reshape(*x.shape[:-1], 3, self.heads, self.features // self.heads)
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

  def attend(self, query: jax.Array, keys: jax.Array, values: jax.Array,
             mask: jax.Array) -> jax.Array:
    """Queries `(..., T, h, d)` against keys, values `(..., S, h, d)` -> `(..., T, F)`."""
    scores = jnp.einsum("...thd,...shd->...hts", query, keys) / math.sqrt(query.shape[-1])
    weights = jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), axis=-1)
    mixed = jnp.einsum("...hts,...shd->...thd", weights, values)
    return self.out(mixed.reshape(*mixed.shape[:-2], self.features))

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    query, keys, values = self.project(x)
    return self.attend(query, keys, values, mask)


class Block(nn.Module):
  """x + attention(LN(x)), then + MLP(LN(x)): a pre-layer-norm transformer block."""

  features: int
  heads: int

  def setup(self):
    self.attention = Attention(self.features, self.heads)
    self.norm1, self.norm2 = nn.LayerNorm(), nn.LayerNorm()
    self.hidden = nn.Dense(4 * self.features)
    self.back = nn.Dense(self.features)

  def mlp(self, x: jax.Array) -> jax.Array:
    return x + self.back(nn.gelu(self.hidden(self.norm2(x))))

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    return self.mlp(x + self.attention(self.norm1(x), mask))


class CodePrior(nn.Module):
  """p(codes) over a `grid` of indices in [0, num_codes), autoregressive in raster order.

  Use: `variables = prior.init(key, codes)`; `prior.apply(variables, codes)` for
  the logits, `method=CodePrior.log_prob` for log p, `method=CodePrior.sample`
  for draws.

  Attributes:
    num_codes: K.
    grid: (H', W'), the positions of one example's codes; (1, M) for M codes in a row.
    features: the width of the transformer.
    layers: its number of blocks.
    heads: attention heads (features divisible by heads).
  """

  num_codes: int
  grid: tuple[int, int]
  features: int = 64
  layers: int = 3
  heads: int = 4

  def setup(self):
    if self.features % self.heads:
      raise ValueError(f"features={self.features} is not divisible by heads={self.heads}")
    # Index K is the start token, the input at the first position.
    self.embed = nn.Embed(self.num_codes + 1, self.features)
    self.position = self.param("position", nn.initializers.normal(0.02),
                               (self.length, self.features))
    self.blocks = [Block(self.features, self.heads) for _ in range(self.layers)]
    self.norm = nn.LayerNorm()
    self.head = nn.Dense(self.num_codes)

  @property
  def length(self) -> int:
    """N = H' W', the positions of one example."""
    return math.prod(self.grid)

  def __call__(self, codes: jax.Array) -> jax.Array:
    return self.logits(codes)

  def logits(self, codes: jax.Array) -> jax.Array:
    """The logits of p(c_p | c_<p) at every position, teacher-forced.

    Args:
      codes: int `(..., H', W')` in [0, K).

    Returns:
      `(..., H', W', K)`; the logits at p depend on the codes before p (raster order) only.
    """
    sequence = codes.reshape(*codes.shape[:-2], self.length)
    start = jnp.full((*sequence.shape[:-1], 1), self.num_codes, sequence.dtype)
    x = self.embed(jnp.concatenate([start, sequence[..., :-1]], axis=-1)) + self.position
    mask = np.tril(np.ones((self.length, self.length), bool))
    for block in self.blocks:
      x = block(x, mask)
    return self.head(self.norm(x)).reshape(*codes.shape, self.num_codes)

  def log_prob(self, codes: jax.Array) -> jax.Array:
    """log p(codes) in nats, summed over the positions: int `(..., H', W')` -> `(...)`."""
    log_p = jax.nn.log_softmax(self.logits(codes), axis=-1)
    picked = jnp.take_along_axis(log_p, codes[..., None].astype(jnp.int32), axis=-1)
    return jnp.sum(picked, axis=(-3, -2, -1))

  def sample(self, key: jax.Array, num: int, temperature: float = 1.0) -> jax.Array:
    """num draws of the code grid, position by position in raster order.

    Position p draws from softmax(logits_p / temperature) with key
    `fold_in(key, p)`; temperature 1 samples the model, lower ones sharpen each
    conditional (towards the most probable code given the codes drawn so far).

    Returns:
      int32 `(num, H', W')`.
    """
    if isinstance(temperature, (int, float)) and temperature <= 0:
      raise ValueError(f"temperature must be positive, got {temperature}")
    empty = jnp.zeros((num, self.length, self.heads, self.features // self.heads))
    cache = [(empty, empty)] * self.layers

    def draw(p, carry):
      codes, cache = carry
      previous = jnp.where(p == 0, self.num_codes, codes[:, jnp.maximum(p - 1, 0)])
      logits, cache = self._next_logits(previous, p, cache)
      code = jax.random.categorical(jax.random.fold_in(key, p), logits / temperature)
      return codes.at[:, p].set(code.astype(jnp.int32)), cache

    codes = jnp.zeros((num, self.length), jnp.int32)
    codes, _ = jax.lax.fori_loop(0, self.length, draw, (codes, cache))
    return codes.reshape(num, *self.grid)

  def _next_logits(self, previous: jax.Array, p: jax.Array, cache: list
                   ) -> tuple[jax.Array, list]:
    """One step of `sample`: `logits` at position p alone, against the cache of the earlier ones.

    Args:
      previous: the codes at p - 1 `(num,)` (the start token K at p = 0).
      p: the position, traced.
      cache: per layer, the keys and values `(num, N, heads, F / heads)` of positions < p.

    Returns:
      The logits at p `(num, K)`, and the cache with p's keys and values added.
    """
    x = self.embed(previous) + self.position[p]
    mask = (jnp.arange(self.length) <= p)[None, :]
    updated = []
    for block, (keys, values) in zip(self.blocks, cache):
      query, new_keys, new_values = block.attention.project(block.norm1(x)[:, None])
      keys = jax.lax.dynamic_update_slice_in_dim(keys, new_keys, p, axis=1)
      values = jax.lax.dynamic_update_slice_in_dim(values, new_values, p, axis=1)
      x = block.mlp(x + block.attention.attend(query, keys, values, mask)[:, 0])
      updated.append((keys, values))
    return self.head(self.norm(x)), updated
