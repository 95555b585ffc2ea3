"""Word alignment (data/wordalign.py): dictionaries induced by Dice and by OT plans recover
planted links; word maps leave out specials, the prefix and punctuation."""
import numpy as np
import pytest

from optical_jax.data import codeswitch, wordalign
from optical_jax.data.bitext import Pair
from optical_jax.models import tokenizer as tokenizer_lib

from tests import tiny_checkpoints


def _planted_bitext(n=1500, vocab=300, seed=0):
  """Sentences over a random bijective word map, with dropped and noise words."""
  rng = np.random.default_rng(seed)
  truth = {f"s{i}": f"t{j}" for i, j in enumerate(rng.permutation(vocab))}
  src_words = list(truth)
  pairs = []
  for k in range(n):
    src = list(rng.choice(src_words, size=rng.integers(5, 13)))
    tgt = [truth[w] for w in src if rng.random() > 0.1]  # 10% dropped
    tgt += list(rng.choice(["the", "of", "a", "and"], size=rng.integers(0, 3)))
    rng.shuffle(tgt)
    src[0] = src[0].capitalize()
    pairs.append(Pair(" ".join(src) + ".", " ".join(tgt) + "!", f"synthetic:{k}"))
  return pairs, truth


def test_dice_aligner_recovers_planted_dictionary():
  pairs, truth = _planted_bitext()
  d = wordalign.induce_dictionary(pairs, wordalign.DiceAligner(threshold=0.3),
                                  min_count=3, min_ratio=0.5, max_translations=1)
  induced = {s: next(iter(t)) for s, t in d.entries.items()}
  correct = sum(truth[s] == t for s, t in induced.items())
  assert correct / len(induced) >= 0.98  # precision
  assert correct / len(truth) >= 0.95  # recall (every word is seen ~30 times)
  assert not {"the", "of", "a", "and"} & set(induced.values())


def _synthetic_plan(rng, n_words):
  """A near-permutation token plan over known word maps, with heavy special rows."""
  perm = rng.permutation(n_words)  # source word i <-> target word perm[i]
  s_toks = [w for w in range(n_words) for _ in range(rng.integers(1, 4))]
  t_toks = [w for w in range(n_words) for _ in range(rng.integers(1, 4))]
  # Layouts: [CLS, prefix, prefix, words..., SEP] and [CLS, words..., SEP].
  s_map = np.asarray([-1, -1, -1] + s_toks + [-1])
  t_map = np.asarray([-1] + t_toks + [-1])
  plan = rng.uniform(0, 0.2, (len(s_map), len(t_map)))
  for i, a in enumerate(s_map):
    for j, b in enumerate(t_map):
      if a >= 0 and b >= 0 and perm[a] == b:
        plan[i, j] += 1.0
  # Specials and prefix carry the most mass, on wrong words: counted as words,
  # they would win the argmax of source word 0's row and target word 1's column.
  plan[:, -1] += 5.0 * (s_map == 0)
  plan[1:3, :] += 5.0 * (t_map == 1)
  return plan / plan.sum(), s_map, t_map, perm


def test_plan_aligner_recovers_links_and_ignores_specials():
  rng = np.random.default_rng(0)
  vocab_s, vocab_t = [f"s{i}" for i in range(6)], [f"t{i}" for i in range(6)]
  plans, s_maps, t_maps = [], [], []
  for _ in range(20):
    plan, s_map, t_map, perm = _synthetic_plan(rng, 6)
    # Word i of the source is vocab_s[i]; its target is vocab_t[perm[i]]'s slot.
    t_words = [None] * 6
    for i, j in enumerate(perm):
      t_words[j] = vocab_t[i]
    plans.append(plan)
    s_maps.append(wordalign.WordMap(s_map, tuple(vocab_s)))
    t_maps.append(wordalign.WordMap(t_map, tuple(t_words)))
  counts = wordalign.plan_link_counts(plans, s_maps, t_maps)
  assert counts.links == {(f"s{i}", f"t{i}"): 20 for i in range(6)}
  assert counts.totals == {f"s{i}": 20 for i in range(6)}
  aligner = wordalign.PlanAligner(plans=lambda pairs: plans,
                                  src_maps=lambda texts: s_maps,
                                  tgt_maps=lambda texts: t_maps, mode="threshold",
                                  threshold=0.3)
  d = wordalign.induce_dictionary([Pair("x", "y", "")] * 20, aligner, min_count=5)
  assert d.entries == {f"s{i}": {f"t{i}": 20} for i in range(6)}


