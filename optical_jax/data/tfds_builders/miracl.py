"""MIRACL (monolingual retrieval in 18 languages): queries, qrels and corpus per language.

Three builders, one `BuilderConfig` per language (`ar`, ..., `sw`, ..., `zh`):

* `optical_miracl_queries`: splits `train`, `dev` (`de` and `yo`: `dev` only);
  features `qid`, `text`.
* `optical_miracl_qrels`: the same splits; features `qid`, `docid`,
  `relevance` (int32; MIRACL judges 0 and 1, and 0 rows are kept).
* `optical_miracl_corpus`: split `corpus`; features `docid`, `title`, `text`.

`miracl_collection(lang, split)` prepares the three and returns an
`EvalCollection`.

The published layout (the Hugging Face dataset repos `miracl/miracl` and
`miracl/miracl-corpus`, as their own dataset scripts and MIRACL's README use
them):

    miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-{split}.tsv   qid<TAB>query
    miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-{split}.tsv     qid Q0 docid rel (TREC)
    miracl-corpus-v1.0-{lang}/docs-{i}.jsonl.gz   {"docid": "X#Y", "title": ..., "text": ...}

with i in 0..n-1 (`CORPUS_SHARDS` has n per language, from the miracl-corpus
dataset script). In manual_dir the annotation files are looked for under
`miracl-v1.0-{lang}/`, `miracl/miracl-v1.0-{lang}/` (a clone of the repo) or
directly (`topics/...`, `qrels/...`); the shards under
`miracl-corpus-v1.0-{lang}/` or `miracl-corpus/miracl-corpus-v1.0-{lang}/`, as
`.jsonl.gz` or gunzipped `.jsonl`.

Assumptions: the test-a/test-b topics are left out (their qrels were not
public when MIRACL was released); a title may be empty; the corpus shard count
per language is the dataset script's (a custom `MiraclConfig(num_shards=...)`
overrides it). When the files are not in manual_dir the builders download them
from the Hub (`resolve/main` URLs); if the Hub asks for a login (a gated
repository), download the files by hand into manual_dir instead.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from optical_jax.data import collection as collection_lib
from optical_jax.data import trec
from optical_jax.data.tfds_builders import _base
from optical_jax.data.tfds_builders import loading

log = logging.getLogger(__name__)

# Shards `docs-{i}.jsonl.gz` per language, from the miracl-corpus dataset script.
CORPUS_SHARDS = {"ar": 5, "bn": 1, "en": 66, "es": 21, "fa": 5, "fi": 4, "fr": 30, "hi": 2,
                 "id": 3, "ja": 14, "ko": 3, "ru": 20, "sw": 1, "te": 2, "th": 2, "zh": 10,
                 "de": 32, "yo": 1}
DEV_ONLY = ("de", "yo")  # the two "surprise" languages have no training queries
LANGUAGES = tuple(CORPUS_SHARDS)
HUB = "https://huggingface.co/datasets"
_TOPICS = "topics/topics.miracl-v1.0-{lang}-{split}.tsv"
_QRELS = "qrels/qrels.miracl-v1.0-{lang}-{split}.tsv"
_SHARD = "docs-{i}.jsonl.gz"
_SHARD_RE = re.compile(r"^docs-(\d+)\.jsonl(\.gz)?$")


def annotation_url(lang: str, rel: str) -> str:
  return f"{HUB}/miracl/miracl/resolve/main/miracl-v1.0-{lang}/{rel}"


def corpus_url(lang: str, i: int) -> str:
  return f"{HUB}/miracl/miracl-corpus/resolve/main/miracl-corpus-v1.0-{lang}/docs-{i}.jsonl.gz"


@dataclasses.dataclass(eq=False)
class MiraclConfig(tfds.core.BuilderConfig):
  lang: str = "sw"
  splits: tuple[str, ...] = ("train", "dev")
  num_shards: int = 1


def _configs() -> list[MiraclConfig]:
  return [MiraclConfig(name=lang, lang=lang, num_shards=n,
                       splits=("dev",) if lang in DEV_ONLY else ("train", "dev"),
                       description=f"MIRACL v1.0, {lang}")
          for lang, n in CORPUS_SHARDS.items()]


class _MiraclBase(_base.OpticalBuilder, skip_registration=True):
  """The shared part: finding files in manual_dir or downloading them."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = _configs()
  HOMEPAGE = "https://project-miracl.github.io"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put MIRACL v1.0 in manual_dir as published on the Hugging Face Hub
