"""Tests of optical_jax.evaluation."""
