"""The distillation losses and the teacher's triple loss against independent numpy computations."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from optical_jax.core import losses
from optical_jax.core import ot

from tests import defaults
from tests import numpy_references


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_contrastive_equals_numpy_cross_entropy():
  rng = np.random.default_rng(0)
  s, t = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(5, 8)))
  tau = 0.1
  logits = s @ t.T / tau
  logz = np.log(np.exp(logits).sum(1))
  expected = np.mean(logz - np.diag(logits))
  got = losses.contrastive(jnp.asarray(s), jnp.asarray(t), tau)
  np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_contrastive_ignores_padding_rows():
  rng = np.random.default_rng(1)
  s, t = _unit(rng.normal(size=(4, 8))), _unit(rng.normal(size=(4, 8)))
  valid = np.array([True, True, True, False])
  full = losses.contrastive(jnp.asarray(s), jnp.asarray(t), 0.05, jnp.asarray(valid))
  only = losses.contrastive(jnp.asarray(s[:3]), jnp.asarray(t[:3]), 0.05)
  np.testing.assert_allclose(float(full), float(only), rtol=1e-6)


def test_pooled_mse_equals_numpy():
  """torch's MSELoss times D: the mean squared distance between the pair's vectors."""
  rng = np.random.default_rng(2)
  s, t = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  np.testing.assert_allclose(float(losses.pooled_mse(jnp.asarray(s), jnp.asarray(t))),
                             np.mean(np.sum((s - t) ** 2, axis=1)), rtol=1e-6)
  u, v = _unit(s), _unit(t)   # unit vectors: 2 - 2 cos
  np.testing.assert_allclose(float(losses.pooled_mse(jnp.asarray(u), jnp.asarray(v))),
                             np.mean(2 - 2 * np.sum(u * v, axis=1)), rtol=1e-5)


def _numpy_alignment(s, s_ok, t, t_ok, kind):
  """Loops over pairs and tokens: the alignment as the definition reads."""
  b, ls, _ = s.shape
  index, aligned = np.zeros((b, ls), int), np.zeros((b, ls), bool)
  for i in range(b):
    cos = _unit(s[i]) @ _unit(t[i]).T
    for a in range(ls):
      cands = [j for j in range(t.shape[1]) if t_ok[i, j]]
      if not s_ok[i, a] or not cands:
        continue
      j = max(cands, key=lambda j: cos[a, j])
      back = max((k for k in range(ls) if s_ok[i, k]), key=lambda k: cos[k, j])
      index[i, a], aligned[i, a] = j, kind == "argmax" or back == a
  return index, aligned


@pytest.mark.parametrize("kind", ["mutual", "argmax"])
def test_token_alignment_and_token_mse_equal_numpy(kind):
  rng = np.random.default_rng(5)
  b, ls, lt, h = 3, 6, 5, 4
  s, t = rng.normal(size=(b, ls, h)), rng.normal(size=(b, lt, h))
  s_ok = np.array([[0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], bool)
  t_ok = np.array([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 1, 1, 0, 0]], bool)
  index, aligned = losses.token_alignment(*map(jnp.asarray, (s, s_ok, t, t_ok)), kind)
  want_index, want_aligned = _numpy_alignment(s, s_ok, t, t_ok, kind)
  np.testing.assert_array_equal(np.asarray(aligned), want_aligned)
  np.testing.assert_array_equal(np.where(want_aligned, np.asarray(index), 0),
                                np.where(want_aligned, want_index, 0))
  if kind == "mutual":   # sentence 1 has one teacher token: only its best student keeps it
    assert want_aligned[1].sum() == 1
  # Unit vectors: the squared distance is 2 - 2 cos.
  errs = [2 - 2 * _unit(s[i, a]) @ _unit(t[i, want_index[i, a]])
          for i in range(b) for a in range(ls) if want_aligned[i, a]]
  loss, frac = losses.token_mse(*map(jnp.asarray, (s, s_ok, t, t_ok)), kind)
  np.testing.assert_allclose(float(loss), np.mean(errs), rtol=1e-5)
  np.testing.assert_allclose(float(frac), len(errs) / s_ok.sum(), rtol=1e-6)


def test_methods_select_their_terms():
  base = defaults.loss_config(ot_weight=0.5, contrastive_weight=2.0, mse_weight=3.0,
                           token_mse_weight=4.0)
  got = {m: losses.for_method(m, base) for m in losses.METHODS}
  weights = lambda c: (c.ot_weight, c.contrastive_weight, c.mse_weight, c.token_mse_weight)
  assert weights(got["optical"]) == (0.5, 2.0, 0.0, 0.0)
  assert weights(got["optical+mse"]) == (0.5, 2.0, 3.0, 0.0)
  assert weights(got["kd_mse"]) == (0.0, 2.0, 3.0, 0.0) and got["kd_mse"].both_sides
  assert not got["optical+mse"].both_sides
  assert weights(got["kd_token"]) == (0.0, 2.0, 0.0, 4.0)
  with pytest.raises(ValueError, match="loss.mse_weight, which is 0"):
    losses.for_method("kd_mse", defaults.loss_config(mse_weight=0.0))
  with pytest.raises(ValueError, match="trains nothing or is unknown"):
    losses.for_method("zero_shot", base)


def test_kd_mse_pulls_both_sides_and_kd_token_is_its_term():
  rng = np.random.default_rng(6)
  b, ls, lt, h = 4, 5, 6, 8
  s_tok, t_tok = rng.normal(size=(b, ls, h)), rng.normal(size=(b, lt, h))
  s_vec, t_vec, st_vec = (_unit(rng.normal(size=(b, h))) for _ in range(3))
  special = lambda l: np.tile(np.arange(l) == 0, (b, 1))   # position 0 plays CLS
  batch = {"src_mask": np.ones((b, ls), int), "tgt_mask": np.ones((b, lt), int),
           "src_special": special(ls), "tgt_special": special(lt)}
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  args = [jnp.asarray(x) for x in (s_tok, s_vec, t_tok, t_vec)]
  kd = losses.for_method("kd_mse", defaults.loss_config(contrastive_weight=0.0, mse_weight=1.0))
  st_tok = jnp.asarray(rng.normal(size=(b, lt, h)))
  total, m = losses.distillation_loss(kd, *args, batch, student_tgt=(st_tok, jnp.asarray(st_vec)))
  want = np.mean(np.sum((s_vec - t_vec) ** 2, 1)) + np.mean(np.sum((st_vec - t_vec) ** 2, 1))
  np.testing.assert_allclose(float(total), want, rtol=1e-5)
  with pytest.raises(ValueError, match="English side"):
    losses.distillation_loss(kd, *args, batch)
  # english_side='off': the recipe without its English side, the source term alone.
  kd_src = dataclasses.replace(kd, english_side="off")
  total, _ = losses.distillation_loss(kd_src, *args, batch)
  np.testing.assert_allclose(float(total), np.mean(np.sum((s_vec - t_vec) ** 2, 1)), rtol=1e-5)
  tok = losses.for_method("kd_token", defaults.loss_config(contrastive_weight=0.0,
                                                       token_mse_weight=1.0))
  total, m = losses.distillation_loss(tok, *args, batch)
  ok_s, ok_t = ~np.asarray(batch["src_special"]), ~np.asarray(batch["tgt_special"])
  want_index, want_aligned = _numpy_alignment(s_tok, ok_s, t_tok, ok_t, "mutual")
  errs = [np.sum((_unit(s_tok[i, a]) - _unit(t_tok[i, want_index[i, a]])) ** 2)
          for i in range(b) for a in range(ls) if want_aligned[i, a]]
  np.testing.assert_allclose(float(total), np.mean(errs), rtol=1e-5)
  assert set(m) >= {"loss_token_mse", "token_aligned"}


def test_english_side_adds_each_alignment_term_on_the_student_s_english():
  rng = np.random.default_rng(8)
  b, ls, lt, h = 3, 5, 6, 8
  s_tok, t_tok, st_tok = (rng.normal(size=(b, l, h)) for l in (ls, lt, lt))
  s_vec, t_vec, st_vec = (_unit(rng.normal(size=(b, h))) for _ in range(3))
  batch = {"src_mask": np.array([[1] * 5, [1] * 2 + [0] * 3, [1] * 4 + [0]]),
           "tgt_mask": np.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0]]),
           "stu_tgt_mask": np.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 4 + [0] * 2]),
           "src_special": np.zeros((b, ls), bool), "tgt_special": np.zeros((b, lt), bool),
           "stu_tgt_special": np.zeros((b, lt), bool)}
  cfg = losses.for_method("optical", defaults.loss_config(
      contrastive_weight=0.0, english_side="on", ot=defaults.ot_config(num_iterations=30)))
  assert cfg.both_sides and not dataclasses.replace(cfg, english_side="auto").both_sides
  args = [jnp.asarray(x) for x in (s_tok, s_vec, t_tok, t_vec)]
  total, _ = losses.distillation_loss(cfg, *args, {k: jnp.asarray(v) for k, v in batch.items()},
                                      student_tgt=(jnp.asarray(st_tok), jnp.asarray(st_vec)))
  src, _ = ot.ot_alignment_loss(args[0], batch["src_mask"], args[2], batch["tgt_mask"], cfg.ot)
  eng, _ = ot.ot_alignment_loss(jnp.asarray(st_tok), batch["stu_tgt_mask"], args[2],
                                batch["tgt_mask"], cfg.ot)
  np.testing.assert_allclose(float(total), float(src) + float(eng), rtol=1e-5)
  # Token MSE likewise: its value on the source side plus its value on the English side.
  tok = losses.for_method("kd_token", defaults.loss_config(
      contrastive_weight=0.0, token_mse_weight=1.0, english_side="on"))
  total, m = losses.distillation_loss(tok, *args, {k: jnp.asarray(v) for k, v in batch.items()},
                                      student_tgt=(jnp.asarray(st_tok), jnp.asarray(st_vec)))
  ok = lambda side: jnp.asarray(batch[f"{side}_mask"] > 0)
  per_side = [losses.token_mse(jnp.asarray(x), ok(side), args[2], ok("tgt"), "mutual")
              for x, side in ((s_tok, "src"), (st_tok, "stu_tgt"))]
  np.testing.assert_allclose(float(total), sum(float(v) for v, _ in per_side), rtol=1e-5)
  np.testing.assert_allclose(float(m["token_aligned"]),
                             np.mean([float(a) for _, a in per_side]), rtol=1e-6)
  with pytest.raises(ValueError, match="english_side='both'"):
    defaults.loss_config(english_side="both")


def test_distillation_loss_is_the_weighted_sum():
  rng = np.random.default_rng(3)
  b, ls, lt, h = 3, 6, 7, 8
  s_tok, t_tok = rng.normal(size=(b, ls, h)), rng.normal(size=(b, lt, h))
  s_vec, t_vec = _unit(rng.normal(size=(b, h))), _unit(rng.normal(size=(b, h)))
  batch = {"src_mask": np.array([[1] * 6, [1] * 3 + [0] * 3, [1] * 5 + [0]]),
           "tgt_mask": np.array([[1] * 7, [1] * 2 + [0] * 5, [1] * 4 + [0] * 3]),
           "src_special": np.zeros((b, ls), bool), "tgt_special": np.zeros((b, lt), bool)}
  cfg = defaults.loss_config(ot_weight=0.5, contrastive_weight=2.0, mse_weight=3.0,
                          temperature=0.1, ot=defaults.ot_config(epsilon=0.1, num_iterations=30))
  args = [jnp.asarray(x) for x in (s_tok, s_vec, t_tok, t_vec)]
  total, m = losses.distillation_loss(cfg, *args, {k: jnp.asarray(v) for k, v in batch.items()})
  ot_loss, _ = ot.ot_alignment_loss(args[0], batch["src_mask"], args[2], batch["tgt_mask"],
                                    cfg.ot)
  expected = 0.5 * float(ot_loss) + 2.0 * float(losses.contrastive(args[1], args[3], 0.1)) \
      + 3.0 * float(losses.pooled_mse(args[1], args[3]))
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  assert set(m) >= {"loss_ot", "loss_contrastive", "loss_mse", "pos_cos", "neg_cos"}
  np.testing.assert_allclose(float(m["pos_cos"]), np.mean(np.sum(s_vec * t_vec, 1)), rtol=1e-5)


def test_bad_weights_are_rejected():
  with pytest.raises(ValueError, match="at least one"):
    defaults.loss_config(ot_weight=0, contrastive_weight=0, mse_weight=0)
  with pytest.raises(ValueError, match=">= 0"):
    defaults.loss_config(ot_weight=-1)


# ----------------------------------------------------------------------------
# The teacher's triple loss, against a plain numpy InfoNCE.

@pytest.mark.parametrize("scoring,temperature", [("dense", 0.05), ("late_interaction", 0.7)])
def test_triple_loss_matches_numpy(scoring, temperature):
  rng = np.random.default_rng(0)
  b, lq, ld, d = 5, 4, 6, 8
  shape_q, shape_d = ((b, d), (b, d)) if scoring == "dense" else ((b, lq, d), (b, ld, d))
  q, p, n = (rng.normal(size=s).astype(np.float32) for s in (shape_q, shape_d, shape_d))
  # Padding: ragged lengths. Padded positions hold random vectors that would
  # add to (query side) or win (document side) MaxSim if the masks were ignored.
  qm = (np.arange(lq)[None] < rng.integers(1, lq + 1, b)[:, None]).astype(np.int32)
  pm = (np.arange(ld)[None] < rng.integers(1, ld + 1, b)[:, None]).astype(np.int32)
  nm = (np.arange(ld)[None] < rng.integers(1, ld + 1, b)[:, None]).astype(np.int32)
  valid = np.array([True, True, False, True, True])
  masks = ({} if scoring == "dense" else
           dict(query_mask=jnp.asarray(qm), positive_mask=jnp.asarray(pm),
                negative_mask=jnp.asarray(nm)))
  loss, metrics = losses.triple_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n),
                                      scoring=scoring, temperature=temperature,
                                      valid=jnp.asarray(valid), **masks)
  want, s = numpy_references.triple_loss(q, qm, p, pm, n, nm, scoring, temperature, valid)
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  own = np.arange(b)[valid]
  np.testing.assert_allclose(float(metrics["pos_score"]), s[own, own].mean(), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["hard_neg_score"]), s[own, own + b].mean(),
                             rtol=1e-4)
  kept = s[:, np.concatenate([valid, valid])]
  hits = [np.argmax(kept[i]) == int(valid[:i].sum()) for i in own]
  np.testing.assert_allclose(float(metrics["accuracy"]), np.mean(hits), rtol=1e-6)
  # Without `valid`, every row counts.
  all_rows, _ = losses.triple_loss(jnp.asarray(q), jnp.asarray(p), jnp.asarray(n),
                                    scoring=scoring, temperature=temperature, **masks)
  want_all, _ = numpy_references.triple_loss(q, qm, p, pm, n, nm, scoring, temperature,
                                             np.ones(b, bool))
  np.testing.assert_allclose(float(all_rows), want_all, rtol=1e-4)
