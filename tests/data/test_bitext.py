"""Bitext readers (data/bitext.py): good files parse, every bad line is named by file and line."""
import logging
import pathlib

import pytest

from optical_jax.data import bitext


FIX = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "bitext"


def _pairs(b):
  return [(p.src, p.tgt) for p in b]


# ------------------------------------------------------------------ good input


def test_tsv_good():
  b = bitext.read_tsv(FIX / "good.tsv")
  # The blank line 3 is ignored; sides are stripped, the CRLF ending dropped.
  assert _pairs(b) == [("Mulungu ndi wabwino.", "God is good."),
                       ("Moni, muli bwanji?", "Hello, how are you?"),
                       ("Ndatopa kwambiri", "I am very tired")]
  assert [p.origin for p in b] == [f"{FIX / 'good.tsv'}:{i}" for i in (1, 2, 4)]
  assert b.skipped == {} and b.num_skipped == 0 and len(b) == 3
  assert b.srcs[0] == "Mulungu ndi wabwino." and b.tgts[-1] == "I am very tired"


def test_tsv_header_and_columns():
  b = bitext.read_tsv(FIX / "header3.tsv", src_column=1, tgt_column=2, has_header=True)
  assert _pairs(b) == [("Madzi", "Water"), ("Moto", "Fire")]
  assert b[0].origin.endswith("header3.tsv:2")
  swapped = bitext.read_tsv(FIX / "header3.tsv", src_column=2, tgt_column=1, has_header=True)
  assert _pairs(swapped)[0] == ("Water", "Madzi")


def test_tsv_bom_is_not_text(tmp_path):
  path = tmp_path / "bom.tsv"
  path.write_bytes("\ufeffMadzi\tWater\n".encode("utf-8"))
  assert _pairs(bitext.read_tsv(path)) == [("Madzi", "Water")]


def test_jsonl_good_and_custom_keys(tmp_path):
  assert _pairs(bitext.read_jsonl(FIX / "good.jsonl")) == [
      ("Madzi", "Water"), ("Dziko lapansi", "The earth")]
  path = tmp_path / "k.jsonl"
  path.write_text('{"ny": "Moto", "en": "Fire", "n": 1}\n', encoding="utf-8")
  assert _pairs(bitext.read_jsonl(path, src_key="ny", tgt_key="en")) == [("Moto", "Fire")]


def test_parallel_good():
  b = bitext.read_parallel(FIX / "moses.ny", FIX / "moses.en")
  assert _pairs(b) == [("Madzi", "Water"), ("Moto", "Fire"), ("Dziko", "Earth")]
  assert b[2].origin == f"{FIX / 'moses.ny'}:3"


def test_parallel_splits_on_newline_only(tmp_path):
  # str.splitlines would also split at U+2028 and shift every later line.
  (tmp_path / "a").write_text("one\u2028still one\ntwo\n", encoding="utf-8")
  (tmp_path / "b").write_text("1\n2\n", encoding="utf-8")
  assert _pairs(bitext.read_parallel(tmp_path / "a", tmp_path / "b")) == [
      ("one\u2028still one", "1"), ("two", "2")]


def test_read_bitext_dispatch():
  tsv = bitext.read_bitext(bitext.BitextSpec(format="tsv", path=str(FIX / "good.tsv")))
  assert len(tsv) == 3
  par = bitext.read_bitext({"format": "parallel", "src_path": str(FIX / "moses.ny"),
                            "tgt_path": str(FIX / "moses.en")})
  assert len(par) == 3
  js = bitext.read_bitext(bitext.BitextSpec(format="jsonl", path=str(FIX / "bad.jsonl"),
                                            src_key="ny", tgt_key="en", on_bad_line="skip"))
  assert _pairs(js) == [("Madzi", "Water"), ("Mvula", "Rain")]
  with pytest.raises(ValueError, match="unknown bitext format 'csv'"):
    bitext.read_bitext(bitext.BitextSpec(format="csv", path="x"))
  with pytest.raises(ValueError, match="needs src_path and tgt_path"):
    bitext.read_bitext(bitext.BitextSpec(format="parallel"))
  with pytest.raises(ValueError, match="on_bad_line"):
    bitext.read_bitext(bitext.BitextSpec(path=str(FIX / "good.tsv"), on_bad_line="ignore"))


# ------------------------------------------------------------------- bad input


def test_tsv_wrong_columns_names_file_and_line():
  path = FIX / "wrong_columns.tsv"
  with pytest.raises(bitext.BitextError) as e:
    bitext.read_tsv(path)
  assert str(e.value).startswith(f"{path}:2: expected 2 tab-separated columns, got 3")
  assert "num_columns" in str(e.value)  # the hint for wider files
  # Declaring the width makes line 2 good and line 1 bad.
  with pytest.raises(bitext.BitextError, match=r"wrong_columns.tsv:1: expected 3"):
    bitext.read_tsv(path, num_columns=3)


