"""Image grids and files: PNG and animated GIF through Pillow.

Grids tile images of shape (H, W), (H, W, 1) or (H, W, 3) with a `pad`-pixel
dark border, so a grid of R x C images of H x W pixels is
(R * (H + pad) + pad) x (C * (W + pad) + pad): grey (2-D) for grey images,
RGB (H, W, 3) for colour ones.
"""
import pathlib

import numpy as np
from PIL import Image

PAD = 2


def grid_size(rows: int, cols: int, image_shape, pad: int = PAD) -> tuple[int, int]:
  """(height, width) in pixels of a `rows` x `cols` grid of `image_shape` images."""
  h, w = image_shape[:2]
  return rows * (h + pad) + pad, cols * (w + pad) + pad


def tile(images: np.ndarray, cols: int, pad: int = PAD) -> np.ndarray:
  """Tiles images (N, H, W) or (N, H, W, C), C = 1 or 3, in [0, 1] into one uint8 grid, row-major.

  Returns:
    (height, width) for grey images, (height, width, 3) for colour ones.
    Missing cells at the end of the last row stay dark.
  """
  images = np.asarray(images, np.float32)
  images = as_pictures(images) if images.ndim == 4 else images
  n, h, w = images.shape[:3]
  rows = -(-n // cols)
  height, width = grid_size(rows, cols, (h, w), pad)
  grid = np.zeros((height, width, *images.shape[3:]), np.float32)
  for i, image in enumerate(images):
    r, c = divmod(i, cols)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    grid[y:y + h, x:x + w] = image
  return to_uint8(grid)


def as_pictures(images):
  """Images (..., H, W, C) as image files and plots take them: (..., H, W) when C = 1."""
  return images[..., 0] if images.shape[-1] == 1 else images


def to_uint8(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats -> uint8, clipped (NaN, from a diverged model, as 0)."""
  return np.round(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)


def save_png(path, grid: np.ndarray) -> pathlib.Path:
  """Writes a uint8 (H, W) or (H, W, 3|4) array as a PNG, creating folders."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(grid).save(path)
  return path


def save_gif(path, frames: list[np.ndarray], seconds_per_frame: float = 0.15,
             bounce: bool = True) -> pathlib.Path:
  """Writes uint8 frames (H, W) or (H, W, 3) as a looping GIF; `bounce` plays back and forth."""
  if bounce and len(frames) > 2:
    frames = list(frames) + list(frames[-2:0:-1])
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  pictures = [Image.fromarray(f) for f in frames]
  pictures[0].save(path, save_all=True, append_images=pictures[1:],
                   duration=int(seconds_per_frame * 1000), loop=0)
  return path


def model_subdir(num_models: int, index: int) -> str:
  """The folder of model `index`'s figures and events: "" for one model, else "model_I"."""
  return f"model_{index}" if num_models > 1 else ""
