"""Where XLA:CPU's per-call temporary buffers come from: `--host_heap`.

XLA:CPU gives each call of a compiled program one block of host memory for its
temporaries (1.07 GB for the distillation step on random text at the demo's
shape, e5-small at 32 x 64) and frees it when the call ends. glibc's malloc
serves a block that large from fresh `mmap`ed pages and returns them to the
kernel on `free` (blocks above its mmap threshold, at most 32 MiB, always are;
so is anything a thread other than the main one allocates beyond 64 MiB, its
arena's limit). So every call faults in and zeroes its temporaries again: on a
2-core Zen 4 EPYC, 267k page faults and 0.46-0.52 s of system time per step of
about 2.5 s, against 7-16k faults and 0.04-0.05 s for PyTorch's step.

Three settings (`configure(mode)`, called first thing, before JAX starts):

- 'os' (the default) leaves glibc's malloc as it is.
- 'tcmalloc' restarts the process (same interpreter, same arguments, same
  process id) with gperftools' tcmalloc preloaded, found in the dynamic
  linker's cache (Debian/Ubuntu: `apt install libtcmalloc-minimal4`). tcmalloc
  keeps a freed block for the next call without fragmenting: on that EPYC the
  step took no page faults, 2.22-2.23 s against 2.55-2.65 s
  (`benchmarks/distill_step.py`, alternating runs), and the demo's peak memory
  rose by a tenth (README, Performance). Where no tcmalloc is installed it is an
  error that says what to install.
- 'keep' asks glibc (`mallopt`) to serve every block from its heap
  (`M_MMAP_MAX` 0) and to keep what is freed there (`M_TRIM_THRESHOLD` at its
  largest), and turns off JAX's asynchronous dispatch on the CPU, so that a
  program runs, and allocates its temporaries, on the thread that calls it: the
  main thread, whose arena is the heap. (A worker thread's arena holds at most
  64 MiB; a larger block falls back to `mmap` whatever `M_MMAP_MAX` says.) On
  that EPYC the step took no page faults, 2.17-2.32 s against 2.55-2.77 s
  (separate processes, alternating), and the demo ran 1.08x as fast. The heap
  still fragments now and then (what a call returns can land in the block the
  last one freed): the demo's peak resident memory went from 4.3-4.5 to 5.4-5.5
  GB. The host no longer builds the next batch while a step runs (on a CPU both
  share the same cores). JAX dispatches single-device programs only this way:
  a program on several CPU devices (a mesh) still runs on worker threads, so
  'keep' may not spare it the faults (not measured). For machines with no
  tcmalloc.

Neither is the default: both keep memory the process could give back, 'keep'
changes how JAX dispatches, and 'tcmalloc' restarts the process and depends on
a system library the machine may lack.

Where they apply: Linux ('keep': with glibc), where JAX will run on the CPU,
before a backend starts. Where JAX has a GPU or TPU (`JAX_PLATFORMS` names one
first, or, unset, a PJRT plugin or libtpu is installed), the temporaries live
in device memory, so malloc is left alone. Where the user sets `GLIBC_TUNABLES`
or glibc's `MALLOC_*` variables ('keep'), or preloads another allocator
(`LD_PRELOAD`), theirs stands.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import logging
import os
import sys
from typing import Callable, Mapping, NoReturn

import jax

MODES = ("os", "keep", "tcmalloc")   # glibc's defaults | kept in glibc's heap | tcmalloc

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))

# Environment variables through which a user sets glibc's malloc: theirs wins.
USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
                 "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

# tcmalloc's library names as the dynamic linker's cache knows them (gperftools:
# the minimal build first, it is all we use), and names of allocators a user
# may preload instead (theirs stands).
TCMALLOC_LIBRARIES = ("tcmalloc_minimal", "tcmalloc")
ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
# What configure('os') says where glibc's malloc is left with its defaults.
OS_DEFAULT = "left as it is (host_heap=os)"
# Set in the restarted process: it must not restart again.
RESTARTED = "OPTICAL_JAX_HOST_HEAP_RESTARTED"

log = logging.getLogger(__name__)


def glibc_mallopt() -> Callable[[int, int], int] | None:
  """This process's glibc `mallopt`, or None where the C library is not glibc."""
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version    # glibc only (musl has mallopt but ignores it)
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):   # TypeError: no CDLL(None) on Windows
    return None
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  return mallopt


def tcmalloc_loaded() -> bool:
  """Whether this process's malloc is tcmalloc (preloaded, or linked in)."""
  try:
    return hasattr(ctypes.CDLL(None), "tc_malloc")
  except (OSError, TypeError):
    return False


