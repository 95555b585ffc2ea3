"""BatchOrder: the data order is a pure function of (seed, step)."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optical_jax.data import batching


def test_deterministic_and_seeded():
  a = batching.BatchOrder(100, 8, seed=3)
  b = batching.BatchOrder(100, 8, seed=3)
  c = batching.BatchOrder(100, 8, seed=4)
  for step in (0, 1, 12, 13, 500):
    np.testing.assert_array_equal(a.indices(step), b.indices(step))
  assert not np.array_equal(a.indices(0), c.indices(0))
  assert a.indices(0).dtype == np.int64 and a.indices(0).shape == (8,)


def test_resume_equivalence():
  n = 7
  full = batching.BatchOrder(50, 16, seed=0)
  uninterrupted = [full.indices(s) for s in range(2 * n)]
  resumed = batching.BatchOrder(50, 16, seed=0)  # a fresh object, as after a restart
  for s in range(n, 2 * n):
    np.testing.assert_array_equal(resumed.indices(s), uninterrupted[s])


def test_each_epoch_is_a_permutation():
  order = batching.BatchOrder(60, 12, seed=1)  # 5 steps per epoch
  epochs = [np.concatenate([order.indices(e * 5 + s) for s in range(5)]) for e in range(3)]
  for e in epochs:
    np.testing.assert_array_equal(np.sort(e), np.arange(60))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled per epoch


def test_batches_straddle_epochs_dropping_nothing():
  order = batching.BatchOrder(10, 4, seed=2)
  stream = np.concatenate([order.indices(s) for s in range(5)])  # 20 = two epochs
  np.testing.assert_array_equal(np.sort(stream[:10]), np.arange(10))
  np.testing.assert_array_equal(np.sort(stream[10:]), np.arange(10))
  # Step 2 takes the last 2 of epoch 0 and the first 2 of epoch 1.
  assert order.position(2) == {"step": 2, "epoch": 0, "offset": 8}
  assert order.position(3) == {"step": 3, "epoch": 1, "offset": 2}


def test_batch_larger_than_dataset():
  order = batching.BatchOrder(3, 7, seed=0)
  stream = np.concatenate([order.indices(s) for s in range(3)])  # 21 = 7 epochs
  for e in range(7):
    np.testing.assert_array_equal(np.sort(stream[3 * e:3 * e + 3]), np.arange(3))


def test_position_is_json():
  pos = batching.BatchOrder(29041, 32, seed=0).position(10_000)
  assert json.loads(json.dumps(pos)) == pos
  assert pos == {"step": 10_000, "epoch": 320_000 // 29041, "offset": 320_000 % 29041}


def test_host_slices():
  order = batching.BatchOrder(37, 12, seed=5)
  for step in (0, 3, 9):
    full = order.indices(step)
    parts = [order.indices(step, i, 4) for i in range(4)]
    assert all(p.shape == (3,) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), full)
  with pytest.raises(ValueError, match="does not divide among 5"):
    order.indices(0, 0, 5)
  with pytest.raises(ValueError, match="process_index"):
    order.indices(0, 4, 4)


def test_bad_arguments():
  with pytest.raises(ValueError, match=">= 1"):
    batching.BatchOrder(0, 4, 0)
  with pytest.raises(ValueError, match="seed must be >= 0"):
    batching.BatchOrder(10, 4, -1)
  with pytest.raises(ValueError, match="must be an int"):
    batching.BatchOrder(10, 4.0, 0)
  with pytest.raises(ValueError, match="step must be >= 0"):
    batching.BatchOrder(10, 4, 0).indices(-1)


def test_cached_permutation_is_read_only():
  idx = batching.BatchOrder(10, 10, seed=0).indices(0)
  idx[:] = 0  # the returned batch is the caller's to change...
  np.testing.assert_array_equal(np.sort(batching.BatchOrder(10, 10, 0).indices(0)),
                                np.arange(10))  # ...the cached order is not


@settings(max_examples=40, deadline=None)
@given(num_examples=st.integers(1, 60), batch_size=st.integers(1, 24),
       seed=st.integers(0, 2**32 - 1), step=st.integers(0, 200),
       process_count=st.sampled_from([1, 2, 3, 4]))
def test_matches_the_epoch_stream(num_examples, batch_size, seed, step, process_count):
  """indices(step) is positions [step*B, (step+1)*B) of the concatenated epoch permutations."""
  order = batching.BatchOrder(num_examples, batch_size, seed)
  got = order.indices(step)
  start = step * batch_size
  epochs = range(start // num_examples, (start + batch_size - 1) // num_examples + 1)
  stream = np.concatenate([np.random.default_rng([seed, e]).permutation(num_examples)
                           for e in epochs])
  offset = start - epochs[0] * num_examples
  np.testing.assert_array_equal(got, stream[offset:offset + batch_size])
  pos = order.position(step)
  assert (pos["epoch"], pos["offset"]) == (epochs[0], offset)
  if batch_size % process_count == 0:
    parts = [order.indices(step, i, process_count) for i in range(process_count)]
    np.testing.assert_array_equal(np.concatenate(parts), got)
