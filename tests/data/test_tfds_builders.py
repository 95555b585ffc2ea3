"""TFDS builders: prepared from fixtures in the published layouts, as array_record,
with no network and no TensorFlow; bad input fails naming file and line."""
import gzip
import http.server
import importlib.util
import logging
import pathlib
import shutil
import socket
import sys
import threading
import time

import pytest

from optical_jax.data import layouts
from optical_jax.data import bible
from optical_jax.data import bitext as bitext_lib
from optical_jax.data import tfds_builders as tb
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import bible as bible_builder
from optical_jax.data.tfds_builders import bitext as bitext_builder
from optical_jax.data.tfds_builders import miracl, mlqa, multi30k
from optical_jax.data.tfds_builders import network

BENCH = layouts.SAMPLES
FAST_S = 5.0  # "fails within seconds": the offline paths must beat this easily


@pytest.fixture(autouse=True)
def offline_and_no_tensorflow(monkeypatch):
  """No test may reach the network, and none may import TensorFlow."""
  monkeypatch.setenv("OPTICAL_JAX_OFFLINE", "1")
  yield
  assert "tensorflow" not in sys.modules


def texts(source, key):
  return [_base.text(ex[key]) for ex in source]


def sizes(sources):
  return {split: len(source) for split, source in sources.items()}


def copy_fixture(name, tmp_path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(BENCH / name, tmp_path / "manual" / name))


def not_prepared(data_dir) -> bool:
  return not list(pathlib.Path(data_dir).rglob("dataset_info.json"))


def write_gz(path, data: bytes):
  with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
    g.write(data)


# ------------------------------------------------------------------ environment


def test_tensorflow_is_not_installed():
  if importlib.util.find_spec("tensorflow") is not None:
    pytest.skip("TensorFlow is installed here, so this run cannot prove it is not needed")
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401


def test_fixtures_are_small():
  total = sum(p.stat().st_size for p in BENCH.rglob("*") if p.is_file())
  assert total < 200_000


def test_load_names_and_unknown(tmp_path):
  full = tb.load("optical_bitext", "tsv", tmp_path, BENCH / "bitext")
  assert sizes(full) == {"train": 4, "test": 2}
  assert len(tb.load("bitext", "tsv", tmp_path, None, split="test")) == 2  # reuses the copy
  with pytest.raises(ValueError, match="unknown builder 'squad'"):
    tb.load("squad", None, tmp_path)


# ------------------------------------------------------------------ network check


@pytest.fixture()
def http_server():
  """A local server answering HEAD /ok with 200 and anything else with 404."""

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
      self.send_response(200 if self.path == "/ok" else 404)
      self.end_headers()

    def log_message(self, *args):
      pass

  server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
  yield f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


@pytest.fixture()
def silent_server():
  """Accepts TCP connections (the kernel's backlog) and never answers."""
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  sock.listen(8)
  yield f"http://127.0.0.1:{sock.getsockname()[1]}/x"
  sock.close()


def test_offline_env_vars(monkeypatch, http_server):
  assert "OPTICAL_JAX_OFFLINE=1" in tb.offline_reason(f"{http_server}/ok")
  monkeypatch.delenv("OPTICAL_JAX_OFFLINE")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  assert "HF_HUB_OFFLINE=1" in tb.offline_reason("https://huggingface.co/datasets/x")
  # The Hub's variable says nothing about other hosts.
  assert tb.offline_reason(f"{http_server}/ok") is None
  monkeypatch.setenv("OPTICAL_JAX_OFFLINE", "0")
  assert tb.is_online(f"{http_server}/ok")


