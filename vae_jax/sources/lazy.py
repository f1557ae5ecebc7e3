"""A lazy image array: numpy indexing over a `read(rows)` that makes only those rows."""
import numpy as np


class LazyRows:
  """numpy-style indexing for a class with `__len__` and `read(rows)`.

  `read(rows)` takes int indices `(K,)` and returns those images `(K, ...)`; indexing
  with an int, a slice, an index array, a boolean mask or a tuple whose first item is
  one of those reads only the rows it selects.
  """

  def __getitem__(self, key) -> np.ndarray:
    if isinstance(key, tuple):
      return self[key[0]][(slice(None), *key[1:])]
    if isinstance(key, (int, np.integer)):
      return self.read([range(len(self))[key]])[0]
    return self.read(np.arange(len(self))[key])
