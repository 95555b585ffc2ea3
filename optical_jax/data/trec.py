"""TREC run and qrels files: reading them with errors that name the line, writing runs.

* A run is `{qid: {docid: score}}` and qrels are `{qid: {docid: grade}}` with
  integer grades.
* Ranking order is trec_eval's: score descending, ties broken by docid
  *descending*; the rank column of a run file is ignored, as trec_eval does
  (`trec_order`).
"""
from __future__ import annotations

import logging
import math
import os
import pathlib
from typing import Any, Callable, Literal, Mapping

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


Qrels = dict[str, dict[str, int]]


OnBadLine = Literal["error", "skip"]


PathLike = str | os.PathLike


# Last column of a BEIR-style TSV header line (`query-id corpus-id score`).
_QRELS_HEADER_WORDS = ("score", "rel", "relevance", "label")


class _BadLine(Exception):
  """A malformed line; the message says what is wrong with it."""


def _number(text: str, cast: type, what: str) -> Any:
  try:
    return cast(text)
  except ValueError:
    kind = "an integer" if cast is int else "a number"
    raise _BadLine(f"{what} {text!r} is not {kind}") from None


def _qrels_line(lineno: int, fields: list[str]) -> tuple[str, str, int] | None:
  if len(fields) not in (3, 4):
    raise _BadLine(f"expected 4 columns 'qid iter docid grade' or 3 'qid docid grade', "
                   f"got {len(fields)}")
  qid, docid, grade = fields[0], fields[-2], fields[-1]
  if lineno == 1 and len(fields) == 3 and grade.lower() in _QRELS_HEADER_WORDS:
    return None
  return qid, docid, _number(grade, int, "relevance grade")


def _run_line(lineno: int, fields: list[str]) -> tuple[str, str, float]:
  del lineno  # runs have no header
  if len(fields) != 6:
    raise _BadLine(f"expected 6 columns 'qid Q0 docid rank score tag', got {len(fields)}")
  qid, _, docid, rank, score, _ = fields
  _number(rank, int, "rank")
  value = _number(score, float, "score")
  if not math.isfinite(value):
    raise _BadLine(f"score {score!r} is not finite")
  return qid, docid, value


def _read_table(path: PathLike, on_bad_line: OnBadLine,
                parse: Callable[[int, list[str]], tuple[str, str, Any] | None]
                ) -> dict[str, dict[str, Any]]:
  """`{qid: {docid: value}}` from the `parse`d non-blank lines of `path`.

  Lines are split on ASCII whitespace only (spaces, tabs), as trec_eval does, and
  decoded one by one so that invalid UTF-8 is reported with its line number.
  """
  if on_bad_line not in ("error", "skip"):
    raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
  table: dict[str, dict[str, Any]] = {}
  bad: list[str] = []
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        fields = [field.decode("utf-8") for field in raw.split()]
        entry = parse(lineno, fields) if fields else None
        if entry is not None and entry[1] in table.get(entry[0], {}):
          raise _BadLine(f"duplicate document {entry[1]!r} for query {entry[0]!r}")
      except (UnicodeDecodeError, _BadLine) as e:
        why = f"invalid UTF-8 ({e.reason})" if isinstance(e, UnicodeDecodeError) else e
        if on_bad_line == "error":
          raise ValueError(f"{path}:{lineno}: {why}") from None
        bad.append(f"{path}:{lineno}: {why}")
        continue
      if entry is not None:
        table.setdefault(entry[0], {})[entry[1]] = entry[2]
  if bad:
    log.warning("%s: skipped %d bad line(s); the first: %s", path, len(bad), bad[0])
  return table


def read_qrels(path: PathLike, on_bad_line: OnBadLine = "error") -> Qrels:
  """Reads TREC qrels `qid iter docid grade`, or `qid docid grade` (TSV or not).

  A first line whose grade column reads `score`, `rel`, `relevance` or `label`
  is a BEIR-style header and skipped.

  Returns:
    `{qid: {docid: grade}}`, integer grades.

  Raises:
    ValueError: `path:line: what` for a line with another number of columns, a
      non-integer grade, invalid UTF-8, or a second judgement of a (qid, docid).
      With `on_bad_line='skip'` such lines are dropped (a duplicate keeps the
      first) and their count logged.
  """
  return _read_table(path, on_bad_line, _qrels_line)


def read_run(path: PathLike, on_bad_line: OnBadLine = "error") -> Run:
  """Reads a TREC run `qid Q0 docid rank score tag` (the rank is checked, not used).

  Returns:
    `{qid: {docid: score}}`, float scores.

  Raises:
    ValueError: `path:line: what` for a line without 6 columns, a non-integer
      rank, a non-numeric or non-finite score, invalid UTF-8, or a docid listed
      twice for a query; `on_bad_line='skip'` as in `read_qrels`.
  """
  return _read_table(path, on_bad_line, _run_line)


def trec_order(docs: Mapping[str, float]) -> list[tuple[str, float]]:
  """(docid, score) pairs best first: score descending, ties by docid descending."""
  return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def _check_token(value: Any, what: str) -> None:
  if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
    raise ValueError(f"{what} {value!r} must be a non-empty string without whitespace")


def write_run(path: PathLike, run: Mapping[str, Mapping[str, float]],
              tag: str = "optical_jax") -> None:
  """Writes `run` as TREC lines, ranks 1.. in `trec_order`, scores as exact reprs.

  The file is written to `path.tmp` and renamed, so `path` is never half written.

  Raises:
    ValueError: a qid, docid or tag that is empty or holds whitespace, or a
      non-finite score.
  """
  _check_token(tag, "tag")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      for qid, docs in run.items():
        _check_token(qid, "qid")
        for rank, (docid, score) in enumerate(trec_order(docs), 1):
          _check_token(docid, f"docid (query {qid!r})")
          if not math.isfinite(score):
            raise ValueError(f"query {qid!r} document {docid!r}: non-finite score {score}")
          f.write(f"{qid} Q0 {docid} {rank} {float(score)!r} {tag}\n")
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
