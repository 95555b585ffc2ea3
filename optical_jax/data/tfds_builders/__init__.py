"""TFDS builders for the benchmarks, prepared as array_record without TensorFlow.

Each module holds one builder family (see `BUILDERS`): `bitext` (generic
bitext), `miracl` (queries, qrels and corpus per language), `mlqa`
(cross-lingual question -> context retrieval), `multi30k` (caption bitext and
caption retrieval), `mtop` (utterances with intents) and `bible` (the embedded
Chichewa-English Bible). They read the published file layouts from a
`manual_dir`; MIRACL and MLQA also download when the network is up. Every
builder is prepared with `file_format="array_record"` and read with
`builder.as_data_source()`: nothing here needs TensorFlow (tfrecord,
`as_dataset()`, `tfds.list_builders()` with community datasets would).

    from optical_jax.data import tfds_builders
    train = tfds_builders.load("bitext", "tsv", data_dir, manual_dir, split="train")
    train[0]  # {'src': b'...', 'tgt': b'...', 'origin': b'/path/train.tsv:1'}

Texts come back as UTF-8 `bytes` (TFDS's numpy encoding); the `*_collection`
helpers of the modules turn prepared data into `EvalCollection`s.

The downloading paths call `require_online` first, so that an offline machine
fails in seconds with the list of files to put in `manual_dir`, instead of
TFDS retrying for minutes.
"""
from __future__ import annotations

import importlib
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# Short name -> (module, class). The TFDS names are `optical_<short name>`, so
# that they never collide with catalog builders (the catalog has an `mlqa`).
BUILDERS = {
    "bitext": ("bitext", "OpticalBitext"),
    "miracl_queries": ("miracl", "OpticalMiraclQueries"),
    "miracl_qrels": ("miracl", "OpticalMiraclQrels"),
    "miracl_corpus": ("miracl", "OpticalMiraclCorpus"),
    "mlqa": ("mlqa", "OpticalMlqa"),
    "multi30k": ("multi30k", "OpticalMulti30k"),
    "mtop": ("mtop", "OpticalMtop"),
    "bible": ("bible", "OpticalBible"),
}

# Set to 1/true/yes to make every downloading path fail at once.
OFFLINE_ENV = "OPTICAL_JAX_OFFLINE"
# Honoured for Hugging Face hosts only (they mean "no Hub").
HF_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
HF_HOSTS = ("huggingface.co", "hf.co")
NETWORK_TIMEOUT_S = 3.0


class OfflineError(ConnectionError):
  """A download was needed and the network is not there; says what to put where."""


