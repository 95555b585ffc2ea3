"""MTOP reading (data/mtop.py): the utterances of the shipped sample, the label vocabulary,
intents the training split lacks."""
import collections

import pytest

from optical_jax.core import probe
from optical_jax.data import mtop

from tests.mtop_sample import MTOP, fixture_rows


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One prepared copy of the fixture for the whole module (preparing takes a while)."""
  return tmp_path_factory.mktemp("tfds")


def test_reading_and_label_vocabulary(data_dir):
  train = mtop.read_mtop("en", "train", data_dir=str(data_dir), manual_dir=str(MTOP))
  rows = fixture_rows("en", "train")
  assert train.ids == tuple(r[0] for r in rows)
  assert train.intents == tuple(r[1] for r in rows)
  assert train.texts == tuple(r[2] for r in rows)
  vocab = mtop.label_vocab(train.intents)
  assert vocab == tuple(sorted({r[1] for r in rows})) and len(vocab) == 4
  assert len(mtop.read_mtop("de", "test", data_dir=str(data_dir), manual_dir=str(MTOP),
                              limit=1)) == 1

  # The fixture's eval split has only intents the training split lacks, its test split none.
  for split, n_unknown in (("eval", 2), ("test", 0)):
    utts = mtop.read_mtop("de", split, data_dir=str(data_dir), manual_dir=str(MTOP))
    labels, unknown = mtop.encode_labels(utts.intents, vocab)
    gold = [r[1] for r in fixture_rows("de", split)]
    expected = collections.Counter(i for i in gold if i not in vocab)
    assert unknown == dict(expected)
    assert int((labels == probe.UNKNOWN).sum()) == sum(expected.values()) == n_unknown
    assert [vocab[l] for l, g in zip(labels, gold) if l >= 0] == [g for g in gold if g in vocab]
  labels, unknown = mtop.encode_labels(["IN:B", "IN:X", "IN:A", "IN:X"], ("IN:A", "IN:B"))
  assert labels.tolist() == [1, probe.UNKNOWN, 0, probe.UNKNOWN] and unknown == {"IN:X": 2}
