"""Bitext readers: (source-language sentence, English translation) pairs from files.

Three layouts are read: TSV (`src<TAB>tgt`), Moses-style parallel files (line i
of one file translates line i of the other) and JSONL (`{"src": ..., "tgt": ...}`).
`read_bitext(spec)` picks one from a `BitextSpec`.

Files are read in binary and split on `\\n` only (a trailing `\\r` is dropped),
then decoded line by line, so that invalid UTF-8 is reported with its line
number and a U+2028 inside a sentence does not shift a parallel file. Every bad
line is a `BitextError` naming `file:line` (1-based); with `on_bad_line='skip'`
it is skipped instead, counted per reason, and the counts are logged and kept on
the returned `Bitext`. Parallel files of different lengths, and a file that
yields no pair at all, are errors in either mode.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
import os
from typing import Iterator, Literal, Mapping, Sequence

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
OnBadLine = Literal["error", "skip"]
FORMATS = ("tsv", "parallel", "jsonl")
# Reasons a line is bad; the keys of `Bitext.skipped`.
REASONS = ("invalid_utf8", "wrong_columns", "empty_side", "invalid_json", "missing_key",
           "not_a_string")


class BitextError(ValueError):
  """Bad bitext input; the message names the file and the 1-based line."""


@dataclasses.dataclass(frozen=True)
class Pair:
  """One translation pair: `src` (low-resource language), `tgt` (English).

  `origin` is `file:line` of the line it came from (the source file's, for
  parallel files), for tracing a training example back to its input.
  """
  src: str
  tgt: str
  origin: str


@dataclasses.dataclass(frozen=True)
class Bitext(Sequence[Pair]):
  """The pairs of a file, in file order, and what was skipped to get them.

  Attributes:
    pairs: the pairs read.
    skipped: `{reason: count}` of the lines skipped under `on_bad_line='skip'`
      (reasons from `REASONS`); empty when nothing was skipped.
  """
  pairs: tuple[Pair, ...]
  skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, i):
    return self.pairs[i]

  def __iter__(self) -> Iterator[Pair]:
    return iter(self.pairs)

  @property
  def srcs(self) -> list[str]:
    return [p.src for p in self.pairs]

  @property
  def tgts(self) -> list[str]:
    return [p.tgt for p in self.pairs]

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())


class _BadLine(Exception):
  """What is wrong with one line: a `REASONS` key and a message."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason, self.message = reason, message


class _Tally:
  """Raises on a bad line, or counts it when skipping; builds the `Bitext`."""

  def __init__(self, on_bad_line: str):
    if on_bad_line not in ("error", "skip"):
      raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
    self.skip = on_bad_line == "skip"
    self.counts: collections.Counter[str] = collections.Counter()
    self.first: str | None = None

  def bad(self, path: PathLike, lineno: int, err: _BadLine) -> None:
    where = f"{os.fspath(path)}:{lineno}: {err.message}"
    if not self.skip:
      raise BitextError(where)
    self.counts[err.reason] += 1
    self.first = self.first or where

  def finish(self, pairs: list[Pair], what: str) -> Bitext:
    skipped = dict(sorted(self.counts.items()))
    summary = ", ".join(f"{k}={v}" for k, v in skipped.items())
    if skipped:
      log.warning("%s: skipped %d bad line(s) (%s); the first: %s", what,
                  sum(skipped.values()), summary, self.first)
    if not pairs:
      raise BitextError(f"no pairs in {what}" + (f" (all lines bad: {summary})" if skipped
                                                   else ""))
    return Bitext(tuple(pairs), skipped)


