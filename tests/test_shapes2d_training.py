"""One tiny training run on shapes2d: the rendered images through the unchanged trainer.

Apart from tests/test_shapes2d.py, whose checks take seconds, because a run is compile-bound
(53 s on a 2-core machine busy with other work, most of it compiling the 4096-pixel model).
"""
import math

import pytest
from vae_jax import reporting
from vae_jax import train

pytestmark = pytest.mark.slow  # Every test here trains, or starts a process.


def test_training_streams_a_subset_of_shapes2d(tmp_path, tiny_config):
  """Streamed, so the trainer reads each chunk through `RenderedImages.read`."""
  tiny_config.update(dataset="shapes2d", train_subset=512, test_fraction=0.001, num_epochs=1,
                     data_placement="stream")
  result = train.train_and_evaluate(tiny_config, tmp_path, verbose=False)
  saved = reporting.read_metrics(tmp_path)[-1]
  assert result.epochs_done == 1 and saved["epoch"] == 1
  # Better than the untrained decoder's 4096 log 2 nats (every pixel a coin flip).
  assert saved["test_loss"] < 4096 * math.log(2)
