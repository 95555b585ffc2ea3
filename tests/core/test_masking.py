"""MLM / TLM: masking statistics, the loss and the LM head against PyTorch, TLM inputs."""
import logging

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from optical_jax.core import masking
from optical_jax.data import tlm
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import lm_head
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights
from optical_jax.training import pretraining

from tests import defaults
from tests import tiny_checkpoints

torch = pytest.importorskip("torch", reason="PyTorch is the golden reference (test extra)")
transformers = pytest.importorskip("transformers")

VOCAB, MASK_ID = 1000, 4
EXCLUDE = (0, 1, 2, 3, 4)


def _random_layout(rng, b, length):
  """Rows of random length with specials at both ends and some special prefix tokens."""
  n = rng.integers(0, length + 1, size=b)
  n[:3] = (0, 1, length)                        # an empty row, a lone token, a full row
  pos = np.arange(length)[None, :]
  mask = (pos < n[:, None]).astype(np.int32)
  special = (pos == 0) | (pos == n[:, None] - 1) | (rng.random((b, length)) < 0.05)
  special &= mask.astype(bool)
  ids = np.where(mask, rng.integers(len(EXCLUDE), VOCAB, size=(b, length)), 1)
  return ids.astype(np.int32), mask, special


def _mask(key, ids, mask, special, cfg=defaults.mlm_config()):
  fn = jax.jit(lambda k, i, m, s: masking.mask_tokens(k, i, m, s, cfg, vocab_size=VOCAB,
                                                  mask_id=MASK_ID, exclude_ids=EXCLUDE))
  return [np.asarray(x) for x in fn(key, ids, mask, special)]


def test_masking_statistics():
  rng = np.random.default_rng(0)
  ids, mask, special = _random_layout(rng, 4096, 48)
  inp, labels, w = _mask(jax.random.key(0), ids, mask, special)
  chosen = w > 0
  maskable = mask.astype(bool) & ~special
  assert not np.any(chosen & ~maskable)                    # specials and padding never
  np.testing.assert_array_equal(inp[~chosen], ids[~chosen])
  np.testing.assert_array_equal(labels[chosen], ids[chosen])

  n, count = maskable.sum(1), chosen.sum(1)
  assert np.all((np.abs(count - 0.15 * n) <= 0.5 + 1e-6) | (count == 1))
  assert np.all((count >= 1) == (n >= 1))
  assert count.max() <= masking.max_predictions(48, 0.15)
  assert abs(count.sum() / n.sum() - 0.15) < 0.01

  is_mask = inp[chosen] == MASK_ID
  is_keep = inp[chosen] == ids[chosen]
  is_random = ~is_mask & ~is_keep
  assert abs(is_mask.mean() - 0.8) < 0.015
  assert abs(is_random.mean() - 0.1) < 0.01
  assert abs(is_keep.mean() - 0.1) < 0.01                  # + 1/V chance of drawing itself
  drawn = inp[chosen][is_random]
  assert drawn.min() >= 0 and drawn.max() < VOCAB and not np.isin(drawn, EXCLUDE).any()


def test_masked_positions_are_uniform():
  # Every row alike: 38 maskable tokens, so round(0.15 * 38) = 6 are chosen,
  # each position with probability 6/38.
  b, length = 4096, 40
  ids = np.full((b, length), 7, np.int32)
  mask = np.ones((b, length), np.int32)
  special = np.zeros((b, length), bool)
  special[:, [0, -1]] = True
  _, _, w = _mask(jax.random.key(1), ids, mask, special)
  assert np.all(w.sum(1) == 6)
  freq = w[:, 1:-1].mean(0)
  assert np.abs(freq - 6 / 38).max() < 0.03, freq


def test_masking_is_deterministic_in_rng():
  ids, mask, special = _random_layout(np.random.default_rng(1), 64, 32)
  a = _mask(jax.random.key(3), ids, mask, special)
  b = _mask(jax.random.key_data(jax.random.key(3)), ids, mask, special)   # raw key data
  c = _mask(jax.random.key(4), ids, mask, special)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])


@pytest.mark.parametrize("field,value", [("mlm_weight", -1.0), ("mask_rate", 0.0),
                                         ("mask_rate", 1.0), ("mask_fraction", 1.5),
                                         ("random_fraction", 0.3), ("tlm_max_length", 3)])
