"""Hugging Face checkpoints in and out of the NNX encoder.

Import reads a local HF directory (`config.json` with `model.safetensors`, a
sharded `model.safetensors.index.json`, or `pytorch_model.bin` when torch is
installed) or a hub id (resolved through huggingface_hub, failing at once when
offline). Every parameter of our model must come from the checkpoint: a missing
tensor, a shape mismatch, an unknown architecture or a tensor name we cannot
place is a `WeightsError` naming the file and the key, never a model left at
random initialisation.

Export writes a directory that PyTorch transformers (`AutoModel`) and
sentence-transformers load: `config.json`, `model.safetensors` with the
PyTorch names and layouts, the tokenizer, and the sentence-transformers module
files describing the head.

The name table follows PyTorch BERT: Linear weights are `[out, in]` (ours are
`[in, out]`), attention projections are split into `[H, heads, head_dim]`, and
LayerNorm `weight`/`bias` (`gamma`/`beta` in old checkpoints) are our
`scale`/`bias`.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Callable

from flax import nnx
import jax
import numpy as np

from optical_jax.models import encoder as encoder_lib
from optical_jax.models import heads as heads_lib

log = logging.getLogger(__name__)

# Prefixes task models put before the encoder (BertForMaskedLM -> 'bert.', a
# sentence-transformers pickle -> '0.auto_model.').
_BASE_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.", "0.auto_model.")
# Tensors of a checkpoint that are not part of a retrieval encoder: read past,
# with a log line. Anything else we cannot place is an error.
_IGNORED_PREFIXES = ("pooler.", "cls.", "lm_head.", "classifier.", "qa_outputs.")
_IGNORED_NAMES = ("embeddings.position_ids", "embeddings.token_type_ids")


class WeightsError(ValueError):
  """A checkpoint that cannot be loaded as it is; the message names file and key."""


# ----------------------------------------------------------------------------
# The name table.

def _t(x):            # PyTorch Linear [out, in] <-> ours [in, out]
  return np.ascontiguousarray(x.T)


def _same(x):
  return x


def _param_table(cfg: encoder_lib.EncoderConfig, head: heads_lib.HeadConfig
                 ) -> list[tuple[str, tuple, Callable, Callable]]:
  """(HF name, our NNX path, HF->ours, ours->HF) for every parameter."""
  n, d, h = cfg.num_heads, cfg.head_dim, cfg.hidden_size
  qkv_w = (lambda x: _t(x).reshape(h, n, d), lambda x: _t(x.reshape(h, n * d)))
  qkv_b = (lambda x: x.reshape(n, d), lambda x: x.reshape(n * d))
  out_w = (lambda x: _t(x).reshape(n, d, h), lambda x: _t(x.reshape(n * d, h)))
  lin = (_t, _t)
  vec = (_same, _same)

  rows = [
      ("embeddings.word_embeddings.weight", ("embeddings", "word", "embedding"), vec),
      ("embeddings.position_embeddings.weight", ("embeddings", "position", "embedding"), vec),
      ("embeddings.LayerNorm.weight", ("embeddings", "norm", "scale"), vec),
      ("embeddings.LayerNorm.bias", ("embeddings", "norm", "bias"), vec),
  ]
  if cfg.type_vocab_size:
    rows.append(("embeddings.token_type_embeddings.weight",
                 ("embeddings", "token_type", "embedding"), vec))
  for i in range(cfg.num_layers):
    hf, us = f"encoder.layer.{i}.", ("layers", i)
    for name in ("query", "key", "value"):
      rows.append((f"{hf}attention.self.{name}.weight", us + ("attention", name, "kernel"), qkv_w))
      rows.append((f"{hf}attention.self.{name}.bias", us + ("attention", name, "bias"), qkv_b))
    rows += [
        (f"{hf}attention.output.dense.weight", us + ("attention", "out", "kernel"), out_w),
        (f"{hf}attention.output.dense.bias", us + ("attention", "out", "bias"), vec),
        (f"{hf}attention.output.LayerNorm.weight", us + ("attention_norm", "scale"), vec),
        (f"{hf}attention.output.LayerNorm.bias", us + ("attention_norm", "bias"), vec),
        (f"{hf}intermediate.dense.weight", us + ("mlp_in", "kernel"), lin),
        (f"{hf}intermediate.dense.bias", us + ("mlp_in", "bias"), vec),
        (f"{hf}output.dense.weight", us + ("mlp_out", "kernel"), lin),
        (f"{hf}output.dense.bias", us + ("mlp_out", "bias"), vec),
        (f"{hf}output.LayerNorm.weight", us + ("mlp_norm", "scale"), vec),
        (f"{hf}output.LayerNorm.bias", us + ("mlp_norm", "bias"), vec),
    ]
  table = [(hf, ("encoder",) + us, a, b) for hf, us, (a, b) in rows]
  if head.projection_dim:
    # ColBERT stores its projection as `linear.weight` beside the encoder.
    table.append(("linear.weight", ("head", "projection", "kernel"), _t, _t))
    if head.projection_bias:
      table.append(("linear.bias", ("head", "projection", "bias"), _same, _same))
  return table


# ----------------------------------------------------------------------------
# Reading checkpoint files.

def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors import safe_open   # pylint: disable=g-import-not-at-top
  import ml_dtypes                     # pylint: disable=g-import-not-at-top
  out = {}
  try:
    with safe_open(str(path), framework="np") as f:
      for key in f.keys():
        if f.get_slice(key).get_dtype().upper() in ("BF16", "BFLOAT16"):
          # numpy has no bfloat16; read the raw bytes through ml_dtypes.
          out[key] = _read_raw(path, key, ml_dtypes.bfloat16).astype(np.float32)
        else:
          out[key] = f.get_tensor(key)
  except Exception as e:  # safetensors raises its own error types
    raise WeightsError(f"{path}: cannot read safetensors file ({type(e).__name__}: {e}); "
                       "the file may be truncated or not a safetensors file") from e
  return out


def _read_raw(path: pathlib.Path, key: str, dtype) -> np.ndarray:
  with open(path, "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    meta = json.loads(f.read(n))[key]
    start, end = meta["data_offsets"]
    f.seek(8 + n + start)
    return np.frombuffer(f.read(end - start), dtype=dtype).reshape(meta["shape"])


def _read_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise WeightsError(
        f"{path}: a PyTorch checkpoint needs torch to read (pip install torch), "
        "or convert it to model.safetensors") from None
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:
    raise WeightsError(f"{path}: cannot read PyTorch checkpoint ({e})") from e
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Reads every tensor of an HF model directory.

  Returns:
    (tensors by HF name, the file each name came from).

  Raises:
    WeightsError: no weight file, a shard named by the index missing, a file
      that cannot be read.
  """
  d = pathlib.Path(directory)
  files: list[pathlib.Path]
  if (d / "model.safetensors").exists():
    files = [d / "model.safetensors"]
  elif (d / "model.safetensors.index.json").exists():
    index = json.loads((d / "model.safetensors.index.json").read_text())
    files = [d / f for f in sorted(set(index["weight_map"].values()))]
    for f in files:
      if not f.exists():
        raise WeightsError(f"{d / 'model.safetensors.index.json'}: names shard {f.name}, "
                           f"which is not in {d}")
  elif (d / "pytorch_model.bin").exists():
    files = [d / "pytorch_model.bin"]
  else:
    raise WeightsError(f"{d}: no model.safetensors, model.safetensors.index.json or "
                       "pytorch_model.bin")
  tensors, origin = {}, {}
  for f in files:
    part = _read_safetensors(f) if f.suffix == ".safetensors" else _read_torch_bin(f)
    tensors.update(part)
    origin.update({k: str(f) for k in part})
  return tensors, origin


