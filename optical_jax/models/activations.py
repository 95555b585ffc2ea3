"""The encoders' activation functions, by Hugging Face `hidden_act` name.

BERT's GELU is the exact one, x Phi(x), Phi the standard normal CDF, written
0.5 x (1 + erf(x / sqrt 2)) by PyTorch and 0.5 x erfc(-x / sqrt 2) by
`jax.nn.gelu(approximate=False)`. The two are equal to float32 rounding; their
cost is not, and which is cheaper depends on the compiler:

* XLA:GPU expands erfc into two rational approximations (one with an
  exponential and two divisions) evaluated for every element, then selected: on
  an H100 each [16k, 3072] GELU of e5-base took 160 us, compute-bound, where
  moving its bytes takes about 60 us. erf is one rational approximation.
* XLA:CPU splits erfc's expansion over three or four loop fusions (the
  exponential and the divisions are not duplicated into each consumer), each a
  pass over the [tokens, intermediate] activations; erf is one fusion. On a
  2-core Xeon with AVX-512 the distillation step took 2.14-2.22 s with erf
  against 2.28-2.33 s with erfc, the encoder forward 2.13-2.17 against
  2.28-2.29 s (e5-small, one engine per process; compiled for AVX2 only, the
  step 2.26-2.32 against 2.33-2.40 s). An earlier measurement on an AVX2 AMD
  EPYC favoured erfc in the forward pass (4.2 against 3.7 s), when XLA still
  fused the GELU into a YNNPACK matmul there; forward programs no longer take
  those fusions on x86 (core/cpu.py).

`gelu_exact` takes erf on GPUs and CPUs, and erfc, as `jax.nn.gelu` does, on
TPUs (unmeasured there). It computes in float32 whatever the input dtype (bf16
included: 1/sqrt 2 is not rounded to bf16 either), and defines its derivative,
Phi(x) + x phi(x), in the same pass, so reverse mode keeps that slope in the
input's dtype as its only residual instead of recomputing the CDF and an
exponential in the backward pass.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

_RSQRT2 = 1.0 / math.sqrt(2.0)
_RSQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
CDF_FORMS = ("erf", "erfc")


def cdf_form(backend: str) -> str:
  """The cheaper way to Phi on a JAX backend ('gpu', 'cpu', 'tpu'): see above."""
  return "erf" if backend in ("gpu", "cpu") else "erfc"


def _cdf(x32: jax.Array, form: str) -> jax.Array:
  """Phi(x) of a float32 array, through erf or erfc."""
  if form == "erf":
    return 0.5 * (1.0 + jax.lax.erf(x32 * _RSQRT2))
  if form == "erfc":
    return 0.5 * jax.lax.erfc(-x32 * _RSQRT2)
  raise ValueError(f"form must be one of {CDF_FORMS}, got {form!r}")


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def gelu_with(x: jax.Array, form: str) -> jax.Array:
  """x Phi(x) with Phi through `form`, computed in float32, returned in x's
  dtype (any shape)."""
  x32 = x.astype(jnp.float32)
  return (x32 * _cdf(x32, form)).astype(x.dtype)


@gelu_with.defjvp
def _gelu_with_jvp(form, primals, tangents):
  (x,), (t,) = primals, tangents
  x32 = x.astype(jnp.float32)
  cdf = _cdf(x32, form)
  # d/dx x Phi(x) = Phi(x) + x phi(x), phi the standard normal density.
  slope = (cdf + x32 * _RSQRT_2PI * jnp.exp(-0.5 * x32 * x32)).astype(x.dtype)
  return (x32 * cdf).astype(x.dtype), slope * t


def gelu_exact(x: jax.Array) -> jax.Array:
  """The exact GELU, by the form cheaper on the default backend."""
  return gelu_with(x, cdf_form(jax.default_backend()))


ACTIVATIONS = {
    "gelu": gelu_exact,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
