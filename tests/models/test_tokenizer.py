"""Tokenisation: ids equal transformers', buckets, prefixes, truncation."""
import logging

import numpy as np
import pytest

from optical_jax.models import tokenizer as tokenizer_lib

from tests import tiny_checkpoints

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=["bert", "xlm-roberta"])
def tiny_dir(request, tmp_path_factory):
  writer = {"bert": tiny_checkpoints.write_bert, "xlm-roberta": tiny_checkpoints.write_xlmr}
  return writer[request.param](tmp_path_factory.mktemp(request.param) / "ckpt")


def test_ids_equal_transformers(tiny_dir, multilingual_texts):
  tok = tokenizer_lib.Tokenizer.from_pretrained(tiny_dir)
  hf = transformers.AutoTokenizer.from_pretrained(str(tiny_dir))
  batch = tok.encode(multilingual_texts, prefix="query: ")
  for i, t in enumerate(multilingual_texts):
    expected = hf("query: " + t)["input_ids"]
    n = len(expected)
    assert batch.ids[i, :n].tolist() == expected
    assert batch.mask[i].sum() == n
    assert (batch.ids[i, n:] == tok.pad_id).all()


@pytest.mark.real_model
def test_e5_ids_equal_transformers(e5_dir, multilingual_texts):
  tok = tokenizer_lib.Tokenizer.from_pretrained(e5_dir)
  hf = transformers.AutoTokenizer.from_pretrained(str(e5_dir))
  batch = tok.encode(multilingual_texts, prefix="passage: ")
  for i, t in enumerate(multilingual_texts):
    expected = hf("passage: " + t)["input_ids"]
    assert batch.ids[i, :len(expected)].tolist() == expected
  assert tok.pad_id == 1 and tok.max_length == 512


def test_length_buckets(tiny_dir):
  tok = tokenizer_lib.Tokenizer.from_pretrained(tiny_dir, max_length=64, buckets=(8, 16, 32))
  assert tok.buckets == (8, 16, 32, 64)
  assert tok.encode(["a"]).ids.shape[1] == 8
  words = " ".join(["river"] * 12)
  n = len(tok.tokenize(words)) + 2
  assert 8 < n <= 64
  assert tok.encode([words]).ids.shape[1] == min(b for b in (16, 32, 64) if b >= n)
  assert tokenizer_lib.bucket_length(17, (8, 16, 32)) == 32
  assert tokenizer_lib.bucket_length(99, (8, 16, 32)) == 32


def test_a_limit_between_buckets_is_a_bucket(tiny_dir):
  tok = tokenizer_lib.Tokenizer.from_pretrained(tiny_dir, max_length=64, buckets=(8, 16, 32))
  long = " ".join(["river"] * 60)
  assert tok.encode([long], max_length=20).ids.shape == (1, 20)     # cut at 20, padded to 20
  short = " ".join(["river"] * 3)
  assert tok.encode([short], max_length=20).ids.shape[1] == 8       # still the small bucket


def test_truncation_is_counted_and_keeps_specials(tiny_dir, caplog):
  tok = tokenizer_lib.Tokenizer.from_pretrained(tiny_dir, max_length=64)
  texts = [" ".join(["river valley"] * 40), "short"]
  with caplog.at_level(logging.WARNING):
    batch = tok.encode(texts, max_length=16)
  assert batch.num_truncated == 1 and tok.total_truncated == 1
  assert "truncated 1 of 2" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    tok.encode(texts, max_length=16)
  assert tok.total_truncated == 2 and "truncated" not in caplog.text, "warned once only"
  assert batch.ids.shape == (2, 16) and batch.mask[0].sum() == 16
  assert tok.backend.id_to_token(int(batch.ids[0, -1])) == tok.special_tokens["sep_token"]
  assert batch.special[0, 0] and batch.special[0, -1]


def test_prefix_tokens_are_flagged(tiny_dir):
  tok = tokenizer_lib.Tokenizer.from_pretrained(tiny_dir)
  sentence = "The river flooded the valley."
  pref = tok.encode([sentence], prefix="query: ")
  n = int(pref.mask.sum())
  flagged = pref.special[0, 1:n - 1]          # inside the CLS ... SEP specials
  k = int(flagged.sum())
  assert k >= 2 and flagged[:k].all(), "the prefix is one run at the start"
  assert pref.special[0, 0] and pref.special[0, n - 1]
  pieces = [tok.backend.id_to_token(int(i)) for i in pref.ids[0, 1:n - 1]]
  spell = lambda ps: "".join(p.replace("##", "").replace("\u2581", "") for p in ps)
  assert spell(pieces[:k]) == "query:"
  assert spell(pieces[k:]) == sentence.replace(" ", "")


def test_batch_padding_rows(tiny_dir):
  tok = tokenizer_lib.Tokenizer.from_pretrained(tiny_dir)
  batch = tok.encode(["one", "two"], batch_size=5)
  assert batch.ids.shape[0] == 5 and batch.num_texts == 2
  assert (batch.mask[2:] == 0).all() and (batch.ids[2:] == tok.pad_id).all()
  with pytest.raises(ValueError, match="batch_size 1 < 2"):
    tok.encode(["one", "two"], batch_size=1)
  assert np.array_equal(batch.lengths[2:], [0, 0, 0])