def test_network_check_needs_a_good_answer(monkeypatch, http_server, silent_server):
  monkeypatch.delenv("OPTICAL_JAX_OFFLINE")
  assert "HTTP 404" in tb.offline_reason(f"{http_server}/missing")
  start = time.monotonic()
  reason = tb.offline_reason(silent_server, timeout=0.5)
  assert time.monotonic() - start < 1.5
  # Whichever comes first: the thread's deadline or the socket's timeout.
  assert reason in ("no answer from 127.0.0.1 within 0.5 s",
                    "cannot reach 127.0.0.1 (timed out)")
  with pytest.raises(tb.OfflineError, match="put them in /somewhere"):
    tb.require_online(silent_server, "put them in /somewhere", timeout=0.2)


# ------------------------------------------------------------------ bitext


@pytest.mark.parametrize("config,splits,first_origin", [
    ("tsv", {"train": 4, "test": 2}, "train.tsv:1"),
    ("parallel", {"train": 3}, "train.src:1"),
    ("jsonl", {"train": 3}, "train.jsonl:1"),
])
def test_bitext_formats(tmp_path, config, splits, first_origin):
  sources = tb.load("bitext", config, tmp_path, BENCH / "bitext")
  assert sizes(sources) == splits
  train = sources["train"]
  assert texts(train, "src")[:2] == ["Mulungu ndi wabwino.", "Ndili bwino."]
  assert texts(train, "tgt")[:2] == ["God is good.", "I am well."]
  assert texts(train, "origin")[0].endswith(f"samples/bitext/{first_origin}")
  if config == "jsonl":  # the blank third line is skipped, the origin keeps line 4
    assert texts(train, "origin")[2].endswith("train.jsonl:4")


def test_bitext_skip_counts_are_kept(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "train.tsv").write_bytes(b"a\tA\nb\tB\tx\n\xff\tC\nd\tD\n")
  config = bitext_builder.BitextConfig(name="tsv_skip", format="tsv", on_bad_line="skip")
  train = tb.load("bitext", config, tmp_path / "data", manual, split="train")
  assert texts(train, "src") == ["a", "d"]
  reopened = tb.builder("bitext", "tsv_skip", tmp_path / "data")  # from the prepared files
  assert reopened.info.metadata["skipped"] == {"train": {"invalid_utf8": 1,
                                                          "wrong_columns": 1}}


@pytest.mark.parametrize("config,files,error,match", [
    ("tsv", {"train.tsv": b"a\tA\n\xc3(\tB\n"}, bitext_lib.BitextError,
     r"train\.tsv:2: invalid UTF-8"),
    ("tsv", {"train.tsv": b"a\tA\nb\tB\tC\n"}, bitext_lib.BitextError,
     r"train\.tsv:2: expected 2 tab-separated columns, got 3"),
    ("tsv", {"train.tsv": b"\n"}, bitext_lib.BitextError, r"no pairs in .*train\.tsv"),
    ("parallel", {"train.src": b"a\nb\n", "train.tgt": b"A\n"}, bitext_lib.BitextError,
     r"differ in length: .*train\.src has 2 lines, .*train\.tgt has 1"),
    ("parallel", {"train.src": b"a\n"}, _base.ManualDataError, r"missing .*\n.*train\.tgt"),
    ("jsonl", {"test.jsonl": b'{"src": "a", "tgt": "A"}\n{"src": 1, "tgt": "B"}\n'},
     bitext_lib.BitextError, r"test\.jsonl:2: 'src' is int, not a string"),
    ("jsonl", {"other.txt": b"x\n"}, _base.ManualDataError,
     r"none of the splits[\s\S]*config jsonl"),
])
def test_bitext_bad_input(tmp_path, config, files, error, match):
  manual = tmp_path / "manual"
  manual.mkdir()
  for name, data in files.items():
    (manual / name).write_bytes(data)
  with pytest.raises(error, match=match):
    tb.load("bitext", config, tmp_path / "data", manual)
  assert not_prepared(tmp_path / "data")


# ------------------------------------------------------------------ MIRACL