def find_tcmalloc() -> str | None:
  """tcmalloc's library name for `LD_PRELOAD` (e.g. 'libtcmalloc_minimal.so.4'),
  or None where the dynamic linker's cache has none."""
  for name in TCMALLOC_LIBRARIES:
    found = ctypes.util.find_library(name)
    if found:
      return found
  return None


def restart(library: str, environ: Mapping[str, str]) -> NoReturn:
  """Replaces this process by the same command line with `library` preloaded.

  `sys.orig_argv` is the interpreter's own command line, so `optical-jax ...`,
  `python -m optical_jax.main ...` and `python script.py ...` all run again as
  they were started, with the same process id.
  """
  env = dict(environ)
  env["LD_PRELOAD"] = ":".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
  env[RESTARTED] = library
  log.info("restarting with %s preloaded (host_heap=tcmalloc)", library)
  for handler in logging.getLogger().handlers:   # what was logged, before exec drops it
    handler.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def _preloaded_allocator(environ: Mapping[str, str]) -> bool:
  """Whether `LD_PRELOAD` names a malloc replacement."""
  return any(name in environ.get("LD_PRELOAD", "") for name in ALLOCATORS)


def _tcmalloc(environ: Mapping[str, str]) -> str:
  """configure('tcmalloc'): returns what it did, or restarts the process."""
  if tcmalloc_loaded():
    return "tcmalloc"
  if not sys.platform.startswith("linux"):
    return "left as it is (tcmalloc is preloaded on Linux only)"
  if accelerator_expected(environ):
    return "left as it is (JAX runs on an accelerator here)"
  if _preloaded_allocator(environ):
    return f"left as the environment sets it (LD_PRELOAD={environ['LD_PRELOAD']})"
  if environ.get(RESTARTED):
    # The dynamic linker said why on stderr ("cannot be preloaded").
    return f"left as it is (preloading {environ[RESTARTED]} did not load tcmalloc)"
  library = find_tcmalloc()
  if library is None:
    raise ValueError(
        "host_heap=tcmalloc: no tcmalloc library in the dynamic linker's cache "
        f"(looked for lib{'.so, lib'.join(TCMALLOC_LIBRARIES)}.so). Install gperftools' "
        "(Debian/Ubuntu: apt install libtcmalloc-minimal4; Fedora: dnf install "
        "gperftools-libs; conda: conda install gperftools), or preload one yourself: "
        "LD_PRELOAD=/path/to/libtcmalloc_minimal.so.4 optical-jax ...")
  restart(library, environ)


def accelerator_expected(environ: Mapping[str, str]) -> bool:
  """Whether JAX's default backend here will be a GPU or TPU (without starting it)."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() != "cpu"
  return (bool(importlib.metadata.entry_points(group="jax_plugins"))
          or importlib.util.find_spec("libtpu") is not None)


def synchronous_cpu_dispatch() -> None:
  """Runs each single-device CPU program on the thread that calls it; takes
  effect where JAX's CPU backend has not started yet."""
  jax.config.update("jax_cpu_enable_async_dispatch", False)


def configure(mode: str, environ: Mapping[str, str] | None = None,
              mallopt: Callable[[int, int], int] | None = None,
              synchronous: Callable[[], None] = synchronous_cpu_dispatch) -> str:
  """Under 'keep', keeps freed host memory in glibc's heap; under 'tcmalloc',
  restarts the process with tcmalloc preloaded unless it has it; under 'os',
  leaves glibc's defaults (module docstring). Returns what it did.

  Args:
    mode: one of MODES.
    environ: the environment to read the user's settings from (default
      `os.environ`).
    mallopt: glibc's `mallopt` (default: this process's, if it has glibc).
    synchronous: turns off JAX's asynchronous CPU dispatch ('keep').

  Returns:
    'kept in the heap', 'tcmalloc', or why malloc was left as it is.

  Raises:
    ValueError: an unknown mode, or 'tcmalloc' where none is installed.
  """
  if mode not in MODES:
    raise ValueError(f"host_heap={mode!r}: expected one of {MODES}")
  environ = os.environ if environ is None else environ
  if mode == "os":
    return "tcmalloc, preloaded" if tcmalloc_loaded() else OS_DEFAULT
  if mode == "tcmalloc":
    return _tcmalloc(environ)
  mine = sorted(k for k in USER_SETTINGS if k in environ)
  if _preloaded_allocator(environ):
    mine.append("LD_PRELOAD")
  if mine:
    return f"left as the environment sets it ({', '.join(mine)})"
  if accelerator_expected(environ):
    return "left as it is (JAX runs on an accelerator here)"
  mallopt = mallopt or glibc_mallopt()
  if mallopt is None:
    return "left as it is (the C library is not glibc)"
  refused = [param for param, value in SETTINGS if mallopt(param, value) != 1]
  if refused:
    return f"left partly as it is (mallopt refused parameters {refused})"
  synchronous()
  return "kept in the heap"