def _raw_lines(path: PathLike) -> Iterator[tuple[int, bytes]]:
  """(1-based line number, bytes without the line ending) of each line."""
  if os.path.isdir(path):
    raise IsADirectoryError(errno.EISDIR, "a directory, not a bitext file", os.fspath(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(errno.ENOENT, "No such file", os.fspath(path))
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      yield lineno, raw.rstrip(b"\n").rstrip(b"\r")


def _decode(raw: bytes, lineno: int) -> str:
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _BadLine("invalid_utf8", f"invalid UTF-8 at byte {e.start} ({e.reason})") from None
  # A byte-order mark (Windows editors) is not part of the first sentence.
  return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
  """(1-based line number, decoded text) of each line of a UTF-8 file.

  Raises:
    FileNotFoundError: `path` does not exist.
    BitextError: `path:line: invalid UTF-8 ...`.
  """
  for lineno, raw in _raw_lines(path):
    try:
      yield lineno, _decode(raw, lineno)
    except _BadLine as e:
      raise BitextError(f"{os.fspath(path)}:{lineno}: {e.message}") from None


def _sides(src: str, tgt: str, src_name: str, tgt_name: str) -> tuple[str, str]:
  src, tgt = src.strip(), tgt.strip()
  if not src or not tgt:
    raise _BadLine("empty_side", f"empty {src_name if not src else tgt_name}")
  return src, tgt


def read_tsv(path: PathLike, *, src_column: int = 0, tgt_column: int = 1,
             num_columns: int | None = None, has_header: bool = False,
             on_bad_line: OnBadLine = "error") -> Bitext:
  """Reads `src<TAB>tgt` lines (or wider rows, picking two columns).

  Args:
    path: a UTF-8 file.
    src_column, tgt_column: 0-based columns of the two sides.
    num_columns: columns every line must have; `None` (or 0) means
      `max(src_column, tgt_column) + 1`. Exact, so that a tab inside a sentence
      is caught rather than silently truncating it.
    has_header: the first line is a header and is not read.
    on_bad_line: 'error' raises on the first bad line, 'skip' drops it.

  Returns:
    A `Bitext`; sides are stripped. Lines that are empty or all spaces are
    ignored (a line holding a tab is not empty: it has two empty sides).

  Raises:
    FileNotFoundError: `path` does not exist.
    BitextError: `path:line: why` for a line with another number of columns, an
      empty side or invalid UTF-8 (unless skipped); `no pairs in path`.
    ValueError: bad column settings.
  """
  cols = (src_column, tgt_column)
  if min(cols) < 0 or src_column == tgt_column:
    raise ValueError(f"src_column and tgt_column must be distinct and >= 0, got {cols}")
  want = num_columns or max(cols) + 1
  if want <= max(cols):
    raise ValueError(f"num_columns={num_columns} leaves out column {max(cols)}")
  tally, pairs = _Tally(on_bad_line), []
  for lineno, raw in _raw_lines(path):
    try:
      line = _decode(raw, lineno)
      if (has_header and lineno == 1) or ("\t" not in line and not line.strip()):
        continue
      fields = line.split("\t")
      if len(fields) != want:
        hint = (f" (if every line has {len(fields)}, set num_columns={len(fields)}: "
                f"config.data.num_columns)" if len(fields) > want else "")
        raise _BadLine("wrong_columns",
                       f"expected {want} tab-separated columns, got {len(fields)}{hint}")
      src, tgt = _sides(fields[src_column], fields[tgt_column],
                        f"source (column {src_column})", f"target (column {tgt_column})")
    except _BadLine as e:
      tally.bad(path, lineno, e)
      continue
    pairs.append(Pair(src, tgt, f"{os.fspath(path)}:{lineno}"))
  return tally.finish(pairs, os.fspath(path))


def read_jsonl(path: PathLike, *, src_key: str = "src", tgt_key: str = "tgt",
               on_bad_line: OnBadLine = "error") -> Bitext:
  """Reads one JSON object per line, the two sides under `src_key`, `tgt_key`.

  Other keys are ignored; blank lines are ignored.

  Raises:
    FileNotFoundError: `path` does not exist.
    BitextError: `path:line: why` for invalid JSON, a line that is not an
      object, a missing key, a value that is not a string, an empty side or
      invalid UTF-8 (unless skipped); `no pairs in path`.
  """
  if src_key == tgt_key:
    raise ValueError(f"src_key and tgt_key must differ, got {src_key!r} twice")
  tally, pairs = _Tally(on_bad_line), []
  for lineno, raw in _raw_lines(path):
    try:
      line = _decode(raw, lineno)
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise _BadLine("invalid_json", f"invalid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(rec, dict):
        raise _BadLine("invalid_json", f"expected a JSON object, got {type(rec).__name__}")
      for key in (src_key, tgt_key):
        if key not in rec:
          raise _BadLine("missing_key", f"no key {key!r}")
        if not isinstance(rec[key], str):
          raise _BadLine("not_a_string", f"{key!r} is {type(rec[key]).__name__}, not a string")
      src, tgt = _sides(rec[src_key], rec[tgt_key], repr(src_key), repr(tgt_key))
    except _BadLine as e:
      tally.bad(path, lineno, e)
      continue
    pairs.append(Pair(src, tgt, f"{os.fspath(path)}:{lineno}"))
  return tally.finish(pairs, os.fspath(path))


def read_parallel(src_path: PathLike, tgt_path: PathLike, *,
                  on_bad_line: OnBadLine = "error") -> Bitext:
  """Reads Moses-style parallel files: line i of `src_path` translates line i of `tgt_path`.

  An empty line is a bad line (an empty side), not ignored: it is a position.

  Raises:
    FileNotFoundError: a file does not exist.
    BitextError: the files differ in length (both named with their line counts;
      in either mode, as no line can be trusted to be aligned then); `file:line:
      why` for an empty side or invalid UTF-8 (unless skipped); no pairs.
  """
  tally = _Tally(on_bad_line)  # checks on_bad_line before reading anything
  counts = [sum(1 for _ in _raw_lines(p)) for p in (src_path, tgt_path)]
  if counts[0] != counts[1]:
    raise BitextError(f"parallel files differ in length: {os.fspath(src_path)} has "
                      f"{counts[0]} lines, {os.fspath(tgt_path)} has {counts[1]}")
  pairs = []
  for (lineno, s_raw), (_, t_raw) in zip(_raw_lines(src_path), _raw_lines(tgt_path)):
    texts = []
    for path, raw in ((src_path, s_raw), (tgt_path, t_raw)):
      try:
        text = _decode(raw, lineno).strip()
        if not text:
          raise _BadLine("empty_side", "empty line")
        texts.append(text)
      except _BadLine as e:
        tally.bad(path, lineno, e)
        break
    if len(texts) == 2:
      pairs.append(Pair(texts[0], texts[1], f"{os.fspath(src_path)}:{lineno}"))
  return tally.finish(pairs, f"{os.fspath(src_path)} and {os.fspath(tgt_path)}")


@dataclasses.dataclass(frozen=True)
class BitextSpec:
  """Which file(s) to read and how; `read_bitext` reads them.

  Attributes:
    format: 'tsv', 'parallel' or 'jsonl'.
    path: the file, for 'tsv' and 'jsonl'.
    src_path, tgt_path: the two files, for 'parallel'.
    src_column, tgt_column, num_columns, has_header: see `read_tsv`.
    src_key, tgt_key: see `read_jsonl`.
    on_bad_line: 'error' or 'skip'.
  """
  format: str = "tsv"
  path: str = ""
  src_path: str = ""
  tgt_path: str = ""
  src_column: int = 0
  tgt_column: int = 1
  num_columns: int | None = None
  src_key: str = "src"
  tgt_key: str = "tgt"
  has_header: bool = False
  on_bad_line: OnBadLine = "error"


def read_bitext(spec: BitextSpec | Mapping) -> Bitext:
  """Reads the bitext `spec` (a `BitextSpec`, or a mapping of its fields) names.

  Raises:
    ValueError: an unknown format, or a path the format needs is not set.
    FileNotFoundError, BitextError: as the reader for the format.
  """
  if not isinstance(spec, BitextSpec):
    spec = BitextSpec(**dict(spec))
  if spec.format not in FORMATS:
    raise ValueError(f"unknown bitext format {spec.format!r}; expected one of {FORMATS}")
  needed = ("src_path", "tgt_path") if spec.format == "parallel" else ("path",)
  unset = [n for n in needed if not getattr(spec, n)]
  if unset:
    raise ValueError(f"bitext format {spec.format!r} needs {' and '.join(unset)}")
  if spec.format == "tsv":
    return read_tsv(spec.path, src_column=spec.src_column, tgt_column=spec.tgt_column,
                    num_columns=spec.num_columns, has_header=spec.has_header,
                    on_bad_line=spec.on_bad_line)
  if spec.format == "jsonl":
    return read_jsonl(spec.path, src_key=spec.src_key, tgt_key=spec.tgt_key,
                      on_bad_line=spec.on_bad_line)
  return read_parallel(spec.src_path, spec.tgt_path, on_bad_line=spec.on_bad_line)
