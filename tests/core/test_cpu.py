"""CPU-feature choices (core/cpu.py): which options a forward encoder compiles with."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.core import cpu

AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_bf16"}
ARM = {"fp", "asimd", "sve", "bf16"}


X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse4_2 avx avx2 fma

processor\t: 1
model name\t: another
flags\t\t: avx512f
"""
ARM_TEXT = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd sve bf16
"""


def test_cpuinfo_is_read_from_the_first_processor():
  fields = cpu.parse_cpuinfo(X86)
  assert fields["model name"] == "AMD EPYC 7B13"
  assert fields["flags"].split() == ["fpu", "sse4_2", "avx", "avx2", "fma"]
  assert cpu.parse_cpuinfo(ARM_TEXT)["Features"] == "fp asimd sve bf16"
  assert cpu.parse_cpuinfo("") == {}
  assert isinstance(cpu.flags(), frozenset) and cpu.model()


@pytest.mark.parametrize("flags, expected", [(AVX2_ONLY, False), (AVX512, True),
                                             ({"amx_bf16"}, True), (ARM, False)])
def test_bf16_dots_need_avx512_bf16_or_amx(flags, expected):
  assert cpu.has_bf16_dots(flags) is expected


def test_ynnpack_fusions_go_off_only_on_x86_cpus():
  assert cpu.forward_compile_options("cpu", AVX2_ONLY) == {cpu.YNN_FUSIONS: ""}
  assert cpu.forward_compile_options("cpu", AVX512) == {cpu.YNN_FUSIONS: ""}
  assert cpu.forward_compile_options("cpu", ARM) == {}
  assert cpu.forward_compile_options("cpu", set()) == {}
  assert cpu.forward_compile_options("gpu", AVX2_ONLY) == {}
  assert cpu.forward_compile_options("tpu", AVX2_ONLY) == {}


def _mlp(x, w):
  return jax.nn.gelu(x @ w) @ w.T


def test_this_jaxlib_takes_the_option_and_results_equal_xla_defaults(caplog):
  # A jax upgrade that drops the option must show here (it would then be
  # silently skipped, see the fallback test), not as a slower user run.
  x = jax.random.normal(jax.random.key(0), (64, 32))
  w = jax.random.normal(jax.random.key(1), (32, 96)) / 6
  caplog.set_level(logging.WARNING, logger=cpu.__name__)
  tuned = cpu.jit_forward(_mlp, options={cpu.YNN_FUSIONS: ""})
  got = tuned(x, w)
  assert not caplog.records, caplog.text
  np.testing.assert_allclose(got, jax.jit(_mlp)(x, w), rtol=1e-5, atol=1e-5)
  # The option reaches the compiler: no matmul left in a YNNPACK fusion.
  assert "ynn_fusion" not in tuned.lower(x, w).compile().as_text()
  np.testing.assert_allclose(tuned(x, w), got)   # the chosen program is reused
  assert tuned.options == {cpu.YNN_FUSIONS: ""}


def test_an_option_this_jaxlib_lacks_falls_back_with_one_warning(caplog):
  caplog.set_level(logging.WARNING, logger=cpu.__name__)
  f = cpu.jit_forward(_mlp, options={"xla_cpu_no_such_option_anywhere": ""})
  x, w = jnp.ones((4, 8)), jnp.ones((8, 16)) / 8
  np.testing.assert_allclose(f(x, w), jax.jit(_mlp)(x, w))
  np.testing.assert_allclose(f(x, w), jax.jit(_mlp)(x, w))
  assert len(caplog.records) == 1
  assert "xla_cpu_no_such_option_anywhere" in caplog.text
  assert f.options == {}


@pytest.mark.parametrize("options", [{}, {cpu.YNN_FUSIONS: ""}])
def test_static_arguments_pass_through(options):
  # `n` sets a shape: traced instead of static, jnp.ones(n) would fail.
  f = cpu.jit_forward(lambda n, x: jnp.ones(n) * x, static_argnums=0, options=options)
  assert f(3, jnp.float32(2)).shape == (3,)
  assert f(4, jnp.float32(2)).tolist() == [2.0] * 4
  assert f.options == options
