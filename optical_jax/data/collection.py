"""Evaluation collections: queries, documents and relevance judgements (qrels).

`EvalCollection` is the one shape every retrieval benchmark is turned into (the
held-out Bible books, user files, BEIR-style sets); `read_collection` builds one
from files.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Mapping

from optical_jax.data import bitext
from optical_jax.data import trec

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class EvalCollection:
  """A retrieval test collection.

  Attributes:
    queries: `{qid: query text}`, in evaluation order.
    docs: `{docid: document text}`, in corpus order.
    qrels: `{qid: {docid: grade}}`, integer grades, > 0 is relevant. Every qid
      must be a key of `queries`; a query without judgements is allowed (the
      evaluator leaves it out of the averages and logs it).

  Raises:
    ValueError: (at construction) a judged qid that is not a query, because it
      would silently score 0 instead of being run.
  """
  queries: Mapping[str, str]
  docs: Mapping[str, str]
  qrels: Mapping[str, Mapping[str, int]]

  def __post_init__(self):
    missing = [q for q in self.qrels if q not in self.queries]
    if missing:
      raise ValueError(f"{len(missing)} judged queries have no text, e.g. {missing[:3]}")

  def __repr__(self) -> str:  # the default would print every text
    return (f"EvalCollection({len(self.queries)} queries, {len(self.docs)} docs, "
            f"{sum(len(j) for j in self.qrels.values())} judgements)")


def read_texts(path: PathLike) -> dict[str, str]:
  """`{id: text}` from `id<TAB>text` lines, or BEIR JSONL (`_id`, `title`, `text`).

  A `.jsonl` file is read as BEIR: the title, when there is one, is prefixed to
  the text with a space. Blank lines are ignored.

  Raises:
    FileNotFoundError: `path` does not exist.
    bitext.BitextError: `path:line: why` for a bad line, a duplicate id, or no
      entries at all.
  """
  is_jsonl = os.fspath(path).endswith(".jsonl")
  out: dict[str, str] = {}
  for lineno, line in bitext.iter_lines(path):
    if not line.strip():
      continue
    where = f"{os.fspath(path)}:{lineno}"
    if is_jsonl:
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise bitext.BitextError(f"{where}: invalid JSON ({e.msg})") from None
      if not isinstance(rec, dict) or not isinstance(rec.get("_id"), str):
        raise bitext.BitextError(f"{where}: expected an object with a string '_id'")
      key, text = rec["_id"], " ".join(
          str(rec.get(k) or "").strip() for k in ("title", "text")).strip()
    else:
      fields = line.split("\t")
      if len(fields) != 2:
        raise bitext.BitextError(f"{where}: expected 2 tab-separated columns 'id text', "
                                 f"got {len(fields)}")
      key, text = fields[0].strip(), fields[1].strip()
    if not key or not text:
      raise bitext.BitextError(f"{where}: empty {'id' if not key else 'text'}")
    if key in out:
      raise bitext.BitextError(f"{where}: duplicate id {key!r}")
    out[key] = text
  if not out:
    raise bitext.BitextError(f"no entries in {os.fspath(path)}")
  return out


def check_collection(col: EvalCollection, what: str = "the evaluation collection"
                     ) -> dict[str, int]:
  """Counts what makes a collection's metrics mean something, and refuses one
  whose metrics cannot mean anything.

  A query none of whose relevant documents is in the corpus scores 0 for every
  system; metrics over a corpus of one document rank nothing. The counts go
  into the job's results so that a partial loss is visible beside the metrics.

  Returns:
    {'queries', 'documents', 'judged_queries', 'queries_without_relevant_document'}.

  Raises:
    ValueError: fewer than 2 documents, or no judged query with a relevant
      document in the corpus.
  """
  judged = [q for q, j in col.qrels.items() if q in col.queries]
  answerable = [q for q in judged if any(g > 0 and d in col.docs for d, g in col.qrels[q].items())]
  counts = {"queries": len(col.queries), "documents": len(col.docs),
            "judged_queries": len(judged),
            "queries_without_relevant_document": len(judged) - len(answerable)}
  if len(col.docs) < 2:
    raise ValueError(f"{what} has {len(col.docs)} document(s): retrieval metrics over it "
                     "mean nothing")
  if not answerable:
    raise ValueError(f"{what}: none of its {len(judged)} judged queries has a relevant "
                     "document in the corpus (every system would score 0); check that the "
                     "qrels' document ids are the corpus's")
  if counts["queries_without_relevant_document"]:
    log.warning("%s: %d of %d judged queries have no relevant document in the corpus: "
                "they score 0 for every system", what,
                counts["queries_without_relevant_document"], len(judged))
  return counts


def read_collection(queries_path: PathLike, corpus_path: PathLike,
                    qrels_path: PathLike) -> EvalCollection:
  """Reads queries, corpus (`id<TAB>text` or BEIR `.jsonl`) and TREC/BEIR qrels.

  Only judged queries are kept (a BEIR `queries.jsonl` holds every split);
  judged documents missing from the corpus are counted and logged, since they
  cap recall.

  Raises:
    FileNotFoundError: a file does not exist.
    ValueError: a bad line (`file:line: why`), or judged queries missing from
      the queries file.
  """

  queries = read_texts(queries_path)
  docs = read_texts(corpus_path)
  qrels = trec.read_qrels(qrels_path)
  missing = [q for q in qrels if q not in queries]
  if missing:
    raise ValueError(f"{os.fspath(qrels_path)} judges {len(missing)} queries absent from "
                     f"{os.fspath(queries_path)}, e.g. {missing[:3]}")
  unjudged = len(queries) - len(qrels)
  if unjudged:
    log.info("%s: %d queries without judgements left out", os.fspath(queries_path), unjudged)
  lost = sum(d not in docs for j in qrels.values() for d in j)
  if lost:
    log.warning("%s: %d judged documents are not in %s", os.fspath(qrels_path), lost,
                os.fspath(corpus_path))
  return EvalCollection(queries={q: t for q, t in queries.items() if q in qrels},
                        docs=docs, qrels=qrels)