def _strip_base_prefix(tensors: dict[str, np.ndarray]) -> dict[str, str]:
  """Our HF name (no task prefix) -> the checkpoint's name."""
  anchor = "embeddings.word_embeddings.weight"
  prefix = ""
  if anchor not in tensors:
    prefix = next((p for p in _BASE_PREFIXES if p + anchor in tensors), None)
    if prefix is None:
      return {k: k for k in tensors}     # reported as missing/unmapped below
  names = {}
  for k in tensors:
    if k.startswith(prefix):
      names[k[len(prefix):]] = k
    else:
      names[k] = k                       # e.g. ColBERT's top-level 'linear.weight'
  for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
    for k in [k for k in names if "LayerNorm" in k and k.endswith(old)]:
      names[k[: -len(old)] + new] = names.pop(k)
  return names


# ----------------------------------------------------------------------------
# Building a model from tensors.

def abstract_model(enc_cfg: encoder_lib.EncoderConfig, head_cfg: heads_lib.HeadConfig,
                   name: str = "") -> heads_lib.TextModel:
  """The model's structure with `ShapeDtypeStruct` leaves (no memory, no init)."""
  return nnx.eval_shape(lambda: heads_lib.TextModel(enc_cfg, head_cfg, rngs=nnx.Rngs(0), name=name))