@pytest.mark.parametrize("lang,queries,qrels,corpus", [
    ("sw", {"train": 3, "dev": 3}, {"train": 5, "dev": 3}, 6),
    ("te", {"train": 2, "dev": 1}, {"train": 3, "dev": 1}, 4),  # two corpus shards
    ("yo", {"dev": 2}, {"dev": 3}, 3),  # a dev-only language
])
def test_miracl_prepares(tmp_path, lang, queries, qrels, corpus):
  manual = BENCH / "miracl"
  assert sizes(tb.load("miracl_queries", lang, tmp_path, manual)) == queries
  assert sizes(tb.load("miracl_qrels", lang, tmp_path, manual)) == qrels
  docs = tb.load("miracl_corpus", lang, tmp_path, manual)
  assert sizes(docs) == {"corpus": corpus}
  if lang == "te":  # shard order: docs-0 then docs-1
    assert texts(docs["corpus"], "docid") == ["11#0", "22#0", "22#1", "33#0"]


def test_miracl_fields_and_collection(tmp_path):
  manual = BENCH / "miracl"
  dev = tb.load("miracl_queries", "sw", tmp_path, manual, split="dev")
  assert dev[0] == {"qid": b"10", "text": b"Kiswahili kinazungumzwa wapi?"}
  judged = tb.load("miracl_qrels", "sw", tmp_path, manual, split="train")
  assert [(_base.text(r["qid"]), _base.text(r["docid"]), int(r["relevance"]))
          for r in judged][:2] == [("0", "101#0", 1), ("0", "101#1", 0)]
  coll = miracl.miracl_collection("sw", "dev", tmp_path, manual)
  assert list(coll.queries) == ["10", "11"]  # '12' has no judgements
  assert coll.qrels == {"10": {"404#0": 1, "101#0": 0}, "11": {"303#1": 1}}
  assert len(coll.docs) == 6
  assert coll.docs["404#0"] == "Kiswahili Kiswahili kinazungumzwa Afrika Mashariki."
  yo = miracl.miracl_collection("yo", "dev", tmp_path, manual, with_title=False)
  assert yo.docs["9#0"] == "Ọ̀ṣun jẹ́ odò kan ní ilẹ̀ Yorùbá."
  assert yo.qrels["41"] == {"8#0": 1, "7#0": 0}


def test_miracl_other_layouts(tmp_path):
  """Flat topics/ and qrels/ in manual_dir; git clones of both repos; gunzipped shards."""
  src = BENCH / "miracl"
  flat = tmp_path / "flat"
  shutil.copytree(src / "miracl-v1.0-sw", flat)
  shutil.copytree(src / "miracl-corpus-v1.0-sw", flat / "miracl-corpus-v1.0-sw")
  clones = tmp_path / "clones"
  shutil.copytree(src / "miracl-v1.0-sw", clones / "miracl" / "miracl-v1.0-sw")
  shard_dir = clones / "miracl-corpus" / "miracl-corpus-v1.0-sw"
  shard_dir.mkdir(parents=True)
  with gzip.open(src / "miracl-corpus-v1.0-sw" / "docs-0.jsonl.gz") as f:
    (shard_dir / "docs-0.jsonl").write_bytes(f.read())
  for i, manual in enumerate((flat, clones)):
    data_dir = tmp_path / f"data{i}"
    assert sizes(tb.load("miracl_queries", "sw", data_dir, manual)) == {"train": 3, "dev": 3}
    assert sizes(tb.load("miracl_corpus", "sw", data_dir, manual)) == {"corpus": 6}


def _edit(path, fn):
  path = pathlib.Path(path)
  if path.suffix == ".gz":
    with gzip.open(path) as f:
      data = f.read()
    write_gz(path, fn(data))
  else:
    path.write_bytes(fn(path.read_bytes()))


