"""Several models as one: every parameter leaf with a leading model axis of size N.

A run of `num_models` models keeps its parameters and optimizer states
stacked, and maps per-model functions over the stack with `over_models`.
"""
from collections.abc import Callable

import jax


def over_models(fn: Callable, num_models: int, in_axes: tuple, *,
                sequential: bool = False) -> Callable:
  """`fn` mapped over the model axis, outputs stacked on axis 0.

  `jax.vmap(fn, in_axes)` by default: one program whose matrix products are
  batched over the models. With `sequential`, `jax.lax.map`: the models run one
  after another, each the single-model program, so N models cost N times one
  model (on CPUs the batched products can cost more: 4.2-4.9x for 4 models) and
  model i gives the numbers it gives alone.

  For one model the mapped arguments are indexed at 0 and the outputs given
  the axis back: the same program as `fn` on unstacked inputs, where vmap
  would turn matrix products into batched ones that may round differently.
  So one model gives the results of a run without the model axis, bit for bit.
  """
  if num_models > 1 and sequential:
    def one_by_one(*args):
      mapped = tuple(a if axis == 0 else None for a, axis in zip(args, in_axes))
      def one(xs):
        return fn(*(x if axis == 0 else a for x, a, axis in zip(xs, args, in_axes)))
      return jax.lax.map(one, mapped)
    return one_by_one
  if num_models > 1:
    return jax.vmap(fn, in_axes=in_axes)

  def one(*args):
    args = [jax.tree.map(lambda a: a[0], x) if axis == 0 else x for x, axis in zip(args, in_axes)]
    return jax.tree.map(lambda a: a[None], fn(*args))

  return one


def stack(tree):
  """One model's pytree -> a stack of one (leading axis of size 1)."""
  return jax.tree.map(lambda a: a[None], tree)


def index(tree, i: int):
  """Model i of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)

