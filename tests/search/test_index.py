"""Document indexes (search/index.py): build, load, search, and what they refuse."""
import json

import numpy as np
import pytest

from optical_jax.search import index as index_lib


class _FakeEncoder:
  """Deterministic per text (seeded by a stable hash), 12 dims."""

  def __call__(self, texts):
    self.calls = getattr(self, "calls", 0) + 1
    return np.stack([np.random.default_rng(sum(map(ord, t))).standard_normal(12) for t in texts])


def _build(tmp_path, n=23, **kwargs):
  texts = [f"passage number {i}" for i in range(n)]
  docids = [f"doc{i}" for i in range(n)]
  kwargs.setdefault("metadata", {"model_id": "fake/enc-12", "config": {"pool": "mean"}})
  return index_lib.build_index(_FakeEncoder(), texts, docids, tmp_path / "idx", batch_size=5,
                               shard_size=10, progress=False, **kwargs), texts


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_index_round_trip(tmp_path, dtype):
  index, texts = _build(tmp_path, dtype=dtype, similarity="cos")
  loaded = index_lib.load_index(tmp_path / "idx")
  assert [len(s) for s in loaded.shards] == [10, 10, 3]
  assert loaded.docids == [f"doc{i}" for i in range(23)] and loaded.count == 23
  assert loaded.metadata["config"] == {"pool": "mean"} and loaded.model_id == "fake/enc-12"
  want = _FakeEncoder()(texts)
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  tol = 1e-3 if dtype == "float16" else 1e-6
  np.testing.assert_allclose(loaded.embeddings.astype(np.float32), want, atol=tol)
  _, idx = loaded.search(want[:3], 1)
  np.testing.assert_array_equal(idx[:, 0], [0, 1, 2])
  index_lib.check_compatible(loaded, 12, "fake/enc-12")


def test_duplicate_and_bad_docids(tmp_path):
  enc = _FakeEncoder()
  with pytest.raises(ValueError, match="duplicate docid 'b'"):
    index_lib.build_index(enc, ["x", "y", "z"], ["a", "b", "b"], tmp_path / "i", progress=False)
  with pytest.raises(ValueError, match="whitespace"):
    index_lib.build_index(enc, ["x", "y"], ["a", "b\nc"], tmp_path / "i", progress=False)
  assert not hasattr(enc, "calls")  # Rejected before any encoding.


def test_missing_shard_and_count_mismatch(tmp_path):
  _build(tmp_path)
  (tmp_path / "idx" / "embeddings-00001.npy").unlink()
  with pytest.raises(FileNotFoundError, match="embeddings-00001.npy"):
    index_lib.load_index(tmp_path / "idx")
  _build(tmp_path, overwrite=True)
  info = json.loads((tmp_path / "idx" / "index.json").read_text())
  info["count"] = 24
  (tmp_path / "idx" / "index.json").write_text(json.dumps(info))
  with pytest.raises(ValueError, match="index.json"):
    index_lib.load_index(tmp_path / "idx")
  with pytest.raises(FileExistsError):
    _build(tmp_path)


def test_incompatible_query_encoder(tmp_path):
  index, _ = _build(tmp_path)
  with pytest.raises(ValueError, match="dim 16"):
    index_lib.check_compatible(index, 16, "fake/enc-12")
  with pytest.raises(ValueError, match="other/model"):
    index_lib.check_compatible(index, 12, "other/model")
