"""One OPTICAL distillation step: our jitted JAX step vs the same step in PyTorch.

Both sides run the same model weights (`--model`: the embedded
multilingual-e5-small, an HF directory, or random:e5-small / random:e5-base,
random weights of those shapes built locally), the same batch (`--batch` pairs
of `--length` tokens a side) and the same objective: teacher forward on the
English side (no grad), student forward and backward on the source side,
cosine cost, uniform marginals, a batched log-domain Sinkhorn of
`--iterations` steps in float32 (plan held constant), <P, C> plus in-batch
InfoNCE, gradient clipping and an AdamW update of all student parameters but
the word embedding. PyTorch runs on the device JAX runs on (CUDA when JAX sees
a GPU) with SDPA attention, `torch.autocast` for the encoders in bfloat16, and
fused AdamW on CUDA; ours is `step.jit_distill_step` as the distill job runs it.

The engines take turns for `--rounds` rounds of `--repeats` timed steps
(timing.py), so the drift of a shared machine weighs on both alike. Prints each
engine's median step time over its rounds, pairs/second, the ratio (the median of
the per-round ratios, each round's beside it), and MFU: model FLOPs per step
(teacher forward, student forward and backward; attention included) over the
device's dense peak for the dtype used (datasheet for known GPUs, with
float32 = TF32 as JAX uses it; else a measured GEMM; or `--peak_tflops`).

  python benchmarks/distill_step.py                            # the demo's step, CPU
  python benchmarks/distill_step.py --text=bible               # ... on the demo's batches
  python benchmarks/distill_step.py --preset=small-bf16        # e5-small, 256 x 128, bf16
  python benchmarks/distill_step.py --preset=base-bf16         # e5-base, 128 x 128, bf16
  python benchmarks/distill_step.py --engine=jax --json=out.jsonl   # one engine per process
"""
import argparse
import copy
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from optical_jax import config as config_lib
from optical_jax.core import host_heap
from optical_jax.core import xla_flags
from optical_jax.data import batches
from optical_jax.data import sources
from optical_jax.models import attention as attention_lib
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights
from optical_jax.training import job as job_lib
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

import devices  # benchmarks/devices.py, beside this script
import profile_summary  # benchmarks/profile_summary.py
import timing   # benchmarks/timing.py

# --preset: the model, batch shape and dtype of the GPU goals.
PRESETS = {
    "demo": dict(model="embedded", batch=32, length=64, dtype="float32"),
    "small-f32": dict(model="random:e5-small", batch=32, length=64, dtype="float32"),
    "small-bf16": dict(model="random:e5-small", batch=256, length=128, dtype="bfloat16"),
    "base-bf16": dict(model="random:e5-base", batch=128, length=128, dtype="bfloat16"),
}


def step_flops(cfg, src_tokens, tgt_tokens, length, trained_blocks) -> float:
  """Matmul FLOPs of one step: teacher forward + student forward and backward.

  `src_tokens` / `tgt_tokens` are the tokens each side counts (batch x length
  of random text; the real tokens of `--text=bible`, the useful work). The
  backward pass costs twice the forward of the blocks it runs through
  (gradients of weights and of activations), from the top down to the lowest
  trained block.
  """
  h, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
  per_token = 2 * (4 * h * h + 2 * h * f) + 4 * length * h   # dense + QK^T and PV, one block
  return n * per_token * (tgt_tokens + src_tokens * (1 + 2 * trained_blocks / n))


def bible_batches(directory, batch, length, packing):
  """The demo's pairs as its step reads them: (padded batch, packed batch or None).

  The first step of the demo's order (Chichewa queries, English passages),
  tokenised by `directory`'s tokenizer and padded to `length`; and the same
  batch with the packed budget the distill job takes under
  `train.token_packing=packing` on one device (None where it does not pack).
  """
  c = config_lib.default()    # configs/demo.py's data: the Bible, the default seed
  c.data.source, c.eval.collection = "bible", "none"
  c.train.update(batch_size=batch, max_length=length, token_packing=packing)
  c.parallel.use_mesh = "no"
  src, tgt, _, order = sources.load(c, with_order=True)
  tok = tokenizer_lib.Tokenizer.from_pretrained(directory)

  def build(step, capacities=None):
    idx = order.indices(step)
    return batches.pair_batch(tok, [src[i] for i in idx], [tgt[i] for i in idx],
                              src_prefix=c.text.src_prefix, tgt_prefix=c.text.tgt_prefix,
                              max_length=length, batch_size=batch, capacities=capacities)

  capacities = job_lib.packing_budget(c, lambda s, _: batches.pair_masks(build(s)), order)
  return build(0), (build(0, capacities) if capacities is not None else None)


