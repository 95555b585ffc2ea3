"""Zero-shot cross-lingual intent detection on MTOP: a head on frozen sentence vectors.

The research question: does OT distillation carry over to a task it was not
trained for better than plain knowledge distillation? The protocol:

1. The frozen teacher encodes the English training utterances (pooled,
   L2-normalised, with `config.text.query_prefix`); a softmax classifier
   (linear, or one hidden layer) is trained on them. Its label vocabulary is
   the set of intents of that split.
2. The teacher, then the distilled student (`distill.run`, whatever
   `config.method` distills), encodes the evaluation utterances of every
   language; the same head classifies them. Only the encoder changes, so the
   accuracy gap between the two is what the distillation did to the space.

Utterances whose intent the English training split never shows cannot be
classified correctly. They are counted per language and reported; by default
(`intent.unknown_intents='wrong'`) they stay in the denominator, as in the
usual MTOP intent accuracy, or they are left out (`'exclude'`).

The job `run(config, workdir)` ('optical_jax.intent:run' in an experiment)
writes WORKDIR/intent/:

  results.json                 metrics per query encoder, data counts, intents
  results.md                   accuracy per language, and the data counts
  predictions/<entry>/<lang>.tsv   id, gold, predicted: for paired tests later

and returns {'zero_shot': metrics, 'optical': metrics, ...}; metrics are
'accuracy' (mean over the evaluated languages other than the training one)
and 'accuracy/<lang>' (the training language too, for reference).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
import shutil
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from optical_jax import config as config_lib

log = logging.getLogger(__name__)

# Kept here rather than imported from the builder: `config.default()` calls
# `config_block`, and TFDS should load only when MTOP is read.
LANGUAGES = ("en", "de", "es", "fr", "hi", "th")
SPLITS = ("train", "eval", "test")
UNKNOWN_POLICIES = ("wrong", "exclude")
SCALINGS = ("global", "feature", "none")
UNKNOWN = -1  # the label of an intent outside the vocabulary
_ENTRIES = {"zero_shot": "teacher, zero-shot", "optical": "student"}


# ------------------------------------------------------------------ data


@dataclasses.dataclass(frozen=True)
class Utterances:
  """One language's split of MTOP, in file order.

  Attributes:
    lang: language code ('en', 'de', ...).
    split: 'train', 'eval' or 'test'.
    ids: [N] utterance ids, shared by the translations of an utterance.
    texts: [N] utterances.
    intents: [N] gold intents ('IN:GET_WEATHER').
  """
  lang: str
  split: str
  ids: tuple[str, ...]
  texts: tuple[str, ...]
  intents: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.ids)


def read_mtop(lang: str, split: str, *, data_dir: str | None = None,
              manual_dir: str | None = None, limit: int = 0) -> Utterances:
  """MTOP utterances of one language and split, through the `mtop` TFDS builder.

  Args:
    lang: one of `LANGUAGES`.
    split: one of `SPLITS`.
    data_dir: where the prepared dataset lives (TFDS's default when None or '').
    manual_dir: the unzipped release (`<manual_dir>/mtop/<lang>/<split>.txt`).
    limit: the first `limit` utterances only (0 = all), for quick runs.

  Raises:
    ManualDataError: the release files are not in `manual_dir` (they are listed).
  """
  from optical_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top  (TFDS)
  from optical_jax.data.tfds_builders import _base  # pylint: disable=g-import-not-at-top
  source = tfds_builders.load("mtop", lang, data_dir or None, manual_dir or None, split=split)
  n = min(limit, len(source)) if limit else len(source)
  rows = [source[i] for i in range(n)]
  return Utterances(lang, split, *(tuple(_base.text(r[k]) for r in rows)
                                   for k in ("id", "utterance", "intent")))


def label_vocab(intents: Sequence[str]) -> tuple[str, ...]:
  """The label vocabulary: the distinct intents of the training split, sorted.

  Sorted, so that label i means the same intent whatever the file order.
  """
  if not intents:
    raise ValueError("no training intents to build the label vocabulary from")
  return tuple(sorted(set(intents)))


def encode_labels(intents: Sequence[str], vocab: Sequence[str]
                  ) -> tuple[np.ndarray, dict[str, int]]:
  """Intents -> label ids, and the intents outside the vocabulary with their counts.

  Returns:
    ([N] int32 labels, `UNKNOWN` (-1) where the intent is not in `vocab`;
     {intent: count} of those, most frequent first).
  """
  index = {intent: i for i, intent in enumerate(vocab)}
  labels = np.array([index.get(i, UNKNOWN) for i in intents], np.int32)
  unknown: dict[str, int] = {}
  for intent in intents:
    if intent not in index:
      unknown[intent] = unknown.get(intent, 0) + 1
  return labels, dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------------ the classifier


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """How the classifier is trained (the `intent` block's fields of the same names).

  Attributes:
    hidden: units of one ReLU hidden layer; 0 = a linear softmax classifier.
    lr: peak AdamW learning rate (cosine decay to 0 over the run).
    epochs: passes over the training set.
    batch_size: utterances per step.
    weight_decay: AdamW's decoupled weight decay, on the weight matrices only.
    scaling: what the features go through before the head, with statistics of
      the training vectors: 'global' centres them and divides by one number, so
      that a feature's variance is 1 on average (e5-style vectors sit in a
      narrow cone, with per-feature spreads of ~0.03 that a unit-scale
      optimiser crawls through); 'feature' standardises each feature on its
      own, which also amplifies the directions in which the training language
      barely varies, where another language's vectors may well differ; 'none'.
  """
  hidden: int = 0
  lr: float = 1e-3
  epochs: int = 20
  batch_size: int = 64
  weight_decay: float = 1e-4
  scaling: str = "global"

  def __post_init__(self):
    if self.scaling not in SCALINGS:
      raise ValueError(f"scaling={self.scaling!r}: expected one of {SCALINGS}")
    for name, ok, need in (("hidden", self.hidden >= 0, ">= 0"), ("lr", self.lr > 0, "> 0"),
                           ("epochs", self.epochs >= 1, ">= 1"),
                           ("batch_size", self.batch_size >= 1, ">= 1"),
                           ("weight_decay", self.weight_decay >= 0, ">= 0")):
      if not ok:
        raise ValueError(f"{name}={getattr(self, name)!r}: must be {need}")


# The params are a plain pytree:
#   {'mean': [D], 'inv_std': [D], 'layers': [{'w': [D_in, D_out], 'b': [D_out]}, ...]}
# with one layer (linear) or two (hidden); mean / inv_std are fixed, not trained.
Params = dict[str, Any]


def _forward(layers: Sequence[Mapping[str, jax.Array]], x: jax.Array) -> jax.Array:
  for layer in layers[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  return x @ layers[-1]["w"] + layers[-1]["b"]


def logits(params: Params, features: jax.Array) -> jax.Array:
  """[N, D] sentence vectors -> [N, C] class logits (float32)."""
  x = (jnp.asarray(features, jnp.float32) - params["mean"]) * params["inv_std"]
  return _forward(params["layers"], x)


def _weighted_ce(layers, x: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
  ce = optax.softmax_cross_entropy_with_integer_labels(_forward(layers, x), labels)
  return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def cross_entropy(params: Params, features: jax.Array, labels: jax.Array,
                  weights: jax.Array | None = None) -> jax.Array:
  """Mean (or `weights`-weighted mean) softmax cross-entropy, a scalar.

  Args:
    params: the classifier.
    features: [N, D] sentence vectors.
    labels: [N] int label ids in [0, C).
    weights: [N] per-example weights (0 leaves an example out); default all 1.
  """
  x = (jnp.asarray(features, jnp.float32) - params["mean"]) * params["inv_std"]
  labels = jnp.asarray(labels, jnp.int32)
  w = jnp.ones(labels.shape, jnp.float32) if weights is None else jnp.asarray(weights,
                                                                              jnp.float32)
  return _weighted_ce(params["layers"], x, labels, w)


def train_step(tx: optax.GradientTransformation, layers, opt_state, x: jax.Array,
               labels: jax.Array, weights: jax.Array):
  """One AdamW step on a (standardised) batch; pure: (layers, opt_state, loss).

  Args:
    x: [B, D] standardised features; labels: [B] ids; weights: [B], 0 on the
      padding rows of the last batch (one batch shape, one compilation).
  """
  loss, grads = jax.value_and_grad(_weighted_ce)(layers, x, labels, weights)
  updates, opt_state = tx.update(grads, opt_state, layers)
  return optax.apply_updates(layers, updates), opt_state, loss


_jit_train_step = jax.jit(train_step, static_argnums=0)


@functools.lru_cache(maxsize=8)
def _optimizer(cfg: HeadConfig, steps: int) -> optax.GradientTransformation:
  # Cached: the jitted step is compiled per optimizer object, and the same
  # settings (a rerun, the seeds of a grid) should reuse that compilation.
  return optax.adamw(optax.cosine_decay_schedule(cfg.lr, steps), weight_decay=cfg.weight_decay,
                     mask=lambda p: [{"w": True, "b": False} for _ in p])


def _init_layers(key: jax.Array, dim: int, num_classes: int, hidden: int) -> list[dict]:
  sizes = [dim] + ([hidden] if hidden else []) + [num_classes]
  keys = jax.random.split(key, len(sizes) - 1)
  layers = []
  for i, (k, d_in, d_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    last = i == len(sizes) - 2
    # The output layer starts at zero (uniform predictions, no init noise in the
    # linear probe); a hidden layer needs random weights to break symmetry.
    w = (jnp.zeros((d_in, d_out), jnp.float32) if last
         else jax.random.normal(k, (d_in, d_out), jnp.float32) / np.sqrt(d_in))
    layers.append({"w": w, "b": jnp.zeros((d_out,), jnp.float32)})
  return layers


def train_classifier(features: np.ndarray, labels: np.ndarray, cfg: HeadConfig, seed: int,
                     *, num_classes: int | None = None) -> Params:
  """Trains the softmax head with AdamW and cross-entropy; deterministic in `seed`.

  Args:
    features: [N, D] sentence vectors.
    labels: [N] label ids in [0, C) (no `UNKNOWN`).
    cfg: the training settings.
    seed: the initialisation and the order of the minibatches (a fresh
      permutation each epoch).
    num_classes: C; default `labels.max() + 1`.

  Returns:
    The params (numpy arrays), for `logits` / `predict`.
  """
  x = np.asarray(features, np.float32)
  y = np.asarray(labels, np.int32)
  if x.ndim != 2 or y.shape != (len(x),) or not len(x):
    raise ValueError(f"need features [N, D] and labels [N], got {x.shape} and {y.shape}")
  num_classes = int(num_classes or y.max() + 1)
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f"labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
  mean, inv_std = np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
  if cfg.scaling != "none":
    # The epsilon keeps a feature that never varies (or a single example) finite.
    mean, var = x.mean(0), x.var(0)
    spread = var if cfg.scaling == "feature" else np.full_like(var, var.mean())
    inv_std = 1.0 / np.sqrt(spread + 1e-6)
  xs = jnp.asarray((x - mean) * inv_std)

  rows = min(cfg.batch_size, len(x))
  per_epoch = -(-len(x) // rows)
  steps = cfg.epochs * per_epoch
  tx = _optimizer(cfg, steps)
  layers = _init_layers(jax.random.key(seed), x.shape[1], num_classes, cfg.hidden)
  opt_state = tx.init(layers)
  rng = np.random.default_rng(seed)
  loss = jnp.nan
  for _ in range(cfg.epochs):
    order = rng.permutation(len(x))
    pad = per_epoch * rows - len(x)
    order = np.concatenate([order, order[:pad]])
    weights = np.ones(len(order), np.float32)
    weights[len(x):] = 0.0
    for b in range(per_epoch):
      idx = order[b * rows:(b + 1) * rows]
      layers, opt_state, loss = _jit_train_step(tx, layers, opt_state, xs[idx], y[idx],
                                                weights[b * rows:(b + 1) * rows])
  log.info("intent head: %d steps, last batch loss %.4f", steps, float(loss))
  return {"mean": np.asarray(mean, np.float32), "inv_std": np.asarray(inv_std, np.float32),
          "layers": jax.tree.map(np.asarray, layers)}


def predict(params: Params, features: np.ndarray) -> np.ndarray:
  """[N, D] sentence vectors -> [N] int32 predicted label ids."""
  return np.asarray(jnp.argmax(logits(params, features), axis=-1), np.int32)


def accuracy(predicted: np.ndarray, labels: np.ndarray, *, exclude_unknown: bool = False
             ) -> float:
  """Fraction of `predicted` [N] equal to `labels` [N].

  An `UNKNOWN` label never matches, so it counts as an error unless
  `exclude_unknown` leaves it out. Raises ValueError when nothing is left.
  """
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  if predicted.shape != labels.shape:
    raise ValueError(f"predicted {predicted.shape} and labels {labels.shape} differ")
  keep = labels != UNKNOWN if exclude_unknown else np.ones(labels.shape, bool)
  if not keep.any():
    raise ValueError("no utterances to score" + (" with an intent in the vocabulary"
                                                  if exclude_unknown else ""))
  return float(np.mean(predicted[keep] == labels[keep]))


# ------------------------------------------------------------------ config


def config_block() -> ml_collections.ConfigDict:
  """The `intent` block with its defaults (`c.intent = intent.config_block()`)."""
  b = ml_collections.ConfigDict()
  b.data_dir = ""                  # prepared TFDS datasets; '' = TFDS's default
  b.manual_dir = ""                # the unzipped release: <manual_dir>/mtop/<lang>/<split>.txt
  b.languages = LANGUAGES          # evaluated; accuracy = mean over those != train_lang
  b.train_lang = "en"              # the head's training language (teacher vectors)
  b.train_split = "train"
  b.eval_split = "test"
  b.max_train = 0                  # first N training utterances; 0 = all
  b.max_eval = 0                   # first N evaluation utterances per language; 0 = all
  b.unknown_intents = "wrong"      # wrong (scored as errors) | exclude; counted either way
  b.max_length = 64                # tokens per utterance (MTOP's are short)
  b.hidden = 0                     # 0 = linear softmax; else one ReLU layer this wide
  b.lr = 1e-3
  b.epochs = 20
  b.batch_size = 64
  b.weight_decay = 1e-4
  b.scaling = "global"             # global | feature | none: see HeadConfig
  return b


def check_block(config: ml_collections.ConfigDict) -> None:
  """Validates `config.intent` (raises config.ConfigError naming the key)."""
  if "intent" not in config:
    raise config_lib.ConfigError("config.intent is missing: add intent.config_block()")
  b = config.intent

  def bad(key: str, why: str):
    raise config_lib.ConfigError(f"config.intent.{key}={b[key]!r}: {why}")

  langs = tuple(b.languages)
  if not langs or len(set(langs)) != len(langs) or set(langs) - set(LANGUAGES):
    bad("languages", f"need distinct languages of {LANGUAGES}")
  if b.train_lang not in LANGUAGES:
    bad("train_lang", f"expected one of {LANGUAGES}")
  if not set(langs) - {b.train_lang}:
    bad("languages", f"need a language other than train_lang={b.train_lang!r} to transfer to")
  for key in ("train_split", "eval_split"):
    if b[key] not in SPLITS:
      bad(key, f"expected one of {SPLITS}")
  if b.unknown_intents not in UNKNOWN_POLICIES:
    bad("unknown_intents", f"expected one of {UNKNOWN_POLICIES}")
  for key in ("max_train", "max_eval"):
    if b[key] < 0:
      bad(key, "must be >= 0 (0 = all)")
  if b.max_length < 1:
    bad("max_length", "must be >= 1")
  try:
    head_config(config)
  except (ValueError, TypeError) as e:   # its message starts with the field's name
    raise config_lib.ConfigError(f"config.intent.{e}") from None


def head_config(config: ml_collections.ConfigDict) -> HeadConfig:
  """The `intent` block's training fields as a HeadConfig."""
  b = config.intent
  return HeadConfig(**{f.name: b[f.name] for f in dataclasses.fields(HeadConfig)})


# ------------------------------------------------------------------ the job


def _eval_languages(b: ml_collections.ConfigDict) -> list[str]:
  return [lang for lang in b.languages if lang != b.train_lang]


def score(params: Params, vocab: Sequence[str], features: Mapping[str, np.ndarray],
          data: Mapping[str, Utterances], config: ml_collections.ConfigDict
          ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Accuracy per language of one query encoder's vectors.

  Args:
    params: the head.
    vocab: its label vocabulary.
    features: lang -> [N_lang, D] vectors of `data[lang]`.
    data: lang -> that language's evaluation utterances.
    config: the job config (`intent.train_lang`, `intent.unknown_intents`).

  Returns:
    (metrics {'accuracy', 'accuracy/<lang>'}, lang -> [N_lang] predicted ids).
  """
  b = config.intent
  exclude = b.unknown_intents == "exclude"
  metrics, predicted = {}, {}
  for lang, utts in data.items():
    predicted[lang] = predict(params, features[lang])
    labels, _ = encode_labels(utts.intents, vocab)
    try:
      metrics[f"accuracy/{lang}"] = accuracy(predicted[lang], labels, exclude_unknown=exclude)
    except ValueError as e:
      raise ValueError(f"MTOP {lang} {utts.split}: {e}; set config.intent.unknown_intents="
                       "'wrong' or another eval_split") from None
  metrics["accuracy"] = float(np.mean([metrics[f"accuracy/{lang}"]
                                       for lang in _eval_languages(b)]))
  return dict(sorted(metrics.items())), predicted


def write_predictions(directory: pathlib.Path, utts: Utterances, predicted: np.ndarray,
                      vocab: Sequence[str]) -> pathlib.Path:
  """<directory>/<lang>.tsv: a header, then id, gold intent, predicted intent per line."""
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / f"{utts.lang}.tsv"
  lines = ["id\tgold\tpredicted"] + [f"{i}\t{g}\t{vocab[p]}"
                                     for i, g, p in zip(utts.ids, utts.intents, predicted)]
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def read_predictions(path: str | pathlib.Path) -> dict[str, tuple[str, str]]:
  """A predictions file -> {id: (gold, predicted)}: per-utterance pairs for paired tests."""
  rows = pathlib.Path(path).read_text(encoding="utf-8").splitlines()[1:]
  return {i: (g, p) for i, g, p in (r.split("\t") for r in rows if r)}


def results_table(results: Mapping[str, Any], config: ml_collections.ConfigDict) -> str:
  """Markdown: a row per query encoder, a column per language, then the data counts."""
  b = config.intent
  langs = list(b.languages)
  head = [f"{lang} (head trained)" if lang == b.train_lang else lang for lang in langs]
  lines = ["| query encoder | " + " | ".join(head) + " | mean (transfer) |",
           "|---" * (len(langs) + 2) + "|"]
  for key, label in _ENTRIES.items():
    if key in results and not (key == "optical" and results["method"] == "zero_shot"):
      m = results[key]
      label = f"{label} ({results['method']})" if key == "optical" else label
      lines.append(f"| {label} | " + " | ".join(f"{m[f'accuracy/{lang}']:.4f}" for lang in langs)
                   + f" | {m['accuracy']:.4f} |")
  unknown = "left out" if b.unknown_intents == "exclude" else "scored as errors"
  lines += ["", f"Intent accuracy on MTOP {b.eval_split}; the head is trained on "
            f"{results['data']['train']['utterances']} {b.train_lang} {b.train_split} "
            f"utterances ({len(results['intents'])} intents) encoded by the teacher. "
            f"Intents outside that vocabulary are {unknown}.",
            "", "| language | utterances | with an unknown intent | unknown intents |",
            "|---|---|---|---|"]
  for lang in langs:
    d = results["data"][lang]
    lines.append(f"| {lang} | {d['utterances']} | {d['unknown_utterances']} | "
                 f"{len(d['unknown_intents'])} |")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the head on teacher vectors, scores the teacher and the distilled student.

  With `config.method` (default 'optical') 'zero_shot', nothing is distilled
  and the 'optical' entry is the teacher's, so that a grid cell without
  distillation reports like the others (the experiment runner reads
  results['optical']). Otherwise `distill.run(config, workdir)` distills (or
  resumes, or finds the finished run) and the restored student is scored.

  Returns:
    {'zero_shot': metrics, 'optical': metrics, 'method', 'intents', 'data',
     'head': {'train_accuracy'}}; metrics are {'accuracy', 'accuracy/<lang>'}.
  """
  # The heavy parts load with the job, not with the config that names it.
  from optical_jax import distill  # pylint: disable=g-import-not-at-top
  from optical_jax import inference  # pylint: disable=g-import-not-at-top
  from optical_jax import losses  # pylint: disable=g-import-not-at-top
  from optical_jax import models  # pylint: disable=g-import-not-at-top
  check_block(config)
  b, method = config.intent, config.get("method", "optical")
  if method != "zero_shot" and method in losses.UNTRAINED:
    # e.g. translate_query: it needs translations of the utterances, which MTOP lacks.
    raise config_lib.ConfigError(f"config.method={method!r}: the intent job scores the "
                                 "teacher ('zero_shot') or a distilled student")
  out = pathlib.Path(workdir) / "intent"
  main_host = jax.process_index() == 0
  read = dict(data_dir=b.data_dir, manual_dir=b.manual_dir)
  train = read_mtop(b.train_lang, b.train_split, limit=b.max_train, **read)
  data = {lang: read_mtop(lang, b.eval_split, limit=b.max_eval, **read) for lang in b.languages}
  vocab = label_vocab(train.intents)
  counts = {"train": {"utterances": len(train), "intents": len(vocab)}}
  for lang, utts in data.items():
    labels, unknown = encode_labels(utts.intents, vocab)
    counts[lang] = {"utterances": len(utts), "unknown_utterances": int((labels < 0).sum()),
                    "unknown_intents": unknown}
    if unknown:
      log.warning("MTOP %s %s: %d of %d utterances have one of %d intents the %s %s split "
                  "lacks (%s): %s", lang, b.eval_split, counts[lang]["unknown_utterances"],
                  len(utts), len(unknown), b.train_lang, b.train_split, b.unknown_intents,
                  ", ".join(list(unknown)[:5]) + (" ..." if len(unknown) > 5 else ""))

  teacher, tokenizer, _ = models.load(config.model.teacher, dtype=config.model.dtype,
                                      param_dtype=config.model.param_dtype)

  def encode(model, utts: Utterances, name: str) -> np.ndarray:
    return inference.encode_texts(model, tokenizer, utts.texts, prefix=config.text.query_prefix,
                                  batch_size=config.eval.batch_size, max_length=b.max_length,
                                  desc=f"{utts.lang} {utts.split} ({name})",
                                  progress=config.train.progress)

  x_train = encode(teacher, train, "teacher")
  y_train, _ = encode_labels(train.intents, vocab)
  params = train_classifier(x_train, y_train, head_config(config), config.seed,
                            num_classes=len(vocab))
  results: dict[str, Any] = {
      "method": method, "intents": list(vocab), "data": counts,
      "head": {"train_accuracy": accuracy(predict(params, x_train), y_train)}}

  def evaluate(model, name: str) -> dict[str, float]:
    metrics, predicted = score(params, vocab, {lang: encode(model, utts, name)
                                               for lang, utts in data.items()}, data, config)
    if main_host:
      for lang, utts in data.items():
        write_predictions(out / "predictions" / name, utts, predicted[lang], vocab)
    log.info("intent accuracy (%s): %s", name, metrics)
    return metrics

  results["zero_shot"] = evaluate(teacher, "zero_shot")
  if method == "zero_shot":
    results["optical"] = dict(results["zero_shot"])
    if main_host:   # the same layout in every cell, for the paired tests
      shutil.copytree(out / "predictions" / "zero_shot", out / "predictions" / "optical",
                      dirs_exist_ok=True)
  else:
    distilled = distill.run(config, workdir)
    student = distill.restore_student(config, workdir, teacher)
    results["optical"] = evaluate(student, "optical")
    results["steps"] = distilled.get("steps")
  if main_host:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    table = results_table(results, config)
    (out / "results.md").write_text(table + "\n")
    print(table, flush=True)
  return results
