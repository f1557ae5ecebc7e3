"""Downloads MNIST and Fashion-MNIST as the four standard IDX gzip files, without TensorFlow.

    folder = download.fetch("fashion_mnist")   # ~/.cache/vae_jax/fashion_mnist/
    dataset = data.load_idx_dir(folder, name="fashion_mnist")

Sources. The URLs, sizes and sha256 sums are those tensorflow-datasets 4.9.10
registers: `tensorflow_datasets/image_classification/mnist.py` (`MNIST.URL`,
`FashionMNIST.URL`) and `tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt`;
`tests/test_download.py` compares the table with those files when tfds is
installed. tfds registers one URL per file; a second, well-known mirror of the
same bytes follows it:
  * mnist: the S3 bucket torchvision downloads from (`ossci-datasets`). torchvision
    checks it against the md5 sums of LeCun's original files, whose sizes are the
    ones tfds registers, and public download scripts record tfds' sha256 sums for
    that bucket's files.
  * fashion_mnist: `data/fashion/` of Zalando's GitHub repository, which its README
    offers as the same files as the S3 links (one md5 table for both); public
    scripts check tfds' sha256 sums on the GitHub copies.
Every file is checked against its size and sha256 whatever mirror served it.

Cache layout: `ROOT/DATASET/<the four .gz files>`, where ROOT is the `cache_dir`
argument if given, else `$VAE_JAX_CACHE`, else `~/.cache/vae_jax`. A cached file is
used when its size and sha256 match (hashed on every call, no marker file), so a
damaged one is fetched again. A download goes to a temporary name in the
dataset folder and is renamed once verified; the folder itself is created only
when a first byte arrives, so a machine without network keeps no trace.
"""
import hashlib
import http.client
import os
import pathlib
import tempfile
import typing
import urllib.error
import urllib.parse
import urllib.request

from tqdm.auto import tqdm

from vae_jax.errors import UsageError

DATASETS = ("mnist", "fashion_mnist")
CACHE_ENV = "VAE_JAX_CACHE"
DEFAULT_CACHE = pathlib.Path("~/.cache/vae_jax")
# Offline, a blackholed mirror costs at most CONNECT_TIMEOUT_S (name resolution
# aside, which fails at once without network), and a host that failed is not
# tried again in the same fetch: two mirrors give up within about 6 s.
CONNECT_TIMEOUT_S = 3.0
# Once connected, a server may pause this long between bytes before the next
# mirror is tried.
READ_TIMEOUT_S = 30.0
_CHUNK = 1 << 16
_OFFLINE_HINT = ("offline, use --config.dataset=mnist_sample (shipped) or "
                 "--config.data_dir=DIR holding the four IDX files")


class Offline(UsageError):
  """No mirror of a missing file could be reached: most likely no network.

  Attributes:
    reason: the first host's failure, e.g. `storage.googleapis.com: timed out`.
  """

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason


class Source(typing.NamedTuple):
  """Where one file comes from: mirrors tried in order, and what it must be."""

  urls: tuple[str, ...]
  sha256: str
  size: int  # bytes


def _sources(bases: tuple[str, ...], files: dict[str, tuple[int, str]]) -> dict[str, Source]:
  return {name: Source(tuple(base + name for base in bases), sha256, size)
          for name, (size, sha256) in files.items()}


