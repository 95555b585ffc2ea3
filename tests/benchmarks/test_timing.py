"""benchmarks/timing.py: engines timed in alternating rounds, and their ratio."""
import importlib.util

import pytest

from tests import repo


@pytest.fixture
def timing():
  spec = importlib.util.spec_from_file_location("timing", repo.ROOT / "benchmarks" / "timing.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class _Clock:
  """A clock that advances only when a fake engine 'runs'."""

  def __init__(self):
    self.now = 0.0
    self.calls = []

  def engine(self, name, seconds):
    """An engine whose calls take `seconds(call number)` on this clock."""
    def call():
      self.now += seconds(sum(c == name for c in self.calls))
      self.calls.append(name)
    return call


def test_rounds_take_the_engines_in_turn_and_keep_each_rounds_median(timing, monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(timing.time, "perf_counter", lambda: clock.now)
  ours = clock.engine("ours", lambda i: [1, 9, 2, 2, 5, 3][i])   # rounds: 1,9,2 | 2,5,3
  peer = clock.engine("peer", lambda i: [4, 4, 7, 8, 6, 6][i])   # rounds: 4,4,7 | 8,6,6
  out = timing.alternating({"ours": ours, "peer": peer}, repeats=3, rounds=2)
  assert clock.calls == ["ours"] * 3 + ["peer"] * 3 + ["ours"] * 3 + ["peer"] * 3
  assert out == {"ours": [2, 3], "peer": [4, 6]}
  assert list(out) == ["ours", "peer"]
  assert timing.round_ratios(out["ours"], out["peer"]) == [2.0, 2.0]


def test_the_ratio_is_the_median_of_the_rounds_ratios_with_each_printed(timing):
  # A machine that slowed down partway: timed one after the other, the two
  # engines' medians would mix rounds of different speeds; per round they do not.
  ours, peer = [1.0, 2.0, 1.1], [1.5, 2.6, 1.65]
  line = timing.ratio_line("pairs/s", ours, peer)
  assert line.startswith("ratio optical_jax / PyTorch (pairs/s): 1.50x")
  assert "median of 3 alternating rounds: 1.50x, 1.30x, 1.50x" in line
  one_round = timing.ratio_line("texts/s", [2.0], [3.0])
  assert one_round == "ratio optical_jax / PyTorch (texts/s): 1.50x"


def test_rounds_and_ratios_refuse_what_cannot_be_paired(timing):
  with pytest.raises(ValueError, match="rounds and repeats must be >= 1"):
    timing.alternating({"ours": lambda: None}, repeats=1, rounds=0)
  with pytest.raises(ValueError, match="2 rounds of ours against 1 of the peer"):
    timing.round_ratios([1.0, 1.0], [1.0])
