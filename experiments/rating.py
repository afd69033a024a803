"""Explicit rating prediction (BiasedMF, RatingMLP): MSE training, RMSE / MAE / MSE on a held-out
split. Example (ml-100k, 90/10 random split):

  python -m experiments.rating --flagfile=experiments/configs/ml100k_biased_mf.flags \
      --data_dir=/path/to/data --workdir=/tmp/biased_mf

WORKDIR/results.json holds `best` (test rmse, mae, mse at the epoch of lowest RMSE) and the
per-epoch history; the flagfiles under experiments/configs/ name the tuned settings.
"""

from __future__ import annotations

import json

from absl import app, logging

from ncf_jax import explicit, reporting
from ncf_jax import flags as ncf_flags
from ncf_jax.data import load_dataset
from ncf_jax.data.dated import load_dated_csv

ncf_flags.define_rating_flags(default_model="biased_mf")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    # Every config is built (and validated) before any data is read.
    data_config = ncf_flags.data_config_from_flags()
    model_config, train_config = ncf_flags.rating_configs_from_flags()
    eval_config = ncf_flags.eval_config_from_flags()
    workdir = ncf_flags.workdir_from_flags()
    if data_config.rating_threshold is not None:
        raise ValueError("--rating_threshold drops ratings: rating models need all of them")
    column = data_config.csv_rating_col if data_config.dataset.startswith("csv:") else "rating"
    if column is None:
        raise ValueError("a csv: rating dataset needs --csv_rating_col")
    date_col = ncf_flags.csv_date_col_from_flags()
    data = load_dated_csv(data_config, date_col) if date_col else load_dataset(data_config)
    logging.info("data: %s", json.dumps(data.stats()))
    results = explicit.train_and_evaluate(
        data,
        model_config,
        train_config,
        eval_config,
        workdir,
        rating_column=column,
        extra={"flags": ncf_flags.flag_values()},
    )
    print(
        f"{results['model']} on {results['dataset']}: best epoch {results['best_epoch']} "
        f"({results['select_epoch']}) {reporting.format_metrics(results['best'])} -> {workdir}"
    )


if __name__ == "__main__":
    app.run(main)