def _truthy(value: str | None) -> bool:
  return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_reason(url: str, timeout: float | None = None) -> str | None:
  """Why `url` cannot be fetched now, or None when a HEAD request for it succeeds.

  `url` may be a bare host (`huggingface.co`); `timeout` defaults to
  `NETWORK_TIMEOUT_S` (3 s). Checks, in order:
  `OPTICAL_JAX_OFFLINE`; `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` for Hugging
  Face hosts; an HTTP HEAD request for `url` (through the proxy of
  `https_proxy`, when set) that must succeed (after redirects): an error status
  (a gateway's 404, a gated file's 401) means the download would fail too. The
  request, name resolution and redirects included, runs in a daemon thread
  given `timeout` seconds in all, so neither a hanging DNS lookup nor a network
  that accepts connections and never answers can stall the caller.
  """
  timeout = NETWORK_TIMEOUT_S if timeout is None else timeout
  if "://" not in url:
    url = f"https://{url}/"
  host = urllib.parse.urlsplit(url).hostname or url
  if _truthy(os.environ.get(OFFLINE_ENV)):
    return f"offline: {OFFLINE_ENV}={os.environ[OFFLINE_ENV]} is set"
  if any(host == h or host.endswith("." + h) for h in HF_HOSTS):
    for env in HF_OFFLINE_ENVS:
      if _truthy(os.environ.get(env)):
        return f"offline: {env}={os.environ[env]} is set"
  outcome: list[str | None] = []

  def probe():
    request = urllib.request.Request(url, method="HEAD",
                                     headers={"User-Agent": "optical_jax-netcheck"})
    try:
      with urllib.request.urlopen(request, timeout=timeout):
        outcome.append(None)
    except urllib.error.HTTPError as e:  # answered, but the download would fail
      outcome.append(f"{host} answered HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError, ValueError) as e:
      outcome.append(f"cannot reach {host} ({getattr(e, 'reason', None) or e})")

  thread = threading.Thread(target=probe, daemon=True, name=f"netcheck-{host}")
  thread.start()
  thread.join(timeout)
  if not outcome:
    return f"no answer from {host} within {timeout:g} s"
  return outcome[0]


def is_online(url: str, timeout: float | None = None) -> bool:
  """Whether `url` (or a bare host) can be fetched, told within `timeout` s."""
  return offline_reason(url, timeout) is None


def require_online(url: str, instructions: str, timeout: float | None = None) -> None:
  """Raises `OfflineError` (with `instructions`) unless `url` can be fetched.

  Args:
    url: what is about to be downloaded.
    instructions: what to do instead: the files to put in which directory.
  """
  reason = offline_reason(url, timeout)
  if reason is not None:
    raise OfflineError(f"cannot download {url}: {reason}.\n{instructions}")


def __getattr__(name: str):
  # `ManualDataError` and `DataError` live with TFDS in `_base`; importing this
  # package stays light until they are asked for.
  if name in ("ManualDataError", "DataError"):
    from optical_jax.data.tfds_builders import _base
    return getattr(_base, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def builder_class(name: str):
  """The builder class for a short name (`bitext`, `mlqa`, ...) or `optical_<name>`."""
  short = name[len("optical_"):] if name.startswith("optical_") else name
  if short not in BUILDERS:
    raise ValueError(f"unknown builder {name!r}; expected one of {sorted(BUILDERS)}")
  module, cls = BUILDERS[short]
  return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def builder(name: str, config: Any = None, data_dir: str | os.PathLike | None = None):
  """An unprepared builder: `config` is a config name, a `BuilderConfig` or None."""
  from optical_jax.data.tfds_builders import _base
  return _base.make_builder(builder_class(name), config, data_dir)


def prepare(name: str, config: Any = None, data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None):
  """Prepares (if not yet prepared in `data_dir`) and returns the builder."""
  from optical_jax.data.tfds_builders import _base
  b = builder(name, config, data_dir)
  _base.prepare(b, manual_dir)
  return b


def load(name: str, config: Any = None, data_dir: str | os.PathLike | None = None,
         manual_dir: str | os.PathLike | None = None, split: str | None = None):
  """Prepares the dataset if needed and returns its array_record data source(s).

  Args:
    name: a key of `BUILDERS` (or `optical_<key>`).
    config: the config name (e.g. 'sw', 'en-de'), a `BuilderConfig`, or None
      for the builder's default.
    data_dir: where prepared datasets live (TFDS's default when None).
    manual_dir: where the published files were put (TFDS's default,
      `<data_dir>/downloads/manual`, when None).
    split: a split name, or None for `{split: data source}`.

  Returns:
    A random-access data source (`len`, `[i]`, iteration) of feature dicts.

  Raises:
    ManualDataError: (a FileNotFoundError) files missing from manual_dir, listed.
    OfflineError: the files are missing and cannot be downloaded (told in ~3 s).
    DataError: (`bitext.BitextError`, a ValueError) bad input, naming file:line.
  """
  # '~' in a config path means the home directory, as it would in a shell.
  data_dir, manual_dir = (os.path.expanduser(d) if d else d for d in (data_dir, manual_dir))
  return prepare(name, config, data_dir, manual_dir).as_data_source(split=split)
