"""What every builder here shares: the base class, preparing, reading files.

TFDS traps this module works around (tensorflow-datasets 4.9.10, no TensorFlow):

* `DatasetBuilder.code_path` evaluates `importlib_resources.abc.Traversable`
  for any builder defined in a package, and `importlib_resources` (a backport)
  is only a dependency of TFDS before Python 3.9: constructing a builder fails
  with `ModuleNotFoundError: importlib_resources`. `OpticalBuilder` overrides
  `code_path` with the class's file (the same result TFDS falls back to).
  (Catalog builders got through `tfds.builder(name)` are spared: their
  provider sets `pkg_dir_path`.)
* Examples are shuffled by a hash of their key unless the info sets
  `disable_shuffling=True`; every builder here does, so a split keeps file
  order (queries in topic order, captions in line order).
* `dl_manager.manual_dir` raises a bare `AssertionError` when the directory is
  missing or empty; builders read the configured path (`manual_root`) and list
  the exact missing files themselves.
* `tfds.features.Scalar("int32")` fails: dtypes must be numpy types.
* `dl_manager.download_and_extract` needs TensorFlow (TFDS's extractor calls
  `tf.compat.as_text` and `tf.io.gfile`); `dl_manager.download` does not, so
  builders here download and unzip with `zipfile` themselves.
* A config that is not in `BUILDER_CONFIGS` cannot be named again: the class
  raises "BuilderConfig ... not found". `make_builder` reopens such a prepared
  dataset with `tfds.builder_from_directory` instead.
* A split with no examples fails only when its writer finalises, with "No
  examples were yielded" and no file name; `nonempty` fails first, naming the
  input.
"""
from __future__ import annotations

import gzip
import inspect
import json
import logging
import os
import pathlib
import zlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import tensorflow_datasets as tfds
from etils import epath

from optical_jax.data import bitext
from optical_jax.data.tfds_builders import network

log = logging.getLogger(__name__)

DataError = bitext.BitextError  # bad input; the message names file and line
FILE_FORMAT = "array_record"


class ManualDataError(FileNotFoundError):
  """Files the builder needs are not in manual_dir; the message lists them."""


class OpticalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders here (not registered itself).

  Subclasses set `name` (`optical_<short name>`), `VERSION`, `BUILDER_CONFIGS`,
  `MANUAL_DOWNLOAD_INSTRUCTIONS`, and implement `_features`,
  `_split_generators` and `_generate_examples`.
  """

  HOMEPAGE: str = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:  # see the module docstring
    try:
      return epath.Path(inspect.getfile(cls))
    except (TypeError, OSError):
      return None

  def _features(self) -> Mapping[str, Any]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(dict(self._features())),
        homepage=self.HOMEPAGE or None,
        disable_shuffling=True,
        # Saved as metadata.json beside the data: e.g. skipped-line counts.
        metadata=tfds.core.MetadataDict(),
    )

  def record(self, key: str, value: Any) -> None:
    """Keeps `value` (JSON-able) in the prepared dataset's `info.metadata`."""
    self.info.metadata[key] = value

  def manual_root(self, dl_manager) -> pathlib.Path:
    """The configured manual_dir (which may not exist), without TFDS's assertion."""
    raw = getattr(dl_manager, "_manual_dir", None)
    if raw is None:
      raw = dl_manager.manual_dir  # a TFDS without the attribute: its own check
    return pathlib.Path(os.fspath(raw)).absolute()

  def require_online(self, url: str, manual_dir: pathlib.Path, missing: Sequence[str]) -> None:
    """Before downloading: an `OfflineError` within seconds, listing the files
    to put in `manual_dir`, when `url` cannot be reached."""
    try:
      network.require_online(url, str(self.missing_files_error(manual_dir, missing)))
    except network.OfflineError as e:
      config = f" ({self.builder_config.name})" if self.builder_config else ""
      raise network.OfflineError(
          f"{self.name}{config}: the files are not in manual_dir and cannot be "
          f"downloaded: {e}") from None

  def missing_files_error(self, manual_dir: pathlib.Path, missing: Sequence[str],
                          extra: str = "") -> ManualDataError:
    config = f" ({self.builder_config.name})" if self.builder_config else ""
    lines = "\n".join(f"  {manual_dir / m}" for m in missing)
    return ManualDataError(
        f"{self.name}{config}: {len(missing)} file(s) missing from manual_dir "
        f"{manual_dir}:\n{lines}\n{extra}{self.MANUAL_DOWNLOAD_INSTRUCTIONS or ''}".rstrip())