def test_config_validation_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    defaults.mlm_config(**{field: value})


def test_mlm_loss_matches_torch_cross_entropy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
  labels = rng.integers(0, 11, size=(3, 7))
  w = (rng.random((3, 7)) < 0.4).astype(np.float32)
  ours = masking.mlm_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w))
  ref = torch.nn.functional.cross_entropy(
      torch.tensor(logits).reshape(-1, 11),
      torch.tensor(np.where(w > 0, labels, -100)).reshape(-1), ignore_index=-100)
  np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-5)

  # Nothing predicted: 0 and zero gradients, where torch gives NaN.
  zero_w = jnp.zeros((3, 7))
  bad_labels = jnp.full((3, 7), -100)
  value, grad = jax.value_and_grad(masking.mlm_loss)(jnp.asarray(logits), bad_labels, zero_w)
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


def test_mlm_loss_shares_sum_to_the_global_mean():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(4, 5, 9)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 9, size=(4, 5)))
  w = jnp.asarray((rng.random((4, 5)) < 0.5).astype(np.float32))
  shares = jax.pmap(lambda l, y, m: jax.lax.psum(masking.mlm_loss(l, y, m, axis_name="d"), "d"),
                    axis_name="d", devices=jax.devices()[:2])(
      logits.reshape(2, 2, 5, 9), labels.reshape(2, 2, 5), w.reshape(2, 2, 5))
  np.testing.assert_allclose(np.asarray(shares), float(masking.mlm_loss(logits, labels, w)),
                             rtol=1e-6)


# ----------------------------------------------------------------------------
# The head against transformers' MaskedLM models.

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


# ----------------------------------------------------------------------------
# TLM inputs.

def test_tlm_inputs_by_hand():
  cls, sep, pad, q = 101, 102, 0, 50             # q: a prefix token, marked special
  src = np.array([[cls, q, 5, 6, sep, pad, pad],
                  [cls, 5, 6, 7, 8, 9, sep],
                  [pad] * 7])
  tgt = np.array([[cls, 7, 8, 9, sep, pad],
                  [cls, 21, 22, 23, 24, sep],
                  [pad] * 6])
  src_sp = np.isin(src, [cls, sep, q])
  tgt_sp = np.isin(tgt, [cls, sep])
  out = tlm.tlm_inputs(src, (src != pad).astype(np.int32), src_sp,
                       tgt, (tgt != pad).astype(np.int32), tgt_sp, max_length=10, pad_id=pad)
  # Row 0 fits (5 + 4 = 9); row 1 (7 + 5) is cut to 10, 5 each, separators kept;
  # row 2 is batch padding.
  np.testing.assert_array_equal(out["tlm_ids"], [
      [cls, q, 5, 6, sep, 7, 8, 9, sep, pad],
      [cls, 5, 6, 7, sep, 21, 22, 23, 24, sep],
      [pad] * 10])
  np.testing.assert_array_equal(out["tlm_mask"], [[1] * 9 + [0], [1] * 10, [0] * 10])
  np.testing.assert_array_equal(out["tlm_special"], [
      [1, 1, 0, 0, 1, 0, 0, 0, 1, 0],
      [1, 0, 0, 0, 1, 0, 0, 0, 0, 1],
      [0] * 10])
  np.testing.assert_array_equal(out["tlm_type_ids"], [
      [0] * 5 + [1] * 4 + [0], [0] * 5 + [1] * 5, [0] * 10])

  # XLM-R layout: the target's <s> becomes </s>; a short source keeps all of
  # itself and the target takes the rest.
  out = tlm.tlm_inputs(src[:1], (src[:1] != pad).astype(np.int32), src_sp[:1],
                       tgt[1:2], (tgt[1:2] != pad).astype(np.int32), tgt_sp[1:2],
                       max_length=9, pad_id=pad, target_start_id=sep)
  np.testing.assert_array_equal(out["tlm_ids"], [[cls, q, 5, 6, sep, sep, 21, 22, sep]])


