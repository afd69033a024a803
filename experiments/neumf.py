"""Train and evaluate NeuMF (He et al., WWW 2017), optionally pre-trained from GMF + MLP.

Any registered model runs with --model=NAME (e.g. --model=mf). Example:

  python -m experiments.neumf --flagfile=experiments/configs/ml100k_neumf.flags --workdir=/tmp/neumf
"""

from absl import app

from experiments import _train
from ncf_jax import flags

flags.define_run_flags(default_model="neumf")

if __name__ == "__main__":
    app.run(_train.main)
