"""The config schema: one declaration per field, read by everything that needs the fields."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from vae_jax import checkpoints
from vae_jax import cli
from vae_jax import schema
from vae_jax import sweep
from vae_jax.configs import default
from vae_jax.errors import UsageError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_default_config_is_the_schema():
  config = default.get_config()
  declared = {n for n, f in schema.FIELDS.items() if not f.resolved}
  assert set(config.keys()) - {"sweep"} == declared
  assert all(config[n] == schema.FIELDS[n].default for n in declared)
  assert set(config.sweep.keys()) == set(schema.SWEEPABLE)
  assert "seed" in schema.SWEEPABLE and "seed" not in schema.TRACED  # Keys, not a traced value.


def test_the_sweep_keeps_its_order_of_fields():
  """Model i of a sweep over several fields must stay the same model across versions."""
  assert schema.SWEEPABLE == ("seed", "learning_rate", "beta", "kl_warmup_steps", "free_bits",
                              # The disentangling families' (issue 25), after the core's:
                              "tc_beta", "tc_gamma", "lambda_od", "lambda_d", "capacity_max",
                              "capacity_gamma", "capacity_steps")


@pytest.mark.parametrize("name, value, message", [
    ("binarize", "static", "unknown binarize 'static'; choose one of none, dynamic"),
    ("test_fraction", 1.0, r"test_fraction must lie in \(0, 1\), got 1.0"),
    ("image_size", -1, r"image_size must be >= 0 \(0 keeps the size\), got -1"),
    ("learning_rate", 0.0, "learning_rate must be > 0, got 0.0"),
    ("num_models", 0, "num_models must be >= 1, got 0"),
    ("matmul_precision", "fp8", "unknown matmul_precision 'fp8'"),
])
def test_check_names_the_field_and_what_it_allows(name, value, message):
  config = default.get_config()
  config[name] = value
  with pytest.raises(UsageError, match=message):
    schema.check(config)


def test_a_config_json_from_before_a_field_existed_reads_with_its_legacy_value(tmp_path):
  values = {k: v for k, v in default.get_config().to_dict().items()
            if k not in ("num_models", "test_fraction", "image_size")}
  (tmp_path / "config.json").write_text(json.dumps(dict(values, image_shape=[28, 28, 1])))
  config = checkpoints.read_config(tmp_path)
  assert (config.num_models, config.test_fraction, config.image_size) == (1, 0.1, 0)


def test_help_lists_every_field_with_its_default():
  text = schema.describe()
  for name, f in schema.FIELDS.items():
    assert (f"--config.{name}={f.default!r}" in text) is (not f.resolved), name


def test_the_parallel_precisions_are_the_schemas_choices():
  from vae_jax import parallel  # pylint: disable=g-import-not-at-top
  assert tuple(parallel.MATMUL_PRECISIONS) == schema.choices("matmul_precision")


@pytest.mark.slow
def test_adding_a_sweepable_field_is_one_edit(tmp_path):
  """A copy of the package with one more line in fields.py: the new field has a default,
  help, validation, a sweep, a traced per-model column and a legacy value for old runs."""
  package = tmp_path / "vae_jax"
  shutil.copytree(REPO / "vae_jax", package, ignore=shutil.ignore_patterns("datasets"))
  source = (package / "fields.py").read_text()
  anchor = '    # Several models in one program.\n'
  line = ('    _f("kl_scale", 1.0, "a new weight", "objective", low=0.0, sweepable=True, '
          'legacy=1.0),\n')
  (package / "fields.py").write_text(source.replace(anchor, line + anchor, 1))
  script = """
import json, pathlib, sys
from vae_jax import checkpoints, schema, sweep, train_state
from vae_jax.configs import default
from vae_jax.errors import UsageError
config = default.get_config()
config.sweep.kl_scale = "0.5,2"
models = sweep.model_settings(config)
settings = train_state.hyper_arrays(models, ("kl_scale",))
config.kl_scale = -1.0
try:
  schema.check(config)
  refused = ""
except UsageError as e:
  refused = str(e)
old = pathlib.Path(sys.argv[1])
values = {k: v for k, v in default.get_config().to_dict().items() if k != "kl_scale"}
(old / "config.json").write_text(json.dumps(dict(values, image_shape=[28, 28, 1])))
print(json.dumps({"models": [m["kl_scale"] for m in models],
                  "column": settings["kl_scale"].tolist(), "refused": refused,
                  "legacy": checkpoints.read_config(old).kl_scale,
                  "help": "--config.kl_scale=1.0" in schema.describe()}))
"""
  result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=tmp_path,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  out = json.loads(result.stdout.splitlines()[-1])
  assert out == {"models": [0.5, 2.0], "column": [0.5, 2.0],
                 "refused": "kl_scale must be >= 0, got -1.0", "legacy": 1.0, "help": True}


def test_an_unknown_sweep_field_is_refused_saying_why():
  assert "changes the parameter shapes" in sweep.refusal("latents")
  assert "unknown; sweepable fields are seed, learning_rate" in sweep.refusal("gamma")
  assert cli  # The command line refuses them with these lines (test_many_models).


def test_only_fields_that_fix_shapes_make_another_model():
  config = default.get_config()
  same = dict(config.to_dict(), obs_scale=0.3, compute_dtype="bfloat16", learning_rate=0.1,
              conv_features=[32, 64])  # As config.json gives it back: a list.
  assert schema.differences(config, same) == []
  other = dict(config.to_dict(), latents=5, likelihood="gaussian")
  assert schema.differences(config, other) == ["latents 20 vs 5",
                                               "likelihood 'bernoulli' vs 'gaussian'"]
  assert schema.differences({}, dict(num_models=3)) == ["num_models 1 vs 3"]  # Older files.
