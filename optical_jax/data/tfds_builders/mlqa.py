"""`optical_mlqa`: MLQA as cross-lingual question -> passage retrieval.

The official release (`MLQA_V1.zip`, SQuAD v1 JSON) has one file per split,
context language c and question language q, every pair of the 7 languages
(ar, de, en, es, hi, vi, zh):

    MLQA_V1/dev/dev-context-{c}-question-{q}.json
    MLQA_V1/test/test-context-{c}-question-{q}.json

One `BuilderConfig` per pair, named `{q}-{c}` (question language first, as
query -> document everywhere here); splits `dev` and `test` (the file names).
One example per question: `id`, `question` (language q), `context` (its
passage, language c), `context_id`, `title`, `answers` (`text`,
`answer_start`). A passage that occurs more than once in a file (same text)
keeps the `context_id` of its first occurrence (`{article}.{paragraph}`,
0-based), so it is one document, not several near-duplicates of which only one
would count as relevant.

`mlqa_collection(q, c, split)` returns queries (questions), documents (the
distinct contexts of the file) and qrels (each question -> its context, grade 1).

Files come from manual_dir (`MLQA_V1/...` inside it, or manual_dir being
`MLQA_V1` itself); otherwise the zip is downloaded when the network is up.
The TFDS catalog builder `mlqa` covers only q == c (SQuAD features, splits
`validation` and `test`); `load_catalog` prepares it where that works, which
needs the network and TensorFlow (TFDS unzips with `tf.io.gfile`), and says
so within seconds otherwise; `catalog_unavailable` tells which.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import pathlib
import shutil
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from optical_jax.data import collection as collection_lib
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import loading
from optical_jax.data.tfds_builders import network

log = logging.getLogger(__name__)

LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
SPLITS = ("dev", "test")
URL = "https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip"


def file_name(split: str, question_lang: str, context_lang: str) -> str:
  return f"{split}/{split}-context-{context_lang}-question-{question_lang}.json"


@dataclasses.dataclass(eq=False)
class MlqaConfig(tfds.core.BuilderConfig):
  question_lang: str = "en"
  context_lang: str = "en"


class OpticalMlqa(_base.OpticalBuilder):
  """MLQA questions with their passages, for question -> passage retrieval."""

  name = "optical_mlqa"
  VERSION = tfds.core.Version("1.0.0")
  HOMEPAGE = "https://github.com/facebookresearch/MLQA"
  BUILDER_CONFIGS = [
      MlqaConfig(name=f"{q}-{c}", question_lang=q, context_lang=c,
                 description=f"questions in {q}, passages in {c}")
      for q in LANGUAGES for c in LANGUAGES
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Unzip the official MLQA release ({URL}) into manual_dir, so that
  <manual_dir>/MLQA_V1/dev/dev-context-{{c}}-question-{{q}}.json
  <manual_dir>/MLQA_V1/test/test-context-{{c}}-question-{{q}}.json
are there (c: passage language, q: question language; config '{{q}}-{{c}}').
"""

  def _features(self):
    return {
        "id": tfds.features.Text(),
        "question": tfds.features.Text(),
        "context": tfds.features.Text(),
        "context_id": tfds.features.Text(),
        "title": tfds.features.Text(),
        "answers": tfds.features.Sequence({"text": tfds.features.Text(),
                                           "answer_start": np.int32}),
    }

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    root = self.manual_root(dl_manager)
    rels = {s: file_name(s, cfg.question_lang, cfg.context_lang) for s in SPLITS}
    found = {s: _base.find_file([root / "MLQA_V1", root], r) for s, r in rels.items()}
    if not all(found.values()):
      missing = [f"MLQA_V1/{r}" for s, r in rels.items() if not found[s]]
      if any(found.values()):
        raise self.missing_files_error(root, missing)
      self.require_online(URL, root, missing)
      # Not `download_and_extract`: TFDS's extractor needs TensorFlow.
      archive = pathlib.Path(dl_manager.download(URL))
      found = _extract(archive, {s: f"MLQA_V1/{r}" for s, r in rels.items()},
                       pathlib.Path(dl_manager.download_dir) / "extracted"
                       / f"optical_mlqa.{archive.name}")
    return {s: self._generate_examples(p) for s, p in found.items()}

  def _generate_examples(self, path):
    yield from _base.nonempty(_read_squad(path), str(path))


def _extract(archive: pathlib.Path, members: dict[str, str], to: pathlib.Path
             ) -> dict[str, pathlib.Path]:
  """{key: path} of the zip `members` extracted under `to` (kept for the next time)."""
  out = {}
  try:
    with zipfile.ZipFile(archive) as zf:
      names = set(zf.namelist())
      for key, member in members.items():
        dest = to / member
        if not dest.is_file():
          if member not in names:
            raise _base.DataError(f"{archive}: the zip has no {member}")
          tmp = dest.with_name(dest.name + ".incomplete")
          tmp.parent.mkdir(parents=True, exist_ok=True)
          with zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
          os.replace(tmp, dest)
        out[key] = dest
  except zipfile.BadZipFile as e:
    raise _base.DataError(f"{archive}: not a zip file ({e})") from None
  return out