@pytest.mark.parametrize("name,rel,edit,error,match", [
    ("miracl_qrels", "miracl-v1.0-sw/qrels/qrels.miracl-v1.0-sw-dev.tsv",
     lambda d: d.replace(b"10\tQ0\t101#0\t0", b"10\t101#0"), ValueError,
     r"qrels\.miracl-v1\.0-sw-dev\.tsv:2: expected 4 columns"),
    ("miracl_qrels", "miracl-v1.0-sw/qrels/qrels.miracl-v1.0-sw-train.tsv",
     lambda d: d.replace(b"\t1\n", b"\tyes\n", 1), ValueError,
     r"qrels\.miracl-v1\.0-sw-train\.tsv:1: relevance grade 'yes' is not an integer"),
    ("miracl_queries", "miracl-v1.0-sw/topics/topics.miracl-v1.0-sw-train.tsv",
     lambda d: d + b"1\tduplicate\n", bitext_lib.BitextError,
     r"topics\.miracl-v1\.0-sw-train\.tsv:4: duplicate id '1'"),
    ("miracl_queries", "miracl-v1.0-sw/topics/topics.miracl-v1.0-sw-dev.tsv",
     lambda d: d.replace("wapi".encode(), b"\xff"), bitext_lib.BitextError,
     r"topics\.miracl-v1\.0-sw-dev\.tsv:1: invalid UTF-8"),
    ("miracl_corpus", "miracl-corpus-v1.0-sw/docs-0.jsonl.gz",
     lambda d: d.replace(b'"202#0"', b"202#0"), bitext_lib.BitextError,
     r"docs-0\.jsonl\.gz:3: invalid JSON"),
    ("miracl_corpus", "miracl-corpus-v1.0-sw/docs-0.jsonl.gz",
     lambda d: d.replace(b'"202#0"', b'"101#0"'), bitext_lib.BitextError,
     r"docs-0\.jsonl\.gz:3: duplicate docid '101#0'"),
    ("miracl_corpus", "miracl-corpus-v1.0-sw/docs-0.jsonl.gz",
     lambda d: d.replace(b'"text": "Ni ziwa', b'"body": "Ni ziwa'), bitext_lib.BitextError,
     r"docs-0\.jsonl\.gz:5: no key 'text'"),
    ("miracl_corpus", "miracl-corpus-v1.0-sw/docs-0.jsonl.gz", lambda d: b"",
     bitext_lib.BitextError, r"no examples in .*docs-0\.jsonl\.gz"),
])
def test_miracl_bad_input(tmp_path, name, rel, edit, error, match):
  manual = copy_fixture("miracl", tmp_path)
  _edit(manual / rel, edit)
  with pytest.raises(error, match=match):
    tb.load(name, "sw", tmp_path / "data", manual)
  assert not_prepared(tmp_path / "data")


def test_miracl_corrupt_gzip(tmp_path):
  manual = copy_fixture("miracl", tmp_path)
  shard = manual / "miracl-corpus-v1.0-sw" / "docs-0.jsonl.gz"
  shard.write_bytes(shard.read_bytes()[:-20])  # truncated download
  with pytest.raises(bitext_lib.BitextError, match=r"docs-0\.jsonl\.gz:\d+: corrupt gzip"):
    tb.load("miracl_corpus", "sw", tmp_path / "data", manual)


def test_miracl_missing_shard_and_partial_files(tmp_path):
  manual = copy_fixture("miracl", tmp_path)
  (manual / "miracl-corpus-v1.0-te" / "docs-1.jsonl.gz").unlink()
  with pytest.raises(_base.ManualDataError,
                     match=r"miracl-corpus-v1\.0-te/docs-1\.jsonl\.gz[\s\S]*found shards \[0\]"):
    tb.load("miracl_corpus", "te", tmp_path / "data", manual)
  (manual / "miracl-v1.0-sw" / "topics" / "topics.miracl-v1.0-sw-dev.tsv").unlink()
  # Part of the files is there: named as missing, no download tried (even online).
  with pytest.raises(_base.ManualDataError, match=r"topics\.miracl-v1\.0-sw-dev\.tsv"):
    tb.load("miracl_queries", "sw", tmp_path / "data", manual)


