"""Explicit rating prediction (BiasedMF, RatingMLP): MSE training, RMSE / MAE / MSE on a held-out
split. Example (ml-100k, 90/10 random split):

  python -m experiments.rating --flagfile=experiments/configs/ml100k_biased_mf.flags \
      --data_dir=/path/to/data --workdir=/tmp/biased_mf

WORKDIR/results.json holds `best` (test rmse, mae, mse at the epoch of lowest RMSE) and the
per-epoch history; the flagfiles under experiments/configs/ name the tuned settings.
"""

from ncf_jax.commands import cli
from ncf_jax.tasks import rating

cli.define(rating)

if __name__ == "__main__":
    cli.run(rating)
