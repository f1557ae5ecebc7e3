"""The MNIST downloader against a real HTTP server on 127.0.0.1, and offline."""
import collections
import hashlib
import http.server
import importlib.util
import pathlib
import socket
import threading
import time
import urllib.parse

import pytest

from vae_jax import data
from vae_jax import download
from vae_jax.errors import UsageError

SAMPLE_DIR = pathlib.Path(download.__file__).parent / "datasets" / "mnist_sample"
FILES = {p.name: p.read_bytes() for p in sorted(SAMPLE_DIR.glob("*.gz"))}


class Server:
  """Serves `routes[path] = (kind, body)` with kind ok | truncated (half the body, then closes).

  Other paths get 404; `requests` counts every GET by path.
  """

  def __init__(self):
    self.routes, self.requests = {}, collections.Counter()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # pylint: disable=invalid-name
        server.requests[self.path] += 1
        if self.path not in server.routes:
          self.send_error(404)
          return
        kind, body = server.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if kind == "ok" else body[:len(body) // 2])

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

  def serve(self, mirror: str, kind: str = "ok", files=None):
    """Puts `files` (default: the sample files) under /mirror/; returns its base URL."""
    for name, body in (FILES if files is None else files).items():
      self.routes[f"/{mirror}/{name}"] = (kind, body)
    return f"{self.base}/{mirror}/"

  def hits(self, mirror: str) -> int:
    return sum(n for path, n in self.requests.items() if path.startswith(f"/{mirror}/"))


@pytest.fixture
def server():
  s = Server()
  yield s
  s.httpd.shutdown()
  s.httpd.server_close()


def sources(*bases):
  """The sample files' real checksums, served from `bases` in order."""
  return {name: download.Source(tuple(b + name for b in bases), hashlib.sha256(body).hexdigest(),
                                len(body))
          for name, body in FILES.items()}


def closed_port_url() -> str:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"http://127.0.0.1:{s.getsockname()[1]}/"


def assert_cached(folder: pathlib.Path):
  # Exactly the four files, byte for byte: no temporary file left beside them.
  assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
  for name, body in FILES.items():
    assert (folder / name).read_bytes() == body


def test_downloads_into_the_cache_then_uses_it(server, tmp_path):
  src = sources(server.serve("a"))
  folder = download.fetch("mnist", tmp_path, sources=src)
  assert folder == tmp_path / "mnist"
  assert_cached(folder)
  assert server.hits("a") == 4
  assert data.load_idx_dir(folder).train.images.shape == (8004, 28, 28, 1)
  assert download.fetch("mnist", tmp_path, sources=src) == folder
  assert server.hits("a") == 4


@pytest.mark.parametrize("failure", ["checksum", "404", "truncated"])
def test_a_bad_first_mirror_falls_back_to_the_second(server, tmp_path, failure):
  if failure == "checksum":  # Same length, one byte changed.
    bad = server.serve("a", files={n: b[:-1] + bytes([b[-1] ^ 1]) for n, b in FILES.items()})
  elif failure == "404":
    bad = f"{server.base}/a/"
  else:
    bad = server.serve("a", "truncated")
  folder = download.fetch("mnist", tmp_path, sources=sources(bad, server.serve("b")))
  assert_cached(folder)
  assert server.hits("a") == 4 and server.hits("b") == 4


@pytest.mark.parametrize("failure, reason", [("checksum", "sha256"), ("truncated", "truncated"),
                                             ("404", "HTTP 404")])
def test_every_mirror_bad_says_which_file_and_why(server, tmp_path, failure, reason):
  if failure == "checksum":
    bases = [server.serve(m, files={n: b"\0" * len(b) for n, b in FILES.items()}) for m in "ab"]
  elif failure == "truncated":
    bases = [server.serve(m, "truncated") for m in "ab"]
  else:
    bases = [f"{server.base}/a/", f"{server.base}/b/"]
  with pytest.raises(UsageError) as e:
    download.fetch("mnist", tmp_path, sources=sources(*bases))
  message = str(e.value)
  assert "\n" not in message and message.count(reason) == 2
  assert f"file {next(iter(FILES))}" in message
  # Nothing but possibly the empty dataset folder.
  assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_offline_fails_fast_and_writes_nothing(tmp_path):
  cache = tmp_path / "cache"
  start = time.monotonic()
  with pytest.raises(UsageError) as e:
    download.fetch("mnist", cache, sources=sources(closed_port_url(), closed_port_url()))
  assert time.monotonic() - start < 10
  message = str(e.value)
  assert "\n" not in message and "no mirror reachable" in message
  assert "--config.dataset=mnist_sample" in message and "--config.data_dir" in message
  assert not cache.exists()


@pytest.fixture
def blackholed_url():
  """A port that never completes a connection, like a firewall that drops packets.

  A listening socket with a backlog of 0 that never accepts: once a pending
  connection fills the queue, Linux drops further SYNs, so connecting times out.
  """
  listener = socket.socket()
  listener.bind(("127.0.0.1", 0))
  listener.listen(0)
  fillers = []
  for _ in range(3):
    filler = socket.socket()
    filler.setblocking(False)
    filler.connect_ex(listener.getsockname())
    fillers.append(filler)
  yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
  for s in [listener, *fillers]:
    s.close()


def test_a_blackholed_mirror_fails_within_the_connect_timeout(tmp_path, blackholed_url):
  cache = tmp_path / "cache"
  start = time.monotonic()
  with pytest.raises(UsageError, match="no mirror reachable .*timed out") as e:
    download.fetch("mnist", cache, sources=sources(blackholed_url, closed_port_url()))
  assert time.monotonic() - start < download.CONNECT_TIMEOUT_S + 2
  assert "--config.dataset=mnist_sample" in str(e.value)
  assert not cache.exists()


def test_a_blackholed_mirror_costs_its_timeout_once(server, tmp_path, blackholed_url):
  start = time.monotonic()
  folder = download.fetch("mnist", tmp_path, sources=sources(blackholed_url, server.serve("b")))
  # Not once per file (4 x 3 s): the host that timed out is skipped afterwards.
  assert time.monotonic() - start < download.CONNECT_TIMEOUT_S + 2
  assert_cached(folder)


def test_cache_root_from_environment_or_argument(server, tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.delenv(download.CACHE_ENV, raising=False)
  assert download.dataset_dir("mnist") == tmp_path / "home" / ".cache" / "vae_jax" / "mnist"
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "env"))
  src = sources(server.serve("a"))
  assert download.fetch("mnist", sources=src) == tmp_path / "env" / "mnist"
  assert download.fetch("mnist", "", sources=src) == tmp_path / "env" / "mnist"
  assert download.fetch("mnist", tmp_path / "arg", sources=src) == tmp_path / "arg" / "mnist"
  assert_cached(tmp_path / "env" / "mnist")
  assert_cached(tmp_path / "arg" / "mnist")
  assert server.hits("a") == 8


