"""Device mesh and data placement: data parallelism over a `data` mesh axis.

Every array the training loop touches is a global `jax.Array`: parameters and
optimizer state replicated, images sharded along their example axis. One
device is the same code path with a mesh of size one.
"""
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over all devices (of all processes), axis name `data`."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def sharded(mesh: Mesh, axis: int, ndim: int) -> NamedSharding:
  """Shards dimension `axis` of an `ndim`-dimensional array over the mesh."""
  spec = [None] * ndim
  spec[axis] = DATA_AXIS
  return NamedSharding(mesh, P(*spec))


def put(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Places a host array, present in full on every process, as a global array.

  Each process copies only the shards its own devices hold.
  """
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def pad_to_multiple(array: np.ndarray, multiple: int) -> np.ndarray:
  """Pads axis 0 with zeros up to a multiple of `multiple`."""
  padded = math.ceil(len(array) / multiple) * multiple
  return np.concatenate([array, np.zeros((padded - len(array),) + array.shape[1:], array.dtype)])


def is_main_process() -> bool:
  """Only process 0 writes metrics, images and configs."""
  return jax.process_index() == 0
