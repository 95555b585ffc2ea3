"""Golden tests: our NNX encoder against PyTorch transformers, same weights."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import encoder as encoder_lib
from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights

from tests import tiny_checkpoints


torch = pytest.importorskip("torch", reason="PyTorch is the golden reference (test extra)")

transformers = pytest.importorskip("transformers")


def torch_tokens(directory, ids, mask) -> np.ndarray:
  """[B, L, H] last hidden states of PyTorch transformers' AutoModel."""
  model = transformers.AutoModel.from_pretrained(str(directory), attn_implementation="eager")
  model.eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long))
  return out.last_hidden_state.numpy()


def assert_real_tokens_close(ours, ref, mask, atol):
  m = np.asarray(mask, bool)
  diff = np.abs(np.asarray(ours, np.float32)[m] - ref[m]).max()
  assert diff <= atol, f"max abs difference on real tokens {diff:.2e} > {atol}"


@pytest.mark.parametrize("writer", [tiny_checkpoints.write_bert, tiny_checkpoints.write_xlmr],
                         ids=["bert", "xlm-roberta"])
def test_token_embeddings_equal_transformers(writer, tmp_path, multilingual_texts):
  directory = writer(tmp_path / "ckpt")
  tok = tokenizer_lib.Tokenizer.from_pretrained(directory)
  batch = tok.encode(multilingual_texts)
  assert batch.mask.sum(1).min() >= 4, "the texts must be more than specials"
  model = weights.load_pretrained(str(directory))
  ours = model.token_embeddings(jnp.asarray(batch.ids), jnp.asarray(batch.mask))
  ref = torch_tokens(directory, batch.ids, batch.mask)
  assert_real_tokens_close(ours, ref, batch.mask, atol=1e-4)


def test_xlmr_positions_start_past_padding(tmp_path):
  directory = tiny_checkpoints.write_xlmr(tmp_path / "ckpt")
  model = weights.load_pretrained(str(directory))
  cfg = model.encoder.cfg
  assert cfg.position_offset == cfg.pad_token_id + 1 == 2
  assert cfg.max_length == 64
  # Shifting positions by one (the BERT convention) must change the output:
  # the test above would not notice an offset bug otherwise.
  bert_cfg = encoder_lib.EncoderConfig(**{**cfg.__dict__, "model_type": "bert"})
  bert_view = weights.model_from_tensors(weights.model_to_tensors(model), bert_cfg,
                                         model.head.cfg)
  ids = jnp.array([[0, 10, 11, 12, 2]])
  mask = jnp.ones_like(ids)
  a = model.token_embeddings(ids, mask)
  b = bert_view.token_embeddings(ids, mask)
  assert float(jnp.abs(a - b).max()) > 1e-3


def test_padding_does_not_change_real_tokens(tmp_path, multilingual_texts):
  directory = tiny_checkpoints.write_xlmr(tmp_path / "ckpt")
  model = weights.load_pretrained(str(directory))
  tok = tokenizer_lib.Tokenizer.from_pretrained(directory)
  short = tok.encode(multilingual_texts[:1])
  padded = tok.encode(multilingual_texts[:1], max_length=64, batch_size=3)
  wide = np.full((3, 64), tok.pad_id, np.int32)
  wide_mask = np.zeros((3, 64), np.int32)
  n = short.ids.shape[1]
  wide[:, :n], wide_mask[:, :n] = padded.ids[:, :n], padded.mask[:, :n]
  a = model.token_embeddings(jnp.asarray(short.ids), jnp.asarray(short.mask))
  b = model.token_embeddings(jnp.asarray(wide), jnp.asarray(wide_mask))
  assert_real_tokens_close(b[:1, :n], np.asarray(a), short.mask, atol=1e-5)
  assert np.isfinite(np.asarray(b)).all(), "all-padding rows must not produce NaN"


@pytest.mark.real_model
def test_e5_small_equals_transformers(e5_dir, multilingual_texts):
  tok = tokenizer_lib.Tokenizer.from_pretrained(e5_dir)
  batch = tok.encode(multilingual_texts, prefix="query: ")
  model = weights.load_pretrained(str(e5_dir))
  ours = jax.jit(lambda m, i, k: m.token_embeddings(i, k))(
      model, jnp.asarray(batch.ids), jnp.asarray(batch.mask))
  ref = torch_tokens(e5_dir, batch.ids, batch.mask)
  assert_real_tokens_close(ours, ref, batch.mask, atol=1e-4)


def test_bfloat16_close_to_float32(tmp_path, multilingual_texts):
  directory = tiny_checkpoints.write_bert(tmp_path / "ckpt")
  tok = tokenizer_lib.Tokenizer.from_pretrained(directory)
  batch = tok.encode(multilingual_texts)
  f32 = weights.load_pretrained(str(directory))
  bf16 = weights.load_pretrained(str(directory), dtype="bfloat16", param_dtype="bfloat16")
  assert bf16.encoder.layers[0].mlp_in.kernel.get_value().dtype == jnp.bfloat16
  a = f32(jnp.asarray(batch.ids), jnp.asarray(batch.mask))
  b = bf16(jnp.asarray(batch.ids), jnp.asarray(batch.mask))
  assert b.dtype == jnp.bfloat16
  cos = jnp.sum(a * b.astype(jnp.float32), axis=-1)
  assert float(cos.min()) > 0.99


def test_intermediate_layer_output(tmp_path, multilingual_texts):
  directory = tiny_checkpoints.write_bert(tmp_path / "ckpt")
  tok = tokenizer_lib.Tokenizer.from_pretrained(directory)
  batch = tok.encode(multilingual_texts[:4])
  model = weights.load_pretrained(str(directory))
  hf = transformers.AutoModel.from_pretrained(str(directory), attn_implementation="eager")
  with torch.no_grad():
    hidden = hf(input_ids=torch.tensor(batch.ids, dtype=torch.long),
                attention_mask=torch.tensor(batch.mask, dtype=torch.long),
                output_hidden_states=True).hidden_states
  for layer in (0, 1, -1):
    ours = model.token_embeddings(jnp.asarray(batch.ids), jnp.asarray(batch.mask),
                                  output_layer=layer)
    assert_real_tokens_close(ours, hidden[layer].numpy(), batch.mask, atol=1e-4)


def test_parameters_carry_logical_axes():
  cfg = encoder_lib.EncoderConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=4,
                                  intermediate_size=32, max_positions=20)
  model = heads_lib.TextModel(cfg, heads_lib.HeadConfig(projection_dim=8), rngs=nnx.Rngs(0))
  known = {"vocab", "embed", "heads", "kv", "mlp", None}
  axes = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == var.get_value().ndim, path
    assert set(names) <= known, (path, names)
    axes["/".join(map(str, path))] = tuple(names)
  assert axes["encoder/embeddings/word/embedding"] == ("vocab", "embed")
  assert axes["encoder/layers/0/attention/query/kernel"] == ("embed", "heads", "kv")
  assert axes["encoder/layers/0/attention/out/kernel"] == ("heads", "kv", "embed")
  assert axes["encoder/layers/1/mlp_in/kernel"] == ("embed", "mlp")
  assert axes["encoder/layers/1/mlp_out/kernel"] == ("mlp", "embed")