def model_from_tensors(tensors: dict[str, np.ndarray], enc_cfg: encoder_lib.EncoderConfig,
                       head_cfg: heads_lib.HeadConfig, *, origin: dict[str, str] | None = None,
                       name: str = "") -> heads_lib.TextModel:
  """Builds a `TextModel` whose every parameter comes from `tensors`.

  Args:
    tensors: HF-named arrays (PyTorch layouts), with or without a task prefix.
    enc_cfg, head_cfg: the architecture the tensors must fill.
    origin: HF name -> file, for error messages.
    name: recorded on the model (path or hub id).

  Raises:
    WeightsError: a missing tensor, a shape mismatch, or a tensor that is neither
      placed nor a known non-encoder head.
  """
  origin = origin or {}
  where = lambda k: origin.get(k, "<tensors>")
  names = _strip_base_prefix(tensors)
  graphdef, state = nnx.split(abstract_model(enc_cfg, head_cfg, name))
  slots = dict(nnx.to_flat_state(state))
  pdtype = np.dtype(enc_cfg.param_dtype) if enc_cfg.param_dtype != "bfloat16" else None
  filled, used = {}, set()
  for hf_name, path, to_ours, _ in _param_table(enc_cfg, head_cfg):
    if hf_name not in names:
      files = sorted(set(origin.values())) or ["<tensors>"]
      raise WeightsError(f"{', '.join(files)}: missing tensor {hf_name!r} "
                         f"(needed for {'/'.join(map(str, path))})")
    key = names[hf_name]
    used.add(key)
    value = to_ours(np.asarray(tensors[key]))
    slot = slots[path]
    if tuple(value.shape) != tuple(slot.shape):
      raise WeightsError(
          f"{where(key)}: tensor {key!r} has shape {tuple(tensors[key].shape)}, the config "
          f"expects {tuple(slot.shape)} after conversion (got {tuple(value.shape)})")
    filled[path] = slot.replace(jax.numpy.asarray(value, dtype=pdtype or slot.dtype))
  short = {v: k for k, v in names.items()}     # checkpoint name -> HF name
  leftover = [k for k in tensors if k not in used and not _ignorable(short.get(k, k))]
  if leftover:
    raise WeightsError(
        f"{where(leftover[0])}: tensor {leftover[0]!r} has no place in a "
        f"{enc_cfg.model_type} encoder with {enc_cfg.num_layers} layers"
        + (f" (and {len(leftover) - 1} more)" if len(leftover) > 1 else ""))
  unfilled = [p for p in slots if p not in filled]
  if unfilled:  # a table bug, never a silent random init
    raise WeightsError(f"parameters not filled from the checkpoint: {unfilled[:3]}")
  ignored = [k for k in tensors if k not in used]
  if ignored:
    log.info("read past %d non-encoder tensors (%s...)", len(ignored), ignored[:3])
  return nnx.merge(graphdef, nnx.from_flat_state(list(filled.items())))


