"""English retrieval triples and an English test collection from the embedded KJV Bible.

For training a teacher offline (`configs/teacher.py:smoke`), with no download.
Each verse of at least `2 * query_words` words gives a keyword search:

  query     its `query_words` rarest words (fewest verses of the Bible hold
            them), in verse order: "former treatise Theophilus" (Acts 1:1)
  positive  the verse
  negative  a neighbouring verse of the same chapter (the next one; the
            previous one for a chapter's last verse): same book, topic and
            style, often the same names, so only the query's words decide.

Whole held-out books (`data.heldout_books`) become the test collection instead:
queries `q-<verse id>` as above, documents `d-<verse id>` every verse of those
books, each query's own verse its one relevant document.

Why keywords and not a verse's first clause against its rest: that
continuation task is close to unlearnable by similarity (multilingual-e5-small
scores MRR@10 0.02 on it over the held-out books, about chance), while keyword
queries leave a pretrained model room to show and to improve (e5-small: 0.71).
"""
from __future__ import annotations

import collections
import itertools
import re
from typing import Iterable, Sequence

from optical_jax.data import bible
from optical_jax.data import collection
from optical_jax.data import triples

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def document_frequency(texts: Iterable[str]) -> collections.Counter:
  """Lower-cased word -> how many of `texts` hold it."""
  df: collections.Counter = collections.Counter()
  for t in texts:
    df.update({w.lower() for w in _WORD.findall(t)})
  return df


def keyword_query(text: str, df: collections.Counter, query_words: int) -> str | None:
  """The `query_words` distinct words of `text` held by the fewest texts (ties:
  the earlier word), in their order in `text`; None for a text of fewer than
  `2 * query_words` words (the query would be most of it)."""
  words = _WORD.findall(text)
  if len(words) < 2 * query_words:
    return None
  first: dict[str, int] = {}
  for i, w in enumerate(words):
    first.setdefault(w.lower(), i)
  rarest = sorted(first, key=lambda w: (df[w], first[w]))[:query_words]
  return " ".join(words[i] for i in sorted(first[w] for w in rarest))


def _ref(p: bible.VersePair) -> str:
  return f"{p.book} {p.chapter}:{p.verse}"


def build(pairs: Sequence[bible.VersePair], heldout_books: Sequence[str] = (),
          query_words: int = 3) -> tuple[list[triples.Triple], collection.EvalCollection]:
  """Training triples from the other books, the test collection from `heldout_books`.

  Args:
    pairs: Bible verses in canonical order (only `.en` is read); word
      frequencies are counted over all of them.
    heldout_books: English book titles, case-insensitive (`bible.book_title`).
    query_words: words per query.

  Returns:
    `(triples, collection)`: triples in verse order, `origin` the verse
    reference ('Genesis 1:3'); the held-out books as an `EvalCollection`.

  Raises:
    ValueError: an unknown book title, or `query_words` < 1.
  """
  if query_words < 1:
    raise ValueError(f"query_words must be >= 1, got {query_words}")
  held = {bible.book_title(b) for b in heldout_books}
  df = document_frequency(p.en for p in pairs)
  out: list[triples.Triple] = []
  queries, docs, qrels = {}, {}, {}
  for _, chapter in itertools.groupby(pairs, key=lambda p: (p.book, p.chapter)):
    verses = list(chapter)
    for i, p in enumerate(verses):
      query = keyword_query(p.en, df, query_words)
      if p.book in held:
        docs[f"d-{p.verse_id:08d}"] = p.en
        if query is not None:
          queries[f"q-{p.verse_id:08d}"] = query
          qrels[f"q-{p.verse_id:08d}"] = {f"d-{p.verse_id:08d}": 1}
      elif query is not None and len(verses) > 1:   # a neighbour is the hard negative
        neighbour = verses[i + 1 if i + 1 < len(verses) else i - 1]
        out.append(triples.Triple(query, p.en, neighbour.en, origin=_ref(p)))
  return out, collection.EvalCollection(queries=queries, docs=docs, qrels=qrels)


def load(heldout_books: Sequence[str] = bible.DEFAULT_HELDOUT_BOOKS, query_words: int = 3
         ) -> tuple[list[triples.Triple], collection.EvalCollection]:
  """`build` over the embedded KJV (needs the demo extra, like `bible.load_bible_pairs`)."""
  return build(bible.load_bible_pairs(), heldout_books, query_words)
