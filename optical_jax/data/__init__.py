"""Data: bitext readers, the embedded Bible data, evaluation collections, batching."""
