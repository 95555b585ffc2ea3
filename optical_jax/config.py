"""The configuration every job starts from, and its checks.

Configs are `ml_collections.ConfigDict`s returned by `get_config(arg)` in a
file under `configs/`; they start from `default()` and are locked, so an
override of a key that does not exist (`--config.trian.steps=5`) is an error,
not a silent new field. `check` turns the blocks the code consumes into typed
objects and reports a bad value by its config key.
"""
from __future__ import annotations

import json

import ml_collections

from optical_jax import intent
from optical_jax import losses
from optical_jax import mlm
from optical_jax import ot


def default() -> ml_collections.ConfigDict:
  """Every field a job reads, with its default (unlocked; configs lock it)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What the query encoder is: optical | optical+mse | kd_mse | kd_token
  # (distilled: see losses.METHODS for the terms each trains with), zero_shot
  # (the teacher) or translate_query (the teacher on eval.translated_queries).
  c.method = "optical"

  c.model = ml_collections.ConfigDict()
  c.model.teacher = "embedded"          # HF directory, hub id, or 'embedded' (e5-small);
                                        # the student starts as a copy of it
  c.model.dtype = "float32"             # activations: float32 | bfloat16
  c.model.param_dtype = "float32"

  c.text = ml_collections.ConfigDict()
  c.text.src_prefix = "query: "         # student, low-resource side of the bitext
  c.text.tgt_prefix = "passage: "       # teacher, English side: the documents' prefix
  c.text.query_prefix = "query: "       # evaluation queries
  c.text.doc_prefix = "passage: "       # evaluation documents

  c.data = ml_collections.ConfigDict()
  c.data.source = "bible"               # bible | files | mix (see data/benchmarks.py)
  c.data.format = "tsv"                 # tsv | parallel | jsonl   (source=files)
  c.data.path = ""                      # tsv / jsonl file
  c.data.src_path = ""                  # parallel: source-language file
  c.data.tgt_path = ""                  # parallel: English file
  c.data.src_column = 0
  c.data.tgt_column = 1
  c.data.src_key = "src"
  c.data.tgt_key = "tgt"
  c.data.has_header = False
  c.data.on_bad_line = "error"          # error | skip (counted, reported)
  c.data.max_pairs = 0                  # 0 = all
  c.data.heldout_books = ("Acts", "Romans", "Hebrews", "James", "1 Peter", "1 John")
  # Code-switching: a fraction of the source words with a dictionary entry are
  # replaced by their English translation (deterministic in seed and step).
  c.data.codeswitch_rate = 0.0
  c.data.codeswitch_dictionary = ""     # src<TAB>en file; '' = induce from the bitext (Dice)
  c.data.codeswitch_induce_pairs = 10_000   # pairs the induction reads (memory ~ pairs)
  # source='mix': several languages' bitext ('lang:bible', 'lang:bitext:DIR',
  # 'lang:multi30k:DIR'), mixed high:low by mix_ratio or by temperature.
  c.data.mix_sources = ()
  c.data.mix_high = ()                  # the high-resource languages of mix_ratio
  c.data.mix_ratio = ""                 # 'a:b' high:low examples; '' = by temperature
  c.data.mix_temperature = 1.0          # p_l ~ n_l ** (1 / T): 1 = by size
  c.data.mix_block = 8192               # positions per exactly-mixed block
  c.data.tfds_dir = ""                  # where TFDS-prepared bitext lives ('' = TFDS's)

  c.eval = ml_collections.ConfigDict()
  c.eval.collection = "bible"           # bible | files | none | miracl | mlqa | multi30k
  c.eval.queries = ""                   # files: qid<TAB>text
  c.eval.corpus = ""                    # files: docid<TAB>text
  c.eval.qrels = ""                     # files: TREC qrels
  c.eval.metrics = ("nDCG@10", "MRR@10", "R@100")
  c.eval.k = 100
  c.eval.batch_size = 64
  c.eval.max_length = 128
  c.eval.every_steps = 0                # 0 = before and after training only
  c.eval.max_queries = 0                # 0 = all
  c.eval.max_docs = 0                   # 0 = all; else the judged ones + the first others
  # Benchmark layouts (data/benchmarks.py): one collection per language.
  c.eval.languages = ()                 # e.g. ('sw', 'yo', 'te'): metrics overall and per language
  c.eval.split = ""                     # '' = the layout's test split
  c.eval.doc_language = "en"            # mlqa / multi30k: the documents' language
  c.eval.high_languages = ()            # reported as METRIC/high, /low and /gap (high - low)
  c.eval.data_dir = ""                  # TFDS data_dir ('' = TFDS's default)
  c.eval.manual_dir = ""                # where the published files are
  c.eval.zero_shot = True               # also evaluate the teacher before distilling
  c.eval.translated_queries = ""        # translate_query: qid<TAB>English translation
  # Reuse the teacher's document vectors across runs (keyed by a hash of the
  # teacher's weights, the texts and the encoding settings): grids of runs on
  # one collection encode it once.
  c.eval.cache_dir = ""                 # '' = no cache

  c.train = ml_collections.ConfigDict()
  c.train.steps = 160
  c.train.batch_size = 32
  c.train.max_length = 64
  c.train.lr = 2e-5
  c.train.schedule = "linear"           # linear | cosine | constant
  c.train.warmup_frac = 0.1
  c.train.weight_decay = 0.01
  c.train.clip_norm = 1.0
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.eps = 1e-8
  c.train.trainable = "no_word_embeddings"   # all | no_word_embeddings | top:K | regex:P
  c.train.log_every = 10
  c.train.progress = True

  c.loss = ml_collections.ConfigDict()
  c.loss.ot_weight = 1.0
  c.loss.contrastive_weight = 1.0
  c.loss.mse_weight = 1.0               # used by optical+mse and kd_mse
  c.loss.token_mse_weight = 1.0         # used by kd_token
  c.loss.token_alignment = "mutual"     # kd_token: mutual | argmax (see losses.token_alignment)
  c.loss.temperature = 0.05
  c.loss.layer = -1

  # Multilingual pretraining terms added to the distillation loss: masked LM
  # on the source side, translation LM on the concatenated pair (see mlm.py).
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.mlm_weight = 0.0           # 0 = off
  c.pretrain.tlm_weight = 0.0           # 0 = off
  c.pretrain.mask_rate = 0.15
  c.pretrain.mask_fraction = 0.8        # of the chosen tokens: [MASK]
  c.pretrain.random_fraction = 0.1      # random token; the rest keep theirs
  c.pretrain.tlm_max_length = 0         # 0 = both sides' lengths together

  c.ot = ml_collections.ConfigDict()
  c.ot.cost = "cosine"
  c.ot.epsilon = 0.05
  c.ot.num_iterations = 50
  c.ot.lse_mode = True
  c.ot.marginals = "uniform"
  c.ot.differentiate_plan = False

  c.parallel = ml_collections.ConfigDict()
  c.parallel.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})
  c.parallel.rules = "replicated"      # replicated | fsdp | tensor | fsdp_tensor
  c.parallel.step = "shard_map"        # shard_map (jit + shardings) | pmap (pure DP)
  c.parallel.distributed = False       # jax.distributed.initialize() (multi-host)
  c.parallel.use_mesh = "auto"         # auto: a mesh when there is more than one device

  # MTOP intent detection (intent.py: the `optical_jax.intent:run` job).
  c.intent = intent.config_block()

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 50
  c.checkpoint.max_to_keep = 2
  c.checkpoint.async_save = True
  return c


class ConfigError(ValueError):
  """A config value the job cannot use; the message names the key."""


def _flat(d, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def differences(saved: dict, now: dict, defaults: dict | None = None) -> list[str]:
  """Dotted keys whose values differ between two JSON-like config records.

  A key that `saved` lacks counts as its value in `defaults` (default():
  `default().to_dict()` in JSON form): a record written before a field existed
  still matches a config that leaves the field at its default, so adding a
  config field does not orphan finished runs and checkpoints.
  """
  if defaults is None:
    defaults = _flat(json.loads(default().to_json_best_effort()))
  else:
    defaults = _flat(defaults)
  old, new = _flat(saved), _flat(now)
  missing = object()
  return sorted(k for k in old.keys() | new.keys()
                if old.get(k, defaults.get(k, missing)) != new.get(k, missing))


def _build(key: str, factory, **kwargs):
  try:
    return factory(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.{key}: {e}") from None


def resume_record(c: ml_collections.ConfigDict, keys) -> dict:
  """`{key: value}` of the dotted `keys` of `c`, in JSON form: what a checkpoint
  keeps so that resuming under another config is refused."""
  out = {}
  for key in keys:
    node = c
    for part in key.split("."):
      node = node[part]
    out[key] = node.to_dict() if hasattr(node, "to_dict") else node
  return json.loads(json.dumps(out))


def check_resumable(saved: dict, c: ml_collections.ConfigDict, keys, where) -> None:
  """Raises ConfigError, naming the first differing key, unless `saved` (a
  `resume_record`) matches `c` (see `differences`)."""
  diff = differences(saved, resume_record(c, keys))
  if diff:
    raise ConfigError(
        f"{where} holds a run with a different config.{diff[0]} (and {len(diff) - 1} more "
        "keys); resume it with the same config or use a new --workdir")


def loss_config(c: ml_collections.ConfigDict) -> losses.LossConfig:
  """`method`, `loss` and `ot` -> the LossConfig the method trains with, errors
  naming the key. Untrained methods get the `loss` block as it is."""
  ot_cfg = _build("ot", ot.OTConfig, **c.ot.to_dict())
  cfg = _build("loss", losses.LossConfig, ot=ot_cfg, **c.loss.to_dict())
  if c.method in losses.UNTRAINED:
    return cfg
  try:
    return losses.for_method(c.method, cfg)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None


def pretrain_config(c: ml_collections.ConfigDict) -> mlm.MLMConfig:
  """The `pretrain` block -> MLMConfig, errors naming the key."""
  block = dict(c.pretrain.to_dict())
  block["tlm_max_length"] = block["tlm_max_length"] or None
  return _build("pretrain", mlm.MLMConfig, **block)


def check(c: ml_collections.ConfigDict) -> None:
  """Validates the values the types alone do not (raises ConfigError)."""
  choices = {"data.source": ("bible", "files", "mix"),
             "data.format": ("tsv", "parallel", "jsonl"),
             "data.on_bad_line": ("error", "skip"),
             "eval.collection": ("bible", "files", "none", "miracl", "mlqa", "multi30k"),
             "model.dtype": ("float32", "bfloat16"), "model.param_dtype": ("float32", "bfloat16"),
             "parallel.step": ("shard_map", "pmap"), "parallel.use_mesh": ("auto", "yes", "no")}
  if c.method not in (*losses.METHODS, *losses.UNTRAINED):
    raise ConfigError(f"config.method={c.method!r}: expected one of "
                      f"{(*losses.METHODS, *losses.UNTRAINED)}")
  if c.method == "translate_query" and not c.eval.translated_queries:
    raise ConfigError("config.method='translate_query' needs config.eval.translated_queries: "
                      "a qid<TAB>English translation file of the evaluation queries")
  for key, allowed in choices.items():
    block, field = key.split(".")
    if c[block][field] not in allowed:
      raise ConfigError(f"config.{key}={c[block][field]!r}: expected one of {allowed}")
  for key in ("train.steps", "train.batch_size", "train.max_length", "eval.k",
              "eval.batch_size"):
    block, field = key.split(".")
    if c[block][field] < 1:
      raise ConfigError(f"config.{key} must be >= 1, got {c[block][field]}")
  loss_config(c)
  pretrain_config(c)
