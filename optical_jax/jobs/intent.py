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

The job `run(config, workdir)` ('optical_jax.jobs.intent:run' in an experiment)
writes WORKDIR/intent/:

  results.json                 metrics per query encoder, data counts, intents
  results.md                   accuracy per language, and the data counts
  predictions/<entry>/<lang>.tsv   id, gold, predicted: for paired tests later

and returns {'zero_shot': metrics, <method>: metrics, ...}; metrics are
'accuracy' (mean over the evaluated languages other than the training one)
and 'accuracy/<lang>' (the training language too, for reference).
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from optical_jax import config as config_lib
from optical_jax import models
from optical_jax.core import losses
from optical_jax.core import probe
from optical_jax.data import mtop
from optical_jax.jobs import distill
from optical_jax.search import encode as encode_lib
from optical_jax.training import student as student_lib
from optical_jax.training import workdir as workdir_lib

log = logging.getLogger(__name__)



UNKNOWN_POLICIES = ("wrong", "exclude")


def check_block(config: ml_collections.ConfigDict) -> None:
  """Validates `config.intent` (raises config.ConfigError naming the key)."""
  if "intent" not in config:
    raise config_lib.ConfigError("config.intent is missing: add intent.config_block()")
  b = config.intent

  def bad(key: str, why: str):
    raise config_lib.ConfigError(f"config.intent.{key}={b[key]!r}: {why}")

  langs = tuple(b.languages)
  if not langs or len(set(langs)) != len(langs) or set(langs) - set(mtop.LANGUAGES):
    bad("languages", f"need distinct languages of {mtop.LANGUAGES}")
  if b.train_lang not in mtop.LANGUAGES:
    bad("train_lang", f"expected one of {mtop.LANGUAGES}")
  if not set(langs) - {b.train_lang}:
    bad("languages", f"need a language other than train_lang={b.train_lang!r} to transfer to")
  for key in ("train_split", "eval_split"):
    if b[key] not in mtop.SPLITS:
      bad(key, f"expected one of {mtop.SPLITS}")
  if b.unknown_intents not in UNKNOWN_POLICIES:
    bad("unknown_intents", f"expected one of {UNKNOWN_POLICIES}")
  for key in ("max_train", "max_eval"):
    if b[key] < 0:
      bad(key, "must be >= 0 (0 = all)")
  if b.max_length < 1:
    bad("max_length", "must be >= 1")
  config_lib.intent_head_config(config)


def _eval_languages(b: ml_collections.ConfigDict) -> list[str]:
  return [lang for lang in b.languages if lang != b.train_lang]


def score(params: probe.Params, vocab: Sequence[str], features: Mapping[str, np.ndarray],
          data: Mapping[str, mtop.Utterances], config: ml_collections.ConfigDict
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
    predicted[lang] = probe.predict(params, features[lang])
    labels, _ = mtop.encode_labels(utts.intents, vocab)
    try:
      metrics[f"accuracy/{lang}"] = probe.accuracy(predicted[lang], labels, exclude_unknown=exclude)
    except ValueError as e:
      raise ValueError(f"MTOP {lang} {utts.split}: {e}; set config.intent.unknown_intents="
                       "'wrong' or another eval_split") from None
  metrics["accuracy"] = float(np.mean([metrics[f"accuracy/{lang}"]
                                       for lang in _eval_languages(b)]))
  return dict(sorted(metrics.items())), predicted


def write_predictions(directory: pathlib.Path, utts: mtop.Utterances, predicted: np.ndarray,
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
  method = results["method"]
  labels = {"zero_shot": "teacher, zero-shot"}
  labels.setdefault(method, f"student ({method})")   # zero_shot's student is the teacher
  for key, label in labels.items():
    if key in results:
      m = results[key]
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

  With `config.method` 'zero_shot' nothing is distilled: the teacher's entry
  is the method's. Otherwise `distill.run(config, workdir)` distills (or
  resumes, or finds the finished run) and the restored student is scored
  under the method's name.

  Returns:
    {'zero_shot': metrics, <method>: metrics, 'method', 'intents', 'data',
     'head': {'train_accuracy'}}; metrics are {'accuracy', 'accuracy/<lang>'}.
  """
  with workdir_lib.lock(workdir):
    check_block(config)
    b, method = config.intent, config.method
    if method != "zero_shot" and method in losses.UNTRAINED:
      # e.g. translate_query: it needs translations of the utterances, which MTOP lacks.
      raise config_lib.ConfigError(f"config.method={method!r}: the intent job scores the "
                                   "teacher ('zero_shot') or a distilled student")
    out = pathlib.Path(workdir) / "intent"
    main_host = jax.process_index() == 0
    read = dict(data_dir=config.data.tfds_dir, manual_dir=b.manual_dir)
    train = mtop.read_mtop(b.train_lang, b.train_split, limit=b.max_train, **read)
    data = {lang: mtop.read_mtop(lang, b.eval_split, limit=b.max_eval, **read)
            for lang in b.languages}
    vocab = mtop.label_vocab(train.intents)
    counts = {"train": {"utterances": len(train), "intents": len(vocab)}}
    for lang, utts in data.items():
      labels, unknown = mtop.encode_labels(utts.intents, vocab)
      counts[lang] = {"utterances": len(utts), "unknown_utterances": int((labels < 0).sum()),
                      "unknown_intents": unknown}
      if unknown:
        log.warning("MTOP %s %s: %d of %d utterances have one of %d intents the %s %s split "
                    "lacks (%s): %s", lang, b.eval_split, counts[lang]["unknown_utterances"],
                    len(utts), len(unknown), b.train_lang, b.train_split, b.unknown_intents,
                    ", ".join(list(unknown)[:5]) + (" ..." if len(unknown) > 5 else ""))

    teacher, tokenizer, _ = models.load_configured(config.model)

    def encode(model, utts: mtop.Utterances, name: str) -> np.ndarray:
      return encode_lib.encode_texts(model, tokenizer, utts.texts, prefix=config.text.query_prefix,
                                    batch_size=config.eval.batch_size, max_length=b.max_length,
                                    desc=f"{utts.lang} {utts.split} ({name})",
                                    progress=config.train.progress)

    x_train = encode(teacher, train, "teacher")
    y_train, _ = mtop.encode_labels(train.intents, vocab)
    params = probe.train_classifier(x_train, y_train, config_lib.intent_head_config(config),
                                    config.seed, num_classes=len(vocab))
    results: dict[str, Any] = {
        "method": method, "intents": list(vocab), "data": counts,
        "head": {"train_accuracy": probe.accuracy(probe.predict(params, x_train), y_train)}}

    def evaluate(model, name: str) -> dict[str, float]:
      metrics, predicted = score(params, vocab, {lang: encode(model, utts, name)
                                                 for lang, utts in data.items()}, data, config)
      if main_host:
        for lang, utts in data.items():
          write_predictions(out / "predictions" / name, utts, predicted[lang], vocab)
      log.info("intent accuracy (%s): %s", name, metrics)
      return metrics

    results["zero_shot"] = evaluate(teacher, "zero_shot")
    if method != "zero_shot":
      distilled = distill.run(config, workdir)
      student = student_lib.restore_student(config, workdir, teacher)
      results[method] = evaluate(student, method)
      results["steps"] = distilled.get("steps")
    if main_host:
      (out / "results.json").write_text(json.dumps(results, indent=2))
      table = results_table(results, config)
      (out / "results.md").write_text(table + "\n")
      print(table, flush=True)
    return results