def _ignorable(name: str) -> bool:
  return name.startswith(_IGNORED_PREFIXES) or name in _IGNORED_NAMES


def model_to_tensors(model: heads_lib.TextModel) -> dict[str, np.ndarray]:
  """The model's parameters under their HF (PyTorch BertModel) names, float32."""
  enc_cfg, head_cfg = model.encoder.cfg, model.head.cfg
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  out = {}
  for hf_name, path, _, to_hf in _param_table(enc_cfg, head_cfg):
    out[hf_name] = np.ascontiguousarray(to_hf(np.asarray(flat[path].get_value(), np.float32)))
  return out


# ----------------------------------------------------------------------------
# Directories and hub ids.

def resolve(path_or_id: str) -> pathlib.Path:
  """A local directory, or a hub id downloaded through huggingface_hub.

  Offline (HF_HUB_OFFLINE=1 or no network) a hub id that is not in the local
  cache fails at once with a message saying what to place where.
  """
  p = pathlib.Path(os.path.expanduser(path_or_id))
  if p.is_dir():
    return p
  if p.exists() or path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") > 1:
    raise WeightsError(f"{path_or_id}: not a model directory")
  from huggingface_hub import constants, snapshot_download  # pylint: disable=g-import-not-at-top
  patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "1_Pooling/*", "2_Dense/*"]
  try:
    return pathlib.Path(snapshot_download(path_or_id, allow_patterns=patterns,
                                          local_files_only=constants.HF_HUB_OFFLINE))
  except Exception as e:
    raise WeightsError(
        f"cannot resolve model {path_or_id!r}: {type(e).__name__}: {e}. Offline, "
        f"download it elsewhere and place it in the hub cache ({constants.HF_HUB_CACHE}) "
        f"or pass a local directory; HF_HUB_OFFLINE="
        f"{os.environ.get('HF_HUB_OFFLINE', '<unset>')}") from e


def read_head_config(directory: pathlib.Path, default: heads_lib.HeadConfig) -> heads_lib.HeadConfig:
  """The head a sentence-transformers directory declares, else `default`."""
  pooling_cfg = directory / "1_Pooling" / "config.json"
  if not pooling_cfg.exists():
    return default
  pool = json.loads(pooling_cfg.read_text())
  pooling = "cls" if pool.get("pooling_mode_cls_token") else "mean"
  modules = json.loads((directory / "modules.json").read_text()) if (
      directory / "modules.json").exists() else []
  normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
  dense = directory / "2_Dense" / "config.json"
  proj = json.loads(dense.read_text())["out_features"] if dense.exists() else None
  bias = json.loads(dense.read_text()).get("bias", True) if dense.exists() else False
  return heads_lib.HeadConfig(pooling=pooling, projection_dim=proj, projection_bias=bias,
                              normalize=normalize)


def load_pretrained(path_or_id: str, *, head: heads_lib.HeadConfig | None = None,
                    dtype: str = "float32", param_dtype: str = "float32",
                    attention: str = "auto",
                    attention_chunk_mib: float = 8.0,
                    attention_unrolled_chunks: int = 16) -> heads_lib.TextModel:
  """Loads an HF encoder checkpoint (directory or hub id) as a `TextModel`.

  Args:
    path_or_id: local directory or hub id.
    head: the head to use; None takes the one a sentence-transformers directory
      declares, else mean pooling + L2 normalisation.
    dtype, param_dtype: activation and parameter dtypes.
    attention: the attention implementation (`attention.ATTENTION`).
    attention_chunk_mib: scores per chunk of the 'chunked' implementation.
    attention_unrolled_chunks: its chunks that run as independent ops.
  """
  directory = resolve(path_or_id)
  cfg_file = directory / "config.json"
  if not cfg_file.exists():
    raise WeightsError(f"{directory}: no config.json")
  try:
    hf_cfg = json.loads(cfg_file.read_text())
  except json.JSONDecodeError as e:
    raise WeightsError(f"{cfg_file}: invalid JSON at line {e.lineno}: {e.msg}") from e
  try:
    enc_cfg = encoder_lib.EncoderConfig.from_hf(hf_cfg, dtype=dtype, param_dtype=param_dtype,
                                                attention=attention,
                                                attention_chunk_mib=attention_chunk_mib,
                                                attention_unrolled_chunks=attention_unrolled_chunks)
  except encoder_lib.UnsupportedArchitectureError as e:
    raise WeightsError(f"{cfg_file}: {e}") from e
  head = head or read_head_config(directory, heads_lib.HeadConfig())
  tensors, origin = read_checkpoint(directory)
  dense = directory / "2_Dense" / "model.safetensors"
  if head.projection_dim and "linear.weight" not in tensors and dense.exists():
    extra = _read_safetensors(dense)
    tensors.update(extra)
    origin.update({k: str(dense) for k in extra})
  return model_from_tensors(tensors, enc_cfg, head, origin=origin, name=str(path_or_id))


