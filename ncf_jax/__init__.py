"""ncf_jax: Neural Collaborative Filtering and related recommenders in JAX/Flax."""

__version__ = "0.1.0"
