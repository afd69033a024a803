"""Train and evaluate GMF (He et al., WWW 2017). Example:

python -m experiments.gmf --flagfile=experiments/configs/ml100k_gmf.flags --workdir=/tmp/gmf
"""

from absl import app

from experiments import _train
from ncf_jax import flags

flags.define_run_flags(default_model="gmf")

if __name__ == "__main__":
    app.run(_train.main)
