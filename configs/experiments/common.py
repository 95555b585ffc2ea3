"""What the experiment configs share: the demo base, the data roots, the smoke settings.

Full-scale runs read the benchmarks' published files from
`$OPTICAL_JAX_DATA/<layout>` (default `~/optical_jax_data`), laid out as the
TFDS builders in optical_jax/data/tfds_builders expect (their docstrings list
the files); prepared datasets go to `$OPTICAL_JAX_DATA/tfds`. Each `:smoke`
variant runs the same grid offline in minutes on a CPU: the embedded model, a
few steps of the Bible bitext, and the tiny benchmark fixtures of the tests.
"""
import importlib.util
import os
import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "benchmarks"


def load_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of configs/NAME.py (configs are files, not a package)."""
  path = REPO / "configs" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"optical_jax_configs_{name.replace('/', '_')}",
                                                path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def data_root(smoke: bool) -> pathlib.Path:
  if smoke:
    return FIXTURES
  return pathlib.Path(os.environ.get("OPTICAL_JAX_DATA", "~/optical_jax_data")).expanduser()


def base(smoke: bool, workdir_cache: str = "~/.cache/optical_jax/vectors"
         ) -> ml_collections.ConfigDict:
  """The demo config (`:tiny` sizes for smoke), unlocked, with the cached
  teacher documents and no progress bars (grids log per cell)."""
  c = load_config("demo", "tiny" if smoke else None)
  c.unlock()
  c.eval.cache_dir = workdir_cache
  c.train.progress = False
  if smoke:
    c.eval.update(max_queries=0, max_docs=0)
  return c


def check_arg(name: str, arg: str | None, allowed: tuple) -> bool:
  """Raises for an unknown variant; returns whether it is a smoke variant."""
  if arg not in allowed:
    raise ValueError(f"configs/experiments/{name}.py takes one of {allowed}, got {arg!r}")
  return bool(arg and arg.startswith("smoke"))
