"""Fixtures of the research tests."""
import pytest

from tests.research.fake_grid import QRELS


@pytest.fixture
def qrels_path(tmp_path):
  path = tmp_path / "qrels.txt"
  path.write_text("".join(f"{q} 0 {d} 1\n" for q, docs in QRELS.items() for d in docs))
  return str(path)