@pytest.mark.parametrize("name", ["miracl_queries", "miracl_qrels", "miracl_corpus"])
def test_miracl_offline_fails_fast(tmp_path, name):
  manual = tmp_path / "empty"
  start = time.monotonic()
  with pytest.raises(tb.OfflineError) as info:
    tb.load(name, "sw", tmp_path / "data", manual)
  assert time.monotonic() - start < FAST_S
  message = str(info.value)
  assert "OPTICAL_JAX_OFFLINE=1" in message and str(manual) in message
  expected = {"miracl_queries": "miracl-v1.0-sw/topics/topics.miracl-v1.0-sw-train.tsv",
              "miracl_qrels": "miracl-v1.0-sw/qrels/qrels.miracl-v1.0-sw-dev.tsv",
              "miracl_corpus": "miracl-corpus-v1.0-sw/docs-0.jsonl.gz"}[name]
  assert expected in message
  assert not_prepared(tmp_path / "data")


def test_miracl_unreachable_hub_fails_fast(tmp_path, monkeypatch, silent_server):
  """No env var: the real check, against a host that never answers."""
  monkeypatch.delenv("OPTICAL_JAX_OFFLINE")
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.setattr(miracl, "HUB", silent_server.rsplit("/", 1)[0])
  monkeypatch.setattr(network, "NETWORK_TIMEOUT_S", 0.5)
  start = time.monotonic()
  with pytest.raises(tb.OfflineError, match=r"127\.0\.0\.1 (within 0\.5 s|\(timed out\))"):
    tb.load("miracl_queries", "yo", tmp_path / "data", tmp_path / "empty")
  assert time.monotonic() - start < 0.5 + FAST_S


def test_miracl_urls():
  assert miracl.annotation_url("sw", "topics/topics.miracl-v1.0-sw-dev.tsv") == (
      "https://huggingface.co/datasets/miracl/miracl/resolve/main/miracl-v1.0-sw/topics/"
      "topics.miracl-v1.0-sw-dev.tsv")
  assert miracl.corpus_url("en", 65) == (
      "https://huggingface.co/datasets/miracl/miracl-corpus/resolve/main/"
      "miracl-corpus-v1.0-en/docs-65.jsonl.gz")
  configs = {c.name: c for c in miracl.OpticalMiraclQueries.BUILDER_CONFIGS}
  assert len(configs) == 18 and configs["de"].splits == ("dev",)
  assert configs["en"].num_shards == 66


# ------------------------------------------------------------------ MLQA


def test_mlqa_prepares(tmp_path):
  sources = tb.load("mlqa", "en-de", tmp_path, BENCH / "mlqa")
  assert sizes(sources) == {"dev": 5, "test": 2}
  first = sources["dev"][0]
  assert _base.text(first["question"]) == "What is the capital of Germany?"
  assert _base.text(first["context"]).startswith("Berlin ist die Hauptstadt")
  assert _base.text(first["title"]) == "Berlin"
  assert [_base.text(t) for t in first["answers"]["text"]] == ["Berlin"]
  assert list(first["answers"]["answer_start"]) == [0]
  # The passage repeated in the second article keeps its first id.
  assert texts(sources["dev"], "context_id") == ["0.0", "0.0", "0.1", "1.0", "0.0"]


