"""Several language pairs in one run, mixed in configured proportions.

Research question: what ratio of high- to low-resource pairs should the
distillation data have? A `LanguageMixer` draws each training example's
language from target proportions given as per-language weights, by
temperature over the languages' sizes, or as a high:low-resource ratio
(`HighLow`), and the example from that language.

The order is a pure function of (seed, position), where position k =
step * batch_size + j numbers the examples of the run, like `BatchOrder`:

* Positions come in blocks of `block_size`. A block holds exactly q_l
  positions of language l (q: `block_size * p` rounded by largest remainder,
  so sum(q) = block_size), in a random order drawn from (seed, block). The mix
  is thus exact over every block, up to 1 / block_size, and random within it:
  a window of positions is a draw without replacement from its block, whose
  spread is at most the binomial one.
* Language l's c-th position takes example `perm_l(epoch)[c % n_l]` with
  epoch = c // n_l: a permutation per language and epoch, so no example of a
  language repeats before that language's epoch ends. c is closed form (q_l
  per earlier block, plus the rank within the block), so a step costs
  O(batch_size + block_size), a resumed run at step s sees exactly the batches
  of an uninterrupted one, and the stream of examples does not depend on the
  batch size.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import zlib
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import numpy as np

log = logging.getLogger(__name__)

# Salt of the block-order RNG, apart from the per-language permutations'.
_BLOCK_SALT = 0x313C


@dataclasses.dataclass(frozen=True)
class HighLow:
  """A high:low-resource mix.

  Attributes:
    high, low: the languages of each group; together, every language once.
    ratio: high- to low-resource examples, a number (3.0) or an 'a:b' string
      ('3:1'): both give 75% high. '1:0' and '0:1' leave a group out.
    within: how a group's share is spread over its languages: 'size' (in
      proportion to their numbers of examples) or 'uniform'.
  """
  high: Sequence[str]
  low: Sequence[str]
  ratio: float | str = 1.0
  within: Literal["size", "uniform"] = "size"

  @property
  def high_fraction(self) -> float:
    """The target fraction of high-resource examples."""
    if isinstance(self.ratio, str):
      parts = self.ratio.split(":")
      try:
        a, b = (float(x) for x in parts)
      except ValueError:
        raise ValueError(f"ratio must be a number or 'a:b', got {self.ratio!r}") from None
    else:
      a, b = float(self.ratio), 1.0
    if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0 and a + b > 0):
      raise ValueError(f"ratio must be finite, >= 0 and not 0:0, got {self.ratio!r}")
    return a / (a + b)


class MixEntry(NamedTuple):
  """One example of a batch: its language, index in that language, and the
  language's epoch it belongs to."""
  lang: str
  index: int
  epoch: int


@dataclasses.dataclass(frozen=True)
class MixReport:
  """Realised mix over the first `examples` positions of a run.

  Attributes:
    languages, groups: realised fraction of examples per language / group.
    target_languages, target_groups: the configured fractions.
    epochs: passes over each language's data (low-resource data repeats more).
    max_deviation: largest |realised - target| over languages.
  """
  examples: int
  languages: Mapping[str, float]
  groups: Mapping[str, float]
  target_languages: Mapping[str, float]
  target_groups: Mapping[str, float]
  epochs: Mapping[str, float]
  max_deviation: float


@functools.lru_cache(maxsize=64)
def _permutation(n: int, seed: int, lang: str, epoch: int) -> np.ndarray:
  # crc32 of the name, not the language's position: adding a language to the
  # run does not reshuffle the others' epochs.
  perm = np.random.default_rng([seed, zlib.crc32(lang.encode()), epoch]).permutation(n)
  perm.setflags(write=False)
  return perm


@functools.lru_cache(maxsize=4)
def _block(quotas: tuple[int, ...], seed: int, block: int) -> tuple[np.ndarray, np.ndarray]:
  """(language of each position of `block`, its rank among that language's)."""
  langs = np.repeat(np.arange(len(quotas)), quotas)
  langs = np.random.default_rng([seed, _BLOCK_SALT, block]).permutation(langs)
  order = np.argsort(langs, kind="stable")
  starts = np.concatenate([[0], np.cumsum(quotas)[:-1]])
  rank = np.empty(len(langs), np.int64)
  rank[order] = np.arange(len(langs)) - starts[langs[order]]
  langs.setflags(write=False)
  rank.setflags(write=False)
  return langs, rank


def _largest_remainder(p: np.ndarray, total: int) -> np.ndarray:
  exact = p * total
  q = np.floor(exact).astype(np.int64)
  # Stable sort: equal remainders go to the earlier language.
  extra = np.argsort(-(exact - q), kind="stable")[:total - int(q.sum())]
  q[extra] += 1
  return q


