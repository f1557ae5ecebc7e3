"""The classic MNIST VAE of the PyTorch tutorial: 784-400-20 MLP, Adam 1e-3, batch 128.

    python -m vae_jax.train --workdir=/tmp/vae

20 epochs of full MNIST (from tensorflow-datasets) take about a minute on a
2-core CPU. Offline, `--config.dataset=mnist_sample` trains on the 8,004 real
digits shipped with the package, and `--config.data_dir=DIR` reads IDX files,
a .npz file or a folder of PNG/JPEG images from DIR.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (the PyTorch tutorial's settings)."""
  config = ml_collections.ConfigDict()

  # Data.
  # mnist | fashion_mnist | mnist_sample | tfds:NAME; with data_dir, any name for the results.
  config.dataset = "mnist"
  # IDX files, one .npz (or the file itself), or PNG/JPEG images (see vae_jax.data);
  # empty: the dataset by name.
  config.data_dir = ""
  config.tfds_data_dir = ""  # Where tfds keeps prepared data; empty: its default.
  # Share of the images held out for testing when the input has no test split,
  # drawn with a fixed seed (not `seed`), so every run tests on the same images.
  config.test_fraction = 0.1
  config.image_size = 0  # S > 0: centre-crop every image to a square, resize to S x S; 0: keep.
  config.binarize = "none"  # none: grey levels as targets; dynamic: Bernoulli draw per step.

  # Model. The image shape comes from the data.
  config.hidden = 400
  config.latents = 20
  config.likelihood = "bernoulli"  # bernoulli | gaussian
  config.decoder = "mlp"  # mlp | linear (no hidden layer)
  config.obs_scale = 1.0  # Gaussian likelihood: the fixed standard deviation...
  config.learn_obs_scale = False  # ...or its initial value when learned.

  # Optimisation.
  config.num_epochs = 20
  config.batch_size = 128
  config.learning_rate = 1e-3
  config.seed = 0

  # Evaluation and output.
  config.eval_batch_size = 1000  # Test examples per evaluation step.
  config.eval_iwae_every = 0  # Epochs between IWAE bounds on the test set; 0: never.
  config.eval_iwae_k = 1000
  # Importance samples drawn at once per example, and examples at once: 100 x 100
  # decoder rows per step ran 1.5x faster than 500 x 100 on a 2-core CPU.
  # Chunk sizes change speed and memory, never results.
  config.iwae_sample_chunk = 100
  config.iwae_example_chunk = 100
  config.checkpoint_every_epochs = 1
  config.keep_checkpoints = 3
  # The epoch runs on the device as about this many lax.scan calls; progress
  # bars, non-finite checks and Ctrl-C act between them.
  config.chunks_per_epoch = 10
  return config
