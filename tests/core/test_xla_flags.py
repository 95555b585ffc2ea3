"""The XLA flags set by default: added where missing, never over the user's."""
import os
import subprocess
import sys

from optical_jax.core import xla_flags


def test_defaults_are_added_to_other_flags():
  out = xla_flags.with_defaults("--xla_force_host_platform_device_count=8")
  assert out.split() == ["--xla_force_host_platform_device_count=8",
                         "--xla_gpu_enable_triton_gemm=false"]
  assert xla_flags.with_defaults("") == "--xla_gpu_enable_triton_gemm=false"


def test_a_flag_the_user_set_is_left_as_it_is():
  mine = "--xla_gpu_enable_triton_gemm=true --xla_dump_to=/tmp/x"
  assert xla_flags.with_defaults(mine) == mine
  assert xla_flags.with_defaults("xla_gpu_enable_triton_gemm=true").count("triton") == 1


def test_apply_sets_the_environment(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  value = xla_flags.apply()
  assert os.environ["XLA_FLAGS"] == value
  assert "--xla_gpu_enable_triton_gemm=false" in value


def test_this_jaxlib_knows_every_default_flag():
  # XLA aborts on a flag it does not know ("Unknown flag in XLA_FLAGS"): a jax
  # upgrade that drops one must fail here, not in a user's first run.
  env = dict(os.environ, XLA_FLAGS=xla_flags.with_defaults(""), JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"],
      env=env, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "3.0"
