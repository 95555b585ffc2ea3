"""TREC run and qrels files (data/trec.py): round trips, and bad lines named by file and line."""
import logging

import numpy as np
import pytest

from optical_jax.data import trec


def test_run_round_trip(tmp_path):
  run = {"q1": {"a": np.float64(0.1) + 0.2, "b": 3.0, "c": -1e-300},
         "q2": {"z": 1.0, "y": 1.0}}
  path = tmp_path / "sub" / "run.txt"
  trec.write_run(path, run, tag="mine")
  assert trec.read_run(path) == run
  lines = [line.split() for line in path.read_text().splitlines()]
  assert [(l[0], l[2], l[3], l[5]) for l in lines] == [
      ("q1", "b", "1", "mine"), ("q1", "a", "2", "mine"), ("q1", "c", "3", "mine"),
      ("q2", "z", "1", "mine"), ("q2", "y", "2", "mine")]  # tie: docid descending
  assert not list(tmp_path.glob("**/*.tmp"))


def test_write_run_rejects_bad_values(tmp_path):
  with pytest.raises(ValueError, match="whitespace"):
    trec.write_run(tmp_path / "r", {"q1": {"d 1": 1.0}})
  with pytest.raises(ValueError, match="non-finite"):
    trec.write_run(tmp_path / "r", {"q1": {"d1": float("nan")}})
  assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


def test_qrels_formats_agree(tmp_path):
  trec_path = tmp_path / "qrels.trec"
  trec_path.write_text("q1 0 d1 2\nq1 0 d2 0\n\nq2 0 d1 1\n")
  tsv = tmp_path / "qrels.tsv"
  tsv.write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td1\t1\n")
  expected = {"q1": {"d1": 2, "d2": 0}, "q2": {"d1": 1}}
  assert trec.read_qrels(trec_path) == trec.read_qrels(tsv) == expected


@pytest.mark.parametrize("text, line, why", [
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0\n", 2, "6 columns"),
    ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 abc t\n", 2, "score 'abc' is not a number"),
    ("q1 Q0 d1 1 nan t\n", 1, "not finite"),
    ("q1 Q0 d1 x 2.0 t\n", 1, "rank 'x'"),
    ("q1 Q0 d1 1 2.0 t\n\nq1 Q0 d1 2 1.0 t\n", 3, "duplicate document 'd1'"),
])
def test_read_run_names_file_and_line(tmp_path, text, line, why):
  path = tmp_path / "run.txt"
  path.write_text(text)
  with pytest.raises(ValueError, match=f"run.txt:{line}: .*{why}"):
    trec.read_run(path)


def test_read_run_bad_utf8(tmp_path):
  path = tmp_path / "run.txt"
  path.write_bytes(b"q1 Q0 d1 1 2.0 t\nq1 Q0 d\xff 2 1.0 t\n")
  with pytest.raises(ValueError, match="run.txt:2: invalid UTF-8"):
    trec.read_run(path)


def test_read_run_skip_counts(tmp_path, caplog):
  path = tmp_path / "run.txt"
  path.write_bytes(b"q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 oops t\nq1 Q0 d1 3 9.0 t\n"
                   b"q1 Q0 d\xff 4 1.0 t\nq1 Q0 d3 5 0.5 t\nshort line\n")
  with caplog.at_level(logging.WARNING, logger="optical_jax.data.trec"):
    run = trec.read_run(path, on_bad_line="skip")
  assert run == {"q1": {"d1": 2.0, "d3": 0.5}}  # the duplicate keeps the first
  assert "skipped 4 bad line(s)" in caplog.text and "run.txt:2:" in caplog.text


def test_read_qrels_errors_and_skip(tmp_path, caplog):
  path = tmp_path / "qrels.txt"
  path.write_text("q1 0 d1 1\nq1 0 d2 high\nq1 0 d1 2\nq1 0 d3\n")
  with pytest.raises(ValueError, match="qrels.txt:2: relevance grade 'high'"):
    trec.read_qrels(path)
  path.write_text("q1 0 d1 1\nq1 0 d1 2\n")
  with pytest.raises(ValueError, match="qrels.txt:2: duplicate document"):
    trec.read_qrels(path)
  path.write_text("q1 0 d1 1\nq1 0 d2 high\nq1 0 d1 2\nq1 d3\n")
  with caplog.at_level(logging.WARNING, logger="optical_jax.data.trec"):
    assert trec.read_qrels(path, on_bad_line="skip") == {"q1": {"d1": 1}}
  assert "skipped 3 bad line(s)" in caplog.text
  with pytest.raises(ValueError, match="on_bad_line"):
    trec.read_qrels(path, on_bad_line="ignore")