def test_mlqa_collection(tmp_path):
  coll = mlqa.mlqa_collection("en", "de", "dev", tmp_path, BENCH / "mlqa")
  assert (len(coll.queries), len(coll.docs)) == (5, 3)
  assert all(len(j) == 1 for j in coll.qrels.values())
  qid = next(iter(coll.queries))
  assert coll.queries[qid] == "What is the capital of Germany?"
  assert coll.docs[next(iter(coll.qrels[qid]))].startswith("Berlin ist")
  back = mlqa.mlqa_collection("de", "en", "test", tmp_path, BENCH / "mlqa")
  assert list(back.queries.values()) == ["Was ist die Hauptstadt Bayerns?",
                                         "Wann wurde das Brandenburger Tor gebaut?"]
  assert list(back.docs.values())[0] == "Munich is the capital of Bavaria."
  # Question ids are shared by the translations of a question.
  assert set(mlqa.mlqa_collection("de", "en", "dev", tmp_path, BENCH / "mlqa").queries) == set(
      coll.queries)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d[:-10], r"dev-context-de-question-en\.json:1:\d+: invalid JSON"),
    (lambda d: d.replace(b'"question": "How many', b'"q": "How many'),
     r"dev-context-de-question-en\.json: data\[0\]\.paragraphs\[0\]\.qas\[1\]: 'question' is "
     r"NoneType"),
    (lambda d: d.replace(b'"context": "Das Brandenburger', b'"context": 7, "x": "'),
     r"data\[0\]\.paragraphs\[1\]: 'context' is int"),
    (lambda d: d.replace("Nordsee".encode(), b"\xff"), r"dev-context-de-question-en\.json:1: "
                                                       r"invalid UTF-8"),
    (lambda d: b'{"data": [], "version": 1.0}', r"no examples in .*dev-context-de-question-en"),
])
def test_mlqa_bad_input(tmp_path, edit, match):
  manual = copy_fixture("mlqa", tmp_path)
  _edit(manual / "MLQA_V1" / "dev" / "dev-context-de-question-en.json", edit)
  with pytest.raises(bitext_lib.BitextError, match=match):
    tb.load("mlqa", "en-de", tmp_path / "data", manual)
  assert not_prepared(tmp_path / "data")


def test_mlqa_offline_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(tb.OfflineError) as info:
    tb.load("mlqa", "ar-hi", tmp_path / "data", BENCH / "mlqa")
  assert time.monotonic() - start < FAST_S
  for name in ("MLQA_V1/dev/dev-context-hi-question-ar.json",
               "MLQA_V1/test/test-context-hi-question-ar.json", mlqa.URL):
    assert name in str(info.value)


def test_mlqa_catalog_builder(tmp_path, monkeypatch, http_server):
  start = time.monotonic()
  with pytest.raises(tb.OfflineError, match="optical_mlqa builder with config 'en-en'"):
    mlqa.load_catalog("en", tmp_path)
  assert time.monotonic() - start < FAST_S
  # Online (a stand-in host) but without TensorFlow: TFDS could not unzip the download.
  monkeypatch.delenv("OPTICAL_JAX_OFFLINE")
  monkeypatch.setattr(mlqa, "URL", f"{http_server}/ok")
  if importlib.util.find_spec("tensorflow") is None:
    with pytest.raises(ImportError, match="TensorFlow, which is not installed"):
      mlqa.load_catalog("en", tmp_path)
  # It can still be built (not prepared) offline: TFDS's own `mlqa`, no TensorFlow.
  catalog = mlqa.catalog_builder("en", tmp_path)
  assert catalog.name == "mlqa" and catalog.builder_config.name == "en"
  assert not_prepared(tmp_path)


# ------------------------------------------------------------------ Multi30k


def test_multi30k_prepares(tmp_path, caplog):
  manual = BENCH / "multi30k"
  en_de = tb.load("multi30k", "en-de", tmp_path, manual)
  assert sizes(en_de) == {"train": 5, "val": 3, "test_2016_flickr": 3, "test_2017_mscoco": 2}
  val = en_de["val"]  # gunzipped files
  assert texts(val, "src")[1] == "Two people walk on the beach."
  assert texts(val, "tgt")[1] == "Zwei Menschen gehen am Strand spazieren."
  assert [int(ex["line"]) for ex in val] == [0, 1, 2]
  assert texts(en_de["train"], "origin")[2].endswith("data/task1/raw/train.en.gz:3")
  with caplog.at_level(logging.WARNING):
    fr_en = tb.load("multi30k", "fr-en", tmp_path, manual)
  assert sizes(fr_en) == {"train": 5, "val": 3, "test_2016_flickr": 3}
  assert "test_2017_mscoco.fr: split left out" in caplog.text
  assert texts(fr_en["train"], "src")[1] == "Un chien court sur l'herbe."


