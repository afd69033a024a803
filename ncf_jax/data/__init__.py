"""Data layer: raw files -> deterministic, cached NumPy arrays. Knows nothing of models."""

from ncf_jax.data.dataset import SideInfo, item_titles, load_dataset, load_side_info, prepare
from ncf_jax.data.download import SOURCES, Remote, Source
from ncf_jax.data.ncf_format import read_ncf, write_ncf
from ncf_jax.data.readers import (
    read_csv_interactions,
    read_movielens_ratings,
)
from ncf_jax.data.side_info import read_side_table
from ncf_jax.data.splits import leave_one_out, sample_test_negatives
from ncf_jax.data.types import InteractionData, csr_from_pairs
from ncf_jax.errors import DataError, DownloadError

__all__ = [
    "SOURCES",
    "DataError",
    "DownloadError",
    "InteractionData",
    "Remote",
    "SideInfo",
    "Source",
    "csr_from_pairs",
    "item_titles",
    "leave_one_out",
    "load_dataset",
    "load_side_info",
    "prepare",
    "read_csv_interactions",
    "read_movielens_ratings",
    "read_ncf",
    "read_side_table",
    "sample_test_negatives",
    "write_ncf",
]
