"""MLM and TLM beside distillation (training/pretraining.py): the loss trains, and its
gathered path equals the MLM loss over every position."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optical_jax.core import masking
from optical_jax.data import tlm
from optical_jax.models import encoder as encoder_lib
from optical_jax.models import lm_head
from optical_jax.training import pretraining

from tests import defaults


class _Student(nnx.Module):
  def __init__(self, cfg):
    self.encoder = encoder_lib.Encoder(cfg, rngs=nnx.Rngs(0))
    self.head = lm_head.init_head(cfg, seed=1)


def test_pretraining_loss_trains_and_gathers_correctly():
  cfg = encoder_lib.EncoderConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4,
                                  intermediate_size=64, max_positions=40)
  rng = np.random.default_rng(0)
  b, ls, lt = 8, 12, 10
  src = rng.integers(5, 64, size=(b, ls)).astype(np.int32)
  tgt = rng.integers(5, 64, size=(b, lt)).astype(np.int32)
  src[:, 0] = tgt[:, 0] = 2
  src[:, -1] = tgt[:, -1] = 3
  batch = {"src_ids": src, "src_mask": np.ones_like(src), "src_special": np.isin(src, [2, 3]),
           "tgt_ids": tgt, "tgt_mask": np.ones_like(tgt), "tgt_special": np.isin(tgt, [2, 3])}
  batch = {k: jnp.asarray(v) for k, v in tlm.add_tlm_inputs(batch, pad_id=0).items()}
  mcfg = defaults.mlm_config(mlm_weight=1.0, tlm_weight=0.5)
  kw = dict(vocab_size=64, mask_id=4, exclude_ids=(0, 1, 2, 3, 4))
  key = jax.random.key(0)

  graphdef, params = nnx.split(nnx.jit(lambda: _Student(cfg))(), nnx.Param)
  tx = optax.adam(1e-2)

  def loss_fn(p):
    s = nnx.merge(graphdef, p)
    return pretraining.pretraining_loss(s.encoder, s.head, batch, key, mcfg, **kw)

  def full_mlm_loss(p):
    # What the gathered top-k path must equal: the loss over all L positions.
    s = nnx.merge(graphdef, p)
    inp, labels, w = masking.mask_tokens(jax.random.fold_in(key, 0), batch["src_ids"],
                                     batch["src_mask"], batch["src_special"], mcfg, **kw)
    table = s.encoder.embeddings.word.embedding[...]
    return masking.mlm_loss(s.head(s.encoder(inp, batch["src_mask"]), table), labels, w)

  @jax.jit
  def step(p, o):
    (loss, m), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss, m, full_mlm_loss(p)

  opt = tx.init(params)
  history = []
  for i in range(8):
    params, opt, loss, m, full = step(params, opt)
    if not i:
      assert set(m) == {"loss_mlm", "mlm_accuracy", "loss_tlm", "tlm_accuracy"}
      np.testing.assert_allclose(float(m["loss_mlm"]), float(full), rtol=1e-5)
    history.append((float(loss), float(m["loss_mlm"]), float(m["loss_tlm"])))
  assert np.all(np.isfinite(history))
  first, last = history[0], history[-1]
  assert last[0] < 0.8 * first[0], history
  assert last[1] < first[1] and last[2] < first[2], history
