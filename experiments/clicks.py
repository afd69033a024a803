"""Click-through prediction with side features (FeatureNCF), with and without the features.
Example (built-in MovieLens 100K task: label = rating >= 4, user age / gender / occupation and
item genres, each user's latest day held out):

  python -m experiments.clicks --flagfile=experiments/configs/ml100k_clicks.flags \
      --data_dir=/path/to/data --workdir=/tmp/clicks

A click log: --dataset=csv:/path/log.csv --csv_user_col=... --csv_item_col=...
--csv_timestamp_col=... --click_label_col=... --click_continuous_cols=a,b
--click_categorical_cols=c,d. WORKDIR/results.json holds `best` (auc, logloss, hr@K, ...) and
`baseline`, the same figures of the model without features (trained in WORKDIR/baseline).
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import clicks

cli.define(clicks)

if __name__ == "__main__":
    cli.run(clicks)