(datasets miracl/miracl and miracl/miracl-corpus), for a language {lang}:
  <manual_dir>/miracl-v1.0-{lang}/topics/topics.miracl-v1.0-{lang}-{split}.tsv
  <manual_dir>/miracl-v1.0-{lang}/qrels/qrels.miracl-v1.0-{lang}-{split}.tsv
  <manual_dir>/miracl-corpus-v1.0-{lang}/docs-{i}.jsonl.gz  (i = 0 .. shards - 1)
for split in train, dev (de and yo: dev only). `git clone` of both repos into
manual_dir (miracl/..., miracl-corpus/...) works too.
"""

  def _annotation_roots(self, root: pathlib.Path) -> list[pathlib.Path]:
    lang = self.builder_config.lang
    return [root / f"miracl-v1.0-{lang}", root / "miracl" / f"miracl-v1.0-{lang}", root]

  def _annotations(self, dl_manager, pattern: str) -> dict[str, pathlib.Path]:
    """{split: path} of the topics or qrels files: from manual_dir, else downloaded."""
    cfg = self.builder_config
    root = self.manual_root(dl_manager)
    rels = {s: pattern.format(lang=cfg.lang, split=s) for s in cfg.splits}
    found = {s: _base.find_file(self._annotation_roots(root), r) for s, r in rels.items()}
    if all(found.values()):
      return found  # type: ignore[return-value]
    missing = [f"miracl-v1.0-{cfg.lang}/{r}" for s, r in rels.items() if not found[s]]
    if any(found.values()):  # part of it is there: do not mix with a download
      raise self.missing_files_error(root, missing)
    urls = {s: annotation_url(cfg.lang, r) for s, r in rels.items()}
    self.require_online(next(iter(urls.values())), root, missing)
    return {s: pathlib.Path(p) for s, p in dl_manager.download(urls).items()}


class OpticalMiraclQueries(_MiraclBase):
  """MIRACL topics: `qid`, `text` per query, in file order."""

  name = "optical_miracl_queries"

  def _features(self):
    return {"qid": tfds.features.Text(), "text": tfds.features.Text()}

  def _split_generators(self, dl_manager):
    files = self._annotations(dl_manager, _TOPICS)
    return {split: self._generate_examples(path) for split, path in files.items()}

  def _generate_examples(self, path):
    # `qid<TAB>query`: file:line errors for bad lines, duplicates, no entries.
    for i, (qid, text) in enumerate(collection_lib.read_texts(path).items()):
      yield i, {"qid": qid, "text": text}


class OpticalMiraclQrels(_MiraclBase):
  """MIRACL relevance judgements: `qid`, `docid`, `relevance`, in file order."""

  name = "optical_miracl_qrels"

  def _features(self):
    return {"qid": tfds.features.Text(), "docid": tfds.features.Text(),
            "relevance": tfds.features.Scalar(dtype=np.int32)}

  def _split_generators(self, dl_manager):
    files = self._annotations(dl_manager, _QRELS)
    return {split: self._generate_examples(path) for split, path in files.items()}

  def _generate_examples(self, path):
    qrels = trec.read_qrels(path)  # `path:line: why` for a bad line
    rows = ((q, d, g) for q, judged in qrels.items() for d, g in judged.items())
    for i, (qid, docid, grade) in enumerate(_base.nonempty(rows, str(path))):
      yield i, {"qid": qid, "docid": docid, "relevance": grade}


class OpticalMiraclCorpus(_MiraclBase):
  """MIRACL passages: `docid` (`article#passage`), `title`, `text`, in shard order."""

  name = "optical_miracl_corpus"

  def _features(self):
    return {"docid": tfds.features.Text(), "title": tfds.features.Text(),
            "text": tfds.features.Text()}

  def _shards(self, dl_manager) -> list[pathlib.Path]:
    cfg = self.builder_config
    root = self.manual_root(dl_manager)
    expected = [_SHARD.format(i=i) for i in range(cfg.num_shards)]
    dirs = [root / f"miracl-corpus-v1.0-{cfg.lang}",
            root / "miracl-corpus" / f"miracl-corpus-v1.0-{cfg.lang}"]
    for d in dirs:
      if not d.is_dir():
        continue
      found = {int(m[1]): d / f.name for f in d.iterdir()
               if (m := _SHARD_RE.match(f.name)) and f.is_file()}
      missing = [f"{d.name}/{e}" for i, e in enumerate(expected) if i not in found]
      extra = sorted(set(found) - set(range(cfg.num_shards)))
      if missing or extra:
        hint = (f"(found shards {sorted(found)}; expected 0..{cfg.num_shards - 1}: set "
                f"MiraclConfig(num_shards=...) if the release has another count)\n")
        raise self.missing_files_error(root, missing or [f"{d.name}/docs-{extra[0]}*"], hint)
      return [found[i] for i in range(cfg.num_shards)]
    urls = [corpus_url(cfg.lang, i) for i in range(cfg.num_shards)]
    self.require_online(urls[0], root, [f"miracl-corpus-v1.0-{cfg.lang}/{e}" for e in expected])
    return [pathlib.Path(p) for p in dl_manager.download(urls)]

  def _split_generators(self, dl_manager):
    return {"corpus": self._generate_examples(self._shards(dl_manager))}

  def _generate_examples(self, paths):
    seen: set[str] = set()
    rows = (row for path in paths for row in self._read_shard(path, seen))
    yield from _base.nonempty(rows, ", ".join(str(p) for p in paths))

  @staticmethod
  def _read_shard(path, seen):
    for lineno, rec in _base.jsonl_records(path, ("docid", "text"), optional=("title",)):
      docid = rec["docid"].strip()
      if not docid:
        raise _base.DataError(f"{path}:{lineno}: empty 'docid'")
      if docid in seen:
        raise _base.DataError(f"{path}:{lineno}: duplicate docid {docid!r}")
      seen.add(docid)
      yield docid, {"docid": docid, "title": rec.get("title", "").strip(),
                    "text": rec["text"].strip()}


def miracl_collection(lang: str, split: str = "dev", data_dir=None, manual_dir=None,
                      with_title: bool = True) -> collection_lib.EvalCollection:
  """Prepares MIRACL `lang` (if needed) and returns `split` as an `EvalCollection`.

  Queries are the judged queries of `split`; documents are the whole corpus,
  `title + ' ' + text` (as BEIR collections are read) unless `with_title` is
  False; qrels keep MIRACL's 0 grades (judged non-relevant).

  Raises:
    ValueError: judged queries missing from the topics (from `EvalCollection`).
  """
  load = loading.load
  qrels: dict[str, dict[str, int]] = {}
  for ex in load("miracl_qrels", lang, data_dir, manual_dir, split):
    qrels.setdefault(_base.text(ex["qid"]), {})[_base.text(ex["docid"])] = int(ex["relevance"])
  queries = {}
  for ex in load("miracl_queries", lang, data_dir, manual_dir, split):
    if (qid := _base.text(ex["qid"])) in qrels:
      queries[qid] = _base.text(ex["text"])
  docs = {}
  for ex in load("miracl_corpus", lang, data_dir, manual_dir, "corpus"):
    title, body = _base.text(ex["title"]), _base.text(ex["text"])
    docs[_base.text(ex["docid"])] = f"{title} {body}".strip() if with_title else body
  lost = sum(d not in docs for judged in qrels.values() for d in judged)
  if lost:
    log.warning("MIRACL %s %s: %d judged documents are not in the corpus", lang, split, lost)
  return collection_lib.EvalCollection(queries=queries, docs=docs, qrels=qrels)
