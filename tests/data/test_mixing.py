"""LanguageMixer: configured language proportions, a pure function of (seed, step).

Tolerances. A window of m consecutive positions is a draw without replacement
from blocks that hold exactly q_l = round(block_size * p_l) positions of
language l, so the count of l in the window has at most the binomial variance
m p (1 - p). The realised fraction is then within 4 sqrt(p (1 - p) / m) of q_l
/ block_size (chance of failing < 1e-4 for any seed), and q_l / block_size is
within 1 / block_size of p_l (largest-remainder rounding).
"""
import collections
import json
import logging
import math

import pytest

from optical_jax.data import mixing

B = 32
STEPS = 125  # 4000 examples


def _fractions(mixer, first_step=0, steps=STEPS, batch_size=B):
  counts = collections.Counter(
      lang for s in range(first_step, first_step + steps)
      for lang, _ in mixer.indices(s, batch_size))
  return {l: counts[l] / (steps * batch_size) for l in mixer.langs}


def _assert_mix(realised, target, m, block_size=8192):
  for lang, p in target.items():
    tol = 4 * math.sqrt(p * (1 - p) / m) + 1 / block_size
    assert abs(realised.get(lang, 0.0) - p) <= tol, (lang, realised, target)


def test_weights():
  mixer = mixing.LanguageMixer({"a": 100, "b": 50, "c": 10}, weights={"a": 1, "b": 2, "c": 1},
                               seed=0)
  assert mixer.target == pytest.approx({"a": 0.25, "b": 0.5, "c": 0.25})
  _assert_mix(_fractions(mixer), mixer.target, STEPS * B)
  _assert_mix(_fractions(mixer, first_step=5000), mixer.target, STEPS * B)  # later blocks


def test_zero_weight_language_never_sampled():
  mixer = mixing.LanguageMixer({"a": 10, "b": 10}, weights={"a": 1, "b": 0})
  assert _fractions(mixer, steps=20) == {"a": 1.0, "b": 0.0}