def test_word_links_modes():
  mass = np.asarray([[0.5, 0.4, 0.0], [0.6, 0.1, 0.0], [0.0, 0.0, 0.0]])
  # Row 0's argmax is column 0, whose argmax is row 1: no mutual link for row 0.
  assert wordalign.word_links(mass) == [(1, 0)]
  assert wordalign.word_links(mass, mode="threshold", threshold=0.4) == [(0, 0), (0, 1),
                                                                          (1, 0)]
  with pytest.raises(ValueError, match="word maps"):
    wordalign.word_plan(np.zeros((2, 2)), wordalign.WordMap(np.zeros(3, int), ("a",)),
                        wordalign.WordMap(np.zeros(1, int), ("b",)))


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_word_maps_exclude_specials_prefix_and_punctuation(kind):
  backend = tiny_checkpoints._wordpiece() if kind == "wordpiece" else tiny_checkpoints._unigram()
  tok = tokenizer_lib.Tokenizer(backend, {"pad_token": "[PAD]" if kind == "wordpiece" else "<pad>"})
  texts = ['Mwana, anati: "pita!"', "किताबें। don't"]
  prefix = "query: "
  maps = wordalign.word_maps(tok, texts, prefix=prefix)
  batch = tok.encode(texts, prefix=prefix)
  for m, t, special, n in zip(maps, texts, batch.special, batch.lengths):
    assert m.words == tuple(codeswitch.words(t)) and len(m.token_word) == n
    assert (m.token_word[special[:n]] == -1).all()  # specials and prefix tokens
    assert set(m.token_word[m.token_word >= 0]) == set(range(len(m.words)))
  encs = backend.encode_batch([prefix + t for t in texts])
  for m, e, t in zip(maps, encs, texts):
    spans = codeswitch.word_spans(t)
    for w, (start, end) in zip(m.token_word, e.offsets):
      if w >= 0:  # the token overlaps its word's characters
        i, j = spans[w]
        assert start - len(prefix) < j and end - len(prefix) > i


def test_compute_plans_end_to_end_without_a_model():
  """Embeddings that encode word identity: the OT plan recovers the links."""
  rng = np.random.default_rng(0)
  vecs = rng.normal(size=(10, 16))
  s_vocab = {f"s{i}": i for i in range(10)}
  t_vocab = {f"t{i}": i for i in range(10)}

  def embed(vocab):
    def fn(texts):
      tokens, mask, special = np.zeros((4, 8, 16)), np.zeros((4, 8), int), np.zeros((4, 8), bool)
      for b, t in enumerate(texts):
        for k, w in enumerate(t.split()):
          tokens[b, k] = vecs[vocab[w]] + 0.05 * rng.normal(size=16)
          mask[b, k] = 1
      return tokens, mask, special
    return fn

  pairs = []
  for k in range(8):
    ids = rng.choice(10, size=5, replace=False)
    pairs.append(Pair(" ".join(f"s{i}" for i in ids),
                      " ".join(f"t{i}" for i in rng.permutation(ids)), str(k)))
  plans = list(wordalign.compute_plans(pairs, embed(s_vocab), embed(t_vocab), batch_size=4))
  assert [p.shape for p in plans] == [(5, 5)] * 8
  as_map = lambda texts: [wordalign.WordMap(np.arange(len(t.split())), tuple(t.split()))
                          for t in texts]
  d = wordalign.induce_dictionary(pairs, wordalign.PlanAligner(
      lambda ps: plans, as_map, as_map), min_count=1)
  assert all(list(t) == [s.replace("s", "t")] for s, t in d.entries.items())
  assert len(d) >= 9
