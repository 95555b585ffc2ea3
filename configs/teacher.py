r"""Train your own English retrieval teacher, then distil it with OPTICAL.

Contrastive training on (query, positive, hard negative) triples: in-batch
positives and hard negatives are every query's candidates. One encoder reads
both sides; scoring is dense (pooled cosine) or late interaction (ColBERT
MaxSim). The trained model is exported to WORKDIR/export, a Hugging Face
directory a distillation config takes as its teacher.

  # MS MARCO text triples (query<TAB>positive<TAB>negative), from a checkpoint:
  optical-jax --mode=teacher --config=configs/teacher.py --workdir=runs/teacher \
      --config.model.teacher=/path/to/hf_checkpoint \
      --config.teacher.triples=triples.train.small.tsv

  # MS MARCO id triples, late interaction, evaluated on a dev subset:
  optical-jax --mode=teacher --config=configs/teacher.py --workdir=runs/colbert \
      --config.teacher.format=ids --config.teacher.triples=qidpidtriples.train.full.tsv \
      --config.teacher.queries=queries.train.tsv --config.teacher.corpus=collection.tsv \
      --config.teacher.scoring=late_interaction --config.teacher.temperature=1.0 \
      --config.eval.collection=files --config.eval.queries=queries.dev.small.tsv \
      --config.eval.corpus=collection.tsv --config.eval.qrels=qrels.dev.small.tsv \
      --config.eval.max_queries=500 --config.eval.max_docs=20000

  # Offline, seconds: the embedded e5-small on triples built from the KJV Bible.
  optical-jax --mode=teacher --config=configs/teacher.py:smoke --workdir=/tmp/teacher

  # Then distil the trained teacher:
  optical-jax --config=configs/optical.py --workdir=runs/sw \
      --config.model.teacher=runs/teacher/export ...

model.teacher   where training starts: an HF directory or hub id (BERT / XLM-R / e5),
                or 'embedded' (multilingual-e5-small).
teacher         the triples and the objective (see the `teacher` block of optical_jax/config.py).
eval            'files' (queries, corpus, qrels), 'bible' (English keyword search
                over the held-out books' verses) or 'none'; results.md compares the
                starting checkpoint with the trained teacher.
text            query_prefix / doc_prefix: what queries and passages are prefixed
                with (e5: "query: " / "passage: "; '' for models without prefixes).
"""
import ml_collections

from optical_jax import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.teacher.source = "files"
  c.teacher.format = "text"
  c.eval.collection = "none"
  c.train.steps = 2000
  c.train.batch_size = 32
  c.train.max_length = 128           # passages; queries get teacher.query_max_length
  c.train.trainable = "all"          # a new teacher learns its word embeddings too
  c.train.log_every = 20
  c.checkpoint.every_steps = 200

  if arg == "smoke":   # offline, well under a minute on a CPU
    c.model.teacher = "embedded"
    c.teacher.source = "bible"
    c.teacher.max_pairs = 64
    c.teacher.query_max_length = 16
    c.eval.collection = "bible"
    c.eval.max_queries = 32
    c.eval.max_docs = 128
    c.eval.max_length = 64
    c.eval.metrics = ("nDCG@10", "MRR@10", "R@10")
    c.eval.k = 10
    c.train.steps = 4
    c.train.batch_size = 8
    c.train.max_length = 32
    c.train.lr = 1e-4
    # Word embeddings are most of e5-small: frozen, each checkpoint is 5x smaller.
    c.train.trainable = "no_word_embeddings"
    c.train.log_every = 1
    c.checkpoint.every_steps = 2
  elif arg not in (None, "", "default"):
    raise ValueError(f"configs/teacher.py takes no argument, 'default' or 'smoke', got {arg!r}")
  c.lock()
  return c
