"""Finding documents: encoding texts, exact top-k, indexes, late interaction.

  encode.py            texts -> pooled vectors (length-sorted batches, a vector cache),
                       or token vectors for MaxSim
  chunks.py            the chunked top-k engine every search runs on
  certified.py         the bf16 pass with a proof that its float32 top-k is exact
  topk.py              `topk` (exact / approximate / sharded / FAISS) and runs
  index.py             index directories
  late_interaction.py  ColBERT MaxSim over a corpus, or re-ranking a dense top-k
"""
