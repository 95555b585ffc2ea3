"""Transformer encoders, their heads, and their weights."""
