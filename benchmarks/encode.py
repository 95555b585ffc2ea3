"""Encoder throughput: our jitted NNX encoder vs PyTorch transformers, same weights.

Encodes `--batch` sequences of `--length` tokens (full rows: both engines do the
same work whatever their padding tricks) with `--model` and prints texts/second
for each engine, the ratio, and MFU against the device's dense peak for the
dtype used (bf16, or float32 = TF32 on NVIDIA GPUs). After warm-up, the engines
take turns for `--rounds` rounds of `--repeats` timed batches (timing.py): each
figure is the median of an engine's rounds, the ratio the median of the
per-round ratios, each round's printed beside it; compile time is reported
apart. PyTorch runs on the device JAX runs on (CUDA when JAX sees a GPU), with
SDPA attention and, for bfloat16, `torch.autocast` (weights stay float32 on both
sides).

  python benchmarks/encode.py                                  # embedded e5-small, CPU
  python benchmarks/encode.py --model=random:e5-base --dtype=bfloat16 --batch=512
  python benchmarks/encode.py --engine=jax --json=out.jsonl     # one engine per process

`--engine=jax|torch` runs one engine (a GPU's memory then belongs to it alone;
benchmarks/gpu.sh runs each in its own process); `--json` appends the result.
"""
import argparse
import json
import statistics
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.core import cpu
from optical_jax.core import xla_flags
from optical_jax.models import attention as attention_lib
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import weights

import devices  # benchmarks/devices.py, beside this script
import timing   # benchmarks/timing.py


def encoder_flops(cfg, batch: int, length: int) -> float:
  """Matmul FLOPs of one forward: projections and MLP, plus QK^T and PV."""
  h, f = cfg.hidden_size, cfg.intermediate_size
  per_token = 2 * (4 * h * h + 2 * h * f) + 4 * length * h
  return cfg.num_layers * per_token * batch * length


def run_jax(directory, ids, mask, args):
  model = weights.load_pretrained(directory, dtype=args.dtype, attention=args.attention)
  # Split once, as search/encode.py does: a module passed to a jitted function
  # is walked on every call; compiled with the options search/encode.py takes
  # on this CPU (core/cpu.py), so this times what a user's encoding runs.
  graphdef, state = nnx.split(model)
  encode = cpu.jit_forward(lambda s, i, k: nnx.merge(graphdef, s).token_embeddings(i, k),
                           options=None if args.compile_options == "auto" else {})
  ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
  start = time.perf_counter()
  out = encode(state, ids_j, mask_j).block_until_ready()
  compile_s = time.perf_counter() - start
  if args.dump_hlo:
    with open(args.dump_hlo, "w", encoding="utf-8") as f:
      f.write(encode.lower(state, ids_j, mask_j).compile().as_text())
  return (lambda: encode(state, ids_j, mask_j).block_until_ready(), compile_s,
          np.asarray(out, np.float32), encode.options)


