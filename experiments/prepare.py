"""Prepare a dataset (download, read, split, sample test negatives, cache) and print its stats.

python -m experiments.prepare --dataset=ml-100k --data_dir=DIR [--json]
"""

from __future__ import annotations

import json

from ncf_jax import flags
from ncf_jax.commands import entry
from ncf_jax.config import DataConfig
from ncf_jax.data import load_dataset

flags.define_flags({"data": DataConfig})
flags.define_bool("json", False, "Print the statistics as one JSON object.")


def format_stats(stats: dict) -> str:
    """One `name: value` line per statistic, numbers with thousands separators."""
    width = max(map(len, stats))
    lines = []
    for name, value in stats.items():
        if isinstance(value, float):
            text = f"{value:.6f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        lines.append(f"{name:<{width}}  {text}")
    return "\n".join(lines)


def main(argv):
    del argv
    data = load_dataset(flags.config_from_flags(DataConfig))
    stats = data.stats()
    print(json.dumps(stats) if flags.value("json") else format_stats(stats))


if __name__ == "__main__":
    entry.run(main)
