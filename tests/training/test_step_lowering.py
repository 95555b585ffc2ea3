"""What the compiled distillation step is made of, read from its lowered HLO.

A bfloat16 scatter-add is a compare-and-swap loop on NVIDIA GPUs (openxla/xla#26371):
the gradient of an embedding lookup written as a gather is such a scatter, and it
made the bf16 step 5x slower than float32 there. The step must contain no scatter
on a bfloat16 tensor, whatever trains (the word embedding too), with the
pretraining terms on, and with the encoders on packed tokens.
"""
import re

import jax
import jax.numpy as jnp
import pytest

from optical_jax import config as config_lib
from optical_jax.data import batches as batches_lib
from optical_jax.data import tlm
from optical_jax.models import tokenizer as tokenizer_lib
from optical_jax.models import weights
from optical_jax.training import pretraining
from optical_jax.training import state as state_lib
from optical_jax.training import step as step_lib
from optical_jax.training import trainable as trainable_lib

from tests import defaults
from tests import tiny_checkpoints

# An HLO instruction `%name = bf16[...] scatter(...)`, or a fusion whose root is one.
_BF16_SCATTER = re.compile(r"=\s*bf16\[[^\]]*\](\{[^}]*\})?\s+scatter\(")


def _lowered(checkpoint, trainable: str, multilingual_texts, pretrain=False, packed=False):
  model = weights.load_pretrained(str(checkpoint), dtype="bfloat16")
  tok = tokenizer_lib.Tokenizer.from_pretrained(checkpoint)
  parts, params = trainable_lib.ModelParts.split(model)
  train, frozen = trainable_lib.split_trainable(params, trainable, model.encoder.cfg.num_layers)
  head = None
  if pretrain:
    head, head_params = pretraining.Pretraining.create(
        defaults.mlm_config(mlm_weight=1.0, tlm_weight=1.0), model, checkpoint, tok, seed=0)
    train = dict(train, **head_params)
  cfg = config_lib.default().train
  tx, _ = state_lib.make_optimizer(cfg)
  step = step_lib.bind_distill_step(parts, parts, defaults.loss_config(), tx, 2, head)
  state = state_lib.init_state(jax.tree.map(jnp.array, train), tx, 0)
  # Packed: the encoders on the real tokens only (models/packing.py); at 64 tokens
  # these texts leave padding to skip.
  kw = dict(src_prefix="query: ", tgt_prefix="passage: ", max_length=64 if packed else 32,
            batch_size=8)
  batch = batches_lib.pair_batch(tok, multilingual_texts[2:10], multilingual_texts[:8], **kw)
  if packed:
    capacities = batches_lib.pack_capacities([batches_lib.pair_masks(batch)])
    batch = batches_lib.pair_batch(tok, multilingual_texts[2:10], multilingual_texts[:8],
                                   capacities=capacities, **kw)
    assert "src_pack" in batch and "tgt_pack" in batch
  if pretrain:
    batch = tlm.add_tlm_inputs(batch, pad_id=tok.pad_id)
  return jax.jit(step).lower(state, frozen, params, batch).as_text(dialect="hlo")


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
@pytest.mark.parametrize("trainable", ["no_word_embeddings", "all"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_bf16_step_has_no_bf16_scatter(tmp_path, multilingual_texts, kind, trainable, packed):
  write = tiny_checkpoints.write_bert if kind == "bert" else tiny_checkpoints.write_xlmr
  hlo = _lowered(write(tmp_path / kind), trainable, multilingual_texts, packed=packed)
  assert "bf16[" in hlo, "the step should run its encoders in bfloat16"
  found = [line.strip()[:160] for line in hlo.splitlines() if _BF16_SCATTER.search(line)]
  assert not found, "bf16 scatters in the step:\n" + "\n".join(found)


def test_bf16_step_with_mlm_and_tlm_has_no_bf16_scatter(tmp_path, multilingual_texts):
  checkpoint = tiny_checkpoints.write_bert(tmp_path / "bert")
  hlo = _lowered(checkpoint, "all", multilingual_texts, pretrain=True)
  found = [line.strip()[:160] for line in hlo.splitlines() if _BF16_SCATTER.search(line)]
  assert not found, "bf16 scatters in the step:\n" + "\n".join(found)
