"""One OPTICAL distillation step: our jitted JAX step vs the same step in PyTorch.

Both sides run the same model weights (the embedded multilingual-e5-small, or
`--model`), the same batch (`--batch` pairs of `--length` tokens a side) and
the same objective: teacher forward on the English side (no grad), student
forward and backward on the source side, cosine cost, uniform marginals, a
batched log-domain Sinkhorn of `--iterations` steps (plan held constant),
<P, C> plus in-batch InfoNCE, gradient clipping and an AdamW update of all
student parameters but the word embedding.

Prints median step time, pairs/second, the ratio, and an MFU estimate: model
FLOPs per step (forward 2 x parameters x tokens plus attention; backward twice
the forward) over the dense float32 matmul throughput this machine reaches
(measured in the same run with a large numpy GEMM, or `--peak_gflops`).

  python benchmarks/distill_step.py
"""
import argparse
import copy
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax import config as config_lib
from optical_jax.models import embedded
from optical_jax.models import weights
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

import timing  # benchmarks/timing.py, beside this script


def measured_peak_gflops(n=2048, repeats=5) -> float:
  a = np.random.default_rng(0).normal(size=(n, n)).astype(np.float32)
  a @ a
  return 2 * n ** 3 / timing.median_seconds(lambda: a @ a, repeats) / 1e9


def step_flops(cfg, batch, length, trained_blocks) -> float:
  """Matmul FLOPs of one step: teacher forward + student forward and backward.

  The backward pass costs twice the forward of the blocks it runs through
  (gradients of weights and of activations), from the top down to the lowest
  trained block.
  """
  h, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  per_token = 2 * (4 * h * h + 2 * h * f) + 4 * length * h   # dense + QK^T and PV, one block
  forward = n * per_token * batch * length
  return forward * (2 + 2 * trained_blocks / n)


