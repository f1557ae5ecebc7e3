"""The experiment (vae_jax/experiment.py): key streams."""
import jax

from vae_jax import evaluation
from vae_jax import experiment


def test_the_keys_of_each_epoch_and_stream_are_their_own(tiny_config):
  """fold_in(fold_in(seed key, stream), epoch): a key that ignored the epoch would
  replay epoch 1's order and noise forever, and every run would agree with itself."""
  tiny_config.num_models, tiny_config.independent_data_order = 2, True
  keys = experiment.KeyStreams.of(tiny_config)
  data_of = lambda keys: [jax.random.key_data(k).tolist() for k in keys]
  streams = experiment.KeyStreams
  for stream, epoch_number in ((streams.TRAIN, 0), (streams.EVALUATION, 3)):
    expected = [jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), stream), epoch_number)
                for seed in (0, 1)]
    assert data_of(keys.stream(stream, epoch_number)) == data_of(expected)
  assert data_of(keys.evaluation(3)) == data_of(keys.stream(streams.EVALUATION, 3))
  shuffle, steps = keys.epoch(0)
  assert shuffle.shape == steps.shape == (2,)
  assert data_of(keys.epoch(1)[1]) != data_of(steps)
  tiny_config.independent_data_order = False  # One order, model 0's, for all.
  assert data_of(experiment.KeyStreams.of(tiny_config).epoch(0)[0]) == data_of(shuffle[:1])
  numbers = (streams.INIT, streams.TRAIN, streams.EVALUATION, streams.FIGURES, streams.IWAE,
             evaluation.TEST_BINARIZE_STREAM)
  assert len(set(numbers)) == len(numbers)
