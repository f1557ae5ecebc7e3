"""The classic MNIST VAE of the PyTorch tutorial: 784-400-20 MLP, Adam 1e-3, batch 128.

    python -m vae_jax.train --workdir=/tmp/vae

trains on full MNIST, downloaded once; on a machine without network (and no
copy cached) on the 8,004 real digits shipped with the package
(`mnist_sample`), saying so in one line. `--config.data_dir=DIR` reads IDX
files, a .npz file or a folder of PNG/JPEG images from DIR. Every field below
can be overridden as `--config.FIELD=VALUE`.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config (the PyTorch tutorial's settings)."""
  config = ml_collections.ConfigDict()

  # Data.
  # mnist | fashion_mnist (downloaded) | mnist_sample (shipped) | tfds:NAME; with data_dir,
  # any name for the results. Empty: mnist, or mnist_sample when no mirror is reachable
  # (so that the first command works on any machine); with data_dir, the data's own name.
  config.dataset = ""
  # IDX files, one .npz (or the file itself), or PNG/JPEG images (see vae_jax.data);
  # empty: the dataset by name.
  config.data_dir = ""
  # Where mnist and fashion_mnist are downloaded to; empty: $VAE_JAX_CACHE or ~/.cache/vae_jax.
  config.cache_dir = ""
  config.tfds_data_dir = ""  # Where tfds keeps prepared data (dataset=tfds:NAME); empty: its default.
  # Share of the images held out for testing when the input has no test split,
  # drawn with a fixed seed (not `seed`), so every run tests on the same images.
  config.test_fraction = 0.1
  config.image_size = 0  # S > 0: centre-crop every image to a square, resize to S x S; 0: keep.
  config.binarize = "none"  # none: grey levels as targets; dynamic: Bernoulli draw per step.

  # Model: the network and p(x|z). The image shape comes from the data.
  config.model = "mlp"  # mlp (the tutorial's) | conv (the Keras/TensorFlow tutorials')
  config.hidden = 400  # mlp: hidden units of the encoder and decoder.
  config.latents = 20
  config.conv_features = (32, 64)  # conv: channels of the stride-2 convolutions.
  config.decoder = "mlp"  # mlp | linear (mlp without the decoder's hidden layer)
  config.likelihood = "bernoulli"  # bernoulli | gaussian | logistic (8-bit discretised)
  config.obs_scale = 1.0  # gaussian: the fixed standard deviation...
  config.learn_obs_scale = False  # ...or its initial value when learned; logistic: initial scale.
  config.logistic_scale = "channel"  # logistic: one learned scale per channel | pixel.

  # Objective. Reported losses are always the true ELBO (beta 1, no floor).
  config.beta = 1.0  # Weight of the KL (beta-VAE).
  config.kl_warmup_steps = 0  # The KL weight rises linearly from 0 to beta over these steps.
  config.free_bits = 0.0  # Nats each latent's KL counts as at least (batch mean).

  # Optimisation.
  config.num_epochs = 20
  config.batch_size = 128
  config.optimizer = "adam"  # adam | adamw
  config.learning_rate = 1e-3
  config.weight_decay = 0.0  # adamw only.
  config.lr_schedule = "constant"  # constant | cosine (to 0 at the last step)
  config.warmup_steps = 0  # Linear learning-rate warm-up.
  config.grad_clip_norm = 0.0  # Clip gradients to this global norm; 0: off.
  config.seed = 0
  # Precision of matrix products: float32 everywhere by default, so results agree
  # across CPU, GPU and TPU; default | tf32 | bf16 trade accuracy for speed on accelerators.
  config.matmul_precision = "float32"
  config.compute_dtype = "float32"  # float32 | bfloat16 activations and products.

  # Several models in one program (vmapped): model i uses seed + i, all see the same
  # batches unless independent_data_order. sweep.FIELD="v1,v2,..." gives each model
  # its own value (the product over fields); fields that change shapes cannot be swept.
  config.num_models = 1
  config.independent_data_order = False
  config.sweep = ml_collections.ConfigDict({
      "seed": "", "learning_rate": "", "beta": "", "kl_warmup_steps": "", "free_bits": ""})

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
