"""Readers for each kind of input, used by `vae_jax.data`.

Each returns plain numpy arrays, images `(N, H, W, C)` uint8 and labels `(N,)`
int32 (-1 where unknown), and raises `UsageError` with one line on bad input;
`vae_jax.data` chooses the reader, splits off a test set where the input has
none and checks the splits against each other.

  * `idx`: the four standard IDX files (MNIST's format), numpy only;
  * `npz`: one `.npz` file in the layout of Keras' `mnist.npz`;
  * `image_folder`: PNG or JPEG files, optionally in one folder per class;
  * `tfds`: any tensorflow-datasets image dataset (imports TensorFlow);
  * `shapes2d`: dSprites' factor grid, rendered when read, and `dsprites`: the
    real dSprites `.npz`; both carry factor indices, and `factors` is the
    ground truth of their full grid;
  * `pixels`: conversions and resizing shared by the others.
"""
