"""Benchmark layouts as job inputs (data/layouts.py): per-language collections merged under
`lang/` ids, and language-mixed bitext, checked against the shipped Multi30k sample read
by hand."""
import gzip

import pytest

from optical_jax import config as config_lib
from optical_jax.data import collection as collection_lib
from optical_jax.data import layouts

MULTI30K = layouts.SAMPLES / "multi30k"


def _captions(name: str) -> list[str]:
  """The lines of a Multi30k sample file, as published."""
  data = (MULTI30K / "data" / "task1" / "raw" / name).read_bytes()
  return gzip.decompress(data).decode("utf-8").splitlines()


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """One prepared copy of the sample for the whole module."""
  return tmp_path_factory.mktemp("tfds")


def test_merge_prefixes_every_id_with_its_language():
  one = collection_lib.EvalCollection(queries={"q1": "swali"}, docs={"d1": "jibu", "d2": "x"},
                                      qrels={"q1": {"d1": 1, "d2": 0}})
  two = collection_lib.EvalCollection(queries={"q1": "ibeere"}, docs={"d1": "idahun"},
                                      qrels={"q1": {"d1": 2}})
  merged = layouts.merge({"sw": one, "yo": two})
  assert merged.queries == {"sw/q1": "swali", "yo/q1": "ibeere"}
  assert merged.docs == {"sw/d1": "jibu", "sw/d2": "x", "yo/d1": "idahun"}
  assert merged.qrels == {"sw/q1": {"sw/d1": 1, "sw/d2": 0}, "yo/q1": {"yo/d1": 2}}
  assert [layouts.language_of(i) for i in merged.queries] == ["sw", "yo"]
  assert layouts.language_of("te/q/7") == "te"          # only the first '/' separates


def test_eval_collection_merges_each_language_subsampled(tfds_dir):
  e = config_lib.default().eval
  e.update(collection="multi30k", languages=("de", "fr"), doc_language="en",
           manual_dir=str(MULTI30K), max_queries=2, max_docs=0)
  calls = []

  def subsample(col, max_queries, max_docs):
    calls.append((sorted(col.queries), max_queries, max_docs))
    return col

  merged = layouts.eval_collection(e, subsample, str(tfds_dir))
  # test_2016_flickr (the default split): caption i in the language -> English caption i.
  english = _captions("test_2016_flickr.en.gz")
  assert calls == [([f"{l}-{i:05d}" for i in range(len(english))], 2, 0) for l in ("de", "fr")]
  for lang in ("de", "fr"):
    captions = _captions(f"test_2016_flickr.{lang}.gz")
    for i, (caption, doc) in enumerate(zip(captions, english, strict=True)):
      qid, docid = f"{lang}/{lang}-{i:05d}", f"{lang}/en-{i:05d}"
      assert merged.queries[qid] == caption and merged.docs[docid] == doc
      assert merged.qrels[qid] == {docid: 1}
  assert len(merged.queries) == len(merged.docs) == 2 * len(english)


def test_eval_collection_errors_name_the_key():
  e = config_lib.default().eval
  e.collection = "multi30k"
  with pytest.raises(ValueError, match=r"config\.eval\.languages is empty"):
    layouts.eval_collection(e, lambda col, q, d: col)
  e.collection = "bible"
  with pytest.raises(ValueError, match="eval.collection='bible' is not a benchmark layout"):
    layouts.language_collection(e, "sw")


def _mix_config(tfds_dir, *sources, **data):
  c = config_lib.default()
  c.data.update(source="mix", mix_sources=sources, tfds_dir=str(tfds_dir), **data)
  c.train.update(steps=8, batch_size=4)
  return c


def test_mixed_bitext_concatenates_the_languages_in_order(tfds_dir):
  c = _mix_config(tfds_dir, f"de:multi30k:{MULTI30K}", f"fr:multi30k:{MULTI30K}")
  src, tgt, sizes, mixer, report = layouts.mixed_bitext(c)
  english = _captions("train.en.gz")
  german, french = _captions("train.de.gz"), _captions("train.fr.gz")
  assert sizes == {"de": len(german), "fr": len(french)}
  assert src == german + french and tgt == english + english
  assert report is not None
  # The order's indices point into the concatenation: each drawn pair is a pair of the
  # language the mixer drew, at the same line of its files.
  order = layouts.MixedOrder(mixer, sizes, c.train.batch_size, report)
  for step in range(c.train.steps):
    drawn = mixer.indices(step, c.train.batch_size)
    got = order.indices(step)
    assert len(got) == len(drawn) == c.train.batch_size
    for (lang, line), i in zip(drawn, got):
      side = german if lang == "de" else french
      assert (src[i], tgt[i]) == (side[line], english[line])
  assert order.position(3) == mixer.position(3, c.train.batch_size)


@pytest.mark.parametrize("sources,data,match", [
    ((), {}, r"config\.data\.source='mix' needs config\.data\.mix_sources"),
    (("de",), {}, r"mix_sources entry 'de': expected"),
    (("de:tatoeba:/x",), {}, r"mix_sources entry 'de:tatoeba:/x'"),
    (("ny:bible:/x",), {}, r"mix_sources entry 'ny:bible:/x'"),
    (("de:multi30k",), {}, r"mix_sources entry 'de:multi30k'"),
    ((f"de:multi30k:{MULTI30K}",) * 2, {}, r"names 'de' twice"),
    ((f"de:multi30k:{MULTI30K}",), {"mix_high": ("sw",)},
     r"config\.data\.mix_high names \['sw'\], not in data\.mix_sources \['de'\]"),
], ids=["none", "no_kind", "unknown_kind", "bible_with_a_dir", "no_dir", "twice", "high_unknown"])
def test_mix_sources_errors_name_the_key(tfds_dir, sources, data, match):
  with pytest.raises(ValueError, match=match):
    layouts.mixed_bitext(_mix_config(tfds_dir, *sources, **data))


def test_qrels_by_language_splits_only_fully_prefixed_multilingual_qrels():
  qrels = {"sw/q1": {"d1": 1}, "sw/q2": {"d2": 1}, "en/q1": {"d1": 1}}
  assert layouts.qrels_by_language(qrels) == {"en": {"en/q1": {"d1": 1}},
                                            "sw": {"sw/q1": {"d1": 1}, "sw/q2": {"d2": 1}}}
  assert list(layouts.qrels_by_language(qrels)) == ["en", "sw"]
  assert layouts.qrels_by_language({"sw/q1": {"d1": 1}, "sw/q2": {"d2": 1}}) == {}  # one language
  assert layouts.qrels_by_language({**qrels, "q3": {"d3": 1}}) == {}    # an unprefixed id
  assert layouts.qrels_by_language({**qrels, "/q3": {"d3": 1}}) == {}
  # The inverse of `merge` on its qrels.
  merged = layouts.merge({
      lang: collection_lib.EvalCollection(queries={"q": "text"}, docs={"d": "doc"},
                                          qrels={"q": {"d": 1}}) for lang in ("sw", "en")})
  assert layouts.qrels_by_language(merged.qrels) == {"en": {"en/q": {"en/d": 1}},
                                                    "sw": {"sw/q": {"sw/d": 1}}}
