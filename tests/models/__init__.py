"""Tests of optical_jax.models."""
