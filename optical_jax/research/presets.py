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
