"""The configuration every job starts from, and its checks.

Configs are `ml_collections.ConfigDict`s returned by `get_config(arg)` in a file under
`configs/`; they start from `default()` and are locked, so an override of a key that does
not exist (`--config.trian.steps=5`) is an error, not a silent new field. Every block any
job reads is defined here, once, with its default and a comment; a job reads its own block
and ignores the others. `check` turns the blocks the code consumes into typed objects and
reports a bad value by its config key. This module sits right above `core/` (it builds
core's dataclasses) and imports nothing else of the package.
"""
from __future__ import annotations

import difflib
import json

import ml_collections

from optical_jax.core import losses
from optical_jax.core import masking
from optical_jax.core import ot
from optical_jax.core import probe

# MTOP's languages (the intent block's default); `data/mtop.py` reads them.
MTOP_LANGUAGES = ("en", "de", "es", "fr", "hi", "th")


def default() -> ml_collections.ConfigDict:
  """Every field a job reads, with its default (unlocked; configs lock it)."""
  c = ml_collections.ConfigDict()
  c.seed = 0                            # data order, initialisations, masking
  # What the query encoder is: optical | optical+mse | kd_mse | kd_token
  # (distilled: see losses.METHODS for the terms each trains with), zero_shot
  # (the teacher) or translate_query (the teacher on eval.translated_queries).
  c.method = "optical"

  c.model = ml_collections.ConfigDict()
  c.model.teacher = "embedded"          # HF directory, hub id, or 'embedded' (e5-small);
                                        # the student starts as a copy of it
  c.model.dtype = "float32"             # activations and matmuls: float32 | bfloat16
  c.model.param_dtype = "float32"       # parameters: float32 | bfloat16
  # Attention: auto (cuDNN on NVIDIA GPUs in bf16 / fp16, chunked on one CPU device,
  # else xla) | xla | cudnn (an error where it cannot run) | chunked (models/attention.py)
  c.model.attention = "auto"
  c.model.attention_chunk_mib = 8.0     # chunked: float32 scores per chunk
  c.model.attention_unrolled_chunks = 16  # chunked: up to this many chunks side by side

  c.text = ml_collections.ConfigDict()
  c.text.src_prefix = "query: "         # student, low-resource side of the bitext
  c.text.tgt_prefix = "passage: "       # teacher, English side: the documents' prefix
  c.text.query_prefix = "query: "       # evaluation queries
  c.text.doc_prefix = "passage: "       # evaluation documents

  c.data = ml_collections.ConfigDict()
  c.data.source = "bible"               # bible | files | mix (see data/layouts.py)
  c.data.language = "ny"                # source=bible: the Bible's language (data/bible.py
                                        # LANGUAGES); also eval.collection=bible's queries
  c.data.format = "tsv"                 # tsv | parallel | jsonl   (source=files, bitext: mixes)
  c.data.path = ""                      # tsv / jsonl file
  c.data.src_path = ""                  # parallel: source-language file
  c.data.tgt_path = ""                  # parallel: English file
  c.data.src_column = 0                 # tsv: the source column (0-based)
  c.data.tgt_column = 1                 # tsv: the English column
  c.data.num_columns = 0                # tsv: columns every line has; 0 = up to the last used
  c.data.src_key = "src"                # jsonl: the source field
  c.data.tgt_key = "tgt"                # jsonl: the English field
  c.data.has_header = False             # tsv: skip the first line
  c.data.on_bad_line = "error"          # error (file:line) | skip (counted, reported)
  c.data.max_pairs = 0                  # the first N pairs (per language in a mix); 0 = all
  # The embedded Bible: these books are held out (their verses are the evaluation
  # queries and documents), the others are bitext.
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
  # Where TFDS-prepared datasets live, for every builder (mixed bitext, benchmark
  # collections, MTOP); '' = TFDS's default.
  c.data.tfds_dir = ""

  c.eval = ml_collections.ConfigDict()
  c.eval.collection = "bible"           # bible | files | none | miracl | mlqa | multi30k
  c.eval.queries = ""                   # files: qid<TAB>text (or BEIR .jsonl)
  c.eval.corpus = ""                    # files: docid<TAB>text (or BEIR .jsonl)
  c.eval.qrels = ""                     # files: TREC qrels
  c.eval.metrics = ("nDCG@10", "MRR@10", "R@100")   # ir-measures names
  c.eval.k = 100                        # documents retrieved per query
  c.eval.batch_size = 64                # texts per encoder call
  c.eval.max_length = 128               # tokens per query / document
  c.eval.every_steps = 0                # also evaluate every N steps; 0 = before and after only
  c.eval.max_queries = 0                # 0 = all
  c.eval.max_docs = 0                   # 0 = all; else the judged ones + the first others
  # Benchmark layouts (data/layouts.py): one collection per language.
  c.eval.languages = ()                 # e.g. ('sw', 'yo', 'te'): metrics overall and per language
  c.eval.split = ""                     # '' = the layout's test split
  c.eval.doc_language = "en"            # mlqa / multi30k: the documents' language
  c.eval.high_languages = ()            # reported as METRIC/high, /low and /gap (high - low)
  c.eval.low_languages = ()             # the /low languages; () = every one not high
  c.eval.manual_dir = ""                # where the benchmark's published files are
  c.eval.zero_shot = True               # also evaluate the teacher before distilling
  c.eval.translated_queries = ""        # translate_query: qid<TAB>English translation
  # Reuse the teacher's document vectors across runs (keyed by a hash of the
  # teacher's weights, the texts and the encoding settings): grids of runs on
  # one collection encode it once.
  c.eval.cache_dir = ""                 # '' = no cache

  c.train = ml_collections.ConfigDict()
  c.train.steps = 160                   # optimizer steps
  c.train.batch_size = 32               # pairs (triples) per step, over all devices
  c.train.max_length = 64               # tokens per side; longer texts are truncated (counted)
  c.train.lr = 2e-5                     # peak learning rate
  c.train.schedule = "linear"           # decay after warm-up: linear | cosine | constant
  c.train.warmup_frac = 0.1             # linear warm-up over this fraction of the steps
  c.train.weight_decay = 0.01           # AdamW's decoupled weight decay
  c.train.clip_norm = 1.0               # global-norm gradient clipping; 0 = none
  c.train.b1, c.train.b2, c.train.eps = 0.9, 0.999, 1e-8   # AdamW
  c.train.trainable = "no_word_embeddings"   # all | no_word_embeddings | top:K | regex:P
  c.train.log_every = 10                # metrics.jsonl / TensorBoard every N steps
  c.train.progress = True               # progress bars
  c.train.token_packing = "auto"        # skip padding in the encoders: on | off | auto (1 CPU)

  c.loss = ml_collections.ConfigDict()
  c.loss.ot_weight = 1.0                # OT <P, C> (methods optical, optical+mse)
  c.loss.contrastive_weight = 1.0       # in-batch InfoNCE, every trained method; 0 = off
  c.loss.mse_weight = 1.0               # pooled MSE (optical+mse, kd_mse)
  c.loss.token_mse_weight = 1.0         # token MSE under a hard alignment (kd_token)
  c.loss.token_alignment = "mutual"     # kd_token: mutual | argmax (see losses.token_alignment)
  c.loss.temperature = 0.05             # InfoNCE: cosine / temperature
  c.loss.layer = -1                     # the layer whose tokens OT aligns (-1 = last)
  c.loss.extra_ot_layers = ()           # more layers OT aligns too (averaged), e.g. (-4,)
  # Each alignment term also pulls the student's reading of the English side onto the
  # teacher's: on | off | auto (kd_mse only: the sentence-transformers recipe).
  c.loss.english_side = "auto"

  # Multilingual pretraining terms added to the distillation loss: masked LM
  # on the source side, translation LM on the concatenated pair (core/masking.py).
  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.mlm_weight = 0.0           # 0 = off
  c.pretrain.tlm_weight = 0.0           # 0 = off
  c.pretrain.mask_rate = 0.15           # of the maskable tokens of each sequence
  c.pretrain.mask_fraction = 0.8        # of the chosen tokens: [MASK]
  c.pretrain.random_fraction = 0.1      # random token; the rest keep theirs
  c.pretrain.tlm_max_length = 0         # 0 = both sides' lengths together

  # The OT alignment (core/ot.py: OTConfig says why each default is what it is).
  c.ot = ml_collections.ConfigDict()
  c.ot.cost = "cosine"                  # cosine (1 - cos, in [0, 2]) | sqeuclidean
  c.ot.epsilon = 0.05                   # absolute entropic regularisation, in cost units
  c.ot.num_iterations = 50              # Sinkhorn iterations, fixed (no early stop)
  c.ot.lse_mode = True                  # log-domain updates (kernel mode underflows)
  c.ot.marginals = "uniform"            # uniform | no_special | idf
  c.ot.differentiate_plan = False       # gradients through the plan too (unrolled)
  c.ot.threshold = 1e-3                 # marginal error reported as converged (diagnostic)

  c.parallel = ml_collections.ConfigDict()
  c.parallel.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})   # -1 = the rest
  c.parallel.rules = "replicated"       # replicated | fsdp | tensor | fsdp_tensor, or
                                        # ((logical axis, mesh axis), ...) pairs
  c.parallel.step = "shard_map"         # shard_map (jit + shardings) | pmap (pure DP)
  c.parallel.distributed = False        # jax.distributed.initialize() (multi-host)
  # Where the cluster does not say (Cloud TPU, SLURM and Open MPI do): process 0's
  # host:port, the number of processes and this one's index (each process its own).
  c.parallel.coordinator = ""
  c.parallel.num_processes = 0          # 0: detected from the cluster
  c.parallel.process_id = -1            # -1: detected from the cluster
  c.parallel.use_mesh = "auto"          # auto: a mesh when there is more than one device

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 50         # save every N steps (and at the end, and on SIGTERM)
  c.checkpoint.max_to_keep = 2          # the newest N checkpoints stay
  c.checkpoint.async_save = True        # write in the background while training goes on

  # --mode=teacher: train an English retrieval teacher on triples (jobs/teacher.py).
  c.teacher = ml_collections.ConfigDict()
  c.teacher.source = "files"            # files (MS MARCO layouts) | bible (embedded KJV)
  c.teacher.format = "text"             # text: query<TAB>pos<TAB>neg | ids: qid<TAB>pid<TAB>pid
  c.teacher.triples = ""                # triples.train.small.tsv | qidpidtriples.train.full.tsv
  c.teacher.queries = ""                # ids: queries.train.tsv (id<TAB>text)
  c.teacher.corpus = ""                 # ids: collection.tsv (id<TAB>text)
  c.teacher.on_bad_line = "error"       # error (file:line) | skip (counted, reported)
  c.teacher.max_pairs = 0               # triples used (the first ones); 0 = all
  c.teacher.scoring = "dense"           # dense | late_interaction
  c.teacher.temperature = 0.05          # dense: 0.01-0.05; late_interaction: ~1
  c.teacher.query_max_length = 32       # query tokens; passages get train.max_length
  c.teacher.query_words = 3             # bible: a query is this many rare words of a verse

  # The calibration job (jobs/calibration.py): Platt scaling fitted on a dev
  # split of the queries, ECE / Brier / reliability diagrams on the rest.
  c.calibration = ml_collections.ConfigDict()
  c.calibration.dev_fraction = 0.5      # queries the scaling is fitted on
  c.calibration.n_bins = 15             # reliability bins
  c.calibration.strategy = "uniform"    # uniform | quantile bins
  c.calibration.split_seed = 0          # the dev / test split, the same for every cell
  c.calibration.fit_language = ""       # several languages: the one whose dev half fits the
                                        # scaling every language is judged with ('' = data.language)

  # MTOP intent detection (jobs/intent.py): a classifier on the frozen
  # teacher's English utterance vectors, students swapped in underneath.
  c.intent = ml_collections.ConfigDict()
  c.intent.manual_dir = ""              # the unzipped release: <manual_dir>/mtop/<lang>/<split>.txt
  c.intent.languages = MTOP_LANGUAGES   # evaluated; accuracy = mean over those != train_lang
  c.intent.train_lang = "en"            # the head's training language (teacher vectors)
  c.intent.train_split = "train"        # train | eval | test
  c.intent.eval_split = "test"          # train | eval | test
  c.intent.max_train = 0                # first N training utterances; 0 = all
  c.intent.max_eval = 0                 # first N evaluation utterances per language; 0 = all
  c.intent.unknown_intents = "wrong"    # wrong (scored as errors) | exclude; counted either way
  c.intent.max_length = 64              # tokens per utterance (MTOP's are short)
  c.intent.hidden = 0                   # 0 = linear softmax; else one ReLU layer this wide
  c.intent.lr = 1e-3                    # peak AdamW learning rate (cosine decay)
  c.intent.epochs = 20                  # passes over the training utterances
  c.intent.batch_size = 64              # utterances per step
  c.intent.weight_decay = 1e-4          # on the weight matrices only
  c.intent.scaling = "global"           # global | feature | none (see probe.HeadConfig)

  # --mode=experiment: a grid of runs (research/cells.py). Experiment configs
  # fill it; a job's own config ignores it.
  c.experiment = ml_collections.ConfigDict()
  c.experiment.grid = ()                # ((name, {dotted key: value}), ...); {} = the base config
  c.experiment.seeds = (0,)             # every cell runs once per seed (config.seed = seed)
  c.experiment.baseline = ""            # the cell every other is tested against; '' = the first
  c.experiment.also_against = ()        # more cells to test every other against (a table each)
  c.experiment.metrics = ()             # what is reported; () = eval.metrics
  # The job's results[it] is reported and its eval/<it>.run tested; '' = each
  # cell's method (the key the jobs file a query encoder's results under).
  c.experiment.runs_to_compare = ""
  c.experiment.job = "distill"          # a --mode name, or 'package.module:function'
  c.experiment.qrels = ""               # qrels of the tests; '' = the eval collection's
  c.experiment.n_permutations = 10_000  # of the randomization test
  c.experiment.alpha = 0.05             # significance level of the mark
  return c