def test_tsv_skip_counts_and_logs(caplog):
  path = FIX / "wrong_columns.tsv"
  with caplog.at_level(logging.WARNING):
    b = bitext.read_tsv(path, on_bad_line="skip")
  assert _pairs(b) == [("Madzi", "Water"), ("Dziko", "Earth")]
  assert b.skipped == {"wrong_columns": 2} and b.num_skipped == 2
  assert "skipped 2 bad line(s) (wrong_columns=2)" in caplog.text
  assert f"{path}:2:" in caplog.text  # the first bad line, for finding it


def test_empty_side():
  path = FIX / "empty_side.tsv"
  with pytest.raises(bitext.BitextError, match=r"empty_side.tsv:3: empty source \(column 0\)"):
    bitext.read_tsv(path)
  b = bitext.read_tsv(path, on_bad_line="skip")
  assert _pairs(b) == [("Madzi", "Water"), ("Moto", "Fire")]
  assert b.skipped == {"empty_side": 2}


def test_invalid_utf8_names_line(tmp_path):
  path = tmp_path / "latin1.tsv"
  path.write_bytes(b"Madzi\tWater\nMoto\tFire\nCaf\xe9\tCoffee\nDziko\tEarth\n")
  with pytest.raises(bitext.BitextError, match=r"latin1.tsv:3: invalid UTF-8 at byte 3"):
    bitext.read_tsv(path)
  b = bitext.read_tsv(path, on_bad_line="skip")
  assert len(b) == 3 and b.skipped == {"invalid_utf8": 1}
  moses = tmp_path / "latin1.en"
  moses.write_bytes(b"a\nb\n\xff\xfe\nd\n")
  (tmp_path / "ok.ny").write_bytes(b"1\n2\n3\n4\n")
  with pytest.raises(bitext.BitextError, match=r"latin1.en:3: invalid UTF-8"):
    bitext.read_parallel(tmp_path / "ok.ny", moses)


def test_jsonl_bad_lines():
  path = FIX / "bad.jsonl"
  with pytest.raises(bitext.BitextError, match=r"bad.jsonl:1: no key 'src'"):
    bitext.read_jsonl(path)
  with pytest.raises(bitext.BitextError, match=r"bad.jsonl:2: invalid JSON"):
    bitext.read_jsonl(path, src_key="ny", tgt_key="en")
  b = bitext.read_jsonl(path, src_key="ny", tgt_key="en", on_bad_line="skip")
  # 2: truncated, 3: no 'ny', 4: a number, 5: an array; 6 is blank.
  assert b.skipped == {"invalid_json": 2, "missing_key": 1, "not_a_string": 1}
  assert [p.origin.rsplit(":", 1)[1] for p in b] == ["1", "7"]


def test_parallel_length_mismatch_is_always_an_error():
  for mode in ("error", "skip"):
    with pytest.raises(bitext.BitextError) as e:
      bitext.read_parallel(FIX / "moses.ny", FIX / "short.en", on_bad_line=mode)
    msg = str(e.value)
    assert f"{FIX / 'moses.ny'} has 3 lines" in msg and f"{FIX / 'short.en'} has 2" in msg


def test_parallel_empty_line_names_its_file():
  with pytest.raises(bitext.BitextError, match=r"gap.ny:2: empty line"):
    bitext.read_parallel(FIX / "gap.ny", FIX / "moses.en")
  b = bitext.read_parallel(FIX / "gap.ny", FIX / "moses.en", on_bad_line="skip")
  assert _pairs(b) == [("Madzi", "Water"), ("Dziko", "Earth")]
  assert b.skipped == {"empty_side": 1}


def test_no_pairs_is_an_error(tmp_path):
  empty = tmp_path / "empty.tsv"
  empty.write_bytes(b"")
  with pytest.raises(bitext.BitextError, match=f"no pairs in {empty}"):
    bitext.read_tsv(empty)
  blank = tmp_path / "blank.jsonl"
  blank.write_bytes(b"\n\n")
  with pytest.raises(bitext.BitextError, match="no pairs in"):
    bitext.read_jsonl(blank)
  bad = tmp_path / "allbad.tsv"
  bad.write_bytes(b"a\nb\n")
  with pytest.raises(bitext.BitextError, match=r"no pairs in .*wrong_columns=2"):
    bitext.read_tsv(bad, on_bad_line="skip")
  with pytest.raises(bitext.BitextError, match="no pairs in"):
    bitext.read_parallel(empty, empty)


def test_missing_file_names_path(tmp_path):
  missing = tmp_path / "nope.tsv"
  with pytest.raises(FileNotFoundError, match="nope.tsv"):
    bitext.read_tsv(missing)
  with pytest.raises(FileNotFoundError, match="nope.tsv"):
    bitext.read_parallel(FIX / "moses.ny", missing)


def test_bad_settings():
  with pytest.raises(ValueError, match="distinct"):
    bitext.read_tsv(FIX / "good.tsv", src_column=1, tgt_column=1)
  with pytest.raises(ValueError, match="leaves out column 2"):
    bitext.read_tsv(FIX / "good.tsv", tgt_column=2, num_columns=2)