def test_multi30k_collection(tmp_path):
  coll = multi30k.multi30k_collection("en", "fr", "test_2016_flickr", tmp_path,
                                      BENCH / "multi30k")
  assert coll.qrels == {f"en-{i:05d}": {f"fr-{i:05d}": 1} for i in range(3)}
  assert coll.docs["fr-00001"] == "Un terrier de Boston court sur l'herbe verte."


@pytest.mark.parametrize("file,edit,match", [
    ("val.de", lambda d: d + b"Noch eine Zeile.\n",
     r"differ in length: .*val\.en has 3 lines, .*val\.de has 4"),
    ("val.de", lambda d: d.replace("Zwei Menschen gehen am Strand spazieren.".encode(), b""),
     r"val\.de:2: empty caption"),
    ("train.en.gz", lambda d: d.replace(b"woman", b"wom\xe9n"),
     r"train\.en\.gz:3: invalid UTF-8"),
])
def test_multi30k_bad_input(tmp_path, file, edit, match):
  manual = copy_fixture("multi30k", tmp_path)
  _edit(manual / multi30k.RAW_DIR / file, edit)
  with pytest.raises(bitext_lib.BitextError, match=match):
    tb.load("multi30k", "en-de", tmp_path / "data", manual)
  assert not_prepared(tmp_path / "data")


def test_multi30k_missing_language(tmp_path):
  with pytest.raises(_base.ManualDataError) as info:
    tb.load("multi30k", "en-cs", tmp_path, BENCH / "multi30k")
  message = str(info.value)
  assert "3 file(s) missing" in message and "no split has the files of both" in message
  assert "data/task1/raw/train.cs.gz" in message and "raw/train.en.gz" not in message


# ------------------------------------------------------------------ MTOP


@pytest.mark.parametrize("lang", ["en", "de"])
def test_mtop_prepares(tmp_path, lang):
  sources = tb.load("mtop", lang, tmp_path, BENCH / "mtop")
  assert sizes(sources) == {"train": 4, "eval": 2, "test": 2}
  ex = sources["train"][1]
  assert _base.text(ex["intent"]) == "IN:CREATE_ALARM"
  assert _base.text(ex["domain"]) == "alarm"
  assert _base.text(ex["id"]) == "3232343434343002"  # shared across languages
  assert _base.text(ex["locale"]).startswith(lang)
  utterance = _base.text(ex["utterance"])
  assert utterance == {"en": "Set an alarm for 7 am", "de": "Stelle einen Wecker für 7 Uhr"}[lang]
  assert [_base.text(t) for t in ex["tokens"]][-1] in ("am", "Uhr")
  assert texts(sources["test"], "intent") == ["IN:GET_WEATHER", "IN:GET_MESSAGE"]


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.replace(b"\talarm\t", b"\t"), r"train\.txt:2: expected 8 tab-separated"),
    (lambda d: d.replace(b"IN:CREATE_ALARM\t", b"alarm\t", 1), r"train\.txt:2: intent 'alarm'"),
    (lambda d: d.replace(b'{"tokens": ["Play"', b'{"tokens": ["Play"]'),
     r"train\.txt:4: the tokens column is not JSON"),
    (lambda d: d.replace(b"en_XX", b"de_DE", 1), r"train\.txt:1: locale 'de_DE' is not of"),
    (lambda d: d.replace(b"3232343434343003", b"3232343434343001"),
     r"train\.txt:3: id 3232343434343001 already on line 1"),
    (lambda d: b"\n", r"no examples in .*train\.txt"),
])
def test_mtop_bad_input(tmp_path, edit, match):
  manual = copy_fixture("mtop", tmp_path)
  _edit(manual / "mtop" / "en" / "train.txt", edit)
  with pytest.raises(bitext_lib.BitextError, match=match):
    tb.load("mtop", "en", tmp_path / "data", manual)
  assert not_prepared(tmp_path / "data")


