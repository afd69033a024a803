"""The shared body of the NCF training scripts: flags -> configs -> data -> train_and_evaluate."""

from __future__ import annotations

import json

from absl import logging

from ncf_jax import flags as ncf_flags
from ncf_jax import reporting, sharding
from ncf_jax.data import load_dataset
from ncf_jax.runner import train_and_evaluate


def run(
    argv,
    train_fn=train_and_evaluate,
    model_config_fn=ncf_flags.model_config_from_flags,
    train_config_fn=ncf_flags.train_config_from_flags,
) -> dict:
    """Flags -> configs -> data -> `train_fn(...)`; returns its results (also in WORKDIR)."""
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    sharding.maybe_initialize_distributed()  # multi-host jobs: before any device is touched
    # Every config is built (and validated) before any data is read.
    data_config = ncf_flags.data_config_from_flags()
    model_config = model_config_fn()
    train_config = train_config_fn()
    eval_config = ncf_flags.eval_config_from_flags()
    workdir = ncf_flags.workdir_from_flags()
    data = load_dataset(data_config)
    logging.info("data: %s", json.dumps(data.stats()))
    return train_fn(
        data,
        model_config,
        train_config,
        eval_config,
        workdir,
        extra={"flags": ncf_flags.flag_values()},
        data_config=data_config,
    )


def summary(results: dict) -> str:
    return (
        f"{results['model']} on {results['dataset']}: best epoch {results['best_epoch']} "
        f"({results['select_epoch']}) {reporting.format_metrics(results['best'])}"
    )


def main(argv) -> None:
    results = run(argv)
    print(f"{summary(results)} -> {ncf_flags.workdir_from_flags()}")
