"""Where XLA:CPU's temporaries come from (core/host_heap.py): what is asked of glibc,
when tcmalloc is preloaded and how the process restarts, when the user's settings win,
and that the temporaries then stop faulting."""
import os
import subprocess
import sys

import pytest

from optical_jax.core import host_heap

from tests import repo


class FakeMallopt:
  """Records mallopt calls; refuses the parameters in `refuse`."""

  def __init__(self, refuse=()):
    self.calls, self.refuse = [], set(refuse)

  def __call__(self, param, value):
    self.calls.append((param, value))
    return 0 if param in self.refuse else 1


class FakeSynchronous:
  """Counts the requests to turn JAX's asynchronous CPU dispatch off."""

  def __init__(self):
    self.calls = 0

  def __call__(self):
    self.calls += 1


CPU = {"JAX_PLATFORMS": "cpu"}


def test_asks_glibc_for_no_mmap_no_trim_and_jax_for_synchronous_dispatch():
  mallopt, synchronous = FakeMallopt(), FakeSynchronous()
  said = host_heap.configure("keep", environ=CPU, mallopt=mallopt, synchronous=synchronous)
  assert said == "kept in the heap"
  assert dict(mallopt.calls) == {host_heap.M_MMAP_MAX: 0,
                                 host_heap.M_TRIM_THRESHOLD: 2**31 - 1}
  assert synchronous.calls == 1


def test_the_default_leaves_malloc_alone_and_a_typo_is_refused():
  mallopt = FakeMallopt()
  assert host_heap.configure("os", environ=CPU, mallopt=mallopt) == "left as it is (host_heap=os)"
  assert mallopt.calls == []
  with pytest.raises(ValueError, match="host_heap='kep'"):
    host_heap.configure("kep", environ=CPU, mallopt=mallopt)


@pytest.mark.parametrize("name", host_heap.USER_SETTINGS)
def test_the_users_malloc_settings_win(name):
  mallopt, synchronous = FakeMallopt(), FakeSynchronous()
  said = host_heap.configure("keep", environ=dict(CPU, **{name: ""}), mallopt=mallopt,
                             synchronous=synchronous)
  assert mallopt.calls == [] and synchronous.calls == 0
  assert said == f"left as the environment sets it ({name})"


def test_a_preloaded_allocator_wins_over_keep():
  mallopt, synchronous = FakeMallopt(), FakeSynchronous()
  said = host_heap.configure("keep", environ=dict(CPU, LD_PRELOAD="/opt/libjemalloc.so.2"),
                             mallopt=mallopt, synchronous=synchronous)
  assert mallopt.calls == [] and synchronous.calls == 0
  assert said == "left as the environment sets it (LD_PRELOAD)"


def test_a_refusal_is_reported_and_dispatch_left_as_it_is():
  mallopt, synchronous = FakeMallopt(refuse={host_heap.M_MMAP_MAX}), FakeSynchronous()
  said = host_heap.configure("keep", environ=CPU, mallopt=mallopt, synchronous=synchronous)
  assert said == f"left partly as it is (mallopt refused parameters [{host_heap.M_MMAP_MAX}])"
  assert synchronous.calls == 0


def test_without_glibc_nothing_is_touched(monkeypatch):
  monkeypatch.setattr(host_heap, "glibc_mallopt", lambda: None)
  synchronous = FakeSynchronous()
  said = host_heap.configure("keep", environ=CPU, synchronous=synchronous)
  assert said == "left as it is (the C library is not glibc)"
  assert synchronous.calls == 0


@pytest.mark.parametrize("platforms, accelerator", [
    ("cpu", False), ("cpu,cuda", False), ("cuda", True), ("tpu,cpu", True), (" cuda ", True)])
def test_an_accelerator_leaves_malloc_alone(platforms, accelerator):
  mallopt, synchronous = FakeMallopt(), FakeSynchronous()
  said = host_heap.configure("keep", environ={"JAX_PLATFORMS": platforms}, mallopt=mallopt,
                             synchronous=synchronous)
  assert host_heap.accelerator_expected({"JAX_PLATFORMS": platforms}) == accelerator
  assert (said == "left as it is (JAX runs on an accelerator here)") == accelerator
  assert bool(mallopt.calls) != accelerator
  assert synchronous.calls == (0 if accelerator else 1)


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
# allocated and freed by every call; prints its temporary's pages, the page
# faults per call over 40 calls after 3. Kept in the heap, the heap still
# grows by a temporary's size now and then (to 1-2 temporaries over 40 calls,
# seen), as what a call returns can land in the block the last call freed; then
# every call is served from what was freed.
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


class Restarted(Exception):
  """Raised by the fake `restart`, which in a real run does not return."""


