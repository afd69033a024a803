"""Click-through prediction with side features (FeatureNCF), with and without the features.
Example (built-in MovieLens 100K task: label = rating >= 4, user age / gender / occupation and
item genres, each user's latest day held out):

  python -m experiments.features --flagfile=experiments/configs/ml100k_features.flags \
      --data_dir=/path/to/data --workdir=/tmp/features

A click log: --dataset=csv:/path/log.csv --csv_user_col=... --csv_item_col=...
--csv_timestamp_col=... --click_label_col=... --click_continuous_cols=a,b
--click_categorical_cols=c,d. WORKDIR/results.json holds `best` (auc, logloss, hr@K, ...) and
`baseline`, the same figures of the model without features (trained in WORKDIR/baseline).
"""

from __future__ import annotations

import json

from absl import app, logging

from ncf_jax import ctr, reporting
from ncf_jax import flags as ncf_flags
from ncf_jax.data.clicks import load_clicks

ncf_flags.define_feature_flags(default_model="feature_ncf")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    # Every config is built (and validated) before any data is read.
    data_config = ncf_flags.data_config_from_flags()
    model_config, train_config, click_config = ncf_flags.feature_configs_from_flags()
    eval_config = ncf_flags.eval_config_from_flags()
    workdir = ncf_flags.workdir_from_flags()
    data = load_clicks(data_config, click_config)
    logging.info("data: %s", json.dumps(data.describe()))
    results = ctr.run_with_baseline(
        data,
        model_config,
        train_config,
        eval_config,
        click_config,
        workdir,
        extra={"flags": ncf_flags.flag_values()},
    )
    keys = ("auc", "logloss", f"hr@{eval_config.top_k}")
    line = lambda best: reporting.format_metrics({k: best[k] for k in keys})
    print(f"{results['dataset']} with features: {line(results['best'])} -> {workdir}")
    if "baseline" in results:
        print(f"{results['dataset']} without features: {line(results['baseline']['best'])}")


if __name__ == "__main__":
    app.run(main)