def _expect(value, kind, where: str, what: str):
  if not isinstance(value, kind):
    raise _base.DataError(f"{where}: {what} is {type(value).__name__}, expected "
                          f"{getattr(kind, '__name__', kind)}")
  return value


def _read_squad(path):
  """(id, example) per question of a SQuAD v1 file; errors name file and JSON path."""
  data = _base.read_json(path)
  where = str(path)
  articles = _expect(_expect(data, dict, where, "the top level").get("data"), list, where,
                     "'data'")
  context_ids: dict[str, str] = {}
  seen: set[str] = set()
  for a, article in enumerate(articles):
    at = f"{where}: data[{a}]"
    _expect(article, dict, at, "the article")
    title = article.get("title") or ""
    _expect(title, str, at, "'title'")
    for p, para in enumerate(_expect(article.get("paragraphs"), list, at, "'paragraphs'")):
      pt = f"{at}.paragraphs[{p}]"
      _expect(para, dict, pt, "the paragraph")
      context = _expect(para.get("context"), str, pt, "'context'").strip()
      if not context:
        raise _base.DataError(f"{pt}: empty 'context'")
      cid = context_ids.setdefault(context, f"{a}.{p}")
      for q, qa in enumerate(_expect(para.get("qas"), list, pt, "'qas'")):
        qt = f"{pt}.qas[{q}]"
        _expect(qa, dict, qt, "the question")
        qid = _expect(qa.get("id"), str, qt, "'id'").strip()
        question = _expect(qa.get("question"), str, qt, "'question'").strip()
        if not qid or not question:
          raise _base.DataError(f"{qt}: empty {'id' if not qid else 'question'}")
        if qid in seen:
          raise _base.DataError(f"{qt}: duplicate question id {qid!r}")
        seen.add(qid)
        answers = _expect(qa.get("answers", []), list, qt, "'answers'")
        texts, starts = [], []
        for n, ans in enumerate(answers):
          _expect(ans, dict, f"{qt}.answers[{n}]", "the answer")
          texts.append(_expect(ans.get("text"), str, f"{qt}.answers[{n}]", "'text'"))
          starts.append(_expect(ans.get("answer_start"), int, f"{qt}.answers[{n}]",
                                "'answer_start'"))
        yield qid, {"id": qid, "question": question, "context": context, "context_id": cid,
                    "title": title.strip(), "answers": {"text": texts, "answer_start": starts}}


def mlqa_collection(question_lang: str, context_lang: str, split: str = "test",
                    data_dir=None, manual_dir=None) -> collection_lib.EvalCollection:
  """Prepares the pair (if needed): questions in one language, passages in another.

  Queries are `{id: question}`, documents the distinct passages of the file
  `{context_id: context}`, qrels `{id: {context_id: 1}}`.
  """
  source = loading.load("mlqa", f"{question_lang}-{context_lang}", data_dir,
                              manual_dir, split)
  queries, docs, qrels = {}, {}, {}
  for ex in source:
    qid, cid = _base.text(ex["id"]), _base.text(ex["context_id"])
    queries[qid] = _base.text(ex["question"])
    docs.setdefault(cid, _base.text(ex["context"]))
    qrels[qid] = {cid: 1}
  return collection_lib.EvalCollection(queries=queries, docs=docs, qrels=qrels)


def catalog_builder(lang: str, data_dir=None):
  """The TFDS catalog `mlqa/{lang}` builder (q == c only), not prepared.

  Builds offline and without TensorFlow; preparing it is another matter (see
  `load_catalog`).
  """
  if lang not in LANGUAGES:
    raise ValueError(f"unknown MLQA language {lang!r}; expected one of {LANGUAGES}")
  kwargs = {"data_dir": os.fspath(data_dir)} if data_dir is not None else {}
  return tfds.builder(f"mlqa/{lang}", file_format=_base.FILE_FORMAT, **kwargs)


def catalog_unavailable(timeout: float | None = None) -> str | None:
  """Why the catalog `mlqa` cannot be prepared here, or None if it can.

  It needs the network (it downloads the zip) and TensorFlow (TFDS unzips with
  `tf.io.gfile`). Told within `timeout` seconds (default 3).
  """
  reason = network.offline_reason(URL, timeout)
  if reason is not None:
    return f"cannot download {URL}: {reason}"
  if importlib.util.find_spec("tensorflow") is None:
    return "TFDS extracts the catalog builder's download with TensorFlow, which is not installed"
  return None


def load_catalog(lang: str, data_dir=None, split: str | None = None):
  """Prepares the catalog `mlqa/{lang}` (splits `validation`, `test`) and reads it.

  Raises (within seconds, before any download):
    OfflineError: no network.
    ImportError: no TensorFlow.
  """
  reason = catalog_unavailable()
  if reason is not None:
    instead = (f"Use the optical_mlqa builder with config '{lang}-{lang}' instead: it reads the "
               f"same release from manual_dir, or downloads and unzips it without TensorFlow.")
    error = ImportError if reason.startswith("TFDS") else network.OfflineError
    raise error(f"catalog mlqa/{lang}: {reason}.\n{instead}")
  builder = catalog_builder(lang, data_dir)
  _base.prepare(builder)
  return builder.as_data_source(split=split)