def export_pretrained(model: heads_lib.TextModel, directory: str | os.PathLike,
                      tokenizer=None, prompts: dict[str, str] | None = None) -> pathlib.Path:
  """Writes `model` as an HF directory that transformers and sentence-transformers load.

  Args:
    model: the model (e.g. a distilled student).
    directory: created if needed; existing files of the same names are replaced.
    tokenizer: a `tokenizer.Tokenizer` (or anything with `save(directory)`) to
      write beside the weights.
    prompts: sentence-transformers prompts, e.g. {"query": "query: "}.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out = pathlib.Path(directory)
  out.mkdir(parents=True, exist_ok=True)
  enc_cfg, head_cfg = model.encoder.cfg, model.head.cfg
  tensors = model_to_tensors(model)
  proj = {k: tensors.pop(k) for k in ("linear.weight", "linear.bias") if k in tensors}
  (out / "config.json").write_text(json.dumps(enc_cfg.to_hf(), indent=2))
  save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
  if tokenizer is not None:
    tokenizer.save(out)
  write_sentence_transformers(out, enc_cfg, head_cfg, proj, prompts=prompts)
  return out


def write_sentence_transformers(out: pathlib.Path, enc_cfg: encoder_lib.EncoderConfig,
                                head_cfg: heads_lib.HeadConfig, proj: dict[str, np.ndarray],
                                prompts: dict[str, str] | None = None) -> None:
  """The sentence-transformers module files describing `head_cfg` (and its projection)."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling",
              "type": "sentence_transformers.models.Pooling"}]
  dim = enc_cfg.hidden_size
  (out / "1_Pooling").mkdir(exist_ok=True)
  (out / "1_Pooling" / "config.json").write_text(json.dumps({
      "word_embedding_dimension": dim,
      "pooling_mode_cls_token": head_cfg.pooling == "cls",
      "pooling_mode_mean_tokens": head_cfg.pooling == "mean",
      "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
  if proj:
    # Pooling -> Dense -> Normalize: the order `Head.pool` follows.
    (out / "2_Dense").mkdir(exist_ok=True)
    (out / "2_Dense" / "config.json").write_text(json.dumps({
        "in_features": dim, "out_features": head_cfg.projection_dim,
        "bias": head_cfg.projection_bias,
        "activation_function": "torch.nn.modules.linear.Identity"}, indent=2))
    save_file(proj, str(out / "2_Dense" / "model.safetensors"))
    modules.append({"idx": 2, "name": "2", "path": "2_Dense",
                    "type": "sentence_transformers.models.Dense"})
  if head_cfg.normalize:
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "",
                    "type": "sentence_transformers.models.Normalize"})
  (out / "modules.json").write_text(json.dumps(modules, indent=2))
  (out / "sentence_bert_config.json").write_text(json.dumps(
      {"max_seq_length": enc_cfg.max_length, "do_lower_case": False}, indent=2))
  if prompts:
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"},
        indent=2))
