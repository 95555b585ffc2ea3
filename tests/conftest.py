"""Test set-up: 8 fake CPU devices, and the markers the suite uses.

The device count must be set before JAX initialises its backends, so it is set
here, at import time of the first conftest, before any test module imports jax.
"""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests never reach a model hub: real-model tests use the embedded model.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One compilation cache for the suite and the command lines it starts: most CLI tests
# compile the same e5-small steps, and recompiling them is most of their time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"optical_jax_tests_xla_cache_{os.getuid()}"))


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker per core, at most 4 (each is a JAX process holding the
  embedded model; more workers than that only contend for memory bandwidth)."""
  del config
  return max(1, min(4, os.cpu_count() or 1))


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "real_model: uses the embedded multilingual-e5-small (slower; run in CI)")
  config.addinivalue_line("markers", "slow: takes more than a few seconds")


import pathlib  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  """Records whether a test's body passed, for `tmp_path` below."""
  report = yield
  if report.when == "call":
    item.stash[_PASSED] = report.passed
  return report


@pytest.fixture
def tmp_path(tmp_path, request):
  """pytest's `tmp_path`, removed as soon as its test passes; a failing test's stays.

  The real-model tests train e5-small and keep its checkpoints (about 230 MB each, two
  per cell); kept to the end of the run, as pytest does by default, they add up to
  several GB, and a run on a machine with little free disk failed with ENOSPC half-way.
  This is pytest's own `tmp_path_retention_policy = "failed"`, which only an ini file
  (pytest.ini, setup.cfg, pyproject.toml) can set; the project has none, and the test
  command stays the plain one the README gives.
  """
  yield tmp_path
  if request.node.stash.get(_PASSED, False):
    shutil.rmtree(tmp_path, ignore_errors=True)


FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def read_multilingual() -> list[tuple[str, str]]:
  """(language, sentence) pairs in 15 languages and 11 scripts."""
  rows = FIXTURES.joinpath("multilingual.txt").read_text(encoding="utf-8").splitlines()
  return [tuple(r.split("\t", 1)) for r in rows if r]


def write_pairs(path: pathlib.Path) -> pathlib.Path:
  """A bitext TSV at `path`: each non-English fixture sentence beside an English one
  (cycled): a tiny real-script training set."""
  rows = read_multilingual()
  english = [t for lang, t in rows if lang == "en"]
  path.write_text("".join(f"{t}\t{english[i % len(english)]}\n"
                          for i, (lang, t) in enumerate(rows) if lang != "en"))
  return path


@pytest.fixture(scope="session")
def multilingual_texts() -> list[str]:
  return [t for _, t in read_multilingual()]


@pytest.fixture(scope="session")
def e5_dir():
  """The embedded multilingual-e5-small, converted to an HF directory (cached)."""
  from optical_jax.models import embedded
  try:
    return embedded.ensure_converted()
  except ImportError as e:  # the demo extra is part of the test install
    pytest.fail(f"the embedded model is not installed: {e}")
