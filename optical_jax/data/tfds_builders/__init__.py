"""TFDS builders for the benchmarks, prepared as array_record without TensorFlow.

Each module holds one builder family (see `BUILDERS`): `bitext` (generic
bitext), `miracl` (queries, qrels and corpus per language), `mlqa`
(cross-lingual question -> context retrieval), `multi30k` (caption bitext and
caption retrieval), `mtop` (utterances with intents) and `bible` (the embedded
Chichewa-English Bible). They read the published file layouts from a
`manual_dir`; MIRACL and MLQA also download when the network is up. Every
builder is prepared with `file_format="array_record"` and read with
`builder.as_data_source()`: nothing here needs TensorFlow (tfrecord,
`as_dataset()`, `tfds.list_builders()` with community datasets would).

    from optical_jax.data import tfds_builders
    train = tfds_builders.load("bitext", "tsv", data_dir, manual_dir, split="train")
    train[0]  # {'src': b'...', 'tgt': b'...', 'origin': b'/path/train.tsv:1'}

Texts come back as UTF-8 `bytes` (TFDS's numpy encoding); the `*_collection`
helpers of the modules turn prepared data into `EvalCollection`s.

The downloading paths call `network.require_online` first, so that an offline
machine fails in seconds with the list of files to put in `manual_dir`, instead
of TFDS retrying for minutes.
"""
from optical_jax.data.tfds_builders._base import DataError
from optical_jax.data.tfds_builders._base import ManualDataError
from optical_jax.data.tfds_builders.loading import BUILDERS
from optical_jax.data.tfds_builders.loading import builder
from optical_jax.data.tfds_builders.loading import builder_class
from optical_jax.data.tfds_builders.loading import load
from optical_jax.data.tfds_builders.loading import prepare
from optical_jax.data.tfds_builders.network import OfflineError
from optical_jax.data.tfds_builders.network import is_online
from optical_jax.data.tfds_builders.network import offline_reason
from optical_jax.data.tfds_builders.network import require_online

__all__ = ["BUILDERS", "DataError", "ManualDataError", "OfflineError", "builder",
           "builder_class", "is_online", "load", "offline_reason", "prepare", "require_online"]
