"""What a job trains and evaluates on (data/sources.py): subsampled collections keep their
judged documents, the files a config names are read, code-switching is configured."""
from optical_jax import config as config_lib
from optical_jax.data import batching
from optical_jax.data import bible
from optical_jax.data import collection as collection_lib
from optical_jax.data import sources


def _collection() -> collection_lib.EvalCollection:
  """Ten documents; q1 and q2 judge documents at the end of the corpus (d1 with grade 0,
  which is still judged) and one absent from it; q3 judges d7."""
  return collection_lib.EvalCollection(
      queries={"q1": "one", "q2": "two", "q3": "three"},
      docs={f"d{i}": f"document {i}" for i in range(10)},
      qrels={"q1": {"d8": 1}, "q2": {"d9": 2, "d1": 0, "absent": 1}, "q3": {"d7": 1}})


def test_subsample_keeps_the_judged_documents_of_the_kept_queries():
  col = _collection()
  sub = sources.subsample(col, max_queries=2, max_docs=4)
  assert list(sub.queries) == ["q1", "q2"]
  assert sub.qrels == {"q1": {"d8": 1}, "q2": {"d9": 2, "d1": 0, "absent": 1}}
  # d1, d8, d9 are judged by a kept query; one more document fills the four, the
  # first unjudged one; d7 is judged only by q3, which was left out. Corpus order.
  assert list(sub.docs) == ["d0", "d1", "d8", "d9"]
  assert all(sub.docs[d] == col.docs[d] for d in sub.docs)
  # Fewer places than judged documents: every judged one stays, nothing else.
  assert list(sources.subsample(col, 2, 2).docs) == ["d1", "d8", "d9"]
  # 0: no limit.
  whole = sources.subsample(col, 0, 0)
  assert (whole.queries, whole.docs, whole.qrels) == (col.queries, col.docs, col.qrels)


def test_load_reads_the_files_a_config_names(tmp_path):
  (tmp_path / "pairs.tsv").write_text("Moni\tHello\nMadzi\tWater\nNyumba\tHouse\n")
  (tmp_path / "queries.tsv").write_text("q1\tMoni\nq2\tMadzi\n")
  (tmp_path / "corpus.tsv").write_text("d1\tHello\nd2\tWater\nd3\tHouse\n")
  (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 1\n")
  c = config_lib.default()
  c.data.update(source="files", format="tsv", path=str(tmp_path / "pairs.tsv"), max_pairs=2)
  c.eval.update(collection="files", queries=str(tmp_path / "queries.tsv"),
                corpus=str(tmp_path / "corpus.tsv"), qrels=str(tmp_path / "qrels.txt"),
                max_queries=1, max_docs=0)
  c.train.batch_size = 2
  src, tgt, col, order = sources.load(c, with_order=True)
  assert (src, tgt) == (["Moni", "Madzi"], ["Hello", "Water"])     # data.max_pairs
  assert col.queries == {"q1": "Moni"} and col.qrels == {"q1": {"d1": 1}}   # eval.max_queries
  assert col.docs == {"d1": "Hello", "d2": "Water", "d3": "House"}
  assert isinstance(order, batching.BatchOrder)
  assert sorted(order.indices(0).tolist()) == [0, 1]    # one epoch of the two pairs
  # Evaluation only: no training data is read, the collection is.
  src, tgt, col = sources.load(c, need_train_data=False)
  assert (src, tgt) == ([], []) and list(col.queries) == ["q1"]
  c.eval.collection = "none"
  assert sources.load(c)[2] is None


def test_load_triples_reads_the_files_a_config_names(tmp_path):
  (tmp_path / "triples.tsv").write_text("what is a dog\ta dog is an animal\ta cat sleeps\n"
                                        "where is paris\tparis is in france\trome is old\n")
  c = config_lib.default()
  c.teacher.update(source="files", format="text", triples=str(tmp_path / "triples.tsv"),
                   max_pairs=1)
  c.eval.collection = "none"
  train, col = sources.load_triples(c)
  assert [(t.query, t.positive, t.negative) for t in train] == [
      ("what is a dog", "a dog is an animal", "a cat sleeps")]
  assert col is None


def test_codeswitcher_is_off_at_rate_zero_and_induced_from_the_bible():
  c = config_lib.default()
  assert sources.codeswitcher(c, ["a"], ["b"]) is None      # rate 0: off
  # Induced from the Bible bitext with the Dice aligner: Mulungu is God.
  pairs = bible.load_bible_pairs()[:3000]
  c.data.codeswitch_rate = 0.5
  c.data.codeswitch_induce_pairs = 3000
  switcher = sources.codeswitcher(c, [p.src for p in pairs], [p.en for p in pairs])
  assert "god" in switcher.dictionary.translations("mulungu")

