"""Which parameters train (training/trainable.py): the `train.trainable` specs."""
import pytest

from optical_jax.training import trainable as trainable_lib


def test_trainable_specs():
  names = ["encoder/embeddings/word/embedding", "encoder/embeddings/norm/scale",
           "encoder/layers/0/mlp_in/kernel", "encoder/layers/11/mlp_in/kernel",
           "encoder/layers/10/attention/query/kernel", "head/projection/kernel"]
  sel = lambda spec: [n for n in names if trainable_lib.trainable_predicate(spec, 12)(n)]
  assert sel("all") == names
  assert sel("no_word_embeddings") == names[1:]
  assert sel("top:2") == names[3:]
  assert sel("regex:attention") == [names[4]]
  with pytest.raises(ValueError, match="K must be in 1..12"):
    trainable_lib.trainable_predicate("top:13", 12)
  with pytest.raises(ValueError, match="expected 'all'"):
    trainable_lib.trainable_predicate("everything", 12)
