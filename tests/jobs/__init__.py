"""Tests of optical_jax.jobs."""
