"""Evaluation collections (data/collection.py): TSV and BEIR files, and bad input named by
file and line."""
import logging
import re

import pytest

from optical_jax.data import bitext
from optical_jax.data import collection


def test_eval_collection_rejects_judged_query_without_text():
  with pytest.raises(ValueError, match="judged queries have no text"):
    collection.EvalCollection(queries={"q1": "a"}, docs={"d": "b"},
                              qrels={"q1": {"d": 1}, "q2": {"d": 1}})
  col = collection.EvalCollection(queries={"q1": "a"}, docs={"d": "b"}, qrels={"q1": {"d": 1}})
  assert "1 queries, 1 docs, 1 judgements" in repr(col)


def test_read_collection_tsv_and_beir(tmp_path, caplog):
  (tmp_path / "q.tsv").write_text("q1\tMoni\nq2\tMadzi\nq3\tunjudged\n", encoding="utf-8")
  (tmp_path / "c.tsv").write_text("d1\tHello\nd2\tWater\n", encoding="utf-8")
  (tmp_path / "qrels.txt").write_text("q1 0 d1 1\nq2 0 d2 2\nq2 0 d9 1\n", encoding="utf-8")
  with caplog.at_level(logging.INFO):
    col = collection.read_collection(tmp_path / "q.tsv", tmp_path / "c.tsv",
                                     tmp_path / "qrels.txt")
  assert col.queries == {"q1": "Moni", "q2": "Madzi"}  # q3 has no judgements
  assert col.docs == {"d1": "Hello", "d2": "Water"}
  assert col.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d9": 1}}
  assert "1 judged documents are not in" in caplog.text
  (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "Moni"}\n', encoding="utf-8")
  (tmp_path / "c.jsonl").write_text('{"_id": "d1", "title": "T", "text": "Hello"}\n',
                                    encoding="utf-8")
  (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
  col = collection.read_collection(tmp_path / "q.jsonl", tmp_path / "c.jsonl",
                                   tmp_path / "qrels.tsv")
  assert col.docs == {"d1": "T Hello"} and col.qrels == {"q1": {"d1": 1}}
  (tmp_path / "dup.tsv").write_text("d1\ta\nd1\tb\n", encoding="utf-8")
  with pytest.raises(bitext.BitextError, match=r"dup.tsv:2: duplicate id 'd1'"):
    collection.read_collection(tmp_path / "q.tsv", tmp_path / "dup.tsv", tmp_path / "qrels.txt")
  with pytest.raises(ValueError, match="judges 1 queries absent from"):
    collection.read_collection(tmp_path / "q.jsonl", tmp_path / "c.tsv", tmp_path / "qrels.txt")


@pytest.mark.parametrize("name,text,line,why", [
    ("q.tsv", "q1\tMoni\nq2\n", 2, "expected 2 tab-separated columns 'id text', got 1"),
    ("q.tsv", "q1\tMoni\nq2\tMadzi\textra\n", 2,
     "expected 2 tab-separated columns 'id text', got 3"),
    ("q.tsv", "q1\tMoni\n\nq2\t  \n", 3, "empty text"),
    ("q.tsv", "q1\tMoni\n\tMadzi\n", 2, "empty id"),
    ("q.jsonl", '{"_id": "q1", "text": "Moni"}\n{"_id": "q2", "text": \n', 2, "invalid JSON"),
    ("q.jsonl", '{"_id": "q1", "text": "Moni"}\n{"id": "q2", "text": "Madzi"}\n', 2,
     "expected an object with a string '_id'"),
    ("q.jsonl", '["q1", "Moni"]\n', 1, "expected an object"),
], ids=["tsv_one_column", "tsv_three_columns", "tsv_empty_text", "tsv_empty_id",
        "jsonl_bad_json", "jsonl_no_id", "jsonl_not_an_object"])
def test_read_texts_names_file_and_line(tmp_path, name, text, line, why):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  with pytest.raises(bitext.BitextError, match=re.escape(f"{path}:{line}: {why}")):
    collection.read_texts(path)


def test_read_texts_blank_lines_titles_and_empty_files(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text('{"_id": "d1", "title": "", "text": " Hello "}\n\n'
                  '{"_id": "d2", "title": "Water", "text": null}\n', encoding="utf-8")
  assert collection.read_texts(path) == {"d1": "Hello", "d2": "Water"}
  empty = tmp_path / "empty.tsv"
  empty.write_text("\n\n", encoding="utf-8")
  with pytest.raises(bitext.BitextError, match=re.escape(f"no entries in {empty}")):
    collection.read_texts(empty)
  with pytest.raises(FileNotFoundError):
    collection.read_texts(tmp_path / "missing.tsv")
