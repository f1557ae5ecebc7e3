"""Pixel conversions and resizing shared by the readers."""
import numpy as np
from PIL import Image
from PIL import ImageOps

from vae_jax.errors import UsageError

# Pillow's own default for resize; it antialiases when shrinking.
RESAMPLE = Image.Resampling.BICUBIC


def to_uint8(values: np.ndarray, where: str) -> np.ndarray:
  """Pixel values of any numeric dtype -> uint8, refusing what does not fit.

  Integers must lie in [0, 255]; floats must lie in [0, 1] and are scaled to
  8 bits as round(x * 255), so that x = k / 255 gives back k exactly.

  Args:
    values: an array of pixel values, any shape.
    where: names the input in the error message.

  Returns:
    The same shape, uint8.

  Raises:
    UsageError: values outside those ranges (or NaN), or a non-numeric dtype.
  """
  if values.dtype == np.uint8:
    return values
  if np.issubdtype(values.dtype, np.integer):
    if values.size and (values.min() < 0 or values.max() > 255):
      raise UsageError(f"{where}: integer pixels must lie in [0, 255], found "
                       f"[{values.min()}, {values.max()}]")
    return values.astype(np.uint8)
  if np.issubdtype(values.dtype, np.floating):
    # Written so that NaN fails too.
    if values.size and not (np.all(values >= 0) and np.all(values <= 1)):
      finite = values[np.isfinite(values)]
      found = f"[{finite.min()}, {finite.max()}]" if finite.size else "no finite values"
      if finite.size < values.size:
        found += " and NaN or infinite ones"
      raise UsageError(f"{where}: float pixels must lie in [0, 1], found {found}")
    return np.rint(values.astype(np.float64) * 255).astype(np.uint8)
  raise UsageError(f"{where}: pixels of dtype {values.dtype} are not numbers")


def fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
  """Centre-crops `image` to the aspect ratio of `size` (width, height), then resizes."""
  if image.size == size:
    return image
  return ImageOps.fit(image, size, method=RESAMPLE)


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """(N, H, W, C) uint8 -> (N, size, size, C): each centre-cropped square, then resized."""
  if images.shape[1:3] == (size, size):
    return images
  out = np.empty((len(images), size, size, images.shape[3]), np.uint8)
  for i, image in enumerate(images):
    # Pillow wants (H, W) for one channel.
    pil_image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = fit(pil_image, (size, size))
    out[i] = np.asarray(resized).reshape(size, size, -1)
  return out
