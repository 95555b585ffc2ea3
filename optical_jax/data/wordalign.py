"""Word alignment of bitext, and bilingual dictionaries induced from it.

Two aligners turn (source sentence, English translation) pairs into counted
word links (`LinkCounts`); `induce_dictionary` keeps the frequent, consistent
ones as a `codeswitch.Dictionary`:

* `DiceAligner`: co-occurrence statistics over sentence pairs; no model.
* `PlanAligner`: the teacher's entropic OT plan between the two sides' tokens
  (`ot.ot_alignment_loss`'s aux['plan']) as a soft aligner: plan mass is summed
  from tokens to words (`word_plan`), and mutual-argmax (or thresholded) word
  pairs are links (`word_links`). Those steps are pure numpy over plans and
  `WordMap`s; `compute_plans` is the thin part that runs a model.

Words are `codeswitch.word_spans`' words, lowercased: the keys the
`CodeSwitcher` looks up.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, NamedTuple, Sequence

import jax
import numpy as np

from optical_jax import config as config_lib
from optical_jax.core import ot
from optical_jax.data.bitext import Pair
from optical_jax.data.codeswitch import Dictionary, word_spans, words

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LinkCounts:
  """Word links an aligner found over a corpus.

  Attributes:
    links: {(source word, English word): times linked}.
    totals: {source word: times seen}, in the aligner's unit (sentence pairs
      for `DiceAligner`, word occurrences for `PlanAligner`): the denominator
      of `induce_dictionary`'s `min_ratio`.
  """
  links: Mapping[tuple[str, str], int]
  totals: Mapping[str, int]


Aligner = Callable[[Sequence[Pair]], LinkCounts]


def induce_dictionary(pairs: Sequence[Pair], aligner: Aligner, *, min_count: int = 2,
                      min_ratio: float = 0.1, max_translations: int = 3) -> Dictionary:
  """A dictionary induced from bitext by `aligner`.

  Args:
    pairs: the bitext.
    aligner: `DiceAligner(...)`, `PlanAligner(...)` or any pairs -> LinkCounts.
    min_count: a link must be found at least this often...
    min_ratio: ...and in at least this fraction of the source word's `totals`.
    max_translations: the most frequent links kept per source word.

  Returns:
    A `Dictionary` whose counts are the link counts (empty, with a warning,
    when no link passes).
  """
  if min_count < 1 or not 0 <= min_ratio <= 1 or max_translations < 1:
    raise ValueError(f"need min_count >= 1, 0 <= min_ratio <= 1, max_translations >= 1; "
                     f"got {min_count}, {min_ratio}, {max_translations}")
  counts = aligner(pairs)
  kept: dict[str, dict[str, int]] = {}
  for (s, t), c in counts.links.items():
    if c >= min_count and c >= min_ratio * counts.totals[s]:
      kept.setdefault(s, {})[t] = c
  top = {s: dict(sorted(t.items(), key=lambda kv: (-kv[1], kv[0]))[:max_translations])
         for s, t in kept.items()}
  out = Dictionary(top)
  (log.info if out.entries else log.warning)(
      "induced a dictionary of %d source words, %d links (%d candidate links)", len(out),
      out.num_links, len(counts.links))
  return out


@dataclasses.dataclass(frozen=True)
class DiceAligner:
  """Links each source word to the English word of its pair with the highest
  Dice coefficient 2 c(s, t) / (c(s) + c(t)), counts over sentence pairs.

  Memory is ~60 bytes per co-occurring (source, English) word pair, summed
  over sentence pairs (e.g. 30k verses x 25 x 25 words: ~1 GB): subsample
  larger corpora.

  Attributes:
    threshold: minimum Dice coefficient of a link.
    min_cooccurrence: minimum sentence pairs the two words share.
  """
  threshold: float = 0.3
  min_cooccurrence: int = 2

  def __call__(self, pairs: Sequence[Pair]) -> LinkCounts:
    s_vocab: dict[str, int] = {}
    t_vocab: dict[str, int] = {}
    as_ids = lambda ws, v: np.unique(np.asarray([v.setdefault(w, len(v)) for w in ws], np.int64))
    s_sets = [as_ids(words(p.src), s_vocab) for p in pairs]
    t_sets = [as_ids(words(p.tgt), t_vocab) for p in pairs]
    nt = max(len(t_vocab), 1)
    # One int64 key s * nt + t per co-occurrence, so counting is one np.unique.
    keys = np.concatenate([(s[:, None] * nt + t[None, :]).ravel()
                           for s, t in zip(s_sets, t_sets)] + [np.zeros(0, np.int64)])
    owner = np.repeat(np.arange(len(pairs)), [len(s) * len(t) for s, t in zip(s_sets, t_sets)])
    uniq, inverse, cooc = np.unique(keys, return_inverse=True, return_counts=True)
    c_s = np.bincount(np.concatenate(s_sets + [np.zeros(0, np.int64)]), minlength=len(s_vocab))
    c_t = np.bincount(np.concatenate(t_sets + [np.zeros(0, np.int64)]), minlength=nt)
    dice = 2.0 * cooc / np.maximum(c_s[uniq // nt] + c_t[uniq % nt], 1)
    ok = (cooc >= self.min_cooccurrence) & (dice >= self.threshold)
    # Best acceptable English word per (pair, source word): sort the acceptable
    # co-occurrences by pair, source, -Dice (stable, so ties go to the word
    # seen first in the corpus) and take each group's first.
    cand = np.nonzero(ok[inverse])[0]
    owner, src, score = owner[cand], keys[cand] // nt, dice[inverse[cand]]
    order = np.lexsort((-score, src, owner))
    first = np.ones(len(order), bool)
    first[1:] = (owner[order][1:] != owner[order][:-1]) | (src[order][1:] != src[order][:-1])
    link_keys, link_counts = np.unique(keys[cand[order[first]]], return_counts=True)
    s_words, t_words = list(s_vocab), list(t_vocab)
    links = {(s_words[k // nt], t_words[k % nt]): int(c)
             for k, c in zip(link_keys.tolist(), link_counts.tolist())}
    return LinkCounts(links, {w: int(c_s[i]) for w, i in s_vocab.items()})


class WordMap(NamedTuple):
  """Which word of a text each token belongs to.

  Attributes:
    token_word: [L] int, the index in `words` of each token's word; -1 for
      special and prefix tokens, whitespace and punctuation-only tokens.
    words: the text's words (`words(text)`).
  """
  token_word: np.ndarray
  words: tuple[str, ...]


def word_map(encoding: Any, text: str, prefix: str = "") -> WordMap:
  """The `WordMap` of a `tokenizers.Encoding` of `prefix + text`.

  Tokens are mapped to words through their character `offsets` rather than
  the encoding's `word_ids`: pre-tokenizers disagree on words (BERT's splits
  "don't" in three), and the words must be the switcher's.
  """
  spans = word_spans(text)
  char_word = np.full(len(text), -1, np.int64)
  for w, (i, j) in enumerate(spans):
    char_word[i:j] = w
  token_word = np.full(len(encoding.ids), -1, np.int64)
  for k, ((start, end), special) in enumerate(zip(encoding.offsets,
                                                  encoding.special_tokens_mask)):
    start, end = max(start - len(prefix), 0), end - len(prefix)
    if special or end <= 0:  # a special token, or one within the prefix
      continue
    hit = char_word[start:end]
    hit = hit[hit >= 0]
    if hit.size:
      token_word[k] = hit[0]
  return WordMap(token_word, tuple(text[i:j].lower() for i, j in spans))


def word_maps(tokenizer: Any, texts: Sequence[str], *, prefix: str = "",
              max_length: int | None = None) -> list[WordMap]:
  """`WordMap`s of `texts` as `tokenizer.encode(texts, prefix=..., max_length=...)`
  (an `optical_jax.text.Tokenizer`) tokenises them."""
  limit = min(max_length or tokenizer.max_length, tokenizer.max_length)
  tokenizer.backend.enable_truncation(limit)
  encodings = tokenizer.backend.encode_batch([prefix + t for t in texts])
  return [word_map(e, t, prefix) for e, t in zip(encodings, texts)]


def word_plan(plan: np.ndarray, src: WordMap, tgt: WordMap) -> np.ndarray:
  """Plan mass aggregated from tokens to words.

  Args:
    plan: [Ls, Lt] token plan (e.g. one row of `ot_alignment_loss`'s
      aux['plan']; padding past the maps' lengths is ignored).
    src, tgt: the two sides' word maps.

  Returns:
    [len(src.words), len(tgt.words)] float64 mass; tokens with word -1
    (special, prefix, punctuation) contribute nothing.
  """
  p = np.asarray(plan, np.float64)
  ls, lt = len(src.token_word), len(tgt.token_word)
  if p.ndim != 2 or ls > p.shape[0] or lt > p.shape[1]:
    raise ValueError(f"plan of shape {p.shape} but word maps of {ls} and {lt} tokens: "
                     "were the texts tokenised the same way?")
  one_hot = lambda m, n: (np.asarray(m)[None, :] == np.arange(n)[:, None]).astype(np.float64)
  return one_hot(src.token_word, len(src.words)) @ p[:ls, :lt] @ one_hot(
      tgt.token_word, len(tgt.words)).T


def word_links(mass: np.ndarray, *, mode: Literal["mutual", "threshold"] = "mutual",
               threshold: float = 0.0) -> list[tuple[int, int]]:
  """Word links (source index, English index) read off a word plan [Ns, Nt].

  'mutual' links i and j when each is the other's argmax; 'threshold' links
  every (i, j) with conditional mass P(j | i) = mass[i, j] / sum_j mass[i, j]
  above `threshold` (row-normalised, so independent of sentence length). In
  'mutual', `threshold` is a minimum P(j | i) too.
  """
  mass = np.asarray(mass, np.float64)
  if mass.size == 0:
    return []
  row = mass.sum(axis=1, keepdims=True)
  cond = mass / np.where(row > 0, row, 1.0)
  if mode == "threshold":
    return list(zip(*(x.tolist() for x in np.nonzero((cond > threshold) & (mass > 0)))))
  if mode != "mutual":
    raise ValueError(f"mode must be 'mutual' or 'threshold', got {mode!r}")
  best_t, best_s = mass.argmax(axis=1), mass.argmax(axis=0)
  return [(i, int(j)) for i, j in enumerate(best_t)
          if best_s[j] == i and mass[i, j] > 0 and cond[i, j] >= threshold]


def plan_link_counts(plans: Iterable[np.ndarray], src_maps: Iterable[WordMap],
                     tgt_maps: Iterable[WordMap], *, mode: str = "mutual",
                     threshold: float = 0.0) -> LinkCounts:
  """Counts `word_links` of each pair's plan over a corpus; `totals` counts
  source word occurrences that have at least one token."""
  links: collections.Counter = collections.Counter()
  totals: collections.Counter = collections.Counter()
  for plan, sm, tm in zip(plans, src_maps, tgt_maps, strict=True):
    present = np.unique(sm.token_word[sm.token_word >= 0])
    totals.update(sm.words[i] for i in present)
    for i, j in word_links(word_plan(plan, sm, tm), mode=mode, threshold=threshold):
      links[sm.words[i], tm.words[j]] += 1
  return LinkCounts(dict(links), dict(totals))


# texts -> (token embeddings [B, L, H], mask [B, L], special [B, L]).
Embed = Callable[[Sequence[str]], tuple[Any, Any, Any]]


def compute_plans(pairs: Sequence[Pair], embed_src: Embed, embed_tgt: Embed, *,
                  config: Any = None, batch_size: int = 32) -> Iterator[np.ndarray]:
  """Runs an encoder and `ot.ot_alignment_loss` over `pairs` in batches.

  Yields:
    each pair's plan [Ls, Lt], cut to its real tokens (masks are left-aligned).
  """
  config = config or config_lib.ot_config(config_lib.default())

  @jax.jit
  def solve(s, sm, t, tm, ss, ts):
    return ot.ot_alignment_loss(s, sm, t, tm, config, student_special=ss,
                                teacher_special=ts)[1]["plan"]

  for start in range(0, len(pairs), batch_size):
    chunk = pairs[start:start + batch_size]
    s, sm, ss = embed_src([p.src for p in chunk])
    t, tm, ts = embed_tgt([p.tgt for p in chunk])
    plan = np.asarray(solve(s, sm, t, tm, ss, ts))
    for k, (ls, lt) in enumerate(zip(np.asarray(sm).sum(1), np.asarray(tm).sum(1))):
      if k < len(chunk):  # rows past the chunk are batch padding
        yield plan[k, :ls, :lt]


@dataclasses.dataclass(frozen=True)
class PlanAligner:
  """The teacher's OT plan as a soft word aligner (see `plan_link_counts`).

  Attributes:
    plans: pairs -> per-pair plans [Ls, Lt], e.g.
      `functools.partial(compute_plans, embed_src=..., embed_tgt=...)`.
    src_maps, tgt_maps: texts -> `WordMap`s of the same tokenisations, e.g.
      `functools.partial(word_maps, tokenizer, prefix="query: ")`.
    mode, threshold: see `word_links`.
  """
  plans: Callable[[Sequence[Pair]], Iterable[np.ndarray]]
  src_maps: Callable[[Sequence[str]], Sequence[WordMap]]
  tgt_maps: Callable[[Sequence[str]], Sequence[WordMap]]
  mode: Literal["mutual", "threshold"] = "mutual"
  threshold: float = 0.0

  def __call__(self, pairs: Sequence[Pair]) -> LinkCounts:
    return plan_link_counts(self.plans(pairs), self.src_maps([p.src for p in pairs]),
                            self.tgt_maps([p.tgt for p in pairs]), mode=self.mode,
                            threshold=self.threshold)