class ConfigError(ValueError):
  """A config value the job cannot use; the message names the key."""


def flatten(d, prefix: str = "") -> dict:
  """`{'a': {'b': 1}}` -> `{'a.b': 1}`."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
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
  defaults = flatten(json.loads(default().to_json_best_effort()) if defaults is None else defaults)
  old, new = flatten(saved), flatten(now)
  missing = object()
  return sorted(k for k in old.keys() | new.keys()
                if old.get(k, defaults.get(k, missing)) != new.get(k, missing))


def _build(key: str, factory, **kwargs):
  try:
    return factory(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.{key}: {e}") from None


# Fields that do not change a run's result: logging, where prepared data is
# cached, how attention is computed on the platform at hand, whether encoders
# skip padding. Records leave them out.
NOT_RECORDED = ("train.log_every", "train.progress", "data.tfds_dir", "model.attention",
                "model.attention_chunk_mib", "model.attention_unrolled_chunks",
                "eval.cache_dir", "eval.batch_size", "eval.every_steps", "train.token_packing")


def resume_record(c: ml_collections.ConfigDict, keys) -> dict:
  """`{key: value}` of the dotted `keys` of `c` in JSON form, less `NOT_RECORDED`:
  what a run records so that continuing it under another config is refused."""
  out = {}
  for key in keys:
    node = c
    for part in key.split("."):
      node = node[part]
    out[key] = node.to_dict() if hasattr(node, "to_dict") else node
  out = json.loads(json.dumps(out))
  for key in NOT_RECORDED:
    block, _, field = key.partition(".")
    if isinstance(out.get(block), dict):
      out[block].pop(field, None)
  return out


def check_resumable(saved: dict, c: ml_collections.ConfigDict, keys, where) -> None:
  """Raises ConfigError, naming the first differing key, unless `saved` (a
  `resume_record`) matches `c` (see `differences`). `train.steps` may differ:
  whether a run may continue with other steps is the workdir's check
  (`training/workdir.py`), which knows the steps done."""
  keys = tuple(keys)
  # Only `keys` are compared: a checkpoint may record more (the run's training
  # record) than a reader of its student needs to match.
  saved = {k: v for k, v in flatten(saved).items()
           if any(k == key or k.startswith(key + ".") for key in keys)}
  diff = [k for k in differences(saved, resume_record(c, keys)) if k != "train.steps"]
  if diff:
    raise ConfigError(
        f"{where} holds a run with a different config.{diff[0]} (and {len(diff) - 1} more "
        "keys); resume it with the same config or use a new --workdir")


def ot_config(c: ml_collections.ConfigDict) -> ot.OTConfig:
  """The `ot` block -> OTConfig, errors naming the key."""
  return _build("ot", ot.OTConfig, **c.ot.to_dict())


def loss_config(c: ml_collections.ConfigDict) -> losses.LossConfig:
  """`method`, `loss` and `ot` -> the LossConfig the method trains with, errors
  naming the key. Untrained methods get the `loss` block as it is."""
  block = dict(c.loss.to_dict(), extra_ot_layers=tuple(c.loss.extra_ot_layers))
  cfg = _build("loss", losses.LossConfig, method=c.method, ot=ot_config(c), **block)
  if c.method in losses.UNTRAINED:
    return cfg
  try:
    return losses.for_method(c.method, cfg)
  except ValueError as e:
    raise ConfigError(f"config.{e}") from None


def pretrain_config(c: ml_collections.ConfigDict) -> masking.MLMConfig:
  """The `pretrain` block -> MLMConfig, errors naming the key."""
  block = dict(c.pretrain.to_dict())
  block["tlm_max_length"] = block["tlm_max_length"] or None
  return _build("pretrain", masking.MLMConfig, **block)


def intent_head_config(c: ml_collections.ConfigDict) -> probe.HeadConfig:
  """The `intent` block's classifier fields -> HeadConfig, errors naming the key."""
  b = c.intent
  try:
    return probe.HeadConfig(hidden=b.hidden, lr=b.lr, epochs=b.epochs, batch_size=b.batch_size,
                            weight_decay=b.weight_decay, scaling=b.scaling)
  except (ValueError, TypeError) as e:   # its message starts with the field's name
    raise ConfigError(f"config.intent.{e}") from None


