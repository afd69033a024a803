"""Data layer: raw files -> deterministic, cached NumPy arrays. Knows nothing of models."""

from ncf_jax.data.types import InteractionData, csr_from_pairs

__all__ = ["InteractionData", "csr_from_pairs"]
