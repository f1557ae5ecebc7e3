"""Explores the latent space in the browser: `vae-jax explore --workdir=DIR [--port=8765]`.

Serves a local page (self-contained, it works offline) at http://127.0.0.1:PORT/:
the test set's posterior means on the PCA plane or the plane of two chosen
latents, coloured by label; moving the pointer over the plane decodes the code
under it at once; clicking two test points shows the path between them;
sliders set the other latents. Decoding runs in this process, jitted. Ctrl-C
(or SIGTERM) stops the server, with exit status 130 (143), as for the other
commands. Exit status 2 on bad input (no checkpoint, a port in use).
"""
from absl import flags

from vae_jax import trained as trained_lib
from vae_jax.families.base import Capability
from vae_jax import cli
from vae_jax import explorer

_WORKDIR = flags.DEFINE_string("workdir", None, "A folder written by `vae-jax train`.",
                               required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.", lower_bound=0)
_MODEL = flags.DEFINE_integer("model", 0, "Which of the run's models (0-based).", lower_bound=0)
_PORT = flags.DEFINE_integer("port", 8765, "Port to serve on; 0: any free one.", lower_bound=0,
                             upper_bound=65535)
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 for every "
                            "network interface (the page has no login).")
_POINTS = flags.DEFINE_integer("points", 2000, "Test images drawn as points.", lower_bound=1)
INTERRUPTED = "the explorer stopped"  # After "interrupted by SIGINT; " (exit status 130).


def main(argv):
  del argv  # cli.run_command refuses stray arguments.
  with cli.errors_to_exit():
    model = trained_lib.load(_WORKDIR.value, _STEP.value, index=_MODEL.value)
    model.family.require(Capability.LATENT, "the explorer")
    if model.family.num_classes:
      cli.fail("the explorer does not decode conditional models yet (conditional=True); use "
               "vae-jax sample --label and vae-jax interpolate")
    server = explorer.serve(model, host=_HOST.value, port=_PORT.value, max_points=_POINTS.value)
  print(f"serving the latent explorer of {_WORKDIR.value} (step {model.step}) at "
        f"{explorer.address(server)}; Ctrl-C stops it", flush=True)
  try:
    server.serve_forever()
  finally:  # Ctrl-C or SIGTERM: cli.run_command says so and exits with 128 + the signal.
    server.server_close()