@pytest.fixture
def tcmalloc(monkeypatch):
  """host_heap with tcmalloc's presence faked: set `.installed` / `.loaded`; every
  restart asked for is recorded in `.restarts` as (library, environment)."""
  class Fake:
    installed, loaded, restarts = "libtcmalloc_minimal.so.4", False, []

    @staticmethod
    def restart(library, environ):
      Fake.restarts.append((library, dict(environ)))
      raise Restarted

  Fake.restarts = []
  monkeypatch.setattr(host_heap, "find_tcmalloc", lambda: Fake.installed)
  monkeypatch.setattr(host_heap, "tcmalloc_loaded", lambda: Fake.loaded)
  monkeypatch.setattr(host_heap, "restart", Fake.restart)
  monkeypatch.setattr(host_heap.sys, "platform", "linux")
  return Fake


def test_tcmalloc_restarts_the_process_with_it_preloaded(tcmalloc):
  with pytest.raises(Restarted):
    host_heap.configure("tcmalloc", environ=dict(CPU, LD_PRELOAD="libfoo.so"))
  assert tcmalloc.restarts == [("libtcmalloc_minimal.so.4",
                                dict(CPU, LD_PRELOAD="libfoo.so"))]


def test_tcmalloc_once_loaded_is_reported_and_not_restarted(tcmalloc):
  tcmalloc.loaded = True
  assert host_heap.configure("tcmalloc", environ=CPU) == "tcmalloc"
  assert host_heap.configure("os", environ=CPU) == "tcmalloc, preloaded"
  assert tcmalloc.restarts == []


def test_tcmalloc_missing_says_what_to_install(tcmalloc):
  tcmalloc.installed = None
  with pytest.raises(ValueError, match="host_heap=tcmalloc: no tcmalloc library.*"
                                       "apt install libtcmalloc-minimal4"):
    host_heap.configure("tcmalloc", environ=CPU)
  assert tcmalloc.restarts == []


@pytest.mark.parametrize("environ, said", [
    ({"JAX_PLATFORMS": "cuda"}, "left as it is (JAX runs on an accelerator here)"),
    (dict(CPU, LD_PRELOAD="libjemalloc.so.2"),
     "left as the environment sets it (LD_PRELOAD=libjemalloc.so.2)"),
    # Restarted already, and the linker could not preload it: no second restart.
    (dict(CPU, **{host_heap.RESTARTED: "libtcmalloc_minimal.so.4"}),
     "left as it is (preloading libtcmalloc_minimal.so.4 did not load tcmalloc)"),
])
def test_tcmalloc_leaves_malloc_alone(tcmalloc, environ, said):
  assert host_heap.configure("tcmalloc", environ=environ) == said
  assert tcmalloc.restarts == []


def test_tcmalloc_is_for_linux_only(tcmalloc, monkeypatch):
  monkeypatch.setattr(host_heap.sys, "platform", "darwin")
  said = host_heap.configure("tcmalloc", environ=CPU)
  assert said == "left as it is (tcmalloc is preloaded on Linux only)"
  assert tcmalloc.restarts == []


# restart() for real: the same interpreter, arguments and process id, the library
# preloaded before what the user preloads. libm stands in for tcmalloc (every
# glibc system has it; preloading it changes nothing).
_RESTART = """
import os, sys
from optical_jax.core import host_heap
if os.environ.get(host_heap.RESTARTED):
  print("child", os.getpid(), sys.argv[1:], os.environ["LD_PRELOAD"])
else:
  print("parent", os.getpid(), flush=True)
  host_heap.restart("libm.so.6", os.environ)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_restart_runs_the_same_command_line_in_the_same_process(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != host_heap.RESTARTED}
  env["LD_PRELOAD"] = "libc.so.6"
  done = subprocess.run([sys.executable, "-c", _RESTART, "--flag=1", "x y"], env=env,
                        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  parent, child = done.stdout.strip().splitlines()
  pid = parent.split()[1]
  assert child == f"child {pid} ['--flag=1', 'x y'] libm.so.6:libc.so.6"


def test_the_cli_names_what_to_install_when_tcmalloc_is_missing(tmp_path):
  """`optical-jax --host_heap=tcmalloc` on a machine without it: a usage error (2)."""
  script = ("import sys; from optical_jax.core import host_heap; "
            "host_heap.find_tcmalloc = lambda: None; host_heap.tcmalloc_loaded = lambda: False; "
            "from optical_jax import main; main.run()")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LD_PRELOAD")}
  env["JAX_PLATFORMS"] = "cpu"
  done = subprocess.run([sys.executable, "-c", script, "--config=configs/demo.py:tiny",
                         f"--workdir={tmp_path}", "--host_heap=tcmalloc"], cwd=repo.ROOT,
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "apt install libtcmalloc-minimal4" in done.stderr
  assert not list(tmp_path.iterdir())   # nothing ran


@pytest.mark.skipif(host_heap.find_tcmalloc() is None,
                    reason="no tcmalloc on this machine (Debian/Ubuntu: apt install "
                           "libtcmalloc-minimal4)")
def test_temporaries_stop_faulting_under_tcmalloc():
  env = {k: v for k, v in os.environ.items()
         if k not in ("LD_PRELOAD", host_heap.RESTARTED, *host_heap.USER_SETTINGS)}
  env["JAX_PLATFORMS"] = "cpu"
  said, pages, faults = _faults_per_call("tcmalloc", env)
  assert said == "tcmalloc"
  assert faults < 0.25 * pages
