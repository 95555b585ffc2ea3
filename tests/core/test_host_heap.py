"""Host memory kept in the heap (core/host_heap.py): what is asked of glibc, when
the user's settings win, and that XLA:CPU's temporaries then stop faulting."""
import os
import subprocess
import sys

import pytest

from optical_jax.core import host_heap


class FakeMallopt:
  """Records mallopt calls; refuses the parameters in `refuse`."""

  def __init__(self, refuse=()):
    self.calls, self.refuse = [], set(refuse)

  def __call__(self, param, value):
    self.calls.append((param, value))
    return 0 if param in self.refuse else 1


CPU = {"JAX_PLATFORMS": "cpu"}


def test_asks_glibc_for_no_mmap_no_trim_one_arena():
  mallopt = FakeMallopt()
  assert host_heap.configure("keep", environ=CPU, mallopt=mallopt) == "kept in the heap"
  assert dict(mallopt.calls) == {host_heap.M_MMAP_MAX: 0,
                                 host_heap.M_TRIM_THRESHOLD: 2**31 - 1,
                                 host_heap.M_ARENA_MAX: 1}


def test_the_default_leaves_malloc_alone_and_a_typo_is_refused():
  mallopt = FakeMallopt()
  assert host_heap.configure("os", environ=CPU, mallopt=mallopt) == "left as it is (host_heap=os)"
  assert mallopt.calls == []
  with pytest.raises(ValueError, match="host_heap='kep'"):
    host_heap.configure("kep", environ=CPU, mallopt=mallopt)


@pytest.mark.parametrize("name", host_heap.USER_SETTINGS)
def test_the_users_malloc_settings_win(name):
  mallopt = FakeMallopt()
  said = host_heap.configure("keep", environ=dict(CPU, **{name: ""}), mallopt=mallopt)
  assert mallopt.calls == []
  assert said == f"left as the environment sets it ({name})"


def test_a_refusal_is_reported():
  mallopt = FakeMallopt(refuse={host_heap.M_ARENA_MAX})
  said = host_heap.configure("keep", environ=CPU, mallopt=mallopt)
  assert said == f"left partly as it is (mallopt refused parameters [{host_heap.M_ARENA_MAX}])"


def test_without_glibc_nothing_is_touched(monkeypatch):
  monkeypatch.setattr(host_heap, "glibc_mallopt", lambda: None)
  assert host_heap.configure("keep", environ=CPU) == "left as it is (the C library is not glibc)"


@pytest.mark.parametrize("platforms, accelerator", [
    ("cpu", False), ("cpu,cuda", False), ("cuda", True), ("tpu,cpu", True), (" cuda ", True)])
def test_an_accelerator_leaves_malloc_alone(platforms, accelerator):
  mallopt = FakeMallopt()
  said = host_heap.configure("keep", environ={"JAX_PLATFORMS": platforms}, mallopt=mallopt)
  assert host_heap.accelerator_expected({"JAX_PLATFORMS": platforms}) == accelerator
  assert (said == "left as it is (JAX runs on an accelerator here)") == accelerator
  assert bool(mallopt.calls) != accelerator


def test_without_jax_platforms_installed_plugins_decide(monkeypatch):
  monkeypatch.setattr(host_heap.importlib.metadata, "entry_points", lambda group: [])
  monkeypatch.setattr(host_heap.importlib.util, "find_spec", lambda name: None)
  assert not host_heap.accelerator_expected({})
  monkeypatch.setattr(host_heap.importlib.util, "find_spec",
                      lambda name: object() if name == "libtpu" else None)
  assert host_heap.accelerator_expected({})
  monkeypatch.setattr(host_heap.importlib.util, "find_spec", lambda name: None)
  monkeypatch.setattr(host_heap.importlib.metadata, "entry_points",
                      lambda group: ["jax_cuda12_plugin"] if group == "jax_plugins" else [])
  assert host_heap.accelerator_expected({})


# A program with a 128 MiB temporary (exp(x), read transposed by a product),
# allocated and freed by every call; prints its temporary's pages and the page
# faults per call over 40 calls after 3. Kept in the heap, the heap still grows
# by a temporary's size now and then (3-7 times in 30 calls, seen), as a call
# can allocate before the last one has freed; then every call is served from
# what was freed.
_FAULTS = """
import os, resource, sys
from optical_jax.core import host_heap
print(host_heap.configure(sys.argv[1]))
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.exp(x).T @ jnp.ones((8192, 8))))
x = jnp.zeros((8192, 4096), jnp.float32)
temp = f.lower(x).compile().memory_analysis().temp_size_in_bytes
for _ in range(3):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
  f(x).block_until_ready()
print(temp // os.sysconf("SC_PAGE_SIZE"))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 40)
"""


def _faults_per_call(mode: str, env: dict[str, str]) -> tuple[str, int, float]:
  """(what configure(mode) said, the temporary's pages, page faults per call)."""
  done = subprocess.run([sys.executable, "-c", _FAULTS, mode], env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  said, pages, faults = done.stdout.strip().splitlines()[-3:]
  return said, int(pages), float(faults)


@pytest.mark.skipif(host_heap.glibc_mallopt() is None, reason="needs glibc's malloc (Linux)")
def test_temporaries_stop_faulting_once_kept():
  env = {k: v for k, v in os.environ.items() if k not in host_heap.USER_SETTINGS}
  said, pages, kept = _faults_per_call("keep", env)
  assert said == "kept in the heap"
  assert pages >= 8192 * 4096 * 4 // os.sysconf("SC_PAGE_SIZE")
  # The same program with glibc's defaults: each call maps its temporary
  # afresh and faults on every page of it.
  said, _, default = _faults_per_call("os", env)
  assert said == "left as it is (host_heap=os)"
  assert default > 0.5 * pages
  assert kept < 0.25 * pages