# File -> (size, sha256), copied from tensorflow_datasets 4.9.10 url_checksums/.
SOURCES: dict[str, dict[str, Source]] = {
    "mnist": _sources(
        ("https://storage.googleapis.com/cvdf-datasets/mnist/",  # tfds
         "https://ossci-datasets.s3.amazonaws.com/mnist/"),  # torchvision
        {"train-images-idx3-ubyte.gz":
             (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
         "train-labels-idx1-ubyte.gz":
             (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
         "t10k-images-idx3-ubyte.gz":
             (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
         "t10k-labels-idx1-ubyte.gz":
             (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")}),
    "fashion_mnist": _sources(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # tfds
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz":
             (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
         "train-labels-idx1-ubyte.gz":
             (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
         "t10k-images-idx3-ubyte.gz":
             (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
         "t10k-labels-idx1-ubyte.gz":
             (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5")}),
}


def dataset_dir(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The cache folder of dataset `name`: ROOT/name.

  ROOT is `cache_dir` if given, else `$VAE_JAX_CACHE`, else `~/.cache/vae_jax`; an
  empty `cache_dir` (a config field left blank) counts as not given.
  """
  root = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
  return pathlib.Path(root).expanduser() / name


def fetch(name: str, cache_dir: str | os.PathLike | None = None, *, progress: bool = True,
          sources: typing.Mapping[str, Source] | None = None) -> pathlib.Path:
  """Makes sure the cache holds the verified files of `name`, downloading what is missing.

  Args:
    name: one of `DATASETS`.
    cache_dir: the cache root (see `dataset_dir`); None or "": the default.
    progress: show a progress bar per download (only when stderr is a terminal).
    sources: file name -> `Source`, instead of `SOURCES[name]`: other mirrors,
      such as a local one.

  Returns:
    The folder holding the files (for mnist and fashion_mnist the four
    `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`), ready for
    `data.load_idx_dir`.

  Raises:
    Offline: no mirror of a missing file was reachable (a `UsageError`).
    UsageError: unknown name, or a file no mirror could deliver intact; one line
      saying which file and why, and naming the offline options.
  """
  if name not in DATASETS:
    raise UsageError(f"cannot download {name!r}: known datasets are {', '.join(DATASETS)}")
  folder = dataset_dir(name, cache_dir)
  unreachable: set[str] = set()  # Hosts that failed to connect: not tried again in this fetch.
  for file_name, source in (SOURCES[name] if sources is None else sources).items():
    path = folder / file_name
    if not _is_intact(path, source):
      _download(path, source, name, progress, unreachable)
  return folder


def _is_intact(path: pathlib.Path, source: Source) -> bool:
  if not path.is_file() or path.stat().st_size != source.size:
    return False
  digest = hashlib.sha256()
  with path.open("rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest() == source.sha256


class _Unreachable(Exception):
  """No connection to the host: refused, unresolvable, timed out, TLS failed."""


class _BadDownload(Exception):
  """The host answered, but not with the file: HTTP error, short or wrong bytes."""


def _download(path: pathlib.Path, source: Source, name: str, progress: bool,
              unreachable: set[str]) -> None:
  """Tries the mirrors in order until one delivers the verified file at `path`."""
  failures, reached = [], False
  for url in source.urls:
    host = urllib.parse.urlsplit(url).netloc
    if host in unreachable:
      failures.append(f"{host}: unreachable")
      continue
    try:
      _download_from(url, path, source, progress)
      return
    except _Unreachable as e:
      unreachable.add(host)
      failures.append(f"{host}: {e}")
    except _BadDownload as e:
      reached = True
      failures.append(f"{url}: {e}")
  if not reached:
    raise Offline(f"cannot download {name}: no mirror reachable ({'; '.join(failures)}); "
                  f"{_OFFLINE_HINT}", failures[0])
  raise UsageError(f"cannot download {name} file {path.name}: {'; '.join(failures)}; "
                   f"{_OFFLINE_HINT}")


def _download_from(url: str, path: pathlib.Path, source: Source, progress: bool) -> None:
  """Streams `url` into a temporary file beside `path`; renames it there once verified.

  Raises:
    _Unreachable: no connection.
    _BadDownload: anything else; no temporary file remains.
  """
  try:
    response = _opener().open(urllib.request.Request(url, headers={"User-Agent": "vae_jax"}))
  except urllib.error.HTTPError as e:
    raise _BadDownload(f"HTTP {e.code} {e.reason}") from None
  except urllib.error.URLError as e:
    raise _Unreachable(_one_line(e.reason)) from None
  except (OSError, http.client.HTTPException) as e:  # Connected, then no valid answer.
    raise _BadDownload(_one_line(e)) from None
  with response:
    announced = response.headers.get("Content-Length")
    if announced is not None and announced.isdigit() and int(announced) != source.size:
      raise _BadDownload(f"server announces {announced} bytes, expected {source.size}")
    _receive(response, path, source, progress)


def _receive(response, path: pathlib.Path, source: Source, progress: bool) -> None:
  tmp = None
  try:
    first = response.read(_CHUNK)
    if not first:
      raise _BadDownload(f"truncated: 0 of {source.size} bytes")
    # Only now that data flows does anything touch the disk.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    digest, received = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as f, tqdm(total=source.size, desc=path.name, unit="B",
                                        unit_scale=True, unit_divisor=1024, leave=False,
                                        disable=None if progress else True) as bar:
      chunk = first
      while chunk and received <= source.size:  # A longer body stops one chunk past.
        f.write(chunk)
        digest.update(chunk)
        received += len(chunk)
        bar.update(len(chunk))
        chunk = response.read(_CHUNK)
    if received != source.size:
      raise _BadDownload(f"{'truncated' if received < source.size else 'too long'}: "
                         f"{received} of {source.size} bytes")
    if digest.hexdigest() != source.sha256:
      raise _BadDownload(f"sha256 {digest.hexdigest()[:12]}... instead of {source.sha256[:12]}...")
    os.replace(tmp, path)
    tmp = None
  except (OSError, http.client.HTTPException) as e:  # Reset, timeout, broken chunking.
    raise _BadDownload(_one_line(e)) from None
  finally:
    if tmp is not None:
      os.unlink(tmp)


def _one_line(error) -> str:
  text = " ".join(str(error).split())
  return text or type(error).__name__


def _opener() -> urllib.request.OpenerDirector:
  """urllib with separate connect and read timeouts; proxies from the environment as usual."""
  return urllib.request.build_opener(_HTTPHandler(), _HTTPSHandler())


class _Timeouts:
  """Connects (TLS handshake included) within CONNECT_TIMEOUT_S, reads within READ_TIMEOUT_S."""

  def __init__(self, *args, **kwargs):
    kwargs["timeout"] = CONNECT_TIMEOUT_S
    super().__init__(*args, **kwargs)

  def connect(self):
    super().connect()
    self.sock.settimeout(READ_TIMEOUT_S)


class _HTTPConnection(_Timeouts, http.client.HTTPConnection):
  pass


class _HTTPSConnection(_Timeouts, http.client.HTTPSConnection):
  pass


class _HTTPHandler(urllib.request.HTTPHandler):

  def http_open(self, req):
    return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):

  def https_open(self, req):
    return self.do_open(_HTTPSConnection, req)
