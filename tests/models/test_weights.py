"""Hugging Face import / export, and the errors bad checkpoints give."""
import json
import os
import shutil
import subprocess
import sys
import time

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights

from tests import tiny_checkpoints

torch = pytest.importorskip("torch", reason="PyTorch is the golden reference (test extra)")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
  return tiny_checkpoints.write_bert(tmp_path_factory.mktemp("bert") / "ckpt")


def _params(model) -> dict:
  return {p: np.asarray(v.get_value()) for p, v in
          nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _perturbed(model, seed=1):
  """The model with every parameter moved: an export of a trained student."""
  rng = np.random.default_rng(seed)
  for _, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    v = np.asarray(var.get_value())
    var.set_value(jnp.asarray(v + 0.01 * rng.normal(size=v.shape).astype(v.dtype)))
  return model


@pytest.mark.parametrize("writer", [tiny_checkpoints.write_bert, tiny_checkpoints.write_xlmr],
                         ids=["bert", "xlm-roberta"])
def test_export_round_trip(writer, tmp_path, multilingual_texts):
  src = writer(tmp_path / "src")
  tok = tokenizer_lib.Tokenizer.from_pretrained(src)
  model = _perturbed(weights.load_pretrained(str(src)))
  out = weights.export_pretrained(model, tmp_path / "exported", tokenizer=tok)

  batch = tok.encode(multilingual_texts)
  ours = np.asarray(model.token_embeddings(jnp.asarray(batch.ids), jnp.asarray(batch.mask)))
  hf = transformers.AutoModel.from_pretrained(str(out), attn_implementation="eager").eval()
  with torch.no_grad():
    ref = hf(input_ids=torch.tensor(batch.ids, dtype=torch.long),
             attention_mask=torch.tensor(batch.mask, dtype=torch.long)).last_hidden_state
  m = batch.mask.astype(bool)
  assert np.abs(ours[m] - ref.numpy()[m]).max() <= 1e-4

  # The exported tokenizer gives the same ids through transformers.
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
  assert hf_tok(multilingual_texts[0])["input_ids"] == batch.ids[0][m[0]].tolist()

  # And back into our encoder, exactly.
  again = weights.load_pretrained(str(out))
  a, b = _params(model), _params(again)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


def test_sentence_transformers_loads_the_export(bert_dir, tmp_path, multilingual_texts):
  st = pytest.importorskip("sentence_transformers", reason="sentence-transformers (test extra)")
  head = heads_lib.HeadConfig(pooling="mean", projection_dim=8, projection_bias=True)
  tensors, _ = weights.read_checkpoint(bert_dir)
  rng = np.random.default_rng(0)
  tensors["linear.weight"] = rng.normal(size=(8, 32)).astype(np.float32)
  tensors["linear.bias"] = rng.normal(size=(8,)).astype(np.float32)
  cfg = weights.load_pretrained(str(bert_dir)).encoder.cfg
  model = weights.model_from_tensors(tensors, cfg, head)
  tok = tokenizer_lib.Tokenizer.from_pretrained(bert_dir)
  out = weights.export_pretrained(model, tmp_path / "st", tokenizer=tok,
                                  prompts={"query": "query: "})
  ours = np.asarray(model(*map(jnp.asarray, (lambda b: (b.ids, b.mask))(
      tok.encode(multilingual_texts, prefix="query: ")))))
  st_model = st.SentenceTransformer(str(out), device="cpu")
  ref = st_model.encode(multilingual_texts, prompt_name="query", convert_to_numpy=True)
  np.testing.assert_allclose(ours, ref, atol=1e-4)
  # Our loader reads the head back from the sentence-transformers files.
  again = weights.load_pretrained(str(out))
  assert again.head.cfg == head


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def test_missing_weight_file(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  os.remove(d / "model.safetensors")
  with pytest.raises(weights.WeightsError, match="no model.safetensors"):
    weights.load_pretrained(str(d))


def test_truncated_weight_file(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  data = (d / "model.safetensors").read_bytes()
  (d / "model.safetensors").write_bytes(data[: len(data) // 2])
  with pytest.raises(weights.WeightsError, match=r"model\.safetensors.*truncated"):
    weights.load_pretrained(str(d))


def test_missing_tensor_names_file_and_key(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  t = load_file(d / "model.safetensors")
  del t["encoder.layer.1.output.dense.bias"]
  save_file(t, d / "model.safetensors")
  with pytest.raises(weights.WeightsError,
                     match=r"model\.safetensors.*'encoder\.layer\.1\.output\.dense\.bias'"):
    weights.load_pretrained(str(d))


def test_shape_mismatch_names_file_and_key(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  cfg = json.loads((d / "config.json").read_text())
  cfg["intermediate_size"] = 48
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(weights.WeightsError,
                     match=r"model\.safetensors: tensor 'encoder\.layer\.0\.intermediate\.dense"
                           r"\.weight' has shape \(64, 32\)"):
    weights.load_pretrained(str(d))


def test_unmapped_tensor_is_an_error(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  t = load_file(d / "model.safetensors")
  t["encoder.layer.2.output.dense.weight"] = np.zeros((32, 64), np.float32)
  save_file(t, d / "model.safetensors")
  with pytest.raises(weights.WeightsError,
                     match=r"model\.safetensors: tensor 'encoder\.layer\.2\.output\.dense\.weight'"
                           r" has no place"):
    weights.load_pretrained(str(d))


def test_task_heads_and_prefixes_are_read_past(bert_dir, tmp_path, multilingual_texts):
  d = _copy(bert_dir, tmp_path / "d")
  t = load_file(d / "model.safetensors")
  t = {"bert." + k: v for k, v in t.items()}
  t["cls.predictions.bias"] = np.zeros(10, np.float32)
  (d / "model.safetensors").unlink()
  # a sharded checkpoint, as large models are published
  keys = sorted(t)
  half = len(keys) // 2
  save_file({k: t[k] for k in keys[:half]}, d / "model-00001-of-00002.safetensors")
  save_file({k: t[k] for k in keys[half:]}, d / "model-00002-of-00002.safetensors")
  index = {"weight_map": {k: f"model-0000{1 + (i >= half)}-of-00002.safetensors"
                          for i, k in enumerate(keys)}}
  (d / "model.safetensors.index.json").write_text(json.dumps(index))
  a = weights.load_pretrained(str(bert_dir))
  b = weights.load_pretrained(str(d))
  for (pa, va), (pb, vb) in zip(_params(a).items(), _params(b).items()):
    assert pa == pb
    np.testing.assert_array_equal(va, vb)


def test_pytorch_bin_checkpoint(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  t = load_file(d / "model.safetensors")
  torch.save({k: torch.from_numpy(v) for k, v in t.items()}, d / "pytorch_model.bin")
  (d / "model.safetensors").unlink()
  a, b = _params(weights.load_pretrained(str(bert_dir))), _params(weights.load_pretrained(str(d)))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_unknown_architecture(bert_dir, tmp_path):
  d = _copy(bert_dir, tmp_path / "d")
  cfg = json.loads((d / "config.json").read_text())
  cfg["model_type"], cfg["architectures"] = "gpt2", ["GPT2Model"]
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(weights.WeightsError, match=r"config\.json: model_type 'gpt2'"):
    weights.load_pretrained(str(d))


def test_offline_hub_id_fails_fast(tmp_path):
  code = ("from optical_jax.models import weights\n"
          "try:\n  weights.resolve('some-org/some-model')\n"
          "except weights.WeightsError as e:\n  print(e)\n")
  env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
  start = time.monotonic()
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120).stdout
  assert time.monotonic() - start < 60
  assert "some-org/some-model" in out
  assert "HF_HUB_OFFLINE=1" in out
  assert str(tmp_path / "hf") in out, "the message names the cache to place the model in"
