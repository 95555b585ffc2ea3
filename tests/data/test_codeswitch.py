"""Code-switching (data/codeswitch.py): dictionary files, the switcher.

Rate tolerances are binomial: with each of E eligible words switched
independently with probability p, the realised rate has standard deviation
sqrt(p (1 - p) / E); a check at 4 sigma fails by chance with probability
< 1e-4 for any seed (the seeds here are fixed, so the tests are deterministic).
"""
import math

import numpy as np
import pytest

from optical_jax.data import batching, codeswitch


SRC_VOCAB = [f"w{i}" for i in range(100)]

DICT = codeswitch.Dictionary({f"w{i}": {f"e{i}": 1} for i in range(50)})  # covers half


def _corpus(n, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    ws = list(rng.choice(SRC_VOCAB, size=rng.integers(3, 12)))
    ws[0] = ws[0].capitalize()
    out.append(" ".join(ws) + rng.choice([".", "?", ""]))
  return out


# --- Words and the switcher ------------------------------------------------------


def test_word_spans_strip_edge_punctuation_only():
  t = '"Mwana," anati: don\'t (UN) — किताबें। 100%'
  assert [t[i:j] for i, j in codeswitch.word_spans(t)] == [
      "Mwana", "anati", "don't", "UN", "किताबें", "100"]  # vowel signs stay in the word
  assert codeswitch.words("Mwana, MWANA!") == ["mwana", "mwana"]


def test_punctuation_capitalisation_and_untouched_words():
  d = codeswitch.Dictionary({"mwana": {"child": 1}, "nyumba": {"house": 1}, "un": {"un": 1}})
  sw = codeswitch.CodeSwitcher(d, rate=1.0, seed=0)
  r = sw.switch('"Mwana,"  anati:\tnyumba! (MWANA) mwana-wanga', index=0)
  # Whitespace, punctuation and words without entries are kept as they were;
  # "mwana-wanga" is one word (inner hyphen) without an entry.
  assert r.text == '"Child,"  anati:\thouse! (CHILD) mwana-wanga'
  assert (r.switched, r.eligible, r.words) == (3, 3, 5)
  plain = "palibe mawu pano, ayi."
  assert sw.switch(plain, 3) == codeswitch.SwitchResult(plain, 0, 0, 4)
  assert codeswitch.CodeSwitcher(d, rate=0.0).switch('"Mwana,"', 0).text == '"Mwana,"'


def _binomial_tol(p, n):
  return 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_rate_over_eligible_words(rate):
  stats = codeswitch.CodeSwitcher(DICT, rate, seed=1).corpus_stats(_corpus(800))
  assert stats.eligible > 2000
  assert abs(stats.rate - rate) <= _binomial_tol(rate, stats.eligible)
  assert stats.coverage == pytest.approx(0.5, abs=0.05)  # half the vocabulary


def test_rate_over_all_words_is_capped_by_eligibility():
  rate, texts = 0.3, _corpus(800)
  sw = codeswitch.CodeSwitcher(DICT, rate, seed=2, mode="words")
  results = [sw.switch(t, i) for i, t in enumerate(texts)]
  # Per sentence p = min(1, rate * words / eligible): the switched count is a
  # sum of binomials with known mean and variance.
  ps = [min(1.0, rate * r.words / r.eligible) if r.eligible else 0.0 for r in results]
  mean = sum(p * r.eligible for p, r in zip(ps, results))
  var = sum(p * (1 - p) * r.eligible for p, r in zip(ps, results))
  switched = sum(r.switched for r in results)
  assert abs(switched - mean) <= 4 * math.sqrt(var)
  assert all(r.switched <= r.eligible for r in results)
  # About half the words are eligible, so the realised word rate is near 0.3.
  assert abs(switched / sum(r.words for r in results) - rate) < 0.03


def test_translation_drawn_in_proportion_to_counts():
  d = codeswitch.Dictionary({"a": {"x": 3, "y": 1}})
  sw = codeswitch.CodeSwitcher(d, rate=1.0, seed=0)
  picks = [sw.switch("a", i).text for i in range(4000)]
  assert abs(picks.count("x") / 4000 - 0.75) <= _binomial_tol(0.75, 4000)
  top = codeswitch.CodeSwitcher(d, rate=1.0, choice="most_frequent")
  assert {top.switch("a", i).text for i in range(50)} == {"x"}


def test_deterministic_in_seed_index_epoch():
  texts = _corpus(50)
  a = codeswitch.CodeSwitcher(DICT, 0.5, seed=7)
  b = codeswitch.CodeSwitcher(DICT, 0.5, seed=7)  # a fresh object, as after a restart
  forward = [a.switch(t, i, epoch=3) for i, t in enumerate(texts)]
  backward = [b.switch(t, i, epoch=3) for i, t in reversed(list(enumerate(texts)))]
  assert forward == backward[::-1]  # no hidden state: call order does not matter
  assert [a.switch(t, i, epoch=4) for i, t in enumerate(texts)] != forward
  assert [codeswitch.CodeSwitcher(DICT, 0.5, seed=8).switch(t, i, epoch=3)
          for i, t in enumerate(texts)] != forward


def test_resume_equivalence_with_batch_order():
  texts = _corpus(30)
  order = batching.BatchOrder(len(texts), 8, seed=0)  # batches straddle epochs

  def batch(switcher, step):
    idx = order.indices(step)
    return switcher.switch_batch([texts[i] for i in idx], idx,
                                 codeswitch.batch_epochs(order, step))[0]

  full = [batch(codeswitch.CodeSwitcher(DICT, 0.5, seed=3), s) for s in range(10)]
  resumed = codeswitch.CodeSwitcher(DICT, 0.5, seed=3)
  assert [batch(resumed, s) for s in range(5, 10)] == full[5:]
  np.testing.assert_array_equal(codeswitch.batch_epochs(order, 3), [0, 0, 0, 0, 0, 0, 1, 1])


def test_switcher_validation():
  with pytest.raises(ValueError, match="rate"):
    codeswitch.CodeSwitcher(DICT, 1.5)
  with pytest.raises(ValueError, match="seed"):
    codeswitch.CodeSwitcher(DICT, 0.5, seed=-1)
  with pytest.raises(ValueError, match="mode"):
    codeswitch.CodeSwitcher(DICT, 0.5, mode="all")


# --- Dictionary files ----------------------------------------------------------------


def test_read_dictionary_formats_and_counts(tmp_path):
  p = tmp_path / "dict.txt"
  p.write_text("\ufeffmwana\tchild\nMwana\tkid\nmwana child\n\nnyumba house\n"
               "pita\tgo away\t5\n", encoding="utf-8")
  d = codeswitch.read_dictionary(p)
  assert d.entries == {"mwana": {"child": 2, "kid": 1}, "nyumba": {"house": 1},
                       "pita": {"go away": 5}}
  assert "MWANA" in d and "x" not in d and len(d) == 3 and d.num_links == 4
  d.save(tmp_path / "out.tsv")
  assert codeswitch.read_dictionary(tmp_path / "out.tsv") == d


@pytest.mark.parametrize("content,line,reason", [
    ("a\tb\nthree words here\n", 2, "space-separated"),
    ("a\tb\nc\td\te\tf\n", 2, "columns"),
    ("a\tb\n\n\t x\n", 3, "empty source"),
    ("a\tb\tmany\n", 1, "count"),
    (b"a\tb\n\xff\xfe b\n", 2, "invalid UTF-8"),
])
def test_read_dictionary_errors_name_file_and_line(tmp_path, content, line, reason):
  p = tmp_path / "bad.dict"
  (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
  with pytest.raises(codeswitch.DictionaryError, match=f"bad.dict:{line}: .*{reason}"):
    codeswitch.read_dictionary(p)


def test_read_dictionary_warns_on_entries_that_cannot_match(tmp_path, caplog):
  p = tmp_path / "d.txt"
  p.write_text("etc.\tand so on\nnew york\tNYC\nmwana\tchild\n")
  d = codeswitch.read_dictionary(p)
  assert "2 source entries can never match" in caplog.text and "mwana" in d
  assert codeswitch.CodeSwitcher(d, 1.0).switch("etc. mwana", 0).text == "etc. child"


def test_read_dictionary_skip_mode_and_empty(tmp_path):
  p = tmp_path / "d.txt"
  p.write_text("a b\nx y z\nc\td\te\n")
  d = codeswitch.read_dictionary(p, on_bad_line="skip")
  assert d.entries == {"a": {"b": 1}} and d.skipped == {"bad_count": 1, "wrong_columns": 1}
  p.write_text("\n\n")
  with pytest.raises(codeswitch.DictionaryError, match="no entries"):
    codeswitch.read_dictionary(p)
  with pytest.raises(FileNotFoundError):
    codeswitch.read_dictionary(tmp_path / "missing.txt")
