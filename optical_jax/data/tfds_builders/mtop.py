"""`optical_mtop`: MTOP utterances with their intents, per language and split.

The official release (`mtop.zip`) has a directory per language (en, de, es, fr,
hi, th) with one file per split:

    mtop/{lang}/train.txt, mtop/{lang}/eval.txt, mtop/{lang}/test.txt

Each line has 8 tab-separated columns, in this order (the release README; the
same order is read by the converters of other benchmark suites):

    1 id              shared by the translations of an utterance across languages
    2 intent          e.g. IN:GET_MESSAGE
    3 slots           comma-separated `start:end:SL:NAME` character spans (may be empty)
    4 utterance       the untokenised text
    5 domain          e.g. messaging
    6 locale          e.g. en_XX, de_DE
    7 decoupled form  e.g. [IN:GET_MESSAGE [SL:CONTACT Angelika ] ]
    8 tokens          JSON: {"tokens": [...], "tokenSpans": [...]}

One `BuilderConfig` per language; splits `train`, `eval`, `test` (the file
names). Features: `id`, `utterance`, `intent`, `slots`, `domain`, `locale`,
`decoupled_form`, `tokens` (a sequence of Text). A line with another number of
columns, an empty utterance, an intent without the `IN:` prefix, tokens that
are not that JSON, a locale of another language or a repeated id is an error
naming `file:line`.

In manual_dir the language directories are looked for under `mtop/` (the
unzipped release) or directly.
"""
from __future__ import annotations

import dataclasses
import json
import os

import tensorflow_datasets as tfds

from optical_jax.data.tfds_builders import _base

LANGUAGES = ("en", "de", "es", "fr", "hi", "th")
SPLITS = ("train", "eval", "test")
COLUMNS = ("id", "intent", "slots", "utterance", "domain", "locale", "decoupled_form",
           "tokens")


@dataclasses.dataclass(eq=False)
class MtopConfig(tfds.core.BuilderConfig):
  lang: str = "en"


class OpticalMtop(_base.OpticalBuilder):
  """MTOP utterances with intent, slots, domain and semantic parse."""

  name = "optical_mtop"
  VERSION = tfds.core.Version("1.0.0")
  HOMEPAGE = "https://fb.me/mtop_dataset"
  BUILDER_CONFIGS = [MtopConfig(name=lang, lang=lang, description=f"MTOP {lang}")
                     for lang in LANGUAGES]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unzip the official MTOP release into manual_dir, so that
  <manual_dir>/mtop/{lang}/train.txt, eval.txt, test.txt
are there for the config's language (en, de, es, fr, hi, th).
"""

  def _features(self):
    features = {c: tfds.features.Text() for c in COLUMNS if c != "tokens"}
    features["tokens"] = tfds.features.Sequence(tfds.features.Text())
    return features

  def _split_generators(self, dl_manager):
    lang = self.builder_config.lang
    root = self.manual_root(dl_manager)
    roots = [root / "mtop" / lang, root / lang]
    found = {s: _base.find_file(roots, f"{s}.txt") for s in SPLITS}
    missing = [f"mtop/{lang}/{s}.txt" for s, p in found.items() if p is None]
    if missing:
      raise self.missing_files_error(root, missing)
    return {s: self._generate_examples(p) for s, p in found.items()}

  def _generate_examples(self, path):
    yield from _base.nonempty(_read_mtop(path, self.builder_config.lang), os.fspath(path))


def _read_mtop(path, lang: str):
  seen: dict[str, int] = {}
  for lineno, line in _base.iter_lines(path):
    if not line.strip():
      continue
    where = f"{os.fspath(path)}:{lineno}"
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
      raise _base.DataError(f"{where}: expected {len(COLUMNS)} tab-separated columns "
                            f"({', '.join(COLUMNS)}), got {len(fields)}")
    row = dict(zip(COLUMNS, (f.strip() for f in fields)))
    for col in ("id", "utterance", "intent"):
      if not row[col]:
        raise _base.DataError(f"{where}: empty {col}")
    if not row["intent"].startswith("IN:"):
      raise _base.DataError(f"{where}: intent {row['intent']!r} does not start with 'IN:' "
                            f"(columns in another order?)")
    if row["locale"].split("_")[0].lower() != lang:
      raise _base.DataError(f"{where}: locale {row['locale']!r} is not of language {lang!r}")
    try:
      tokens = json.loads(row["tokens"])["tokens"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise _base.DataError(f"{where}: the tokens column is not JSON with a 'tokens' list "
                            f"({type(e).__name__}: {e})") from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
      raise _base.DataError(f"{where}: 'tokens' is not a list of strings")
    if row["id"] in seen:
      raise _base.DataError(f"{where}: id {row['id']} already on line {seen[row['id']]}")
    seen[row["id"]] = lineno
    row["tokens"] = tokens
    yield row["id"], row
