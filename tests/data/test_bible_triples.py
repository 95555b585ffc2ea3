"""Keyword-query triples from Bible verses (data/bible_triples.py), checked by hand."""
from optical_jax.data import bible
from optical_jax.data import bible_triples


def test_bible_keyword_triples_from_verses():
  def verse(book, ch, v, en):
    number = ("Genesis", "Exodus").index(book) + 1
    return bible.VersePair(number * 1_000_000 + ch * 1_000 + v, book, ch, v, "ny", en)
  pairs = [verse("Genesis", 1, 1, "Eden walked with Adam in God"),
           verse("Genesis", 1, 2, "God saw"),
           verse("Genesis", 1, 3, "And God called Eden good"),
           verse("Genesis", 2, 1, "alone in its chapter with God"),
           verse("Exodus", 1, 1, "Moses walked with God"),
           verse("Exodus", 1, 2, "Aaron")]
  train, col = bible_triples.build(pairs, heldout_books=("exodus",), query_words=2)
  # Verses holding each word: adam 1, eden 2, walked 2, in 2, god 5, and 1,
  # called 1. Queries keep the verse's word order; "God saw" is too short to
  # be a query but is a neighbour; Genesis 2 has one verse, so no negative.
  assert [(t.query, t.positive, t.negative, t.origin) for t in train] == [
      ("Eden Adam", pairs[0].en, "God saw", "Genesis 1:1"),
      ("And called", pairs[2].en, "God saw", "Genesis 1:3")]   # the last verse: previous
  assert dict(col.queries) == {"q-02001001": "Moses walked"}
  assert dict(col.docs) == {"d-02001001": "Moses walked with God", "d-02001002": "Aaron"}
  assert col.qrels == {"q-02001001": {"d-02001001": 1}}
