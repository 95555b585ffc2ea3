"""Where our distillation step's time goes: the step timed with one part at a time
replaced by a stand-in, the full step alternating with them in one process.

A profile of a CPU program is a poor guide here: XLA:CPU runs independent ops at
once and splits each over the cores, so op durations overlap (their sum was 1.4x
the wall time on a 2-core machine). Taking a part out and timing the whole step
is what says what the part costs, as long as the stand-in keeps every input of
the part alive: with the attention core replaced by the values alone, XLA drops
the query and key projections and their gradients too, and that measured 0.54 s
of a 2.6 s step where the core itself (the stand-in below) measured 0.27 s.

Each stand-in changes what the step computes: a row times a part, and says
nothing about training. Parts interact (a removed op can change what XLA fuses
around it), so the shares need not add up.

  part        stand-in
  attention   attention's core (scores, softmax, weighted sum) -> v + 1e-3 (q + k)
  gelu        the MLP's activation -> the identity
  layernorm   LayerNorm's normalisation -> its scale and bias alone (x * scale + bias)
  loss        the OT solve and the losses -> mean(student tokens x teacher tokens)
              + mean(student vectors x teacher vectors)
  adamw       AdamW with clipping and its schedule -> plain SGD

  python benchmarks/step_parts.py                              # the demo's step, every part
  python benchmarks/step_parts.py --parts=attention,gelu --rounds=10
  python benchmarks/step_parts.py --preset=small-bf16          # on a GPU
"""
import argparse
import contextlib
import json
import statistics
from unittest import mock

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from optical_jax.core import losses as losses_lib
from optical_jax.core import xla_flags
from optical_jax.models import activations
from optical_jax.models import attention as attention_lib

import devices  # benchmarks/devices.py, beside this script
import distill_step  # benchmarks/distill_step.py: the step as its benchmark builds it
import timing   # benchmarks/timing.py


def attention_stand_in(q, k, v, mask, **_):
  """[B, L, N, D] x3 -> [B, L, N, D]: keeps the projections of q, k and v and
  their gradients (one element-wise pass), without attention's core."""
  del mask
  return v + 1e-3 * (q + k)


def affine_only(self, x, *, mask=None):
  """LayerNorm without its statistics: x * scale + bias."""
  del mask
  return x * self.scale[...] + self.bias[...]


def loss_stand_in(cfg, s_tok, s_vec, t_tok, t_vec, batch, **_):
  """A loss that reads what the real one reads (student and teacher tokens, one
  array or a tuple of layers, and vectors) in one product each: no cost matrix,
  no Sinkhorn, no InfoNCE."""
  del cfg, batch
  tokens = sum(jnp.mean(s * t) for s, t in zip(jax.tree.leaves(s_tok), jax.tree.leaves(t_tok)))
  return tokens + jnp.mean(s_vec * t_vec), {}


# part -> (what is taken out, its stand-in as a context around building the step).
PARTS = {
    "attention": ("attention's core",
                  lambda ecfg: mock.patch.object(attention_lib, "attend", attention_stand_in)),
    "gelu": ("the GELU", lambda ecfg: mock.patch.dict(activations.ACTIVATIONS,
                                                      {ecfg.hidden_act: lambda x: x})),
    "layernorm": ("LayerNorm's statistics",
                  lambda ecfg: mock.patch.object(nnx.LayerNorm, "__call__", affine_only)),
    "loss": ("the OT solve and losses",
             lambda ecfg: mock.patch.object(losses_lib, "distillation_loss", loss_stand_in)),
    "adamw": ("AdamW -> SGD", lambda ecfg: contextlib.nullcontext()),   # the step's tx
}


def shares(full: list[float], without: list[float]) -> list[float]:
  """Per round, the share of the full step's time that the part took:
  (full - without) / full (negative where the stand-in ran slower)."""
  if len(full) != len(without):
    raise ValueError(f"{len(full)} rounds of the full step against {len(without)}")
  return [(f - w) / f for f, w in zip(full, without)]


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--parts", default=",".join(PARTS),
                      help=f"comma-separated, of {', '.join(PARTS)}")
  distill_step.add_step_flags(parser)
  parser.add_argument("--repeats", type=int, default=3, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=5,
                      help="rounds taking the full step and each stand-in in turn")
  parser.add_argument("--json", default=None, help="append the results to this JSONL file")
  args = parser.parse_args()
  parts = [p for p in args.parts.split(",") if p]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown or not parts:
    parser.error(f"--parts={args.parts}: expected a comma-separated list of {', '.join(PARTS)}")
  xla_flags.apply()
  heap = distill_step.apply_host_heap(parser, args)
  cfg, directory, ecfg = distill_step.step_setup(args)
  batch = distill_step.random_pairs(ecfg.vocab_size, args.batch, args.length)
  build = dict(dtype=args.dtype, attention=args.attention, trainable=args.trainable)

  calls = {"full": distill_step.jax_step(directory, cfg, batch, **build)[0]}
  for part in parts:
    tx = optax.sgd(cfg.train.lr) if part == "adamw" else None
    with PARTS[part][1](ecfg):
      calls[part] = distill_step.jax_step(directory, cfg, batch, tx=tx, **build)[0]
  per_round = timing.alternating(calls, args.repeats, args.rounds)

  impl = attention_lib.attention_implementation(args.attention, args.dtype, ecfg.head_dim)
  print(f"device: {devices.device()}; model {args.model}; batch {args.batch} pairs x length "
        f"{args.length} of random text, {args.iterations} Sinkhorn iterations, {args.dtype}, "
        f"attention {args.attention} ({impl}); {args.rounds} alternating rounds of "
        f"{args.repeats} steps each; host memory {heap}")
  full = statistics.median(per_round["full"])
  print(f"{'taken out':<28}{'median s/step':>14}{'share of the step':>19}   per round")
  print(f"{'nothing (the full step)':<28}{full:>14.4f}{'':>19}")
  records = []
  for part in parts:
    part_shares = shares(per_round["full"], per_round[part])
    seconds = statistics.median(per_round[part])
    print(f"{PARTS[part][0]:<28}{seconds:>14.4f}{statistics.median(part_shares):>19.1%}   "
          + ", ".join(f"{s:.1%}" for s in part_shares))
    records.append(dict(benchmark="step_parts", part=part, seconds=seconds,
                        round_seconds=per_round[part], full_seconds=full,
                        full_round_seconds=per_round["full"],
                        share=statistics.median(part_shares), round_shares=part_shares,
                        device=devices.device(), model=args.model, dtype=args.dtype,
                        batch=args.batch, length=args.length, attention=args.attention))
  if args.json:
    with open(args.json, "a", encoding="utf-8") as f:
      for r in records:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
  main()
