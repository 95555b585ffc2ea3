"""Keeping XLA:CPU's temporary buffers in the process heap between calls.

XLA:CPU gives each call of a compiled program one block of host memory for its
temporaries (1.07 GB for the distillation step on random text at the demo's
shape, e5-small at 32 x 64) and frees it when the call ends. glibc's malloc
serves a block that large from fresh `mmap`ed pages and returns them to the
kernel on `free` (blocks above its mmap threshold, at most 32 MiB, always are;
so is anything a thread other than the main one allocates beyond 64 MiB, its
arena's limit). So every call faults in and zeroes its temporaries again: on a
2-core Zen 4 EPYC, 267k page faults and 0.46-0.52 s of system time per step of
about 2.5 s, against 7-16k faults and 0.04-0.05 s for PyTorch's step.

`configure("keep")` asks glibc (through `mallopt`, before JAX starts its
threads) to serve every block from its heap (`M_MMAP_MAX` 0), to keep what is
freed there (`M_TRIM_THRESHOLD` at its largest) and to give every thread the
one main arena (`M_ARENA_MAX` 1; the others could not hold such a block). After
the first steps the step faults no page at all, and on that EPYC it ran
1.02-1.09x as fast in separate processes (median 1.06x), 1.11-1.17x in one.
It is not the default (`configure("os")` leaves malloc alone) because of its
price: the process keeps its high-water mark, which grows by a temporary's
size now and then (a call can allocate before the last one has freed, and one
program's freed blocks do not always fit another's: a 128 MiB temporary took
the heap to 0.7-1.1 GB over 30 calls before it settled), so the demo's peak
resident memory went from 4.5 to 6.5 GB, while its 160 steps took the same
5 min 37 s and its evaluation passes 1-4 s longer. Turn it on (`optical-jax
--host_heap=keep`, `benchmarks/distill_step.py --host_heap=keep`) for long CPU
runs of one program where memory is ample.

Where it applies: Linux with glibc, where JAX will run on the CPU, before a
backend starts. Where JAX has a GPU or TPU (`JAX_PLATFORMS` names one first,
or, unset, a PJRT plugin or libtpu is installed), the temporaries live in
device memory, and one arena could only slow the host threads that build
batches, so malloc is left alone; so it is on macOS and musl. Where the user
sets any of `GLIBC_TUNABLES` or glibc's `MALLOC_*` variables, theirs stand.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
from typing import Callable, Mapping

MODES = ("os", "keep")   # glibc's defaults | blocks kept in the heap

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_ARENA_MAX, 1))

# Environment variables through which a user sets glibc's malloc: theirs wins.
USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
                 "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


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


def accelerator_expected(environ: Mapping[str, str]) -> bool:
  """Whether JAX's default backend here will be a GPU or TPU (without starting it)."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  if platforms:
    return platforms.split(",")[0].strip() != "cpu"
  return (bool(importlib.metadata.entry_points(group="jax_plugins"))
          or importlib.util.find_spec("libtpu") is not None)


def configure(mode: str, environ: Mapping[str, str] | None = None,
              mallopt: Callable[[int, int], int] | None = None) -> str:
  """Under 'keep', keeps freed host memory in the heap (module docstring);
  under 'os', leaves glibc's defaults. Returns what it did.

  Args:
    mode: one of MODES.
    environ: the environment to read the user's settings from (default
      `os.environ`).
    mallopt: glibc's `mallopt` (default: this process's, if it has glibc).

  Returns:
    'kept in the heap', or why malloc was left as it is.
  """
  if mode not in MODES:
    raise ValueError(f"host_heap={mode!r}: expected one of {MODES}")
  if mode == "os":
    return "left as it is (host_heap=os)"
  environ = os.environ if environ is None else environ
  mine = sorted(k for k in USER_SETTINGS if k in environ)
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
  return "kept in the heap"