def test_add_tlm_inputs_on_tokenized_pairs(tmp_path, multilingual_texts):
  d = tiny_checkpoints.write_xlmr(tmp_path / "x")
  tok = tokenizer_lib.Tokenizer.from_pretrained(d)
  src = tok.encode(multilingual_texts[:4], prefix="query: ", max_length=32)
  tgt = tok.encode(multilingual_texts[4:8], prefix="passage: ", max_length=32)
  batch = {"src_ids": src.ids, "src_mask": src.mask, "src_special": src.special,
           "tgt_ids": tgt.ids, "tgt_mask": tgt.mask, "tgt_special": tgt.special}
  out = tlm.add_tlm_inputs(batch, pad_id=tok.pad_id)
  for i in range(4):
    ns, nt = src.mask[i].sum(), tgt.mask[i].sum()
    expect = list(src.ids[i, :ns]) + list(tgt.ids[i, 1:nt])
    assert list(out["tlm_ids"][i, :out["tlm_mask"][i].sum()]) == expect
  ids = lm_head.VocabIds.from_tokenizer(tok)
  backend = tok.backend
  assert ids.mask_id == backend.token_to_id("<mask>")
  assert (ids.cls_id, ids.sep_id, ids.pad_id) == (backend.token_to_id("<s>"),
                                                  backend.token_to_id("</s>"),
                                                  backend.token_to_id("<pad>"))
  assert set(ids.special_ids) == {backend.token_to_id(t) for t in
                                  ("<s>", "<pad>", "</s>", "<unk>", "<mask>")}


# ----------------------------------------------------------------------------
# Training on it.

class _Student(nnx.Module):
  def __init__(self, cfg):
    self.encoder = encoder_lib.Encoder(cfg, rngs=nnx.Rngs(0))
    self.head = lm_head.init_head(cfg, seed=1)


def test_pretraining_loss_trains_and_gathers_correctly():
  cfg = encoder_lib.EncoderConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4,
                                  intermediate_size=64, max_positions=40)
  rng = np.random.default_rng(0)
  b, ls, lt = 8, 12, 10
  src = rng.integers(5, 64, size=(b, ls)).astype(np.int32)
  tgt = rng.integers(5, 64, size=(b, lt)).astype(np.int32)
  src[:, 0] = tgt[:, 0] = 2
  src[:, -1] = tgt[:, -1] = 3
  batch = {"src_ids": src, "src_mask": np.ones_like(src), "src_special": np.isin(src, [2, 3]),
           "tgt_ids": tgt, "tgt_mask": np.ones_like(tgt), "tgt_special": np.isin(tgt, [2, 3])}
  batch = {k: jnp.asarray(v) for k, v in tlm.add_tlm_inputs(batch, pad_id=0).items()}
  mcfg = defaults.mlm_config(mlm_weight=1.0, tlm_weight=0.5)
  kw = dict(vocab_size=64, mask_id=4, exclude_ids=(0, 1, 2, 3, 4))
  key = jax.random.key(0)

  graphdef, params = nnx.split(nnx.jit(lambda: _Student(cfg))(), nnx.Param)
  tx = optax.adam(1e-2)

  def loss_fn(p):
    s = nnx.merge(graphdef, p)
    return pretraining.pretraining_loss(s.encoder, s.head, batch, key, mcfg, **kw)

  def full_mlm_loss(p):
    # What the gathered top-k path must equal: the loss over all L positions.
    s = nnx.merge(graphdef, p)
    inp, labels, w = masking.mask_tokens(jax.random.fold_in(key, 0), batch["src_ids"],
                                     batch["src_mask"], batch["src_special"], mcfg, **kw)
    table = s.encoder.embeddings.word.embedding[...]
    return masking.mlm_loss(s.head(s.encoder(inp, batch["src_mask"]), table), labels, w)

  @jax.jit
  def step(p, o):
    (loss, m), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss, m, full_mlm_loss(p)

  opt = tx.init(params)
  history = []
  for i in range(8):
    params, opt, loss, m, full = step(params, opt)
    if not i:
      assert set(m) == {"loss_mlm", "mlm_accuracy", "loss_tlm", "tlm_accuracy"}
      np.testing.assert_allclose(float(m["loss_mlm"]), float(full), rtol=1e-5)
    history.append((float(loss), float(m["loss_mlm"]), float(m["loss_tlm"])))
  assert np.all(np.isfinite(history))
  first, last = history[0], history[-1]
  assert last[0] < 0.8 * first[0], history
  assert last[1] < first[1] and last[2] < first[2], history