def torch_step_fn(directory, ids_s, mask_s, ids_t, mask_t, cfg):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  teacher = transformers.AutoModel.from_pretrained(directory, add_pooling_layer=False).eval()
  student = copy.deepcopy(teacher).train()
  student.embeddings.word_embeddings.weight.requires_grad_(False)
  params = [p for p in student.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
  t = {k: torch.tensor(v) for k, v in dict(ids_s=ids_s, mask_s=mask_s, ids_t=ids_t,
                                            mask_t=mask_t).items()}
  eps, iters, tau = cfg.ot.epsilon, cfg.ot.num_iterations, cfg.loss.temperature

  def pool(x, m):
    m = m.unsqueeze(-1).float()
    return torch.nn.functional.normalize((x * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)

  def sinkhorn(c, a, b):
    log_a, log_b = torch.log(a.clamp(min=1e-30)), torch.log(b.clamp(min=1e-30))
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    for _ in range(iters):
      f = eps * log_a - eps * torch.logsumexp((g.unsqueeze(1) - c) / eps, dim=2)
      g = eps * log_b - eps * torch.logsumexp((f.unsqueeze(2) - c) / eps, dim=1)
    p = torch.exp((f.unsqueeze(2) + g.unsqueeze(1) - c) / eps)
    return p * (a.unsqueeze(2) > 0) * (b.unsqueeze(1) > 0)

  def step():
    with torch.no_grad():
      th = teacher(input_ids=t["ids_t"], attention_mask=t["mask_t"]).last_hidden_state
      tv = pool(th, t["mask_t"])
    sh = student(input_ids=t["ids_s"], attention_mask=t["mask_s"]).last_hidden_state
    sv = pool(sh, t["mask_s"])
    c = 1 - torch.nn.functional.normalize(sh, dim=-1) @ torch.nn.functional.normalize(
        th, dim=-1).transpose(1, 2)
    a = t["mask_s"].float() / t["mask_s"].sum(1, keepdim=True)
    b = t["mask_t"].float() / t["mask_t"].sum(1, keepdim=True)
    with torch.no_grad():
      plan = sinkhorn(c.detach(), a, b)
    loss = (plan * c).sum((1, 2)).mean() * cfg.loss.ot_weight
    logits = sv @ tv.T / tau
    loss = loss + cfg.loss.contrastive_weight * torch.nn.functional.cross_entropy(
        logits, torch.arange(len(logits)))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_norm)
    opt.step()
    return float(loss)

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default=None, help="HF directory (default: embedded e5-small)")
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--length", type=int, default=64)
  parser.add_argument("--iterations", type=int, default=50)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--peak_gflops", type=float, default=None)
  parser.add_argument("--trainable", default="no_word_embeddings",
                      help="train.trainable for our step (the PyTorch step always trains "
                           "all but the word embeddings; compare ratios only at the default)")
  parser.add_argument("--skip_torch", action="store_true")
  args = parser.parse_args()

  cfg = config_lib.default()
  cfg.ot.num_iterations = args.iterations
  directory = args.model or str(embedded.ensure_converted())
  teacher = weights.load_pretrained(directory, dtype=args.dtype)
  ecfg = teacher.encoder.cfg
  rng = np.random.default_rng(0)
  ids_s = rng.integers(5, 250_000 if ecfg.vocab_size > 250_000 else ecfg.vocab_size,
                       size=(args.batch, args.length)).astype(np.int32)
  ids_t = np.roll(ids_s, 1, axis=0)
  ids_s[:, 0] = ids_t[:, 0] = 0
  ids_s[:, -1] = ids_t[:, -1] = 2
  mask = np.ones_like(ids_s)
  special = np.zeros(ids_s.shape, bool)
  batch = dict(src_ids=ids_s, src_mask=mask, src_special=special,
               tgt_ids=ids_t, tgt_mask=mask, tgt_special=special)

  parts, params = trainable_lib.ModelParts.split(teacher)
  pred = trainable_lib.trainable_predicate(args.trainable, ecfg.num_layers)
  trainable = {k: v for k, v in params.items() if pred(k)}
  frozen = {k: v for k, v in params.items() if not pred(k)}
  tx, _ = state_lib.make_optimizer(cfg.train)
  step = step_lib.jit_distill_step(parts, parts, config_lib.loss_config(cfg), tx, ecfg.num_layers)
  state = state_lib.init_state(jax.tree.map(jnp.array, trainable), tx, 0)
  t0 = time.perf_counter()
  state, m = step(state, frozen, params, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0

  def ours():
    nonlocal state
    state, metrics = step(state, frozen, params, batch)
    jax.block_until_ready(metrics)

  ours()
  rows = [("optical_jax (jit)", timing.median_seconds(ours, args.repeats))]
  if not args.skip_torch:
    torch_step = torch_step_fn(directory, ids_s, mask, ids_t, mask, cfg)
    torch_step()
    import torch  # pylint: disable=g-import-not-at-top
    rows.append((f"PyTorch {torch.__version__}", timing.median_seconds(torch_step, args.repeats)))

  peak = args.peak_gflops or measured_peak_gflops()
  blocks = {int(k.split("/")[2]) for k in trainable if k.startswith("encoder/layers/")}
  flops = step_flops(ecfg, args.batch, args.length, ecfg.num_layers - min(blocks, default=ecfg.num_layers))
  print(f"trainable {args.trainable}; batch {args.batch} pairs x length {args.length}, "
        f"{args.iterations} Sinkhorn "
        f"iterations, {args.dtype}; {os.cpu_count()} CPU cores; first call (compile) "
        f"{compile_s:.1f} s; step {flops / 1e9:.0f} GFLOP; peak {peak:.0f} GFLOP/s "
        f"({'given' if args.peak_gflops else 'measured numpy float32 GEMM'})")
  print(f"{'engine':<24}{'median s/step':>14}{'pairs/s':>10}{'MFU':>8}")
  for name, s in rows:
    print(f"{name:<24}{s:>14.3f}{args.batch / s:>10.1f}{flops / s / 1e9 / peak:>8.1%}")
  if len(rows) == 2:
    print(f"ratio optical_jax / PyTorch (pairs/s): {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
  main()
