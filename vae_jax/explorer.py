"""The latent explorer: a local web page over a trained model, decoded in this process.

    model = vae_jax.load("/tmp/vae")
    server = explorer.serve(model, port=0)       # bound, not yet serving
    print(explorer.address(server))              # http://127.0.0.1:PORT/
    server.serve_forever()

The page (`explorer.html`, one self-contained file: no external scripts, fonts
or CDNs, so it works offline) asks `GET /state` once, for the test set's
posterior means, labels and principal plane, and then `POST /decode` with the
codes under the pointer; it draws the plane, the points and the decoded images
itself. Decoding goes through the public `vae_jax.decode`, jitted, in batches
padded to a power of two so that a few compilations serve every request.
"""
import base64
import dataclasses
import errno
import http.server
import json
import math
import pathlib

import numpy as np

from vae_jax import figures
from vae_jax import images
from vae_jax import latent
from vae_jax.trained import TrainedModel
from vae_jax.errors import UsageError

PAGE = pathlib.Path(__file__).with_name("explorer.html")
MAX_BATCH = 64  # Codes per /decode request: an interpolation path is 9.
_MAX_BODY = 1 << 20


@dataclasses.dataclass(frozen=True)
class Scene:
  """What the page shows of the test set.

  Attributes:
    means: (N, L) posterior means of the test images.
    labels: (N,) int labels, -1 where unknown.
    centre: (L,) the means' mean, where the PCA plane is centred.
    axes: (2, L) orthonormal rows spanning the PCA plane (for L <= 2 the first
      latents' axes, centred at 0).
    explained: the fraction of the means' variance the plane keeps; None for L <= 2.
  """

  means: np.ndarray
  labels: np.ndarray
  centre: np.ndarray
  axes: np.ndarray
  explained: float | None


def scene(model: TrainedModel, max_points: int = 2000) -> Scene:
  """Encodes the first `max_points` test images of the model's data set.

  Raises:
    UsageError: the data set cannot be read.
  """
  inputs, labels = figures.test_set(model)
  means = np.asarray(latent.encode(model, inputs[:max_points])[0], np.float64)
  latents = means.shape[1]
  if latents > 2:
    centre, axes, explained = figures.principal_axes(means)
  else:
    centre, axes, explained = np.zeros(latents), np.eye(2, latents), None
  return Scene(means, np.asarray(labels[:max_points]), centre, axes, explained)


def decode_codes(model: TrainedModel, codes: np.ndarray) -> np.ndarray:
  """Decodes codes in one jitted call of a padded batch.

  Args:
    model: a trained model.
    codes: (N, L), 1 <= N <= MAX_BATCH.

  Returns:
    (N, H, W, C) uint8 images.
  """
  n = len(codes)
  padded = np.zeros((2 ** math.ceil(math.log2(n)), model.family.latents), np.float32)
  padded[:n] = codes
  pictures = np.asarray(latent.decode(model, padded))[:n]
  return images.to_uint8(pictures.reshape(n, *model.image_shape))


def parse_codes(body: bytes, latents: int) -> np.ndarray:
  """The codes of a /decode request body, `{"codes": [[z_1, ..., z_L], ...]}`.

  Returns:
    (N, L) float32.

  Raises:
    UsageError: not JSON, not 1..MAX_BATCH lists of L finite numbers.
  """
  try:
    codes = np.asarray(json.loads(body)["codes"], np.float32)
  except (ValueError, KeyError, TypeError) as e:
    raise UsageError(f'expected {{"codes": [[{latents} numbers], ...]}} ({e})') from None
  if codes.ndim != 2 or codes.shape[1] != latents or not 1 <= len(codes) <= MAX_BATCH:
    raise UsageError(f"expected 1 to {MAX_BATCH} codes of {latents} numbers, got shape "
                     f"{codes.shape}")
  if not np.isfinite(codes).all():
    raise UsageError("codes must be finite")
  return codes


def state(model: TrainedModel, shown: Scene) -> dict:
  """The JSON the page starts from."""
  config = model.config or {}
  return {
      "dataset": config.get("dataset", ""), "step": model.step, "model": model.index,
      "latents": model.family.latents, "image_shape": list(model.image_shape),
      "means": np.round(shown.means, 4).tolist(), "labels": shown.labels.tolist(),
      "centre": shown.centre.tolist(), "axes": shown.axes.tolist(),
      "explained": shown.explained, "max_batch": MAX_BATCH,
  }


def _handler(model: TrainedModel, shown: Scene):
  """The request handler class of one model's explorer."""
  page = PAGE.read_bytes()
  start = json.dumps(state(model, shown)).encode()

  class Handler(http.server.BaseHTTPRequestHandler):
    """GET / (the page), GET /state, POST /decode."""

    def do_GET(self):  # pylint: disable=invalid-name
      if self.path in ("/", "/index.html"):
        self._send(200, page, "text/html; charset=utf-8")
      elif self.path == "/state":
        self._send(200, start, "application/json")
      elif self.path == "/favicon.ico":  # The page names none: no 404 in the console.
        self._send(204, b"", "image/x-icon")
      else:
        self._send(404, b"not found", "text/plain")

    def do_POST(self):  # pylint: disable=invalid-name
      if self.path != "/decode":
        return self._send(404, b"not found", "text/plain")
      length = int(self.headers.get("Content-Length") or 0)
      try:
        if length > _MAX_BODY:
          raise UsageError(f"request of {length} bytes; at most {_MAX_BODY}")
        codes = parse_codes(self.rfile.read(length), model.family.latents)
      except UsageError as e:
        return self._send(400, json.dumps({"error": str(e)}).encode(), "application/json")
      pictures = decode_codes(model, codes)
      reply = {"shape": list(pictures.shape[1:]),
               "images": [base64.b64encode(p.tobytes()).decode() for p in pictures]}
      self._send(200, json.dumps(reply).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
      self.send_response(status)
      self.send_header("Content-Type", content_type)
      self.send_header("Content-Length", str(len(body)))
      self.send_header("Cache-Control", "no-store")
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      del format, args  # One line per pointer move would drown the terminal.

  return Handler


def serve(model: TrainedModel, *, host: str = "127.0.0.1", port: int = 8765,
          max_points: int = 2000) -> http.server.ThreadingHTTPServer:
  """A bound server for the explorer of `model`, decoding compiled; call `serve_forever()`.

  Args:
    model: a trained model.
    host: the address to listen on; the default is this machine only.
    port: the port; 0 picks a free one (see `address`).
    max_points: how many test images are drawn as points.

  Raises:
    UsageError: the port is in use or not allowed, or the data set cannot be read.
  """
  shown = scene(model, max_points)
  for n in (1, 16):  # Compiled now, not on the first pointer move or path.
    decode_codes(model, shown.means[:n])
  try:
    return http.server.ThreadingHTTPServer((host, port), _handler(model, shown))
  except OSError as e:
    if e.errno == errno.EADDRINUSE:
      raise UsageError(f"port {port} on {host} is in use; choose another with --port "
                       "(0: any free port)") from None
    raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def address(server: http.server.ThreadingHTTPServer) -> str:
  """The page's URL."""
  host, port = server.server_address[:2]
  return f"http://{host}:{port}/"