def check_keys(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a block or field `default()` does not have (a typo in
  an unlocked config, e.g. in a notebook), or one it lacks."""
  ref = default()

  def unknown(where: str, key: str, known) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {where}{close[0]}?" if close else ""
    return ConfigError(f"config.{where}{key}: unknown key{hint}")

  for key in c.keys():
    if key not in ref:
      raise unknown("", key, ref.keys())
  for key in ref.keys():
    if key not in c:
      raise ConfigError(f"config.{key} is missing: start the config from config.default()")
    if isinstance(ref[key], ml_collections.ConfigDict):
      for field in c[key].keys():
        if field not in ref[key]:
          raise unknown(f"{key}.", field, ref[key].keys())
      for field in (f for f in ref[key].keys() if f not in c[key]):
        raise ConfigError(f"config.{key}.{field} is missing: start from config.default()")


def check(c: ml_collections.ConfigDict) -> None:
  """Validates the values the types alone do not (raises ConfigError)."""
  check_keys(c)
  choices = {"data.source": ("bible", "files", "mix"),
             "data.format": ("tsv", "parallel", "jsonl"), "data.on_bad_line": ("error", "skip"),
             "eval.collection": ("bible", "files", "none", "miracl", "mlqa", "multi30k"),
             "model.dtype": ("float32", "bfloat16"), "model.param_dtype": ("float32", "bfloat16"),
             "model.attention": ("auto", "xla", "cudnn", "chunked"),
             "parallel.step": ("shard_map", "pmap"), "parallel.use_mesh": ("auto", "yes", "no"),
             "train.token_packing": ("auto", "on", "off")}
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
  least = {"model.attention_unrolled_chunks": 0, **dict.fromkeys((   # the least value each takes
      "train.steps", "train.batch_size", "train.max_length", "eval.k", "eval.batch_size",
      "eval.max_length", "checkpoint.every_steps", "checkpoint.max_to_keep", "train.log_every"), 1)}
  for key, low in least.items():
    block, field = key.split(".")
    if c[block][field] < low:
      why = (" (0 would delete every checkpoint, the last one too)"
             if key == "checkpoint.max_to_keep" else "")
      raise ConfigError(f"config.{key} must be >= {low}, got {c[block][field]}{why}")
  for block, field in (("train", "lr"), ("model", "attention_chunk_mib")):
    if not c[block][field] > 0:
      raise ConfigError(f"config.{block}.{field} must be > 0, got {c[block][field]}")
  if not 0 <= c.train.warmup_frac < 1:
    raise ConfigError(f"config.train.warmup_frac must be in [0, 1), got {c.train.warmup_frac}")
  needed = {}
  if c.data.source == "files":
    needed["data"] = (("src_path", "tgt_path") if c.data.format == "parallel" else ("path",))
  if c.eval.collection == "files":
    needed["eval"] = ("queries", "corpus", "qrels")
  for block, fields in needed.items():
    for field in fields:
      if not c[block][field]:
        what = f"{block}.source" if block == "data" else f"{block}.collection"
        raise ConfigError(f"config.{block}.{field} is empty: config.{what}='files'"
                          + (f" with format={c.data.format!r}" if block == "data" else "")
                          + " reads it")
  loss_config(c)
  pretrain_config(c)


_TEACHER_CHOICES = {"source": ("bible", "files"), "format": ("text", "ids"),
                    "on_bad_line": ("error", "skip"), "scoring": losses.SCORINGS}


def check_teacher(c: ml_collections.ConfigDict) -> None:
  """`check` and the `teacher` block's values (raises ConfigError naming the key)."""
  check(c)
  block = c.teacher
  for key, allowed in _TEACHER_CHOICES.items():
    if block[key] not in allowed:
      raise ConfigError(f"config.teacher.{key}={block[key]!r}: expected one of {allowed}")
  if not float(block.temperature) > 0:
    raise ConfigError(f"config.teacher.temperature={block.temperature!r}: must be > 0")
  for key, low in (("max_pairs", 0), ("query_max_length", 1), ("query_words", 1)):
    if not isinstance(block[key], int) or block[key] < low:
      raise ConfigError(f"config.teacher.{key}={block[key]!r}: expected an int >= {low}")
  if block.source == "files":
    needed = ("triples",) + (("queries", "corpus") if block.format == "ids" else ())
    for key in needed:
      if not block[key]:
        raise ConfigError(f"config.teacher.{key} is empty: teacher.source='files' with "
                          f"format={block.format!r} reads it")