def test_mtop_missing_file(tmp_path):
  manual = copy_fixture("mtop", tmp_path)
  (manual / "mtop" / "de" / "eval.txt").unlink()
  with pytest.raises(_base.ManualDataError, match=r"1 file\(s\) missing[\s\S]*mtop/de/eval\.txt"):
    tb.load("mtop", "de", tmp_path / "data", manual)


# ------------------------------------------------------------------ Bible


def test_bible_small_config(tmp_path):
  config = bible_builder.BibleConfig(name="three_books", books=("Jude", "Philemon", "3 John"),
                                     heldout_books=("3 John",))
  sources = tb.load("bible", config, tmp_path)
  pairs = [p for p in bible.load_bible_pairs() if p.book in ("Jude", "Philemon", "3 John")]
  train, expected = bible.split_bible(pairs, ("3 John",))
  assert sizes(sources) == {"train": len(train), "heldout": len(expected.queries)}
  assert bible_builder.read_pairs(sources["train"]) == train
  first = sources["heldout"][0]
  assert (_base.text(first["book"]), int(first["chapter"]), int(first["verse"])) == (
      "3 John", 1, 1)
  coll = bible_builder.bible_collection("three_books", tmp_path)  # reopened by name
  assert (dict(coll.queries), dict(coll.docs), dict(coll.qrels)) == (
      dict(expected.queries), dict(expected.docs), dict(expected.qrels))


def test_bible_empty_split_is_an_error(tmp_path):
  config = bible_builder.BibleConfig(name="all_held", books=("Jude",), heldout_books=("Jude",))
  with pytest.raises(bitext_lib.BitextError, match=r"no examples in train of the Bible"):
    tb.load("bible", config, tmp_path)
  assert not_prepared(tmp_path)


# ------------------------------------------------------------------ downloading paths


@pytest.fixture()
def file_server(tmp_path):
  """Serves tmp_path/'www' over HTTP (a stand-in for the Hub and the MLQA host)."""
  www = tmp_path / "www"
  www.mkdir()

  class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, directory=str(www), **kwargs)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
  yield www, f"http://127.0.0.1:{server.server_address[1]}"
  server.shutdown()
  server.server_close()


def test_miracl_downloads_when_online(tmp_path, monkeypatch, file_server):
  www, url = file_server
  shutil.copytree(BENCH / "miracl" / "miracl-v1.0-te",
                  www / "miracl/miracl/resolve/main/miracl-v1.0-te")
  shutil.copytree(BENCH / "miracl" / "miracl-corpus-v1.0-te",
                  www / "miracl/miracl-corpus/resolve/main/miracl-corpus-v1.0-te")
  monkeypatch.delenv("OPTICAL_JAX_OFFLINE")
  monkeypatch.setattr(miracl, "HUB", url)
  coll = miracl.miracl_collection("te", "train", tmp_path / "data", tmp_path / "empty")
  assert list(coll.queries) == ["20", "21"] and len(coll.docs) == 4
  assert coll.qrels["21"] == {"22#1": 1, "22#0": 0}


def test_mlqa_downloads_when_online(tmp_path, monkeypatch, file_server):
  www, url = file_server
  shutil.make_archive(str(www / "MLQA_V1"), "zip", BENCH / "mlqa", "MLQA_V1")
  monkeypatch.delenv("OPTICAL_JAX_OFFLINE")
  monkeypatch.setattr(mlqa, "URL", f"{url}/MLQA_V1.zip")
  sources = tb.load("mlqa", "de-en", tmp_path / "data", tmp_path / "empty")
  assert sizes(sources) == {"dev": 5, "test": 2}
