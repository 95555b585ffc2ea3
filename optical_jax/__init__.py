"""optical_jax: OPTICAL (optimal-transport distillation for cross-lingual retrieval) in JAX."""

__version__ = "0.1.0"
