"""Train and evaluate MLP (He et al., WWW 2017). Example:

python -m experiments.mlp --flagfile=experiments/configs/ml100k_mlp.flags --workdir=/tmp/mlp
"""

from absl import app

from experiments import _train
from ncf_jax import flags

flags.define_run_flags(default_model="mlp")

if __name__ == "__main__":
    app.run(_train.main)
