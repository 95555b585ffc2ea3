"""MS MARCO training triples: both layouts, and their errors."""
import pytest

from optical_jax.data import bitext
from optical_jax.data import triples


def test_text_triples(tmp_path):
  p = tmp_path / "triples.train.small.tsv"
  p.write_text("what is a river\tA river is a stream of water.\tParis is a city.\n\n"
               "capital of malawi\tLilongwe is the capital.\tRivers flow.\n")
  got = triples.read_text_triples(p)
  assert [t.query for t in got] == ["what is a river", "capital of malawi"]
  assert got[1].negative == "Rivers flow." and got[1].origin.endswith(":3")


def test_text_triples_errors_and_skip(tmp_path, caplog):
  p = tmp_path / "t.tsv"
  p.write_text("q\tpos\tneg\nq only\tpos\nq\t\tneg\n")
  with pytest.raises(bitext.BitextError, match=r"t\.tsv:2: expected 3 tab-separated columns"):
    triples.read_text_triples(p)
  got = triples.read_text_triples(p, on_bad_line="skip")
  assert len(got) == 1 and "skipped 2 bad line" in caplog.text
  p.write_bytes(b"q\tpos\tneg\nq\t\xff\tneg\n")
  with pytest.raises(bitext.BitextError, match=r"t\.tsv:2: invalid UTF-8"):
    triples.read_text_triples(p)
  (tmp_path / "empty.tsv").write_text("\n")
  with pytest.raises(bitext.BitextError, match="no triples in"):
    triples.read_text_triples(tmp_path / "empty.tsv")


def test_id_triples_resolve_through_queries_and_collection(tmp_path):
  (tmp_path / "queries.train.tsv").write_text("1\twhat is a river\n2\tcapital of malawi\n")
  (tmp_path / "collection.tsv").write_text("10\tA river is a stream.\n11\tParis.\n"
                                           "12\tLilongwe is the capital.\n")
  (tmp_path / "qidpidtriples.tsv").write_text("1\t10\t11\n2\t12\t10\n2\t12\t99\n")
  args = [tmp_path / n for n in ("qidpidtriples.tsv", "queries.train.tsv", "collection.tsv")]
  with pytest.raises(bitext.BitextError,
                     match=r"qidpidtriples\.tsv:3: passage id '99' is not in .*collection\.tsv"):
    triples.read_id_triples(*args)
  got = triples.read_id_triples(*args, on_bad_line="skip")
  assert [(t.query, t.positive, t.negative) for t in got] == [
      ("what is a river", "A river is a stream.", "Paris."),
      ("capital of malawi", "Lilongwe is the capital.", "A river is a stream.")]
  with pytest.raises(FileNotFoundError):
    triples.read_id_triples(tmp_path / "nope.tsv", *args[1:])
