"""Tests of optical_jax.data."""