class LanguageMixer:
  """Which (language, example) each position of a multilingual run uses.

  Args:
    sources: {language: its examples (a sequence) or their number}; >= 1 each.
    weights: {language: weight >= 0}, every language named, normalised to sum 1.
    temperature: T > 0: p_l proportional to n_l ** (1 / T): T = 1 is
      proportional to size, T = inf uniform.
    high_low: a `HighLow` spec.
    seed: >= 0.
    block_size: positions per exactly-mixed block; a language with a positive
      weight must get at least one position per block.
    groups: {language: group name}, for `realised_mix`'s per-group fractions
      with `weights` or `temperature` (`high_low` sets 'high' / 'low').

  At most one of `weights`, `temperature`, `high_low`; none means
  temperature=1 (proportional to size).

  Raises:
    ValueError: an empty language, a negative or non-finite weight, weights all
      zero, a language unknown to `sources` (or missing from the spec), a
      temperature <= 0, or a language rounded to no position in a block.
  """

  def __init__(self, sources: Mapping[str, Sequence[Any] | int], *,
               weights: Mapping[str, float] | None = None, temperature: float | None = None,
               high_low: HighLow | None = None, seed: int = 0, block_size: int = 8192,
               groups: Mapping[str, str] | None = None):
    if not sources:
      raise ValueError("no languages to mix")
    self.langs = tuple(sources)
    self._sources = dict(sources)
    self.sizes = {l: (s if isinstance(s, (int, np.integer)) else len(s))
                  for l, s in sources.items()}
    for l, n in self.sizes.items():
      if isinstance(n, bool) or n < 1:
        raise ValueError(f"language {l!r} has no examples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if sum(x is not None for x in (weights, temperature, high_low)) > 1:
      raise ValueError("give at most one of weights, temperature and high_low")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
        or block_size < 1:
      raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
    self.seed, self.block_size = int(seed), int(block_size)
    if groups is not None and high_low is not None:
      raise ValueError("groups come from high_low; do not give both")
    unknown = sorted(set(groups or {}) - set(self.langs))
    if unknown:
      raise ValueError(f"groups name unknown languages {unknown}")
    self.group_of: dict[str, str] = dict(groups or {})
    if weights is not None:
      p = self._from_weights(weights)
    elif high_low is not None:
      p = self._from_high_low(high_low)
    else:
      p = self._from_temperature(1.0 if temperature is None else temperature)
    self.target = dict(zip(self.langs, p.tolist()))
    self._n = np.asarray([self.sizes[l] for l in self.langs], np.int64)
    self.quotas = _largest_remainder(p, self.block_size)
    starved = [l for l, pl, q in zip(self.langs, p, self.quotas) if pl > 0 and q == 0]
    if starved:
      raise ValueError(f"languages {starved} get no position in a block of "
                       f"{self.block_size}: raise block_size")
    log.info("language mix (target fraction, examples): %s",
             {l: (round(self.target[l], 4), self.sizes[l]) for l in self.langs})

  def _from_weights(self, weights: Mapping[str, float]) -> np.ndarray:
    unknown, missing = set(weights) - set(self.langs), set(self.langs) - set(weights)
    if unknown or missing:
      raise ValueError(f"weights must name exactly the languages {list(self.langs)}; "
                       f"unknown: {sorted(unknown)}, missing: {sorted(missing)}")
    w = np.asarray([weights[l] for l in self.langs], np.float64)
    bad = [l for l, x in zip(self.langs, w) if not (math.isfinite(x) and x >= 0)]
    if bad:
      raise ValueError(f"weights must be finite and >= 0; bad: "
                       f"{ {l: weights[l] for l in bad} }")
    if w.sum() <= 0:
      raise ValueError("weights are all zero")
    return w / w.sum()

  def _from_temperature(self, t: float) -> np.ndarray:
    if not t > 0:  # also rejects NaN
      raise ValueError(f"temperature must be > 0, got {t}")
    # In log space, the largest subtracted before dividing by T: n ** (1 / T)
    # overflows for small T, and inf - inf would be NaN.
    log_n = np.log([self.sizes[l] for l in self.langs])
    w = np.exp((log_n - log_n.max()) / t)
    return w / w.sum()

  def _from_high_low(self, spec: HighLow) -> np.ndarray:
    if spec.within not in ("size", "uniform"):
      raise ValueError(f"within must be 'size' or 'uniform', got {spec.within!r}")
    named = list(spec.high) + list(spec.low)
    unknown = [l for l in named if l not in self.sizes]
    twice = sorted({l for l in named if named.count(l) > 1})
    missing = [l for l in self.langs if l not in named]
    if unknown or twice or missing:
      raise ValueError(f"high_low groups must name each language once; unknown: {unknown}, "
                       f"in both/twice: {twice}, in no group: {missing}")
    frac = {"high": spec.high_fraction}
    frac["low"] = 1.0 - frac["high"]
    p = dict.fromkeys(self.langs, 0.0)
    for group, members in (("high", spec.high), ("low", spec.low)):
      if frac[group] > 0 and not members:
        raise ValueError(f"the {group}-resource group is empty but its share is "
                         f"{frac[group]:.3f}")
      w = np.asarray([self.sizes[l] if spec.within == "size" else 1.0 for l in members],
                     np.float64)
      for l, x in zip(members, w):
        p[l] = frac[group] * x / w.sum()
        self.group_of[l] = group
    return np.asarray([p[l] for l in self.langs])

  def sample(self, step: int, batch_size: int, process_index: int = 0,
             process_count: int = 1) -> list[MixEntry]:
    """The examples of `step` (or host `process_index`'s contiguous slice of them)."""
    if step < 0 or batch_size < 1:
      raise ValueError(f"need step >= 0 and batch_size >= 1, got {step} and {batch_size}")
    if process_count < 1 or not 0 <= process_index < process_count \
        or batch_size % process_count:
      raise ValueError(f"bad host slice {process_index} of {process_count} for a batch "
                       f"of {batch_size}")
    per_host = batch_size // process_count
    positions = int(step) * batch_size + process_index * per_host + np.arange(per_host)
    blocks, offsets = np.divmod(positions, self.block_size)
    lang = np.empty(per_host, np.int64)
    count = np.empty(per_host, np.int64)
    for b in np.unique(blocks):
      langs, rank = _block(tuple(self.quotas.tolist()), self.seed, int(b))
      m = blocks == b
      lang[m] = langs[offsets[m]]
      count[m] = int(b) * self.quotas[lang[m]] + rank[offsets[m]]
    epochs, within = np.divmod(count, self._n[lang])
    out = []
    for li, e, w in zip(lang.tolist(), epochs.tolist(), within.tolist()):
      l = self.langs[li]
      out.append(MixEntry(l, int(_permutation(self.sizes[l], self.seed, l, e)[w]), e))
    return out

  def indices(self, step: int, batch_size: int, process_index: int = 0,
              process_count: int = 1) -> list[tuple[str, int]]:
    """[(language, example index)] of `step`; see `sample`."""
    return [(e.lang, e.index) for e in self.sample(step, batch_size, process_index,
                                                   process_count)]

  def items(self, step: int, batch_size: int) -> list[tuple[str, Any]]:
    """[(language, example)] of `step`, for sources given as sequences."""
    if any(isinstance(s, (int, np.integer)) for s in self._sources.values()):
      raise ValueError("items() needs every source as a sequence, not a length")
    return [(l, self._sources[l][i]) for l, i in self.indices(step, batch_size)]

  def _counts(self, positions: int) -> np.ndarray:
    """Examples of each language among the first `positions` positions."""
    full, rest = divmod(int(positions), self.block_size)
    langs, _ = _block(tuple(self.quotas.tolist()), self.seed, full)
    return full * self.quotas + np.bincount(langs[:rest], minlength=len(self.langs))

  def position(self, step: int, batch_size: int) -> dict[str, Any]:
    """JSON-able per-language epoch and offset where `step` starts, for
    checkpoint metadata (pass the number of steps done)."""
    counts = self._counts(int(step) * batch_size)
    return {"step": int(step), "languages": {
        l: {"epoch": int(c // n), "offset": int(c % n)}
        for l, c, n in zip(self.langs, counts.tolist(), self._n.tolist())}}

  def realised_mix(self, n_steps: int, batch_size: int, *, tolerance: float = 0.02
                   ) -> MixReport:
    """The mix of the first `n_steps` steps, logged; a warning when a language's
    fraction is off its target by more than `tolerance` (absolute)."""
    total = int(n_steps) * int(batch_size)
    if total < 1:
      raise ValueError(f"no examples in {n_steps} steps of {batch_size}")
    counts = self._counts(total)
    frac = dict(zip(self.langs, (counts / total).tolist()))
    groups: dict[str, float] = {}
    target_groups: dict[str, float] = {}
    for l, g in self.group_of.items():
      groups[g] = groups.get(g, 0.0) + frac[l]
      target_groups[g] = target_groups.get(g, 0.0) + self.target[l]
    report = MixReport(
        examples=total, languages=frac, groups=groups, target_languages=dict(self.target),
        target_groups=target_groups,
        epochs={l: c / n for l, c, n in zip(self.langs, counts.tolist(), self._n.tolist())},
        max_deviation=max(abs(frac[l] - self.target[l]) for l in self.langs))
    log.info("realised language mix over %d examples: %s; groups %s; epochs %s", total,
             _rounded(frac), _rounded(groups), _rounded(report.epochs))
    if report.max_deviation > tolerance:
      log.warning("realised language mix deviates from the target by %.4f (> %.4f): "
                  "realised %s, target %s", report.max_deviation, tolerance, _rounded(frac),
                  _rounded(self.target))
    return report


def _rounded(d: Mapping[str, float]) -> dict[str, float]:
  return {k: round(v, 4) for k, v in d.items()}
