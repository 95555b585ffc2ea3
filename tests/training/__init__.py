"""Tests of optical_jax.training."""