@pytest.mark.parametrize("damage", ["flipped", "short"])
def test_a_damaged_cached_file_is_fetched_again(server, tmp_path, damage):
  src = sources(server.serve("a"))
  folder = download.fetch("mnist", tmp_path, sources=src)
  victim = folder / "t10k-labels-idx1-ubyte.gz"
  body = victim.read_bytes()
  victim.write_bytes(body[:100] + bytes([body[100] ^ 1]) + body[101:] if damage == "flipped"
                     else body[:-10])
  download.fetch("mnist", tmp_path, sources=src)
  assert_cached(folder)
  assert server.requests["/a/t10k-labels-idx1-ubyte.gz"] == 2 and server.hits("a") == 5


def test_unknown_dataset():
  with pytest.raises(UsageError, match="mnist, fashion_mnist"):
    download.fetch("cifar10")


def _tfds_checksums(name: str) -> dict[str, tuple[str, int, str]]:
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None:
    pytest.skip("tensorflow-datasets is not installed")
  # Read the file without importing tfds (which imports TensorFlow).
  table = pathlib.Path(spec.origin).parent / "url_checksums" / f"{name}.txt"
  rows = (line.split("\t") for line in table.read_text().splitlines() if line.strip())
  return {file_name: (url, int(size), sha256) for url, size, sha256, file_name in rows}


@pytest.mark.parametrize("name", download.DATASETS)
def test_the_table_is_what_tfds_registers(name):
  registered = _tfds_checksums(name)
  assert set(registered) == set(download.SOURCES[name])
  for file_name, (url, size, sha256) in registered.items():
    source = download.SOURCES[name][file_name]
    assert (source.urls[0], source.size, source.sha256) == (url, size, sha256)
    assert all(u.endswith("/" + file_name) for u in source.urls)


def _network_reachable(name: str) -> bool:
  for source in download.SOURCES[name].values():
    for url in source.urls:
      parts = urllib.parse.urlsplit(url)
      try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=2).close()
        return True
      except OSError:
        pass
  return False


@pytest.mark.parametrize("name", download.DATASETS)
def test_the_registered_mirrors_offline(name, tmp_path):
  if _network_reachable(name):
    pytest.skip("the network is reachable; this test is for offline machines")
  start = time.monotonic()
  try:
    download.fetch(name, tmp_path / "cache", progress=False)
  except UsageError as e:
    message = str(e)
  else:
    pytest.skip("the download succeeded: the network is reachable")
  assert time.monotonic() - start < 10
  assert "\n" not in message and "no mirror reachable" in message
  assert "--config.dataset=mnist_sample" in message and "--config.data_dir" in message
  assert not (tmp_path / "cache").exists()
