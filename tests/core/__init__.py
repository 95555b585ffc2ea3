"""Tests of optical_jax.core."""
