"""Tests of optical_jax.research."""
