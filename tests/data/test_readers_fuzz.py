"""The input readers fuzzed: whatever bytes a file holds, a reader returns, counts a
skipped line, or raises a clear error naming the file (and the line) - never a
traceback from somewhere inside.

Lines are drawn from pieces that make the readers' grammars interesting (tabs,
quotes, braces, numbers, invalid UTF-8, carriage returns, blank lines), so that
valid, almost-valid and broken lines all occur.
"""
import os
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from optical_jax.data import bitext
from optical_jax.data import collection
from optical_jax.data import trec

EXAMPLES = 300
_PIECES = ["\t", " ", "a", "b c", "Mulungu", "ñ", "0", "1", "-2", "3.5", "nan", "inf", "Q0",
           "q1", "d1", '{"', '"src"', '"tgt"', '":"', '"}', "{", "}", "[", "]", ":", ",",
           '"_id"', '"text"', "\r", "\xff", "\xc3", "\x00", "é"]
_LINES = st.lists(st.sampled_from(_PIECES), max_size=12).map(
    lambda parts: "".join(parts).encode("utf-8", "surrogateescape")
    .replace("\xff".encode(), b"\xff").replace("\xc3".encode(), b"\xc3"))
# Lines each reader accepts, so that files mix good lines with bad ones.
_WORDS = st.sampled_from(["moni", "hello there", "Mulungu ndi wabwino", "ñandú", "q1", "d2"])
_GOOD = st.one_of(
    st.tuples(_WORDS, _WORDS).map(lambda t: f"{t[0]}\t{t[1]}"),
    st.tuples(_WORDS, _WORDS).map(lambda t: f'{{"src": "{t[0]}", "tgt": "{t[1]}"}}'),
    st.tuples(_WORDS, _WORDS).map(lambda t: f'{{"_id": "{t[0]}", "text": "{t[1]}"}}'),
    st.integers(0, 3).map(lambda g: f"q{g} 0 d{g} {g}"),
    st.integers(1, 9).map(lambda r: f"q1 Q0 d{r} {r} {1.0 / r} run"),
).map(lambda s: s.encode())
_FILES = st.lists(st.one_of(_LINES, _GOOD, st.just(b"")), max_size=8).map(
    lambda ls: b"\n".join(ls))
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


def _file(data: bytes, suffix: str) -> str:
  fd, path = tempfile.mkstemp(suffix=suffix)
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  return path


def _clear(error: Exception, path: str) -> None:
  """A clear error: a ValueError (BitextError is one) whose message names the file."""
  assert isinstance(error, ValueError), f"{type(error).__name__}: {error}"
  assert path in str(error), f"the message does not name the file: {error}"
  assert "\n" not in str(error).strip(), f"not one line: {error!r}"


def _check(read, data: bytes, suffix: str, *, skipping: bool):
  path = _file(data, suffix)
  try:
    out = read(path)
  except Exception as e:  # pylint: disable=broad-except  (what it raised is the test)
    _clear(e, path)
    if skipping:   # skipping only fails when nothing is left
      assert "no pairs" in str(e) or "no entries" in str(e), e
    return None
  finally:
    os.unlink(path)
  return out


@_SETTINGS
@given(data=_FILES)
@example(data=b"moni\tmoni\n\t")   # a tab-only line: a bad line, not a blank one
def test_tsv(data):
  _check(lambda p: bitext.read_tsv(p), data, ".tsv", skipping=False)
  out = _check(lambda p: bitext.read_tsv(p, on_bad_line="skip"), data, ".tsv", skipping=True)
  if out is not None:
    assert all(p.src.strip() and p.tgt.strip() for p in out)
    # Every pair or skip comes from a line that is not blank; a line holding a tab
    # is not blank (read_tsv: it has two empty sides, a bad line).
    lines = [line for line in data.split(b"\n") if b"\t" in line or line.strip()]
    assert len(out) + out.num_skipped <= len(lines)


@_SETTINGS
@given(data=_FILES)
def test_jsonl(data):
  _check(lambda p: bitext.read_jsonl(p), data, ".jsonl", skipping=False)
  out = _check(lambda p: bitext.read_jsonl(p, on_bad_line="skip"), data, ".jsonl",
               skipping=True)
  if out is not None:
    assert all(isinstance(p.src, str) and p.src.strip() for p in out)


@_SETTINGS
@given(src=_FILES, tgt=_FILES)
def test_parallel(src, tgt):
  src_path, tgt_path = _file(src, ".ny"), _file(tgt, ".en")
  for mode in ("error", "skip"):
    try:
      bitext.read_parallel(src_path, tgt_path, on_bad_line=mode)
    except Exception as e:  # pylint: disable=broad-except
      assert isinstance(e, ValueError), f"{type(e).__name__}: {e}"
      assert src_path in str(e) or tgt_path in str(e), e
  os.unlink(src_path)
  os.unlink(tgt_path)


@_SETTINGS
@given(data=_FILES)
def test_collection_texts(data):
  for suffix in (".tsv", ".jsonl"):
    out = _check(collection.read_texts, data, suffix, skipping=False)
    if out is not None:
      assert all(k and v for k, v in out.items())


@_SETTINGS
@given(data=_FILES)
def test_qrels_and_runs(data):
  for read in (trec.read_qrels, trec.read_run):
    _check(read, data, ".txt", skipping=False)
    out = _check(lambda p, read=read: read(p, on_bad_line="skip"), data, ".txt",
                 skipping=False)
    if out is not None and read is trec.read_qrels:
      assert all(isinstance(g, int) for docs in out.values() for g in docs.values())
