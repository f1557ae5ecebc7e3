"""Device mesh and data placement: data parallelism over a `data` mesh axis.

Every array the training loop touches is a global `jax.Array`: parameters and
optimizer state replicated, images sharded along their example axis. One
device is the same code path with a mesh of size one.
"""
import contextlib
import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# config.matmul_precision -> jax's name. float32 (the default) makes GPUs and TPUs
# multiply in full float32, as CPUs do, so results agree across platforms.
MATMUL_PRECISIONS = {"float32": "float32", "default": "default", "tf32": "tensorfloat32",
                     "bf16": "bfloat16"}


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


# Variables by which launchers announce a job of several processes; with any of
# them `jax.distributed.initialize()` finds its arguments by itself.
_CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def in_cluster() -> bool:
  """Whether this process was launched as one of several (SLURM, Open MPI, TPU pod)."""
  if any(int(os.environ.get(v, "1") or 1) > 1 for v in _CLUSTER_SIZE_VARIABLES):
    return True
  return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")  # A multi-host TPU slice.


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Calls `jax.distributed.initialize` when this is a multi-process run.

  Explicit arguments win; otherwise a SLURM, Open MPI or multi-host TPU
  environment is detected. Must run before anything touches a device.

  Returns:
    Whether the distributed runtime was initialised.
  """
  explicit = coordinator_address is not None or (num_processes or 1) > 1
  if not explicit and not in_cluster():
    return False
  # CPU processes need a collectives implementation to talk to each other; it
  # does not affect GPU or TPU backends.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return True


def any_process(flag: bool) -> bool:
  """Whether `flag` is set on any process: a collective every process must call.

  Lets all processes of a run take the same decision (stop at this chunk,
  give up after a failed start) so none waits in a collective for the others.
  One process answers at once.
  """
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def matmul_precision(config) -> contextlib.AbstractContextManager:
  """The context in which jax traces matrix products at `config.matmul_precision`."""
  return jax.default_matmul_precision(MATMUL_PRECISIONS[config.matmul_precision])


def to_host(tree):
  """A pytree of global arrays as numpy arrays, gathered from every process when sharded
  over several (every process calls it in a multi-process run)."""
  def get(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated:
      return np.asarray(a if not isinstance(a, jax.Array) or a.is_fully_addressable
                        else a.addressable_data(0))
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return jax.tree.map(get, tree)
