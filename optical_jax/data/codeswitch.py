"""Code-switching augmentation: source words swapped for their English translations.

Research question: does training the student on code-switched source text help?

* A bilingual `Dictionary` (source word -> {translation: count}) is read from a
  file (`read_dictionary`) or induced from the bitext by
  `wordalign.induce_dictionary` (a co-occurrence aligner, or the teacher's OT
  plan as a soft word aligner).
* `CodeSwitcher` swaps a fraction `rate` of a sentence's words for
  translations, as a pure function of (seed, epoch, example index), so a
  resumed run sees the same augmented text; `SwitchStats` is the realised rate.

A *word* is a whitespace-separated token with its leading and trailing
punctuation and symbols (Unicode categories P*, S*) stripped; they are put
back around a translation. Lookups are lowercased (`str.lower`). The switcher
and the aligners share this one definition (`word_spans`), so an induced
dictionary holds exactly the keys the switcher looks up.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import logging
import os
import re
import unicodedata
from typing import Iterable, Literal, Mapping, NamedTuple, Sequence

import numpy as np

from optical_jax.data import batching

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
# Salt of the switching RNG: keeps its streams apart from other users of the seed.
_SALT = 0xC0DE5


def _is_edge(ch: str) -> bool:
  # Category, not str.isalnum: combining vowel signs (Mn/Mc, e.g. Devanagari)
  # are not alphanumeric but belong to the word.
  return unicodedata.category(ch)[0] in "PS"


def word_spans(text: str) -> list[tuple[int, int]]:
  """[start, end) character spans of the words of `text` (punctuation stripped)."""
  spans = []
  for m in re.finditer(r"\S+", text):
    i, j = m.start(), m.end()
    while i < j and _is_edge(text[i]):
      i += 1
    while j > i and _is_edge(text[j - 1]):
      j -= 1
    if i < j:
      spans.append((i, j))
  return spans


def words(text: str) -> list[str]:
  """The lowercased words of `text`, in order (the dictionary's key space)."""
  return [text[i:j].lower() for i, j in word_spans(text)]


class DictionaryError(ValueError):
  """A bad dictionary file; the message names the file and the 1-based line."""


@dataclasses.dataclass(frozen=True)
class Dictionary:
  """Source word -> {English translation: count}.

  Attributes:
    entries: normalised at construction: keys lowercased (entries differing
      only in case merge), translations ordered by count (descending), then
      alphabetically, so that sampling never depends on insertion order.
    skipped: `{reason: count}` of file lines skipped by `read_dictionary`.
  """
  entries: Mapping[str, Mapping[str, int]]
  skipped: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    merged: dict[str, collections.Counter] = {}
    for src, translations in self.entries.items():
      for tgt, count in translations.items():
        if not src.strip() or not tgt.strip():
          raise ValueError(f"empty word in dictionary entry {src!r} -> {tgt!r}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
          raise ValueError(f"count of {src!r} -> {tgt!r} must be an int >= 1, got {count!r}")
        merged.setdefault(src.strip().lower(), collections.Counter())[tgt.strip()] += int(count)
    entries = {s: dict(sorted(t.items(), key=lambda kv: (-kv[1], kv[0])))
               for s, t in sorted(merged.items())}
    object.__setattr__(self, "entries", entries)

  @classmethod
  def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Dictionary:
    """From (source word, translation) pairs; a repeated pair adds 1 to its count."""
    entries: dict[str, collections.Counter] = {}
    for s, t in pairs:
      entries.setdefault(s, collections.Counter())[t] += 1
    return cls(entries)

  def translations(self, word: str) -> Mapping[str, int]:
    """{translation: count} of `word` (any case); empty if it has no entry."""
    return self.entries.get(word.lower(), {})

  def __contains__(self, word: str) -> bool:
    return word.lower() in self.entries

  def __len__(self) -> int:
    return len(self.entries)

  @property
  def num_links(self) -> int:
    return sum(len(t) for t in self.entries.values())

  def save(self, path: PathLike) -> None:
    """Writes `src<TAB>tgt<TAB>count` lines, which `read_dictionary` reads back."""
    with open(path, "w", encoding="utf-8") as f:
      for s, translations in self.entries.items():
        for t, c in translations.items():
          f.write(f"{s}\t{t}\t{c}\n")


def read_dictionary(path: PathLike, *, on_bad_line: Literal["error", "skip"] = "error"
                    ) -> Dictionary:
  """Reads a bilingual dictionary file.

  Each line is `src<TAB>tgt`, `src<TAB>tgt<TAB>count` (as `Dictionary.save`
  writes) or MUSE-style `src tgt` (exactly two space-separated words; a tab
  line may hold multi-word translations). Repeated lines add up their counts;
  several translations of one word are all kept. Blank lines are ignored.
  Source entries that are not one word (`word_spans`), e.g. "new york" or
  "etc.", can never be switched: they are kept, and counted in a warning.

  Raises:
    FileNotFoundError: `path` does not exist.
    DictionaryError: `path:line: why` for invalid UTF-8, a wrong number of
      fields, an empty side or a bad count (unless `on_bad_line='skip'`, which
      counts and logs them instead); a file with no entry at all.
  """
  if on_bad_line not in ("error", "skip"):
    raise ValueError(f"on_bad_line must be 'error' or 'skip', got {on_bad_line!r}")
  if not os.path.isfile(path):
    raise FileNotFoundError(errno.ENOENT, "No such dictionary file", os.fspath(path))
  entries: dict[str, collections.Counter] = {}
  skipped: collections.Counter = collections.Counter()
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        src, tgt, count = _parse_line(raw.rstrip(b"\n").rstrip(b"\r"), lineno)
      except _BadLine as e:
        if on_bad_line == "error":
          raise DictionaryError(f"{os.fspath(path)}:{lineno}: {e.message}") from None
        skipped[e.reason] += 1
        continue
      if src:
        entries.setdefault(src, collections.Counter())[tgt] += count
  if skipped:
    log.warning("%s: skipped %d bad line(s): %s", os.fspath(path), sum(skipped.values()),
                dict(sorted(skipped.items())))
  if not entries:
    raise DictionaryError(f"no entries in {os.fspath(path)}")
  unreachable = [s for s in entries if words(s) != [s.lower()]]
  if unreachable:
    log.warning("%s: %d source entries can never match a word (the switcher looks up "
                "single words, edge punctuation stripped), e.g. %s", os.fspath(path),
                len(unreachable), unreachable[:3])
  return Dictionary(entries, dict(sorted(skipped.items())))


class _BadLine(Exception):

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason, self.message = reason, message


def _parse_line(raw: bytes, lineno: int) -> tuple[str, str, int]:
  """(src, tgt, count) of one line; ('', '', 0) for a blank line."""
  try:
    line = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _BadLine("invalid_utf8", f"invalid UTF-8 at byte {e.start} ({e.reason})") from None
  if lineno == 1 and line.startswith("\ufeff"):
    line = line[1:]
  if not line.strip():
    return "", "", 0
  if "\t" in line:
    fields = [x.strip() for x in line.split("\t")]
    if len(fields) not in (2, 3):
      raise _BadLine("wrong_columns",
                     f"expected src<TAB>tgt[<TAB>count], got {len(fields)} columns")
  else:
    fields = line.split()
    if len(fields) != 2:
      raise _BadLine("wrong_columns", f"expected 'src tgt' (two words, or tab-separated), "
                     f"got {len(fields)} space-separated fields")
  if not fields[0] or not fields[1]:
    raise _BadLine("empty_side", f"empty {'source' if not fields[0] else 'target'} word")
  count = 1
  if len(fields) == 3:
    if not re.fullmatch(r"[0-9]+", fields[2]) or int(fields[2]) < 1:
      raise _BadLine("bad_count", f"count must be an integer >= 1, got {fields[2]!r}")
    count = int(fields[2])
  return fields[0], fields[1], count


# --- Switching ------------------------------------------------------------------


class SwitchResult(NamedTuple):
  """One switched sentence: the text, and its words switched / eligible / all."""
  text: str
  switched: int
  eligible: int
  words: int


@dataclasses.dataclass(frozen=True)
class SwitchStats:
  """Switching counts summed over sentences; `rate` is the realised rate."""
  switched: int = 0
  eligible: int = 0
  words: int = 0
  sentences: int = 0

  def add(self, r: SwitchResult) -> SwitchStats:
    return SwitchStats(self.switched + r.switched, self.eligible + r.eligible,
                       self.words + r.words, self.sentences + 1)

  @property
  def rate(self) -> float:
    """Switched / eligible words."""
    return self.switched / max(self.eligible, 1)

  @property
  def word_rate(self) -> float:
    """Switched / all words."""
    return self.switched / max(self.words, 1)

  @property
  def coverage(self) -> float:
    """Eligible / all words: the dictionary's coverage of the text."""
    return self.eligible / max(self.words, 1)

  def as_dict(self) -> dict[str, float]:
    return {**dataclasses.asdict(self), "rate": self.rate, "word_rate": self.word_rate,
            "coverage": self.coverage}


def _match_case(word: str, translation: str) -> str:
  if len(word) > 1 and word.isupper():  # "UN", "USA"
    return translation.upper()
  if word[:1].isupper():
    return translation[:1].upper() + translation[1:]
  return translation


@dataclasses.dataclass(frozen=True, eq=False)
class CodeSwitcher:
  """Swaps source words for dictionary translations.

  Each eligible word (one with a dictionary entry) is switched independently
  with probability p, so a corpus's realised rate is binomial around the
  target. Punctuation around a word and the whitespace between words are kept;
  a capitalised word gets a capitalised translation (an all-caps one, all
  caps); words without an entry are never touched.

  Attributes:
    dictionary: the translations.
    rate: in [0, 1]; what it is a fraction of depends on `mode`.
    seed: >= 0. A sentence's switching is a pure function of (seed, epoch,
      example index): a resumed run re-creates identical text, and each epoch
      a different one.
    mode: 'eligible' (the default): `rate` is the fraction of eligible words
      switched, p = rate. 'words': the fraction of *all* words, capped by
      eligibility: per sentence p = min(1, rate * words / eligible), so a
      sentence switches rate * words words on average if it has that many
      eligible ones, and all its eligible ones otherwise.
    choice: of several translations, 'sample' draws one in proportion to its
      count; 'most_frequent' takes the most frequent.
  """
  dictionary: Dictionary
  rate: float
  seed: int = 0
  mode: Literal["eligible", "words"] = "eligible"
  choice: Literal["sample", "most_frequent"] = "sample"

  def __post_init__(self):
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f"rate must be in [0, 1], got {self.rate}")
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
        or self.seed < 0:
      raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
    if self.mode not in ("eligible", "words"):
      raise ValueError(f"mode must be 'eligible' or 'words', got {self.mode!r}")
    if self.choice not in ("sample", "most_frequent"):
      raise ValueError(f"choice must be 'sample' or 'most_frequent', got {self.choice!r}")

  def switch(self, text: str, index: int, epoch: int = 0) -> SwitchResult:
    """Switches `text`, example `index` of the corpus, in epoch `epoch` (both >= 0)."""
    spans = word_spans(text)
    eligible = [(i, j) for i, j in spans if text[i:j] in self.dictionary]
    n = len(eligible)
    if not n or not self.rate:
      return SwitchResult(text, 0, n, len(spans))
    p = self.rate if self.mode == "eligible" else min(1.0, self.rate * len(spans) / n)
    # Both draws are made for every eligible word, so which words switch does
    # not depend on the dictionary's translations.
    u_switch, u_pick = np.random.default_rng([self.seed, _SALT, epoch, index]).random((2, n))
    out, last, switched = [], 0, 0
    for (i, j), u, v in zip(eligible, u_switch, u_pick):
      if u >= p:
        continue
      options = self.dictionary.translations(text[i:j])
      if self.choice == "most_frequent":
        new = next(iter(options))
      else:
        cum = np.cumsum(list(options.values()))
        new = list(options)[int(np.searchsorted(cum, v * cum[-1], side="right"))]
      out += [text[last:i], _match_case(text[i:j], new)]
      last, switched = j, switched + 1
    return SwitchResult("".join(out) + text[last:], switched, n, len(spans))

  def switch_batch(self, texts: Sequence[str], indices: Sequence[int],
                   epochs: Sequence[int] | int = 0) -> tuple[list[str], SwitchStats]:
    """Switches a batch: `indices` are the examples' corpus indices and
    `epochs` their epochs (see `batch_epochs`)."""
    epochs = np.broadcast_to(np.asarray(epochs), (len(texts),))
    stats, out = SwitchStats(), []
    for text, index, epoch in zip(texts, indices, epochs, strict=True):
      r = self.switch(text, int(index), int(epoch))
      stats = stats.add(r)
      out.append(r.text)
    return out, stats

  def corpus_stats(self, texts: Sequence[str], epoch: int = 0) -> SwitchStats:
    """The realised switching over a corpus in one epoch (logged)."""
    stats = SwitchStats()
    for index, text in enumerate(texts):
      stats = stats.add(self.switch(text, index, epoch))
    log.info("code-switching (mode=%s, rate=%.3f): switched %d of %d eligible words "
             "(%.3f) = %.3f of all words; the dictionary covers %.3f of the words",
             self.mode, self.rate, stats.switched, stats.eligible, stats.rate,
             stats.word_rate, stats.coverage)
    return stats


def batch_epochs(order: batching.BatchOrder, step: int) -> np.ndarray:
  """[batch_size] epoch of each example of `order.indices(step)` (a batch may
  straddle two epochs): the `epochs` to pass to `CodeSwitcher.switch_batch`."""
  positions = int(step) * order.batch_size + np.arange(order.batch_size)
  return positions // order.num_examples
