"""Tests of optical_jax.search."""
