"""What this CPU's instruction set is, and the XLA choices that depend on it.

Defaults that pay on one CPU type and cost on another are chosen here from
the CPU's features (`/proc/cpuinfo` flags), never fixed for the machine a
figure was measured on:

* bf16 dots (`has_bf16_dots`): AVX512_BF16 or AMX; XLA emulates them elsewhere,
  so certified bf16 search pays only where they exist (`search/certified.py`).
* YNNPACK fusions in forward encoders (`forward_compile_options`): jaxlib 0.10
  routes CPU matmuls, and the element-wise ops around them, through YNNPACK.
  On an AVX2-only AMD EPYC (no AVX-512) the encoder's forward pass ran 1.10-1.24x
  faster with those fusions off (64 x 32 ... 16 x 256 tokens, e5-small, float32,
  one process, alternating), the same to 2.4e-6; the exact search's large
  matmuls ran 1.5x slower off, and the distillation step (mostly backward
  passes) the same within noise, so only the encoders' forward programs turn
  them off. On an Intel Xeon with AVX-512, AVX512_BF16 and AMX the same forward
  pass ran 1.18-1.36x faster off (64 x 128 tokens, alternating runs), so every
  x86 CPU with AVX2 turns them off; on ARM it is unmeasured and XLA's default
  stands.
"""
from __future__ import annotations

import functools
import logging
import pathlib
from typing import Any, Callable, Collection

import jax

log = logging.getLogger(__name__)

# XLA:CPU's debug option naming the op kinds it hands to YNNPACK; empty = none.
YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def _first_processor() -> dict[str, str]:
  """The first processor's `/proc/cpuinfo` fields; empty where it cannot be
  read (macOS, Windows)."""
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
  except OSError:
    return {}
  return parse_cpuinfo(text)


def parse_cpuinfo(text: str) -> dict[str, str]:
  """`/proc/cpuinfo` text -> its first processor's fields."""
  fields = {}
  for line in text.splitlines():
    if not line.strip():
      break
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  return fields


def flags() -> frozenset[str]:
  """This CPU's feature flags (lower case, as Linux lists them; x86 `flags`,
  ARM `Features`); empty where unknown."""
  info = _first_processor()
  return frozenset((info.get("flags") or info.get("Features") or "").split())


def model() -> str:
  """This CPU's model name, or 'unknown CPU'."""
  return _first_processor().get("model name") or "unknown CPU"


def has_bf16_dots(cpu_flags: Collection[str] | None = None) -> bool:
  """Whether the CPU has bf16 dot instructions (AVX512_BF16, AMX-BF16)."""
  cpu_flags = flags() if cpu_flags is None else cpu_flags
  return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags))


def forward_compile_options(platform: str, cpu_flags: Collection[str] | None = None
                            ) -> dict[str, Any]:
  """XLA compile options for a forward-only encoder program on `platform`.

  YNNPACK fusions off on x86 CPUs with AVX2, with or without AVX-512 (measured
  on both, see the module docstring); nothing elsewhere.
  """
  if platform != "cpu":
    return {}
  cpu_flags = flags() if cpu_flags is None else set(cpu_flags)
  if "avx2" in cpu_flags:
    return {YNN_FUSIONS: ""}
  return {}


class jit_forward:  # pylint: disable=invalid-name  (used as `jax.jit` is)
  """`jax.jit(fn, **jit_kwargs)` with `forward_compile_options` for the backend.

  The options are picked at the first call (after the backend has started, so
  `XLA_FLAGS` set before it still apply). A jaxlib that does not know an option
  refuses to compile with it: the program then compiles without it, with one
  warning, instead of failing the run. `options` says which took effect.

  Args:
    fn: the forward program.
    options: the options to try (default: `forward_compile_options` of the
      default backend); `{}` is plain `jax.jit`.
    **jit_kwargs: for `jax.jit` (static_argnums, ...).
  """

  def __init__(self, fn: Callable, *, options: dict[str, Any] | None = None, **jit_kwargs):
    functools.update_wrapper(self, fn)
    self._fn, self._jit_kwargs, self._try = fn, jit_kwargs, options
    self._jitted: Callable | None = None
    self.options: dict[str, Any] | None = None   # in effect, once chosen

  def __call__(self, *args, **kwargs):
    if self._jitted is not None:
      return self._jitted(*args, **kwargs)
    opts = forward_compile_options(jax.default_backend()) if self._try is None else self._try
    if opts:
      tuned = jax.jit(self._fn, compiler_options=opts, **self._jit_kwargs)
      try:
        out = tuned(*args, **kwargs)
      except jax.errors.JaxRuntimeError as e:
        if "compile option" not in str(e):
          raise
        log.warning("this jaxlib does not take the compile options %s (%s); "
                    "compiling without them", sorted(opts), str(e).splitlines()[0])
      else:
        self._jitted, self.options = tuned, opts
        return out
    self._jitted, self.options = jax.jit(self._fn, **self._jit_kwargs), {}
    return self._jitted(*args, **kwargs)

  def lower(self, *args, **kwargs):
    """The chosen program's `lower` (call it first; before, XLA's defaults)."""
    return (self._jitted or jax.jit(self._fn, **self._jit_kwargs)).lower(*args, **kwargs)