def run_torch(directory, ids, mask, args):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  dev = devices.torch_device()
  ref = transformers.AutoModel.from_pretrained(directory, attn_implementation="sdpa",
                                               add_pooling_layer=False).eval().to(dev)
  ids_t, mask_t = torch.tensor(ids, device=dev), torch.tensor(mask, device=dev)
  autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

  def forward():
    with torch.inference_mode(), autocast:
      out = ref(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
    devices.sync(dev)
    return out

  out = forward()
  return forward, out.float().cpu().numpy(), f"PyTorch {torch.__version__} (SDPA)"


def main():
  xla_flags.apply()   # ours as users run it (before JAX starts a backend)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="embedded",
                      help="HF directory, 'embedded', or random:e5-small / random:e5-base")
  parser.add_argument("--cache", default="~/.cache/optical_jax/bench",
                      help="where random:* models are built once")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5, help="timed batches per round")
  parser.add_argument("--rounds", type=int, default=3,
                      help="rounds of --repeats batches, the engines taking turns (timing.py)")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--attention", default="auto", choices=attention_lib.ATTENTION)
  parser.add_argument("--jax_nn_gelu", action="store_true",
                      help="our GELU as jax.nn.gelu(approximate=False) computes it (through "
                           "erfc), not models/activations.py's: what that change bought")
  parser.add_argument("--dump_hlo", default=None,
                      help="write our compiled program's optimised HLO to this file")
  parser.add_argument("--compile_options", default="auto", choices=["auto", "xla_default"],
                      help="auto: the forward-program options core/cpu.py picks for this CPU "
                           "(what search/encode.py uses); xla_default: none, to see what "
                           "they buy")
  parser.add_argument("--engine", default="both", choices=["both", "jax", "torch"])
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="dense peak for MFU (default: datasheet, else measured)")
  parser.add_argument("--json", default=None, help="append the results to this JSONL file")
  parser.add_argument("--variant", default="",
                      help="a name for a non-default setting (e.g. XLA flags) this run "
                           "measures; the report gives it its own row")
  args = parser.parse_args()
  if args.jax_nn_gelu:
    devices.use_jax_nn_gelu()

  directory = devices.resolve_model(args.model, args.cache)
  with open(f"{directory}/config.json", encoding="utf-8") as f:
    cfg = encoder_lib.EncoderConfig.from_hf(json.load(f))
  rng = np.random.default_rng(0)
  ids = rng.integers(5, min(cfg.vocab_size, 250_000), size=(args.batch, args.length))
  ids[:, 0], ids[:, -1] = 0, 2
  mask = np.ones_like(ids)

  calls, names, outputs = {}, {}, {}
  if args.engine in ("both", "jax"):
    calls["jax"], compile_s, outputs["jax"], options = run_jax(directory, ids, mask, args)
    names["jax"] = "optical_jax (jit)"
  if args.engine in ("both", "torch"):
    calls["torch"], outputs["torch"], names["torch"] = run_torch(directory, ids, mask, args)
  per_round = timing.alternating(calls, args.repeats, args.rounds)
  rows = [(names[e], e, statistics.median(per_round[e])) for e in calls]
  peak, source = devices.peak_tflops(args.dtype, args.peak_tflops)
  flops = encoder_flops(cfg, args.batch, args.length)
  print(f"device: {devices.device()}; model {args.model}; batch {args.batch} x length "
        f"{args.length}, {args.dtype}, attention {args.attention} ("
        f"{attention_lib.attention_implementation(args.attention, args.dtype, cfg.head_dim)}"
        f"); {flops / 1e9:.0f} GFLOP "
        f"per batch; peak {peak:.3g} TFLOP/s ({source})"
        + (f"; first call (compile + run) {compile_s:.1f} s" if "jax" in outputs else "")
        + (f"; compile options {options or 'XLA defaults'}" if "jax" in outputs else ""))
  if len(outputs) == 2 and args.dtype == "float32":
    diff = float(np.abs(outputs["jax"] - outputs["torch"]).max())
    print(f"max abs difference of token embeddings: {diff:.2e}")
  print(f"{'engine':<36}{'median s/batch':>16}{'texts/s':>12}{'MFU':>8}")
  for name, _, s in rows:
    print(f"{name:<36}{s:>16.4f}{args.batch / s:>12.1f}{flops / s / 1e12 / peak:>8.1%}")
  if len(rows) == 2:
    print(timing.ratio_line("texts/s", per_round["jax"], per_round["torch"]))
  if args.json:
    with open(args.json, "a") as f:
      for name, engine, s in rows:
        f.write(json.dumps({"benchmark": "encode", "engine": engine, "name": name,
                            "device": devices.device(), "model": args.model,
                            "dtype": args.dtype, "batch": args.batch, "length": args.length,
                            "attention": args.attention,
                            "variant": args.variant or ("xla_default compile options"
                                                        if args.compile_options != "auto"
                                                        else ""),
                            "seconds": s, "round_seconds": per_round[engine],
                            "per_s": args.batch / s,
                            "mfu": flops / s / 1e12 / peak, "peak_source": source}) + "\n")


if __name__ == "__main__":
  main()
