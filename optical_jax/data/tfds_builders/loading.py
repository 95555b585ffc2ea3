"""Builders by short name: prepare a dataset if needed and read it back.

    from optical_jax.data.tfds_builders import loading
    train = loading.load("bitext", "tsv", data_dir, manual_dir, split="train")
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from optical_jax.data.tfds_builders import _base

_PACKAGE = "optical_jax.data.tfds_builders"
# Short name -> (module, class). The TFDS names are `optical_<short name>`, so
# that they never collide with catalog builders (the catalog has an `mlqa`).
BUILDERS = {
    "bitext": ("bitext", "OpticalBitext"),
    "miracl_queries": ("miracl", "OpticalMiraclQueries"),
    "miracl_qrels": ("miracl", "OpticalMiraclQrels"),
    "miracl_corpus": ("miracl", "OpticalMiraclCorpus"),
    "mlqa": ("mlqa", "OpticalMlqa"),
    "multi30k": ("multi30k", "OpticalMulti30k"),
    "mtop": ("mtop", "OpticalMtop"),
    "bible": ("bible", "OpticalBible"),
}


def builder_class(name: str):
  """The builder class for a short name (`bitext`, `mlqa`, ...) or `optical_<name>`."""
  short = name[len("optical_"):] if name.startswith("optical_") else name
  if short not in BUILDERS:
    raise ValueError(f"unknown builder {name!r}; expected one of {sorted(BUILDERS)}")
  module, cls = BUILDERS[short]
  return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), cls)


def builder(name: str, config: Any = None, data_dir: str | os.PathLike | None = None):
  """An unprepared builder: `config` is a config name, a `BuilderConfig` or None."""
  return _base.make_builder(builder_class(name), config, data_dir)


def prepare(name: str, config: Any = None, data_dir: str | os.PathLike | None = None,
            manual_dir: str | os.PathLike | None = None):
  """Prepares (if not yet prepared in `data_dir`) and returns the builder."""
  b = builder(name, config, data_dir)
  _base.prepare(b, manual_dir)
  return b


def load(name: str, config: Any = None, data_dir: str | os.PathLike | None = None,
         manual_dir: str | os.PathLike | None = None, split: str | None = None):
  """Prepares the dataset if needed and returns its array_record data source(s).

  Args:
    name: a key of `BUILDERS` (or `optical_<key>`).
    config: the config name (e.g. 'sw', 'en-de'), a `BuilderConfig`, or None
      for the builder's default.
    data_dir: where prepared datasets live (TFDS's default when None).
    manual_dir: where the published files were put (TFDS's default,
      `<data_dir>/downloads/manual`, when None).
    split: a split name, or None for `{split: data source}`.

  Returns:
    A random-access data source (`len`, `[i]`, iteration) of feature dicts.

  Raises:
    ManualDataError: (a FileNotFoundError) files missing from manual_dir, listed.
    OfflineError: the files are missing and cannot be downloaded (told in ~3 s).
    DataError: (`bitext.BitextError`, a ValueError) bad input, naming file:line.
  """
  # '~' in a config path means the home directory, as it would in a shell.
  data_dir, manual_dir = (os.path.expanduser(d) if d else d for d in (data_dir, manual_dir))
  return prepare(name, config, data_dir, manual_dir).as_data_source(split=split)