@pytest.mark.parametrize("temperature,expected", [
    (1.0, {"a": 0.8, "b": 0.16, "c": 0.04}),  # proportional to size
    (2.0, {"a": 20 / 33.416, "b": 8.944 / 33.416, "c": 4.472 / 33.416}),  # sqrt(n)
    (1e9, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),  # -> uniform
    (float("inf"), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
])
def test_temperature(temperature, expected):
  sizes = {"a": 400, "b": 80, "c": 20}
  mixer = mixing.LanguageMixer(sizes, temperature=temperature, seed=1)
  total = sum(v ** (1 / temperature) for v in sizes.values())
  exact = {l: v ** (1 / temperature) / total for l, v in sizes.items()}
  assert mixer.target == pytest.approx(exact) and exact == pytest.approx(expected, abs=1e-3)
  _assert_mix(_fractions(mixer), mixer.target, STEPS * B)


def test_default_is_proportional_to_size():
  mixer = mixing.LanguageMixer({"a": [0] * 30, "b": 10})
  assert mixer.target == pytest.approx({"a": 0.75, "b": 0.25})


@pytest.mark.parametrize("within,expected", [
    ("size", {"en1": 0.1875, "en2": 0.5625, "ny": 0.1, "sw": 0.15}),
    ("uniform", {"en1": 0.375, "en2": 0.375, "ny": 0.125, "sw": 0.125}),
])
def test_high_low_ratio(within, expected):
  sizes = {"en1": 5000, "en2": 15000, "ny": 200, "sw": 300}
  spec = mixing.HighLow(high=("en1", "en2"), low=("ny", "sw"), ratio="3:1", within=within)
  assert spec.high_fraction == 0.75 == mixing.HighLow((), (), ratio=3).high_fraction
  mixer = mixing.LanguageMixer(sizes, high_low=spec, seed=2)
  assert mixer.target == pytest.approx(expected)
  realised = _fractions(mixer)
  _assert_mix(realised, expected, STEPS * B)
  high = realised["en1"] + realised["en2"]
  assert abs(high - 0.75) <= 4 * math.sqrt(0.75 * 0.25 / (STEPS * B)) + 2 / 8192
  report = mixer.realised_mix(STEPS, B)
  assert report.groups["high"] == pytest.approx(high)
  assert report.target_groups == pytest.approx({"high": 0.75, "low": 0.25})
  # Low-resource data is seen many more times per example than high-resource.
  assert report.epochs["ny"] > 10 * report.epochs["en2"]


def test_exact_over_whole_blocks():
  mixer = mixing.LanguageMixer({"a": 7, "b": 5, "c": 3}, weights={"a": 1, "b": 1, "c": 1},
                               block_size=64, seed=3)
  assert mixer.quotas.tolist() == [22, 21, 21]  # largest remainder: sum is the block
  report = mixer.realised_mix(n_steps=16, batch_size=8)  # two whole blocks
  assert report.languages == {"a": 22 / 64, "b": 21 / 64, "c": 21 / 64}
  assert report.max_deviation <= 1 / 64
  assert report.languages == pytest.approx(_fractions(mixer, steps=16, batch_size=8))


def test_deterministic_and_resumable():
  sizes = {"a": 37, "b": 11, "c": 5}
  a = mixing.LanguageMixer(sizes, temperature=2.0, seed=4, block_size=128)
  full = [a.indices(s, 16) for s in range(40)]  # crosses several blocks and epochs
  resumed = mixing.LanguageMixer(sizes, temperature=2.0, seed=4, block_size=128)
  assert [resumed.indices(s, 16) for s in range(25, 40)] == full[25:]
  assert [a.indices(s, 16) for s in range(40)] == full  # no state advanced by calls
  other = mixing.LanguageMixer(sizes, temperature=2.0, seed=5, block_size=128)
  assert [other.indices(s, 16) for s in range(40)] != full
  # The stream depends on positions only: another batch size slices it differently.
  stream = [e for s in range(40) for e in full[s]]
  assert [e for s in range(80) for e in a.indices(s, 8)] == stream
  # Host slices concatenate to the global batch.
  assert a.indices(7, 16, 0, 2) + a.indices(7, 16, 1, 2) == full[7]


def test_each_example_once_per_language_epoch():
  sizes = {"a": 50, "b": 13, "c": 7}
  mixer = mixing.LanguageMixer(sizes, weights={"a": 1, "b": 1, "c": 1}, seed=6,
                               block_size=256)
  entries = [e for s in range(100) for e in mixer.sample(s, 30)]  # 3000 positions
  for lang, n in sizes.items():
    seq = [e for e in entries if e.lang == lang]
    epochs = len(seq) // n
    assert epochs >= 10
    for k in range(epochs):
      chunk = seq[k * n:(k + 1) * n]
      assert sorted(e.index for e in chunk) == list(range(n))
      assert {e.epoch for e in chunk} == {k}
    assert [e.index for e in seq[:n]] != [e.index for e in seq[n:2 * n]]  # reshuffled


def test_position_matches_the_stream():
  mixer = mixing.LanguageMixer({"a": 9, "b": 4}, weights={"a": 1, "b": 1}, seed=0,
                               block_size=32)
  pos = mixer.position(10, 8)
  assert json.loads(json.dumps(pos)) == pos
  seen = collections.Counter(l for s in range(10) for l, _ in mixer.indices(s, 8))
  for lang, n in (("a", 9), ("b", 4)):
    assert pos["languages"][lang] == {"epoch": seen[lang] // n, "offset": seen[lang] % n}


def test_items_and_groups_for_reporting():
  src = {"ny": ["x", "y"], "en": ["p", "q", "r"]}
  mixer = mixing.LanguageMixer(src, weights={"ny": 1, "en": 1}, groups={"ny": "low",
                                                                          "en": "high"})
  items = mixer.items(0, 4)
  assert all(item in src[lang] for lang, item in items)
  assert set(mixer.realised_mix(50, 4).groups) == {"low", "high"}
  with pytest.raises(ValueError, match="sequence"):
    mixing.LanguageMixer({"a": 3}).items(0, 2)


def test_realised_mix_warns_on_deviation(caplog):
  mixer = mixing.LanguageMixer({"a": 5, "b": 5}, weights={"a": 1, "b": 1})
  with caplog.at_level(logging.WARNING):
    report = mixer.realised_mix(1, 1)  # one example: 100% one language
  assert report.max_deviation == pytest.approx(0.5)
  assert "deviates from the target" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    mixer.realised_mix(1000, 8)
  assert "deviates" not in caplog.text


@pytest.mark.parametrize("kwargs,match", [
    (dict(weights={"a": -1, "b": 1}), "finite and >= 0"),
    (dict(weights={"a": float("nan"), "b": 1}), "finite and >= 0"),
    (dict(weights={"a": 0, "b": 0}), "all zero"),
    (dict(weights={"a": 1, "b": 1, "zz": 1}), "unknown: \\['zz'\\]"),
    (dict(weights={"a": 1}), "missing: \\['b'\\]"),
    (dict(temperature=0.0), "temperature must be > 0"),
    (dict(temperature=1.0, weights={"a": 1, "b": 1}), "at most one"),
    (dict(high_low=mixing.HighLow(("a", "zz"), ("b",))), "unknown: \\['zz'\\]"),
    (dict(high_low=mixing.HighLow(("a",), ())), "in no group: \\['b'\\]"),
    (dict(high_low=mixing.HighLow(("a", "b"), ("b",))), "in both/twice: \\['b'\\]"),
    (dict(high_low=mixing.HighLow(("a", "b"), (), ratio="3:1")), "low-resource group is empty"),
    (dict(high_low=mixing.HighLow(("a",), ("b",), ratio="3:x")), "'a:b'"),
    (dict(high_low=mixing.HighLow(("a",), ("b",), ratio=-1)), "finite, >= 0"),
    (dict(weights={"a": 1, "b": 1e-6}, block_size=100), "raise block_size"),
    (dict(groups={"zz": "high"}), "unknown languages"),
])
def test_bad_specs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mixing.LanguageMixer({"a": 10, "b": 10}, **kwargs)


def test_bad_sources_and_arguments():
  with pytest.raises(ValueError, match="'ny' has no examples"):
    mixing.LanguageMixer({"en": 10, "ny": []})
  with pytest.raises(ValueError, match="no languages"):
    mixing.LanguageMixer({})
  with pytest.raises(ValueError, match="seed"):
    mixing.LanguageMixer({"a": 1}, seed=-1)
  mixer = mixing.LanguageMixer({"a": 3})
  with pytest.raises(ValueError, match="step >= 0"):
    mixer.indices(-1, 4)
  with pytest.raises(ValueError, match="host slice"):
    mixer.indices(0, 4, 0, 3)
  with pytest.raises(ValueError, match="no examples"):
    mixer.realised_mix(0, 4)
  # 1:0 leaves the low group out: allowed, and then the group may be empty.
  only_high = mixing.LanguageMixer({"a": 3}, high_low=mixing.HighLow(("a",), (), ratio="1:0"))
  assert only_high.target == {"a": 1.0}