def add_step_flags(parser: argparse.ArgumentParser) -> None:
  """The flags that say which step runs (model, shape, dtype, objective); also
  step_parts.py's."""
  parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                      help="model, batch, length and dtype at once (flags given win)")
  parser.add_argument("--model", default=None,
                      help="HF directory, 'embedded', or random:e5-small / random:e5-base")
  parser.add_argument("--cache", default="~/.cache/optical_jax/bench",
                      help="where random:* models are built once")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--length", type=int, default=None)
  parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"])
  parser.add_argument("--iterations", type=int, default=50)
  parser.add_argument("--attention", default="auto", choices=attention_lib.ATTENTION)
  parser.add_argument("--host_heap", default="os", choices=host_heap.MODES,
                      help="where XLA:CPU's temporaries come from, as under `optical-jax "
                           "--host_heap` (core/host_heap.py); tcmalloc restarts the "
                           "benchmark with it preloaded, for both engines")
  parser.add_argument("--trainable", default="no_word_embeddings",
                      help="train.trainable for our step (the PyTorch step always trains "
                           "all but the word embeddings; compare ratios only at the default)")


def apply_host_heap(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
  """`--host_heap`, applied before JAX starts its backend ('tcmalloc' restarts the
  script here); returns what it did, for the device line. A missing tcmalloc is a
  usage error."""
  try:
    return host_heap.configure(args.host_heap)
  except ValueError as e:
    parser.error(str(e))


def step_setup(args: argparse.Namespace):
  """Fills the flags `--preset` (default: demo) sets and the command line left
  unset; returns (the config with --iterations, the model's HF directory, its
  EncoderConfig)."""
  for key, value in PRESETS[args.preset or "demo"].items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  cfg = config_lib.default()
  cfg.ot.num_iterations = args.iterations
  directory = devices.resolve_model(args.model, args.cache)
  with open(f"{directory}/config.json", encoding="utf-8") as f:
    ecfg = encoder_lib.EncoderConfig.from_hf(json.load(f))
  return cfg, directory, ecfg


def random_pairs(vocab_size: int, batch: int, length: int) -> dict[str, np.ndarray]:
  """`batch` pairs of random token ids, `length` a side, no padding (the default
  text): [CLS]-like id 0 first, id 2 last, the target side the source rolled by one."""
  rng = np.random.default_rng(0)
  ids_s = rng.integers(5, min(vocab_size, 250_000), size=(batch, length)).astype(np.int32)
  ids_t = np.roll(ids_s, 1, axis=0)
  ids_s[:, 0] = ids_t[:, 0] = 0
  ids_s[:, -1] = ids_t[:, -1] = 2
  mask = np.ones_like(ids_s)
  special = np.zeros(ids_s.shape, bool)
  return dict(src_ids=ids_s, src_mask=mask, src_special=special,
              tgt_ids=ids_t, tgt_mask=mask, tgt_special=special)


def jax_step(directory, cfg, batch, *, dtype, attention, trainable, tx=None, dump_hlo=None):
  """Our step as the distill job builds it (`step.jit_distill_step`, state
  donated), compiled and run once on `batch`.

  The model is built here, so whatever is patched around this call (an
  activation, a module's method) is what the step traces.

  Args:
    tx: the optimizer (default: the config's AdamW).

  Returns:
    (a call running one more step and waiting for it, the first call's seconds
    (compilation included), the numbers of the trained encoder blocks).
  """
  teacher = weights.load_pretrained(directory, dtype=dtype, attention=attention)
  parts, params = trainable_lib.ModelParts.split(teacher)
  pred = trainable_lib.trainable_predicate(trainable, teacher.encoder.cfg.num_layers)
  trained = {k: v for k, v in params.items() if pred(k)}
  frozen = {k: v for k, v in params.items() if not pred(k)}
  tx = tx or state_lib.make_optimizer(cfg.train)[0]
  step = step_lib.jit_distill_step(parts, parts, config_lib.loss_config(cfg), tx,
                                   teacher.encoder.cfg.num_layers)
  params, frozen = jax.device_put(params), jax.device_put(frozen)
  state = state_lib.init_state(jax.tree.map(jnp.array, trained), tx, 0)
  start = time.perf_counter()
  state, m = step(state, frozen, params, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - start
  if dump_hlo:
    with open(dump_hlo, "w", encoding="utf-8") as f:
      f.write(step.lower(state, frozen, params, batch).compile().as_text())

  def call():
    nonlocal state
    state, metrics = step(state, frozen, params, batch)
    jax.block_until_ready(metrics)

  call()
  blocks = {int(k.split("/")[2]) for k in trained if k.startswith("encoder/layers/")}
  return call, compile_s, blocks


def torch_step_fn(directory, ids_s, mask_s, ids_t, mask_t, cfg, dtype):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  dev = devices.torch_device()
  teacher = transformers.AutoModel.from_pretrained(
      directory, add_pooling_layer=False, attn_implementation="sdpa").eval().to(dev)
  student = copy.deepcopy(teacher).train()
  student.embeddings.word_embeddings.weight.requires_grad_(False)
  params = [p for p in student.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                          fused=dev.type == "cuda")
  t = {k: torch.tensor(v, device=dev) for k, v in dict(ids_s=ids_s, mask_s=mask_s, ids_t=ids_t,
                                                        mask_t=mask_t).items()}
  eps, iters, tau = cfg.ot.epsilon, cfg.ot.num_iterations, cfg.loss.temperature
  autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

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
    with torch.no_grad(), autocast:
      th = teacher(input_ids=t["ids_t"], attention_mask=t["mask_t"]).last_hidden_state
    with autocast:
      sh = student(input_ids=t["ids_s"], attention_mask=t["mask_s"]).last_hidden_state
    th, sh = th.float(), sh.float()   # the OT and the losses in float32, as ours
    tv, sv = pool(th, t["mask_t"]), pool(sh, t["mask_s"])
    c = 1 - torch.nn.functional.normalize(sh, dim=-1) @ torch.nn.functional.normalize(
        th, dim=-1).transpose(1, 2)
    a = t["mask_s"].float() / t["mask_s"].sum(1, keepdim=True)
    b = t["mask_t"].float() / t["mask_t"].sum(1, keepdim=True)
    with torch.no_grad():
      plan = sinkhorn(c.detach(), a, b)
    loss = (plan * c).sum((1, 2)).mean() * cfg.loss.ot_weight
    logits = sv @ tv.T / tau
    loss = loss + cfg.loss.contrastive_weight * torch.nn.functional.cross_entropy(
        logits, torch.arange(len(logits), device=dev))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_norm)
    opt.step()
    devices.sync(dev)
    return float(loss)

  return step, f"PyTorch {torch.__version__}"


def main():
  xla_flags.apply()   # ours as users run it (before JAX starts a backend)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_step_flags(parser)
  parser.add_argument("--repeats", type=int, default=5, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=3,
                      help="rounds of --repeats steps, the engines taking turns (timing.py); "
                           "each engine's figure is the median of its rounds, the ratio the "
                           "median of the per-round ratios")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="dense peak for MFU (default: datasheet, else measured)")
  parser.add_argument("--jax_nn_gelu", action="store_true",
                      help="our GELU as jax.nn.gelu(approximate=False) computes it (through "
                           "erfc), not models/activations.py's: what that change bought")
  parser.add_argument("--dump_hlo", default=None,
                      help="write our compiled step's optimised HLO to this file")
  parser.add_argument("--text", default="random", choices=["random", "bible"],
                      help="random: every position a real token (pure compute); bible: the "
                           "demo's first batch of Bible pairs, padded to --length as the "
                           "demo's step reads it (both engines get the same arrays)")
  parser.add_argument("--packing", default="auto", choices=["auto", "on", "off"],
                      help="--text=bible: our encoders on the real tokens only "
                           "(train.token_packing; auto: on on CPU)")
  parser.add_argument("--engine", default="both", choices=["both", "jax", "torch"])
  parser.add_argument("--json", default=None, help="append the results to this JSONL file")
  parser.add_argument("--variant", default="",
                      help="a name for a non-default setting (e.g. XLA flags) this run "
                           "measures; the report gives it its own row")
  parser.add_argument("--profile", default=None,
                      help="trace 3 of our steps into this directory and print where the "
                           "device time goes (benchmarks/profile_summary.py)")
  args = parser.parse_args()
  heap = apply_host_heap(parser, args)
  if args.jax_nn_gelu:
    devices.use_jax_nn_gelu()
  cfg, directory, ecfg = step_setup(args)
  if args.text == "bible":
    batch, packed = bible_batches(directory, args.batch, args.length, args.packing)
  else:
    batch, packed = random_pairs(ecfg.vocab_size, args.batch, args.length), None
  ours_batch = packed or batch

  calls, names, compile_s, blocks = {}, {}, None, None
  if args.engine in ("both", "jax"):
    ours, compile_s, blocks = jax_step(directory, cfg, ours_batch, dtype=args.dtype,
                                       attention=args.attention, trainable=args.trainable,
                                       dump_hlo=args.dump_hlo)
    calls["jax"], names["jax"] = ours, "optical_jax (jit)"
  if args.engine in ("both", "torch"):
    torch_step, names["torch"] = torch_step_fn(directory, batch["src_ids"], batch["src_mask"],
                                               batch["tgt_ids"], batch["tgt_mask"], cfg,
                                               args.dtype)
    torch_step()
    calls["torch"] = torch_step
  per_round = timing.alternating(calls, args.repeats, args.rounds)
  rows = [(names[e], e, statistics.median(per_round[e])) for e in calls]
  if args.profile and "jax" in calls:
    with jax.profiler.trace(args.profile):
      for _ in range(3):
        calls["jax"]()
    print(profile_summary.summarize(args.profile, steps=3))

  peak, source = devices.peak_tflops(args.dtype, args.peak_tflops)
  lowest = min(blocks) if blocks else 0   # PyTorch trains every block
  real = {side: int(batch[f"{side}_mask"].sum()) for side in ("src", "tgt")}
  flops = step_flops(ecfg, real["src"], real["tgt"], args.length, ecfg.num_layers - lowest)
  text = "random text" if args.text == "random" else (
      f"Bible pairs ({real['src']} / {real['tgt']} real tokens of {args.batch * args.length}; "
      + (f"ours packed to {packed['src_pack'].size} / {packed['tgt_pack'].size}"
         if packed and "tgt_pack" in packed else "ours padded") + "; MFU on real tokens)")
  print(f"device: {devices.device()}; model {args.model}; trainable {args.trainable}; batch "
        f"{args.batch} pairs x length {args.length} of {text}, {args.iterations} Sinkhorn "
        "iterations, "
        f"{args.dtype}, attention {args.attention} ("
        f"{attention_lib.attention_implementation(args.attention, args.dtype, ecfg.head_dim)}"
        f"); step {flops / 1e9:.0f} GFLOP; peak "
        f"{peak:.3g} TFLOP/s ({source}); host memory {heap}"
        + (f"; first call (compile) {compile_s:.1f} s" if compile_s is not None else ""))
  print(f"{'engine':<24}{'median s/step':>14}{'pairs/s':>10}{'MFU':>8}")
  for name, _, s in rows:
    print(f"{name:<24}{s:>14.4f}{args.batch / s:>10.1f}{flops / s / 1e12 / peak:>8.1%}")
  if len(rows) == 2:
    print(timing.ratio_line("pairs/s", per_round["jax"], per_round["torch"]))
  if args.json:
    with open(args.json, "a") as f:
      for name, engine, s in rows:
        f.write(json.dumps({"benchmark": "distill_step", "engine": engine, "name": name,
                            "device": devices.device(), "model": args.model,
                            "dtype": args.dtype, "batch": args.batch, "length": args.length,
                            "attention": args.attention, "variant": args.variant,
                            "text": args.text, "packed": bool(packed) and engine == "jax",
                            "host_heap": args.host_heap,
                            "seconds": s, "round_seconds": per_round[engine],
                            "per_s": args.batch / s,
                            "mfu": flops / s / 1e12 / peak, "peak_source": source}) + "\n")


if __name__ == "__main__":
  main()
