"""English training triples (query, positive, negative) in the MS MARCO layouts.

For users who train their own teacher (`configs/teacher.py`):

* text triples, `query<TAB>positive<TAB>negative` per line
  (`triples.train.small.tsv`);
* id triples, `qid<TAB>pos_pid<TAB>neg_pid` per line (`qidpidtriples.train.full.tsv`)
  resolved through `queries.train.tsv` and `collection.tsv` (`id<TAB>text`).

Bad lines are errors naming file and line, or with `on_bad_line='skip'` are
counted and reported; an id that resolves to nothing is a bad line too.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Iterator

from optical_jax.data import bitext
from optical_jax.data import collection

log = logging.getLogger(__name__)
PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class Triple:
  """One training example: a query, a relevant and a non-relevant passage."""
  query: str
  positive: str
  negative: str
  origin: str       # "file:line"


def _rows(path: PathLike, on_bad_line: str) -> Iterator[tuple[str, list[str]]]:
  if on_bad_line not in ("error", "skip"):
    raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
  for lineno, line in bitext.iter_lines(path):
    if line.strip():
      yield f"{os.fspath(path)}:{lineno}", line.split("\t")


def _finish(triples: list[Triple], skipped: collections.Counter, path: PathLike) -> list[Triple]:
  if skipped:
    log.warning("%s: skipped %d bad line(s): %s", os.fspath(path), sum(skipped.values()),
                dict(skipped))
  if not triples:
    raise bitext.BitextError(f"no triples in {os.fspath(path)}" +
                             (f" (all lines bad: {dict(skipped)})" if skipped else ""))
  return triples


def read_text_triples(path: PathLike, *, on_bad_line: str = "error") -> list[Triple]:
  """`query<TAB>positive<TAB>negative` lines."""
  out, skipped = [], collections.Counter()
  for where, fields in _rows(path, on_bad_line):
    fields = [f.strip() for f in fields]
    why = (f"expected 3 tab-separated columns, got {len(fields)}" if len(fields) != 3 else
           "empty column" if not all(fields) else None)
    if why:
      if on_bad_line == "error":
        raise bitext.BitextError(f"{where}: {why}")
      skipped["wrong_columns" if len(fields) != 3 else "empty_side"] += 1
      continue
    out.append(Triple(*fields, origin=where))
  return _finish(out, skipped, path)


def read_id_triples(triples_path: PathLike, queries_path: PathLike,
                    collection_path: PathLike, *, on_bad_line: str = "error") -> list[Triple]:
  """`qid<TAB>pos_pid<TAB>neg_pid` lines resolved through queries and collection files."""
  queries = collection.read_texts(queries_path)
  passages = collection.read_texts(collection_path)
  out, skipped = [], collections.Counter()
  for where, fields in _rows(triples_path, on_bad_line):
    fields = [f.strip() for f in fields]
    why = None
    if len(fields) != 3:
      why, reason = f"expected 3 tab-separated ids, got {len(fields)}", "wrong_columns"
    elif fields[0] not in queries:
      why, reason = f"query id {fields[0]!r} is not in {os.fspath(queries_path)}", "unknown_id"
    else:
      missing = [p for p in fields[1:] if p not in passages]
      if missing:
        why = f"passage id {missing[0]!r} is not in {os.fspath(collection_path)}"
        reason = "unknown_id"
    if why:
      if on_bad_line == "error":
        raise bitext.BitextError(f"{where}: {why}")
      skipped[reason] += 1
      continue
    out.append(Triple(queries[fields[0]], passages[fields[1]], passages[fields[2]], where))
  return _finish(out, skipped, triples_path)
