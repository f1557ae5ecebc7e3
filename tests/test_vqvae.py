"""The VQ-VAE family trained end to end (`vae_jax/families/discrete/vqvae.py`,
`autoencoder.py`): its EMA codebook checkpointed and resumed bit for bit, per model
of a `num_models` run; its codebook metrics against the codes the model gives;
the latent API for codes. The quantiser's maths: tests/test_quantizers.py."""
import jax
import numpy as np
import pytest

import vae_jax
from vae_jax import data
from vae_jax import latent
from vae_jax import reporting
from vae_jax import train
from vae_jax.errors import UsageError
from vae_jax.families.discrete import quantizers

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.

EPOCHS = 2


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  """300 training and 100 test digits of mnist_sample as one .npz."""
  x = data.load_idx_dir(data.SAMPLE_DIR).test.images[:400, ..., 0]
  path = tmp_path_factory.mktemp("digits") / "digits.npz"
  np.savez(path, x_train=x[:300], x_test=x[300:])
  return path


def vq_config(digits, num_epochs=EPOCHS):
  from vae_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.update(data_dir=str(digits), family="vqvae", model="mlp", hidden=16, code_positions=6,
                codebook_size=16, code_width=4, num_models=2, num_epochs=num_epochs,
                batch_size=50, eval_batch_size=100, chunks_per_epoch=2)
  return config


@pytest.fixture(scope="module")
def vq_workdir(tmp_path_factory, digits):
  """Two VQ-VAEs (seeds 0 and 1) trained for 2 epochs in one program, uninterrupted."""
  workdir = tmp_path_factory.mktemp("vqvae")
  train.train_and_evaluate(vq_config(digits), workdir, verbose=False)
  return workdir


def test_ema_codebook_resumes_bit_for_bit_per_model(vq_workdir, digits, tmp_path):
  train.train_and_evaluate(vq_config(digits, num_epochs=1), tmp_path, verbose=False)
  train.train_and_evaluate(vq_config(digits), tmp_path, verbose=False)  # Resumed.
  books = []
  for index in range(2):
    whole, resumed = (vae_jax.load(w, index=index) for w in (vq_workdir, tmp_path))
    book = whole.variables[quantizers.COLLECTION]["quantizer"]
    assert set(book) == {"embedding", "cluster_size", "embedding_sum", "restarts"}
    jax.tree.map(np.testing.assert_array_equal, resumed.variables, whole.variables)
    assert np.all(np.asarray(book["cluster_size"]) > 0)  # The EMA ran.
    books.append(np.asarray(book["embedding"]))
  assert not np.array_equal(*books)  # One codebook per model.
  strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith(("seconds", "per_second"))}
                        for r in rows]
  assert strip(reporting.read_metrics(tmp_path)) == strip(reporting.read_metrics(vq_workdir))


def test_codebook_metrics_are_those_of_the_codes_the_model_gives(vq_workdir):
  rows = reporting.read_metrics(vq_workdir)
  assert sorted({(r["epoch"], r["model"]) for r in rows}) == [
      (e, m) for e in range(1, EPOCHS + 1) for m in range(2)]
  for row in rows:
    for name in ("loss", "recon", "commitment", "perplexity", "codes_in_use", "restarts"):
      assert np.isfinite(row[f"train_{name}"]), name
    assert 1 <= row["train_perplexity"] <= row["train_codes_in_use"] <= 16
  for index in range(2):
    row = [r for r in rows if r["model"] == index and r["epoch"] == EPOCHS][0]
    model = vae_jax.load(vq_workdir, index=index)
    images = data.to_unit_interval(data.load(model.config).test.images)
    codes = np.asarray(latent.encode(model, images))
    assert codes.shape == (100, 1, 6) and codes.dtype == np.int32
    counts = np.bincount(codes.reshape(-1), minlength=16)
    assert row["test_codes_in_use"] == np.sum(counts > 0)
    p = counts[counts > 0] / counts.sum()
    assert row["test_perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-5)
    # The commitment term: ||z_e - e_k||^2 summed over the grid, from the codebook by hand.
    z_e = np.asarray(model.family.encoder_outputs(model.variables, images))
    book = np.asarray(model.variables[quantizers.COLLECTION]["quantizer"]["embedding"])
    error = np.sum(np.square(z_e - book[codes]), axis=(1, 2, 3))
    assert row["test_commitment"] == pytest.approx(error.mean(), rel=1e-4)


def test_codes_decode_to_the_reconstruction_and_refuse_what_needs_a_continuous_z(vq_workdir):
  model = vae_jax.load(vq_workdir)
  images = data.to_unit_interval(data.load(model.config).test.images[:4])
  codes = vae_jax.encode(model, images)
  np.testing.assert_allclose(vae_jax.decode(model, codes), vae_jax.reconstruct(model, images),
                             atol=1e-6)
  assert vae_jax.encode(model, images[0]).shape == (1, 6)
  paths = vae_jax.interpolate(model, images[:2], images[2:], num_steps=5)
  np.testing.assert_allclose(paths[:, 0], vae_jax.reconstruct(model, images[:2]), atol=1e-6)
  np.testing.assert_allclose(paths[:, -1], vae_jax.reconstruct(model, images[2:]), atol=1e-6)
  with pytest.raises(ValueError, match="code indices must lie in 0 .. 15"):
    vae_jax.decode(model, np.full((1, 6), 16))
  with pytest.raises(UsageError, match="prior over codes.*train-prior"):
    vae_jax.sample(model, jax.random.key(0), 2)
  with pytest.raises(UsageError, match="continuous latent codes"):
    vae_jax.traverse(model, images[0], 0, [0.0, 1.0])