def make_builder(cls, config: Any = None, data_dir: Any = None) -> tfds.core.DatasetBuilder:
  """`cls(config, data_dir)`; a config name not in `BUILDER_CONFIGS` (a custom
  config prepared before) is reopened read-only from `data_dir`.

  Raises:
    ValueError: an unknown config name with no prepared copy in `data_dir`.
  """
  if isinstance(config, str) and cls.BUILDER_CONFIGS and config not in cls.builder_configs:
    root = epath.Path(os.fspath(data_dir) if data_dir is not None
                      else tfds.core.constants.get_default_data_dir())
    prepared = root / cls.name / config / str(cls.VERSION)
    if (prepared / "dataset_info.json").exists():
      return tfds.builder_from_directory(prepared)
    raise ValueError(f"{cls.name}: no config {config!r} (predefined: "
                     f"{sorted(cls.builder_configs)}) and no prepared custom config at "
                     f"{prepared}")
  kwargs: dict[str, Any] = {"file_format": FILE_FORMAT}
  if config is not None:
    kwargs["config"] = config
  if data_dir is not None:
    kwargs["data_dir"] = os.fspath(data_dir)
  return cls(**kwargs)


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: Any = None) -> None:
  """Prepares `builder` as array_record (reusing a prepared copy), no GCS look-up."""
  if isinstance(builder, tfds.core.read_only_builder.ReadOnlyBuilder):
    return  # reopened from its prepared files
  config = tfds.download.DownloadConfig(
      manual_dir=os.fspath(manual_dir) if manual_dir is not None else None,
      try_download_gcs=False)
  builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)


def nonempty(examples: Iterable[tuple[str, dict]], what: str) -> Iterator[tuple[str, dict]]:
  """Passes `examples` through; raises `DataError('no examples in <what>')` if none."""
  n = 0
  for n, example in enumerate(examples, 1):
    yield example
  if not n:
    raise DataError(f"no examples in {what}")


def text(value: Any) -> str:
  """A Text feature as read from a data source (bytes) as `str`."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def find_file(roots: Sequence[pathlib.Path], rel: str) -> pathlib.Path | None:
  """The first `root / rel` that is a file (also tried with/without `.gz`)."""
  for root in roots:
    for name in (rel, rel[:-3] if rel.endswith(".gz") else rel + ".gz"):
      if (root / name).is_file():
        return root / name
  return None


def _decode(raw: bytes, path: Any, lineno: int) -> str:
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{os.fspath(path)}:{lineno}: invalid UTF-8 at byte {e.start} "
                    f"({e.reason})") from None
  return line[1:] if lineno == 1 and line.startswith("\ufeff") else line


def is_gzip(path: Any) -> bool:
  """Whether `path` starts with the gzip magic bytes (TFDS renames downloads)."""
  with open(path, "rb") as f:
    return f.read(2) == b"\x1f\x8b"


def iter_lines(path: Any) -> Iterator[tuple[int, str]]:
  """(1-based line number, text) of a UTF-8 file, plain or gzip-compressed.

  Plain files are read by `bitext.iter_lines` (split on `\\n` only, `\\r`
  dropped, BOM dropped); gzip files (told by their first bytes, not their name)
  the same way.

  Raises:
    FileNotFoundError: no such file.
    DataError: `path:line: invalid UTF-8 ...`, or corrupt gzip data.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(2, "No such file", os.fspath(path))
  if not is_gzip(path):
    yield from bitext.iter_lines(path)
    return
  lineno = 0
  try:
    with gzip.open(path, "rb") as f:
      for lineno, raw in enumerate(f, 1):
        yield lineno, _decode(raw.rstrip(b"\n").rstrip(b"\r"), path, lineno)
  except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
    raise DataError(f"{os.fspath(path)}:{lineno + 1}: corrupt gzip data ({e})") from None


def read_lines(path: Any) -> list[str]:
  """Every line of `path` (see `iter_lines`), for line-aligned files."""
  return [line for _, line in iter_lines(path)]


def read_json(path: Any) -> Any:
  """A whole JSON file; errors name `file:line:column`.

  Raises:
    FileNotFoundError: no such file.
    DataError: invalid UTF-8 or invalid JSON.
  """
  data = pathlib.Path(path).read_bytes()
  try:
    content = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(f"{os.fspath(path)}:{line}: invalid UTF-8 at byte {e.start} "
                    f"({e.reason})") from None
  try:
    return json.loads(content)
  except json.JSONDecodeError as e:
    raise DataError(f"{os.fspath(path)}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None


def jsonl_records(path: Any, keys: Sequence[str], optional: Sequence[str] = ()
                  ) -> Iterator[tuple[int, dict]]:
  """(line, object) of each non-blank JSONL line (`.gz` read as gzip).

  Every key of `keys` must be there with a string value; `optional` keys, when
  present, must be strings or null (null becomes "").

  Raises:
    DataError: `path:line: why` for invalid JSON, a non-object, a missing key or
      a non-string value.
  """
  for lineno, line in iter_lines(path):
    if not line.strip():
      continue
    where = f"{os.fspath(path)}:{lineno}"
    try:
      rec = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
      raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for key in keys:
      if key not in rec:
        raise DataError(f"{where}: no key {key!r}")
    for key in (*keys, *optional):
      if key in rec and rec[key] is None and key in optional:
        rec[key] = ""
      if key in rec and not isinstance(rec[key], str):
        raise DataError(f"{where}: {key!r} is {type(rec[key]).__name__}, not a string")
    yield lineno, rec
