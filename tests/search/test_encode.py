"""Encoding texts (search/encode.py): document vectors cached by content."""
import numpy as np

from optical_jax import models
from optical_jax.search import encode as encode_lib

from tests import tiny_checkpoints


def test_document_vectors_are_cached_by_content(tmp_path):
  model, tok, _ = models.load(str(tiny_checkpoints.write_xlmr(tmp_path / "t")))
  texts = ["one document", "another, longer document", "third"]
  kw = dict(prefix="passage: ", batch_size=4, max_length=16, progress=False)
  first = encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts, **kw)
  files = list((tmp_path / "cache").glob("vectors-*.npy"))
  assert len(files) == 1
  np.testing.assert_array_equal(first, encode_lib.encode_texts(model, tok, texts, **kw))
  np.save(files[0], np.zeros_like(first))          # a second call reads the file
  assert not encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts, **kw).any()
  # Other texts, another prefix, or other weights: another entry.
  encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts[:2], **kw)
  encode_lib.encode_texts_cached(tmp_path / "cache", model, tok, texts,
                                **dict(kw, prefix="query: "))
  other = models.load(str(tiny_checkpoints.write_xlmr(tmp_path / "t2", seed=1)))[0]
  encode_lib.encode_texts_cached(tmp_path / "cache", other, tok, texts, **kw)
  assert len(list((tmp_path / "cache").glob("vectors-*.npy"))) == 4
