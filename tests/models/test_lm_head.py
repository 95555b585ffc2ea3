"""The MLM head (models/lm_head.py) against transformers' MaskedLM models, and how it loads."""
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import encoder as encoder_lib
from optical_jax.models import lm_head
from optical_jax.models import weights

from tests import tiny_checkpoints

torch = pytest.importorskip("torch", reason="PyTorch is the golden reference (test extra)")
transformers = pytest.importorskip("transformers")


def _write_masked_lm(directory, kind):
  torch.manual_seed(0)
  small = {**tiny_checkpoints.SMALL, "vocab_size": 97}
  if kind == "bert":
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        max_position_embeddings=40, hidden_act="gelu_new", **small))
  else:
    # relu blocks: RoBERTa's LM head still applies GELU, which this tells apart.
    model = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
        max_position_embeddings=42, pad_token_id=1, type_vocab_size=1, hidden_act="relu",
        **small))
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():                # no zero biases or unit LayerNorms to hide behind
    for name, p in model.named_parameters():
      base = 1.0 if ("LayerNorm.weight" in name or "layer_norm.weight" in name) else 0.0
      p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
  model.save_pretrained(directory)
  return model.eval()


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_head_matches_transformers(kind, tmp_path, caplog):
  hf = _write_masked_lm(tmp_path, kind)
  student = weights.load_pretrained(str(tmp_path)).encoder
  with caplog.at_level(logging.INFO, logger="optical_jax.models.lm_head"):
    head = lm_head.load_head(tmp_path, student.cfg, seed=0)
  assert "initialised from" in caplog.text
  table = student.embeddings.word.embedding[...]
  hf_head = hf.cls if kind == "bert" else hf.lm_head

  # The head alone, on the same hidden states.
  hidden = np.random.default_rng(0).normal(size=(2, 5, 32)).astype(np.float32)
  with torch.no_grad():
    ref = hf_head(torch.tensor(hidden)).numpy()
  ours = np.asarray(head(jnp.asarray(hidden), table))
  assert np.abs(ours - ref).max() <= 1e-4

  # Encoder and head together, the decoder tied to the encoder's word table.
  rng = np.random.default_rng(1)
  ids = rng.integers(5, 97, size=(3, 9))
  attn = np.ones((3, 9), np.int64)
  attn[1, 6:] = 0
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(attn)).logits.numpy()
  ours = np.asarray(head(student(jnp.asarray(ids), jnp.asarray(attn)), table))
  real = attn.astype(bool)
  assert np.abs(ours[real] - ref[real]).max() <= 1e-4


def test_head_without_checkpoint_tensors_is_seeded_random(tmp_path, caplog):
  d = tiny_checkpoints.write_bert(tmp_path / "bert")             # a bare BertModel
  cfg = weights.load_pretrained(str(d)).encoder.cfg
  with caplog.at_level(logging.INFO, logger="optical_jax.models.lm_head"):
    a = lm_head.load_head(d, cfg, seed=3)
  assert "random initialisation (seed 3)" in caplog.text
  b = lm_head.init_head(cfg, seed=3)
  c = lm_head.init_head(cfg, seed=4)
  ka, kb, kc = (np.asarray(h.dense.kernel[...]) for h in (a, b, c))
  np.testing.assert_array_equal(ka, kb)
  assert not np.array_equal(ka, kc)


def test_incomplete_head_is_an_error():
  cfg = encoder_lib.EncoderConfig(vocab_size=10, hidden_size=4, num_layers=1, num_heads=1,
                                  intermediate_size=8, max_positions=8)
  tensors = {"cls.predictions.transform.dense.weight": np.zeros((4, 4), np.float32)}
  with pytest.raises(weights.WeightsError, match="cls.predictions.transform.dense.bias"):
    lm_head.head_params_from_hf(tensors, cfg, origin="ckpt")
