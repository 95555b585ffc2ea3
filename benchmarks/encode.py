"""Encoder throughput: our jitted NNX encoder vs PyTorch transformers, same weights.

Encodes batches of `--batch` sequences of `--length` tokens with the embedded
multilingual-e5-small (or `--model`, any HF directory) and prints texts/second
for both, in the same process, with the ratio. Medians over `--repeats` timed
runs after warm-up; compile time is reported separately.

  python benchmarks/encode.py                      # e5-small, batch 64, length 128
  python benchmarks/encode.py --dtype=bfloat16     # (useful on GPU/TPU)
"""
import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax.models import embedded
from optical_jax.models import weights

import timing  # benchmarks/timing.py, beside this script


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default=None, help="HF directory (default: embedded e5-small)")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()

  directory = args.model or str(embedded.ensure_converted())
  model = weights.load_pretrained(directory, dtype=args.dtype)
  cfg = model.encoder.cfg
  rng = np.random.default_rng(0)
  # Full-length rows of real-looking ids (specials at both ends, no padding),
  # so both engines do the same work whatever their padding tricks.
  ids = rng.integers(5, min(cfg.vocab_size, 250_000), size=(args.batch, args.length))
  ids[:, 0], ids[:, -1] = 0, 2
  mask = np.ones_like(ids)

  encode = jax.jit(lambda m, i, k: m.token_embeddings(i, k))
  ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
  start = time.perf_counter()
  ours_out = encode(model, ids_j, mask_j).block_until_ready()
  compile_s = time.perf_counter() - start
  ours_s = timing.median_seconds(lambda: encode(model, ids_j, mask_j).block_until_ready(),
                           args.repeats)
  rows = [("optical_jax (jit)", ours_s)]
  print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores; "
        f"batch {args.batch} x length {args.length}, {args.dtype}; "
        f"first call (compile + run) {compile_s:.1f} s")

  if not args.skip_torch:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(os.cpu_count())
    ref = transformers.AutoModel.from_pretrained(directory).eval()
    ids_t, mask_t = torch.tensor(ids), torch.tensor(mask)

    def run_torch():
      with torch.inference_mode():
        return ref(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    torch_out = run_torch()
    torch_s = timing.median_seconds(run_torch, args.repeats)
    rows.append((f"PyTorch {torch.__version__} transformers", torch_s))
    if args.dtype == "float32":
      diff = float(np.abs(np.asarray(ours_out) - torch_out.numpy()).max())
      print(f"max abs difference of token embeddings: {diff:.2e}")

  print(f"{'engine':<36}{'median s/batch':>16}{'texts/s':>12}")
  for name, s in rows:
    print(f"{name:<36}{s:>16.3f}{args.batch / s:>12.1f}")
  if len(rows) == 2:
    print(f"ratio optical_jax / PyTorch (texts/s): {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
  main()
